"""The run records and the run-key rules, in SQLite: one module, plain data.

Every run is a row of ``runs`` (id, command, run key, attempt, state, exit code, trigger
chain, who started it, resolved command and variables, times, comment/reason, ``rerun_of``,
who owns it, where its output is). This module decides, inside one SQLite transaction, what a
start with a run key does (orchesjob's idempotency):

* a run of that command and key is active (``pending``/``running``) and its owner lives: that
  run is returned (``existing``), never a second one;
* the latest run of the key has ended: a new run starts (attempt + 1, ``rerun_of`` the
  previous one), unless the start is *strict*: then the finished run is returned, unless an
  unlock of the key (:meth:`RunDB.unlock`, optionally expiring) is there to be consumed;
* a rerun (:meth:`RunDB.claim` with ``rerun=True``) starts a new run whatever the strictness,
  and is refused while the key has an active run.

The *owner* of an active run is the process that runs it (a host, or a ``--no-host``
command line), named by boot id, pid and the process's start time, so a reused pid or a
reboot is not mistaken for it. An active run whose owner is gone is marked ``lost``
(:meth:`RunDB.recover` at a host's start, :meth:`RunDB.get` when it is asked for); the output
it wrote so far stays.

Standard library only, no asyncio and nothing of :mod:`sidecar.core`: the host (through the
core's :class:`~sidecar.core.ports.RunRecords` port, :mod:`.sqlite_records`), the protocol's
operations and a short-lived command line all use it. The database is in WAL mode; writers
serialise on SQLite's lock (``BEGIN IMMEDIATE``), so N processes claiming one key at once
start one run.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import time
from collections.abc import Callable, Container, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

TYPE_CHECKING = False  # typing is not imported at run time: `sidecar job` starts fast
if TYPE_CHECKING:
    from typing import Any

ACTIVE_STATES = ("pending", "running")
FINAL_STATES = ("success", "failed", "cancelled", "lost")
#: The states above as SQL lists (``state IN …``), written once.
_ACTIVE_SQL = "(" + ", ".join(f"'{s}'" for s in ACTIVE_STATES) + ")"
_FINAL_SQL = "(" + ", ".join(f"'{s}'" for s in FINAL_STATES) + ")"
SCHEMA_VERSION = 2
BUSY_TIMEOUT_SECS = 10.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL UNIQUE,
    command TEXT NOT NULL,
    run_key TEXT,
    attempt INTEGER NOT NULL DEFAULT 1,
    state TEXT NOT NULL,
    exit_code INTEGER,
    error TEXT,
    comment TEXT NOT NULL DEFAULT '',
    reason TEXT,
    rerun_of TEXT,
    strict INTEGER NOT NULL DEFAULT 0,
    trigger_event TEXT,
    trigger_chain TEXT NOT NULL DEFAULT '[]',
    upstream_run_ids TEXT NOT NULL DEFAULT '[]',
    started_by TEXT,
    resolved_command TEXT,
    cwd TEXT,
    vars TEXT NOT NULL DEFAULT '{}',
    runtime_vars TEXT NOT NULL DEFAULT '{}',
    created_at REAL NOT NULL,
    start_time REAL,
    end_time REAL,
    owner TEXT,
    pid INTEGER,
    output_path TEXT,
    output_size INTEGER NOT NULL DEFAULT 0,
    stderr_path TEXT,
    argv TEXT,
    pid_start TEXT,
    abort_reason TEXT,
    aborted_at REAL
);
-- covers retention's walk over a command's newest runs (no row lookups)
CREATE INDEX IF NOT EXISTS runs_by_command ON runs(command, seq, state);
CREATE INDEX IF NOT EXISTS runs_by_key ON runs(command, run_key, seq) WHERE run_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS runs_active ON runs(state) WHERE state IN ('pending', 'running');
CREATE TABLE IF NOT EXISTS unlocks (
    command TEXT NOT NULL,
    run_key TEXT NOT NULL,
    reason TEXT,
    allowed_at REAL NOT NULL,
    expires_at REAL,
    PRIMARY KEY (command, run_key)
);
"""

