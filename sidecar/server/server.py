"""The sidecar language server: a thin translation layer between LSP-framed JSON-RPC on stdio and
:class:`~sidecar.core.CommandOrchestrator` (requests → core calls, core events →
notifications). The wire format is normative in ``protocol.md``; names and types are in
:mod:`sidecar.server.protocol`.

The config file as a document lives in two modules: ``workspace_config.ConfigWorkspace``
tracks the config files (unsaved editor text wins over disk), publishes diagnostics and
``reload()`` reloads the configuration (None when broken: the last good one stays in use, runs in
flight continue); ``config_features`` adds symbols, code lenses, hover, completion and
definition. The server reloads on ``initialized``, on ``sidecar/reload`` and when a config file
is saved or changes on disk.

I/O: :mod:`sidecar.server.io` (asyncio pipe transports with flow control; a stalled client
never blocks the event loop). Validation of incoming messages and error responses:
:mod:`sidecar.server.rpc`. Output chunks: :mod:`sidecar.server.streams`.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import datetime as dt
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, BinaryIO

from lsprotocol import types as lsp
from pygls.exceptions import JsonRpcException
from pygls.lsp.server import LanguageServer
from pygls.uris import to_fs_path

from sidecar.core import (
    CmdorcError,
    CommandNotFoundError,
    CommandOrchestrator,
    ConcurrencyLimitError,
    DebounceError,
    OrchestratorShutdownError,
    RunnerConfig,
    TriggerCycleError,
    VariableResolutionError,
    format_duration,
)
from sidecar.core.config import find_config_files
from sidecar.core.events import Event, OutputEvent, RunEvent, TriggerEvent
from sidecar.core.runs import RunHandle, RunResult
from sidecar.core.savehooks import triggers_for_save

from . import protocol as P
from .config_features import register as register_config_features
from .io import Writer, open_stdio
from .rpc import LOCAL_ONLY, SidecarProtocol, frame
from .streams import ChunkStreamer
from .workspace_config import ConfigWorkspace
from .workspace_config import register as register_config_sync

logger = logging.getLogger("sidecar.server")

FINAL = frozenset(P.FINAL_STATES)
PROGRESS_INTERVAL = 0.2  # at most 5 reports per second per run
PROGRESS_CREATE_TIMEOUT = 5.0  # a client that never answers workDoneProgress/create


def _uri_path(uri: str) -> Path | None:
    try:
        fs = to_fs_path(uri)
    except Exception:
        return None
    return Path(fs).resolve() if fs else None


def _iso(t: dt.datetime | None) -> str | None:
    return t.isoformat() if t is not None else None


class _Gate:
    """Holds notifications caused by a request until its response has been written."""

    __slots__ = ("open", "items", "runs")

    def __init__(self) -> None:
        self.open = False
        self.items: list[bytes] = []
        self.runs: set[str] = set()


_gate_var: contextvars.ContextVar[_Gate | None] = contextvars.ContextVar("sidecar_gate",
                                                                        default=None)


class _RunProgress:
    __slots__ = ("token", "title", "message", "last_line", "changed", "done", "final", "task")

    def __init__(self, token: str, title: str, message: str) -> None:
        self.token = token
        self.title = title
        self.message = message
        self.last_line = ""
        self.changed = asyncio.Event()
        self.done = asyncio.Event()
        self.final: RunEvent | None = None
        self.task: asyncio.Task[None] | None = None


class SidecarServer(LanguageServer):
    protocol: SidecarProtocol

    def __init__(self) -> None:
        from sidecar import __version__

        super().__init__("cmdsidecar", __version__, protocol_cls=SidecarProtocol)
        self.root: Path = Path.cwd()
        self.options = P.InitializationOptions()
        self.orchestrator: CommandOrchestrator | None = None
        self.config: RunnerConfig | None = None
        self.config_error: str | None = None
        self.config_workspace: ConfigWorkspace | None = None
        self.writer: Writer | None = None
        self.streamer = ChunkStreamer(self._emit_chunk, self._pending_bytes, interval_ms=30,
                                      max_bytes=32768, max_pending=4 << 20, enabled=True)
        self._progress_enabled = False
        self._progress: dict[str, _RunProgress] = {}
        self._gates: dict[Any, _Gate] = {}
        self._held_runs: dict[str, _Gate] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._remove_listener: Callable[[], None] | None = None
        self._stop: asyncio.Event | None = None
        self._exit_code = 0
        self._received = False  # any message yet (end of input before one is not an error)
        self._shutting_down = False
        self._fired: dict[str, int | None] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    # ================================================================= properties / seam
    @property
    def config_files(self) -> list[Path]:
        if self.config_workspace is not None:
            return list(self.config_workspace.files)
        if self.options.config_files:
            return [(self.root / p).resolve() for p in self.options.config_files]
        return [p.resolve() for p in find_config_files(self.root)]

    def get_orchestrator(self) -> CommandOrchestrator | None:
        return self.orchestrator

    # ================================================================= output plumbing
    def _pending_bytes(self) -> int:
        return self.writer.pending_bytes if self.writer is not None else 0

    def _emit(self, method: str, params: Any, run_id: str | None = None) -> None:
        """Send a notification, unless it must wait for a response (see ``_Gate``)."""
        gate = self._held_runs.get(run_id) if run_id is not None else None
        if gate is None:
            g = _gate_var.get()
            if g is not None and not g.open:
                gate = g
                if run_id is not None:
                    g.runs.add(run_id)
                    self._held_runs[run_id] = g
        data = frame({"jsonrpc": "2.0", "method": method, "params": params})
        if gate is not None and not gate.open:
            gate.items.append(data)
        elif self.writer is not None:
            self.writer.write(data)

    def _emit_chunk(self, method: str, params: dict[str, Any]) -> None:
        self._emit(method, params, params["runId"])

    def _open_gate(self) -> None:
        msg_id = self.protocol.msg_id
        if msg_id is None:
            return
        gate = _Gate()
        self._gates[msg_id] = gate
        _gate_var.set(gate)

    def _response_sent(self, msg_id: Any) -> None:
        gate = self._gates.pop(msg_id, None)
        if gate is not None:
            self._release(gate)

    def _release(self, gate: _Gate) -> None:
        gate.open = True
        for r in gate.runs:
            if self._held_runs.get(r) is gate:
                del self._held_runs[r]
        items, gate.items = gate.items, []
        if self.writer is not None:
            for data in items:
                self.writer.write(data)

    def show(self, kind: lsp.MessageType, message: str) -> None:
        self.window_show_message(lsp.ShowMessageParams(type=kind, message=message))

    def spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ================================================================= core events
    def _on_event(self, ev: Event) -> None:
        if isinstance(ev, OutputEvent):
            self.streamer.on_output(ev)
            return
        orch = self.orchestrator
        if isinstance(ev, RunEvent):
            if ev.previous is None:
                self.streamer.start_run(ev.run_id, ev.command)
                if self._progress_enabled:
                    self._start_progress(ev)
            final = ev.state in FINAL
            if final:
                self.streamer.finish(ev.run_id)
            size = 0
            if orch is not None:
                with contextlib.suppress(KeyError):
                    size = orch.output_size(ev.run_id)
            upd = P.RunUpdate(
                run_id=ev.run_id, command=ev.command, state=ev.state,
                trigger_chain=list(ev.trigger_chain), trigger_event=ev.trigger_event,
                exit_code=ev.exit_code, start_time=_iso(ev.start_time),
                end_time=_iso(ev.end_time), duration_secs=ev.duration_secs, comment=ev.comment,
                error=ev.error, resolved_command=ev.resolved_command, output_size=size,
                output_file=ev.output_file, previous=ev.previous)
            self._emit(P.N_RUN_UPDATE, P.to_wire(upd), ev.run_id)
            if final:
                prog = self._progress.get(ev.run_id)
                if prog is not None:
                    prog.final = ev
                    prog.changed.set()
                    prog.done.set()
            return
        if isinstance(ev, TriggerEvent):
            note = P.EventNotification(name=ev.name, kind=ev.kind, chain=list(ev.chain),
                                       time=ev.time.isoformat(), run_id=ev.run_id,
                                       command=ev.command)
            self._emit(P.N_EVENT, P.to_wire(note), ev.run_id)

    # ================================================================= progress
    def _start_progress(self, ev: RunEvent) -> None:
        chain = " → ".join(ev.trigger_chain) if ev.trigger_chain else "manual run"
        prog = _RunProgress(f"sidecar/run/{ev.run_id}", ev.command, chain)
        self._progress[ev.run_id] = prog
        prog.task = self.spawn(self._progress_task(ev.run_id, prog))

    def _on_line(self, run_id: str, line: str) -> None:
        prog = self._progress.get(run_id)
        if prog is not None:
            prog.last_line = line
            prog.changed.set()

    async def _progress_task(self, run_id: str, prog: _RunProgress) -> None:
        wdp = self.work_done_progress
        try:
            await asyncio.sleep(0)  # let the response of the request that started it go first
            try:
                await asyncio.wait_for(wdp.create_async(prog.token), PROGRESS_CREATE_TIMEOUT)
            except Exception as exc:
                logger.debug("progress token refused: %s", exc)
                return
            wdp.begin(prog.token, lsp.WorkDoneProgressBegin(
                title=prog.title, message=prog.message, cancellable=True))
            fut = wdp.tokens.get(prog.token)
            if fut is not None:
                fut.add_done_callback(lambda f: self._progress_cancelled(run_id, f))
            last_report = ""
            while prog.final is None:
                await prog.changed.wait()
                prog.changed.clear()
                if prog.final is not None:
                    break
                if prog.last_line != last_report:
                    last_report = prog.last_line
                    wdp.report(prog.token, lsp.WorkDoneProgressReport(message=last_report))
                with contextlib.suppress(TimeoutError):
                    # throttle reports; an end is never delayed by it
                    await asyncio.wait_for(prog.done.wait(), PROGRESS_INTERVAL)
            ev = prog.final
            dur = format_duration(ev.duration_secs) if ev.duration_secs is not None else "-"
            msg = f"{ev.state} in {dur}"
            if ev.exit_code is not None and ev.state == "failed":
                msg += f" (exit {ev.exit_code})"
            wdp.end(prog.token, lsp.WorkDoneProgressEnd(message=msg))
        finally:
            self._progress.pop(run_id, None)
            wdp.tokens.pop(prog.token, None)

    def _progress_cancelled(self, run_id: str, fut: Any) -> None:
        if fut.cancelled() and self.orchestrator is not None:
            self.spawn(self.orchestrator.cancel_run(run_id, "cancelled from progress"))

    # ================================================================= config
    def _load_config_workspace(self) -> None:
        explicit = [Path(p) for p in self.options.config_files] or None
        ws = ConfigWorkspace(self, self.root, explicit)
        register_config_sync(self, ws)
        register_config_features(self, ws, self.get_orchestrator)
        self.config_workspace = ws

    def _config_problem(self, ws: ConfigWorkspace) -> str:
        """Why the last reload gave no config, for the user's message."""
        if ws.last_error:
            return ws.last_error
        problems = ws.errors()
        lines = [p.format() for p in problems[:5]]
        more = f" (+{len(problems) - 5} more)" if len(problems) > 5 else ""
        return "; ".join(lines) + more if lines else "the configuration is invalid"

    def reload(self) -> P.ReloadResult:
        """Reload the configuration; on failure keep the last good one and tell the user."""
        ws = self.config_workspace
        assert ws is not None, "reload before initialize"
        err: str | None
        try:
            cfg = ws.reload()
        except Exception as exc:
            logger.exception("config reload failed")
            cfg, err = None, f"{type(exc).__name__}: {exc}"
        else:
            err = self._config_problem(ws) if cfg is None else None
        if cfg is not None:
            try:
                if self.orchestrator is None:
                    orch = CommandOrchestrator(cfg)
                    self.orchestrator = orch
                    self._remove_listener = orch.add_listener(self._on_event)
                    self.spawn(orch.startup())
                else:
                    self.orchestrator.reload_config(cfg)
            except CmdorcError as exc:
                cfg, err = None, str(exc)
        files = [str(p) for p in self.config_files]
        if cfg is None:
            err = err or "the configuration is invalid"
            self.config_error = err
            keep = ("; keeping the previous configuration" if self.orchestrator is not None
                    else "; sidecar requests fail until a valid config is loaded")
            self.show(lsp.MessageType.Error, f"sidecar: config not loaded: {err}{keep}")
            cmds = self.orchestrator.list_commands() if self.orchestrator else []
            return P.ReloadResult(ok=False, commands=cmds, config_files=files, message=err)
        self.config = cfg
        self.config_error = None
        assert self.orchestrator is not None
        return P.ReloadResult(ok=True, commands=self.orchestrator.list_commands(),
                              config_files=files)

    # ================================================================= save hooks
    async def on_saved(self, uri: str) -> None:
        path = _uri_path(uri)
        if path is None:
            return
        problem = P.text_problem(str(path))
        if problem is not None:  # it would become the runtime variable saved_file
            logger.warning("ignoring the save of %a: the path %s", str(path), problem)
            return
        ws = self.config_workspace
        if ws is not None and ws.is_config_file(uri):
            self.reload()
            return
        orch, cfg = self.orchestrator, self.config
        if orch is None or cfg is None or not cfg.on_save or self._shutting_down:
            return
        try:
            mtime: int | None = path.stat().st_mtime_ns
        except OSError:
            mtime = None
        key = str(path)
        if mtime is not None and self._fired.get(key) == mtime:
            return  # same save reported twice (didSave + didChangeWatchedFiles)
        self._fired[key] = mtime
        if len(self._fired) > 4096:
            self._fired.clear()
        triggers, save_vars = triggers_for_save(cfg.on_save, (cfg.base_dir or self.root).resolve(),
                                                path)
        for t in triggers:
            try:
                await orch.trigger(t, vars=save_vars)
            except CmdorcError as exc:
                logger.warning("save hook %s for %s: %s", t, path, exc)

    # ================================================================= lifecycle
    def _request_stop(self, code: int) -> None:
        self._exit_code = code
        if self._stop is not None:
            self._stop.set()

    def _on_eof(self) -> None:
        if self._stop is not None and not self._stop.is_set():
            logger.info("client gone (stdin closed); stopping")
            self._exit_code = 0 if self.protocol._shutdown or not self._received else 1
            self._stop.set()

    async def shutdown_core(self, timeout: float = 5.0) -> None:
        self._shutting_down = True
        orch = self.orchestrator
        if orch is not None and not orch.is_shutdown:
            try:
                await asyncio.wait_for(orch.shutdown(timeout=timeout), timeout + 5)
            except Exception:
                logger.exception("orchestrator shutdown failed")

    def _on_body(self, body: bytes) -> None:
        self._received = True
        self.protocol.receive(body)

    async def run_stdio(self, stdin: BinaryIO, stdout: BinaryIO) -> int:
        loop = asyncio.get_running_loop()
        _use_pidfd_child_watcher(loop)
        self._loop = loop
        self._stop = asyncio.Event()

        self.writer = await open_stdio(stdin, stdout, self._on_body, self._on_eof,
                                       self._on_eof)
        self.protocol.set_writer(self.writer)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, self._request_stop, 0)
        try:
            await self._stop.wait()
        finally:
            await self.shutdown_core()
            self.streamer.close()
            for task in list(self._tasks):
                task.cancel()
            if self._tasks:
                await asyncio.wait(list(self._tasks), timeout=1.0)
            for gate in list(self._gates.values()):
                self._release(gate)
            await self.writer.drain(2.0)
        return self._exit_code


