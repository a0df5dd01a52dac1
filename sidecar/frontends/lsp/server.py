"""The LSP frontend: LSP-framed JSON-RPC (pygls 2) over the service layer.

One :class:`SidecarServer` is one client connection. It holds that client's
:class:`~sidecar.host.session.Session` (options, output filter, response gates, progress) and
config documents (:mod:`.documents`, with the language features of :mod:`.config_features`),
and translates: each ``sidecar/*`` request to one :class:`~sidecar.app.service.Service` call,
results and errors back; ``didSave`` and watched-file changes to the service's ``save``. The
wire format is normative in ``protocol.md``; names and types are in
:mod:`sidecar.app.protocol`. Incoming messages are validated in :mod:`.rpc`.

:func:`serve` runs one session on stdio with a host of its own, which ends with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import cattrs
from lsprotocol import types as lsp
from pygls.exceptions import JsonRpcException
from pygls.lsp.server import LanguageServer
from pygls.protocol import default_converter
from pygls.uris import to_fs_path

from sidecar.adapters.local_process import use_pidfd_child_watcher
from sidecar.app import protocol as P
from sidecar.app.service import Service
from sidecar.host.host import Host, Reload
from sidecar.host.session import Session
from sidecar.host.transport import Connection, FramedOutbox, StdioConnection, Writer

from .config_features import register as register_config_features
from .documents import ConfigWorkspace
from .documents import register as register_documents
from .progress import RunProgress
from .rpc import LOCAL_ONLY, SidecarProtocol, Wire

logger = logging.getLogger("sidecar.lsp")

class _NoOutbox:
    """Before the transport is open (nothing can be sent yet)."""

    pending_bytes = 0

    def send(self, message: dict[str, Any]) -> None:
        logger.debug("dropped before the transport opened: %s", message.get("method"))


@functools.cache
def shared_converter() -> cattrs.Converter:
    """One pygls converter per process, shared by every session of a host: a new one (and
    the (un)structure functions it generates for the first messages) costs each connection
    tens of milliseconds, which ``sidecar save`` in a git hook would wait for. pygls only
    reads it."""
    converter: cattrs.Converter = default_converter()  # type: ignore[no-untyped-call]
    return converter


class SidecarServer(LanguageServer):
    protocol: SidecarProtocol

    def __init__(self, host: Host | None = None, *, owns_host: bool = True) -> None:
        from sidecar import __version__

        super().__init__("cmdsidecar", __version__, protocol_cls=SidecarProtocol,
                         converter_factory=shared_converter)
        self.host = host if host is not None else Host(Path.cwd())
        self.owns_host = owns_host
        self.service = Service(self.host, "lsp")
        self.session = Session(self.host, _NoOutbox())
        self.documents: ConfigWorkspace | None = None
        self.writer: Writer | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stop: asyncio.Event | None = None
        self._exit_code = 0
        self._received = False  # any message yet (end of input before one is not an error)
        self._shutting_down = False
        self._unwatch_reloads = self.host.on_reload(self._reloaded)
        self.session.on_end = lambda: self._request_stop(1)

    # ================================================================= helpers
    def show(self, kind: lsp.MessageType, message: str) -> None:
        self.window_show_message(lsp.ShowMessageParams(type=kind, message=message))

    def spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _cancel_run(self, run_id: str) -> None:
        self.spawn(self.service.cancel(P.CancelParams(run_id=run_id)))

    def _reloaded(self, outcome: Reload) -> None:
        """After every reload of the host: republish this client's diagnostics; say why
        when the config was not loaded."""
        if self.documents is not None:
            self.documents.reloaded()
        if not outcome.ok:
            keep = ("; keeping the previous configuration" if outcome.had_config
                    else "; sidecar requests fail until a valid config is loaded")
            self.show(lsp.MessageType.Error, f"sidecar: config not loaded: {outcome.error}{keep}")

    # ================================================================= lifecycle
    def initialize_session(self, params: lsp.InitializeParams) -> None:
        root = None
        if params.workspace_folders:
            root = to_fs_path(params.workspace_folders[0].uri)
        if root is None and params.root_uri:
            root = to_fs_path(params.root_uri)
        if root is None and params.root_path:
            root = params.root_path
        client = params.client_info
        self.session.client_name = client.name if client is not None and client.name else None
        self.service.started_by = self.session.client_name or "lsp"
        opts, problems = P.parse_initialization_options(params.initialization_options)
        for prob in problems:
            self.show(lsp.MessageType.Warning, f"sidecar: initializationOptions.{prob}")
        self.service.agent = opts.agent
        host = self.host
        if self.owns_host:
            files: Sequence[str] | None = opts.config_files or None
            if files is None and host.config_files.explicit:
                files = [str(p) for p in host.config_files.files]  # `serve --config`
            host.configure(Path(root) if root else host.root, files)
        caps = params.capabilities.window
        progress = None
        if opts.progress and caps and caps.work_done_progress:
            progress = RunProgress(self, self.spawn, self._cancel_run)
        self.session.configure(opts, progress)
        self.documents = ConfigWorkspace(self, host.config_files)
        register_documents(self, self.documents)
        register_config_features(self, self.documents, self.service)

    def initialized(self) -> None:
        if self.owns_host:
            self.host.reload()
            self.host.start()
        elif self.host.last_reload is not None:
            self._reloaded(self.host.last_reload)  # this client's diagnostics, and why not

    async def shutdown_session(self) -> None:
        self._shutting_down = True
        if self.owns_host:
            await self.host.close()

    def _request_stop(self, code: int) -> None:
        self._exit_code = code
        if self._stop is not None:
            self._stop.set()

    def _on_eof(self) -> None:
        if self._stop is not None and not self._stop.is_set():
            logger.info("client gone (end of input): ending the session")
            self._exit_code = 0 if self.protocol._shutdown or not self._received else 1
            self._stop.set()

    def _on_body(self, body: bytes) -> None:
        self._received = True
        self.protocol.receive(body)

    def _response_sent(self, msg_id: Any) -> None:
        self.session.response_sent(msg_id)

    async def run(self, conn: Connection, *, handle_signals: bool = False) -> int:
        """Serve one client on ``conn`` until ``exit``, end of input or (``handle_signals``,
        standalone only) SIGTERM/SIGINT/SIGHUP; returns the exit code and closes ``conn``
        with it."""
        loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self.writer = await conn.open_writer(self._on_eof)
        self.protocol.set_writer(self.writer)
        self.session.outbox = FramedOutbox(self.writer)
        await conn.start_reading(self._on_body, self._on_eof)
        signals = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP) if handle_signals else ()
        for sig in signals:
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, self._request_stop, 0)
        try:
            await self._stop.wait()
        finally:
            for sig in signals:
                with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                    loop.remove_signal_handler(sig)
            await self.shutdown_session()
            self._unwatch_reloads()
            self.session.close()
            for task in list(self._tasks):
                task.cancel()
            if self._tasks:
                await asyncio.wait(list(self._tasks), timeout=1.0)
            await self.writer.drain(2.0)
            conn.close(self._exit_code)
        return self._exit_code


async def _serve_standalone(server: SidecarServer, conn: StdioConnection) -> int:
    use_pidfd_child_watcher(asyncio.get_running_loop())
    return await server.run(conn, handle_signals=True)


async def serve_connection(host: Host, conn: Connection) -> int:
    """Serve one client of a shared host (``sidecar serve`` attached, the CLI, agents): its
    own session; ending it never ends the host."""
    return await create_server(host, owns_host=False).run(conn)


# ===================================================================== handlers

def _uri_path(uri: str) -> str | None:
    try:
        fs = to_fs_path(uri)
    except Exception:
        return None
    return fs or None


def _starts_runs(method: str, params: Any) -> bool:
    """A request whose response must precede the notifications it causes."""
    if method == P.M_RUN:
        return not params.wait
    return method in (P.M_TRIGGER, P.M_SAVE)


def _command_args(args: tuple[Any, ...], first: str) -> dict[str, Any]:
    """``workspace/executeCommand`` arguments: ``[name, vars?]`` or ``[{...params}]``."""
    if len(args) == 1 and isinstance(args[0], dict):
        return args[0]
    if args and isinstance(args[0], str):
        out: dict[str, Any] = {first: args[0]}
        if len(args) > 1:
            out["vars"] = args[1]
        return out
    raise P.InvalidParams("arguments", f"expected [{first}, vars?] or [{{...}}]")


def create_server(host: Host | None = None, *, owns_host: bool = True) -> SidecarServer:
    """A configured :class:`SidecarServer` (not started; see :func:`serve`)."""
    server = SidecarServer(host, owns_host=owns_host)
    service, session = server.service, server.session

    def register(method: str, cls: type[Any], call: Callable[[Any], Awaitable[Any]]) -> None:
        """``method`` → ``call(params)``. Notifications caused by a request that starts runs
        without waiting for them follow its response (protocol.md §10)."""

        async def handler(params: Any) -> Any:
            try:
                p = P.parse_params(cls, params)
                if _starts_runs(method, p) and server.protocol.msg_id is not None:
                    session.hold(server.protocol.msg_id)
                return Wire(P.to_wire(await call(p)))
            except P.SidecarRpcError as exc:
                raise JsonRpcException(exc.message, exc.code, exc.data) from None

        server.feature(method)(handler)

    for method, (cls, call) in service.operations().items():
        register(method, cls, call)
    register(P.M_SET_OUTPUT_FILTER, P.SetOutputFilterParams,
             lambda p: service.set_output_filter(session, p))
    register(P.M_HOST_INFO, P.NoParams, lambda p: service.host_info(session))

    # ------------------------------------------------------------------ executeCommand
    def execute(name: str, method: str, first: str) -> None:
        async def cmd(*args: Any) -> Any:
            try:
                raw = _command_args(args, first)
            except P.SidecarRpcError as exc:
                raise JsonRpcException(exc.message, exc.code, exc.data) from None
            if name == P.CMD_CANCEL:
                raw = {k: v for k, v in raw.items() if k != "vars"}
            return await server.protocol.fm.features[method](raw)
        server.command(name)(cmd)

    execute(P.CMD_RUN, P.M_RUN, "command")
    execute(P.CMD_TRIGGER, P.M_TRIGGER, "event")
    execute(P.CMD_CANCEL, P.M_CANCEL, "command")

    # ------------------------------------------------------------------ lifecycle
    @server.feature(lsp.INITIALIZE)
    def initialize(params: lsp.InitializeParams) -> None:
        server.initialize_session(params)

    @server.feature(lsp.INITIALIZED)
    def initialized(params: lsp.InitializedParams) -> None:
        server.initialized()

    @server.feature(lsp.SHUTDOWN)
    async def shutdown(params: Any) -> None:
        await server.shutdown_session()

    async def saved(uris: list[str]) -> None:
        paths = [p for p in map(_uri_path, uris) if p is not None]
        if paths and not server._shutting_down:
            result = await service.save(P.SaveParams(paths=paths))
            for ignored in result.ignored:
                if ignored.reason in ("bad-path", "error"):
                    logger.warning("ignoring the save of %a: %s", ignored.path, ignored.message)

    @server.feature(lsp.TEXT_DOCUMENT_DID_SAVE)
    async def did_save(params: lsp.DidSaveTextDocumentParams) -> None:
        await saved([params.text_document.uri])

    @server.feature(lsp.WORKSPACE_DID_CHANGE_WATCHED_FILES)
    async def watched(params: lsp.DidChangeWatchedFilesParams) -> None:
        await saved([ch.uri for ch in params.changes
                     if ch.type in (lsp.FileChangeType.Created, lsp.FileChangeType.Changed)])

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
            self.server.session.notify(lsp.WINDOW_LOG_MESSAGE,
                                       {"type": kind.value, "message": message})
        except Exception:
            pass
        finally:
            self._busy = False


def configure_logging(level: str | None) -> None:
    """Log to stderr at ``level``, else ``$SIDECAR_LOG``, else WARNING (stdout is the
    protocol)."""
    name = (level or os.environ.get("SIDECAR_LOG") or "WARNING").upper()
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    logging.basicConfig(stream=sys.stderr, level=getattr(logging, name, logging.WARNING),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("pygls").setLevel(max(logging.WARNING, root.level))


def serve(stdin: BinaryIO | None = None, stdout: BinaryIO | None = None, *,
          config_files: Sequence[str] | None = None, log_level: str | None = None) -> int:
    """Run the sidecar on stdio (or the given binary streams) until ``exit`` or end of input.

    ``config_files`` (``sidecar serve --config``) are used unless the client's
    ``initializationOptions.configFiles`` names others. ``log_level`` (``--log-level``)
    wins over ``$SIDECAR_LOG``. Returns the exit code: 0 after ``shutdown`` + ``exit`` (or a
    signal, or end of input before any message), 1 if the client went away without
    ``shutdown``. Never writes anything but protocol messages to stdout: ``sys.stdout`` is
    pointed at stderr while serving.
    """
    out = stdout if stdout is not None else sys.stdout.buffer
    inp = stdin if stdin is not None else sys.stdin.buffer
    configure_logging(log_level)
    saved_stdout = sys.stdout
    sys.stdout = sys.stderr
    files = [str(Path(p).resolve()) for p in config_files] if config_files else None
    server = create_server(Host(Path.cwd(), files))
    handler = _ClientLogHandler(server)
    logging.getLogger("sidecar").addHandler(handler)
    try:
        return asyncio.run(_serve_standalone(server, StdioConnection(inp, out)))
    finally:
        logging.getLogger("sidecar").removeHandler(handler)
        sys.stdout = saved_stdout


__all__ = ["SidecarServer", "create_server", "serve", "serve_connection"]