#: Schema 2 added the columns of ad-hoc jobs (``sidecar job``); a schema-1 file gets them.
_V2_COLUMNS = ("stderr_path TEXT", "argv TEXT", "pid_start TEXT", "abort_reason TEXT",
               "aborted_at REAL")

_JSON_COLUMNS = ("trigger_chain", "upstream_run_ids", "vars", "runtime_vars")


class RunDBError(Exception):
    """A request the records refuse (the message says why, for people)."""


class NotFound(RunDBError):
    """No such run, or no run of that key."""


class WrongState(RunDBError):
    """The run (or the key's latest run) is in the wrong state for this request."""


@dataclass
class RunRow:
    """One run as recorded. Times are Unix seconds (floats)."""

    run_id: str
    command: str
    state: str = "pending"
    run_key: str | None = None
    attempt: int = 1
    exit_code: int | None = None
    error: str | None = None
    comment: str = ""
    reason: str | None = None
    """Why it was started again (a rerun's or an unlock's reason)."""
    rerun_of: str | None = None
    """The run this one repeats (a rerun, or a new attempt of a finished key)."""
    strict: bool = False
    trigger_event: str | None = None
    trigger_chain: list[str] = field(default_factory=list)
    upstream_run_ids: list[list[str]] = field(default_factory=list)
    """``[event, run id]`` of each run whose auto-event led to this one, oldest first."""
    started_by: str | None = None
    resolved_command: str | None = None
    cwd: str | None = None
    vars: dict[str, str] = field(default_factory=dict)
    """The variables the command was resolved with."""
    runtime_vars: dict[str, str] = field(default_factory=dict)
    """The variables its caller gave (what a rerun gives again)."""
    created_at: float = 0.0
    start_time: float | None = None
    end_time: float | None = None
    owner: str | None = None
    pid: int | None = None
    output_path: str | None = None
    output_size: int = 0
    stderr_path: str | None = None
    """A job's stderr file (a job keeps stdout, ``output_path``, and stderr apart; a command
    of a config merges them into ``output_path``)."""
    argv: list[str] | None = None
    """A job's command line (an ad-hoc command, run without a shell)."""
    pid_start: str | None = None
    """The start time (clock ticks since boot) of process ``pid``, to tell it from a later
    process given the same pid."""
    abort_reason: str | None = None
    aborted_at: float | None = None
    """When the run was aborted (``sidecar job abort``), if it was."""
    seq: int | None = None
    """The order runs were recorded in (set by the database)."""

    @property
    def is_active(self) -> bool:
        return self.state in ACTIVE_STATES


_COLUMNS = tuple(f.name for f in fields(RunRow) if f.name != "seq")
_UPDATED = tuple(c for c in _COLUMNS if c not in ("run_id", "command", "created_at"))
_INSERT = (f"INSERT INTO runs ({', '.join(_COLUMNS)}) "
           f"VALUES ({', '.join('?' * len(_COLUMNS))})")
_UPSERT = (_INSERT + " ON CONFLICT(run_id) DO UPDATE SET "
           + ", ".join(f"{c} = excluded.{c}" for c in _UPDATED))
_SELECT = f"SELECT {', '.join(_COLUMNS)}, seq FROM runs"
#: What changes as a recorded run goes on (:meth:`RunDB.update`).
_MUTABLE = ("state", "exit_code", "error", "comment", "start_time", "end_time", "owner", "pid",
            "output_path", "output_size", "pid_start", "abort_reason", "aborted_at")
_UPDATE = f"UPDATE runs SET {', '.join(f'{c} = ?' for c in _MUTABLE)} WHERE run_id = ?"
_JSON_INDEXES = tuple(_COLUMNS.index(c) for c in _JSON_COLUMNS)
_STRICT_INDEX = _COLUMNS.index("strict")
_ARGV_INDEX = _COLUMNS.index("argv")


@dataclass(frozen=True)
class Claim:
    """What a start with a run key got: ``run`` is the new run (recorded as ``pending``,
    the caller starts it) or, with ``existing``, the run already there."""

    run: RunRow
    existing: bool
    strict_override_used: bool = False
    """A strict start consumed an unlock of the key."""


@dataclass(frozen=True)
class Unlock:
    command: str
    run_key: str
    reason: str | None
    allowed_at: float
    expires_at: float | None


