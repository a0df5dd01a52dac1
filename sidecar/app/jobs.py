"""Ad-hoc jobs (``sidecar job``): orchesjob 1.1's operations on the durable run store.

A job is a command line given by the local user (never a command of a config, never reachable
by an agent or over the protocol), started at most once per *run key* by orchesjob's rules,
which :meth:`~sidecar.adapters.run_db.RunDB.claim` decides. Jobs live in a per-user store, not
a workspace's: ``$SIDECAR_HOME`` (else ``$XDG_DATA_HOME/cmdsidecar``, else
``~/.local/share/cmdsidecar``) holds ``jobs.db`` and ``logs/<job id>.stdout|.stderr``.

:class:`Jobs` has one method per operation (start, status, logs, abort, unlock, rerun, clean);
each returns the JSON object orchesjob prints, built by :func:`job_json` (the one mapping from a
recorded run to a job's JSON). Refusals raise :class:`JobError` subclasses carrying orchesjob's
exit codes.

Standard library only, no asyncio and nothing of :mod:`sidecar.core`: ``sidecar job start``
returns in tens of milliseconds.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from sidecar.adapters import job_process
from sidecar.adapters.run_db import (
    ACTIVE_STATES,
    BUSY_TIMEOUT_SECS,
    NotFound,
    RunDB,
    RunRow,
    WrongState,
    owner_of,
    owner_pid,
)

TYPE_CHECKING = False  # typing is not imported at run time: `sidecar job` starts fast
if TYPE_CHECKING:
    from typing import Any

JOB_COMMAND = "job"
"""The ``command`` of every job's record: run keys are one namespace, as in orchesjob."""
DEFAULT_START_TIMEOUT = 10.0
DEFAULT_GRACE = 5.0

#: orchesjob's statuses of the run states (``cancelled`` is ABORTED when it was an abort).
STATUSES = {"pending": "STARTING", "running": "RUNNING", "success": "SUCCEEDED",
            "failed": "FAILED", "lost": "LOST", "cancelled": "CANCELLED"}

EXIT_ERROR, EXIT_USAGE, EXIT_NOT_FOUND, EXIT_STATE, EXIT_LOCK = 1, 2, 3, 4, 5


class JobError(Exception):
    """A refused request: the message for stderr, and orchesjob's exit code."""

    code = EXIT_ERROR


class UsageError(JobError):
    code = EXIT_USAGE


class JobNotFound(JobError):
    code = EXIT_NOT_FOUND


class JobStateError(JobError):
    code = EXIT_STATE


class LockError(JobError):
    code = EXIT_LOCK


def home() -> Path:
    """The jobs' state directory."""
    explicit = os.environ.get("SIDECAR_HOME")
    if explicit:
        return Path(explicit)
    data = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local",
                                                             "share")
    return Path(data) / "cmdsidecar"


def lock_timeout() -> float:
    """How long to wait for the store's lock before exit 5: ``$SIDECAR_JOB_LOCK_TIMEOUT``
    seconds, else 10."""
    text = os.environ.get("SIDECAR_JOB_LOCK_TIMEOUT", "")
    try:
        return float(text) if text else BUSY_TIMEOUT_SECS
    except ValueError:
        raise UsageError(f"SIDECAR_JOB_LOCK_TIMEOUT must be seconds, got {text!r}") from None


# ------------------------------------------------------------------------------ JSON
def _when(name: str, t: float | None) -> dict[str, Any]:
    """``name`` as whole Unix seconds and ``name_iso`` in local time with its offset."""
    if t is None:
        return {name: None, f"{name}_iso": None}
    whole = int(t)
    return {name: whole, f"{name}_iso": datetime.fromtimestamp(whole).astimezone().isoformat()}


def status_of(row: RunRow) -> str:
    if row.state == "cancelled" and row.aborted_at is not None:
        return "ABORTED"
    return STATUSES.get(row.state, row.state.upper())


