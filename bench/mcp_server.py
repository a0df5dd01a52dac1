#!/usr/bin/env python3
"""Benchmark ``sidecar mcp`` against baselines measured in the same run.

    python bench/mcp_server.py [--quick] [--reps N] [--json OUT]

Figures (ratio = subject / baseline; lower is better):

1. ``run_command`` of ``true`` through MCP, tool call → result (the MCP SDK's ``ClientSession``
   over stdio, as an agent host calls it) vs ``sidecar/run`` with ``wait: true`` of the same
   command through the same host (a plain protocol client on the host's socket). Both wait for
   the run to end; each answer is checked to say ``success``. Target ≤ 3×.
2. ``sidecar mcp`` start → MCP ``initialize`` answered (spawn, one ``initialize`` line on
   stdin, its response read from stdout; the workspace's host is already running, as when an
   editor is open) vs ``python -c "import mcp"`` (spawn → exit). Both byte-compiled, as
   installed (``PYTHONPYCACHEPREFIX`` in the run's temporary directory, filled by the warm-up
   round; ``PYTHONDONTWRITEBYTECODE`` dropped). The baseline's time includes its
   interpreter's exit (tearing down what it imported); the subject's ends at the answer.
   Target ≤ 2×.

One workspace (a ``sidecar.toml`` with ``True = "true"``) and ``XDG_RUNTIME_DIR`` in temporary
directories; one warm-up round per figure (not counted), then the rounds (figure 1: 40 ×
``--reps``, 5 by default, 2 with ``--quick``; figure 2: 4 × ``--reps``), the order of subject
and baseline alternating each round; each cell is the median. The host is stopped at the end.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
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
    package_version,
    ratio,
)

BIN = Path(sys.executable).parent
TARGETS = {"call": 3.0, "start": 2.0}
CALL_ROUNDS_PER_REP = 40
START_ROUNDS_PER_REP = 4
INITIALIZE = (b'{"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {'
              b'"protocolVersion": "2025-11-25", "capabilities": {}, '
              b'"clientInfo": {"name": "bench", "version": "0"}}}\n')


class Raw:
    """A plain protocol client on the host's socket (LSP framing)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        from sidecar.host.framing import FrameParser

        self.writer = writer
        self.answers: dict[int, dict[str, Any]] = {}
        self.changed = asyncio.Event()
        self.next_id = 0

        def on_body(body: bytes) -> None:
            message = json.loads(body)
            if "id" in message and "method" not in message:
                self.answers[message["id"]] = message
                self.changed.set()

        parser = FrameParser(on_body)

        async def read() -> None:
            while data := await reader.read(1 << 16):
                parser.feed(data)

        self.task = asyncio.ensure_future(read())

    async def request(self, method: str, params: Any) -> Any:
        from sidecar.host.framing import frame

        self.next_id += 1
        ident = self.next_id
        self.writer.write(frame({"jsonrpc": "2.0", "id": ident, "method": method,
                                 "params": params}))
        while ident not in self.answers:
            self.changed.clear()
            await asyncio.wait_for(self.changed.wait(), 30)
        answer = self.answers.pop(ident)
        if "error" in answer:
            raise RuntimeError(f"{method}: {answer['error']}")
        return answer["result"]


async def alternating(measures: dict[str, Callable[[], Awaitable[float]]], rounds: int
                      ) -> dict[str, Any]:
    """One warm-up round, then ``rounds``, alternating which goes first."""
    names = list(measures)
    samples: dict[str, list[float]] = {n: [] for n in names}
    for rnd in range(rounds + 1):
        order = names if rnd % 2 else names[::-1]
        for name in order:
            value = await measures[name]()
            if rnd:
                samples[name].append(value)
    return samples


async def call_figure(root: Path, env: dict[str, str], rounds: int) -> dict[str, Any]:
    from mcp.client.session import ClientSession
    from mcp.client.stdio import StdioServerParameters, stdio_client

    from sidecar.host.locate import Workspace

    params = StdioServerParameters(command=str(BIN / "sidecar"), args=["mcp"], cwd=root,
                                   env=env)
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        await session.call_tool("list_commands", {})  # the host is up once this answers
        reader, writer = await asyncio.open_unix_connection(Workspace(str(root)).socket_path)
        raw = Raw(reader, writer)
        await raw.request("initialize", {"processId": os.getpid(), "rootUri": root.as_uri(),
                                         "capabilities": {}, "initializationOptions": {
                                             "outputChunks": "none", "progress": False}})

        async def mcp_call() -> float:
            t0 = time.perf_counter()
            res = await session.call_tool("run_command", {"command": "True"})
            elapsed = time.perf_counter() - t0
            state = (res.structured_content or {}).get("run", {}).get("state")
            if res.is_error or state != "success":
                raise RuntimeError(f"run_command: {res.content}")
            return elapsed

        async def run_wait() -> float:
            t0 = time.perf_counter()
            res = await raw.request("sidecar/run", {"command": "True", "wait": True})
            elapsed = time.perf_counter() - t0
            if res["run"]["state"] != "success":
                raise RuntimeError(f"sidecar/run: {res}")
            return elapsed

        try:
            return await alternating({"mcp": mcp_call, "protocol": run_wait}, rounds)
        finally:
            raw.task.cancel()
            writer.close()