@dataclass(frozen=True)
class Cleaned:
    """What :meth:`RunDB.clean` deleted (or, with ``dry_run``, would delete)."""

    runs: list[RunRow]
    errors: list[str]
    """Output files that could not be deleted (their records are gone all the same)."""
    dry_run: bool


# ------------------------------------------------------------------------------ owners
def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read()
    except OSError:
        return None


_BOOT_ID = (_read("/proc/sys/kernel/random/boot_id") or "").strip()


def start_ticks(pid: int) -> str | None:
    """The process's start time in clock ticks since boot, or None if it is gone (a
    zombie counts as gone)."""
    stat = _read(f"/proc/{pid}/stat")
    if stat is None:
        return None
    rest = stat[stat.rfind(")") + 2:].split()
    if not rest or rest[0] in ("Z", "X"):
        return None
    return rest[19]


def owner_of(pid: int) -> str:
    """The owner name of process ``pid``: ``boot-id:pid:start-ticks``."""
    return f"{_BOOT_ID}:{pid}:{start_ticks(pid) or ''}"


_me: tuple[int, str] | None = None


def current_owner() -> str:
    """This process's owner name (recomputed after a fork)."""
    global _me
    pid = os.getpid()
    if _me is None or _me[0] != pid:
        _me = (pid, owner_of(pid))
    return _me[1]


def owner_alive(owner: str | None) -> bool:
    """Whether the process named by ``owner`` still runs (on this machine, since this boot)."""
    if not owner:
        return False
    boot, _, rest = owner.partition(":")
    pid_text, _, ticks = rest.partition(":")
    if boot != _BOOT_ID or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if _BOOT_ID and ticks:
        return start_ticks(pid) == ticks
    try:  # no /proc: the pid alone
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def owner_pid(owner: str | None) -> int | None:
    if not owner:
        return None
    pid = owner.split(":")[1] if owner.count(":") >= 2 else ""
    return int(pid) if pid.isdigit() else None


