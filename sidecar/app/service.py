"""The service layer: every operation of the product, once.

:class:`Service` is what frontends call: the LSP handlers (``sidecar.frontends.lsp``), the
command line (``sidecar.frontends.cli``) and, later, the MCP server and the TUI. Each method
takes the typed params of :mod:`sidecar.app.protocol` and returns its typed result (the wire
form, unstructured with :func:`~sidecar.app.protocol.to_wire`); failures are
:class:`~sidecar.app.protocol.SidecarRpcError` with a documented code (protocol.md,
"Errors"), whatever the core raised. A frontend only translates: its transport's messages to
these calls, and results and errors back.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import os
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from sidecar.adapters.run_db import NotFound, RunDB, WrongState
from sidecar.core import (
    CmdorcError,
    CommandNotFoundError,
    CommandOrchestrator,
    ConcurrencyLimitError,
    DebounceError,
    OrchestratorShutdownError,
    RunNotFoundError,
    RunStateError,
    TriggerCycleError,
    VariableResolutionError,
)
from sidecar.core.problems import did_you_mean
from sidecar.core.runs import RunHandle, TriggerResult
from sidecar.core.savehooks import triggers_for_save
from sidecar.core.triggers import command_graph, emitted_events

from . import agents
from . import protocol as P

if TYPE_CHECKING:  # the host imports the app's wire types
    from sidecar.host.host import Host, Reload
    from sidecar.host.session import Session

logger = logging.getLogger("sidecar.app")

_P = ParamSpec("_P")
_R = TypeVar("_R")


def core_error(exc: CmdorcError) -> P.SidecarRpcError:
    """The protocol's error for a core exception."""
    if isinstance(exc, CommandNotFoundError):
        return P.SidecarRpcError(P.E_COMMAND_NOT_FOUND, str(exc))
    if isinstance(exc, ConcurrencyLimitError):
        return P.SidecarRpcError(P.E_CONCURRENCY_LIMIT, str(exc), {
            "command": exc.command_name, "activeCount": exc.active_count,
            "maxConcurrent": exc.max_concurrent})
    if isinstance(exc, DebounceError):
        return P.SidecarRpcError(P.E_DEBOUNCED, str(exc), {
            "command": exc.command_name, "debounceMs": exc.debounce_ms,
            "elapsedMs": round(exc.elapsed_ms, 1)})
    if isinstance(exc, VariableResolutionError):
        return P.SidecarRpcError(P.E_VARIABLE_ERROR, str(exc))
    if isinstance(exc, OrchestratorShutdownError):
        return P.SidecarRpcError(P.E_SHUTTING_DOWN, str(exc))
    if isinstance(exc, TriggerCycleError):
        return P.SidecarRpcError(P.E_TRIGGER_CYCLE, str(exc))
    if isinstance(exc, RunStateError):
        return P.SidecarRpcError(P.E_RUN_STATE, str(exc))
    if isinstance(exc, RunNotFoundError):
        return P.SidecarRpcError(P.E_RUN_NOT_FOUND, str(exc))
    return P.SidecarRpcError(P.E_INTERNAL, f"{type(exc).__name__}: {exc}")


def _operation(fn: Callable[_P, Awaitable[_R]]) -> Callable[_P, Awaitable[_R]]:
    """Core errors raised by an operation become protocol errors."""

    @functools.wraps(fn)
    async def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return await fn(*args, **kwargs)
        except CmdorcError as exc:
            raise core_error(exc) from None

    return wrapper


def _timeout(ms: int | None) -> float | None:
    return ms / 1000 if ms is not None else None


def _iso_ts(t: float) -> str:
    return dt.datetime.fromtimestamp(t).astimezone().isoformat()


def _parse_time(value: str | None, field: str) -> float | None:
    """An ISO 8601 time (local time without an offset) as Unix seconds."""
    if value is None:
        return None
    try:
        return dt.datetime.fromisoformat(value).timestamp()
    except ValueError:
        raise P.InvalidParams(field, f"not an ISO 8601 time: {value!r}") from None


