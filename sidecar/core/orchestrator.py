"""The orchestrator: triggers in, runs out, everything published on one event stream.

API and semantics follow cmdorc (see README "Python API"); the additions are the event stream
(:meth:`CommandOrchestrator.subscribe`, :meth:`add_listener`), ``vars=`` on :meth:`trigger`
(runtime variables, passed safely to the shell), :class:`TriggerResult` from :meth:`trigger`,
:meth:`read_output`, ``started_by=`` on :meth:`trigger` and :meth:`run_command` (who caused a
run; its chain inherits it), filled ``upstream_run_ids`` and :meth:`wait_chain`, run keys
(``run_key=``/``strict=`` on :meth:`run_command`, :meth:`rerun`), ``grace=`` on the cancels,
:meth:`forget_runs`.

Processes, cmdorc's output files and the run records are reached through the ports of
:mod:`.ports` (``executor=``, ``store=``, ``records=``). Without them the orchestrator uses the
local adapters of :mod:`sidecar.adapters`, imported lazily by the factory functions at the end
of this module: this module never imports ``sidecar.adapters`` at module level.

With durable records (:attr:`~.ports.RunRecords.durable`) the history, and any run not in
memory, are read from the records; otherwise from memory (``keep_in_memory``) as in cmdorc.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import inspect
import logging
import os
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import CommandConfig, OutputStorageConfig, RunnerConfig
from .errors import (
    CommandNotFoundError,
    ConcurrencyLimitError,
    ConfigValidationError,
    DebounceError,
    OrchestratorShutdownError,
    RunNotFoundError,
    RunStateError,
    TriggerCycleError,
    VariableResolutionError,
)
from .events import Event, EventBus, Listener, OutputEvent, RunEvent, Subscription, TriggerEvent
from .output import SPILL_AT, OutputCapture
from .ports import DEFAULT_GRACE, Execution, Executor, RunRecords, RunStore
from .runs import (
    CommandStatus,
    ResolvedCommand,
    RunHandle,
    RunResult,
    RunState,
    TriggerResult,
)
from .templates import Resolver, needs_shell, variables_used
from .triggers import TriggerContext, TriggerIndex, matches

logger = logging.getLogger("sidecar")

EventCallback = Callable[[RunHandle | None, Any], Awaitable[None] | None]
MAX_CHAIN = 200
#: Most runs per command loaded into memory from durable records when it is registered.
LOADED_HISTORY = 100
#: Seconds between two reads of the record of a run another process owns (growing from the
#: first to the second) while someone waits for it.
FOLLOW_POLL = (0.02, 0.5)
_FINAL_EVENT = {
    RunState.SUCCESS: "command_success",
    RunState.FAILED: "command_failed",
    RunState.CANCELLED: "command_cancelled",
}


class _Command:
    """Runtime bookkeeping of one registered command."""

    __slots__ = ("config", "active", "history", "latest", "last_start", "last_end")

    def __init__(self, config: CommandConfig) -> None:
        self.config = config
        self.active: list[RunResult] = []
        keep = config.keep_in_memory
        self.history: deque[RunResult] = deque(maxlen=None if keep < 0 else keep)
        self.latest: RunResult | None = None
        self.last_start: float | None = None
        self.last_end: float | None = None

    def reconfigure(self, config: CommandConfig) -> list[RunResult]:
        """New settings; history (re-bounded by ``keep_in_memory``) and live runs are kept.
        Returns the runs that no longer fit in the history."""
        self.config = config
        keep = config.keep_in_memory
        old = list(self.history)
        self.history = deque(old, maxlen=None if keep < 0 else keep)
        return old[: len(old) - len(self.history)]


@dataclass(frozen=True)
class _KeyRequest:
    """How a start treats its run key: ``strict`` returns a finished run of the key;
    ``rerun_of`` (a rerun) starts a new run whatever the strictness."""

    run_key: str | None
    strict: bool = False
    rerun_of: str | None = None
    reason: str | None = None


class _Run:
    """A live run: its command's entry, record, process and the context its auto-events
    extend."""

    __slots__ = ("entry", "result", "context", "process", "task", "cancel_comment", "stopping",
                 "timed_out", "seq", "grace")

    def __init__(self, entry: _Command, result: RunResult, context: TriggerContext) -> None:
        self.entry = entry
        self.result = result
        self.context = context
        self.process: Execution | None = None
        self.task: asyncio.Task[None] | None = None
        self.cancel_comment: str | None = None
        self.stopping: asyncio.Future[Any] | None = None
        self.timed_out = False
        self.seq = 0
        self.grace: float | None = None  # a cancel's SIGTERM → SIGKILL delay


class CommandOrchestrator:
    """Runs configured commands in response to string triggers.

    ``config`` is a :class:`RunnerConfig` (from :func:`load_config`) or a list of
    :class:`CommandConfig`. ``vars`` are extra global (config-authored) variables.
    ``grace_secs`` is the SIGTERM → SIGKILL delay when a run is stopped. ``executor`` starts
    runs' processes (default: :class:`~sidecar.adapters.local_process.LocalExecutor`);
    ``store`` keeps finished runs (default: an
    :class:`~sidecar.adapters.output_files.OutputFilesStore` of ``config.output_storage``; an
    injected store is used as it is configured, and :meth:`reload_config` passes it the new
    ``[output_storage]`` settings). ``records`` records every run and decides run keys
    (default: :class:`~sidecar.adapters.sqlite_records.SQLiteRecords` in memory).
    """

    def __init__(
        self,
        config: RunnerConfig | Iterable[CommandConfig],
        vars: Mapping[str, str] | None = None,
        *,
        grace_secs: float = DEFAULT_GRACE,
        executor: Executor | None = None,
        store: RunStore | None = None,
        records: RunRecords | None = None,
    ) -> None:
        if not isinstance(config, RunnerConfig):
            config = RunnerConfig(commands=list(config))
        self.config = config
        self._vars: dict[str, str] = {**config.vars, **(vars or {})}
        self._executor = executor if executor is not None else _local_executor()
        self._store = store if store is not None else _output_files_store(config.output_storage)
        self._records = records if records is not None else _memory_records()
        # Runs other processes own, read from the records, followed while someone waits.
        self._followed: dict[str, RunResult] = {}
        self._followers: set[asyncio.Future[Any]] = set()
        self._grace = grace_secs
        self._commands: dict[str, _Command] = {}
        self._runs: dict[str, _Run] = {}  # active runs: not final yet
        self._live: dict[str, _Run] = {}  # runs whose process may still run (final or not)
        self._by_id: dict[str, RunResult] = {}
        self._bus = EventBus()
        self._exact_callbacks: dict[str, list[EventCallback]] = {}
        self._wild_callbacks: list[tuple[str, EventCallback]] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        # Runs whose supervising task is not done (final or not): wait_chain waits on them.
        self._unsettled: dict[str, _Run] = {}
        self._chain_watchers: list[Callable[[RunResult], object]] = []
        self._resolved_cache: dict[tuple[int, tuple[tuple[str, str], ...]],
                                   tuple[CommandConfig, ResolvedCommand]] = {}
        self._started = False
        self._shutdown_task: asyncio.Future[dict[str, Any]] | None = None
        self._shutting_down = False
        self._is_shutdown = False
        for cmd in config.commands:
            self._register(cmd)
        self._reindex()

    # ------------------------------------------------------------------ registry
    def _register(self, cmd: CommandConfig) -> None:
        if cmd.name in self._commands:
            raise ConfigValidationError(f"Duplicate command name '{cmd.name}'")
        entry = _Command(cmd)
        self._commands[cmd.name] = entry
        self._load_history(entry)

    def _load_history(self, entry: _Command) -> None:
        """A newly registered command's recent runs, from the records when they are durable,
        else from cmdorc's output files (``keep_in_memory`` of them; at most
        :data:`LOADED_HISTORY` from durable records, which serve the rest)."""
        cmd = entry.config
        keep = cmd.keep_in_memory
        if keep == 0:
            return
        if self._records.durable:
            limit = LOADED_HISTORY if keep < 0 else min(keep, LOADED_HISTORY)
            runs = list(reversed(self._records.history(cmd.name, limit)))
        elif self._store.enabled(cmd):
            runs = self._store.load_history(cmd, keep)
        else:
            return
        for result in runs:
            entry.history.append(result)
            entry.latest = result
            self._by_id[result.run_id] = result

    def _reindex(self) -> None:
        self._resolved_cache.clear()
        self._trigger_index = TriggerIndex({n: c.config.triggers for n, c in self._commands.items()})
        self._cancel_index = TriggerIndex(
            {n: c.config.cancel_on_triggers for n, c in self._commands.items()})

    def _forget(self, results: Iterable[RunResult]) -> None:
        for result in results:
            self._by_id.pop(result.run_id, None)

    def _entry(self, name: str) -> _Command:
        try:
            return self._commands[name]
        except KeyError:
            raise CommandNotFoundError(f"Command '{name}' not registered") from None

    def add_command(self, config: CommandConfig) -> None:
        self._register(config)
        self._reindex()

    def remove_command(self, name: str) -> None:
        self._entry(name)
        del self._commands[name]
        self._reindex()

    def update_command(self, config: CommandConfig) -> None:
        """Replace a command's configuration; its history and live runs are kept."""
        self._forget(self._entry(config.name).reconfigure(config))
        self._reindex()

    def reload_all_commands(self, configs: list[CommandConfig]) -> None:
        """Replace the whole command set. Runs in flight continue; history of commands that
        still exist is kept."""
        names = [cmd.name for cmd in configs]
        if len(set(names)) != len(names):
            dup = next(n for n in names if names.count(n) > 1)
            raise ConfigValidationError(f"Duplicate command name '{dup}'")
        old, self._commands = self._commands, {}
        for cmd in configs:
            entry = old.get(cmd.name)
            if entry is None:
                entry = _Command(cmd)
                self._load_history(entry)
            else:
                self._forget(entry.reconfigure(cmd))
            self._commands[cmd.name] = entry
        self._reindex()

    def reload_config(self, config: RunnerConfig) -> None:
        """Apply a whole new :class:`RunnerConfig` (commands, variables, output storage)."""
        self.reload_all_commands(config.commands)
        extra = {k: v for k, v in self._vars.items() if k not in self.config.vars}
        self.config = config
        self._vars = {**config.vars, **extra}
        self._store.configure(config.output_storage)
        self._resolved_cache.clear()

    def list_commands(self) -> list[str]:
        return list(self._commands)

    def get_command(self, name: str) -> CommandConfig:
        return self._entry(name).config

    @property
    def variables(self) -> dict[str, str]:
        return dict(self._vars)

    def command_variables(self, name: str) -> dict[str, str | None]:
        """The variables a command's templates (command line, cwd, env) use, directly or
        through config variables, each with its default (None: it must be given at run
        time). The runtime variables the command accepts."""
        cmd = self._entry(name).config
        templates = [cmd.command, *([str(cmd.cwd)] if cmd.cwd is not None else []),
                     *cmd.env.values()]
        return variables_used(templates, {**self._vars, **cmd.vars})

    def listeners(self, event_name: str) -> tuple[list[str], list[str]]:
        """The commands an event would start (``triggers``) and cancel
        (``cancel_on_triggers``), in the order :meth:`trigger` handles them."""
        return (self._trigger_index.commands_for(event_name),
                self._cancel_index.commands_for(event_name))

    @property
    def output_storage(self) -> OutputStorageConfig:
        return self.config.output_storage

    @property
    def records(self) -> RunRecords:
        """The run records (every run's record, the run-key rules)."""
        return self._records

    # ------------------------------------------------------------------ lifecycle
    async def __aenter__(self) -> CommandOrchestrator:
        await self.startup()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()

    async def startup(self) -> None:
        """Emit ``orchestrator_started`` (runs commands that listen to it)."""
        if self._started:
            return
        self._started = True
        await self._safe_trigger("orchestrator_started", TriggerContext(), kind="lifecycle")

    async def shutdown(self, timeout: float = 30.0, cancel_running: bool = True) -> dict[str, Any]:
        """Emit ``orchestrator_shutdown``, then cancel (or wait for) every run."""
        if self._shutdown_task is not None:
            # A concurrent second call (a client's shutdown, then exit) waits for the first;
            # a later one has nothing left to do.
            if not self._shutdown_task.done():
                await asyncio.shield(self._shutdown_task)
            return {"cancelled_count": 0, "completed_count": 0, "timeout_expired": False}
        self._shutdown_task = asyncio.ensure_future(self._shutdown(timeout, cancel_running))
        return dict(await asyncio.shield(self._shutdown_task))

    async def _shutdown(self, timeout: float, cancel_running: bool) -> dict[str, Any]:
        self._shutting_down = True
        started: list[RunHandle] = []
        try:
            started = (await self._trigger("orchestrator_shutdown", TriggerContext(), None,
                                           kind="lifecycle", handle=None)).started
        except Exception:
            logger.exception("Error while handling orchestrator_shutdown")
        if started:
            # Commands that listen to orchestrator_shutdown get to finish (within timeout).
            await asyncio.wait([asyncio.ensure_future(h.wait()) for h in started],
                               timeout=timeout)
        self._is_shutdown = True
        active = list(self._live.values())
        cancelled = 0
        if cancel_running:
            cancelled = await self.cancel_all("orchestrator shutdown")
        tasks = [r.task for r in active if r.task is not None]
        timeout_expired = False
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=timeout)
            if pending:
                timeout_expired = True
                for run in list(self._live.values()):
                    if run.process is not None:
                        run.process.kill_now()
        for follower in self._followers:
            follower.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=1.0)
        return {"cancelled_count": cancelled, "completed_count": len(tasks) - cancelled,
                "timeout_expired": timeout_expired}

    async def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until no run is active and every chain they triggered has settled.
        Returns False on timeout."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while self._tasks or self._runs:
            pending = list(self._tasks) or [asyncio.ensure_future(asyncio.sleep(0.01))]
            left = None if deadline is None else deadline - loop.time()
            if left is not None and left <= 0:
                return False
            await asyncio.wait(pending, timeout=left)
        return True

    async def wait_chain(self, run_ids: Iterable[str], timeout: float | None = None
                         ) -> list[RunResult]:
        """Wait until the given runs and every run their auto-events start, transitively (the
        runs whose ``upstream_run_ids`` name one of the chain), are final and done handling
        their own auto-events. Returns the runs of those chains: the given ones first, then
        the others in the order they started.

        Raises ``KeyError`` for an unknown run id (as :meth:`read_output`). After ``timeout``
        seconds it returns the runs known so far without raising: some may not be final, and
        a final one may still be starting more; callers check the states. Runs a
        ``keep_in_memory = 0`` command forgot before the call are not listed.
        """
        chain: dict[str, RunResult] = {}
        for run_id in run_ids:
            chain.setdefault(run_id, self._result(run_id))

        def join(result: RunResult) -> bool:
            if result.run_id in chain or not any(r in chain for _, r in result.upstream_run_ids):
                return False
            chain[result.run_id] = result
            return True

        known = {**self._by_id, **{i: r.result for i, r in self._unsettled.items()}}
        while any([join(result) for result in known.values()]):
            pass  # again: a run may come before the one that links it to the chain
        self._chain_watchers.append(join)  # runs started from now on
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        try:
            while True:
                tasks: list[asyncio.Future[Any]] = []
                spawning: list[asyncio.Future[Any]] = []
                for run_id, member in list(chain.items()):
                    run = self._unsettled.get(run_id)
                    if run is None:
                        if not member.is_finalized:  # another process's: followed
                            spawning.append(asyncio.ensure_future(member.done_event().wait()))
                        continue
                    if run.task is not None:
                        if not run.task.done():
                            tasks.append(run.task)
                    elif not run.result.is_finalized:  # being spawned: no task yet
                        spawning.append(asyncio.ensure_future(run.result.done_event().wait()))
                left = None if deadline is None else deadline - loop.time()
                if (not tasks and not spawning) or (left is not None and left <= 0):
                    for waiter in spawning:
                        waiter.cancel()
                    break
                try:
                    _, pending = await asyncio.wait([*tasks, *spawning], timeout=left)
                finally:
                    for waiter in spawning:
                        waiter.cancel()
                if pending:
                    break  # timed out
        finally:
            self._chain_watchers.remove(join)
        return list(chain.values())

    async def cleanup(self) -> None:
        await self.shutdown()

    @property
    def is_shutdown(self) -> bool:
        return self._is_shutdown

    # ------------------------------------------------------------------ events
    def on_event(self, event_pattern: str, callback: EventCallback) -> None:
        """Call ``callback(handle, context)`` when an event matching the pattern fires
        (``*`` wildcards allowed). ``handle`` is the emitting run for auto-events, else None."""
        if not event_pattern:
            raise ValueError("Pattern cannot be empty")
        if "*" in event_pattern:
            self._wild_callbacks.append((event_pattern, callback))
        else:
            self._exact_callbacks.setdefault(event_pattern, []).append(callback)

    def off_event(self, event_pattern: str, callback: EventCallback) -> bool:
        if "*" in event_pattern:
            item = (event_pattern, callback)
            if item in self._wild_callbacks:
                self._wild_callbacks.remove(item)
                return True
            return False
        callbacks = self._exact_callbacks.get(event_pattern, [])
        if callback in callbacks:
            callbacks.remove(callback)
            return True
        return False

    def add_listener(self, listener: Listener) -> Callable[[], None]:
        """Receive every :data:`Event` synchronously; returns a remover."""
        return self._bus.add_listener(listener)

    def subscribe(self, max_pending_output: int = 8 << 20) -> Subscription:
        """An async iterator over every event (see :mod:`sidecar.core.events`)."""
        return self._bus.subscribe(max_pending_output)

    # ------------------------------------------------------------------ triggering
    async def trigger(
        self,
        event_name: str,
        context: TriggerContext | None = None,
        vars: Mapping[str, str] | None = None,
        *,
        started_by: str | None = None,
        exclude: Mapping[str, tuple[str, str]] | None = None,
    ) -> TriggerResult:
        """Fire an event: cancel commands listening in ``cancel_on_triggers``, start commands
        listening in ``triggers``, call ``on_event`` callbacks.

        ``exclude`` maps commands this event must not start or cancel to the ``(reason,
        message)`` reported for them in ``skipped``; the runs it starts and their chains
        are not restricted (an agent's trigger, see :mod:`sidecar.app.agents`).

        ``vars`` are runtime variables for the runs this starts (and their chains); they are
        never shell code (see :mod:`.shellsafe`). ``started_by`` names who fired it (set on
        ``context``); the runs it starts and their chains carry it. Raises
        :class:`TriggerCycleError` if the event is already in ``context``'s chain.
        """
        if context is None:
            context = TriggerContext()
        if started_by is not None:
            context.started_by = started_by
        return await self._trigger(event_name, context, vars, kind="trigger", handle=None,
                                   exclude=exclude)

    async def _trigger(
        self,
        event_name: str,
        context: TriggerContext | None,
        vars: Mapping[str, str] | None,
        *,
        kind: str,
        handle: RunHandle | None,
        exclude: Mapping[str, tuple[str, str]] | None = None,
    ) -> TriggerResult:
        if self._is_shutdown:
            raise OrchestratorShutdownError("Orchestrator is shutting down")
        if context is None:
            context = TriggerContext()
        if vars:
            context.vars = {**context.vars, **vars}
        if event_name in context.seen:
            logger.warning("Trigger cycle detected: %s (chain: %s)", event_name,
                           " -> ".join(context.history))
            raise TriggerCycleError(event_name, context.history)
        context.seen.add(event_name)
        context.history.append(event_name)
        if len(context.history) > MAX_CHAIN:
            del context.history[: len(context.history) - MAX_CHAIN]
        upstream = context.upstream
        if handle is not None:  # an auto-event: the runs it starts follow the emitting run
            upstream = [*upstream, (event_name, handle.run_id)][-MAX_CHAIN:]
        outcome = TriggerResult(event_name)
        if self._bus.has_subscribers:
            self._bus.publish(TriggerEvent(
                event_name, kind, tuple(context.history), dt.datetime.now(),
                run_id=handle.run_id if handle else None,
                command=handle.command_name if handle else None))

        exclude = exclude or {}
        for name in self._cancel_index.commands_for(event_name):
            if name in exclude:
                continue
            if await self.cancel_command(name, f"cancel_on_trigger:{event_name}"):
                outcome.cancelled.append(name)

        for name in self._trigger_index.commands_for(event_name):
            entry = self._commands.get(name)
            if entry is None:
                continue
            if name in exclude:
                outcome.skipped.append((name, *exclude[name]))
                continue
            try:
                started = await self._start(entry, event_name, context, upstream)
                outcome.started.append(started)
            except DebounceError as exc:
                outcome.skipped.append((name, "debounce", str(exc)))
            except ConcurrencyLimitError as exc:
                outcome.skipped.append((name, "concurrency_limit", str(exc)))
            except VariableResolutionError as exc:
                logger.warning("Command '%s' not started from '%s': %s", name, event_name, exc)
                outcome.skipped.append((name, "variable_error", str(exc)))
            except OrchestratorShutdownError as exc:
                outcome.skipped.append((name, "shutting_down", str(exc)))
        await self._dispatch_callbacks(event_name, handle, context)
        return outcome

    async def _safe_trigger(self, event: str, context: TriggerContext | None, *, kind: str,
                            handle: RunHandle | None = None) -> None:
        """Auto/lifecycle events: never raise to the caller."""
        try:
            await self._trigger(event, context, None, kind=kind, handle=handle)
        except TriggerCycleError as exc:
            logger.warning("Cycle prevented: %s", exc)
        except OrchestratorShutdownError:
            logger.debug("%s skipped: shutting down", event)
        except Exception:
            logger.exception("Error while handling event %s", event)

    async def _dispatch_callbacks(self, event: str, handle: RunHandle | None,
                                  context: TriggerContext) -> None:
        callbacks = list(self._exact_callbacks.get(event, ()))
        callbacks += [cb for pattern, cb in self._wild_callbacks if matches(pattern, event)]
        for cb in callbacks:
            try:
                ret = cb(handle, context)
                if inspect.isawaitable(ret):
                    await ret
            except Exception:
                logger.exception("on_event callback for %s failed", event)

    # ------------------------------------------------------------------ running
    async def run_command(self, name: str, vars: Mapping[str, str] | None = None, *,
                          started_by: str | None = None, run_key: str | None = None,
                          strict: bool = False) -> RunHandle:
        """Start a command now (manual run: empty trigger chain). ``vars`` are runtime
        variables, never shell code (see :mod:`.shellsafe`). ``started_by`` names who asked
        (the run's ``started_by``; runs its auto-events start inherit it).

        ``run_key`` makes the start idempotent (orchesjob's rules, per command): while a run
        with that key is active, that run is returned (``handle.existing``), never a second
        one, whichever process owns it; once it has ended a new run starts (attempt + 1),
        unless ``strict``: then the finished run is returned until the key is unlocked.

        Raises CommandNotFoundError, DebounceError, ConcurrencyLimitError,
        VariableResolutionError, OrchestratorShutdownError.
        """
        if self._shutting_down:
            raise OrchestratorShutdownError("Orchestrator is shutting down")
        entry = self._entry(name)
        key = _KeyRequest(run_key, strict) if run_key is not None else None
        return await self._start(entry, None, TriggerContext(vars=dict(vars or {}),
                                                             started_by=started_by), key=key)

    async def rerun(self, run_id: str, *, reason: str | None = None,
                    started_by: str | None = None) -> RunHandle:
        """Start a finished run again: the same command (as configured now) with the same
        runtime variables and run key, ``rerun_of`` set and the next attempt number, whatever
        the strictness. Raises RunNotFoundError (also for a command no longer configured),
        RunStateError (the run, or its key, is active), and what :meth:`run_command`
        raises."""
        if self._shutting_down:
            raise OrchestratorShutdownError("Orchestrator is shutting down")
        source = self._lookup_run(run_id)
        if source is None:
            raise RunNotFoundError(f"no run with id {run_id!r}")
        if not source.is_finalized:
            raise RunStateError(f"run {run_id} of {source.command_name!r} is still "
                                f"{source.state.value}; only a finished run can be rerun")
        entry = self._entry(source.command_name)
        key = _KeyRequest(source.run_key, rerun_of=run_id, reason=reason)
        context = TriggerContext(vars=dict(source.runtime_vars),
                                 started_by=started_by or source.started_by)
        return await self._start(entry, None, context, key=key)

    def preview_command(self, name: str, vars: Mapping[str, str] | None = None) -> ResolvedCommand:
        """What :meth:`run_command` would execute, without running it."""
        return self._resolve(self._entry(name).config, vars or {})

    def _resolve(self, cmd: CommandConfig, runtime: Mapping[str, str]) -> ResolvedCommand:
        """Templates → :class:`ResolvedCommand`; cached while config and variables are the
        same (runs of an unchanged command resolve once)."""
        key = (id(cmd), tuple(sorted(runtime.items())))
        cached = self._resolved_cache.get(key)
        if cached is not None and cached[0] is cmd:
            return cached[1]
        resolved = self._resolve_uncached(cmd, runtime)
        if len(self._resolved_cache) > 256:
            self._resolved_cache.clear()
        self._resolved_cache[key] = (cmd, resolved)
        return resolved

    def _resolve_uncached(self, cmd: CommandConfig, runtime: Mapping[str, str]
                          ) -> ResolvedCommand:
        resolver = Resolver({**self._vars, **cmd.vars}, runtime)
        shell = resolver.render_shell(cmd.command)
        cwd = resolver.render(str(cmd.cwd)) if cmd.cwd is not None else None
        if self.config.base_dir is not None and (cwd is None or not os.path.isabs(cwd)):
            cwd = str(self.config.base_dir / (cwd or ""))
        env = {**os.environ, **{k: resolver.render(v) for k, v in cmd.env.items()}}
        argv = None if needs_shell(shell.display) else _split(shell.display)
        script = shell.script if argv is None and shell.env else None
        if script is not None:
            env.update(shell.env)
        return ResolvedCommand(
            command=shell.display, cwd=cwd, env=env, timeout_secs=cmd.timeout_secs,
            vars=resolver.snapshot(),
            keep_history=self._store.keep_history(cmd), output_extension=self._store.extension(cmd),
            argv=argv, script=script)

    def _check_policy(self, entry: _Command, debounce: bool = True) -> list[RunResult]:
        """Debounce then concurrency; returns the runs to cancel (cancel_and_restart)."""
        cfg = entry.config
        if debounce and cfg.debounce_in_ms > 0:
            ref = entry.last_start if cfg.debounce_mode == "start" else entry.last_end
            if ref is not None:
                elapsed = (time.monotonic() - ref) * 1000
                if elapsed < cfg.debounce_in_ms:
                    raise DebounceError(cfg.name, cfg.debounce_in_ms, elapsed)
        active = len(entry.active)
        if cfg.max_concurrent == 0 or active < cfg.max_concurrent:
            return []
        if cfg.on_retrigger == "ignore":
            raise ConcurrencyLimitError(cfg.name, active, cfg.max_concurrent, cfg.on_retrigger)
        return list(entry.active)

    def _keyed_run(self, cfg: CommandConfig, key: _KeyRequest | None) -> RunHandle | None:
        """The run a start with ``key`` returns instead of starting one, if any (a read:
        :meth:`RunRecords.claim` decides for good). A rerun returns none; while its key has
        an active run it is refused (RunStateError), before anything is cancelled for it."""
        if key is None or key.run_key is None:
            return None
        found = self._records.lookup(cfg.name, key.run_key, key.strict)
        if key.rerun_of is None:
            return RunHandle(self._adopt(found), existing=True) if found is not None else None
        if found is not None and not found.is_finalized:
            raise RunStateError(f"run key {key.run_key!r} of {cfg.name!r} has an active run "
                                f"({found.run_id}, {found.state.value})")
        return None

    async def _start(self, entry: _Command, event: str | None, context: TriggerContext,
                     upstream: list[tuple[str, str]] | None = None, *,
                     key: _KeyRequest | None = None) -> RunHandle:
        """Start a run of ``entry`` in ``context``; ``upstream`` is its
        ``upstream_run_ids`` (default: the context's). ``key``: its run key's rules
        (:meth:`run_command`) may return a run already there instead."""
        if self._is_shutdown:
            raise OrchestratorShutdownError("Orchestrator is shutting down")
        cfg = entry.config
        existing = self._keyed_run(cfg, key)
        if existing is not None:
            return existing
        to_cancel = self._check_policy(entry)
        resolved = self._resolve(cfg, context.vars)
        entry.last_start = time.monotonic()
        cancelled: set[str] = set()
        while to_cancel:
            cancelled.update(old.run_id for old in to_cancel)
            await self._cancel_runs([old.run_id for old in to_cancel],
                                    "cancelled by retrigger (cancel_and_restart)")
            # Another start may have slipped in while we waited: the policy decides again.
            # (A run that cannot be waited for here, e.g. the one whose own auto-event is
            # restarting it, is already told to stop; it is not waited for twice.)
            # A start of the same key may have slipped in too: it is the run to return.
            existing = self._keyed_run(cfg, key)
            if existing is not None:
                return existing
            to_cancel = [r for r in self._check_policy(entry, debounce=False)
                         if r.run_id not in cancelled]
        if self._is_shutdown:
            raise OrchestratorShutdownError("Orchestrator is shutting down")

        upstream = list(context.upstream if upstream is None else upstream)
        result = RunResult(command_name=cfg.name, trigger_event=event,
                           trigger_chain=list(context.history), resolved_command=resolved,
                           upstream_run_ids=upstream, started_by=context.started_by)
        result.runtime_vars = dict(context.vars)
        if self._store.enabled(cfg):
            result.output_file, result.metadata_file = self._store.paths(cfg, result.run_id)
        # Durable records: the output goes to its file as it arrives (a run whose process
        # dies keeps it); else it stays in memory up to SPILL_AT.
        streamed = self._records.output_path(cfg.name, result.run_id)
        if streamed is not None:
            result.output_file = streamed
        result.capture = OutputCapture(result.output_file,
                                       spill_at=0 if streamed is not None else SPILL_AT)
        # From here to the run's registration nothing awaits: a concurrent start of the same
        # key in this process finds it. (A run without a key is first recorded when it runs:
        # one write less for the common case; a host dying while it is being spawned leaves
        # no record of it, as no process of it is left either.)
        override = False
        if key is not None:
            result.run_key, result.rerun_of, result.reason = key.run_key, key.rerun_of, key.reason
            claim = self._records.claim(result, strict=key.strict,
                                        rerun=key.rerun_of is not None)
            if claim.existing:
                return RunHandle(self._adopt(claim.run), existing=True)
            override = claim.strict_override_used
        run = _Run(entry, result, TriggerContext(set(context.seen), list(context.history),
                                                 dict(context.vars), context.started_by,
                                                 upstream))
        result.on_change = self._on_transition
        entry.active.append(result)
        self._runs[result.run_id] = run
        self._live[result.run_id] = run
        self._by_id[result.run_id] = result
        self._unsettled[result.run_id] = run
        for watch in list(self._chain_watchers):
            watch(result)
        self._publish_run(result, None)

        def on_start(execution: Execution, run: _Run = run) -> None:
            # The one place a run becomes running: its process exists, no output is read yet.
            run.process = execution
            run.result.pid = getattr(execution, "pid", None)
            if run.result.state is RunState.PENDING:
                run.result.transition(RunState.RUNNING)

        def on_output(data: bytes, run: _Run = run) -> None:
            self._record_output(run, data)

        try:
            run.process = await self._executor.start(
                resolved.argv, resolved.script or resolved.command, cwd=resolved.cwd,
                env=resolved.env if cfg.env or resolved.script else None,
                on_output=on_output, on_start=on_start)
        except OSError as exc:
            msg = _spawn_error(resolved, exc)
            self._record_output(run, msg.encode() + b"\n")
            self._end(run, RunState.FAILED, error=msg, exit_code=127)
            self._live.pop(result.run_id, None)
            task = asyncio.get_running_loop().create_task(self._emit_final(run))
        except BaseException:
            # The caller was cancelled mid-spawn (asyncio kills a half-started child): the
            # run must still end, or it would hold its concurrency slot forever.
            self._end(run, RunState.CANCELLED, comment="start interrupted")
            self._live.pop(result.run_id, None)
            self._track(run, asyncio.get_running_loop().create_task(self._emit_final(run)))
            raise
        else:
            if run.stopping is None and (run.cancel_comment is not None or result.is_finalized):
                # Cancelled, or marked final (mark_*), while it was being spawned.
                run.stopping = self._spawn(run.process.terminate(
                    self._grace if run.grace is None else run.grace))
            task = asyncio.get_running_loop().create_task(self._supervise(run))
        self._track(run, task)
        return RunHandle(result, strict_override_used=override)

    def _track(self, run: _Run, task: asyncio.Task[None]) -> None:
        """``task`` supervises ``run``: it ends once the run is final and its final
        auto-event has been handled (the runs that started are registered by then)."""
        run.task = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(lambda _: self._unsettled.pop(run.result.run_id, None))

    def _record_output(self, run: _Run, data: bytes) -> None:
        if run.result.is_finalized:
            return  # marked final (mark_*) while its process still writes: output is closed
        capture = run.result.capture
        assert capture is not None
        offset = capture.size
        capture.feed(data)
        if self._bus.has_subscribers:
            self._bus.publish(OutputEvent(run.result.run_id, run.result.command_name, run.seq,
                                          offset, len(data), capture.decode(data)))
            run.seq += 1

    async def _supervise(self, run: _Run) -> None:
        result = run.result
        handle = RunHandle(result)
        await asyncio.sleep(0)  # let run_command's caller see the handle first
        await self._safe_trigger(f"command_started:{result.command_name}", self._auto_context(run),
                                 kind="auto", handle=handle)
        proc = run.process
        assert proc is not None
        timeout = result.resolved_command.timeout_secs if result.resolved_command else None
        timer = None
        if timeout:
            timer = asyncio.get_running_loop().call_later(timeout, self._on_timeout, run)
        try:
            rc = await proc.wait(self._grace)
        finally:
            if timer is not None:
                timer.cancel()
            self._live.pop(result.run_id, None)
        if run.timed_out:
            self._end(run, RunState.FAILED, exit_code=rc,
                      error=f"Command timed out after {timeout} seconds")
        elif run.cancel_comment is not None:
            self._end(run, RunState.CANCELLED, comment=run.cancel_comment, exit_code=rc)
        elif rc == 0:
            self._end(run, RunState.SUCCESS, exit_code=0)
        else:
            self._end(run, RunState.FAILED, exit_code=rc, error=f"Command exited with code {rc}")
        # Once per run, whoever ended it (also a mark_* from outside: then its process has
        # just been stopped).
        await self._emit_final(run)

    def _auto_context(self, run: _Run) -> TriggerContext | None:
        entry = self._commands.get(run.result.command_name)
        if entry is not None and not entry.config.loop_detection:
            # Opted out of loop detection: keep the breadcrumb, forget what was seen.
            run.context.seen = set()
        return run.context

    async def _emit_final(self, run: _Run) -> None:
        result = run.result
        event = f"{_FINAL_EVENT[result.state]}:{result.command_name}"
        await self._safe_trigger(event, self._auto_context(run), kind="auto",
                                 handle=RunHandle(result))

    def _on_timeout(self, run: _Run) -> None:
        if run.result.is_finalized or run.process is None:
            return
        run.timed_out = True
        logger.warning("Run %s of %s timed out", run.result.run_id[:8], run.result.command_name)
        self._spawn(run.process.terminate(self._grace))

    def _spawn(self, coro: Awaitable[Any]) -> asyncio.Future[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _end(self, run: _Run, state: RunState, *, comment: str | None = None,
             error: str | None = None, exit_code: int | None = None) -> None:
        """End a run the orchestrator saw end, unless something already made it final
        (cmdorc's ``mark_*``): the transition does the rest (:meth:`_on_transition`)."""
        if not run.result.is_finalized:
            run.result.transition(state, comment=comment, error=error, exit_code=exit_code)

    def _on_transition(self, result: RunResult, previous: RunState) -> None:
        """``on_change`` of every run started here: called by :meth:`RunResult.transition`,
        the one place states change, whoever calls it (the orchestrator or ``mark_*``).

        A final state is booked first (:meth:`_book_final`), and every state handed to the
        records, so that whoever sees the RunEvent announcing it finds status, history,
        records and output already up to date.
        """
        run = self._runs.get(result.run_id)
        ended = run if run is not None and run.result is result and result.state.is_final \
            else None
        if ended is not None:
            self._book_final(ended)
        self._records.record(result)
        if ended is not None:
            self._records.prune(result.command_name, self.config.history.keep(ended.entry.config))
        self._publish_run(result, previous)

    def _book_final(self, run: _Run) -> None:
        """A run just became final: close its output, free its concurrency slot, record it
        (history, latest, stored metadata), and stop its process if it still runs (it was
        marked final from outside). Its final auto-event is emitted by its task."""
        result, entry = run.result, run.entry
        capture = result.capture
        if capture is not None:
            try:
                rest = capture.finish()
                if rest:
                    self._bus.publish(OutputEvent(result.run_id, result.command_name, run.seq,
                                                  capture.size, 0, rest))
                    run.seq += 1
            except OSError as exc:
                result.output_write_error = str(exc)
            if capture.write_error and not result.output_write_error:
                result.output_write_error = capture.write_error
        entry.last_end = time.monotonic()
        if result in entry.active:
            entry.active.remove(result)
        self._runs.pop(result.run_id, None)
        if len(entry.history) == entry.history.maxlen and entry.history:
            evicted = entry.history[0]
            self._by_id.pop(evicted.run_id, None)
        if entry.history.maxlen != 0:
            entry.history.append(result)
        else:
            self._by_id.pop(result.run_id, None)
        entry.latest = result
        if result.metadata_file is not None and self._store.enabled(entry.config):
            try:
                self._store.write_metadata(result)
                self._store.enforce_retention(entry.config)
            except OSError as exc:
                result.output_write_error = str(exc)
                logger.warning("could not write output files for %s: %s", result.run_id, exc)
        if (run.process is not None and result.run_id in self._live
                and run.stopping is None):
            run.stopping = self._spawn(run.process.terminate(self._grace))

    def _publish_run(self, result: RunResult, previous: RunState | None) -> None:
        if self._bus.has_subscribers:
            self._bus.publish(RunEvent.of(result.snapshot(),
                                          previous.value if previous else None))

    # ------------------------------------------------------------------ cancelling
    async def cancel_run(self, run_id: str, comment: str | None = None, *,
                         grace: float | None = None) -> bool:
        """Cancel one run; True if it was active. ``grace``: seconds between SIGTERM and
        SIGKILL (default: the orchestrator's ``grace_secs``). Raises RunStateError for an
        active run another process owns."""
        if run_id not in self._runs:
            other = self._lookup_run(run_id)
            if other is not None and not other.is_finalized:
                raise RunStateError(
                    f"run {run_id} of {other.command_name!r} is run by another process of "
                    "this workspace (a --no-host command line); cancel it there")
        return await self._cancel_run(run_id, comment or "cancelled", grace)

    async def _cancel_run(self, run_id: str, comment: str, grace: float | None = None) -> bool:
        """Stop a run and wait until it is final. True for the call that cancelled it; a
        concurrent second call waits too, then returns False."""
        return bool(await self._cancel_runs([run_id], comment, grace))

    async def _cancel_runs(self, run_ids: Iterable[str], comment: str,
                           grace: float | None = None) -> int:
        """Tell every run to stop at once, then wait for each to be final; returns how many
        this call cancelled. The SIGTERM → grace → SIGKILL sequence runs in a task the
        orchestrator owns, so it completes even if this caller is cancelled."""
        grace = self._grace if grace is None else grace
        runs = [r for r in map(self._runs.get, run_ids)
                if r is not None and not r.result.is_finalized]
        count = sum(self._request_stop(run, comment, grace) for run in runs)
        for run in runs:
            if run.task is not None and run.task is asyncio.current_task():
                continue  # a run's own auto-event stopping it: it ends when this returns
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(run.result.done_event().wait()),
                                       grace + 2)
        return count

    def _request_stop(self, run: _Run, comment: str, grace: float | None = None) -> bool:
        if run.cancel_comment is not None:
            return False
        run.cancel_comment = comment
        run.grace = self._grace if grace is None else grace
        if run.process is not None:
            run.stopping = self._spawn(run.process.terminate(run.grace))
        # else: it is being spawned; _start terminates it as soon as it exists.
        return True

    async def cancel_command(self, name: str, comment: str | None = None, *,
                             grace: float | None = None) -> int:
        """Cancel every active run of ``name``; returns how many."""
        entry = self._entry(name)
        return await self._cancel_runs([r.run_id for r in entry.active], comment or "cancelled",
                                       grace)

    async def cancel_all(self, comment: str | None = None, *,
                         grace: float | None = None) -> int:
        return await self._cancel_runs(list(self._runs), comment or "cancelled", grace)

    # ------------------------------------------------------------------ queries
    def get_status(self, name: str) -> CommandStatus:
        entry = self._entry(name)
        if entry.active:
            state = "running"
        elif entry.latest is None:
            state = "never_run"
        else:
            state = entry.latest.state.value
        return CommandStatus(state=state, active_count=len(entry.active), last_run=entry.latest)

    def get_history(self, name: str, limit: int = 10, run_key: str | None = None
                    ) -> list[RunResult]:
        """Finished runs, most recent first (of ``run_key`` only, if given; ``limit`` <= 0:
        all): from the records when they are durable, else those kept in memory."""
        entry = self._entry(name)
        if self._records.durable:
            return [self._adopt(r) for r in self._records.history(name, limit, run_key)]
        history = [r for r in reversed(entry.history) if run_key is None or r.run_key == run_key]
        return history[:limit] if limit > 0 else history

    def get_active_handles(self, name: str) -> list[RunHandle]:
        return [RunHandle(r) for r in self._entry(name).active]

    def get_all_active_handles(self) -> list[RunHandle]:
        return [RunHandle(r.result) for r in self._runs.values()]

    def get_handle_by_run_id(self, run_id: str) -> RunHandle | None:
        """A run in memory, else (durable records) a recorded one."""
        result = self._lookup_run(run_id)
        return RunHandle(result) if result is not None else None

    def _lookup_run(self, run_id: str) -> RunResult | None:
        result = self._by_id.get(run_id) or self._followed.get(run_id)
        if result is None and self._records.durable:
            stored = self._records.get(run_id)
            if stored is not None:
                result = self._adopt(stored)
        return result

    def _adopt(self, stored: RunResult) -> RunResult:
        """A run read from the records: the object in memory if this orchestrator has it;
        else the copy, followed until it ends if it is active (another process owns it)."""
        mine = self._by_id.get(stored.run_id) or self._followed.get(stored.run_id)
        if mine is not None:
            return mine
        if not stored.is_finalized and not self._is_shutdown:
            self._followed[stored.run_id] = stored
            task = self._spawn(self._follow(stored))
            self._followers.add(task)
            task.add_done_callback(self._followers.discard)
            task.add_done_callback(lambda _: self._followed.pop(stored.run_id, None))
        return stored

    async def _follow(self, result: RunResult) -> None:
        """Read a run another process owns again and again until its record is final (or
        gone); a dead owner makes it ``lost`` (:meth:`RunRecords.get`)."""
        delay, longest = FOLLOW_POLL
        while not result.is_finalized:
            await asyncio.sleep(delay)
            delay = min(delay * 2, longest)
            fresh = self._records.get(result.run_id)
            if fresh is None:
                return
            result.mirror(fresh)

    def forget_runs(self, run_ids: Iterable[str]) -> None:
        """Drop finished runs from memory (their records were deleted)."""
        ids = {i for i in run_ids if i not in self._runs}
        for entry in self._commands.values():
            kept = [r for r in entry.history if r.run_id not in ids]
            if len(kept) != len(entry.history):
                entry.history = deque(kept, maxlen=entry.history.maxlen)
                if entry.latest is not None and entry.latest.run_id in ids:
                    entry.latest = entry.history[-1] if entry.history else None
        for run_id in ids:
            self._by_id.pop(run_id, None)

    def get_trigger_graph(self) -> dict[str, list[str]]:
        """Trigger pattern → commands it starts."""
        graph: dict[str, list[str]] = {}
        for name, entry in self._commands.items():
            for trig in entry.config.triggers:
                graph.setdefault(trig, []).append(name)
        return graph

    def read_output(self, run_id: str, offset: int = 0, length: int | None = None) -> bytes:
        """Bytes of a run's output (live or finished, while it is known)."""
        return self._result(run_id).read_bytes(offset, length)

    def output_size(self, run_id: str) -> int:
        """Bytes of a run's output so far (the same as its snapshot's ``output_size``)."""
        return self._result(run_id).output_size

    def _result(self, run_id: str) -> RunResult:
        result = self._lookup_run(run_id)
        if result is None:
            raise KeyError(run_id)
        return result

    def tail(self, run_id: str, max_bytes: int = 4096) -> str:
        result = self._by_id.get(run_id)
        if result is None or result.capture is None:
            return ""
        return result.capture.tail(max_bytes)