# ------------------------------------------------------------------------------ the database
class RunDB:
    """The run records of one store (a file, or ``None``: in memory, for this process only).

    ``alive(owner)`` says whether an owner still runs (default: :func:`owner_alive`; tests
    and a host with its own view may pass another). Raises ``sqlite3.Error``/``OSError`` when
    the database cannot be opened; :class:`RunDBError` for refused requests.
    """

    def __init__(self, path: str | os.PathLike[str] | None, *,
                 alive: Callable[[str | None], bool] = owner_alive,
                 timeout: float = BUSY_TIMEOUT_SECS, kill_lost: bool = False) -> None:
        self.path = Path(path) if path is not None else None
        self.alive = alive
        self.kill_lost = kill_lost
        """Marking a run lost also kills what is left of its process group (``sidecar
        job``: a worker killed with SIGKILL leaves no orphan)."""
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(self.path) if self.path else ":memory:",
                                   timeout=timeout, isolation_level=None,
                                   check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        # Switching a new file to WAL, or opening a database another connection is setting
        # up or closing, can fail at once with SQLITE_BUSY (SQLite's busy handler is not
        # called): processes that open one database at once try again until ``timeout``.
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    self._setup()
                    break
                except sqlite3.OperationalError as exc:
                    if (exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY
                            or time.monotonic() >= deadline):
                        raise
                    time.sleep(0.01)
        except BaseException:
            self._db.close()
            raise

    def _setup(self) -> None:
        if self.path is not None:
            self._db.execute("PRAGMA journal_mode=WAL")
            # Commits do not fsync; a power cut may lose the last runs, never the file.
            self._db.execute("PRAGMA synchronous=NORMAL")
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise RunDBError(f"{self.path} was written by a newer cmdsidecar "
                             f"(schema {version} > {SCHEMA_VERSION})")
        if version < SCHEMA_VERSION:
            with self._write():  # (read again: another process may have set it up since)
                version = self._db.execute("PRAGMA user_version").fetchone()[0]
                if version == 1:
                    for column in _V2_COLUMNS:
                        self._db.execute(f"ALTER TABLE runs ADD COLUMN {column}")
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def close(self) -> None:
        self._db.close()

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taken at once (``BEGIN IMMEDIATE``): what it read is
        still true when it writes."""
        db = self._db
        if db.in_transaction:  # nested: part of the caller's transaction
            yield db
            return
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    # -------------------------------------------------------------------- rows
    @staticmethod
    def _row(r: Sequence[Any]) -> RunRow:
        """A row of :data:`_SELECT` (columns in :class:`RunRow`'s order) as a RunRow."""
        values = list(r)
        for i in _JSON_INDEXES:
            text = values[i]
            values[i] = [] if text == "[]" else {} if text == "{}" else json.loads(text)
        values[_STRICT_INDEX] = bool(values[_STRICT_INDEX])
        if values[_ARGV_INDEX] is not None:
            values[_ARGV_INDEX] = json.loads(values[_ARGV_INDEX])
        return RunRow(*values)

    @staticmethod
    def _values(row: RunRow) -> list[Any]:
        """``row``'s column values, in :data:`_COLUMNS` order (JSON columns as text)."""
        out: list[Any] = [getattr(row, c) for c in _COLUMNS]
        for i in _JSON_INDEXES:
            value = out[i]
            out[i] = json.dumps(value) if value else "[]" if isinstance(value, list) else "{}"
        if out[_ARGV_INDEX] is not None:
            out[_ARGV_INDEX] = json.dumps(out[_ARGV_INDEX])
        return out

    def _select(self, where: str, args: Sequence[Any] = ()) -> list[RunRow]:
        cursor = self._db.cursor()
        cursor.row_factory = None  # plain tuples: the fastest way to RunRow
        return [self._row(r) for r in cursor.execute(f"{_SELECT} {where}", args)]

    def record(self, row: RunRow) -> None:
        """Insert ``row``, or update the run of that id with it."""
        if not row.created_at:
            row.created_at = time.time()
        self._db.execute(_UPSERT, self._values(row))

    def save(self, rows: Iterable[RunRow], recorded: Container[str] = ()) -> None:
        """Record several runs in one transaction: those in ``recorded`` (ids whose record
        exists) by :meth:`update`, the others by :meth:`record`."""
        with self._write():
            for row in rows:
                if row.run_id not in recorded or not self.update(row):
                    self.record(row)

    def update(self, row: RunRow) -> bool:
        """Update the recorded run of ``row``'s id with what changes as a run goes on (its
        state, exit code, error, comment, times, owner, pid, output); False if there is no
        such run. Cheaper than :meth:`record`."""
        values = [getattr(row, c) for c in _MUTABLE]
        values.append(row.run_id)
        return self._db.execute(_UPDATE, values).rowcount > 0

    def update_if(self, run_id: str, states: Sequence[str], **columns: Any) -> bool:
        """Set ``columns`` of the run ``run_id`` if it is in one of ``states`` (one statement:
        a run that has moved on meanwhile, say aborted, keeps what it has); False if not."""
        bad = set(columns) - set(_MUTABLE)
        if bad:
            raise ValueError(f"not columns that change: {sorted(bad)}")
        sets = ", ".join(f"{c} = ?" for c in columns)
        marks = ", ".join("?" * len(states))
        cursor = self._db.execute(
            f"UPDATE runs SET {sets} WHERE run_id = ? AND state IN ({marks})",
            [*columns.values(), run_id, *states])
        return cursor.rowcount > 0

    # -------------------------------------------------------------------- run keys
    def latest(self, command: str, run_key: str) -> RunRow | None:
        """The newest run of ``command`` with ``run_key`` (active runs whose owner is gone are
        marked lost first)."""
        rows = self._select("WHERE command = ? AND run_key = ? ORDER BY seq DESC LIMIT 1",
                            (command, run_key))
        return self._checked(rows[0]) if rows else None

    def lookup(self, command: str, run_key: str, *, strict: bool = False,
               now: float | None = None) -> RunRow | None:
        """The run a start with this key would return without starting one (an active run,
        or for a strict start a finished one no unlock frees), else None. Reads only: the
        decision that counts is :meth:`claim`'s."""
        latest = self.latest(command, run_key)
        if latest is None:
            return None
        if latest.is_active:
            return latest
        if strict and self._unlock(command, run_key, now) is None:
            return latest
        return None

    def claim(self, row: RunRow, *, strict: bool = False, rerun: bool = False,
              now: float | None = None) -> Claim:
        """Start ``row`` (its ``run_key`` set) unless the key's rules return a run already
        there; decided and recorded in one transaction. A new run gets its ``attempt`` (and
        ``rerun_of``, ``reason`` when it repeats a finished run) here and is recorded as it
        is (normally ``pending``, owned by this process).

        ``rerun``: a new run whatever the strictness; :class:`WrongState` while the key has
        an active run.
        """
        assert row.run_key is not None
        now = time.time() if now is None else now
        with self._write():
            latest = self.latest(row.command, row.run_key)
            used = False
            if latest is not None and latest.is_active:
                if rerun:
                    raise WrongState(
                        f"run key {row.run_key!r} of {row.command!r} has an active run "
                        f"({latest.run_id}, {latest.state})")
                return Claim(latest, existing=True)
            if latest is not None and strict and not rerun:
                unlock = self._unlock(row.command, row.run_key, now)
                if unlock is None:
                    return Claim(latest, existing=True)
                self._db.execute("DELETE FROM unlocks WHERE command = ? AND run_key = ?",
                                 (row.command, row.run_key))
                used = True
                if row.reason is None:
                    row.reason = unlock.reason
            row.strict = strict
            if latest is not None:
                row.attempt = latest.attempt + 1
                if row.rerun_of is None:
                    row.rerun_of = latest.run_id
            if row.owner is None:
                row.owner = current_owner()
            row.created_at = row.created_at or now
            self._db.execute(_INSERT, self._values(row))
        return Claim(row, existing=False, strict_override_used=used)

    def pending_unlock(self, command: str, run_key: str,
                       now: float | None = None) -> Unlock | None:
        """The unlock of this key that the next strict start would consume, if any."""
        return self._unlock(command, run_key, now)

    def _unlock(self, command: str, run_key: str, now: float | None) -> Unlock | None:
        now = time.time() if now is None else now
        r = self._db.execute("SELECT * FROM unlocks WHERE command = ? AND run_key = ?",
                             (command, run_key)).fetchone()
        if r is None or (r["expires_at"] is not None and r["expires_at"] <= now):
            return None
        return Unlock(**dict(r))

    def unlock(self, command: str, run_key: str, reason: str | None = None,
               ttl_secs: float | None = None, now: float | None = None) -> Unlock:
        """Let the next strict start of this key start a new run, once (until ``ttl_secs``
        from now, if given). The key's latest run must have ended (:class:`NotFound` without
        one, :class:`WrongState` while it is active)."""
        now = time.time() if now is None else now
        if ttl_secs is not None and ttl_secs <= 0:
            raise ValueError("ttl must be positive")
        with self._write():
            latest = self.latest(command, run_key)
            if latest is None:
                raise NotFound(f"no run of {command!r} with run key {run_key!r}")
            if latest.is_active:
                raise WrongState(f"run key {run_key!r} of {command!r} has an active run "
                                 f"({latest.run_id}); unlock applies to a finished key")
            unlock = Unlock(command, run_key, reason, now,
                            now + ttl_secs if ttl_secs is not None else None)
            self._db.execute("INSERT OR REPLACE INTO unlocks VALUES (?, ?, ?, ?, ?)",
                             (command, run_key, reason, unlock.allowed_at, unlock.expires_at))
        return unlock

    def source(self, run_id: str | None = None, *, command: str | None = None,
               run_key: str | None = None) -> RunRow:
        """The finished run a rerun repeats: ``run_id``'s, or the latest of ``command`` and
        ``run_key`` (:class:`NotFound`, or :class:`WrongState` if it is active)."""
        if run_id is not None:
            row = self.get(run_id)
            if row is None:
                raise NotFound(f"no run with id {run_id!r}")
        else:
            assert command is not None and run_key is not None
            row = self.latest(command, run_key)
            if row is None:
                raise NotFound(f"no run of {command!r} with run key {run_key!r}")
        if row.is_active:
            raise WrongState(f"run {row.run_id} of {row.command!r} is still {row.state}; "
                             "only a finished run can be rerun")
        return row

    # -------------------------------------------------------------------- reading
    def get(self, run_id: str) -> RunRow | None:
        """The run of that id (marked lost first if it is active and its owner is gone)."""
        rows = self._select("WHERE run_id = ?", (run_id,))
        return self._checked(rows[0]) if rows else None

    def history(self, command: str, limit: int = 10, *, run_key: str | None = None,
                active: bool = False) -> list[RunRow]:
        """Runs of ``command`` (of ``run_key`` only, if given), newest first: finished ones,
        and active ones too with ``active``. ``limit`` <= 0: all."""
        where, args = self._history_where(command, limit, run_key, active)
        return [self._checked(r) for r in self._select(where, args)]

    def history_ids(self, command: str, limit: int = 10, *,
                    run_key: str | None = None) -> list[str]:
        """The ids of :meth:`history`'s finished runs (for a caller that keeps runs it has
        read: a finished run's record no longer changes; :meth:`rows` reads the others)."""
        where, args = self._history_where(command, limit, run_key, False)
        return [r[0] for r in self._db.execute(f"SELECT run_id FROM runs {where}", args)]

    def rows(self, run_ids: Sequence[str]) -> dict[str, RunRow]:
        """The runs of those ids that are recorded, by id."""
        out: dict[str, RunRow] = {}
        for start in range(0, len(run_ids), 500):
            part = run_ids[start:start + 500]
            for row in self._select(f"WHERE run_id IN ({', '.join('?' * len(part))})", part):
                out[row.run_id] = self._checked(row)
        return out

    @staticmethod
    def _history_where(command: str, limit: int, run_key: str | None,
                       active: bool) -> tuple[str, list[Any]]:
        where, args = "WHERE command = ?", [command]
        if run_key is not None:
            where += " AND run_key = ?"
            args.append(run_key)
        if not active:
            where += f" AND state IN {_FINAL_SQL}"
        where += " ORDER BY seq DESC"
        if limit > 0:
            where += f" LIMIT {int(limit)}"
        return where, args

    def active(self) -> list[RunRow]:
        """Every run recorded as active whose owner lives, oldest first."""
        rows = self._select(f"WHERE state IN {_ACTIVE_SQL} ORDER BY seq")
        return [r for r in map(self._checked, rows) if r.is_active]

    def count(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM runs").fetchone()[0])

    # -------------------------------------------------------------------- lost runs
    def _checked(self, row: RunRow) -> RunRow:
        if row.is_active and row.owner != current_owner() and not self.alive(row.owner):
            return self._mark_lost(row)
        return row

    def _mark_lost(self, row: RunRow, now: float | None = None) -> RunRow:
        now = time.time() if now is None else now
        pid = owner_pid(row.owner)
        error = (f"lost: its owner (process {pid}) ended without recording how the run "
                 "ended (killed, or the machine restarted)")
        if row.pid and group_alive(row.pid) and _BOOT_ID and row.owner \
                and row.owner.startswith(_BOOT_ID):
            if self.kill_lost and kill_group(row.pid, row.pid_start):
                error += f"; the processes left in its group {row.pid} were killed"
            else:
                error += f"; processes of its group {row.pid} were still running then"
        size = _file_size(row.output_path)
        self._db.execute(
            "UPDATE runs SET state = 'lost', end_time = ?, error = ?, output_size = ? "
            f"WHERE run_id = ? AND state IN {_ACTIVE_SQL}",
            (now, error, size, row.run_id))
        return replace(row, state="lost", end_time=now, error=error, output_size=size)

    def recover(self) -> list[RunRow]:
        """Mark lost every active run whose owner is gone (a host starting); returns them."""
        lost = []
        with self._write():
            for row in self._select(f"WHERE state IN {_ACTIVE_SQL} ORDER BY seq"):
                if row.owner != current_owner() and not self.alive(row.owner):
                    lost.append(self._mark_lost(row))
        return lost

    # -------------------------------------------------------------------- deleting
    def prune(self, command: str, keep: int) -> list[RunRow]:
        """Delete ``command``'s finished runs beyond the newest ``keep`` (< 0: none), with
        their output files; returns the deleted runs."""
        if keep < 0:
            return []
        cut = self._db.execute(
            f"SELECT seq FROM runs WHERE command = ? AND state IN {_FINAL_SQL} "
            "ORDER BY seq DESC LIMIT 1 OFFSET ?", (command, keep)).fetchone()
        if cut is None:
            return []
        with self._write():
            rows = self._select(f"WHERE command = ? AND state IN {_FINAL_SQL} AND seq <= ?",
                                (command, cut[0]))
            self._delete(rows)
        _unlink_outputs(rows)
        return rows

    def clean(self, *, before: float | None = None, after: float | None = None,
              all: bool = False, run_id: str | None = None, command: str | None = None,
              run_key: str | None = None, dry_run: bool = False) -> Cleaned:
        """Delete finished runs and their output: ``run_id``'s alone, or those that ended
        before ``before`` and/or at or after ``after``, or ``all`` (optionally of ``command``
        and ``run_key`` only). Active runs are never deleted. Raises ``ValueError`` for a
        selection that is missing or mixed."""
        if run_id is not None and (before is not None or after is not None or all
                                   or run_key is not None):
            raise ValueError("runId cannot be combined with other selections")
        if run_id is None and before is None and after is None and not all:
            raise ValueError("give one of before, after, all or runId")
        where = [f"state IN {_FINAL_SQL}"]
        args: list[Any] = []
        for cond, value in (("run_id = ?", run_id), ("command = ?", command),
                            ("run_key = ?", run_key), ("end_time < ?", before),
                            ("end_time >= ?", after)):
            if value is not None:
                where.append(cond)
                args.append(value)
        with self._write():
            rows = self._select("WHERE " + " AND ".join(where) + " ORDER BY seq", args)
            if not dry_run:
                self._delete(rows)
        errors = [] if dry_run else _unlink_outputs(rows)
        return Cleaned(rows, errors, dry_run)

    def _delete(self, rows: list[RunRow]) -> None:
        for start in range(0, len(rows), 500):
            ids = [r.run_id for r in rows[start:start + 500]]
            self._db.execute(f"DELETE FROM runs WHERE run_id IN ({', '.join('?' * len(ids))})",
                             ids)
        # An unlock is of a key's finished run: with the key's last run it goes too (else it
        # would let a second run of a strict key start long after the key began anew).
        self._db.execute("DELETE FROM unlocks WHERE NOT EXISTS (SELECT 1 FROM runs WHERE "
                         "runs.command = unlocks.command AND runs.run_key = unlocks.run_key)")


def kill_group(pgid: int, leader_start: str | None, sig: int = signal.SIGKILL) -> bool:
    """Send ``sig`` to process group ``pgid`` of a run whose leader (process ``pgid``) started
    at ``leader_start`` (clock ticks): unless that pid now names a later process (the leader
    gone, its pid reused). False if nothing was signalled."""
    ticks = start_ticks(pgid)
    if ticks is not None and leader_start is not None and ticks != leader_start:
        return False
    try:
        os.killpg(pgid, sig)
    except OSError:
        return False
    return True


def group_alive(pgid: int) -> bool:
    """Whether a process of group ``pgid`` still runs. Zombies do not count: a member whose
    parent died first waits for init to reap it, which some inits do seconds later."""
    try:
        os.killpg(pgid, 0)
    except OSError:
        return False
    try:
        pids = [name for name in os.listdir("/proc") if name.isdigit()]
    except OSError:  # no /proc: the signal's answer
        return True
    for pid in pids:
        stat = _read(f"/proc/{pid}/stat")
        if stat is None:
            continue
        rest = stat[stat.rfind(")") + 2:].split()
        if len(rest) > 2 and rest[2] == str(pgid) and rest[0] not in ("Z", "X"):
            return True
    return False


def _file_size(path: str | None) -> int:
    try:
        return os.stat(path).st_size if path else 0
    except OSError:
        return 0


def _unlink_outputs(rows: list[RunRow]) -> list[str]:
    errors = []
    for row in rows:
        for path in (row.output_path, row.stderr_path):
            if path:
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    errors.append(f"{path}: {exc.strerror or exc}")
    return errors


__all__ = [
    "ACTIVE_STATES", "FINAL_STATES", "Claim", "Cleaned", "NotFound", "RunDB", "RunDBError",
    "RunRow", "Unlock", "WrongState", "current_owner", "group_alive", "kill_group",
    "owner_alive", "owner_of", "owner_pid", "start_ticks",
]
