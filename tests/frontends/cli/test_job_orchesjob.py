"""Differential test of ``sidecar job`` against the real orchesjob 1.1: the same calls, in the
same order, to both tools, each with a fresh home of its own; every call's exit code and output
must be the same once the values that legitimately differ are normalised:

* job ids → ``J1``, ``J2``… in order of first appearance (per tool; a call's arguments may
  name them as ``{J1}``);
* pids (``pid``, ``worker_pid``, ``target_pid``) → ``"<pid>"`` when an integer;
* integer timestamps (``*_at``) → ``"<ts>"``, after checking that their ``*_iso`` twin parses
  with :func:`datetime.fromisoformat`, is the same instant and carries the local offset (the
  tools run with ``TZ=JST-9``); the ``*_iso`` strings keep their shape and offset, digits of
  the date and time → ``N`` (``NNNN-NN-NNTNN:NN:NN+09:00``);
* paths under the tool's home → ``$HOME/…``, and its working directory (one per tool, where
  the calls run) → ``$CWD``.

Nothing else is normalised: key order, statuses, booleans, attempt numbers, exit codes, reasons,
log contents and the JSON layout (``indent=2``, ASCII escapes or not) must match exactly. Error
messages go to stderr and are not compared (only that stdout is empty on both sides).

Jobs run asynchronously only as long targets (``sleep 30``) that the scenario aborts itself; the
tools' own ``--sync`` and ``abort`` are the only synchronisation (no sleeps). The two tools run
each call at the same time, in two threads.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

BIN = Path(sys.executable).parent
ORCHESJOB = BIN / "orchesjob"
_SIDECAR = BIN / "sidecar"
SIDECAR = [str(_SIDECAR)] if _SIDECAR.exists() else [sys.executable, "-m", "sidecar"]

CALL_TIMEOUT = 40.0
pytestmark = pytest.mark.timeout(150)

PID_KEYS = ("pid", "worker_pid", "target_pid")
ID_KEYS = ("job_id", "rerun_of_job_id")
ID_REF = re.compile(r"\{(J\d+)\}")
ISO_DIGITS = re.compile(r"\d")

# A target that ignores SIGTERM (the trap is inherited by sleep): abort has to SIGKILL it.
STUBBORN = ["sh", "-c", 'trap "" TERM; sleep 30']


@dataclass(frozen=True)
class Tool:
    name: str
    argv: tuple[str, ...]
    env_var: str
    db_name: str


TOOLS = (
    Tool("orchesjob", (str(ORCHESJOB),), "ORCHESJOB_HOME", "orchesjob.db"),
    Tool("sidecar", (*SIDECAR, "job"), "SIDECAR_HOME", "jobs.db"),
)


@dataclass
class Outcome:
    """One call to one tool: what it printed, raw and normalised."""

    args: list[str]
    code: int
    stdout: str
    stderr: str
    data: Any = None  # the parsed JSON, if stdout was JSON
    norm: Any = None  # the normalised JSON, or the text with ids and the home replaced
    layout: str = "text"  # how the JSON was written: "indent=2", "indent=2, utf-8" or "other"


class Session:
    """One tool with a home of its own; remembers the job ids it has printed."""

    def __init__(self, tool: Tool, root: Path) -> None:
        self.tool = tool
        self.home = root / "home"
        self.cwd = root / "work"
        self.cwd.mkdir(parents=True)
        runtime = root / "run"
        runtime.mkdir(mode=0o700)
        env = {k: v for k, v in os.environ.items()
               if k not in ("ORCHESJOB_HOME", "SIDECAR_HOME", "SIDECAR_STATE_DIR")}
        self.env = {**env, tool.env_var: str(self.home), "XDG_RUNTIME_DIR": str(runtime),
                    "NO_COLOR": "1"}
        self.ids: dict[str, str] = {}  # real id → label

    # ------------------------------------------------------------------ running

    def run(self, args: Sequence[str], timeout: float = CALL_TIMEOUT) -> Outcome:
        labels = {v: k for k, v in self.ids.items()}
        real = [ID_REF.sub(lambda m: labels.get(m.group(1), m.group(0)), a) for a in args]
        proc = subprocess.run([*self.tool.argv, *real], cwd=self.cwd, env=self.env,
                              stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
        stdout, stderr = (b.decode("utf-8", "surrogateescape") for b in (proc.stdout, proc.stderr))
        out = Outcome(list(args), proc.returncode, stdout, stderr)
        if args and args[0] != "logs" and stdout.strip():
            try:
                out.data = json.loads(stdout)
            except json.JSONDecodeError:
                pass
        if out.data is not None:
            self.learn_ids(out.data)
            check_timestamps(out.data, f"{self.tool.name} {' '.join(args)}")
            out.norm = self.normalise(out.data)
            if stdout == json.dumps(out.data, indent=2) + "\n":
                out.layout = "indent=2"
            elif stdout == json.dumps(out.data, indent=2, ensure_ascii=False) + "\n":
                out.layout = "indent=2, utf-8"
            else:
                out.layout = "other"
        else:
            out.norm = self.text(stdout)
        return out

    def files(self) -> dict[str, list[str]]:
        """The home's layout: the database (by the tool's own name) and the log files."""
        top = sorted(p.name for p in self.home.iterdir()) if self.home.is_dir() else []
        logs = self.home / "logs"
        names = sorted(p.name for p in logs.iterdir()) if logs.is_dir() else []
        return {"home": sorted("<db>" if n == self.tool.db_name else n for n in top
                               if n == self.tool.db_name or n == "logs"),
                "logs": sorted(self.text(n) for n in names)}

    def remove(self, relative: str) -> None:
        """Delete a file or directory of the home (``{J1}`` names a job) behind the tool's
        back."""
        labels = {v: k for k, v in self.ids.items()}
        path = self.home / ID_REF.sub(lambda m: labels[m.group(1)], relative)
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()

    def running(self) -> list[str]:
        out = self.run(["status", "--running"])
        if out.code != 0 or not isinstance(out.data, list):
            return []
        return [j["job_id"] for j in out.data if isinstance(j, dict) and "job_id" in j]

    # ------------------------------------------------------------------ normalising

    def learn_ids(self, data: Any) -> None:
        if isinstance(data, list):
            for item in data:
                self.learn_ids(item)
        elif isinstance(data, dict):
            for key, value in data.items():
                if key in ID_KEYS and isinstance(value, str) and value not in self.ids:
                    self.ids[value] = f"J{len(self.ids) + 1}"
                self.learn_ids(value)

    def text(self, s: str) -> str:
        home = str(self.home)
        if s == home or s.startswith(home + "/"):
            s = "$HOME" + s[len(home):]
        s = s.replace(str(self.cwd), "$CWD")
        for real, label in self.ids.items():
            s = s.replace(real, label)
        return s

    def normalise(self, data: Any, key: str = "") -> Any:
        if isinstance(data, list):
            return [self.normalise(x) for x in data]
        if isinstance(data, dict):
            return {k: self.normalise(v, k) for k, v in data.items()}
        if isinstance(data, bool) or data is None:
            return data
        if isinstance(data, int) and key in PID_KEYS:
            return "<pid>"
        if isinstance(data, int) and key.endswith("_at"):
            return "<ts>"
        if isinstance(data, str) and key.endswith("_at_iso"):
            return ISO_DIGITS.sub("N", data[:19]) + data[19:]  # its shape and offset
        if isinstance(data, str):
            return self.text(data)
        return data


def check_timestamps(data: Any, where: str) -> None:
    """Every integer ``X_at`` has an ``X_at_iso`` naming the same instant in the local offset
    (and a null one a null twin)."""
    if isinstance(data, list):
        for item in data:
            check_timestamps(item, where)
        return
    if not isinstance(data, dict):
        return
    for key, value in data.items():
        check_timestamps(value, where)
        if not key.endswith("_at") or isinstance(value, bool):
            continue
        iso = data.get(key + "_iso", "<missing>")
        if value is None:
            assert iso is None, f"{where}: {key} is null but {key}_iso is {iso!r}"
            continue
        assert isinstance(value, int), f"{where}: {key} = {value!r} is not an integer"
        assert isinstance(iso, str), f"{where}: {key}_iso = {iso!r}"
        parsed = datetime.fromisoformat(iso)
        assert parsed.tzinfo is not None, f"{where}: {key}_iso {iso!r} has no offset"
        assert parsed.timestamp() == value, f"{where}: {key}_iso {iso!r} is not {value}"
        local = datetime.fromtimestamp(value).astimezone().utcoffset()
        assert parsed.utcoffset() == local, f"{where}: {key}_iso {iso!r} is not local time"


def differences(a: Any, b: Any, path: str = "$") -> list[str]:
    """Where two normalised outputs differ: key lists (order too), then values."""
    if isinstance(a, dict) and isinstance(b, dict):
        if list(a) != list(b):
            only_a, only_b = [k for k in a if k not in b], [k for k in b if k not in a]
            if only_a or only_b:
                return [f"{path}: keys only in the first: {only_a}, only in the second: {only_b}"]
            return [f"{path}: keys in another order: {list(a)} != {list(b)}"]
        return [d for k in a for d in differences(a[k], b[k], f"{path}.{k}")]
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: {len(a)} items != {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True))
                for d in differences(x, y, f"{path}[{i}]")]
    if type(a) is not type(b) or a != b:
        return [f"{path}: {a!r} != {b!r}"]
    return []


@dataclass
class Diff:
    """Both tools side by side. ``call`` runs one call on both and asserts they agree."""

    sessions: tuple[Session, Session]
    pool: ThreadPoolExecutor
    log: list[str] = field(default_factory=list)

    def call(self, *args: str, code: int | None = None,
             meanwhile: Callable[[Session], None] | None = None) -> tuple[Outcome, Outcome]:
        """Run ``args`` on both tools; they must agree, and (if given) exit with ``code``.
        ``meanwhile`` is called with each session while the calls run."""
        futures = [self.pool.submit(s.run, args) for s in self.sessions]
        if meanwhile is not None:
            for s in self.sessions:
                meanwhile(s)
        a, b = (f.result() for f in futures)
        self.log.append(" ".join(args))
        problems = []
        if a.code != b.code:
            problems.append(f"exit code {a.code} != {b.code}")
        if (a.data is None) != (b.data is None):
            problems.append("JSON on one side only")
        if a.layout != b.layout:
            problems.append(f"JSON layout {a.layout} != {b.layout}")
        problems += differences(a.norm, b.norm)
        assert not problems, self.report(args, problems, a, b)
        if code is not None:
            assert a.code == code, self.report(args, [f"both exit {a.code}, not {code}"], a, b)
        return a, b

    def json(self, *args: str, code: int = 0) -> Any:
        """``call``, which must print JSON; the normalised output (the same on both sides)."""
        a, b = self.call(*args, code=code)
        assert a.data is not None, self.report(args, ["no JSON printed"], a, b)
        return a.norm

    def files(self) -> dict[str, list[str]]:
        a, b = (s.files() for s in self.sessions)
        names = [s.tool.name for s in self.sessions]
        assert a == b, (f"home layouts differ after {self.log[-3:]}:\n"
                        f"{names[0]}: {a}\n{names[1]}: {b}")
        return a

    def gate(self) -> None:
        """A FIFO ``gate`` in each tool's working directory: ``cat gate`` waits until
        :func:`open_gate`."""
        for s in self.sessions:
            os.mkfifo(s.cwd / "gate")

    def remove(self, relative: str) -> None:
        for s in self.sessions:
            s.remove(relative)
        self.log.append(f"(removed {relative})")

    def report(self, args: Sequence[str], problems: list[str], a: Outcome, b: Outcome) -> str:
        names = [s.tool.name for s in self.sessions]
        parts = [f"call: job {' '.join(args)}", *(f"  {p}" for p in problems)]
        for name, o in zip(names, (a, b), strict=True):
            shown = json.dumps(o.norm, indent=2, ensure_ascii=False) if o.data is not None \
                else repr(o.norm)
            parts.append(f"--- {name}: exit {o.code}, layout {o.layout}\n{shown}")
            if o.stderr.strip():
                parts.append(f"    stderr: {o.stderr.strip()[:300]}")
        parts.append(f"(earlier calls: {self.log[:-1][-6:]})")
        return "\n".join(parts)


@pytest.fixture
def local_tz() -> Iterator[str]:
    """A local time zone that is not UTC (a POSIX rule: no tz database needed), for the tools
    and for this process (the checks of ``*_iso`` and local dates)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TZ", "JST-9")
        time.tzset()
        yield "JST-9"
    time.tzset()


