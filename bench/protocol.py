#!/usr/bin/env python3
"""Benchmark the sidecar server at the protocol level, each figure against a baseline measured
in the same run.

    python bench/protocol.py [--quick] [--reps N] [--json OUT]

Figures (ratio = sidecar / baseline; lower is better for times, higher for throughput):

1. initialize latency: process start → ``initialize`` result, vs a bare pygls server (an
   inline ``LanguageServer(...).start_io()`` script).
2. ``sidecar/run {wait: true}`` of ``true``, vs the raw floor (``asyncio.create_subprocess_exec``
   of ``true`` + ``wait()``). Target ≤ 1.5×.
3. ``textDocument/didSave`` → ``sidecar/runUpdate`` (running) latency, vs the floor of starting
   a process (``create_subprocess_exec`` returning).
4. 50 MiB of output delivered to the client as ``sidecar/outputChunk`` (plus ``readOutput`` for
   any range dropped by backpressure), vs the floor (the same ``sh -c 'yes … | head -c …'`` read
   to EOF with asyncio). Target ≥ 0.7×. Also the server's peak RSS (VmHWM) after the run.

The client is a plain asyncio JSON-RPC client (no pygls, no pytest).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from _common import (  # noqa: E402
    MIB,
    bench_main,
    environment,
    fmt_mib,
    fmt_ms,
    fmt_rate,
    fmt_ratio,
    markdown_table,
    median,
    ratio,
)

SIDECAR_CMD = [sys.executable, "-c", "from sidecar.frontends.lsp import serve; raise SystemExit(serve())"]
_SCRIPT = shutil.which("sidecar", path=os.path.dirname(sys.executable))
SIDECAR = [_SCRIPT] if _SCRIPT else [sys.executable, "-m", "sidecar"]
"""The ``sidecar`` command line of this interpreter's environment."""
BARE_PYGLS = [sys.executable, "-c",
              "from pygls.lsp.server import LanguageServer\n"
              "LanguageServer('bare', '0').start_io()"]
BIG = 50 * MIB
BIG_CMD = f"yes 0123456789abcdef | head -c {BIG}"


class Conn:
    """A minimal LSP-framed JSON-RPC client over a subprocess' pipes."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self._id = 0
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self.handlers: dict[str, Callable[[Any], None]] = {}
        self._task = asyncio.ensure_future(self._read_loop())

    @classmethod
    async def spawn(cls, argv: list[str], cwd: str | None = None) -> Conn:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL, cwd=cwd, limit=1 << 22)
        return cls(proc)

    def _write(self, msg: dict[str, Any]) -> None:
        body = json.dumps(msg).encode()
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)

    def request(self, method: str, params: Any = None) -> asyncio.Future[Any]:
        self._id += 1
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[self._id] = fut
        self._write({"jsonrpc": "2.0", "id": self._id, "method": method, "params": params})
        return fut

    def notify(self, method: str, params: Any = None) -> None:
        self._write({"jsonrpc": "2.0", "method": method, "params": params})

    async def _read_loop(self) -> None:
        out = self.proc.stdout
        assert out is not None
        try:
            while True:
                length = 0
                while True:
                    line = await out.readline()
                    if not line:
                        return
                    if line == b"\r\n":
                        break
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                msg = json.loads(await out.readexactly(length))
                if "id" in msg and "method" not in msg:
                    fut = self._pending.pop(msg["id"], None)
                    if fut is not None and not fut.done():
                        if "error" in msg:
                            fut.set_exception(RuntimeError(msg["error"]))
                        else:
                            fut.set_result(msg.get("result"))
                elif "id" in msg:  # a request from the server (e.g. progress create)
                    self._write({"jsonrpc": "2.0", "id": msg["id"], "result": None})
                else:
                    h = self.handlers.get(msg.get("method", ""))
                    if h is not None:
                        h(msg.get("params"))
        except (asyncio.IncompleteReadError, ConnectionError):
            return

    async def initialize(self, root: Path, options: Any = None) -> Any:
        res = await self.request("initialize", {
            "processId": os.getpid(), "rootUri": root.as_uri(), "capabilities": {},
            "initializationOptions": options})
        self.notify("initialized", {})
        return res

    async def close(self) -> None:
        try:
            await asyncio.wait_for(self.request("shutdown"), 10)
            self.notify("exit")
            await asyncio.wait_for(self.proc.wait(), 10)
        except Exception:
            if self.proc.returncode is None:
                self.proc.kill()
                await self.proc.wait()
        self._task.cancel()


def write_workspace(root: Path) -> None:
    (root / "sidecar.toml").write_text(f"""
