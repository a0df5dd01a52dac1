"""The SQLite :class:`~sidecar.core.ports.RunRecords`: the core's runs in :mod:`.run_db`.

:class:`SQLiteRecords` maps the core's :class:`~sidecar.core.runs.RunResult` to a
:class:`~.run_db.RunRow` and back; the rules themselves (run keys, lost runs, retention) are
:mod:`.run_db`'s. With a path the records are durable: ``runs.db`` (WAL) in the workspace's
state directory and each run's output in ``output/<run id>.log`` beside it, written as it
arrives (so a run whose host dies keeps what it printed). Without one they live in memory,
for this process only.

A store that cannot be opened or written (read-only directory, full disk) never stops a run:
the problem is logged once, kept in :attr:`SQLiteRecords.problem`, and the records go on in
memory for the rest of the process's life.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import sqlite3
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from sidecar.core.errors import RunStateError
from sidecar.core.runs import KeyClaim, ResolvedCommand, RunResult, RunState

from .run_db import RunDB, RunRow, WrongState, current_owner

logger = logging.getLogger("sidecar.store")
DB_NAME = "runs.db"
FLUSH_AFTER = 0.01
CACHED = 1024
OUTPUT_DIR = "output"

_T = TypeVar("_T")


def _ts(t: dt.datetime | None) -> float | None:
    return t.timestamp() if t is not None else None


def _dt(t: float | None) -> dt.datetime | None:
    return dt.datetime.fromtimestamp(t) if t is not None else None


def to_row(result: RunResult) -> RunRow:
    """The record of a run as it is now."""
    rc = result.resolved_command
    return RunRow(
        run_id=result.run_id, command=result.command_name, state=result.state.value,
        run_key=result.run_key, attempt=result.attempt, exit_code=result.exit_code,
        error=str(result.error) if result.error is not None else None,
        comment=result.comment, reason=result.reason, rerun_of=result.rerun_of,
        trigger_event=result.trigger_event, trigger_chain=list(result.trigger_chain),
        upstream_run_ids=[list(pair) for pair in result.upstream_run_ids],
        started_by=result.started_by,
        resolved_command=rc.command if rc else None, cwd=rc.cwd if rc else None,
        vars=dict(rc.vars) if rc else {}, runtime_vars=dict(result.runtime_vars),
        start_time=_ts(result.start_time), end_time=_ts(result.end_time),
        owner=None if result.is_finalized else current_owner(), pid=result.pid,
        output_path=str(result.output_file) if result.output_file else None,
        output_size=_final_size(result),
    )


def _final_size(result: RunResult) -> int:
    """The size of a final run's output as its file holds it (0 before): the bytes a reader
    of the record can read."""
    if not result.is_finalized:
        return 0
    if result.output_write_error and result.output_file is not None:
        try:  # the disk refused part of it
            return result.output_file.stat().st_size
        except OSError:
            return 0
    return result.output_size


def from_row(row: RunRow) -> RunResult:
    """A run read back from its record (no process, no live output)."""
    rc = None
    if row.resolved_command is not None:
        rc = ResolvedCommand(command=row.resolved_command, cwd=row.cwd, env={},
                             timeout_secs=None, vars=dict(row.vars))
    start, end = _dt(row.start_time), _dt(row.end_time)
    state = RunState(row.state)
    result = RunResult(
        command_name=row.command, run_id=row.run_id, trigger_event=row.trigger_event,
        trigger_chain=list(row.trigger_chain),
        upstream_run_ids=[(str(p[0]), str(p[1])) for p in row.upstream_run_ids],
        success=(state is RunState.SUCCESS) if state.is_final else None,
        error=row.error, state=state, start_time=start, end_time=end,
        duration=(end - start) if start and end else None, resolved_command=rc,
        output_file=Path(row.output_path) if row.output_path else None,
        comment=row.comment, exit_code=row.exit_code, started_by=row.started_by)
    result.run_key, result.attempt = row.run_key, row.attempt
    result.rerun_of, result.reason = row.rerun_of, row.reason
    result.runtime_vars, result.pid = dict(row.runtime_vars), row.pid
    if state.is_final:
        result.recorded_size = row.output_size
    return result


class SQLiteRecords:
    """:class:`~sidecar.core.ports.RunRecords` in a :class:`~.run_db.RunDB`: ``state_dir``
    for durable records (created if needed), None for this process's only."""

    def __init__(self, state_dir: str | Path | None = None) -> None:
        self.state_dir = Path(state_dir) if state_dir is not None else None
        self._problem: str | None = None
        self._closed = False
        self._ended: dict[str, int] = {}  # runs ended per command since its last prune
        self._cache: OrderedDict[str, RunResult] = OrderedDict()
        self._recorded: set[str] = set()  # active runs whose record this process wrote
        self._pending: dict[str, RunResult] = {}  # runs to record at the next flush
        self._flush_timer: asyncio.TimerHandle | None = None
        self.output_dir: Path | None = None
        #: runs marked lost when the records were opened (their owners had died)
        self.recovered: list[RunRow] = []
        self.db = RunDB(None)
        if self.state_dir is not None:
            try:
                self.db = RunDB(self.state_dir / DB_NAME)
                self.output_dir = self.state_dir / OUTPUT_DIR
                self.recovered = self.db.recover()
            except (sqlite3.Error, OSError) as exc:
                self._fail(exc, "open")
            if self.recovered:
                logger.warning("%d run(s) marked lost: their process died before they ended",
                               len(self.recovered))

    # -------------------------------------------------------------------- failures
    @property
    def durable(self) -> bool:
        return self.db.path is not None

    @property
    def problem(self) -> str | None:
        return self._problem

    def _fail(self, exc: BaseException, doing: str) -> None:
        """The durable store failed: say so once, go on in memory."""
        where = self.state_dir / DB_NAME if self.state_dir is not None else "memory"
        self._problem = (f"run history is not being saved ({doing} {where}: {exc}); runs "
                         "go on and are kept in memory until the host stops")
        logger.warning("%s", self._problem)
        if self.db.path is not None:
            try:
                self.db.close()
            except sqlite3.Error:
                pass
            self.db = RunDB(None)
        self.output_dir = None

    def _guard(self, doing: str, fn: Callable[[], _T], default: _T) -> _T:
        if self._closed:
            return default
        try:
            return fn()
        except WrongState as exc:
            raise RunStateError(str(exc)) from None
        except (sqlite3.Error, OSError) as exc:
            if self.db.path is None:
                logger.exception("in-memory run records failed")
                return default
            self._fail(exc, doing)
            return fn()

    # -------------------------------------------------------------------- RunRecords
    def output_path(self, command: str, run_id: str) -> Path | None:
        return self.output_dir / f"{run_id}.log" if self.output_dir is not None else None

    def record(self, result: RunResult) -> None:
        """Record the run as it is now. Within an event loop the write waits up to
        :data:`FLUSH_AFTER` seconds for others (a short run's start and end become one
        write; a burst of runs, one transaction); every read here flushes first."""
        self._pending[result.run_id] = result
        if self._flush_timer is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
        else:
            self._flush_timer = loop.call_later(FLUSH_AFTER, self.flush)

    def flush(self) -> None:
        """Write the records waiting in :meth:`record` (their runs as they are now)."""
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        if not self._pending:
            return
        results, self._pending = list(self._pending.values()), {}
        rows = [to_row(r) for r in results]
        self._guard("write", lambda: self.db.save(rows, self._recorded), None)
        for result in results:
            if result.is_finalized:
                self._recorded.discard(result.run_id)
            else:
                self._recorded.add(result.run_id)

    def lookup(self, command: str, run_key: str, strict: bool) -> RunResult | None:
        self.flush()
        row = self._guard("read", lambda: self.db.lookup(command, run_key, strict=strict), None)
        return from_row(row) if row is not None else None

    def claim(self, result: RunResult, *, strict: bool, rerun: bool) -> KeyClaim:
        self.flush()
        row = to_row(result)
        if result.run_key is None:  # a rerun of a run without a key: the next attempt
            source = self._guard("read", lambda: self.db.get(result.rerun_of or ""), None)
            result.attempt = row.attempt = source.attempt + 1 if source is not None else 1
            self._guard("write", lambda: self.db.record(row), None)
            self._recorded.add(row.run_id)
            return KeyClaim(result, existing=False)
        got = self._guard("write", lambda: self.db.claim(row, strict=strict, rerun=rerun), None)
        if got is None:
            return KeyClaim(result, existing=False)
        if got.existing:
            return KeyClaim(from_row(got.run), existing=True)
        self._recorded.add(row.run_id)
        result.attempt, result.rerun_of, result.reason = (got.run.attempt, got.run.rerun_of,
                                                          got.run.reason)
        return KeyClaim(result, existing=False, strict_override_used=got.strict_override_used)

    def get(self, run_id: str) -> RunResult | None:
        self.flush()
        row = self._guard("read", lambda: self.db.get(run_id), None)
        return from_row(row) if row is not None else None

    def history(self, command: str, limit: int, run_key: str | None = None
                ) -> list[RunResult]:
        """Finished runs, each read (and made a RunResult) once while it is among the
        :data:`CACHED` most recently read: a finished run's record no longer changes."""
        self.flush()
        none: list[str] = []
        ids = self._guard("read", lambda: self.db.history_ids(command, limit, run_key=run_key),
                          none)
        cache = self._cache
        missing = [i for i in ids if i not in cache]
        read: dict[str, RunResult] = {}
        if missing:
            rows: dict[str, RunRow] = self._guard("read", lambda: self.db.rows(missing), {})
            read = {run_id: from_row(row) for run_id, row in rows.items()}
        out = []
        for run_id in reversed(ids):  # the newest ends up the most recently used
            result = cache.get(run_id) or read.get(run_id)
            if result is not None:
                cache[run_id] = result
                cache.move_to_end(run_id)
                out.append(result)
        while len(cache) > CACHED:
            cache.popitem(last=False)
        out.reverse()
        return out

    def prune(self, command: str, keep: int) -> None:
        """Retention, checked after every ``keep // 100`` runs of the command that end here
        (so at most 1% more than ``keep`` are ever kept): finding where to cut walks
        ``keep`` index entries."""
        if keep < 0:
            return
        ended = self._ended.get(command, 0) + 1
        if ended < keep // 100:
            self._ended[command] = ended
            return
        self._ended[command] = 0
        self.flush()
        self._guard("write", lambda: self.db.prune(command, keep), None)

    def close(self) -> None:
        """Write what waits, close the database; later calls record nothing (the host has
        stopped)."""
        self.flush()
        self._closed = True
        self.db.close()


__all__ = ["DB_NAME", "OUTPUT_DIR", "SQLiteRecords", "from_row", "to_row"]
