#!/usr/bin/env python3
"""Benchmark the shared host (one per workspace), each figure against a baseline measured in
the same run.

    python bench/host.py [--quick] [--reps N] [--json OUT]

Figures (ratio = host figure / baseline; lower is better):

1. ``sidecar/run {wait: true}`` of ``true`` through ``sidecar serve`` attached to the host, vs
   spawning ``true`` (``asyncio.create_subprocess_exec`` + ``wait()``). Target ≤ 2×. The
   standalone server (``sidecar serve --standalone``) is measured beside it for reference.
2. Event fan-out: a run's final ``sidecar/runUpdate`` reaching the last of 10 attached clients,
   vs reaching the only attached client (request sent → update received). Target ≤ 2×.
3. ``sidecar save PATH`` with the host running: process start → the hook's run is ``running``
   in the host (seen by an attached client), vs ``python -c pass`` (start → exit). Target ≤ 3×.
4. ``initialize`` answered by ``sidecar serve`` attaching to a running host, vs a bare pygls
   server starting (process start → ``initialize`` result). Target ≤ 0.6×.
5. The host's RSS with 10 clients attached and idle. Target ≤ 60 MiB.

The clients are plain asyncio JSON-RPC clients (no pygls). The host runs with its own socket
directory (``XDG_RUNTIME_DIR``) and is stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from _common import (  # noqa: E402
    bench_main,
    environment,
    fmt_mib,
    fmt_ms,
    fmt_ratio,
    markdown_table,
    median,
    ratio,
)
from protocol import (  # noqa: E402
    BARE_PYGLS,
    SIDECAR,
    Conn,
    run_true,
    spawn_true,
    vm_rss_kib,
    write_workspace,
)

from sidecar.app.methods import FINAL_STATES  # noqa: E402

SERVE = [*SIDECAR, "serve"]
STANDALONE = [*SERVE, "--standalone"]


async def fig_run(root: Path, n: int, reps: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"attached": [], "standalone": [], "floor": []}
    attached = await Conn.spawn(SERVE, cwd=str(root))
    await attached.initialize(root)
    standalone = await Conn.spawn(STANDALONE, cwd=str(root))
    await standalone.initialize(root)
    for i in range(reps + 1):
        a = await run_true(attached, n)
        s = await run_true(standalone, n)
        f = await spawn_true(n)
        if i:
            out["attached"].append(a)
            out["standalone"].append(s)
            out["floor"].append(f)
    await attached.close()
    await standalone.close()
    return out


async def final_everywhere(clients: list[Conn], sender: Conn) -> float:
    """Request → the run's final update at every client; seconds to the last one."""
    loop = asyncio.get_running_loop()
    got: list[asyncio.Future[float]] = [loop.create_future() for _ in clients]
    run_id: dict[str, str] = {}
    early: list[tuple[int, str, float]] = []

    for k, c in enumerate(clients):
        def on_update(p: dict[str, Any], k: int = k) -> None:
            if p["state"] in FINAL_STATES and p["command"] == "True":
                now = time.perf_counter()
                if "id" in run_id:
                    if p["runId"] == run_id["id"] and not got[k].done():
                        got[k].set_result(now)
                else:
                    early.append((k, p["runId"], now))
        c.handlers["sidecar/runUpdate"] = on_update
    t0 = time.perf_counter()
    res = await sender.request("sidecar/run", {"command": "True"})
    run_id["id"] = res["run"]["runId"]
    for k, rid, now in early:
        if rid == run_id["id"] and not got[k].done():
            got[k].set_result(now)
    times = await asyncio.wait_for(asyncio.gather(*got), 30)
    for c in clients:
        c.handlers.pop("sidecar/runUpdate", None)
    return max(times) - t0


async def fig_fanout(clients: list[Conn], root: Path, n: int,
                     reps: int) -> dict[str, list[float]]:
    """One client attached first, then all ten (they stay attached for the RSS figure)."""
    out: dict[str, list[float]] = {"10 clients": [], "1 client": []}
    one = clients[0]
    for key, group in (("1 client", [one]), ("10 clients", clients)):
        if key == "10 clients":
            for c in clients[1:]:
                await c.initialize(root)
        for i in range(reps + 1):
            times = [await final_everywhere(group, one) for _ in range(n)]
            if i:
                out[key].append(median(times) or 0.0)
    return out