[on_save]
"*.txt" = "saved"

[[command]]
name = "True"
command = "true"
max_concurrent = 0

[[command]]
name = "OnSave"
command = "true"
triggers = ["saved"]
max_concurrent = 0

[[command]]
name = "Big"
command = "sh -c '{BIG_CMD}'"
""")


# --------------------------------------------------------------------------- figures


async def fig_initialize(root: Path, reps: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"sidecar": [], "bare pygls": []}
    for i in range(reps + 1):
        for name, argv in (("sidecar", SIDECAR_CMD), ("bare pygls", BARE_PYGLS)):
            t0 = time.perf_counter()
            conn = await Conn.spawn(argv)
            await asyncio.wait_for(conn.initialize(root), 30)
            dt = time.perf_counter() - t0
            if i:
                out[name].append(dt)
            await conn.close()
    return out


async def run_true(conn: Conn, n: int, command: str = "True") -> float:
    """Seconds per ``sidecar/run`` ``wait: true`` of a command running ``true``."""
    t0 = time.perf_counter()
    for _ in range(n):
        res = await conn.request("sidecar/run", {"command": command, "wait": True})
        assert res["run"]["state"] == "success", res
    return (time.perf_counter() - t0) / n


async def spawn_true(n: int) -> float:
    """Seconds per spawn of ``true`` (``create_subprocess_exec`` + ``wait()``): the floor."""
    t0 = time.perf_counter()
    for _ in range(n):
        p = await asyncio.create_subprocess_exec("true")
        await p.wait()
    return (time.perf_counter() - t0) / n


async def fig_run_true(conn: Conn, n: int, reps: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"sidecar": [], "floor": []}
    for i in range(reps + 1):
        side = await run_true(conn, n)
        floor = await spawn_true(n)
        if i:
            out["sidecar"].append(side)
            out["floor"].append(floor)
    return out


async def fig_save(conn: Conn, root: Path, n: int, reps: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"sidecar": [], "floor": []}
    waiting: dict[str, asyncio.Future[None]] = {}

    def on_update(p: dict[str, Any]) -> None:
        if p["command"] == "OnSave" and p["state"] == "running":
            fut = waiting.pop("OnSave", None)
            if fut is not None and not fut.done():
                fut.set_result(None)

    conn.handlers["sidecar/runUpdate"] = on_update
    target = root / "saved.txt"
    for i in range(reps + 1):
        side: list[float] = []
        floor: list[float] = []
        for k in range(n):
            target.write_text(f"{i} {k} {time.time_ns()}\n")
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            waiting["OnSave"] = fut
            t0 = time.perf_counter()
            conn.notify("textDocument/didSave", {"textDocument": {"uri": target.as_uri()}})
            await asyncio.wait_for(fut, 10)
            side.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            p = await asyncio.create_subprocess_exec("true")
            floor.append(time.perf_counter() - t0)
            await p.wait()
        if i:
            out["sidecar"].append(median(side) or 0.0)
            out["floor"].append(median(floor) or 0.0)
    conn.handlers.pop("sidecar/runUpdate", None)
    return out


async def big_floor() -> float:
    t0 = time.perf_counter()
    p = await asyncio.create_subprocess_exec("sh", "-c", BIG_CMD, stdout=asyncio.subprocess.PIPE)
    assert p.stdout is not None
    n = 0
    while chunk := await p.stdout.read(1 << 16):
        n += len(chunk)
    await p.wait()
    assert n == BIG
    return time.perf_counter() - t0


async def big_sidecar(conn: Conn) -> tuple[float, int]:
    """Seconds until every byte is at the client; and bytes that had to be re-read."""
    state: dict[str, Any] = {"got": 0, "gaps": [], "final": None, "run": None}
    done = asyncio.get_running_loop().create_future()

    def on_chunk(p: dict[str, Any]) -> None:
        if p["dropped"]:
            state["gaps"].append((p["offset"], p["size"]))
        else:
            state["got"] += p["size"]

    def on_update(p: dict[str, Any]) -> None:
        if p["command"] == "Big" and p["state"] in ("success", "failed", "cancelled"):
            if not done.done():
                done.set_result(p)

    conn.handlers["sidecar/outputChunk"] = on_chunk
    conn.handlers["sidecar/runUpdate"] = on_update
    t0 = time.perf_counter()
    res = await conn.request("sidecar/run", {"command": "Big"})
    final = await asyncio.wait_for(done, 120)
    assert final["runId"] == res["run"]["runId"] and final["state"] == "success", final
    reread = 0
    for off, size in state["gaps"]:
        pos = off
        while pos < off + size:
            r = await conn.request("sidecar/readOutput", {"runId": final["runId"], "offset": pos,
                                                          "length": off + size - pos})
            pos += r["size"]
            reread += r["size"]
    elapsed = time.perf_counter() - t0
    assert state["got"] + reread == BIG, (state["got"], reread)
    conn.handlers.pop("sidecar/outputChunk", None)
    conn.handlers.pop("sidecar/runUpdate", None)
    return elapsed, reread


def vm_hwm_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def vm_rss_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    reps = args.reps
    results: dict[str, Any] = {"env": environment()}
    with tempfile.TemporaryDirectory(prefix="sidecar-bench-") as tmp:
        root = Path(tmp)
        write_workspace(root)
        results["initialize"] = await fig_initialize(root, reps)
        conn = await Conn.spawn(SIDECAR_CMD)
        await conn.initialize(root)
        await conn.request("sidecar/status")
        n = 20 if args.quick else 50
        results["run_true"] = await fig_run_true(conn, n, reps)
        results["save"] = await fig_save(conn, root, 10 if args.quick else 20, reps)
        rss_before = vm_rss_kib(conn.proc.pid)
        big: dict[str, list[float]] = {"sidecar": [], "floor": []}
        rereads: list[int] = []
        for i in range(reps + 1):
            floor = await big_floor()
            side, reread = await big_sidecar(conn)
            if i:
                big["floor"].append(floor)
                big["sidecar"].append(side)
                rereads.append(reread)
        results["big"] = big
        results["big_reread_bytes"] = rereads
        results["rss_before_kib"] = rss_before
        results["peak_rss_kib"] = vm_hwm_kib(conn.proc.pid)
        await conn.close()
    return results


def report(r: dict[str, Any]) -> str:
    rows = []
    init_s, init_b = median(r["initialize"]["sidecar"]), median(r["initialize"]["bare pygls"])
    rows.append(["initialize latency", fmt_ms(init_b), fmt_ms(init_s),
                 fmt_ratio(ratio(init_s, init_b)), "-"])
    rs, rf = median(r["run_true"]["sidecar"]), median(r["run_true"]["floor"])
    rr = ratio(rs, rf)
    rows.append(["sidecar/run wait:true of `true`", fmt_ms(rf), fmt_ms(rs), fmt_ratio(rr),
                 "≤ 1.5× " + ("met" if rr is not None and rr <= 1.5 else "NOT met")])
    ss, sf = median(r["save"]["sidecar"]), median(r["save"]["floor"])
    rows.append(["didSave → runUpdate(running)", fmt_ms(sf), fmt_ms(ss),
                 fmt_ratio(ratio(ss, sf)), "-"])
    bs, bf = median(r["big"]["sidecar"]), median(r["big"]["floor"])
    tput_s = BIG / MIB / bs if bs else None
    tput_f = BIG / MIB / bf if bf else None
    tr = ratio(tput_s, tput_f)
    rows.append(["50 MiB output as chunks (throughput)", fmt_rate(tput_f), fmt_rate(tput_s),
                 fmt_ratio(tr), "≥ 0.7× " + ("met" if tr is not None and tr >= 0.7 else "NOT met")])
    peak = r.get("peak_rss_kib")
    before = r.get("rss_before_kib")
    rows.append(["server peak RSS (VmHWM) / RSS before 50 MiB runs",
                 fmt_mib(before / 1024 if before else None),
                 fmt_mib(peak / 1024 if peak else None), "-", "bounded (≪ 50 MiB growth)"])
    table = markdown_table(["figure", "baseline", "sidecar", "ratio", "target"], rows)
    extra = (f"\nbytes re-read with sidecar/readOutput after backpressure drops (per rep): "
             f"{r['big_reread_bytes']}")
    return table + extra


def main() -> int:
    return bench_main(__doc__, main_async, report)


if __name__ == "__main__":
    raise SystemExit(main())