@pytest.fixture
def diff(tmp_path: Path, local_tz: str) -> Iterator[Diff]:
    if not ORCHESJOB.exists():
        msg = (f"orchesjob is not installed next to {sys.executable}; install it with "
               f"`{BIN / 'pip'} install --ignore-requires-python orchesjob==1.1.0`")
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    sessions = (Session(TOOLS[0], tmp_path / "orchesjob"),
                Session(TOOLS[1], tmp_path / "sidecar"))
    with ThreadPoolExecutor(2) as pool:
        d = Diff(sessions, pool)
        try:
            yield d
        finally:  # nothing a scenario started may outlive it, whatever it asserted
            for s in sessions:
                for job_id in s.running():
                    s.run(["abort", "--job-id", job_id, "--grace-seconds", "0"])


def open_gate(session: Session) -> None:
    """End the ``cat gate`` of ``session``'s job (opening a FIFO for writing waits for its
    reader)."""
    with open(session.cwd / "gate", "w"):
        pass


def attempts(jobs: list[dict[str, Any]]) -> list[int]:
    return [j["attempt_no"] for j in jobs]


# --------------------------------------------------------------------------- scenarios


def test_sync_jobs_their_logs_and_failures(diff: Diff) -> None:
    script = "printf 'out 1\\nout 2\\n'; printf 'err 1\\n' >&2; printf 'no newline'"
    j = diff.json("start", "--run-key", "ok", "--sync", "--", "sh", "-c", script)
    assert (j["status"], j["exit_code"], j["mode"], j["accepted"], j["existing"]) == \
        ("SUCCEEDED", 0, "sync", True, False)
    assert j["stdout_file"] == "$HOME/logs/J1.stdout", j
    assert j["stderr_file"] == "$HOME/logs/J1.stderr", j
    a, _ = diff.call("logs", "--run-key", "ok", code=0)
    assert a.stdout == "out 1\nout 2\nno newline"
    a, _ = diff.call("logs", "--run-key", "ok", "--stream", "stderr", code=0)
    assert a.stdout == "err 1\n"
    diff.call("logs", "--job-id", "{J1}", "--stream", "stdout", code=0)
    s = diff.json("status", "--run-key", "ok")
    assert (s["status"], s["strict_override"], s["pid_kind"]) == ("SUCCEEDED", None, "target")
    diff.json("status", "--job-id", "{J1}")
    diff.json("status", "--run-key", "ok", "--all")

    # A failure is still exit 0 for start --sync.
    j = diff.json("start", "--run-key", "fail", "--sync", "--", "sh", "-c", "echo failing; exit 3")
    assert (j["status"], j["exit_code"]) == ("FAILED", 3)
    diff.call("logs", "--run-key", "fail", code=0)
    diff.call("logs", "--run-key", "fail", "--stream", "stderr", code=0)

    # A command that cannot be launched: FAILED with -1, the worker is the only pid.
    j = diff.json("start", "--run-key", "nx", "--sync", "--", "/nonexistent/cmd", "arg")
    assert (j["status"], j["exit_code"], j["pid_kind"], j["target_pid"]) == \
        ("FAILED", -1, "worker", None)
    diff.call("logs", "--run-key", "nx", code=0)
    diff.call("logs", "--run-key", "nx", "--stream", "stderr", code=0)
    diff.json("status", "--run-key", "nx")

    # Death by a signal: minus the signal number.
    j = diff.json("start", "--run-key", "sig", "--sync", "--", "sh", "-c", "kill -9 $$")
    assert (j["status"], j["exit_code"]) == ("FAILED", -9)

    # Arguments reach the target as given (no shell), and --start-timeout is accepted.
    j = diff.json("start", "--run-key", "argv", "--sync", "--start-timeout", "5", "--",
                  "printf", "%s|", "a b", "", "--sync", "$HOME")
    assert j["command"] == ["printf", "%s|", "a b", "", "--sync", "$HOME"]
    a, _ = diff.call("logs", "--run-key", "argv", code=0)
    assert a.stdout == "a b||--sync|$HOME|"

    # More exits: 255, a file that is not executable, a big and a non-UTF-8 output, the
    # working directory (the caller's).
    j = diff.json("start", "--run-key", "e255", "--sync", "--", "sh", "-c", "exit 255")
    assert (j["status"], j["exit_code"]) == ("FAILED", 255)
    diff.json("start", "--run-key", "noexec", "--sync", "--", "/etc/passwd")
    diff.json("start", "--run-key", "big", "--sync", "--", "seq", "1", "50000")
    a, _ = diff.call("logs", "--run-key", "big", code=0)
    assert len(a.stdout.splitlines()) == 50000
    diff.json("start", "--run-key", "bytes", "--sync", "--", "printf", "\\377\\376x\\n")
    diff.call("logs", "--run-key", "bytes", code=0)
    diff.json("start", "--run-key", "cwd", "--sync", "--", "pwd")
    a, _ = diff.call("logs", "--run-key", "cwd", code=0)
    assert a.norm == "$CWD\n", a.norm
    # A finished job cannot be aborted.
    diff.call("abort", "--run-key", "ok", code=4)

    assert diff.json("status", "--running") == []
    assert diff.files()["home"] == ["<db>", "logs"]


