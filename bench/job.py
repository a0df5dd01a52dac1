#!/usr/bin/env python3
"""Benchmark ``sidecar job`` against orchesjob 1.1 (the tool it clones), measured in the same
run: wall time of the command-line process, from spawn until it exits.

    python bench/job.py [--quick] [--reps N] [--json OUT]

Figures (ratio = sidecar / orchesjob; lower is better):

1. ``sidecar job start --run-key kN --sync -- true`` vs ``orchesjob start --run-key kN --sync
   -- true``: a fresh key each round, so every call starts, runs and records a new job and
   waits for it to end. Target ≤ 0.3×.
2. ``sidecar job start --run-key kN -- sleep 1`` (async) vs the same with orchesjob: the time
   until the CLI returns (both return once the target is running; each answer is checked to
   say ``RUNNING``). Each job is aborted right after it is measured (not timed), so no
   ``sleep`` piles up; whatever is still running at the end is aborted too. Target ≤ 0.5×.

Both run byte-compiled, as installed (``PYTHONPYCACHEPREFIX`` in the run's temporary directory,
filled by the warm-up round; ``PYTHONDONTWRITEBYTECODE`` dropped): an editable checkout's
sources are otherwise compiled on every call, which no installed tool does.
Each tool has a fresh home of its own (``$SIDECAR_HOME`` / ``$ORCHESJOB_HOME``) and
``XDG_RUNTIME_DIR`` in a temporary directory; one warm-up round (not counted), then 4 × ``--reps``
rounds (20 by default, 8 with ``--quick``), the order of the two tools alternating each round;
each cell is the median.
Both executables are the ones next to this Python (``sidecar`` and ``orchesjob`` of the same
venv); without orchesjob the benchmark stops with an error.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
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
    run_alternating,
)

BIN = Path(sys.executable).parent
TOOLS = {  # name → (argv, the variable naming its home)
    "orchesjob": ([str(BIN / "orchesjob")], "ORCHESJOB_HOME"),
    "sidecar": ([str(BIN / "sidecar"), "job"], "SIDECAR_HOME"),
}
BASELINE, SUBJECT = "orchesjob", "sidecar"
TARGETS = {"sync": 0.3, "async": 0.5}
CALL_TIMEOUT = 60.0
ROUNDS_PER_REP = 4  # a call is short and noisy: 4 × --reps rounds


class Tool:
    """One tool with a fresh home; ``call`` runs it and returns (seconds, exit code, JSON)."""

    def __init__(self, name: str, root: Path, runtime: str) -> None:
        argv, var = TOOLS[name]
        self.name = name
        self.argv = argv
        self.home = root / name
        drop = ("ORCHESJOB_HOME", "SIDECAR_HOME", "PYTHONDONTWRITEBYTECODE")
        env = {k: v for k, v in os.environ.items() if k not in drop}
        # Both as installed: byte-compiled (pip compiles what it installs; a checkout's
        # editable sidecar is compiled by the warm-up round), in a cache of this run's own.
        self.env = {**env, var: str(self.home), "XDG_RUNTIME_DIR": runtime,
                    "PYTHONPYCACHEPREFIX": str(root / "pycache")}
        self.keys = 0

    def call(self, *args: str) -> tuple[float, Any]:
        t0 = time.perf_counter()
        proc = subprocess.run([*self.argv, *args], env=self.env, cwd=self.home.parent,
                              stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=CALL_TIMEOUT)
        elapsed = time.perf_counter() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"{self.name} {' '.join(args)}: exit {proc.returncode}: "
                               f"{proc.stderr.strip()[-200:]}")
        return elapsed, json.loads(proc.stdout)

    def fresh_key(self) -> str:
        self.keys += 1
        return f"k{self.keys}"

    def abort_running(self) -> int:
        _, running = self.call("status", "--running")
        for job in running:
            subprocess.run([*self.argv, "abort", "--job-id", job["job_id"], "--grace-seconds",
                            "0"], env=self.env, capture_output=True, timeout=CALL_TIMEOUT)
        return len(running)


def start_sync(tool: Tool) -> float:
    """Figure 1: one ``start --sync -- true`` of a fresh key."""
    elapsed, job = tool.call("start", "--run-key", tool.fresh_key(), "--sync", "--", "true")
    if job.get("status") != "SUCCEEDED" or job.get("exit_code") != 0:
        raise RuntimeError(f"{tool.name}: unexpected answer {job}")
    return elapsed


def start_async(tool: Tool) -> float:
    """Figure 2: one async ``start -- sleep 1`` of a fresh key, then (not timed) its abort."""
    key = tool.fresh_key()
    elapsed, job = tool.call("start", "--run-key", key, "--", "sleep", "1")
    tool.call("abort", "--run-key", key, "--grace-seconds", "0")
    if job.get("status") != "RUNNING" or job.get("mode") != "async":
        raise RuntimeError(f"{tool.name}: unexpected answer {job}")
    return elapsed


def on_tool(tools: dict[str, Tool], measure: Callable[[Tool], float], name: str) -> float:
    return measure(tools[name])


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {"env": environment(),
                               "versions": {"orchesjob": package_version("orchesjob"),
                                            "cmdsidecar": package_version("cmdsidecar")},
                               "rounds": ROUNDS_PER_REP * args.reps}
    rounds = results["rounds"]
    figures: dict[str, Callable[[Tool], float]] = {"sync": start_sync, "async": start_async}
    with tempfile.TemporaryDirectory(prefix="sidecar-bench-job-") as tmp, \
            tempfile.TemporaryDirectory(prefix="sc", dir="/tmp") as runtime:
        tools = {name: Tool(name, Path(tmp), runtime) for name in TOOLS}
        try:
            for figure, measure in figures.items():
                t0 = time.perf_counter()
                samples = run_alternating([BASELINE, SUBJECT],
                                          functools.partial(on_tool, tools, measure), rounds)
                results[figure] = {**samples.values, "errors": samples.errors,
                                   "seconds": time.perf_counter() - t0}
        finally:
            results["left_running"] = {n: t.abort_running() for n, t in tools.items()}
    return results


def report(r: dict[str, Any]) -> str:
    def met(x: float | None, target: float) -> str:
        return "met" if x is not None and x <= target else "NOT met"

    titles = {
        "sync": "`sidecar job start --sync -- true` vs `orchesjob start --sync -- true` "
                "(a fresh key each)",
        "async": "`sidecar job start -- sleep 1` (async, until the CLI returns) vs "
                 "`orchesjob start -- sleep 1`",
    }
    rows = []
    for figure, title in titles.items():
        f = r[figure]
        base, subj = median(f[BASELINE]), median(f[SUBJECT])
        rr = ratio(subj, base)
        target = TARGETS[figure]
        rows.append([title, fmt_ms(base, 1), fmt_ms(subj, 1), fmt_ratio(rr),
                     f"≤ {target}× {met(rr, target)}"])
    table = markdown_table(["figure", "baseline", "subject", "ratio", "target"], rows)
    notes = [f"\nbaseline: orchesjob {r['versions']['orchesjob']}; subject: sidecar job "
             f"(cmdsidecar {r['versions']['cmdsidecar']}); {r['rounds']} rounds per figure"]
    for figure in titles:
        for name, err in r[figure]["errors"].items():
            notes.append(f"{figure}: {name} failed: {err}")
    notes.append(f"jobs still running at the end (aborted): {r['left_running']}")
    return table + "\n".join(notes)


def main() -> int:
    missing = [str(argv[0]) for argv, _ in TOOLS.values() if not Path(argv[0]).exists()]
    if missing:
        print(f"bench/job.py: not installed: {', '.join(missing)} (install orchesjob with "
              f"`{BIN / 'pip'} install --ignore-requires-python orchesjob==1.1.0`)",
              file=sys.stderr)
        return 2
    return bench_main(__doc__, main_async, report)


if __name__ == "__main__":
    raise SystemExit(main())