def _use_pidfd_child_watcher(loop: asyncio.AbstractEventLoop) -> None:
    """Python 3.11 waits for each child in a thread of its own; a pidfd watcher (the default
    from 3.12 on) waits in the event loop instead, which makes short runs cheaper."""
    if sys.version_info >= (3, 12) or not sys.platform.startswith("linux"):
        return
    try:
        watcher = asyncio.PidfdChildWatcher()
        watcher.attach_loop(loop)
        asyncio.set_child_watcher(watcher)
    except (OSError, AttributeError, NotImplementedError):
        logger.debug("pidfd child watcher not available", exc_info=True)


# ===================================================================== handlers

def _core_error(exc: CmdorcError) -> P.SidecarRpcError:
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
    return P.SidecarRpcError(P.E_INTERNAL, f"{type(exc).__name__}: {exc}")


def _run_info(r: RunResult) -> P.RunInfo:
    rc = r.resolved_command
    return P.RunInfo(
        run_id=r.run_id, command=r.command_name, state=r.state.value,
        trigger_chain=list(r.trigger_chain), trigger_event=r.trigger_event,
        exit_code=r.exit_code, start_time=_iso(r.start_time), end_time=_iso(r.end_time),
        duration_secs=r.duration_secs if r.is_finalized else None, comment=r.comment,
        error=str(r.error) if r.error is not None else None,
        resolved_command=rc.command if rc else None,
        output_size=r.capture.size if r.capture is not None else 0,
        output_file=str(r.output_file) if r.output_file else None)