def test_text_that_is_not_ascii(diff: Diff) -> None:
    """In the JSON, as orchesjob writes it (``json.dumps`` escapes or not); logs as written."""
    j = diff.json("start", "--run-key", "clé", "--sync", "--", "sh", "-c",
                  "printf 'sortie é\\n'; printf 'erreur ü\\n' >&2", "ñ")
    assert (j["run_key"], j["command"][-1], j["status"]) == ("clé", "ñ", "SUCCEEDED")
    a, _ = diff.call("logs", "--run-key", "clé", code=0)
    assert a.stdout == "sortie é\n"
    a, _ = diff.call("logs", "--run-key", "clé", "--stream", "stderr", code=0)
    assert a.stdout == "erreur ü\n"
    u = diff.json("unlock", "--run-key", "clé", "--reason", "données fix")
    assert u["reason"] == "données fix"
    diff.json("status", "--run-key", "clé")
    diff.json("start", "--run-key", "clé", "--strict", "--sync", "--", "true")
    diff.json("rerun", "--run-key", "clé", "--sync", "--reason", "encore à faire")
    diff.json("status", "--run-key", "clé", "--all")
    diff.json("clean", "--run-key", "clé", "--all", "--dry-run")


def test_plain_strict_unlock_and_rerun(diff: Diff) -> None:
    cmd = ["sh", "-c", "echo run"]
    j = diff.json("start", "--run-key", "k", "--sync", "--", *cmd)
    assert (j["attempt_no"], j["rerun_of_job_id"], j["strict"]) == (1, None, False)
    # A plain start of a finished key runs again.
    j = diff.json("start", "--run-key", "k", "--sync", "--", *cmd)
    assert (j["job_id"], j["attempt_no"], j["rerun_of_job_id"]) == ("J2", 2, "J1")
    # --strict on a finished key returns it.
    j = diff.json("start", "--run-key", "k", "--strict", "--sync", "--", *cmd)
    assert (j["job_id"], j["accepted"], j["existing"], j["strict"]) == ("J2", False, True, True)
    assert diff.json("status", "--run-key", "k")["strict_override"] is None

    # Unlock (a reason, a TTL), then the override is pending.
    outcomes = diff.call("unlock", "--run-key", "k", "--reason", "data fix", "--ttl", "30m",
                         code=0)
    u = outcomes[0].norm
    assert (u["unlocked"], u["run_key"], u["reason"]) == (True, "k", "data fix")
    for o in outcomes:
        assert o.data["expires_at"] - o.data["allowed_at"] == 1800, o.data
    s = diff.json("status", "--run-key", "k")
    assert s["strict_override"] is not None and s["strict_override"]["used_at"] is None, s
    diff.json("status", "--job-id", "{J2}")
    diff.json("status", "--job-id", "{J1}")
    diff.json("status", "--run-key", "k", "--all")
    j = diff.json("start", "--run-key", "k", "--strict", "--sync", "--", *cmd)
    assert (j["attempt_no"], j["accepted"], j["strict_override_used"], j["rerun_reason"]) == \
        (3, True, True, "data fix")
    assert diff.json("status", "--run-key", "k")["strict_override"] is None
    # The override was used up.
    j = diff.json("start", "--run-key", "k", "--strict", "--sync", "--", *cmd)
    assert (j["attempt_no"], j["accepted"], j["existing"]) == (3, False, True)

    # Whether a plain start uses a pending unlock.
    diff.json("unlock", "--run-key", "k", "--reason", "plain", "--ttl", "1h")
    diff.json("start", "--run-key", "k", "--sync", "--", *cmd)
    diff.json("status", "--run-key", "k")
    diff.json("start", "--run-key", "k", "--strict", "--sync", "--", *cmd)

    # TTL forms; no TTL; no reason.
    for ttl, seconds in (("90", 90), ("45s", 45), ("2h", 7200), ("1d", 86400)):
        for o in diff.call("unlock", "--run-key", "k", "--ttl", ttl, code=0):
            assert o.data["expires_at"] - o.data["allowed_at"] == seconds, (ttl, o.data)
    u = diff.json("unlock", "--run-key", "k")
    assert (u["reason"], u["expires_at"], u["expires_at_iso"]) == (None, None, None)
    diff.json("status", "--run-key", "k")
    for ttl in ("5x", "0", "-5", "m"):
        diff.call("unlock", "--run-key", "k", "--ttl", ttl, code=2)

    # rerun: always a new execution, by key or by job id, with or without a reason.
    j = diff.json("rerun", "--run-key", "k", "--sync", "--reason", "retry after disk error")
    assert (j["rerun_of_job_id"], j["rerun_reason"], j["status"]) == \
        ("J5", "retry after disk error", "SUCCEEDED")
    assert j.get("rerun") is True and j["mode"] == "sync", j
    j = diff.json("rerun", "--job-id", "{J1}", "--sync")
    assert (j["rerun_of_job_id"], j["rerun_reason"]) == ("J1", None)
    all_k = diff.json("status", "--run-key", "k", "--all")
    assert attempts(all_k) == list(range(len(all_k), 0, -1))
    # Whether a rerun used the pending unlock (the one without a TTL above).
    diff.json("status", "--run-key", "k")
    diff.json("start", "--run-key", "k", "--strict", "--sync", "--", *cmd)

    # A key first started --strict, then started plainly.
    diff.json("start", "--run-key", "s", "--strict", "--sync", "--", "true")
    diff.json("start", "--run-key", "s", "--sync", "--", "true")
    diff.json("start", "--run-key", "s", "--strict", "--sync", "--", "true")
    diff.json("rerun", "--run-key", "s", "--sync")
    diff.json("status", "--run-key", "s", "--all")


