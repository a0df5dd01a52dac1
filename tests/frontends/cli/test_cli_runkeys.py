"""The command line of run keys: ``run --key [--strict]``, ``rerun``, ``unlock``, ``clean``,
``cancel --reason/--key``, ``history --key``; real ``sidecar`` processes, through the
workspace's host and with ``--no-host``. Runs are held with ``cat gate`` (a FIFO) where a test
needs one to be running; the tests wait on what the processes print (select with a deadline),
never by sleeping."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

import pytest

from sidecar.host.locate import Workspace, host_pid

pytestmark = pytest.mark.timeout(60)

_SCRIPT = Path(sys.executable).with_name("sidecar")
SIDECAR = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "sidecar"]
ENV = {**os.environ, "NO_COLOR": "1"}

CONFIG = """\
[[command]]
name = "Gate"
command = "echo started >> starts; cat gate"
max_concurrent = 0

[[command]]
name = "Count"
command = "echo x >> count; echo counted"

[[command]]
name = "Fail"
command = "echo x >> fails; exit 4"
"""

@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "sidecar.toml").write_text(CONFIG)
    os.mkfifo(tmp_path / "gate")
    return tmp_path


def sidecar(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SIDECAR, *args], cwd=cwd, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=50, env=ENV)


def spawn(*args: str, cwd: Path, stdout: Any = subprocess.PIPE) -> subprocess.Popen[bytes]:
    return subprocess.Popen([*SIDECAR, *args], cwd=cwd, stdin=subprocess.DEVNULL,
                            stdout=stdout, stderr=subprocess.PIPE, env=ENV)


def lines_of(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def messages(stdout: str) -> list[dict[str, Any]]:
    """The ``--json`` lines of a following command."""
    return [json.loads(line) for line in stdout.splitlines()]


def finals(stdout: str) -> list[dict[str, Any]]:
    """The final ``sidecar/runUpdate`` params in ``--json`` output."""
    return [m["params"] for m in messages(stdout) if m["method"] == "sidecar/runUpdate"
            and m["params"]["state"] in ("success", "failed", "cancelled", "lost")]


def history(root: Path, name: str, *more: str) -> list[dict[str, Any]]:
    proc = sidecar("history", name, "--json", "--limit", "0", *more, cwd=root)
    assert proc.returncode == 0, proc.stderr
    runs: list[dict[str, Any]] = json.loads(proc.stdout)
    return runs


class Pipe:
    """The lines a child writes to one of its pipes, read as they come (non-blocking)."""

    def __init__(self, stream: IO[bytes] | None) -> None:
        assert stream is not None
        self.fd = stream.fileno()
        os.set_blocking(self.fd, False)
        self.buffer = b""
        self.lines: list[str] = []
        self.eof = False

    def pump(self) -> None:
        try:
            data = os.read(self.fd, 1 << 16)
        except BlockingIOError:
            return
        if not data:
            self.eof = True
            return
        self.buffer += data
        *done, self.buffer = self.buffer.split(b"\n")
        self.lines += [line.decode() for line in done]

    @property
    def text(self) -> str:
        return "".join(line + "\n" for line in self.lines) + self.buffer.decode()


def wait_until(pipes: Iterable[Pipe], done: Callable[[], bool], timeout: float = 30.0) -> None:
    """Read the pipes until ``done()`` (or all have ended); fails after ``timeout``."""
    pipes = list(pipes)
    deadline = time.monotonic() + timeout
    while not done():
        open_ = [p for p in pipes if not p.eof]
        left = deadline - time.monotonic()
        assert open_ and left > 0, "gave up waiting: " + " | ".join(p.text for p in pipes)
        ready = select.select([p.fd for p in open_], [], [], left)[0]
        for p in open_:
            if p.fd in ready:
                p.pump()


def finish(procs: list[subprocess.Popen[bytes]], pipes: list[Pipe],
           timeout: float = 30.0) -> list[int]:
    """Read the pipes to their end, then the exit codes."""
    wait_until(pipes, lambda: all(p.eof for p in pipes), timeout)
    return [proc.wait(timeout) for proc in procs]


def release(root: Path, text: str = "released\n") -> None:
    """Let ``cat gate`` end (opening the FIFO waits until the command has it open)."""

    def write() -> None:
        with open(root / "gate", "w") as gate:
            gate.write(text)

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    writer.join(20)
    assert not writer.is_alive(), "nothing read the gate"


def following(pipe: Pipe) -> bool:
    return any(line.endswith("; following it") for line in pipe.lines)


def running(pipe: Pipe) -> dict[str, Any] | None:
    """The ``running`` update in a ``--json`` stdout read so far."""
    for line in pipe.lines:
        m = json.loads(line)
        if m["method"] == "sidecar/runUpdate" and m["params"]["state"] == "running":
            params: dict[str, Any] = m["params"]
            return params
    return None


# ------------------------------------------------------------------------------ run --key
def test_twenty_no_host_starts_of_one_key_start_one_process(root: Path) -> None:
    """Twenty processes, each with an orchestrator of its own, share the workspace's run
    records: one starts the command, the others follow that run (through its record) and end
    with it."""
    outs = [root / f"out{i}.json" for i in range(20)]
    procs = []
    for out in outs:
        with open(out, "wb") as sink:
            procs.append(spawn("run", "Gate", "--key", "nightly", "--no-host", "--json",
                               cwd=root, stdout=sink))
    errs = [Pipe(p.stderr) for p in procs]
    # Held by the gate until every process has its answer: one started it, 19 follow it.
    wait_until(errs, lambda: sum(map(following, errs)) == 19)
    assert lines_of(root / "starts") == ["started"]
    release(root)
    codes = finish(procs, errs)
    assert codes == [0] * 20, [e.text for e in errs]
    assert lines_of(root / "starts") == ["started"]
    ids = set()
    for out in outs:
        (final,) = finals(out.read_text())
        assert (final["state"], final["runKey"], final["attempt"]) == ("success", "nightly", 1)
        ids.add(final["runId"])
    assert len(ids) == 1
    (run_id,) = ids
    assert all(f"run {run_id[:8]} of Gate (key nightly, attempt 1) is already" in e.text
               for e in errs if following(e))
    assert host_pid(Workspace(str(root)).lock_path) is None  # no host was involved
    assert [r["runId"] for r in history(root, "Gate", "--no-host")] == [run_id]


def test_run_key_through_the_host_follows_the_run_already_there(root: Path) -> None:
    first = spawn("run", "Gate", "--key", "k", "--json", cwd=root)
    out1, err1 = Pipe(first.stdout), Pipe(first.stderr)
    wait_until([out1, err1], lambda: running(out1) is not None)
    second = spawn("run", "Gate", "--key", "k", "--json", cwd=root)
    out2, err2 = Pipe(second.stdout), Pipe(second.stderr)
    wait_until([out2, err2], lambda: following(err2))
    release(root)
    assert finish([first, second], [out1, err1, out2, err2]) == [0, 0]
    assert lines_of(root / "starts") == ["started"]
    (a,), (b,) = finals(out1.text), finals(out2.text)
    assert a["runId"] == b["runId"] and b["state"] == "success"
    assert err1.text == ""
    assert f"run {a['runId'][:8]} of Gate (key k, attempt 1) is already running; following it" \
        in err2.text

    # The key's run has ended: the next start is attempt 2.
    proc = sidecar("run", "Count", "--key", "k", cwd=root)
    assert proc.returncode == 0 and proc.stderr == ""
    proc = sidecar("run", "Count", "--key", "k", "--json", cwd=root)
    (run,) = finals(proc.stdout)
    assert (run["attempt"], lines_of(root / "count")) == (2, ["x", "x"])


@pytest.mark.parametrize("mode", [[], ["--no-host"]], ids=["host", "no-host"])
def test_ctrl_c_stops_following_a_run_it_did_not_start(root: Path, mode: list[str]) -> None:
    owner = spawn("run", "Gate", "--key", "k", "--json", *mode, cwd=root)
    out1, err1 = Pipe(owner.stdout), Pipe(owner.stderr)
    wait_until([out1, err1], lambda: running(out1) is not None)
    follower = spawn("run", "Gate", "--key", "k", *mode, cwd=root)
    out2, err2 = Pipe(follower.stdout), Pipe(follower.stderr)
    wait_until([out2, err2], lambda: following(err2))
    follower.send_signal(signal.SIGINT)
    assert finish([follower], [out2, err2]) == [130]
    assert "interrupted: no longer following; the run goes on" in err2.text
    assert owner.poll() is None  # not cancelled
    release(root)
    assert finish([owner], [out1, err1]) == [0]
    assert [r["state"] for r in finals(out1.text)] == ["success"]


def test_a_host_client_follows_a_key_run_of_a_no_host_process(root: Path) -> None:
    """The run belongs to a ``--no-host`` process: the host follows it through its record."""
    owner = spawn("run", "Gate", "--key", "k", "--no-host", "--json", cwd=root)
    out1, err1 = Pipe(owner.stdout), Pipe(owner.stderr)
    wait_until([out1, err1], lambda: running(out1) is not None)
    follower = spawn("run", "Gate", "--key", "k", cwd=root)
    out2, err2 = Pipe(follower.stdout), Pipe(follower.stderr)
    wait_until([out2, err2], lambda: following(err2))
    assert follower.poll() is None  # still following
    release(root)
    assert finish([owner, follower], [out1, err1, out2, err2]) == [0, 0]
    assert lines_of(root / "starts") == ["started"]
    assert out2.lines[-1].startswith("✓ Gate success")


def test_strict_returns_the_finished_run_until_unlocked_once(root: Path) -> None:
    proc = sidecar("run", "Count", "--key", "once", "--strict", "--json", cwd=root)
    assert proc.returncode == 0, proc.stderr
    (first,) = finals(proc.stdout)
    for mode in ([], ["--no-host"]):
        proc = sidecar("run", "Count", "--key", "once", "--strict", "--json", *mode, cwd=root)
        assert proc.returncode == 0, proc.stderr
        assert [r["runId"] for r in finals(proc.stdout)] == [first["runId"]]
        assert (f"run {first['runId'][:8]} of Count (key once, attempt 1) already ran "
                "(success); strict key: not started again") in proc.stderr
    assert lines_of(root / "count") == ["x"]
    proc = sidecar("run", "Count", "--key", "once", "--strict", cwd=root)
    assert proc.stdout.startswith("✓ Count success")

    proc = sidecar("unlock", "Count", "--key", "once", "--reason", "data fix", cwd=root)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "unlocked Count key once (data fix): its next `run --strict` " \
                          "starts once\n"
    proc = sidecar("run", "Count", "--key", "once", "--strict", "--json", cwd=root)
    assert proc.returncode == 0, proc.stderr
    (second,) = finals(proc.stdout)
    assert (second["attempt"], second["reason"]) == (2, "data fix")
    assert "strict key once was unlocked" in proc.stderr
    proc = sidecar("run", "Count", "--key", "once", "--strict", "--json", "--no-host", cwd=root)
    assert [r["runId"] for r in finals(proc.stdout)] == [second["runId"]]
    assert lines_of(root / "count") == ["x", "x"]

    # Unlocking in-process works for the host's next strict run too.
    proc = sidecar("unlock", "Count", "--key", "once", "--no-host", "--json", cwd=root)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["runKey"] == "once"
    assert sidecar("run", "Count", "--key", "once", "--strict", cwd=root).returncode == 0
    assert lines_of(root / "count") == ["x", "x", "x"]

    proc = sidecar("unlock", "Count", "--key", "never", cwd=root)
    assert proc.returncode == 1 and "no run of 'Count' with run key 'never'" in proc.stderr


def test_a_strict_keys_failed_run_gives_its_exit_code_again(root: Path) -> None:
    for _ in range(2):
        proc = sidecar("run", "Fail", "--key", "f", "--strict", cwd=root)
        assert proc.returncode == 4
        assert any(line.startswith("✗ Fail failed") for line in proc.stdout.splitlines())
    assert lines_of(root / "fails") == ["x"]


@pytest.mark.parametrize("ttl", ["0", "5x", "-3", "1.5h", "m", ""])
def test_a_bad_ttl_is_a_usage_error(root: Path, ttl: str) -> None:
    proc = sidecar("unlock", "Count", "--key", "k", "--ttl", ttl, cwd=root)
    assert proc.returncode == 2
    assert "--ttl" in proc.stderr and "30m" in proc.stderr
    assert host_pid(Workspace(str(root)).lock_path) is None


def test_unlock_with_a_ttl(root: Path) -> None:
    assert sidecar("run", "Count", "--key", "t", "--strict", cwd=root).returncode == 0
    proc = sidecar("unlock", "Count", "--key", "t", "--ttl", "30m", "--json", cwd=root)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["expiresAt"] is not None and result["expiresAt"] > result["allowedAt"]


@pytest.mark.parametrize("mode", [[], ["--no-host"]], ids=["host", "no-host"])
def test_usage_errors(root: Path, mode: list[str]) -> None:
    for args in (["run", "Count", "--strict"], ["run", "Count", "--key", " "],
                 ["clean"], ["clean", "--key", "k"], ["clean", "--run", "x", "--all"],
                 ["unlock", "Count"], ["rerun"]):
        proc = sidecar(*args, *mode, cwd=root)
        assert proc.returncode == 2, (args, proc.stderr)
    proc = sidecar("run", "Count", "--strict", *mode, cwd=root)
    assert proc.stderr == "sidecar: --strict needs --key\n"
    assert not (root / "count").exists()
    proc = sidecar("cancel", "--all", "--key", "k", cwd=root)
    assert (proc.returncode, proc.stderr) == (2, "sidecar: --key needs --command NAME\n")
    assert host_pid(Workspace(str(root)).lock_path) is None


# ------------------------------------------------------------------------------ rerun
@pytest.mark.parametrize("mode", [[], ["--no-host"]], ids=["host", "no-host"])
def test_rerun_starts_the_next_attempt(root: Path, mode: list[str]) -> None:
    proc = sidecar("run", "Count", "--key", "r", "--json", *mode, cwd=root)
    (first,) = finals(proc.stdout)
    proc = sidecar("rerun", "Count", "--key", "r", "--reason", "retry after disk error",
                   "--json", *mode, cwd=root)
    assert proc.returncode == 0, proc.stderr
    (second,) = finals(proc.stdout)
    assert (second["attempt"], second["rerunOf"], second["reason"], second["runKey"]) == (
        2, first["runId"], "retry after disk error", "r")
    assert f"rerun of {first['runId'][:8]}: run {second['runId'][:8]} of Count (key r, " \
           "attempt 2)" in proc.stderr
    proc = sidecar("rerun", first["runId"], *mode, cwd=root)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1].startswith("✓ Count success")
    assert lines_of(root / "count") == ["x", "x", "x"]
    runs = history(root, "Count", "--key", "r", *mode)
    assert [(r["attempt"], r["rerunOf"]) for r in runs] == [
        (3, first["runId"]), (2, first["runId"]), (1, None)]
    assert all(r["runKey"] == "r" for r in runs)

    proc = sidecar("history", "Count", *mode, cwd=root)
    header, *rows = proc.stdout.splitlines()
    assert header.split() == ["RUN", "KEY", "ATTEMPT", "RESULT", "STARTED", "BY", "WHY"]
    assert rows[1].split()[:3] == [second["runId"], "r", "2"]
    assert rows[1].endswith("manual run (retry after disk error)")

    proc = sidecar("rerun", "Count", *mode, cwd=root)  # its last run
    assert proc.returncode == 0 and "attempt 4)" in proc.stderr
    proc = sidecar("rerun", "00000000-0000-0000-0000-000000000000", *mode, cwd=root)
    assert (proc.returncode, proc.stderr) == (
        1, "sidecar: no run with id '00000000-0000-0000-0000-000000000000'\n")
    proc = sidecar("rerun", "Count", "--key", "nope", *mode, cwd=root)
    assert proc.returncode == 1 and "no finished run of 'Count' with run key 'nope'" in \
        proc.stderr
    proc = sidecar("rerun", "Fail", *mode, cwd=root)
    assert (proc.returncode, proc.stderr) == (1, "sidecar: Fail has not run yet\n")


def test_a_running_run_cannot_be_rerun(root: Path) -> None:
    held = spawn("run", "Gate", "--json", cwd=root)
    out, err = Pipe(held.stdout), Pipe(held.stderr)
    wait_until([out, err], lambda: running(out) is not None)
    run = running(out)
    assert run is not None
    proc = sidecar("rerun", run["runId"], cwd=root)
    assert proc.returncode == 1
    assert proc.stderr == (f"sidecar: run {run['runId']} of 'Gate' is still running; only a "
                           "finished run can be rerun\n")
    release(root)
    assert finish([held], [out, err]) == [0]


# ------------------------------------------------------------------------------ clean
@pytest.mark.parametrize("mode", [[], ["--no-host"]], ids=["host", "no-host"])
def test_clean_deletes_the_runs_selected_and_their_output(root: Path, mode: list[str]) -> None:
    for key in ("c", "c", "other"):
        assert sidecar("run", "Count", "--key", key, *mode, cwd=root).returncode == 0
    assert sidecar("run", "Fail", *mode, cwd=root).returncode == 4
    keyed = history(root, "Count", "--key", "c", *mode)
    files = [Path(r["outputFile"]) for r in keyed]
    assert len(keyed) == 2 and all(f.is_file() for f in files)

    proc = sidecar("clean", "--all", "--key", "c", "--dry-run", *mode, cwd=root)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "would delete 2 runs (dry run)"
    assert lines[1].split() == ["RUN", "COMMAND", "KEY", "STATE", "ENDED"]
    assert {line.split()[0] for line in lines[2:]} == {r["runId"] for r in keyed}
    assert len(history(root, "Count", "--key", "c", *mode)) == 2
    assert all(f.is_file() for f in files)

    proc = sidecar("clean", "--key", "c", "--all", "--json", *mode, cwd=root)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert (result["deleted"], result["dryRun"], result["errors"]) == (2, False, [])
    assert {r["runId"] for r in result["runs"]} == {r["runId"] for r in keyed}
    assert {(r["command"], r["runKey"], r["state"]) for r in result["runs"]} == {
        ("Count", "c", "success")}
    assert not any(f.exists() for f in files)
    proc = sidecar("history", "Count", "--key", "c", *mode, cwd=root)
    assert (proc.stdout, proc.stderr) == ("", "sidecar: Count has no finished runs with key c\n")
    assert [r["runKey"] for r in history(root, "Count", *mode)] == ["other"]

    (failed,) = history(root, "Fail", *mode)
    proc = sidecar("clean", "--run", failed["runId"], *mode, cwd=root)
    assert proc.stdout.splitlines()[0] == "deleted 1 run"
    assert history(root, "Fail", *mode) == []
    proc = sidecar("clean", "--before", "2000-01-01", *mode, cwd=root)
    assert (proc.returncode, proc.stdout) == (0, "deleted 0 runs\n")
    proc = sidecar("clean", "--before", "yesterday", *mode, cwd=root)
    assert proc.returncode == 2
    assert "not an ISO 8601 time: 'yesterday'" in proc.stderr


def test_clean_and_unlock_without_a_host_say_so(root: Path) -> None:
    for args in (["clean", "--all"], ["unlock", "Count", "--key", "k"]):
        proc = sidecar(*args, cwd=root)
        assert proc.returncode == 1
        assert "no host is running for" in proc.stderr and "--no-host" in proc.stderr
    assert host_pid(Workspace(str(root)).lock_path) is None


# ------------------------------------------------------------------------------ cancel
def test_cancel_a_keys_run_with_a_reason(root: Path) -> None:
    held = spawn("run", "Gate", "--key", "x", "--json", cwd=root)
    out, err = Pipe(held.stdout), Pipe(held.stderr)
    wait_until([out, err], lambda: running(out) is not None)
    other = spawn("run", "Gate", "--key", "y", "--json", cwd=root)
    out2, err2 = Pipe(other.stdout), Pipe(other.stderr)
    wait_until([out2, err2], lambda: running(out2) is not None)
    proc = sidecar("cancel", "--command", "Gate", "--key", "x", "--reason",
                   "manual intervention", cwd=root)
    assert (proc.returncode, proc.stdout) == (0, "cancelled 1 run\n"), proc.stderr
    assert finish([held], [out, err]) == [1]
    (run,) = finals(out.text)
    assert (run["state"], run["comment"]) == ("cancelled", "manual intervention")
    assert other.poll() is None  # the other key's run goes on
    release(root)
    assert finish([other], [out2, err2]) == [0]
    (cancelled,) = history(root, "Gate", "--key", "x")
    assert (cancelled["state"], cancelled["comment"]) == ("cancelled", "manual intervention")


def test_cancel_with_a_reason_and_a_grace(root: Path) -> None:
    held = spawn("run", "Gate", "--json", cwd=root)
    out, err = Pipe(held.stdout), Pipe(held.stderr)
    try:
        wait_until([out, err], lambda: running(out) is not None)
        run = running(out)
        assert run is not None
        proc = sidecar("cancel", run["runId"], "--reason", "manual intervention", "--grace",
                       "0.5", cwd=root)
        assert (proc.returncode, proc.stdout) == (0, "cancelled 1 run\n"), proc.stderr
        assert finish([held], [out, err]) == [1]
        (cancelled,) = history(root, "Gate")
        assert (cancelled["state"], cancelled["comment"]) == ("cancelled", "manual intervention")
    finally:
        if held.poll() is None:
            release(root)