Handler = Callable[[Any], Awaitable[Any]]


def create_server() -> SidecarServer:
    """A configured :class:`SidecarServer` (not started; see :func:`serve`)."""
    server = SidecarServer()

    def orch() -> CommandOrchestrator:
        o = server.orchestrator
        if server._shutting_down or (o is not None and o.is_shutdown):
            raise P.SidecarRpcError(P.E_SHUTTING_DOWN, "the server is shutting down")
        if o is None:
            raise P.SidecarRpcError(P.E_NO_VALID_CONFIG,
                                    f"no valid configuration: {server.config_error or 'not loaded'}")
        return o

    def rpc(method: str, cls: type[Any], gate: bool = False
            ) -> Callable[[Callable[[Any], Awaitable[Any]]], Handler]:
        def deco(fn: Callable[[Any], Awaitable[Any]]) -> Handler:
            async def handler(params: Any) -> Any:
                try:
                    p = P.parse_params(cls, params)
                    if gate:
                        server._open_gate()
                    return P.to_wire(await fn(p))
                except P.SidecarRpcError as exc:
                    raise JsonRpcException(exc.message, exc.code, exc.data) from None
                except CmdorcError as exc:
                    e = _core_error(exc)
                    raise JsonRpcException(e.message, e.code, e.data) from None
            server.feature(method)(handler)
            return handler
        return deco

    def get_handle(run_id: str) -> RunHandle:
        h = orch().get_handle_by_run_id(run_id)
        if h is None:
            raise P.SidecarRpcError(P.E_RUN_NOT_FOUND, f"no run with id {run_id!r}",
                                    {"runId": run_id})
        return h

    # ------------------------------------------------------------------ lifecycle features
    @server.feature(lsp.INITIALIZE)
    def initialize(params: lsp.InitializeParams) -> None:
        root = None
        if params.workspace_folders:
            root = to_fs_path(params.workspace_folders[0].uri)
        if root is None and params.root_uri:
            root = to_fs_path(params.root_uri)
        if root is None and params.root_path:
            root = params.root_path
        if root:
            server.root = Path(root).resolve()
        opts, problems = P.parse_initialization_options(params.initialization_options)
        server.options = opts
        for prob in problems:
            server.show(lsp.MessageType.Warning, f"sidecar: initializationOptions.{prob}")
        s = server.streamer
        s.interval = opts.chunk_interval_ms / 1000
        s.max_bytes = opts.chunk_max_bytes
        s.max_pending = opts.max_pending_bytes
        s.default_enabled = opts.output_chunks == "all"
        caps = params.capabilities.window
        server._progress_enabled = bool(opts.progress and caps and caps.work_done_progress)
        if server._progress_enabled:
            s.on_line = server._on_line
        server._load_config_workspace()

    @server.feature(lsp.INITIALIZED)
    def initialized(params: lsp.InitializedParams) -> None:
        server.reload()

    @server.feature(lsp.SHUTDOWN)
    async def shutdown(params: Any) -> None:
        await server.shutdown_core()

    @server.feature(lsp.TEXT_DOCUMENT_DID_SAVE)
    async def did_save(params: lsp.DidSaveTextDocumentParams) -> None:
        await server.on_saved(params.text_document.uri)

    @server.feature(lsp.WORKSPACE_DID_CHANGE_WATCHED_FILES)
    async def watched(params: lsp.DidChangeWatchedFilesParams) -> None:
        for ch in params.changes:
            if ch.type in (lsp.FileChangeType.Created, lsp.FileChangeType.Changed):
                await server.on_saved(ch.uri)

    # ------------------------------------------------------------------ sidecar/*
    @rpc(P.M_COMMANDS, P.NoParams)
    async def commands(p: P.NoParams) -> P.CommandsResult:
        o = orch()
        out = []
        for name in o.list_commands():
            c = o.get_command(name)
            st = o.get_status(name)
            out.append(P.CommandInfo(
                name=name, command=c.command, triggers=list(c.triggers),
                cancel_on_triggers=list(c.cancel_on_triggers), max_concurrent=c.max_concurrent,
                on_retrigger=c.on_retrigger, debounce_in_ms=c.debounce_in_ms,
                timeout_secs=c.timeout_secs, state=st.state,
                active_run_ids=[h.run_id for h in o.get_active_handles(name)],
                source=o.config.sources.get(name)))
        return P.CommandsResult(commands=out, config_files=[str(f) for f in server.config_files],
                                on_save=dict(o.config.on_save))

    @rpc(P.M_TRIGGER, P.TriggerParams, gate=True)
    async def trigger(p: P.TriggerParams) -> P.TriggerResultWire:
        res = await orch().trigger(p.event, vars=p.vars)
        return P.TriggerResultWire(
            event=res.event, started=[_run_info(h.result) for h in res.started],
            skipped=[P.SkippedInfo(c, r, m) for c, r, m in res.skipped],
            cancelled=list(res.cancelled))

    async def do_run(p: P.RunParams) -> P.RunResultWire:
        if not p.wait:
            server._open_gate()
        handle = await orch().run_command(p.command, vars=p.vars)
        timed_out = False
        if p.wait:
            timeout = p.timeout_ms / 1000 if p.timeout_ms is not None else None
            try:
                await handle.wait(timeout)
            except TimeoutError:
                timed_out = True
        return P.RunResultWire(run=_run_info(handle.result), timed_out=timed_out)

    rpc(P.M_RUN, P.RunParams)(do_run)

    @rpc(P.M_WAIT, P.WaitParams)
    async def wait(p: P.WaitParams) -> P.RunResultWire:
        handle = get_handle(p.run_id)
        timed_out = False
        try:
            await handle.wait(p.timeout_ms / 1000 if p.timeout_ms is not None else None)
        except TimeoutError:
            timed_out = True
        return P.RunResultWire(run=_run_info(handle.result), timed_out=timed_out)

    async def do_cancel(p: P.CancelParams) -> P.CancelResult:
        given = [k for k, v in (("runId", p.run_id), ("command", p.command),
                                ("all", p.all or None)) if v is not None]
        if len(given) != 1:
            raise P.InvalidParams("runId", "give exactly one of runId, command, all: true")
        o = orch()
        if p.run_id is not None:
            get_handle(p.run_id)
            n = int(await o.cancel_run(p.run_id, "cancelled by client"))
        elif p.command is not None:
            n = await o.cancel_command(p.command, "cancelled by client")
        else:
            n = await o.cancel_all("cancelled by client")
        return P.CancelResult(cancelled=n)

    rpc(P.M_CANCEL, P.CancelParams)(do_cancel)

    @rpc(P.M_STATUS, P.StatusParams)
    async def status(p: P.StatusParams) -> P.StatusResult:
        o = orch()
        names = [p.command] if p.command is not None else o.list_commands()
        out = []
        for name in names:
            st = o.get_status(name)
            out.append(P.CommandStatusInfo(
                name=name, state=st.state, active_count=st.active_count,
                active_runs=[_run_info(h.result) for h in o.get_active_handles(name)],
                last_run=_run_info(st.last_run) if st.last_run is not None else None))
        return P.StatusResult(commands=out)

    @rpc(P.M_HISTORY, P.HistoryParams)
    async def history(p: P.HistoryParams) -> P.HistoryResult:
        return P.HistoryResult(runs=[_run_info(r) for r in orch().get_history(p.command, p.limit)])

    @rpc(P.M_READ_OUTPUT, P.ReadOutputParams)
    async def read_output(p: P.ReadOutputParams) -> P.ReadOutputResult:
        if p.offset < 0:
            raise P.InvalidParams("offset", "must be >= 0")
        if p.length is not None and p.length < 0:
            raise P.InvalidParams("length", "must be >= 0")
        o = orch()
        handle = get_handle(p.run_id)
        final = handle.is_finalized
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

    @rpc(P.M_PREVIEW, P.PreviewParams)
    async def preview(p: P.PreviewParams) -> P.PreviewResult:
        rc = orch().preview_command(p.command, vars=p.vars)
        return P.PreviewResult(command=p.command, resolved=rc.command, cwd=rc.cwd,
                               vars=dict(rc.vars), argv=rc.argv, timeout_secs=rc.timeout_secs)

    @rpc(P.M_TRIGGER_GRAPH, P.NoParams)
    async def trigger_graph(p: P.NoParams) -> P.TriggerGraphResult:
        o = orch()
        cancels: dict[str, list[str]] = {}
        for name in o.list_commands():
            for t in o.get_command(name).cancel_on_triggers:
                cancels.setdefault(t, []).append(name)
        return P.TriggerGraphResult(triggers=o.get_trigger_graph(), cancels=cancels,
                                    on_save=dict(o.config.on_save))

    @rpc(P.M_RELOAD, P.NoParams)
    async def reload(p: P.NoParams) -> P.ReloadResult:
        if server._shutting_down:
            raise P.SidecarRpcError(P.E_SHUTTING_DOWN, "the server is shutting down")
        return server.reload()

    @rpc(P.M_SET_OUTPUT_FILTER, P.SetOutputFilterParams)
    async def set_output_filter(p: P.SetOutputFilterParams) -> P.OutputFilterResult:
        server.streamer.set_filter(p.enabled, p.commands, p.run_ids)
        return P.OutputFilterResult(enabled_default=server.streamer.default_enabled)

    # ------------------------------------------------------------------ executeCommand
    def command_args(args: tuple[Any, ...], first: str) -> dict[str, Any]:
        if len(args) == 1 and isinstance(args[0], dict):
            return args[0]
        if args and isinstance(args[0], str):
            out: dict[str, Any] = {first: args[0]}
            if len(args) > 1:
                out["vars"] = args[1]
            return out
        raise P.InvalidParams("arguments", f"expected [{first}, vars?] or [{{...}}]")

    def execute(name: str, method: str, first: str) -> None:
        async def cmd(*args: Any) -> Any:
            try:
                raw = command_args(args, first)
            except P.SidecarRpcError as exc:
                raise JsonRpcException(exc.message, exc.code, exc.data) from None
            if name == P.CMD_CANCEL:
                raw = {k: v for k, v in raw.items() if k != "vars"}
            return await server.protocol.fm.features[method](raw)
        server.command(name)(cmd)

    execute(P.CMD_RUN, P.M_RUN, "command")
    execute(P.CMD_TRIGGER, P.M_TRIGGER, "event")
    execute(P.CMD_CANCEL, P.M_CANCEL, "command")
    return server


