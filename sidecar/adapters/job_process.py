"""The processes of an ad-hoc job (``sidecar job``): the detached worker, and stopping them.

A job runs as two processes, as orchesjob's do: a **worker**, forked from the command line
that starts the job and detached from it (a session of its own, stdio on ``/dev/null``), and
the **target**, the job's command, which the worker starts in a session (process group) of its
own with stdout and stderr in two files. The worker records the job in the store
(:mod:`.run_db`): ``running`` with the target's pid once it runs, then how it ended. The
command line waits on a pipe the worker holds: one byte once the target runs (or could not be
launched), end of file once the worker is done; no polling.

Unlike orchesjob's, the target does not outlive its worker: it is started with
``PR_SET_PDEATHSIG`` (SIGKILL when the worker dies), and what is left of its group is killed
when the job is found ``lost`` (:class:`~.run_db.RunDB` with ``kill_lost``).

Standard library only, no asyncio: this runs in a command line that must start fast.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import time
from types import FrameType

from .run_db import (
    ACTIVE_STATES,
    RunDB,
    current_owner,
    group_alive,
    kill_group,
    owner_alive,
    owner_pid,
    start_ticks,
)

TYPE_CHECKING = False  # typing is not imported at run time: `sidecar job` starts fast
if TYPE_CHECKING:
    from typing import Any

LAUNCH_FAILED = 127
"""The exit code recorded for a command that could not be launched (a shell's "not found")."""
READY = b"R"
"""What the worker writes on its pipe once the target runs (or has failed to launch)."""


# ------------------------------------------------------------------------------ the worker
def spawn_worker(db_path: str, job_id: str) -> tuple[int, int]:
    """Fork the worker of the job ``job_id`` (recorded as ``pending`` in ``db_path``; no
    connection to the database may be open in this process). Returns the worker's pid and the
    read end of its pipe (see :func:`wait_ready`, :func:`wait_done`)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the worker: never returns
        code = 1
        try:
            os.close(read_end)
            code = _work(db_path, job_id, write_end)
        except BaseException as exc:  # its stderr is /dev/null: the record says why
            with contextlib.suppress(Exception):
                RunDB(db_path).update_if(job_id, ACTIVE_STATES, state="failed",
                                         end_time=time.time(), owner=current_owner(),
                                         error=f"the job's worker failed: {exc!r}")
        finally:
            os._exit(code)
    os.close(write_end)
    return pid, read_end


def wait_ready(fd: int, timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for the worker's word that the target runs (or could not
    be launched, or the worker ended)."""
    ready, _, _ = select.select([fd], [], [], max(timeout, 0.0))
    return bool(ready) and os.read(fd, 1) in (READY, b"")


def wait_done(fd: int) -> None:
    """Wait until the worker has recorded how the job ended and exited."""
    while os.read(fd, 64):
        pass


class _Stop:
    """The worker's signal handlers: SIGTERM and SIGINT are passed to the target's group and
    make the job ``cancelled``; SIGHUP is ignored (a Python handler, not ``SIG_IGN``, so the
    target does not inherit it)."""

    def __init__(self) -> None:
        self.requested = False
        self.target: tuple[int, str | None] | None = None
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        signal.signal(signal.SIGHUP, lambda *_: None)

    def _stop(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True
        if self.target is not None:
            kill_group(*self.target, sig=signal.SIGTERM)

    def started(self, pid: int, ticks: str | None) -> None:
        self.target = (pid, ticks)
        if self.requested:
            kill_group(pid, ticks, sig=signal.SIGTERM)


def _work(db_path: str, job_id: str, ready: int) -> int:
    os.setsid()
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)
    stop = _Stop()
    db = RunDB(db_path)
    row = db.get(job_id)
    if row is None or row.state != "pending" or not row.argv:
        return 1
    me = current_owner()
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
    out = os.open(row.output_path or os.devnull, flags, 0o644)
    err = os.open(row.stderr_path or os.devnull, flags, 0o644)
    try:
        pid = _launch(row.argv, row.cwd, out, err)
    except OSError as exc:
        db.update_if(job_id, ACTIVE_STATES, state="failed", exit_code=LAUNCH_FAILED,
                     error=f"cannot launch {row.argv[0]!r}: {exc.strerror or exc}",
                     end_time=time.time(), owner=me)
        os.write(ready, READY)
        return 0
    finally:
        os.close(out)
        os.close(err)
    ticks = start_ticks(pid)
    stop.started(pid, ticks)
    if not db.update_if(job_id, ("pending",), state="running", pid=pid, pid_start=ticks,
                        start_time=time.time(), owner=me):
        kill_group(pid, ticks)  # aborted (or found lost) while it started
        os.waitpid(pid, 0)
        return 0
    os.write(ready, READY)
    code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    state = "success" if code == 0 else "cancelled" if stop.requested else "failed"
    db.update_if(job_id, ACTIVE_STATES, state=state, exit_code=code, end_time=time.time(),
                 comment="stopped: its worker was signalled" if state == "cancelled" else "")
    return 0


def _launch(argv: list[str], cwd: str | None, out: int, err: int) -> int:
    """Start the target: a session (process group) of its own, stdout and stderr to ``out``
    and ``err``, stdin ``/dev/null``, SIGKILLed when the worker dies (Linux's
    ``PR_SET_PDEATHSIG``). Raises OSError when it cannot be launched (no such program, a
    missing directory), as :mod:`subprocess` does, without importing it."""
    prctl = _prctl()
    worker = os.getpid()
    errors_r, errors_w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:  # the target, until exec
        try:
            os.close(errors_r)
            os.setsid()
            if prctl is not None:
                prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
            if os.getppid() != worker:  # the worker died before that
                os._exit(LAUNCH_FAILED)
            os.dup2(out, 1)
            os.dup2(err, 2)
            if cwd:
                os.chdir(cwd)
            os.execvp(argv[0], argv)
        except OSError as exc:
            os.write(errors_w, str(exc.errno or 0).encode())
        finally:
            os._exit(LAUNCH_FAILED)
    os.close(errors_w)
    with os.fdopen(errors_r, "rb") as errors:
        failed = errors.read()  # empty once exec has closed the pipe
    if failed:
        os.waitpid(pid, 0)
        errno = int(failed)
        raise OSError(errno, os.strerror(errno))
    return pid


def _prctl() -> Any:
    """libc's ``prctl``, or None where there is none (not Linux)."""
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl
    except (ImportError, OSError, AttributeError):
        return None


# ------------------------------------------------------------------------------ stopping
def stop(pid: int | None, pid_start: str | None, owner: str | None,
         grace: float) -> dict[str, bool]:
    """Stop a job's processes as ``sidecar job abort`` does: SIGTERM to the target's group and
    to the worker, up to ``grace`` seconds for them to end, then SIGKILL to what is left.
    Returns which signals were sent (orchesjob's ``sent_*`` fields)."""
    worker = owner_pid(owner) if owner_alive(owner) else None
    sent = {"sent_term_target": bool(pid) and kill_group(pid or 0, pid_start, signal.SIGTERM),
            "sent_term_worker": worker is not None and _signal(worker, signal.SIGTERM),
            "sent_kill_target": False, "sent_kill_worker": False}

    def target_gone() -> bool:
        return not pid or not group_alive(pid)

    def worker_gone() -> bool:
        return worker is None or not owner_alive(owner)

    _wait_until(lambda: target_gone() and worker_gone(), max(grace, 0.0))
    if not target_gone():
        sent["sent_kill_target"] = kill_group(pid or 0, pid_start, signal.SIGKILL)
    # The worker ends once its target has: give it that moment before killing it.
    if not _wait_until(worker_gone, 1.0) and worker is not None:
        sent["sent_kill_worker"] = _signal(worker, signal.SIGKILL)
    return sent


def _signal(pid: int, sig: signal.Signals) -> bool:
    try:
        os.kill(pid, sig)
    except OSError:
        return False
    return True


def _wait_until(done: Any, timeout: float) -> bool:
    """Poll ``done()`` (every 5 ms, then less often) for up to ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    step = 0.005
    while not done():
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        time.sleep(min(step, left))
        step = min(step * 2, 0.05)
    return True


__all__ = ["LAUNCH_FAILED", "spawn_worker", "stop", "wait_done", "wait_ready"]
