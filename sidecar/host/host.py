"""The host: one workspace's orchestrator, its config files and what outlives a client.

A :class:`Host` owns the :class:`~sidecar.core.CommandOrchestrator` (created from the first
valid configuration, reconfigured in place by later reloads), the workspace's
:class:`~sidecar.host.config_files.ConfigFiles`, and the host-wide state of save hooks.
Sessions (:mod:`sidecar.host.session`, one per client connection) attach to it: they get every
core event through :meth:`Host.add_listener`, whichever orchestrator is current, and every
reload through :meth:`Host.on_reload`. A session ending never ends the host: the host process
(:mod:`.daemon`) closes it when idle or told to stop, and ``sidecar serve --standalone`` when
its only session ends.

The operations themselves are in :class:`sidecar.app.service.Service`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sidecar.adapters import LocalExecutor, OutputFilesStore
from sidecar.adapters.sqlite_records import SQLiteRecords
from sidecar.core import CmdorcError, CommandOrchestrator, RunHandle, RunnerConfig
from sidecar.core.events import EventBus, Listener

from .config_files import ConfigFiles
from .locate import make_state_dir, state_dir

if TYPE_CHECKING:
    from .session import Session

logger = logging.getLogger("sidecar.host")

@dataclass
class Reload:
    """What one :meth:`Host.reload` did."""

    ok: bool
    """False: the files have errors (or there are none); the previous config stays."""
    error: str | None = None
    """Why not, in one line."""
    had_config: bool = False
    """A previous good configuration is still in use (``ok`` false only)."""
    files: list[str] = field(default_factory=list)
    """The config files, in config order."""


ReloadListener = Callable[[Reload], None]


class Host:
    """One workspace: its config files, orchestrator and the sessions attached to it."""

    def __init__(self, root: str | os.PathLike[str],
                 config_files: Sequence[str | os.PathLike[str]] | None = None) -> None:
        self.root = Path(root).resolve()
        self.config_files = ConfigFiles(self.root, config_files)
        self.orchestrator: CommandOrchestrator | None = None
        self.config: RunnerConfig | None = None
        #: why the last reload failed (None after a good one)
        self.config_error: str | None = None
        self._events = EventBus()  # every core event of whichever orchestrator is current
        self._reload_listeners: list[ReloadListener] = []
        self._remove_core_listener: Callable[[], None] | None = None
        self._tasks: set[asyncio.Future[Any]] = set()
        self._started = False
        self._closing = False
        #: path → mtime of the last save that fired triggers (one save reported twice fires
        #: once: an editor's didSave and a file watcher, or a hook and an editor)
        self.saves: dict[str, int | None] = {}
        #: what the last :meth:`reload` did (None before the first)
        self.last_reload: Reload | None = None
        #: the sessions attached now (one per client connection)
        self.sessions: set[Session] = set()
        #: where clients connect (None: a standalone host serving one stdio client)
        self.socket_path: str | None = None
        self.started_at = dt.datetime.now().astimezone()
        #: every run's record (the workspace's ``.sidecar/runs.db``), from the first valid
        #: configuration on
        self.records: SQLiteRecords | None = None

    def configure(self, root: str | os.PathLike[str],
                  config_files: Sequence[str | os.PathLike[str]] | None) -> None:
        """Set the workspace before the first reload (a stdio client's ``initialize``)."""
        self.root = Path(root).resolve()
        self.config_files.configure(self.root, config_files)

    # ------------------------------------------------------------------ listeners
    def add_listener(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(event)`` for every core event; returns a remover."""
        return self._events.add_listener(listener)

    def on_reload(self, listener: ReloadListener) -> Callable[[], None]:
        """Call ``listener(reload)`` after every reload; returns a remover."""
        self._reload_listeners.append(listener)
        return lambda: (self._reload_listeners.remove(listener)
                        if listener in self._reload_listeners else None)

    # ------------------------------------------------------------------ sessions
    def attach(self, session: Session) -> None:
        self.sessions.add(session)

    def detach(self, session: Session) -> None:
        self.sessions.discard(session)

    def active_runs(self) -> list[RunHandle]:
        """Handles of every run not final yet."""
        orch = self.orchestrator
        return orch.get_all_active_handles() if orch is not None else []

    @property
    def idle(self) -> bool:
        """No session attached, no run active and no task of the host's own running."""
        return not self.sessions and not self._tasks and not self.active_runs()

    # ------------------------------------------------------------------ lifecycle
    @property
    def closing(self) -> bool:
        """True once :meth:`close` was called (or the orchestrator shut down)."""
        return self._closing or (self.orchestrator is not None and self.orchestrator.is_shutdown)

    def reload(self) -> Reload:
        """Reload the config files from disk. On failure the last good configuration stays
        in use (runs in flight continue either way)."""
        files = self.config_files
        error: str | None = None
        try:
            report = files.reload()
            config = report.config
        except Exception as exc:
            logger.exception("config reload failed")
            config, error = None, f"{type(exc).__name__}: {exc}"
        else:
            error = files.problem() if config is None else None
        if config is not None:
            try:
                self._apply(config)
            except CmdorcError as exc:
                config, error = None, str(exc)
        if config is None:
            self.config_error = error or "the configuration is invalid"
            logger.info("config not loaded: %s", self.config_error)
            outcome = Reload(False, self.config_error, self.orchestrator is not None,
                             [str(p) for p in files.files])
        else:
            self.config = config
            self.config_error = None
            outcome = Reload(True, files=[str(p) for p in files.files])
            logger.info("config loaded: %d command(s) from %s", len(config.commands),
                        ", ".join(outcome.files))
        self.last_reload = outcome
        for listener in list(self._reload_listeners):
            try:
                listener(outcome)
            except Exception:
                logger.exception("reload listener failed")
        return outcome

    def _apply(self, config: RunnerConfig) -> None:
        if self.orchestrator is None:
            # The composition root: the host chooses the adapters behind the core's ports.
            self.records = self._open_records(config)
            orch = CommandOrchestrator(config, executor=LocalExecutor(),
                                       store=OutputFilesStore(config.output_storage),
                                       records=self.records)
            self.orchestrator = orch
            self._remove_core_listener = orch.add_listener(self._events.publish)
            if self._started:
                self.spawn(orch.startup())
        else:
            if self.config is not None and config.history.store != self.config.history.store:
                logger.warning("[history] store = %r applies when the host restarts",
                               config.history.store)
            self.orchestrator.reload_config(config)

    def _open_records(self, config: RunnerConfig) -> SQLiteRecords:
        """The run records: ``runs.db`` in the workspace's state directory (``.sidecar``),
        or memory with ``[history] store = "memory"``. Active runs of dead owners are marked
        lost as they open."""
        if config.history.store == "memory":
            return SQLiteRecords(None)
        try:
            path = make_state_dir(str(self.root))
        except OSError:  # reported by SQLiteRecords, which cannot create it either
            path = state_dir(str(self.root))
        return SQLiteRecords(path)

    def start(self) -> asyncio.Future[Any] | None:
        """Start the orchestrator (``orchestrator_started``) now, or as soon as a valid
        configuration gives one. Returns the task that emits it, if it started now."""
        if self._started:
            return None
        self._started = True
        if self.orchestrator is not None:
            return self.spawn(self.orchestrator.startup())
        return None

    def spawn(self, coro: Awaitable[Any]) -> asyncio.Future[Any]:
        """Run ``coro`` in a task the host owns (cancelled by :meth:`close`)."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def wait_idle(self) -> None:
        """Until the host's own tasks are done and no run or chain is active."""
        while self._tasks:
            await asyncio.wait(list(self._tasks))
        if self.orchestrator is not None:
            await self.orchestrator.wait_idle()

    async def close(self, timeout: float = 5.0) -> None:
        """Shut the orchestrator down (``orchestrator_shutdown``, then cancel every run)."""
        self._closing = True
        orch = self.orchestrator
        if orch is not None and not orch.is_shutdown:
            try:
                await asyncio.wait_for(orch.shutdown(timeout=timeout), timeout + 5)
            except Exception:
                logger.exception("orchestrator shutdown failed")
        tasks = [t for t in self._tasks if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=1.0)
        if self._remove_core_listener is not None:
            self._remove_core_listener()
            self._remove_core_listener = None
        if self.records is not None:
            self.records.close()