def test_async_job_idempotent_start_and_abort(diff: Diff) -> None:
    j = diff.json("start", "--run-key", "r", "--", *STUBBORN)
    assert (j["status"], j["mode"], j["pid_kind"], j["accepted"], j["existing"]) == \
        ("RUNNING", "async", "target", True, False)
    assert j["target_pid"] == "<pid>" and j["finished_at"] is None
    j = diff.json("start", "--run-key", "r", "--", *STUBBORN)
    assert (j["job_id"], j["accepted"], j["existing"], j["status"]) == \
        ("J1", False, True, "RUNNING")
    j = diff.json("start", "--run-key", "r", "--strict", "--", "true")
    assert (j["job_id"], j["accepted"], j["existing"]) == ("J1", False, True)
    running = diff.json("status", "--running")
    assert [x["job_id"] for x in running] == ["J1"]
    diff.json("status", "--running", "--all")
    diff.json("status", "--run-key", "r")
    diff.call("logs", "--run-key", "r", code=0)
    diff.call("unlock", "--run-key", "r", code=4)
    diff.call("rerun", "--run-key", "r", code=4)
    diff.call("rerun", "--job-id", "{J1}", "--sync", code=4)
    # Running jobs are never cleaned.
    diff.json("clean", "--job-id", "{J1}")
    diff.json("clean", "--all", "--dry-run")
    diff.json("clean", "--run-key", "r", "--all")
    assert diff.json("status", "--run-key", "r")["status"] == "RUNNING"

    a = diff.json("abort", "--run-key", "r", "--reason", "manual", "--grace-seconds", "1")
    assert (a["status"], a["abort_reason"], a["exit_code"], a["aborted"]) == \
        ("ABORTED", "manual", None, True)
    assert (a["sent_term_target"], a["sent_term_worker"], a["sent_kill_target"],
            a["sent_kill_worker"]) == (True, True, True, False)
    diff.call("abort", "--run-key", "r", code=4)
    diff.call("abort", "--job-id", "{J1}", "--grace-seconds", "0", code=4)
    assert diff.json("status", "--running") == []
    s = diff.json("status", "--run-key", "r")
    assert (s["status"], s["abort_reason"]) == ("ABORTED", "manual")
    # An aborted key is consumed for --strict; a plain start runs again.
    j = diff.json("start", "--run-key", "r", "--strict", "--sync", "--", "true")
    assert (j["job_id"], j["accepted"], j["status"]) == ("J1", False, "ABORTED")
    j = diff.json("start", "--run-key", "r", "--sync", "--", "true")
    assert (j["attempt_no"], j["rerun_of_job_id"], j["status"]) == (2, "J1", "SUCCEEDED")

    # A target that ends on SIGTERM, aborted by job id without a reason.
    j = diff.json("start", "--run-key", "t", "--start-timeout", "10", "--", "sleep", "30")
    assert j["status"] == "RUNNING"
    a = diff.json("abort", "--job-id", "{J3}", "--grace-seconds", "1")
    assert (a["status"], a["abort_reason"], a["sent_term_target"]) == ("ABORTED", None, True)
    # An async rerun of it, aborted in turn.
    j = diff.json("rerun", "--job-id", "{J3}", "--reason", "again")
    assert (j["status"], j["mode"], j["rerun_of_job_id"], j["attempt_no"]) == \
        ("RUNNING", "async", "J3", 2)
    diff.json("status", "--running")
    diff.json("abort", "--run-key", "t", "--reason", "again", "--grace-seconds", "1")
    # Several running jobs: status --running in the order they started.
    for key in ("m", "b", "t"):
        diff.json("start", "--run-key", key, "--", "sleep", "30")
    assert [j["run_key"] for j in diff.json("status", "--running")] == ["m", "b", "t"]
    for key in ("b", "m", "t"):
        diff.json("abort", "--run-key", key, "--grace-seconds", "1")

    j = diff.json("rerun", "--run-key", "r", "--sync", "--reason", "after abort")
    assert (j["attempt_no"], j["rerun_of_job_id"], j["command"]) == (3, "J2", ["true"])
    assert attempts(diff.json("status", "--run-key", "r", "--all")) == [3, 2, 1]


