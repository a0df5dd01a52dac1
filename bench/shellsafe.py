"""Cost of passing runtime values safely to the shell, against baselines measured in the same
run (``python bench/shellsafe.py``).

1. Resolving a command whose runtime value sits three levels deep (``"…$(… `…` …)…"``): the
   shell reader + environment references, vs resolving the same command with the value given
   as a config variable (plain substitution, no analysis). Microseconds per resolution.
2. ``run_command`` + ``wait`` of ``printf %s {{ x }} | cat`` with a hostile value, 100 runs, vs
   spawning the equivalent ``/bin/sh -c`` with asyncio (the raw floor).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from _common import fmt_ratio, markdown_table, median

from sidecar import CommandConfig, CommandOrchestrator, OutputStorageConfig, RunnerConfig
from sidecar.core.templates import Resolver

NESTED = '''echo "a $(printf %s "b `printf %s {{ x }}` c") d" | cat'''
VALUE = "x'; touch /tmp/never; \"$(touch /tmp/never)\" `touch /tmp/never`"


def resolve_cost(n: int) -> tuple[float, float]:
    t0 = time.perf_counter()
    for _ in range(n):
        Resolver({}, {"x": VALUE}).render_shell(NESTED)
    safe = (time.perf_counter() - t0) / n
    t0 = time.perf_counter()
    for _ in range(n):
        Resolver({"x": "value"}, {}).render_shell(NESTED)
    plain = (time.perf_counter() - t0) / n
    return safe, plain


async def floor_runs(n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        proc = await asyncio.create_subprocess_exec(
            "/bin/sh", "-c", "printf %s value | cat", stdout=asyncio.subprocess.PIPE,
            stdin=asyncio.subprocess.DEVNULL, start_new_session=True)
        await proc.communicate()
    return time.perf_counter() - t0


async def sidecar_runs(n: int) -> float:
    cfg = RunnerConfig(commands=[CommandConfig(name="P", command="printf %s {{ x }} | cat",
                                               max_concurrent=0)],
                       output_storage=OutputStorageConfig())
    async with CommandOrchestrator(cfg) as orch:
        t0 = time.perf_counter()
        for i in range(n):
            # a new value each run: no resolution cache helps
            handle = await orch.run_command("P", vars={"x": f"{VALUE} {i}"})
            result = await handle.wait(30)
            assert result.output == f"{VALUE} {i}", result.output
        return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reps", type=int, default=5)
    args = p.parse_args()
    safe, plain, floor, side = [], [], [], []
    for _ in range(args.reps):
        s, q = resolve_cost(2000)
        safe.append(s)
        plain.append(q)
        floor.append(asyncio.run(floor_runs(100)))
        side.append(asyncio.run(sidecar_runs(100)))
    ms, mp, mf, md = median(safe), median(plain), median(floor), median(side)
    assert ms and mp and mf and md
    print(markdown_table(["figure", "baseline", "sidecar", "ratio"], [
        ["resolve a value 3 levels deep (µs)", f"{mp * 1e6:.1f} µs (config value)",
         f"{ms * 1e6:.1f} µs", fmt_ratio(ms / mp)],
        ["100 × `printf %s {{ x }} | cat`, hostile value", f"{mf * 1000:.0f} ms (raw sh -c)",
         f"{md * 1000:.0f} ms", fmt_ratio(md / mf)],
    ]))


if __name__ == "__main__":
    main()