def _local_executor() -> Executor:
    """The default executor. Imported here, not at module level: the core does not depend on
    :mod:`sidecar.adapters` (see :mod:`.ports`)."""
    from sidecar.adapters.local_process import LocalExecutor

    return LocalExecutor()


def _output_files_store(settings: OutputStorageConfig) -> RunStore:
    """The default run store (imported lazily, like :func:`_local_executor`)."""
    from sidecar.adapters.output_files import OutputFilesStore

    return OutputFilesStore(settings)


def _memory_records() -> RunRecords:
    """The default run records: this process's, in memory (imported lazily)."""
    from sidecar.adapters.sqlite_records import SQLiteRecords

    return SQLiteRecords(None)


def _split(command: str) -> list[str] | None:
    import shlex

    try:
        argv = shlex.split(command)
    except ValueError:
        return None
    return argv or None


def _spawn_error(resolved: ResolvedCommand, exc: OSError) -> str:
    if isinstance(exc, FileNotFoundError) and resolved.cwd and not Path(resolved.cwd).is_dir():
        return f"cannot start: working directory not found: {resolved.cwd}"
    program = resolved.argv[0] if resolved.argv else "/bin/sh"
    if isinstance(exc, FileNotFoundError):
        return f"cannot start: command not found: {program}"
    return f"cannot start {program}: {exc.strerror or exc}"


__all__ = ["CommandOrchestrator", "Event"]
