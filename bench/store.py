#!/usr/bin/env python3
"""Benchmark the durable run store (``<workspace>/.sidecar/runs.db``), each figure against a
baseline measured in the same run.

    python bench/store.py [--quick] [--reps N] [--json OUT]

Figures (ratio = subject / baseline; lower is better):

1. ``sidecar/run {wait: true}`` of ``true`` with the store on (``[history] store = "sqlite"``,
   the default), vs the same with it off (``store = "memory"``): two standalone servers in two
   workspaces that differ only in that line, one request to each in turn (the order alternates),
   median per-request latency. Target ≤ 1.15×. Beside them (for reference, no target): a
   third server whose store already holds 1,000 runs of the command, its ``keep_runs``
   default, so every run also deletes the oldest (the steady state of a long-used workspace).
2. ``sidecar/history`` of one command (default limit 10) with 10,000 finished runs in the
   store (10 commands, ~1,000 runs each, ``keep_runs = -1``), vs the same request on an empty
   store: two standalone servers, requests alternating. Target ≤ 1.5×. A third server whose
   store holds only the queried command's 10 newest runs (the same answer as the big store)
   is measured beside them, to tell the store's size from the answer's size.
3. Host start with those 10,000 runs plus 50 runs recorded as ``running`` by a process that has
   exited (the lost-run scan marks them ``lost``), vs an empty store: ``spawn_host`` of
   :mod:`sidecar.host.locate` (what every client that starts a host calls: ``/bin/sh`` starts
   ``python -m sidecar.host`` detached, which opens the records, reads the config and answers
   on its ready pipe), timed until the host is ready. Each round gets a fresh copy of the
   prepared database (copied before the clock starts) and stops the host afterwards with
   ``sidecar host stop`` (not timed). Twice ``--reps`` rounds (a start is ~0.5 s, mostly
   Python starting and importing, and noisy). Target ≤ 1.5×.

The stores are filled directly through :class:`sidecar.adapters.run_db.RunDB` (one
transaction): realistic rows (trigger chains, upstream run ids, variables, resolved commands,
output files on disk). The clients are the plain asyncio JSON-RPC client of ``protocol.py``;
everything runs with its own ``XDG_RUNTIME_DIR`` and no ``SIDECAR_STATE_DIR``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from _common import (  # noqa: E402
    bench_main,
    environment,
    fmt_ms,
    fmt_ratio,
    markdown_table,
    median,
    ratio,
)
from protocol import SIDECAR, SIDECAR_CMD, Conn, run_true, write_workspace  # noqa: E402

from sidecar.adapters.run_db import RunDB, RunRow, owner_alive, owner_of  # noqa: E402
from sidecar.adapters.sqlite_records import DB_NAME, OUTPUT_DIR  # noqa: E402
from sidecar.host.locate import STATE_DIR_NAME, Workspace, host_pid, spawn_host  # noqa: E402

STORED_RUNS = 10_000
KEEP_RUNS = 1000  # [history] keep_runs' default
LOST_RUNS = 50
QUERIED = "Build"
# The commands of the store workspaces: protocol.py's three, plus a save-triggered chain
# Lint → Test → Build → Package → Deploy, and two on their own.
CHAIN = {  # command → its trigger (None: started by hand)
    "True": None, "OnSave": "saved", "Big": None,
    "Lint": "saved", "Test": "command_success:Lint", "Build": "command_success:Test",
    "Package": "command_success:Build", "Deploy": "command_success:Package",
    "Docs": "saved", "Format": None,
}
EXTRA_COMMANDS = """
[variables]
target = "all"
profile = "release"

[[command]]
name = "Lint"
command = "true"
triggers = ["saved"]

[[command]]
name = "Test"
command = "true"
triggers = ["command_success:Lint"]

[[command]]
name = "Build"
command = "echo build {{ target }} {{ profile }}"
triggers = ["command_success:Test"]

[[command]]
name = "Package"
command = "echo package {{ target }}"
triggers = ["command_success:Build"]

[[command]]
name = "Deploy"
command = "echo deploy {{ target }}"
triggers = ["command_success:Package"]