class Service:
    """The operations on one host's workspace.

    ``started_by`` names who the operations are for (the runs' ``startedBy``) and ``agent``
    makes them obey the agent rules (:mod:`sidecar.app.agents`); plain attributes, so that
    a frontend can set them once it knows (the LSP frontend: at ``initialize``).
    """

    def __init__(self, host: Host, started_by: str | None = None, *,
                 agent: bool = False) -> None:
        self.host = host
        self.started_by = started_by
        self.agent = agent

    # ------------------------------------------------------------------ helpers
    def orchestrator(self) -> CommandOrchestrator:
        """The host's orchestrator, or the error every operation gives without one."""
        host = self.host
        if host.closing:
            raise P.SidecarRpcError(P.E_SHUTTING_DOWN, "the server is shutting down")
        if host.orchestrator is None:
            raise P.SidecarRpcError(
                P.E_NO_VALID_CONFIG,
                f"no valid configuration: {host.config_error or 'not loaded'}")
        return host.orchestrator

    def _names(self, o: CommandOrchestrator) -> list[str]:
        """The commands this session may see: every one, or an agent's."""
        names = o.list_commands()
        return [n for n in names if o.get_command(n).agent] if self.agent else names

    def _refuse_agent(self, method: str) -> None:
        if self.agent:
            raise agents.refused_method(method)

    def _command(self, name: str) -> CommandOrchestrator:
        """The orchestrator, once ``name`` is known to be one of its commands (visible to
        this session)."""
        o = self.orchestrator()
        names = self._names(o)
        if name not in names:
            hint = did_you_mean(name, names) or (f"; commands: {', '.join(names)}"
                                                  if names else "; no commands are configured")
            raise P.SidecarRpcError(P.E_COMMAND_NOT_FOUND, f"unknown command {name!r}{hint}",
                                    {"command": name})
        return o

    def _handle(self, run_id: str) -> RunHandle:
        o = self.orchestrator()
        handle = o.get_handle_by_run_id(run_id)
        if handle is None or (self.agent and handle.command_name not in self._names(o)):
            raise P.SidecarRpcError(P.E_RUN_NOT_FOUND, f"no run with id {run_id!r}",
                                    {"runId": run_id})
        return handle

    @staticmethod
    async def _waited(handle: RunHandle, timeout_ms: int | None) -> bool:
        """Wait for the run to end; True if ``timeout_ms`` passed first."""
        try:
            await handle.wait(_timeout(timeout_ms))
        except TimeoutError:
            return True
        return False

    async def _started(self, handle: RunHandle, wait: bool,
                       timeout_ms: int | None) -> P.RunResultWire:
        """The answer to a start (``sidecar/run``, ``sidecar/rerun``)."""
        timed_out = await self._waited(handle, timeout_ms) if wait else False
        return P.RunResultWire(run=P.RunInfo.of(handle.result.snapshot()), timed_out=timed_out,
                               existing=handle.existing,
                               strict_override_used=handle.strict_override_used)

    def _records(self) -> RunDB:
        """The run records' rules (``sidecar/unlock``, ``sidecar/clean``)."""
        self.orchestrator()
        records = self.host.records
        assert records is not None  # created with the orchestrator
        return records.db

    @staticmethod
    def _triggered(res: TriggerResult) -> P.TriggerResultWire:
        return P.TriggerResultWire(
            event=res.event, started=[P.RunInfo.of(h.result.snapshot()) for h in res.started],
            skipped=[P.SkippedInfo(c, r, m) for c, r, m in res.skipped],
            cancelled=list(res.cancelled))

    # ------------------------------------------------------------------ operations
    @_operation
    async def commands(self, p: P.NoParams | None = None) -> P.CommandsResult:
        o = self.orchestrator()
        out = []
        for name in self._names(o):
            c = o.get_command(name)
            out.append(P.CommandInfo(
                name=name, command=c.command, triggers=list(c.triggers),
                cancel_on_triggers=list(c.cancel_on_triggers), max_concurrent=c.max_concurrent,
                on_retrigger=c.on_retrigger, debounce_in_ms=c.debounce_in_ms,
                timeout_secs=c.timeout_secs, state=o.get_status(name).state,
                active_run_ids=[h.run_id for h in o.get_active_handles(name)],
                source=o.config.sources.get(name), description=c.description, agent=c.agent,
                variables=[P.VariableInfo(n, d) for n, d in o.command_variables(name).items()]))
        return P.CommandsResult(commands=out, config_files=self._files(),
                                on_save=dict(o.config.on_save))

    @_operation
    async def trigger(self, p: P.TriggerParams) -> P.TriggerResultWire:
        o = self.orchestrator()
        exclude = None
        if self.agent:
            agents.check_event(p.event)
            starts, cancels = o.listeners(p.event)
            hidden = [n for n in (*starts, *cancels) if not o.get_command(n).agent]
            exclude = {n: (agents.HIDDEN, f"{n!r} is hidden from agents (agent = false)")
                       for n in hidden}
            accepted = {v for n in starts if n not in exclude for v in o.command_variables(n)}
            agents.check_vars(p.vars or {}, accepted, f"the commands {p.event!r} starts")
        return self._triggered(await o.trigger(p.event, vars=p.vars, started_by=self.started_by,
                                               exclude=exclude))

    @_operation
    async def run(self, p: P.RunParams) -> P.RunResultWire:
        if p.run_key is not None and not p.run_key.strip():
            raise P.InvalidParams("runKey", "must not be empty")
        if p.strict and p.run_key is None:
            raise P.InvalidParams("strict", "needs a runKey")
        self._agent_vars(p.command, p.vars)
        handle = await self._command(p.command).run_command(
            p.command, vars=p.vars, started_by=self.started_by, run_key=p.run_key,
            strict=p.strict)
        return await self._started(handle, p.wait, p.timeout_ms)

    def _agent_vars(self, command: str, vars: dict[str, str] | None) -> None:
        """An agent's runtime variables for ``command`` (nothing to check for others)."""
        if self.agent:
            o = self._command(command)
            agents.check_vars(vars or {}, o.command_variables(command), repr(command))

    @_operation
    async def rerun(self, p: P.RerunParams) -> P.RunResultWire:
        o = self.orchestrator()
        run_id = p.run_id
        if (run_id is None) == (p.run_key is None):
            raise P.InvalidParams("runId", "give either runId, or command and runKey")
        if run_id is None:
            if p.command is None:
                raise P.InvalidParams("command", "runKey needs its command")
            self._command(p.command)
            latest = o.get_history(p.command, 1, p.run_key)
            if not latest:
                raise P.SidecarRpcError(
                    P.E_RUN_NOT_FOUND, f"no finished run of {p.command!r} with run key "
                    f"{p.run_key!r}", {"command": p.command, "runKey": p.run_key})
            run_id = latest[0].run_id
        elif self.agent:
            self._handle(run_id)
        handle = await o.rerun(run_id, reason=p.reason, started_by=self.started_by)
        return await self._started(handle, p.wait, p.timeout_ms)

    @_operation
    async def unlock(self, p: P.UnlockParams) -> P.UnlockResult:
        self._refuse_agent(P.M_UNLOCK)
        self._command(p.command)
        if p.ttl_secs is not None and p.ttl_secs <= 0:
            raise P.InvalidParams("ttlSecs", "must be positive")
        try:
            u = self._records().unlock(p.command, p.run_key, p.reason, p.ttl_secs)
        except NotFound as exc:
            raise P.SidecarRpcError(P.E_RUN_NOT_FOUND, str(exc),
                                    {"command": p.command, "runKey": p.run_key}) from None
        except WrongState as exc:
            raise P.SidecarRpcError(P.E_RUN_STATE, str(exc)) from None
        return P.UnlockResult(command=u.command, run_key=u.run_key, reason=u.reason,
                              allowed_at=_iso_ts(u.allowed_at),
                              expires_at=_iso_ts(u.expires_at) if u.expires_at else None)

    @_operation
    async def clean(self, p: P.CleanParams) -> P.CleanResult:
        self._refuse_agent(P.M_CLEAN)
        o = self.orchestrator()
        try:
            cleaned = self._records().clean(
                before=_parse_time(p.before, "before"), after=_parse_time(p.after, "after"),
                all=p.all, run_id=p.run_id, command=p.command, run_key=p.run_key,
                dry_run=p.dry_run)
        except ValueError as exc:
            raise P.InvalidParams("runId" if p.run_id else "all", str(exc)) from None
        if not cleaned.dry_run:
            o.forget_runs(r.run_id for r in cleaned.runs)
        return P.CleanResult(
            deleted=0 if cleaned.dry_run else len(cleaned.runs), dry_run=cleaned.dry_run,
            runs=[P.CleanedRun(r.run_id, r.command, r.run_key, r.state,
                               _iso_ts(r.end_time) if r.end_time else None)
                  for r in cleaned.runs],
            errors=cleaned.errors)

    @_operation
    async def wait(self, p: P.WaitParams) -> P.WaitResult:
        handle = self._handle(p.run_id)
        if not p.chain:
            timed_out = await self._waited(handle, p.timeout_ms)
            return P.WaitResult(run=P.RunInfo.of(handle.result.snapshot()), timed_out=timed_out)
        runs = await self.orchestrator().wait_chain([p.run_id], _timeout(p.timeout_ms))
        return P.WaitResult(run=P.RunInfo.of(handle.result.snapshot()),
                            timed_out=not all(r.is_finalized for r in runs),
                            runs=[P.RunInfo.of(r.snapshot()) for r in runs])

    @_operation
    async def cancel(self, p: P.CancelParams) -> P.CancelResult:
        given = [k for k, v in (("runId", p.run_id), ("command", p.command),
                                ("all", p.all or None)) if v is not None]
        if len(given) != 1:
            raise P.InvalidParams("runId", "give exactly one of runId, command, all: true")
        if p.run_key is not None and p.command is None:
            raise P.InvalidParams("runKey", "runKey needs its command")
        if p.grace_secs is not None and p.grace_secs < 0:
            raise P.InvalidParams("graceSecs", "must be >= 0")
        o = self.orchestrator()
        why, grace = p.reason or "cancelled by client", p.grace_secs
        if p.run_id is not None:
            self._handle(p.run_id)
            n = int(await o.cancel_run(p.run_id, why, grace=grace))
        elif p.command is not None and p.run_key is not None:
            ids = [h.run_id for h in self._command(p.command).get_active_handles(p.command)
                   if h.result.run_key == p.run_key]
            n = sum([await o.cancel_run(i, why, grace=grace) for i in ids])
        elif p.command is not None:
            n = await self._command(p.command).cancel_command(p.command, why, grace=grace)
        elif self.agent:
            n = sum([await o.cancel_command(c, why, grace=grace) for c in self._names(o)])
        else:
            n = await o.cancel_all(why, grace=grace)
        return P.CancelResult(cancelled=n)

    @_operation
    async def status(self, p: P.StatusParams) -> P.StatusResult:
        o = self.orchestrator()
        names = [p.command] if p.command is not None else self._names(o)
        if p.command is not None:
            self._command(p.command)
        out = []
        for name in names:
            st = o.get_status(name)
            last = st.last_run.snapshot() if st.last_run is not None else None
            out.append(P.CommandStatusInfo(
                name=name, state=st.state, active_count=st.active_count,
                active_runs=[P.RunInfo.of(h.result.snapshot())
                             for h in o.get_active_handles(name)],
                last_run=P.RunInfo.of(last) if last is not None else None))
        return P.StatusResult(commands=out)

    @_operation
    async def history(self, p: P.HistoryParams) -> P.HistoryResult:
        runs = self._command(p.command).get_history(p.command, p.limit, p.run_key)
        return P.HistoryResult(runs=[P.RunInfo.of(r.snapshot()) for r in runs])

    @_operation
    async def read_output(self, p: P.ReadOutputParams) -> P.ReadOutputResult:
        if p.offset < 0:
            raise P.InvalidParams("offset", "must be >= 0")
        if p.length is not None and p.length < 0:
            raise P.InvalidParams("length", "must be >= 0")
        o = self.orchestrator()
        final = self._handle(p.run_id).is_finalized
        length = min(p.length if p.length is not None else P.READ_OUTPUT_MAX, P.READ_OUTPUT_MAX)
        try:
            total = o.output_size(p.run_id)
            data = o.read_output(p.run_id, p.offset, length)
        except KeyError:
            raise P.SidecarRpcError(P.E_RUN_NOT_FOUND, f"no run with id {p.run_id!r}",
                                    {"runId": p.run_id}) from None
        # The response stays within ~2 × length bytes whatever the output is (6 bytes of
        # JSON per invalid byte or control character otherwise).
        text, size = P.wire_text(data, 2 * length, end=final and p.offset + len(data) >= total)
        return P.ReadOutputResult(run_id=p.run_id, text=text, offset=p.offset, size=size,
                                  total_size=total, final=final)

    @_operation
    async def preview(self, p: P.PreviewParams) -> P.PreviewResult:
        self._agent_vars(p.command, p.vars)
        o = self._command(p.command)
        rc = o.preview_command(p.command, vars=p.vars)
        env = {k: rc.env[k] for k in o.get_command(p.command).env}
        return P.PreviewResult(command=p.command, resolved=rc.command, cwd=rc.cwd,
                               vars=dict(rc.vars), argv=rc.argv, timeout_secs=rc.timeout_secs,
                               env=env)

    @_operation
    async def graph(self, p: P.NoParams | None = None) -> P.TriggerGraphResult:
        self._refuse_agent(P.M_TRIGGER_GRAPH)
        o = self.orchestrator()
        names = o.list_commands()
        triggers = {n: list(o.get_command(n).triggers) for n in names}
        cancels: dict[str, list[str]] = {}
        for name in names:
            for t in o.get_command(name).cancel_on_triggers:
                cancels.setdefault(t, []).append(name)
        edges = [P.GraphEdge(source=a, target=b, event=event)
                 for a, out in command_graph(triggers).items() for b, event in out]
        emitted = emitted_events(triggers)
        external = sorted({t for ts in triggers.values() for t in ts if t not in emitted})
        return P.TriggerGraphResult(triggers=o.get_trigger_graph(), cancels=cancels,
                                    on_save=dict(o.config.on_save), commands=names,
                                    edges=edges, external=external)

    async def reload(self, p: P.NoParams | None = None) -> P.ReloadResult:
        self._refuse_agent(P.M_RELOAD)
        if self.host.closing:
            raise P.SidecarRpcError(P.E_SHUTTING_DOWN, "the server is shutting down")
        return self._reloaded(self.host.reload())

    def _reloaded(self, outcome: Reload) -> P.ReloadResult:
        orch = self.host.orchestrator
        commands = orch.list_commands() if orch is not None else []
        return P.ReloadResult(ok=outcome.ok, commands=commands, config_files=outcome.files,
                              message=outcome.error or "")

    async def save(self, p: P.SaveParams) -> P.SaveResult:
        """Saved files: a config file reloads the configuration; any other fires the
        ``[on_save]`` triggers its path matches (a save reported twice with the same mtime
        fires once)."""
        self._refuse_agent(P.M_SAVE)
        host = self.host
        result = P.SaveResult(triggered=[])
        for raw in p.paths:
            path = (host.root / raw).resolve()
            problem = P.text_problem(str(path))
            if problem is not None:  # it would become the runtime variable saved_file
                result.ignored.append(P.IgnoredSave(raw, "bad-path", f"the path {problem}"))
                continue
            if host.closing:
                result.ignored.append(P.IgnoredSave(raw, "shutting-down", "the server is shutting down"))
                continue
            if host.config_files.is_config_file(path):
                result.reloaded = self._reloaded(host.reload())
                continue
            orch, cfg = host.orchestrator, host.config
            if orch is None or cfg is None:
                result.ignored.append(P.IgnoredSave(raw, "no-config", "no valid configuration"))
                continue
            try:
                mtime: int | None = path.stat().st_mtime_ns
            except OSError:
                mtime = None
            key = str(path)
            if mtime is not None and host.saves.get(key) == mtime:
                result.ignored.append(P.IgnoredSave(raw, "duplicate", "this save was already handled"))
                continue
            host.saves[key] = mtime
            if len(host.saves) > 4096:
                host.saves.clear()
            base = (cfg.base_dir or host.root).resolve()
            triggers, save_vars = triggers_for_save(cfg.on_save, base, path)
            if not triggers:
                result.ignored.append(P.IgnoredSave(raw, "no-match", "no [on_save] glob matches"))
            for t in triggers:
                try:
                    result.triggered.append(self._triggered(await orch.trigger(
                        t, vars=save_vars, started_by=self.started_by)))
                except CmdorcError as exc:
                    result.ignored.append(P.IgnoredSave(raw, "error", f"{t}: {exc}"))
        return result

    async def set_output_filter(self, session: Session,
                                p: P.SetOutputFilterParams) -> P.OutputFilterResult:
        """Which runs' output chunks this session gets."""
        session.streamer.set_filter(p.enabled, p.commands, p.run_ids)
        return P.OutputFilterResult(enabled_default=session.streamer.default_enabled)

    def _files(self) -> list[str]:
        return [str(f) for f in self.host.config_files.files]

    def operations(self) -> dict[str, tuple[type[Any], Callable[[Any], Awaitable[Any]]]]:
        """Method name (protocol.md) → (params type, operation), for frontends that dispatch
        by name. ``sidecar/setOutputFilter`` is not here: it acts on a session."""
        return {
            P.M_COMMANDS: (P.NoParams, self.commands),
            P.M_TRIGGER: (P.TriggerParams, self.trigger),
            P.M_RUN: (P.RunParams, self.run),
            P.M_WAIT: (P.WaitParams, self.wait),
            P.M_CANCEL: (P.CancelParams, self.cancel),
            P.M_STATUS: (P.StatusParams, self.status),
            P.M_HISTORY: (P.HistoryParams, self.history),
            P.M_READ_OUTPUT: (P.ReadOutputParams, self.read_output),
            P.M_PREVIEW: (P.PreviewParams, self.preview),
            P.M_TRIGGER_GRAPH: (P.NoParams, self.graph),
            P.M_RELOAD: (P.NoParams, self.reload),
            P.M_SAVE: (P.SaveParams, self.save),
            P.M_RERUN: (P.RerunParams, self.rerun),
            P.M_UNLOCK: (P.UnlockParams, self.unlock),
            P.M_CLEAN: (P.CleanParams, self.clean),
        }

    async def host_info(self, session: Session | None = None) -> P.HostInfoResult:
        """``sidecar/hostInfo`` (``session``: the one asking)."""
        from sidecar import __version__

        host = self.host
        records = host.records
        sessions = sorted(host.sessions, key=lambda s: (s is not session, s.client_name or ""))
        return P.HostInfoResult(
            version=__version__, protocol_version=P.PROTOCOL_VERSION, pid=os.getpid(),
            socket=host.socket_path, root=str(host.root),
            config_files=[str(p) for p in host.config_files.files],
            started_at=host.started_at.isoformat(),
            sessions=[P.SessionInfo(s.client_name, s is session) for s in sessions],
            active_runs=[P.RunInfo.of(h.result.snapshot()) for h in host.active_runs()],
            records=str(records.db.path) if records and records.db.path else None,
            records_problem=records.problem if records else None)


__all__ = ["Service", "core_error"]
