#!/usr/bin/env python3
"""Benchmark the orchestrator core against the raw-asyncio floor (and cmdorc 0.12).

    python bench/core.py [--impl sidecar,cmdorc] [--quick] [--reps N] [--json OUT]

Every figure is measured in the same run for the *floor* (plain
``asyncio.create_subprocess_exec`` + read stdout to EOF + ``wait()``) and for each selected
implementation, alternating implementations between repetitions. Ratios are
``median(impl) / median(floor)`` for times (lower is better) and for throughput
(higher is better). Peak-RSS figures are absolute MiB, measured in a fresh child process per
implementation (``--rss-child IMPL``). See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if HERE not in sys.path:
    sys.path.insert(0, HERE)
if ROOT not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(1, ROOT)

from _common import (  # noqa: E402
    MIB,
    Samples,
    Timer,
    emit_child_result,
    environment,
    fmt_mib,
    fmt_ms,
    fmt_rate,
    fmt_ratio,
    markdown_table,
    max_rss_kib,
    package_version,
    ratio,
    ru_maxrss_kib,
    run_alternating,
    run_rss_child,
    short_error,
    try_import,
    write_json,
)

ORCH_IMPLS = ("sidecar", "cmdorc")
MODULES = {"sidecar": "sidecar", "cmdorc": "cmdorc"}

SEQ_N = 200
CHAIN_N = 50
CONC_N = 100
CONC_SLEEP = "0.2"
OUTPUT_BYTES = 50 * MIB
OUTPUT_BYTES_BIG = 200 * MIB
MEASURE_TIMEOUT = 90.0  # per single measurement; a hung implementation must not hang the bench
SHUTDOWN_TIMEOUT = 15.0


def output_command(nbytes: int) -> str:
    """Shell command writing ``nbytes`` of text to stdout as fast as coreutils can."""
    return f"yes 0123456789abcdef | head -c {nbytes}"


# =========================================================================== floor


async def floor_run(argv: list[str]) -> int:
    """The minimal equivalent of one orchestrated run: spawn, drain stdout, reap."""
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    assert proc.stdout is not None
    read = proc.stdout.read
    while await read(65536):
        pass
    return await proc.wait()


def _check_rc(rc: int, what: str) -> None:
    if rc != 0:
        raise RuntimeError(f"{what} exited {rc}")


async def floor_seq(n: int) -> float:
    with Timer() as t:
        for _ in range(n):
            _check_rc(await floor_run(["true"]), "true")
    return t.elapsed


async def floor_chain(n: int) -> float:
    return await floor_seq(n) / n


async def floor_concurrent(n: int) -> float:
    with Timer() as t:
        rcs = await asyncio.gather(*(floor_run(["sleep", CONC_SLEEP]) for _ in range(n)))
    for rc in rcs:
        _check_rc(rc, "sleep")
    return t.elapsed


async def floor_output(nbytes: int) -> float:
    with Timer() as t:
        _check_rc(await floor_run(["sh", "-c", output_command(nbytes)]), "output command")
    return nbytes / MIB / t.elapsed


# =========================================================================== orchestrators


@dataclass
class Api:
    name: str
    CommandOrchestrator: Any
    CommandConfig: Any
    RunnerConfig: Any

    def orchestrator(self, commands: list[dict[str, Any]]) -> Any:
        cfgs = [self.CommandConfig(**c) for c in commands]
        return self.CommandOrchestrator(self.RunnerConfig(commands=cfgs, vars={}))


def load_api(impl: str) -> tuple[Api | None, str | None]:
    mod, err = try_import(MODULES[impl])
    if mod is None:
        return None, f"import failed: {err}"
    try:
        return Api(impl, mod.CommandOrchestrator, mod.CommandConfig, mod.RunnerConfig), None
    except AttributeError as exc:
        return None, f"import failed: {short_error(exc)}"


def cmd(name: str, command: str, triggers: list[str] | None = None, **kw: Any) -> dict[str, Any]:
    return {
        "name": name,
        "command": command,
        "triggers": triggers or [],
        "max_concurrent": kw.pop("max_concurrent", 0),
        "keep_in_memory": kw.pop("keep_in_memory", 1),
        **kw,
    }


async def with_orch(
    api: Api, commands: list[dict[str, Any]], body: Callable[[Any], Awaitable[float]]
) -> float:
    """Build + start an orchestrator (untimed), run the timed ``body``, shut down (untimed)."""
    orch = api.orchestrator(commands)
    await orch.startup()
    try:
        return await body(orch)
    finally:
        await asyncio.wait_for(orch.shutdown(), SHUTDOWN_TIMEOUT)


def _check_handle(handle: Any, what: str) -> None:
    if handle.success is not True:
        raise RuntimeError(f"{what} did not succeed (state={getattr(handle, 'state', '?')})")


async def orch_seq(api: Api, n: int) -> float:
    async def body(orch: Any) -> float:
        with Timer() as t:
            for _ in range(n):
                h = await orch.run_command("T")
                await h.wait(30)
                _check_handle(h, "true")
        return t.elapsed

    return await with_orch(api, [cmd("T", "true")], body)


async def orch_chain(api: Api, n: int) -> float:
    commands = [cmd("C0", "true", max_concurrent=1)] + [
        cmd(f"C{i}", "true", [f"command_success:C{i - 1}"], max_concurrent=1) for i in range(1, n)
    ]
    last = f"C{n - 1}"

    async def body(orch: Any) -> float:
        done = asyncio.Event()
        orch.on_event(f"command_success:{last}", lambda handle, context: done.set())
        with Timer() as t:
            await orch.run_command("C0")
            await asyncio.wait_for(done.wait(), 60)
        return t.elapsed / n

    return await with_orch(api, commands, body)


async def orch_concurrent(api: Api, n: int) -> float:
    async def body(orch: Any) -> float:
        with Timer() as t:
            handles = [await orch.run_command("S") for _ in range(n)]
            await asyncio.gather(*(h.wait(60) for h in handles))
        for h in handles:
            _check_handle(h, "sleep")
        return t.elapsed

    return await with_orch(api, [cmd("S", f"sleep {CONC_SLEEP}")], body)


async def orch_output(api: Api, nbytes: int) -> float:
    async def body(orch: Any) -> float:
        with Timer() as t:
            h = await orch.run_command("O")
            await h.wait(120)
        _check_handle(h, "output command")
        return nbytes / MIB / t.elapsed

    return await with_orch(api, [cmd("O", output_command(nbytes))], body)


# =========================================================================== figures


@dataclass
class Figure:
    key: str
    title: str
    higher_is_better: bool
    target: float  # ratio to the floor
    floor: Callable[[], Awaitable[float]]
    orch: Callable[[Api], Awaitable[float]]

    @property
    def target_text(self) -> str:
        return f"{'≥' if self.higher_is_better else '≤'} {self.target:g}×"

    def fmt_abs(self, v: float | None) -> str:
        return fmt_rate(v) if self.higher_is_better else fmt_ms(v)

    def met(self, r: float | None) -> bool | None:
        if r is None:
            return None
        return r >= self.target if self.higher_is_better else r <= self.target


FIGURES = [
    Figure(
        "seq_true",
        f"1. run_command+wait `true` ×{SEQ_N} sequential (total)",
        False,
        1.3,
        lambda: floor_seq(SEQ_N),
        lambda api: orch_seq(api, SEQ_N),
    ),
    Figure(
        "chain_hop",
        f"2. one hop of a {CHAIN_N}-command command_success chain",
        False,
        1.3,
        lambda: floor_chain(CHAIN_N),
        lambda api: orch_chain(api, CHAIN_N),
    ),
    Figure(
        "concurrent_sleep",
        f"3. {CONC_N}× concurrent `sleep {CONC_SLEEP}` (wall)",
        False,
        1.2,
        lambda: floor_concurrent(CONC_N),
        lambda api: orch_concurrent(api, CONC_N),
    ),
    Figure(
        "output_throughput",
        f"4. stdout throughput, {OUTPUT_BYTES // MIB} MiB output",
        True,
        0.8,
        lambda: floor_output(OUTPUT_BYTES),
        lambda api: orch_output(api, OUTPUT_BYTES),
    ),
]

RSS_TARGET_MIB = 32.0


def run_measurement(coro_factory: Callable[[], Awaitable[float]]) -> float:
    """One measurement on a fresh event loop, bounded by MEASURE_TIMEOUT."""

    async def bounded() -> float:
        return await asyncio.wait_for(coro_factory(), MEASURE_TIMEOUT)

    return asyncio.run(bounded())


# =========================================================================== RSS child


async def _rss_child_async(impl: str, nbytes: int) -> dict[str, Any]:
    if impl == "floor":
        _check_rc(await floor_run(["true"]), "true")
        gc.collect()
        base = max_rss_kib()
        with Timer() as t:
            _check_rc(await floor_run(["sh", "-c", output_command(nbytes)]), "output command")
        peak = max_rss_kib()
    else:
        api, err = load_api(impl)
        if api is None:
            raise RuntimeError(err)
        orch = api.orchestrator([cmd("W", "true"), cmd("O", output_command(nbytes))])
        await orch.startup()
        try:
            h = await orch.run_command("W")
            await h.wait(30)
            _check_handle(h, "warm-up")
            gc.collect()
            base = max_rss_kib()
            with Timer() as t:
                h = await orch.run_command("O")
                await h.wait(300)
            peak = max_rss_kib()
            _check_handle(h, "output command")
        finally:
            await asyncio.wait_for(orch.shutdown(), SHUTDOWN_TIMEOUT)
    return {
        "impl": impl,
        "bytes": nbytes,
        "baseline_kib": base,
        "peak_kib": peak,
        "growth_mib": (peak - base) / 1024,
        "ru_maxrss_kib": ru_maxrss_kib(),
        "seconds": t.elapsed,
    }


def rss_child_main(impl: str, nbytes: int) -> int:
    logging.disable(logging.WARNING)
    try:
        data = asyncio.run(_rss_child_async(impl, nbytes))
    except Exception as exc:
        data = {"impl": impl, "bytes": nbytes, "error": short_error(exc, 160)}
    emit_child_result(data)
    return 0


def measure_rss(impl: str, nbytes: int) -> dict[str, Any]:
    argv = [
        sys.executable,
        os.path.abspath(__file__),
        "--rss-child",
        impl,
        "--rss-bytes",
        str(nbytes),
    ]
    return run_rss_child(argv, timeout=240)


# =========================================================================== main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--impl", default="sidecar,cmdorc", help="comma list of: sidecar,cmdorc (floor always runs)"
    )
    p.add_argument("--quick", action="store_true", help="2 repetitions, skip the 200 MiB RSS run")
    p.add_argument(
        "--reps", type=int, default=None, help="timed repetitions per figure (default 5, --quick 2)"
    )
    p.add_argument("--json", metavar="OUT", help="write raw samples and results to OUT")
    p.add_argument("--rss-child", metavar="IMPL", help=argparse.SUPPRESS)
    p.add_argument("--rss-bytes", type=int, default=OUTPUT_BYTES, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    impls = [i.strip() for i in args.impl.split(",") if i.strip()]
    bad = [i for i in impls if i not in ORCH_IMPLS]
    if bad:
        p.error(f"unknown --impl {', '.join(bad)} (choose from {', '.join(ORCH_IMPLS)})")
    args.impls = list(dict.fromkeys(impls))
    if args.reps is None:
        args.reps = 2 if args.quick else 5
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.rss_child:
        return rss_child_main(args.rss_child, args.rss_bytes)

    # Orchestrator warnings (if any) go to stderr; keep stdout for the report.
    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)

    apis: dict[str, Api] = {}
    unavailable: dict[str, str] = {}
    for impl in args.impls:
        api, err = load_api(impl)
        if api is None:
            unavailable[impl] = err or "unavailable"
        else:
            apis[impl] = api
    versions = {
        "sidecar": package_version("cmdsidecar"),
        "cmdorc": package_version("cmdorc"),
    }
    header_name = {
        "sidecar": "sidecar",
        "cmdorc": f"cmdorc {'.'.join((versions['cmdorc'] or '0.12').split('.')[:2])}",
    }
    active = ["floor", *apis]

    results: dict[str, Any] = {
        "env": environment(),
        "versions": versions,
        "reps": args.reps,
        "quick": args.quick,
        "impls": args.impls,
        "unavailable": unavailable,
        "figures": {},
        "rss": {},
    }
    rows: list[list[str]] = []

    def cell(impl: str, text: str) -> str:
        # full reason goes in the note under the table; keep the cells short
        return text if impl not in unavailable else f"n/a ({unavailable[impl].split(':')[0]})"

    # ---- timing figures
    for fig in FIGURES:

        def measure(impl: str, fig: Figure = fig) -> float:
            if impl == "floor":
                return run_measurement(fig.floor)
            api = apis[impl]
            return run_measurement(lambda: fig.orch(api))

        s: Samples = run_alternating(active, measure, reps=args.reps, warmup=1)
        floor_med = s.median("floor")
        fig_out: dict[str, Any] = {
            "title": fig.title,
            "unit": "MiB/s" if fig.higher_is_better else "s",
            "higher_is_better": fig.higher_is_better,
            "target_ratio": fig.target,
            "samples": s.values,
            "median": {i: s.median(i) for i in active},
            "ratio": {},
            "errors": s.errors,
        }
        row = [
            fig.title,
            fig.fmt_abs(floor_med) if "floor" not in s.errors else f"error: {s.errors['floor']}",
        ]
        met: list[str] = []
        for impl in args.impls:
            if impl in unavailable:
                row.append(cell(impl, ""))
                continue
            if impl in s.errors:
                row.append(f"error: {s.errors[impl]}")
                met.append(f"{impl}: error")
                continue
            med = s.median(impl)
            r = ratio(med, floor_med)
            fig_out["ratio"][impl] = r
            row.append(f"{fmt_ratio(r)} ({fig.fmt_abs(med)})")
            ok = fig.met(r)
            met.append(f"{impl}: {'n/a' if ok is None else 'yes' if ok else 'no'}")
        row += [fig.target_text, ", ".join(met) or "n/a"]
        rows.append(row)
        results["figures"][fig.key] = fig_out

    # ---- RSS figures (fresh child per implementation)
    sizes = [OUTPUT_BYTES] + ([] if args.quick else [OUTPUT_BYTES_BIG])
    rss_impls = ["floor", *apis]
    growth: dict[tuple[str, int], float] = {}
    for nbytes in sizes:
        per: dict[str, Any] = {}
        for impl in rss_impls:
            per[impl] = measure_rss(impl, nbytes)
            if "growth_mib" in per[impl]:
                growth[(impl, nbytes)] = per[impl]["growth_mib"]
        results["rss"][str(nbytes)] = per

        def rss_cell(impl: str, per: dict[str, Any] = per) -> str:
            if impl in unavailable:
                return cell(impl, "")
            d = per.get(impl, {})
            return f"error: {d['error']}" if "error" in d else fmt_mib(d.get("growth_mib"))

        label = "5a" if nbytes == OUTPUT_BYTES else "5b"
        title = f"{label}. peak RSS growth, {nbytes // MIB} MiB output"
        row = [title, rss_cell("floor")] + [rss_cell(i) for i in args.impls]
        met = []
        for impl in apis:
            g = growth.get((impl, nbytes))
            if g is None:
                met.append(f"{impl}: error")
                continue
            ok = g <= RSS_TARGET_MIB
            if nbytes != OUTPUT_BYTES and (impl, OUTPUT_BYTES) in growth:
                # independent of output size: within 8 MiB of the 50 MiB figure
                ok = ok and g <= growth[(impl, OUTPUT_BYTES)] + 8
            met.append(f"{impl}: {'yes' if ok else 'no'}")
        target = f"≤ {RSS_TARGET_MIB:g} MiB" + ("" if nbytes == OUTPUT_BYTES else ", ≈ 50 MiB row")
        rows.append(row + [target, ", ".join(met) or "n/a"])

    # ---- report
    env = results["env"]
    headers = ["figure", "floor", *(header_name[i] for i in args.impls), "target", "met"]
    print(
        f"# orchestrator core benchmark ({'quick, ' if args.quick else ''}{args.reps} reps, median)"
    )
    print()
    print(
        f"Python {env['python']} on {env['platform']}, {env['cpus']} CPUs"
        f" (load avg {', '.join(f'{x:.2f}' for x in env['load_avg'] or [])})"
    )
    print()
    print(markdown_table(headers, rows))
    print()
    print(
        "Ratios are median(impl) / median(floor); for times lower is better, for throughput"
        " higher is better. Absolute medians in parentheses. RSS figures are absolute MiB"
        " (peak RSS after the run minus peak after imports + a warm-up run, fresh process)."
    )
    for impl, err in unavailable.items():
        print(f"\nNote: {impl} column skipped ({err}).")
    if args.json:
        write_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
