"""``sidecar job``: what the differential test against orchesjob (``test_job_orchesjob.py``)
cannot show, because orchesjob does otherwise or because it needs processes killed under it:
one target for concurrent starts of a key, no orphan when a worker is killed, a worker stopped
by a signal, aborts that need SIGKILL, Ctrl-C while waiting, the default state directory, the
working directory of a rerun, clean keeping running jobs, and the import path.

Real ``sidecar job`` processes; targets are held with ``cat gate`` (a FIFO) and released by
opening the gate; waits are on the processes' own answers (``start --sync`` of a running key
waits for it), on ``status`` with a deadline, or on psutil, never by sleeping."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.proctools import wait_gone

pytestmark = pytest.mark.timeout(60)

_SCRIPT = Path(sys.executable).with_name("sidecar")
SIDECAR = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "sidecar"]


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    home = tmp_path / "jobs-home"
    monkeypatch.setenv("SIDECAR_HOME", str(home))
    (tmp_path / "work").mkdir()
    os.mkfifo(tmp_path / "work" / "gate")
    yield home
    # Nothing a test started may outlive it.
    rc, running = job("status", "--running", cwd=tmp_path)
    for j in running if rc == 0 else []:
        job("abort", "--job-id", j["job_id"], "--grace-seconds", "0", cwd=tmp_path)


@pytest.fixture
def work(tmp_path: Path, home: Path) -> Path:
    return tmp_path / "work"


def run(*args: str, cwd: Path, env: dict[str, str] | None = None,
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SIDECAR, "job", *args], cwd=cwd, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=50, env=env)


def job(*args: str, cwd: Path, env: dict[str, str] | None = None) -> tuple[int, Any]:
    """Exit code and the JSON printed."""
    proc = run(*args, cwd=cwd, env=env)
    return proc.returncode, json.loads(proc.stdout) if proc.stdout.strip() else proc.stderr


def release(work: Path) -> None:
    """Let ``cat gate`` end (its reader is there: opening for writing does not block)."""
    with open(work / "gate", "w"):
        pass


def wait_for(cond: Any, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := cond()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)
    return value


def ended(key: str, cwd: Path) -> dict[str, Any]:
    """The job of ``key`` once it has ended (``status`` until then)."""
    def done() -> dict[str, Any] | None:
        rc, status = job("status", "--run-key", key, cwd=cwd)
        assert rc == 0, status
        return None if status["status"] in ("STARTING", "RUNNING") else status
    return wait_for(done)  # type: ignore[no-any-return]


def group(pgid: int) -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter():
        try:
            if os.getpgid(p.pid) == pgid:
                out.append(p)
        except (ProcessLookupError, psutil.Error):
            pass
    return out


# ---------------------------------------------------------------------------- idempotency
def test_ten_concurrent_starts_of_one_key_start_one_target(work: Path) -> None:
    procs = [subprocess.Popen([*SIDECAR, "job", "start", "--run-key", "once", "--",
                               "sh", "-c", "echo $$ >> starts; exec cat gate"],
                              cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              stdin=subprocess.DEVNULL) for _ in range(10)]
    outs = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=30)
        assert p.returncode == 0, stderr
        outs.append(json.loads(stdout))
    assert len({o["job_id"] for o in outs}) == 1
    assert sorted(o["accepted"] for o in outs) == [False] * 9 + [True]
    assert sum(o["existing"] for o in outs) == 9
    wait_for(lambda: (work / "starts").exists() and (work / "starts").read_text())
    release(work)
    assert ended("once", work)["status"] == "SUCCEEDED"
    assert len((work / "starts").read_text().split()) == 1


# ---------------------------------------------------------------------------- lost, stopped
def test_worker_killed_with_sigkill_is_lost_and_leaves_no_orphan(work: Path) -> None:
    rc, started = job("start", "--run-key", "victim", "--", "sh", "-c",
                      "sleep 300 & sleep 300 & wait", cwd=work)
    assert (rc, started["status"]) == (0, "RUNNING"), started
    target = started["target_pid"]
    members = wait_for(lambda: len(g := group(target)) == 3 and g)
    os.kill(started["worker_pid"], signal.SIGKILL)
    rc, status = job("status", "--run-key", "victim", cwd=work)
    assert (rc, status["status"], status["exit_code"]) == (0, "LOST", None)
    assert status["finished_at"] is not None
    for p in members:
        assert wait_gone(p, 10), f"orphan left: {p}"
    rc, again = job("status", "--running", cwd=work)
    assert (rc, again) == (0, [])


def test_worker_stopped_by_sigterm_is_cancelled(work: Path) -> None:
    rc, started = job("start", "--run-key", "shutdown", "--", "cat", "gate", cwd=work)
    assert started["status"] == "RUNNING"
    os.kill(started["worker_pid"], signal.SIGTERM)  # say, the machine shutting down
    done = ended("shutdown", work)
    assert (done["job_id"], done["status"]) == (started["job_id"], "CANCELLED")
    assert done["exit_code"] == -signal.SIGTERM
    assert done["aborted_at"] is None


def test_abort_of_a_target_ignoring_sigterm_kills_its_group(work: Path) -> None:
    rc, started = job("start", "--run-key", "stubborn", "--", "sh", "-c",
                      "trap '' TERM; sleep 300 & wait", cwd=work)
    target = started["target_pid"]
    members = wait_for(lambda: len(g := group(target)) == 2 and g)
    rc, aborted = job("abort", "--run-key", "stubborn", "--reason", "stuck",
                      "--grace-seconds", "0.3", cwd=work)
    assert rc == 0, aborted
    assert (aborted["status"], aborted["abort_reason"], aborted["aborted"]) == (
        "ABORTED", "stuck", True)
    assert aborted["sent_term_target"] and aborted["sent_kill_target"]
    assert aborted["sent_term_worker"] and not aborted["sent_kill_worker"]
    for p in members:
        assert wait_gone(p, 10)
    rc, again = job("abort", "--run-key", "stubborn", cwd=work)
    assert rc == 4
    rc, strict = job("start", "--run-key", "stubborn", "--strict", "--", "true", cwd=work)
    assert (strict["existing"], strict["status"]) == (True, "ABORTED")


def test_ctrl_c_while_waiting_leaves_the_job_running(work: Path) -> None:
    waiting = subprocess.Popen([*SIDECAR, "job", "start", "--run-key", "long", "--sync", "--",
                                "cat", "gate"], cwd=work, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    wait_for(lambda: job("status", "--run-key", "long", cwd=work)[1] != ""
             and job("status", "--run-key", "long", cwd=work)[1]["status"] == "RUNNING")
    waiting.send_signal(signal.SIGINT)
    _, stderr = waiting.communicate(timeout=10)
    assert waiting.returncode == 130
    assert "goes on" in stderr
    rc, status = job("status", "--run-key", "long", cwd=work)
    assert status["status"] == "RUNNING"
    release(work)
    done = ended("long", work)
    assert (done["status"], done["exit_code"]) == ("SUCCEEDED", 0)


# ---------------------------------------------------------------------------- files
def test_default_state_directory_is_per_user(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("SIDECAR_HOME", "XDG_DATA_HOME")}
    env["HOME"] = str(tmp_path)
    rc, done = job("start", "--run-key", "d", "--sync", "--", "sh", "-c", "echo hi; echo no >&2",
                   cwd=tmp_path, env=env)
    assert (rc, done["status"]) == (0, "SUCCEEDED")
    state = tmp_path / ".local" / "share" / "cmdsidecar"
    assert done["stdout_file"] == str(state / "logs" / f"{done['job_id']}.stdout")
    assert done["stderr_file"] == str(state / "logs" / f"{done['job_id']}.stderr")
    assert Path(done["stdout_file"]).read_text() == "hi\n"
    assert Path(done["stderr_file"]).read_text() == "no\n"
    assert (state / "jobs.db").is_file()
    assert stat.S_IMODE(state.stat().st_mode) == 0o700


def test_a_rerun_runs_in_the_directory_of_its_source(work: Path, tmp_path: Path) -> None:
    rc, first = job("start", "--run-key", "where", "--sync", "--", "pwd", cwd=work)
    assert Path(first["stdout_file"]).read_text().strip() == str(work)
    rc, again = job("rerun", "--run-key", "where", "--sync", "--reason", "again",
                    cwd=tmp_path)
    assert (rc, again["rerun"], again["attempt_no"]) == (0, True, 2)
    assert again["rerun_of_job_id"] == first["job_id"]
    assert Path(again["stdout_file"]).read_text().strip() == str(work)


def test_clean_deletes_finished_jobs_and_their_logs_never_a_running_one(work: Path) -> None:
    _, a = job("start", "--run-key", "a", "--sync", "--", "echo", "a", cwd=work)
    _, b = job("start", "--run-key", "b", "--sync", "--", "sh", "-c", "exit 2", cwd=work)
    _, held = job("start", "--run-key", "held", "--", "cat", "gate", cwd=work)
    rc, preview = job("clean", "--all", "--dry-run", cwd=work)
    assert (rc, preview["dry_run"], preview["deleted"]) == (0, True, 2)
    assert {i["job_id"] for i in preview["items"]} == {a["job_id"], b["job_id"]}
    assert Path(a["stdout_file"]).exists()
    rc, cleaned = job("clean", "--run-key", "a", "--all", cwd=work)
    assert (cleaned["deleted"], [i["run_key"] for i in cleaned["items"]]) == (1, ["a"])
    assert not Path(a["stdout_file"]).exists() and not Path(a["stderr_file"]).exists()
    assert job("status", "--run-key", "a", cwd=work)[0] == 3
    rc, none = job("clean", "--after", "2999-01-01", cwd=work)
    assert none == {"deleted": 0, "errors": 0}
    rc, rest = job("clean", "--before", "2999-01-01T00:00:00+00:00", cwd=work)
    assert [i["job_id"] for i in rest["items"]] == [b["job_id"]]
    assert job("status", "--run-key", "held", cwd=work)[1]["status"] == "RUNNING"
    assert Path(held["stdout_file"]).exists()
    release(work)


def test_a_bad_store_is_a_clear_error(work: Path, home: Path) -> None:
    home.mkdir(parents=True)
    (home / "jobs.db").write_bytes(b"this is not a database" * 100)
    proc = run("status", "--running", cwd=work)
    assert proc.returncode == 1
    assert proc.stderr.startswith("sidecar job: ") and "Traceback" not in proc.stderr


def test_a_locked_store_is_exit_5(work: Path, home: Path, monkeypatch: pytest.MonkeyPatch,
                                  ) -> None:
    assert job("start", "--run-key", "l", "--sync", "--", "true", cwd=work)[0] == 0
    monkeypatch.setenv("SIDECAR_JOB_LOCK_TIMEOUT", "0.2")
    holder = sqlite3.connect(home / "jobs.db", isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        proc = run("start", "--run-key", "l2", "--", "true", cwd=work)
        assert proc.returncode == 5, proc.stderr
        assert "locked" in proc.stderr
    finally:
        holder.close()
    rc, status = job("status", "--run-key", "l2", cwd=work)
    assert rc == 3  # nothing was started


def test_the_job_command_line_imports_no_asyncio_and_no_core(work: Path) -> None:
    code = ("import sys\nfrom sidecar.frontends.cli import main\n"
            "rc = main(['job', 'start', '--run-key', 'i', '--sync', '--', 'true'])\n"
            "bad = sorted(m for m in sys.modules if m == 'asyncio' or m.startswith("
            "('sidecar.core', 'sidecar.host', 'pygls', 'lsprotocol')))\n"
            "print(rc, bad, file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=work, capture_output=True,
                          text=True, timeout=30)
    assert proc.stderr.strip().splitlines()[-1] == "0 []", proc.stderr