def test_async_jobs_that_end(diff: Diff) -> None:
    """Async jobs held by ``cat gate`` until the test opens it; ``start --strict --sync`` of
    the key then returns the job once it has ended, whether it was still running (it waits)
    or not (strict), so what follows does not depend on timing."""
    diff.gate()
    j = diff.json("start", "--run-key", "g", "--", "sh", "-c", "cat gate; echo done; exit 5")
    assert (j["status"], j["mode"], j["exit_code"]) == ("RUNNING", "async", None)
    a, _ = diff.call("start", "--run-key", "g", "--strict", "--sync", "--", "true", code=0,
                     meanwhile=open_gate)
    assert (a.norm["job_id"], a.norm["status"], a.norm["exit_code"], a.norm["existing"]) == \
        ("J1", "FAILED", 5, True)
    s = diff.json("status", "--run-key", "g")
    assert (s["status"], s["exit_code"], s["pid_kind"]) == ("FAILED", 5, "target")
    a, _ = diff.call("logs", "--run-key", "g", code=0)
    assert a.stdout == "done\n"
    # An async rerun of it, ended the same way.
    j = diff.json("rerun", "--run-key", "g", "--reason", "again")
    assert (j["status"], j["mode"], j["attempt_no"], j["rerun_of_job_id"]) == \
        ("RUNNING", "async", 2, "J1")
    assert j.get("rerun") is True
    a, _ = diff.call("start", "--run-key", "g", "--strict", "--sync", "--", "true", code=0,
                     meanwhile=open_gate)
    assert (a.norm["job_id"], a.norm["status"], a.norm["attempt_no"]) == ("J2", "FAILED", 2)
    diff.json("status", "--run-key", "g", "--all")
    assert diff.json("status", "--running") == []
    # One that succeeds, started --strict.
    j = diff.json("start", "--run-key", "h", "--strict", "--", "sh", "-c", "cat gate")
    assert (j["status"], j["strict"]) == ("RUNNING", True)
    a, _ = diff.call("start", "--run-key", "h", "--strict", "--sync", "--", "true", code=0,
                     meanwhile=open_gate)
    assert (a.norm["job_id"], a.norm["status"], a.norm["exit_code"]) == ("J3", "SUCCEEDED", 0)
    diff.json("status", "--job-id", "{J3}")
    c = diff.json("clean", "--all")
    assert c["deleted"] == 3