def start_mcp(root: Path, env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.Popen([str(BIN / "sidecar"), "mcp"], cwd=root, env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(INITIALIZE)
    proc.stdin.flush()
    line = proc.stdout.readline()
    elapsed = time.perf_counter() - t0
    proc.stdin.close()
    proc.wait(30)
    if b'"result"' not in line:
        raise RuntimeError(f"sidecar mcp answered {line[:200]!r}")
    return elapsed


def import_mcp(env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import mcp"], env=env, check=True, timeout=60)
    return time.perf_counter() - t0


def stop_host(runtime: str) -> None:
    from sidecar.host.locate import host_pid

    sockets = os.path.join(runtime, "cmdsidecar")
    for name in os.listdir(sockets) if os.path.isdir(sockets) else ():
        pid = host_pid(os.path.join(sockets, name)) if name.endswith(".lock") else None
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 10
            while host_pid(os.path.join(sockets, name)) is not None:
                if time.monotonic() > deadline:
                    os.kill(pid, signal.SIGKILL)
                    break
                time.sleep(0.05)


async def main_async(args: Any) -> dict[str, Any]:
    results: dict[str, Any] = {"env": environment(),
                               "versions": {"mcp": package_version("mcp"),
                                            "cmdsidecar": package_version("cmdsidecar")},
                               "rounds": {"call": CALL_ROUNDS_PER_REP * args.reps,
                                          "start": START_ROUNDS_PER_REP * args.reps}}
    with tempfile.TemporaryDirectory(prefix="sidecar-bench-mcp-") as tmp, \
            tempfile.TemporaryDirectory(prefix="sc", dir="/tmp") as runtime:
        root = Path(tmp) / "ws"
        root.mkdir()
        (root / "sidecar.toml").write_text('[[command]]\nname = "True"\ncommand = "true"\n')
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env.update(XDG_RUNTIME_DIR=runtime, PYTHONPYCACHEPREFIX=str(Path(tmp) / "pycache"))
        os.environ["XDG_RUNTIME_DIR"] = runtime  # where this process looks for the host
        try:
            t0 = time.perf_counter()
            results["call"] = await call_figure(root, env, results["rounds"]["call"])
            results["call"]["seconds"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            results["start"] = await alternating(
                {"sidecar mcp": lambda: asyncio.to_thread(start_mcp, root, env),
                 "import mcp": lambda: asyncio.to_thread(import_mcp, env)},
                results["rounds"]["start"])
            results["start"]["seconds"] = time.perf_counter() - t0
        finally:
            stop_host(runtime)
    return results


def report(r: dict[str, Any]) -> str:
    rows = []
    for figure, title, subject, base in (
            ("call", "`run_command` of `true` through MCP (tool call → result) vs "
                     "`sidecar/run` `wait: true` through the same host", "mcp", "protocol"),
            ("start", "`sidecar mcp` start → `initialize` answered vs "
                      "`python -c \"import mcp\"`", "sidecar mcp", "import mcp")):
        b, s = median(r[figure][base]), median(r[figure][subject])
        rr = ratio(s, b)
        target = TARGETS[figure]
        verdict = "met" if rr is not None and rr <= target else "NOT met"
        digits = 2 if figure == "call" else 0
        rows.append([title, fmt_ms(b, digits), fmt_ms(s, digits), fmt_ratio(rr),
                     f"≤ {target:g}× {verdict}"])
    table = markdown_table(["figure", "baseline", "subject", "ratio", "target"], rows)
    return table + (f"\nmcp {r['versions']['mcp']}, cmdsidecar {r['versions']['cmdsidecar']}; "
                    f"rounds: {r['rounds']['call']} calls, {r['rounds']['start']} starts")


def main() -> int:
    return bench_main(__doc__, main_async, report)


if __name__ == "__main__":
    raise SystemExit(main())