class _ClientLogHandler(logging.Handler):
    """Forwards sidecar warnings and errors to the client as ``window/logMessage``: one line
    each, without tracebacks, and not the log lines of rejected messages (the client got
    their error responses)."""

    def __init__(self, server: SidecarServer) -> None:
        super().__init__(logging.WARNING)
        self.server = server
        self._busy = False

    def emit(self, record: logging.LogRecord) -> None:
        if self._busy or self.server.writer is None or getattr(record, LOCAL_ONLY, False):
            return
        self._busy = True
        try:
            kind = lsp.MessageType.Error if record.levelno >= logging.ERROR \
                else lsp.MessageType.Warning
            # One line: tracebacks (with the server's paths) stay in the server's log.
            message = record.getMessage()
            if record.exc_info and record.exc_info[1] is not None:
                message += f" ({type(record.exc_info[1]).__name__})"
            self.server._emit(lsp.WINDOW_LOG_MESSAGE, {"type": kind.value, "message": message})
        except Exception:
            pass
        finally:
            self._busy = False


def serve(stdin: BinaryIO | None = None, stdout: BinaryIO | None = None) -> int:
    """Run the sidecar on stdio (or the given binary streams) until ``exit`` or end of input.

    Returns the exit code: 0 after ``shutdown`` + ``exit`` (or a signal, or end of input
    before any message), 1 if the client went away without ``shutdown``. Never writes
    anything but protocol messages to stdout: ``sys.stdout`` is pointed at stderr while
    serving.
    """
    out = stdout if stdout is not None else sys.stdout.buffer
    inp = stdin if stdin is not None else sys.stdin.buffer
    level = os.environ.get("SIDECAR_LOG", "WARNING").upper()
    logging.basicConfig(stream=sys.stderr, level=getattr(logging, level, logging.WARNING),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("pygls").setLevel(max(logging.WARNING, logging.getLogger().level))
    saved_stdout = sys.stdout
    sys.stdout = sys.stderr
    server = create_server()
    handler = _ClientLogHandler(server)
    logging.getLogger("sidecar").addHandler(handler)
    try:
        return asyncio.run(server.run_stdio(inp, out))
    finally:
        logging.getLogger("sidecar").removeHandler(handler)
        sys.stdout = saved_stdout


__all__ = ["SidecarServer", "create_server", "serve"]