def test_not_found_and_usage_errors(diff: Diff) -> None:
    diff.json("start", "--run-key", "x", "--sync", "--", "true")
    for args in (["status", "--run-key", "nope"], ["status", "--job-id", "nope"],
                 ["logs", "--run-key", "nope"], ["logs", "--job-id", "nope"],
                 ["abort", "--run-key", "nope"], ["abort", "--job-id", "nope"],
                 ["unlock", "--run-key", "nope"], ["unlock", "--run-key", "nope", "--ttl", "1h"],
                 ["rerun", "--run-key", "nope"], ["rerun", "--job-id", "nope", "--sync"]):
        a, _ = diff.call(*args, code=3)
        assert a.stdout == "", a.stdout
    for args in ([], ["bogus"], ["status"], ["status", "--run-key", "x", "--job-id", "{J1}"],
                 ["status", "--job-id", "{J1}", "--all"], ["logs"],
                 ["logs", "--run-key", "x", "--stream", "bogus"],
                 ["clean"], ["clean", "--dry-run"], ["clean", "--run-key", "x"],
                 ["clean", "--job-id", "{J1}", "--all"],
                 ["clean", "--job-id", "{J1}", "--run-key", "x"],
                 ["clean", "--job-id", "{J1}", "--before", "2020-01-01"],
                 ["clean", "--before", "notadate"], ["clean", "--after", "2026-13-01"],
                 ["start", "--run-key", "k", "--"], ["start", "--run-key", "k"],
                 ["start", "--", "true"], ["start", "--run-key", "k", "--start-timeout", "x",
                                           "--", "true"],
                 ["unlock"], ["unlock", "--run-key", "x", "--ttl", "5x"],
                 ["unlock", "--run-key", "x", "--ttl", "0"],
                 ["abort"], ["abort", "--run-key", "x", "--grace-seconds", "soon"],
                 ["rerun"]):
        a, _ = diff.call(*args, code=2)
        assert a.stdout == "", a.stdout
    # Nothing above changed anything.
    assert attempts(diff.json("status", "--run-key", "x", "--all")) == [1]
    assert diff.json("clean", "--job-id", "nope") == {"deleted": 0, "errors": 0}