[[command]]
name = "Docs"
command = "true"
triggers = ["saved"]

[[command]]
name = "Format"
command = "true"
"""


# --------------------------------------------------------------------------- workspaces


def store_workspace(root: Path, *, store: str = "sqlite", chain: bool = False) -> Path:
    """protocol.py's workspace (``True``, ``OnSave``, ``Big``), with ``[history] store``; with
    ``chain`` the seven more commands of :data:`CHAIN` and ``keep_runs = -1`` (nothing pruned)."""
    root.mkdir(parents=True, exist_ok=True)
    write_workspace(root)
    toml = root / "sidecar.toml"
    extra = EXTRA_COMMANDS if chain else ""
    keep = "keep_runs = -1\n" if chain else ""
    toml.write_text(toml.read_text() + extra + f'\n[history]\nstore = "{store}"\n{keep}')
    return root


def state_of(root: Path) -> Path:
    return root / STATE_DIR_NAME


def stored_rows(root: Path, n: int, *, seed: int = 1) -> list[RunRow]:
    """``n`` finished runs of the :data:`CHAIN` commands, oldest first, as the host records
    them: a save starts ``Lint``, ``OnSave`` and ``Docs``; each success starts the next link
    (its trigger chain and upstream run id); the others are started by hand, some with
    runtime variables. About 5% fail."""
    rnd = random.Random(seed)
    out_dir = state_of(root) / OUTPUT_DIR
    names = list(CHAIN)
    last: dict[str, str] = {}
    chains: dict[str, list[str]] = {}
    t = time.time() - 30 * 86400
    rows = []
    for i in range(n):
        command = names[i % len(names)]
        trigger = CHAIN[command]
        run_id = str(uuid.UUID(int=rnd.getrandbits(128), version=4))
        upstream: list[list[str]] = []
        if trigger is None:
            chain: list[str] = []
        elif trigger == "saved":
            chain = ["saved"]
        else:
            upstream_cmd = trigger.split(":", 1)[1]
            chain = [*chains.get(upstream_cmd, ["saved"]), f"command_started:{upstream_cmd}",
                     trigger]
            if upstream_cmd in last:
                upstream = [[trigger, last[upstream_cmd]]]
        runtime = {"target": f"pkg{rnd.randrange(20)}"} if trigger is None and i % 3 else {}
        variables = {"target": "all", "profile": "release", **runtime}
        ok = rnd.random() > 0.05
        code = 0 if ok else 1 + rnd.randrange(3)
        start = t + rnd.uniform(0.001, 0.01)
        end = start + rnd.uniform(0.002, 3.0)
        t = end + rnd.uniform(1, 250)
        size = rnd.randrange(0, 4096)
        rows.append(RunRow(
            run_id=run_id, command=command, state="success" if ok else "failed",
            exit_code=code, error=None if ok else f"Command exited with code {code}",
            trigger_event=trigger,
            trigger_chain=chain, upstream_run_ids=upstream,
            started_by="cli" if trigger is None else "lsp",
            resolved_command=f"echo {command.lower()} {variables['target']}",
            cwd=str(root), vars=variables, runtime_vars=runtime,
            created_at=start - 0.001, start_time=start, end_time=end,
            pid=rnd.randrange(1000, 4_000_000), output_path=str(out_dir / f"{run_id}.log"),
            output_size=size))
        last[command] = run_id
        chains[command] = chain
    return rows


def dead_owner() -> tuple[str, int]:
    """The owner name (and pid) of a process that has exited."""
    proc = subprocess.Popen(["sleep", "60"])
    owner = owner_of(proc.pid)
    proc.kill()
    proc.wait()
    assert not owner_alive(owner), owner
    return owner, proc.pid


def fill_store(root: Path, rows: list[RunRow], *, lost: int = 0) -> int:
    """Record ``rows`` (plus ``lost`` runs ``running`` under a dead owner) in ``root``'s store
    in one transaction, and write their output files. Returns the number of rows."""
    out_dir = state_of(root) / OUTPUT_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    active: list[RunRow] = []
    if lost:
        owner, pid = dead_owner()
        now = time.time()
        for k in range(lost):
            run_id = str(uuid.uuid4())
            command = list(CHAIN)[k % len(CHAIN)]
            active.append(RunRow(
                run_id=run_id, command=command, state="running", trigger_event="saved",
                trigger_chain=["saved"], started_by="lsp",
                resolved_command=f"echo {command.lower()} all", cwd=str(root),
                vars={"target": "all", "profile": "release"}, created_at=now - 60 + k,
                start_time=now - 60 + k, owner=owner, pid=pid,
                output_path=str(out_dir / f"{run_id}.log")))
    db = RunDB(state_of(root) / DB_NAME)
    try:
        with db._write():
            for row in rows + active:
                db.record(row)
        count = db.count()
    finally:
        db.close()
    for row in rows + active:
        assert row.output_path is not None
        with open(row.output_path, "wb") as f:
            f.write(b"x" * (row.output_size or 100))
    return count


def empty_store(root: Path) -> None:
    """A store with the schema and no runs."""
    RunDB(state_of(root) / DB_NAME).close()


def count_states(db_path: Path) -> dict[str, int]:
    con = sqlite3.connect(str(db_path))
    try:
        return dict(con.execute("SELECT state, count(*) FROM runs GROUP BY state").fetchall())
    finally:
        con.close()


# --------------------------------------------------------------------------- figures


async def start_servers(roots: dict[str, Path]) -> dict[str, Conn]:
    """A standalone server in each workspace, started at the same time, each answering."""
    async def start(root: Path) -> Conn:
        conn = await Conn.spawn(SIDECAR_CMD, cwd=str(root))
        try:
            await asyncio.wait_for(conn.initialize(root), 30)
            await conn.request("sidecar/status")
        except BaseException:
            await conn.close()
            raise
        return conn

    started = await asyncio.gather(*(start(r) for r in roots.values()), return_exceptions=True)
    conns = {k: c for k, c in zip(roots, started, strict=True) if isinstance(c, Conn)}
    failed = [c for c in started if not isinstance(c, Conn)]
    if failed:
        await close_all(conns)
        raise failed[0]
    return conns


async def close_all(conns: dict[str, Conn]) -> None:
    await asyncio.gather(*(c.close() for c in conns.values()))


async def alternate(conns: dict[str, Conn], request: Callable[[Conn], Awaitable[float]],
                    n: int, reps: int) -> dict[str, list[float]]:
    """``n`` requests to every server per round, one to each in turn (the order rotates
    with every request); the first round is a warm-up. Per round: each server's median
    latency."""
    keys = list(conns)
    out: dict[str, list[float]] = {k: [] for k in keys}
    for i in range(reps + 1):
        lat: dict[str, list[float]] = {k: [] for k in keys}
        for j in range(n):
            s = (i + j) % len(keys)
            for k in keys[s:] + keys[:s]:
                lat[k].append(await request(conns[k]))
        if i:
            for k in keys:
                out[k].append(median(lat[k]) or 0.0)
    return out


async def fig_run(tmp: Path, n: int, reps: int) -> dict[str, Any]:
    """Figure 1: ``sidecar/run`` ``wait: true`` of ``True`` (``true``), store on vs off; beside
    them, the store on with ``True`` at its ``keep_runs`` (every run also deletes the oldest)."""
    full = store_workspace(tmp / "run-full", store="sqlite")
    kept = [r for r in stored_rows(full, len(CHAIN) * KEEP_RUNS) if r.command == "True"]
    fill_store(full, kept[:KEEP_RUNS])
    roots = {"store on": store_workspace(tmp / "run-on", store="sqlite"),
             "store off": store_workspace(tmp / "run-off", store="memory"),
             "store on, at keep_runs": full}
    conns = await start_servers(roots)
    try:
        out: dict[str, Any] = await alternate(conns, lambda c: run_true(c, 1), n, reps)
    finally:
        await close_all(conns)
    out["recorded"] = count_states(state_of(roots["store on"]) / DB_NAME)
    out["recorded at keep_runs"] = count_states(state_of(full) / DB_NAME)
    out["off_has_no_db"] = not (state_of(roots["store off"]) / DB_NAME).exists()
    return out


async def fig_history(tmp: Path, n_runs: int, n: int, reps: int) -> dict[str, Any]:
    """Figure 2: ``sidecar/history`` of :data:`QUERIED` on three servers in turn: the full
    store, an empty one, and one holding just the 10 runs the full store answers with."""
    big = store_workspace(tmp / "hist-big", chain=True)
    stored = fill_store(big, stored_rows(big, n_runs))
    empty = store_workspace(tmp / "hist-empty", chain=True)
    empty_store(empty)
    same = store_workspace(tmp / "hist-10", chain=True)
    fill_store(same, [r for r in stored_rows(same, n_runs) if r.command == QUERIED][-10:])
    answers: dict[str, list[str]] = {}

    async def history(conn: Conn) -> float:
        t0 = time.perf_counter()
        res = await conn.request("sidecar/history", {"command": QUERIED})
        elapsed = time.perf_counter() - t0
        answers[str(id(conn))] = [r["runId"] for r in res["runs"]]
        return elapsed

    conns = await start_servers({"big": big, "empty": empty, "same answer": same})
    try:
        out: dict[str, Any] = await alternate(conns, history, n, reps)
    finally:
        await close_all(conns)
    got = {k: answers[str(id(c))] for k, c in conns.items()}
    if got["big"] != got["same answer"] or len(got["big"]) != 10 or got["empty"]:
        raise RuntimeError(f"unexpected history answers: {got}")
    out["stored"] = stored
    out["answer_rows"] = {k: len(v) for k, v in got.items()}
    return out


def stop_host(ws: Workspace) -> None:
    proc = subprocess.run([*SIDECAR, "host", "stop", "--workspace", ws.root],
                          capture_output=True, text=True, timeout=30)
    if proc.returncode != 0 or host_pid(ws.lock_path) is not None:
        raise RuntimeError(f"sidecar host stop failed: {proc.stdout}{proc.stderr}")


def host_round(ws: Workspace, template: Path) -> float:
    """A fresh copy of ``template`` as the workspace's store (not timed), then
    ``spawn_host`` until the host is ready (timed), then ``sidecar host stop``."""
    if host_pid(ws.lock_path) is not None:
        raise RuntimeError(f"a host is still running for {ws.root}")
    db = Path(ws.state_dir) / DB_NAME
    for suffix in ("-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    shutil.copyfile(template, db)
    with open(db, "rb+") as f:  # written back now, not while the clock runs
        os.fsync(f.fileno())
    t0 = time.perf_counter()
    spawn_host(ws, idle_timeout=600, timeout=60)
    elapsed = time.perf_counter() - t0
    stop_host(ws)
    return elapsed


async def fig_host_start(tmp: Path, n_runs: int, reps: int, warmup: int = 1) -> dict[str, Any]:
    """Figure 3: host start, the full store with lost runs vs an empty store, alternating
    (``warmup`` rounds first, not counted)."""
    full = store_workspace(tmp / "start-full", chain=True)
    stored = fill_store(full, stored_rows(full, n_runs), lost=LOST_RUNS)
    empty = store_workspace(tmp / "start-empty", chain=True)
    empty_store(empty)
    templates: dict[str, Path] = {}
    workspaces: dict[str, Workspace] = {}
    for key, root in (("full", full), ("empty", empty)):
        db = state_of(root) / DB_NAME
        templates[key] = root / "runs.db.template"
        shutil.copyfile(db, templates[key])
        workspaces[key] = Workspace(str(root))
    out: dict[str, Any] = {"full": [], "empty": []}
    lost_marked: list[int] = []
    try:
        for i in range(warmup + reps):
            order = ["full", "empty"] if i % 2 == 0 else ["empty", "full"]
            for key in order:
                dt = await asyncio.to_thread(host_round, workspaces[key], templates[key])
                if i >= warmup:
                    out[key].append(dt)
                if key == "full":
                    lost_marked.append(count_states(state_of(full) / DB_NAME).get("lost", 0))
    finally:  # a round that failed may have left its host running
        for ws in workspaces.values():
            pid = host_pid(ws.lock_path)
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
    out["stored"] = stored
    out["lost_marked"] = lost_marked
    return out


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    reps = args.reps
    results: dict[str, Any] = {"env": environment()}
    n_runs = 2_000 if args.quick else STORED_RUNS
    saved_env = {k: os.environ.get(k) for k in ("XDG_RUNTIME_DIR", "SIDECAR_STATE_DIR")}
    with tempfile.TemporaryDirectory(prefix="sidecar-bench-") as tmp_, \
            tempfile.TemporaryDirectory(prefix="sc", dir="/tmp") as runtime:
        os.environ["XDG_RUNTIME_DIR"] = runtime
        os.environ.pop("SIDECAR_STATE_DIR", None)
        try:
            tmp = Path(tmp_)
            t0 = time.perf_counter()
            results["run"] = await fig_run(tmp, 10 if args.quick else 100, reps)
            t1 = time.perf_counter()
            results["history"] = await fig_history(tmp, n_runs, 10 if args.quick else 50, reps)
            t2 = time.perf_counter()
            # A host start is ~0.5 s of which the store is a few ms, against ±100 ms of noise
            # here: twice the rounds. In quick mode (about 2 s) one round, no warm-up.
            results["host_start"] = await fig_host_start(
                tmp, n_runs, 1 if args.quick else 2 * reps, warmup=0 if args.quick else 1)
            t3 = time.perf_counter()
            results["figure_seconds"] = [t1 - t0, t2 - t1, t3 - t2]
        finally:
            for k, v in saved_env.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    return results


def report(r: dict[str, Any]) -> str:
    def met(x: float | None, target: float) -> str:
        return "met" if x is not None and x <= target else "NOT met"

    rows = []
    on, off = median(r["run"]["store on"]), median(r["run"]["store off"])
    rr = ratio(on, off)
    rows.append(["`sidecar/run` `wait: true` of `true`, store on vs off", fmt_ms(off),
                 fmt_ms(on), fmt_ratio(rr), f"≤ 1.15× {met(rr, 1.15)}"])
    kept = median(r["run"]["store on, at keep_runs"])
    rows.append([f"  the same, store on with {KEEP_RUNS:,} runs of the command kept (keep_runs "
                 "reached: each run also deletes the oldest), vs off", fmt_ms(off), fmt_ms(kept),
                 fmt_ratio(ratio(kept, off)), "–"])
    h = r["history"]
    big, empty, same = (median(h[k]) for k in ("big", "empty", "same answer"))
    hr = ratio(big, empty)
    rows.append([f"`sidecar/history` of one command (limit 10), {h['stored']:,} runs stored vs "
                 f"an empty store (a store of the same 10 runs beside it)", fmt_ms(empty, 3),
                 f"{fmt_ms(big, 3)} ({fmt_ms(same, 3)})",
                 f"{fmt_ratio(hr)} ({fmt_ratio(ratio(big, same))})", f"≤ 1.5× {met(hr, 1.5)}"])
    s = r["host_start"]
    full, emp = median(s["full"]), median(s["empty"])
    sr = ratio(full, emp)
    rows.append([f"host start (spawn → ready), {s['stored'] - LOST_RUNS:,} finished runs "
                 f"stored + {LOST_RUNS} left running by a dead host, vs an empty store",
                 fmt_ms(emp, 1),
                 fmt_ms(full, 1), fmt_ratio(sr), f"≤ 1.5× {met(sr, 1.5)}"])
    table = markdown_table(["figure", "baseline", "subject", "ratio", "target"], rows)
    extra = (f"\nruns recorded by the store-on servers: {r['run']['recorded']} (and at "
             f"keep_runs: {r['run']['recorded at keep_runs']}); "
             f"store-off server wrote no database: {r['run']['off_has_no_db']}; "
             f"history answers (rows): {h['answer_rows']}; "
             f"runs marked lost per host start: {s['lost_marked']}")
    return table + extra


def main() -> int:
    return bench_main(__doc__, main_async, report)


if __name__ == "__main__":
    raise SystemExit(main())