async def fig_save(observer: Conn, root: Path, n: int, reps: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"sidecar save": [], "python -c pass": []}
    loop = asyncio.get_running_loop()
    waiting: dict[str, asyncio.Future[float]] = {}

    def on_update(p: dict[str, Any]) -> None:
        if p["command"] == "OnSave" and p["state"] == "running":
            fut = waiting.pop("next", None)
            if fut is not None and not fut.done():
                fut.set_result(time.perf_counter())

    observer.handlers["sidecar/runUpdate"] = on_update
    target = root / "saved.txt"
    for i in range(reps + 1):
        side, floor = [], []
        for k in range(n):
            target.write_text(f"{i} {k} {time.time_ns()}\n")
            fut: asyncio.Future[float] = loop.create_future()
            waiting["next"] = fut
            t0 = time.perf_counter()
            proc = await asyncio.create_subprocess_exec(*SIDECAR, "save", str(target), cwd=root,
                                                        stdout=asyncio.subprocess.DEVNULL)
            side.append(await asyncio.wait_for(fut, 30) - t0)
            await proc.wait()
            t0 = time.perf_counter()
            proc = await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")
            await proc.wait()
            floor.append(time.perf_counter() - t0)
        if i:
            out["sidecar save"].append(median(side) or 0.0)
            out["python -c pass"].append(median(floor) or 0.0)
    observer.handlers.pop("sidecar/runUpdate", None)
    return out


async def fig_initialize(root: Path, reps: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"attach": [], "bare pygls": []}
    for i in range(reps + 1):
        for name, argv in (("attach", SERVE), ("bare pygls", BARE_PYGLS)):
            t0 = time.perf_counter()
            conn = await Conn.spawn(argv, cwd=str(root))
            await asyncio.wait_for(conn.initialize(root), 30)
            dt = time.perf_counter() - t0
            if i:
                out[name].append(dt)
            await conn.close()
    return out


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    reps = args.reps
    results: dict[str, Any] = {"env": environment()}
    with tempfile.TemporaryDirectory(prefix="sidecar-bench-") as tmp, \
            tempfile.TemporaryDirectory(prefix="sc", dir="/tmp") as runtime:
        os.environ["XDG_RUNTIME_DIR"] = runtime
        os.environ.setdefault("SIDECAR_HOST_IDLE_TIMEOUT", "30")
        root = Path(tmp)
        write_workspace(root)
        clients = []
        for _ in range(10):
            clients.append(await Conn.spawn(SERVE, cwd=str(root)))
        await clients[0].initialize(root)  # starts the host
        info = await clients[0].request("sidecar/hostInfo")
        host_pid = info["pid"]
        try:
            results["initialize"] = await fig_initialize(root, reps)
            results["run"] = await fig_run(root, 20 if args.quick else 50, reps)
            results["fanout"] = await fig_fanout(clients, root, 5 if args.quick else 10, reps)
            info = await clients[0].request("sidecar/hostInfo")
            results["sessions"] = len(info["sessions"])
            results["host_rss_kib"] = vm_rss_kib(host_pid)
            results["save"] = await fig_save(clients[0], root, 5 if args.quick else 10, reps)
        finally:
            for c in clients:
                await c.close()
            with contextlib.suppress(ProcessLookupError):
                os.kill(host_pid, signal.SIGTERM)
    return results


def report(r: dict[str, Any]) -> str:
    def met(x: float | None, target: float, le: bool = True) -> str:
        ok = x is not None and (x <= target if le else x >= target)
        return "met" if ok else "NOT met"

    rows = []
    fl, at, st = (median(r["run"][k]) for k in ("floor", "attached", "standalone"))
    rr = ratio(at, fl)
    rows.append(["sidecar/run wait:true of `true`, attached (standalone beside it)",
                 fmt_ms(fl), f"{fmt_ms(at)} ({fmt_ms(st)})",
                 f"{fmt_ratio(rr)} ({fmt_ratio(ratio(st, fl))})", f"≤ 2× {met(rr, 2.0)}"])
    one, ten = median(r["fanout"]["1 client"]), median(r["fanout"]["10 clients"])
    fr = ratio(ten, one)
    rows.append(["final runUpdate at the last of 10 clients vs 1 client", fmt_ms(one),
                 fmt_ms(ten), fmt_ratio(fr), f"≤ 2× {met(fr, 2.0)}"])
    sv, py = median(r["save"]["sidecar save"]), median(r["save"]["python -c pass"])
    sr = ratio(sv, py)
    rows.append(["`sidecar save PATH` → run running in the host vs `python -c pass`",
                 fmt_ms(py, 1), fmt_ms(sv, 1), fmt_ratio(sr), f"≤ 3× {met(sr, 3.0)}"])
    ia, ib = median(r["initialize"]["attach"]), median(r["initialize"]["bare pygls"])
    ir = ratio(ia, ib)
    rows.append(["`initialize` answered: serve attaching vs bare pygls starting", fmt_ms(ib, 1),
                 fmt_ms(ia, 1), fmt_ratio(ir), f"≤ 0.6× {met(ir, 0.6)}"])
    rss = r.get("host_rss_kib")
    mib = rss / 1024 if rss else None
    rows.append([f"host RSS, {r.get('sessions')} clients attached and idle", "-", fmt_mib(mib),
                 "-", f"≤ 60 MiB {met(mib, 60.0)}"])
    return markdown_table(["figure", "baseline", "host", "ratio", "target"], rows)


def main() -> int:
    return bench_main(__doc__, main_async, report)


if __name__ == "__main__":
    raise SystemExit(main())