def test_unusual_arguments(diff: Diff) -> None:
    """Where argparse and orchesjob's own parsing decide: commands without ``--``, options
    after the command, repeated options, number and date forms."""
    diff.json("start", "--run-key", "a", "--sync", "true")
    j = diff.json("start", "--run-key", "b", "--sync", "--", "--sync")
    assert j["command"] == ["--sync"] and j["status"] == "FAILED"
    j = diff.json("start", "--run-key", "c", "--sync", "sh", "-c", "exit 7", "--strict")
    assert (j["command"][-1], j["strict"], j["exit_code"]) == ("--strict", False, 7)
    diff.json("start", "--run-key", "a", "--run-key", "d", "--sync", "--", "true")
    for timeout in ("0", "-1", "1.5", "1e0", " 1 ", "nan", "inf"):
        diff.json("rerun", "--run-key", "a", "--sync", "--start-timeout", timeout)
    for ttl in ("1.5h", "1w", "30ms", "0s", "-0", "0x10", "10.0", "1e3", ""):
        diff.call("unlock", "--run-key", "a", "--ttl", ttl, code=2)
    for ttl, seconds in (("30M", 1800), ("10D", 864000), ("00010", 10), (" 30m", 1800),
                         ("10m ", 600)):
        for o in diff.call("unlock", "--run-key", "a", "--ttl", ttl, code=0):
            assert o.data["expires_at"] - o.data["allowed_at"] == seconds, (ttl, o.data)
    diff.call("unlock", "--run-key", "a", "--reason", "")
    diff.json("status", "--run-key", "a")
    for grace in ("-1", "0.5", "soon"):
        diff.call("abort", "--run-key", "a", "--grace-seconds", grace)
    for when in ("2026-11-23 10:00", "2026-11-23T10:00Z", "20261123", "2100-01-01T00:00:00.5+00:00",
                 "2100-01-01T00:00:00+09:00", ""):
        diff.call("clean", "--before", when, "--dry-run")
    diff.call("clean", "--after", "2000-01-01", "--run-key", "nope")
    diff.call("clean", "--all", "--run-key", "nope", "--dry-run")
    assert attempts(diff.json("status", "--run-key", "a", "--all"))[0] == 8


def test_ttl_in_any_form_int_reads(diff: Diff) -> None:
    """orchesjob reads a TTL's number as Python's ``int`` does: a sign, underscores, other
    scripts' digits, spaces before the suffix."""
    diff.json("start", "--run-key", "a", "--sync", "--", "true")
    for ttl, seconds in (("+10", 10), ("1_0", 10), ("١٠", 10), ("10 m", 600), ("1_0m", 600),
                         ("٣m", 180)):
        for o in diff.call("unlock", "--run-key", "a", "--ttl", ttl, code=0):
            assert o.data is not None, (ttl, o.stderr)
            assert o.data["expires_at"] - o.data["allowed_at"] == seconds, (ttl, o.data)


def test_empty_selectors(diff: Diff) -> None:
    """An empty ``--run-key`` or ``--job-id`` counts as not given (except for start)."""
    diff.json("start", "--run-key", "", "--sync", "--", "true")
    diff.json("start", "--run-key", "a", "--sync", "--", "true")
    for args in (["status", "--run-key", ""], ["status", "--job-id", ""],
                 ["logs", "--run-key", ""], ["logs", "--job-id", ""],
                 ["abort", "--run-key", ""], ["abort", "--job-id", ""],
                 ["unlock", "--run-key", ""], ["clean", "--job-id", "", "--dry-run"],
                 ["clean", "--run-key", "", "--all", "--dry-run"],
                 ["rerun", "--job-id", "", "--sync"], ["rerun", "--run-key", "", "--sync"]):
        diff.call(*args)
    diff.json("status", "--run-key", "a", "--all")


def test_a_fresh_home(diff: Diff) -> None:
    """Calls that only read, on a home that does not exist yet; what each leaves there."""
    assert diff.json("status", "--running") == []
    diff.call("status", "--run-key", "a", code=3)
    diff.call("logs", "--job-id", "x", code=3)
    diff.json("clean", "--all", "--dry-run")
    diff.json("clean", "--all")
    diff.files()
    diff.json("start", "--run-key", "a", "--sync", "--", "true")
    assert diff.files() == {"home": ["<db>", "logs"], "logs": ["J1.stderr", "J1.stdout"]}