def job_json(row: RunRow) -> dict[str, Any]:
    """The job fields of orchesjob's JSON, in its order. A command that could not be launched
    has ``exit_code: -1`` here (its record keeps 127, as a command of a config does)."""
    worker = owner_pid(row.owner)
    exit_code = row.exit_code
    if row.state == "failed" and row.pid is None and exit_code == job_process.LAUNCH_FAILED:
        exit_code = -1
    times = [t for t in (row.created_at, row.start_time, row.end_time, row.aborted_at) if t]
    return {
        "job_id": row.run_id, "run_key": row.run_key, "command": row.argv or [],
        "pid": row.pid or worker, "pid_kind": "target" if row.pid else "worker",
        "worker_pid": worker, "target_pid": row.pid, "status": status_of(row),
        "exit_code": exit_code, "stdout_file": row.output_path,
        "stderr_file": row.stderr_path, "attempt_no": row.attempt, "strict": row.strict,
        "rerun_of_job_id": row.rerun_of, "rerun_reason": row.reason,
        "abort_reason": row.abort_reason,
        **_when("started_at", row.created_at), **_when("finished_at", row.end_time),
        **_when("updated_at", max(times) if times else None),
        **_when("aborted_at", row.aborted_at),
    }


def parse_time(text: str, option: str) -> float:
    """An ISO 8601 date or date-time as Unix seconds (local time without an offset)."""
    try:
        return datetime.fromisoformat(text.strip()).timestamp()
    except ValueError:
        raise UsageError(f"invalid {option}: {text!r}; use ISO 8601, e.g. 2026-01-01 or "
                         "2026-01-01T12:00:00+09:00") from None


def _new_id() -> str:
    """A random (version 4) UUID, without importing :mod:`uuid`."""
    b = bytearray(os.urandom(16))
    b[6] = (b[6] & 0x0F) | 0x40
    b[8] = (b[8] & 0x3F) | 0x80
    h = b.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


