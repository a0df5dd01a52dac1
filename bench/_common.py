"""Shared helpers for the benchmarks in ``bench/`` (``core.py``, later ``protocol.py``).

Nothing here depends on ``sidecar`` or ``cmdorc``; the benchmarks import those themselves so a
missing or broken implementation only blanks its own column.
"""

from __future__ import annotations

import gc
import importlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

MIB = 1024 * 1024


# --------------------------------------------------------------------------- statistics


def median(xs: Sequence[float]) -> float | None:
    """Median of ``xs``, or ``None`` if empty."""
    return statistics.median(xs) if xs else None


def ratio(value: float | None, floor: float | None) -> float | None:
    if value is None or floor is None or floor == 0:
        return None
    return value / floor


# --------------------------------------------------------------------------- formatting


def fmt_ms(seconds: float | None, digits: int = 2) -> str:
    return "n/a" if seconds is None else f"{seconds * 1000:.{digits}f} ms"


def fmt_ratio(r: float | None) -> str:
    return "n/a" if r is None else f"{r:.2f}×"


def fmt_mib(mib: float | None) -> str:
    return "n/a" if mib is None else f"{mib:.1f} MiB"


def fmt_rate(mib_per_s: float | None) -> str:
    return "n/a" if mib_per_s is None else f"{mib_per_s:.0f} MiB/s"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub-flavoured Markdown table, columns padded for reading in a terminal."""
    cells = [list(map(str, headers))] + [[str(c).replace("|", "\\|") for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(r: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(cells[0]), sep, *(line(r) for r in cells[1:])])


def short_error(exc: BaseException, limit: int = 80) -> str:
    text = f"{type(exc).__name__}: {exc}".strip().replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --------------------------------------------------------------------------- implementations


def try_import(module: str) -> tuple[Any | None, str | None]:
    """Import ``module``; return ``(module, None)`` or ``(None, short error)``. Any exception
    counts as a failure (a half-written package may raise anything at import time)."""
    try:
        return importlib.import_module(module), None
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):
            raise
        return None, short_error(exc)


def package_version(dist: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(dist)
    except Exception:
        return None


# --------------------------------------------------------------------------- sampling


@dataclass
class Samples:
    """Raw samples of one figure: ``values[impl]`` plus the first error per impl."""

    values: dict[str, list[float]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def median(self, impl: str) -> float | None:
        return median(self.values.get(impl, []))


def run_alternating(
    impls: Sequence[str],
    measure: Callable[[str], float],
    reps: int,
    warmup: int = 1,
) -> Samples:
    """Call ``measure(impl)`` ``warmup + reps`` times per impl, rotating the impl order each
    round so slow drift (thermal, page cache, other load) spreads over all columns. Warm-up
    results are dropped. After the first exception an impl is skipped for the rest of the
    figure and the error is recorded."""
    out = Samples(values={i: [] for i in impls})
    for rnd in range(warmup + reps):
        k = rnd % len(impls) if impls else 0
        for impl in list(impls[k:]) + list(impls[:k]):
            if impl in out.errors:
                continue
            gc.collect()
            try:
                value = measure(impl)
            except KeyboardInterrupt:
                raise
            except BaseException as exc:
                out.errors[impl] = short_error(exc)
                continue
            if rnd >= warmup:
                out.values[impl].append(value)
    return out


class Timer:
    """``with Timer() as t: ...; t.elapsed`` in seconds (perf_counter)."""

    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        self.elapsed = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.elapsed = time.perf_counter() - self.start


# --------------------------------------------------------------------------- RSS


def ru_maxrss_kib() -> int:
    """``getrusage(RUSAGE_SELF).ru_maxrss`` in KiB (Linux reports KiB, macOS bytes).

    Caveat on Linux: the kernel carries ``ru_maxrss`` across ``execve`` (it records the old
    address space's high-water mark), so a child spawned by a big parent starts with the
    parent's peak. Use :func:`max_rss_kib` for measurements."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak // 1024 if sys.platform == "darwin" else peak


def max_rss_kib() -> int:
    """Peak RSS of this process's own address space, in KiB: ``VmHWM`` from
    ``/proc/self/status`` where available (reset by ``execve``, so not inherited from the
    parent), else ``ru_maxrss``."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return ru_maxrss_kib()


def run_rss_child(argv: Sequence[str], timeout: float = 120.0) -> dict[str, Any]:
    """Run a child (``[sys.executable, script, '--rss-child', ...]``) that prints one JSON
    object as its last stdout line; return it. Failures come back as ``{"error": ...}`` so the
    caller can print them in the table instead of crashing."""
    try:
        proc = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f}s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
        return {"error": f"child exit {proc.returncode}: {tail[:120]}"}
    try:
        data = json.loads(lines[-1])
    except json.JSONDecodeError:
        return {"error": f"bad child output: {lines[-1][:120]}"}
    return data if isinstance(data, dict) else {"error": "child output is not an object"}


def emit_child_result(data: dict[str, Any]) -> None:
    """Counterpart of :func:`run_rss_child`: print the result as the last stdout line."""
    sys.stdout.write(json.dumps(data) + "\n")
    sys.stdout.flush()


# --------------------------------------------------------------------------- report


def environment() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "load_avg": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def write_json(path: str, data: Any) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, sort_keys=False, default=str)
        fh.write("\n")


def bench_main(doc: str | None, measure: Callable[[Any], Awaitable[dict[str, Any]]],
               report: Callable[[dict[str, Any]], str]) -> int:
    """The command line of a protocol-level benchmark: ``[--quick] [--reps N] [--json OUT]``;
    runs ``measure(args)``, prints the environment and ``report(results)``."""
    import argparse
    import asyncio

    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer reps and runs")
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument("--json", default=None, help="write raw samples here")
    args = ap.parse_args()
    if args.reps is None:
        args.reps = 2 if args.quick else 5
    r = asyncio.run(measure(args))
    env = r["env"]
    print(f"python {env['python']} on {env['platform']}, {env['cpus']} cpus, "
          f"load {env['load_avg']}")
    print(report(r))
    if args.json:
        write_json(args.json, r)
    return 0