def test_log_files_removed_behind_its_back(diff: Diff) -> None:
    diff.json("start", "--run-key", "a", "--sync", "--", "echo", "a")
    diff.json("start", "--run-key", "b", "--sync", "--", "echo", "b")
    diff.remove("logs/{J1}.stdout")
    diff.remove("logs/{J1}.stderr")
    a, _ = diff.call("logs", "--run-key", "a")
    assert a.stdout == ""
    diff.call("logs", "--run-key", "a", "--stream", "stderr")
    diff.json("status", "--run-key", "a")
    c = diff.json("clean", "--run-key", "a", "--all")
    assert (c["deleted"], c["errors"]) == (1, 0)
    diff.remove("logs")
    diff.call("logs", "--job-id", "{J2}")
    j = diff.json("start", "--run-key", "c", "--sync", "--", "echo", "c")
    assert j["status"] == "SUCCEEDED"
    diff.call("logs", "--run-key", "c", code=0)
    diff.json("clean", "--all")
    assert diff.files() == {"home": ["<db>", "logs"], "logs": []}


def test_clean(diff: Diff) -> None:
    for key in ("a", "a", "b"):
        diff.json("start", "--run-key", key, "--sync", "--", "sh", "-c", "echo hi; echo ho >&2")
    diff.json("start", "--run-key", "f", "--sync", "--", "false")
    diff.json("start", "--run-key", "ab", "--", *STUBBORN)  # J5, aborted below
    diff.json("abort", "--run-key", "ab", "--grace-seconds", "1")
    diff.json("start", "--run-key", "live", "--", "sleep", "30")  # J6, running throughout
    before = diff.files()
    assert len(before["logs"]) == 12, before

    dry = diff.json("clean", "--run-key", "a", "--all", "--dry-run")
    assert (dry["deleted"], dry["errors"], dry["dry_run"]) == (2, 0, True)
    assert [(i["job_id"], i["run_key"]) for i in dry["items"]] == [("J1", "a"), ("J2", "a")]
    assert list(dry["items"][0]) == ["job_id", "run_key", "selected_at", "selected_at_iso"]
    # selected_at is the job's finished_at.
    for o, s in zip(diff.call("clean", "--run-key", "a", "--all", "--dry-run"),
                    diff.sessions, strict=True):
        finished = [j["finished_at"] for j in s.run(["status", "--run-key", "a", "--all"]).data]
        assert [i["selected_at"] for i in o.data["items"]] == finished[::-1], o.data
    assert diff.files() == before
    assert diff.json("clean", "--before", "2020-01-01") == {"deleted": 0, "errors": 0}
    diff.json("clean", "--before", "2020-01-01", "--dry-run")
    diff.json("clean", "--before", "2100-01-01T00:00:00+00:00", "--dry-run")
    diff.json("clean", "--after", "2100-01-01", "--before", "2000-01-01")
    diff.json("clean", "--run-key", "b", "--before", "2100-01-01", "--dry-run")
    # Times without an offset are local (JST, UTC+9): an hour from now in local time is after
    # the jobs, in UTC's wall-clock time it is eight hours before them.
    local = (datetime.now() + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S")
    utc = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S")
    assert diff.json("clean", "--before", local, "--dry-run")["deleted"] == 5
    assert diff.json("clean", "--before", utc, "--dry-run") == {"deleted": 0, "errors": 0}
    assert diff.json("clean", "--after", utc, "--dry-run")["deleted"] == 5
    assert diff.json("clean", "--before", utc + "+00:00", "--dry-run")["deleted"] == 5
    assert diff.files() == before

    one = diff.json("clean", "--job-id", "{J2}")
    assert (one["deleted"], one["dry_run"], [i["job_id"] for i in one["items"]]) == \
        (1, False, ["J2"])
    assert "J2.stdout" not in diff.files()["logs"]
    diff.call("status", "--job-id", "{J2}", code=3)
    diff.call("logs", "--job-id", "{J2}", code=3)
    assert attempts(diff.json("status", "--run-key", "a", "--all")) == [1]
    diff.json("clean", "--job-id", "{J2}")

    yesterday = (date.today() - timedelta(days=1)).isoformat()
    gone = diff.json("clean", "--after", yesterday)
    assert sorted(i["job_id"] for i in gone["items"]) == ["J1", "J3", "J4", "J5"], gone
    assert diff.files()["logs"] == ["J6.stderr", "J6.stdout"]
    for key in ("a", "b", "f", "ab"):
        diff.call("status", "--run-key", key, code=3)
    assert [j["job_id"] for j in diff.json("status", "--running")] == ["J6"]
    diff.json("abort", "--run-key", "live", "--grace-seconds", "1")
    diff.json("clean", "--all")
    assert diff.files() == {"home": ["<db>", "logs"], "logs": []}
    # A key that was cleaned starts afresh.
    j = diff.json("start", "--run-key", "a", "--sync", "--", "true")
    assert (j["attempt_no"], j["rerun_of_job_id"]) == (1, None)