# ------------------------------------------------------------------------------ operations
class Jobs:
    """The jobs of one state directory (default :func:`home`)."""

    def __init__(self, state_dir: str | os.PathLike[str] | None = None) -> None:
        self.home = Path(state_dir) if state_dir is not None else home()
        self.logs = self.home / "logs"
        self.db_path = str(self.home / "jobs.db")
        try:
            self.home.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.logs.mkdir(mode=0o700, exist_ok=True)
            self.db = self._open()
        except sqlite3.Error as exc:
            raise db_error(exc) from None
        except OSError as exc:
            raise JobError(f"cannot use the state directory {self.home}: "
                           f"{exc.strerror or exc}") from None

    def _open(self) -> RunDB:
        return RunDB(self.db_path, kill_lost=True, timeout=lock_timeout())

    def close(self) -> None:
        self.db.close()

    # -------------------------------------------------------------------- finding
    def _find(self, run_key: str | None, job_id: str | None) -> RunRow:
        if job_id is not None:
            row = self.db.get(job_id)
            if row is None or row.command != JOB_COMMAND:
                raise JobNotFound(f"no job with id {job_id!r}")
            return row
        assert run_key is not None
        row = self.db.latest(JOB_COMMAND, run_key)
        if row is None:
            raise JobNotFound(f"no job with run key {run_key!r}")
        return row

    # -------------------------------------------------------------------- starting
    def start(self, argv: Sequence[str], run_key: str, *, strict: bool = False,
              sync: bool = False, start_timeout: float = DEFAULT_START_TIMEOUT) -> dict[str, Any]:
        """Start ``argv`` under ``run_key``, or return the job the key's rules return."""
        if not argv:
            raise UsageError("a command is required (give it after --)")
        row = self._new_row(list(argv), run_key, os.getcwd())
        claim = self.db.claim(row, strict=strict)
        job = claim.run if claim.existing else self._launch(row.run_id, sync, start_timeout)
        if claim.existing and sync:
            job = self._wait(job.run_id)
        out = _started(job, claim.existing, sync, claim.strict_override_used)
        out["strict"] = strict  # the call's strictness (orchesjob's start reports it so)
        return out

    def rerun(self, run_key: str | None, job_id: str | None, *, reason: str | None = None,
              sync: bool = False,
              start_timeout: float = DEFAULT_START_TIMEOUT) -> dict[str, Any]:
        """Start a finished job again (its command and directory), whatever its strictness."""
        source = self._find(run_key, job_id)
        if source.is_active:
            raise JobStateError(f"cannot rerun an active job ({source.run_id} is "
                                f"{status_of(source)})")
        assert source.run_key is not None
        row = self._new_row(source.argv or [], source.run_key, source.cwd)
        row.rerun_of, row.reason = source.run_id, reason
        try:
            self.db.claim(row, rerun=True)
        except WrongState as exc:
            raise JobStateError(str(exc)) from None
        return {**_started(self._launch(row.run_id, sync, start_timeout), False, sync, False),
                "rerun": True}

    def _new_row(self, argv: list[str], run_key: str, cwd: str | None) -> RunRow:
        job_id = _new_id()
        return RunRow(run_id=job_id, command=JOB_COMMAND, run_key=run_key, argv=argv, cwd=cwd,
                      output_path=str(self.logs / f"{job_id}.stdout"),
                      stderr_path=str(self.logs / f"{job_id}.stderr"),
                      started_by="sidecar job")

    def _launch(self, job_id: str, sync: bool, start_timeout: float) -> RunRow:
        """Fork the worker of the recorded ``pending`` job and wait for its target to run
        (``sync``: for the job to end); the job as recorded then."""
        self.db.close()  # no SQLite connection may cross a fork
        try:
            pid, pipe = job_process.spawn_worker(self.db_path, job_id)
        except OSError as exc:
            self.db = self._open()
            self.db.update_if(job_id, ACTIVE_STATES, state="failed", end_time=time.time(),
                              exit_code=job_process.LAUNCH_FAILED,
                              error=f"cannot start its worker: {exc.strerror or exc}")
            raise JobError(f"cannot start a worker process: {exc.strerror or exc}") from None
        # The worker records itself as the job's owner as its command starts (the job
        # outlives this command line); if we stop waiting before that, we do it for it.
        self.db = self._open()
        try:
            if sync:
                job_process.wait_done(pipe)
                os.waitpid(pid, 0)
            elif not job_process.wait_ready(pipe, start_timeout):
                self.db.update_if(job_id, ("pending",), owner=owner_of(pid))
        except BaseException:  # Ctrl-C
            self.db.update_if(job_id, ("pending",), owner=owner_of(pid))
            raise
        finally:
            os.close(pipe)
        job = self.db.get(job_id)
        assert job is not None
        return job

    def _wait(self, job_id: str) -> RunRow:
        """Wait for another process's job to end (polling its record)."""
        step = 0.02
        while True:
            job = self.db.get(job_id)
            if job is None:
                raise JobNotFound(f"job {job_id} was deleted while waited for")
            if not job.is_active:
                return job
            time.sleep(step)
            step = min(step * 1.5, 0.25)

    # -------------------------------------------------------------------- reading
    def status(self, run_key: str | None = None, job_id: str | None = None, *,
               running: bool = False, all: bool = False) -> Any:
        if running:
            return [self._with_override(r) for r in self.db.active()
                    if r.command == JOB_COMMAND]
        if all:
            if run_key is None:
                raise UsageError("status --all needs --run-key")
            rows = self.db.history(JOB_COMMAND, 0, run_key=run_key, active=True)
            if not rows:
                raise JobNotFound(f"no job with run key {run_key!r}")
            rows.sort(key=lambda r: r.attempt, reverse=True)
            return [self._with_override(r) for r in rows]
        return self._with_override(self._find(run_key, job_id))

    def _with_override(self, row: RunRow) -> dict[str, Any]:
        out = job_json(row)
        unlock = (self.db.pending_unlock(JOB_COMMAND, row.run_key)
                  if row.run_key is not None else None)
        out["strict_override"] = None if unlock is None else {
            **_when("allowed_at", unlock.allowed_at), **_when("used_at", None),
            "reason": unlock.reason, **_when("expires_at", unlock.expires_at)}
        return out

    def log_file(self, run_key: str | None, job_id: str | None, stream: str) -> str:
        """The path of the job's ``stream`` file (:class:`JobNotFound` if it is gone)."""
        row = self._find(run_key, job_id)
        path = row.stderr_path if stream == "stderr" else row.output_path
        if not path or not os.path.isfile(path):
            raise JobNotFound(f"the {stream} file of job {row.run_id} is missing: {path}")
        return path

    # -------------------------------------------------------------------- changing
    def abort(self, run_key: str | None, job_id: str | None, *, reason: str | None = None,
              grace: float = DEFAULT_GRACE) -> dict[str, Any]:
        """Mark the job ``ABORTED`` (first: a strict start sees the key consumed), then stop
        its processes (SIGTERM, ``grace`` seconds, SIGKILL)."""
        row = self._find(run_key, job_id)
        now = time.time()
        if not self.db.update_if(row.run_id, ACTIVE_STATES, state="cancelled", end_time=now,
                                 aborted_at=now, abort_reason=reason, comment="aborted"):
            row = self.db.get(row.run_id) or row
            raise JobStateError(f"job {row.run_id} is not running (it is {status_of(row)})")
        sent = job_process.stop(row.pid, row.pid_start, row.owner, grace)
        done = self.db.get(row.run_id)
        assert done is not None
        return {**job_json(done), "aborted": True, **sent}

    def unlock(self, run_key: str, *, reason: str | None = None,
               ttl: int | None = None) -> dict[str, Any]:
        try:
            u = self.db.unlock(JOB_COMMAND, run_key, reason, ttl)
        except NotFound:
            raise JobNotFound(f"no job with run key {run_key!r}") from None
        except WrongState:
            raise JobStateError(f"cannot unlock run key {run_key!r}: its job is still "
                                "active") from None
        return {"unlocked": True, "run_key": run_key, "reason": u.reason,
                **_when("allowed_at", u.allowed_at), **_when("expires_at", u.expires_at)}

    def clean(self, *, before: str | None = None, after: str | None = None, all: bool = False,
              job_id: str | None = None, run_key: str | None = None,
              dry_run: bool = False) -> dict[str, Any]:
        if job_id is not None and (before or after or all or run_key is not None):
            raise UsageError("--job-id cannot be combined with --before, --after, --all or "
                             "--run-key")
        if job_id is None and before is None and after is None and not all:
            raise UsageError("give one of --before, --after, --all or --job-id")
        cleaned = self.db.clean(
            before=parse_time(before, "--before") if before is not None else None,
            after=parse_time(after, "--after") if after is not None else None,
            all=all, run_id=job_id, command=JOB_COMMAND, run_key=run_key, dry_run=dry_run)
        if not cleaned.runs:
            return {"deleted": 0, "errors": 0}
        return {"deleted": len(cleaned.runs), "errors": len(cleaned.errors),
                "dry_run": dry_run,
                "items": [{"job_id": r.run_id, "run_key": r.run_key,
                           **_when("selected_at", r.end_time)} for r in cleaned.runs]}


def _started(job: RunRow, existing: bool, sync: bool, override_used: bool) -> dict[str, Any]:
    """What ``start`` and ``rerun`` print: the job, then how the call went."""
    return {**job_json(job), "accepted": not existing, "existing": existing,
            "mode": "sync" if sync else "async", "strict_override_used": override_used}


def db_error(exc: sqlite3.Error) -> JobError:
    if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
        return LockError(f"the job store is locked by another process: {exc}")
    return JobError(f"the job store cannot be used: {exc}")


__all__ = ["JOB_COMMAND", "JobError", "Jobs", "db_error", "home", "job_json", "status_of"]
