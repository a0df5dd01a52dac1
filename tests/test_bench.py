"""Smoke test of the benchmarks in ``bench/``: each runs in quick mode and prints its figures.

The numbers are not checked (a shared test machine is too noisy for targets); the table must
have every figure with a measured ratio, and ``--json`` the raw samples behind them.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
RATIO = re.compile(r"\d+\.\d\d×")


def run_quick(bench: str, tmp_path: Path, figures: dict[str, str | None]) -> dict[str, Any]:
    """Run ``bench/<bench>.py --quick``; check its table has a row with a ratio for each figure
    (rows are found by how they start; with a target, the target is printed beside it). Returns
    its ``--json`` data."""
    out = tmp_path / f"{bench}.json"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / f"{bench}.py"), "--quick",
                           "--json", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=170)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = {line.split("|")[1].strip(): line for line in proc.stdout.splitlines()
            if line.startswith("| ")}
    for start, target in figures.items():
        line = next((v for k, v in rows.items() if k.startswith(start)), None)
        assert line is not None, f"no row {start!r} in:\n{proc.stdout}"
        assert RATIO.search(line), line
        if target is not None:
            assert target in line and "met" in line, line
    data: dict[str, Any] = json.loads(out.read_text())
    return data


@pytest.mark.timeout(180)
def test_store_bench_quick(tmp_path: Path) -> None:
    data = run_quick("store", tmp_path, {
        "`sidecar/run` `wait: true` of `true`, store on vs off": "≤ 1.15×",
        "the same, store on with 1,000 runs of the command kept": None,
        "`sidecar/history` of one command (limit 10)": "≤ 1.5×",
        "host start (spawn → ready)": "≤ 1.5×",
    })
    for figure, keys in (("run", ("store on", "store off", "store on, at keep_runs")),
                         ("history", ("big", "empty", "same answer")),
                         ("host_start", ("full", "empty"))):
        for key in keys:
            samples = data[figure][key]
            assert samples and all(s > 0 for s in samples), (figure, key, samples)
    assert data["history"]["answer_rows"] == {"big": 10, "empty": 0, "same answer": 10}
    assert data["host_start"]["lost_marked"] and set(data["host_start"]["lost_marked"]) == {50}


@pytest.mark.timeout(180)
def test_job_bench_quick(tmp_path: Path) -> None:
    if not Path(sys.executable).with_name("orchesjob").exists():
        msg = "orchesjob is not installed (pip install --ignore-requires-python orchesjob==1.1.0)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    data = run_quick("job", tmp_path, {
        "`sidecar job start --sync -- true` vs `orchesjob start --sync -- true`": "≤ 0.3×",
        "`sidecar job start -- sleep 1` (async, until the CLI returns)": "≤ 0.5×",
    })
    for figure in ("sync", "async"):
        assert data[figure]["errors"] == {}, data[figure]["errors"]
        for tool in ("orchesjob", "sidecar"):
            samples = data[figure][tool]
            assert len(samples) == data["rounds"] and all(s > 0 for s in samples), \
                (figure, tool, samples)
    assert data["left_running"] == {"orchesjob": 0, "sidecar": 0}


@pytest.mark.timeout(180)
def test_mcp_bench_quick(tmp_path: Path) -> None:
    data = run_quick("mcp_server", tmp_path, {
        "`run_command` of `true` through MCP (tool call → result)": "≤ 3×",
        "`sidecar mcp` start → `initialize` answered": "≤ 2×",
    })
    for figure, keys in (("call", ("mcp", "protocol")), ("start", ("sidecar mcp", "import mcp"))):
        for key in keys:
            samples = data[figure][key]
            assert len(samples) == data["rounds"][figure] and all(s > 0 for s in samples)
