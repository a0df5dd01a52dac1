"""Runs: the state machine, the result record and the handle callers hold.

A run's state changes only in :meth:`RunResult.transition`, which checks the move against
:data:`TRANSITIONS` and calls the owner's hook (the orchestrator's bookkeeping, which then
publishes the run's :class:`~sidecar.core.events.RunEvent`). :meth:`RunResult.snapshot` is the one
place a run becomes flat data (:class:`RunSnapshot`): events, ``to_dict`` and the stored metadata
derive from it.
The state strings (``pending``, ``running``, ``success``, ``failed``, ``cancelled``, ``lost``)
are the wire values too (protocol.md, the VS Code and Neovim clients). ``lost`` is only ever
read from the run records: a run whose owning process died before recording its end.

"""

from __future__ import annotations

import asyncio
import datetime as dt
import enum
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .durations import format_duration as format_duration

if TYPE_CHECKING:
    from .output import OutputCapture


class RunState(enum.Enum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
    CANCELLED = "cancelled"
    LOST = "lost"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATES


FINAL_STATES = frozenset({RunState.SUCCESS, RunState.FAILED, RunState.CANCELLED,
                          RunState.LOST})
TRANSITIONS: dict[RunState, frozenset[RunState]] = {
    RunState.PENDING: frozenset({RunState.RUNNING, RunState.FAILED, RunState.CANCELLED,
                                 RunState.LOST}),
    RunState.RUNNING: FINAL_STATES,
    RunState.SUCCESS: frozenset(),
    RunState.FAILED: frozenset(),
    RunState.CANCELLED: frozenset(),
    RunState.LOST: frozenset(),
}


class InvalidTransition(RuntimeError):
    pass


@dataclass
class ResolvedCommand:
    """What exactly runs: the command string after templates, cwd, env, timeout, variables.

    ``command`` shows runtime values quoted in place (for people). ``argv`` is the exec'd
    argument vector when that has no shell syntax; otherwise ``/bin/sh -c`` runs ``script``:
    the same command with each runtime value replaced by a quoted reference to an environment
    variable in ``env`` (see :mod:`.shellsafe`), or ``command`` itself when ``script`` is None.
    """

    command: str
    cwd: str | None
    env: dict[str, str]
    timeout_secs: int | None
    vars: dict[str, str]
    keep_history: int | None = None
    output_extension: str | None = None
    argv: list[str] | None = None
    script: str | None = None


@dataclass
class CommandStatus:
    """``state`` is ``never_run``, ``running`` or the last run's state value."""

    state: str
    active_count: int = 0
    last_run: RunResult | None = None


@dataclass(frozen=True, slots=True)
class RunSnapshot:
    """A run at one moment, as flat serializable data (built by :meth:`RunResult.snapshot`).

    ``duration_secs`` is None until the run is final. ``output_size`` is the number of output
    bytes so far. ``resolved_command`` and ``cwd`` come from the run's
    :class:`ResolvedCommand`. ``upstream_run_ids`` are the ids of
    :attr:`RunResult.upstream_run_ids`, oldest first.
    """

    run_id: str
    command: str
    state: str
    exit_code: int | None
    start_time: dt.datetime | None
    end_time: dt.datetime | None
    duration_secs: float | None
    trigger_event: str | None
    trigger_chain: tuple[str, ...]
    started_by: str | None
    upstream_run_ids: tuple[str, ...]
    comment: str
    error: str | None
    resolved_command: str | None
    cwd: str | None
    output_file: str | None
    output_size: int
    run_key: str | None = None
    attempt: int = 1
    rerun_of: str | None = None
    reason: str | None = None


def new_run_id() -> str:
    return str(uuid.uuid4())


class RunResult:
    """Everything known about one run. Created by the orchestrator; callers use RunHandle.

    ``started_by`` names who caused the run (inherited along a chain). ``upstream_run_ids``
    is the ``(event, run_id)`` of each run whose auto-event led to this one, oldest first (the
    newest 200 of a longer chain, as for ``trigger_chain``); empty for a run started by a
    caller or a lifecycle event.

    ``run_key`` is the idempotency key it was started with (per command), ``attempt`` its
    number among the runs of that key (1 for a run without one, unless a rerun), ``rerun_of``
    the run it repeats, ``reason`` why it was started again (a rerun's or an unlock's reason),
    ``runtime_vars`` the runtime variables it got (a rerun gets them again), ``pid`` its
    process (group leader) while known.
    """

    def __init__(
        self,
        command_name: str,
        run_id: str | None = None,
        trigger_event: str | None = None,
        trigger_chain: list[str] | None = None,
        upstream_run_ids: list[tuple[str, str]] | None = None,
        output: str = "",
        success: bool | None = None,
        error: str | Exception | None = None,
        state: RunState = RunState.PENDING,
        start_time: dt.datetime | None = None,
        end_time: dt.datetime | None = None,
        duration: dt.timedelta | None = None,
        resolved_command: ResolvedCommand | None = None,
        metadata_file: Path | None = None,
        output_file: Path | None = None,
        output_write_error: str | None = None,
        comment: str = "",
        exit_code: int | None = None,
        started_by: str | None = None,
    ) -> None:
        self.command_name = command_name
        self.run_id = run_id or new_run_id()
        self.trigger_event = trigger_event
        self.trigger_chain = list(trigger_chain or [])
        self.upstream_run_ids = list(upstream_run_ids or [])
        self.started_by = started_by
        self._output_text = output
        self.capture: OutputCapture | None = None
        self.success = success
        self.error = error
        self.state = state
        self.start_time = start_time
        self.end_time = end_time
        self._duration = duration
        self.resolved_command = resolved_command
        self.metadata_file = metadata_file
        self.output_file = output_file
        self.output_write_error = output_write_error
        self.comment = comment
        self.exit_code = exit_code
        self.run_key: str | None = None
        self.attempt = 1
        self.rerun_of: str | None = None
        self.reason: str | None = None
        self.runtime_vars: dict[str, str] = {}
        self.pid: int | None = None
        #: the output's size as recorded when the run ended (a run read from the records)
        self.recorded_size: int | None = None
        self._final_snapshot: RunSnapshot | None = None
        self.on_change: Callable[[RunResult, RunState], None] | None = None
        self._done: asyncio.Event | None = None

    def __repr__(self) -> str:
        return (f"RunResult(command_name={self.command_name!r}, run_id={self.run_id!r}, "
                f"state={self.state.value!r})")

    # -- the one place states change ---------------------------------------------------------
    def transition(self, new: RunState, *, comment: str | None = None,
                   error: str | Exception | None = None, exit_code: int | None = None) -> None:
        old = self.state
        if new not in TRANSITIONS[old]:
            raise InvalidTransition(f"{self.command_name} {self.run_id}: {old.value} -> {new.value}")
        now = dt.datetime.now()
        if comment is not None:
            self.comment = comment
        if error is not None:
            self.error = error
        if exit_code is not None:
            self.exit_code = exit_code
        self.state = new
        if new is RunState.RUNNING:
            self.start_time = now
        elif new.is_final:
            if self.start_time is None:
                self.start_time = now
            self.end_time = now
            self._duration = now - self.start_time
            self.success = new is RunState.SUCCESS
        if self.on_change is not None:
            self.on_change(self, old)
        if new.is_final and self._done is not None:
            self._done.set()

    # -- cmdorc's mark_* API -------------------------------------------------------------------
    # On a run an orchestrator owns, a final mark ends the run as if it had ended by itself
    # (slot freed, history, metadata, command_*:X auto-event) and stops its process.
    def mark_running(self, comment: str | None = None) -> None:
        self.transition(RunState.RUNNING, comment=comment)

    def mark_success(self, comment: str | None = None) -> None:
        self.transition(RunState.SUCCESS, comment=comment)

    def mark_failed(self, error: str | Exception, comment: str | None = None) -> None:
        self.transition(RunState.FAILED, error=error, comment=comment)

    def mark_cancelled(self, comment: str | None = None) -> None:
        self.transition(RunState.CANCELLED, comment=comment)

    # -- derived ---------------------------------------------------------------------------------
    @property
    def output(self) -> str:
        """The whole output (stdout and stderr interleaved), read back from disk if spilled."""
        if self.capture is not None:
            return self.capture.text()
        if not self._output_text and self.output_file is not None:
            try:
                return self.output_file.read_text(encoding="utf-8", errors="replace")
            except OSError:
                return ""
        return self._output_text

    @output.setter
    def output(self, value: str) -> None:
        self._output_text = value
        self.capture = None

    @property
    def is_finalized(self) -> bool:
        return self.state.is_final

    @property
    def duration(self) -> dt.timedelta | None:
        if self._duration is not None:
            return self._duration
        if self.start_time is not None and self.state is RunState.RUNNING:
            return dt.datetime.now() - self.start_time
        return None

    @duration.setter
    def duration(self, value: dt.timedelta | None) -> None:
        self._duration = value

    @property
    def duration_secs(self) -> float | None:
        d = self.duration
        return d.total_seconds() if d is not None else None

    @property
    def duration_str(self) -> str:
        secs = self.duration_secs
        return format_duration(secs) if secs is not None else "-"

    @property
    def time_ago_str(self) -> str:
        if self.end_time is None:
            return "-"
        return format_duration((dt.datetime.now() - self.end_time).total_seconds()) + " ago"

    def mirror(self, other: RunResult) -> None:
        """Take the recorded state of a run another process owns (``other``, read again from
        the run records): this copy only follows that run, its state machine is the
        owner's."""
        for name in ("state", "success", "error", "exit_code", "comment", "start_time",
                     "end_time", "_duration", "pid", "output_file", "recorded_size"):
            setattr(self, name, getattr(other, name))
        self._final_snapshot = None
        if self.is_finalized and self._done is not None:
            self._done.set()

    def done_event(self) -> asyncio.Event:
        if self._done is None:
            self._done = asyncio.Event()
            if self.is_finalized:
                self._done.set()
        return self._done

    @property
    def output_size(self) -> int:
        """Bytes of output so far: the live capture's size, else the output file's size (a run
        reloaded from history), else the in-memory output's."""
        if self.capture is not None:
            return self.capture.size
        if self.recorded_size is not None and self.is_finalized:
            return self.recorded_size
        if not self._output_text and self.output_file is not None:
            try:
                return self.output_file.stat().st_size
            except OSError:
                return 0
        return len(self._output_text.encode())

    def read_bytes(self, offset: int = 0, length: int | None = None) -> bytes:
        """Bytes ``[offset, offset+length)`` of the output, from the same source as
        :attr:`output_size`: the live capture, else the output file (only that range is read),
        else the in-memory output."""
        if self.capture is not None:
            return self.capture.read(offset, length)
        if not self._output_text and self.output_file is not None:
            try:
                with self.output_file.open("rb") as f:
                    f.seek(offset)
                    return f.read(-1 if length is None else length)
            except OSError:
                return b""
        data = self._output_text.encode()
        return data[offset:] if length is None else data[offset:offset + length]

    def snapshot(self) -> RunSnapshot:
        """The run now, as flat data: the one place a run is flattened (made once for a
        final run, which no longer changes)."""
        if self._final_snapshot is not None:
            return self._final_snapshot
        rc = self.resolved_command
        snap = RunSnapshot(
            run_id=self.run_id,
            command=self.command_name,
            state=self.state.value,
            exit_code=self.exit_code,
            start_time=self.start_time,
            end_time=self.end_time,
            duration_secs=self.duration_secs if self.is_finalized else None,
            trigger_event=self.trigger_event,
            trigger_chain=tuple(self.trigger_chain),
            started_by=self.started_by,
            upstream_run_ids=tuple(run_id for _, run_id in self.upstream_run_ids),
            comment=self.comment,
            error=str(self.error) if self.error is not None else None,
            resolved_command=rc.command if rc else None,
            cwd=rc.cwd if rc else None,
            output_file=str(self.output_file) if self.output_file else None,
            output_size=self.output_size,
            run_key=self.run_key,
            attempt=self.attempt,
            rerun_of=self.rerun_of,
            reason=self.reason,
        )
        if self.is_finalized and self.capture is None:
            self._final_snapshot = snap
        return snap

    def to_dict(self) -> dict[str, Any]:
        """cmdorc's dict of a run (from :meth:`snapshot`; ``duration_secs`` is also set while
        the run is running, as in cmdorc)."""
        s = self.snapshot()
        return {
            "command_name": s.command,
            "run_id": s.run_id,
            "state": s.state,
            "success": self.success,
            "exit_code": s.exit_code,
            "error": s.error,
            "comment": s.comment,
            "trigger_event": s.trigger_event,
            "trigger_chain": list(s.trigger_chain),
            "started_by": s.started_by,
            "start_time": s.start_time.isoformat() if s.start_time else None,
            "end_time": s.end_time.isoformat() if s.end_time else None,
            "duration_secs": self.duration_secs,
            "duration_str": self.duration_str,
            "resolved_command": s.resolved_command,
            "cwd": s.cwd,
            "output_file": s.output_file,
            "metadata_file": str(self.metadata_file) if self.metadata_file else None,
        }


class RunHandle:
    """The caller's view of a run: read-only properties and :meth:`wait`.

    ``existing`` is True when the start that gave this handle found the run already there
    (its run key's rules returned it) rather than starting it.
    """

    def __init__(self, result: RunResult, existing: bool = False,
                 strict_override_used: bool = False) -> None:
        self._result = result
        self.existing = existing
        #: a strict start consumed its key's unlock to start this run
        self.strict_override_used = strict_override_used

    def __repr__(self) -> str:
        return f"RunHandle({self._result!r})"

    async def wait(self, timeout: float | None = None) -> RunResult:
        """Wait for the run to finish; raises ``TimeoutError`` after ``timeout`` seconds."""
        if not self._result.is_finalized:
            await asyncio.wait_for(self._result.done_event().wait(), timeout)
        return self._result

    @property
    def result(self) -> RunResult:
        return self._result

    @property
    def command_name(self) -> str:
        return self._result.command_name

    @property
    def run_id(self) -> str:
        return self._result.run_id

    @property
    def state(self) -> RunState:
        return self._result.state

    @property
    def success(self) -> bool | None:
        return self._result.success

    @property
    def output(self) -> str:
        return self._result.output

    @property
    def error(self) -> str | Exception | None:
        return self._result.error

    @property
    def exit_code(self) -> int | None:
        return self._result.exit_code

    @property
    def comment(self) -> str:
        return self._result.comment

    @property
    def is_finalized(self) -> bool:
        return self._result.is_finalized

    @property
    def start_time(self) -> dt.datetime | None:
        return self._result.start_time

    @property
    def end_time(self) -> dt.datetime | None:
        return self._result.end_time

    @property
    def duration_str(self) -> str:
        return self._result.duration_str

    @property
    def time_ago_str(self) -> str:
        return self._result.time_ago_str

    @property
    def trigger_chain(self) -> list[str]:
        return list(self._result.trigger_chain)

    @property
    def started_by(self) -> str | None:
        return self._result.started_by

    @property
    def resolved_command(self) -> ResolvedCommand | None:
        return self._result.resolved_command

    @property
    def output_file(self) -> Path | None:
        return self._result.output_file

    @property
    def metadata_file(self) -> Path | None:
        return self._result.metadata_file

    @property
    def output_write_error(self) -> str | None:
        return self._result.output_write_error

    def cleanup(self) -> None:
        """Kept for cmdorc compatibility; handles hold no resources of their own."""


@dataclass(frozen=True)
class KeyClaim:
    """What a start with a run key got from the run records (:class:`~.ports.RunRecords`):
    ``run`` to start now, or with ``existing`` the run already there."""

    run: RunResult
    existing: bool
    strict_override_used: bool = False
    """A strict start consumed an unlock of the key."""


@dataclass
class TriggerResult:
    """What one ``trigger()`` did: runs it started, and commands it skipped with why
    (``debounce``, ``concurrency_limit``, ``variable_error``, ``error``)."""

    event: str
    started: list[RunHandle] = field(default_factory=list)
    skipped: list[tuple[str, str, str]] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
