"""A synchronous client of a workspace's host, for the command line.

It speaks protocol.md on the host's Unix socket: ``initialize`` and ``initialized`` go out
with the first request in one write (one round trip for ``sidecar save``), responses are
matched by id, and every notification is handed to :attr:`Client.on_notify`, in the order
the host sent it, also while a request waits for its response. Messages are handled one at a
time: a wait returns right after the message that ends it, so what the caller does with a
response (adopting the runs it names) comes before the notifications that follow it. An error
response raises :class:`RpcError` (a :class:`~.common.CliError` carrying the host's message).
Inside :meth:`Client.interruptible`, SIGINT and SIGTERM raise :class:`Interrupted` from the
waits, between two messages and never in the middle of one.

Standard library only, no asyncio: ``sidecar save`` in a git hook runs through here.
"""

from __future__ import annotations

import json
import os
import select
import socket
from collections import deque
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import Any

from sidecar.app.methods import E_INVALID_PARAMS, E_NO_VALID_CONFIG
from sidecar.host.framing import FrameParser, frame
from sidecar.host.locate import HostError, Workspace, connect

from .common import EXIT_CONFIG, EXIT_USAGE, CliError

Message = dict[str, Any]


class RpcError(CliError):
    """An error response: the host's ``message``, its ``rpc_code`` (protocol.md §9) and
    ``data``. The exit code is 3 for ``NoValidConfig``, 2 for ``InvalidParams``, else 1."""

    def __init__(self, rpc_code: int, message: str, data: Any = None) -> None:
        exit_code = {E_NO_VALID_CONFIG: EXIT_CONFIG, E_INVALID_PARAMS: EXIT_USAGE}
        super().__init__(message, exit_code.get(rpc_code, 1))
        self.rpc_code = rpc_code
        self.data = data


class Interrupted(Exception):
    """SIGINT or SIGTERM arrived while the client waited (see :meth:`Client.interruptible`)."""


class HostGone(CliError):
    """The host closed the connection."""


class Client:
    """One session with a host on a blocking socket."""

    def __init__(self, sock: socket.socket, ws: Workspace) -> None:
        self.sock = sock
        self.ws = ws
        #: called with every notification (a JSON-RPC message dict) as it arrives
        self.on_notify: Callable[[Message], None] | None = None
        self._inbox: deque[bytes] = deque()
        self._parser = FrameParser(self._inbox.append)
        self._out = bytearray()
        self._responses: dict[int, Message] = {}
        self._wanted: set[int] = set()
        self._next_id = 0
        self._init_id: int | None = None
        self._wake: tuple[int, int] | None = None
        self._signals = 0
        self._raised = 0

    @classmethod
    def open(cls, ws: Workspace, name: str, *, start: bool = False, chunks: bool = True,
             idle_timeout: float | None = None) -> Client:
        """A session named ``name`` (its runs' ``startedBy``) with the workspace's host,
        started when ``start`` and none runs. ``chunks``: receive ``sidecar/outputChunk``.
        ``initialize`` is sent with the first request."""
        try:
            sock = connect(ws, start=start, idle_timeout=idle_timeout)
        except HostError as exc:
            if not start and str(exc).startswith("no host is running"):
                raise CliError(f"{exc}; `sidecar run`, `trigger`, `save` or `host start` "
                               "start one") from None
            raise CliError(str(exc)) from None
        sock.settimeout(None)
        client = cls(sock, ws)
        client._init_id = client.send("initialize", {
            "processId": os.getpid(), "clientInfo": {"name": name},
            "rootUri": file_uri(ws.root), "capabilities": {},
            "initializationOptions": {"outputChunks": "all" if chunks else "none",
                                      "progress": False}})
        client.send("initialized", {}, notify=True)
        return client

    # ------------------------------------------------------------------ sending
    def send(self, method: str, params: Any = None, *, notify: bool = False) -> int:
        """Queue a request (returns its id) or a notification (returns 0); it is written
        before the client next waits (or on :meth:`flush`)."""
        message: Message = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            message["params"] = params
        ident = 0
        if not notify:
            self._next_id += 1
            ident = message["id"] = self._next_id
            self._wanted.add(ident)
        self._out += frame(message)
        return ident

    def flush(self) -> None:
        if self._out:
            try:
                self.sock.sendall(self._out)
            except OSError as exc:
                raise HostGone(f"lost the connection to the host ({exc}); see "
                               f"{self.ws.log_path}") from None
            self._out.clear()

    def request(self, method: str, params: Any = None) -> Any:
        """Send a request and return its result (raises :class:`RpcError`)."""
        return self.response(self.send(method, params))

    def response(self, ident: int) -> Any:
        """The result of request ``ident``, waiting for it (raises :class:`RpcError`)."""
        self.wait_until(lambda: ident in self._responses)
        message = self._responses.pop(ident)
        self._wanted.discard(ident)
        error = message.get("error")
        if error is not None:
            raise RpcError(int(error.get("code", 0)), str(error.get("message", "")),
                           error.get("data"))
        return message.get("result")

    def answered(self, ident: int) -> bool:
        """Whether the response to request ``ident`` has arrived."""
        return ident in self._responses

    def forget(self, ident: int) -> None:
        """Drop the response of request ``ident`` when it comes."""
        self._wanted.discard(ident)
        self._responses.pop(ident, None)

    # ------------------------------------------------------------------ receiving
    def wait_until(self, done: Callable[[], bool]) -> None:
        """Handle messages, reading as needed, until ``done()`` (checked after each)."""
        while not done():
            if self._inbox:
                self._dispatch(self._inbox.popleft())
            else:
                self._read()

    def _read(self) -> None:
        self.flush()  # what the handlers queued (cancels) goes out before blocking
        while True:
            if self._signals > self._raised:
                self._raised = self._signals
                raise Interrupted
            if self._wake is None:
                break
            ready = select.select([self.sock.fileno(), self._wake[0]], [], [])[0]
            if self._wake[0] in ready:
                try:
                    while os.read(self._wake[0], 64):
                        pass
                except BlockingIOError:
                    pass
            if self.sock.fileno() in ready:
                break
        try:
            data = self.sock.recv(1 << 16)
        except OSError:
            data = b""
        if not data:
            raise HostGone(f"the host closed the connection; see {self.ws.log_path}")
        self._parser.feed(data)

    def _dispatch(self, body: bytes) -> None:
        try:
            message = json.loads(body)
        except ValueError:
            raise HostGone(f"the host sent a message that is not JSON; see "
                           f"{self.ws.log_path}") from None
        if not isinstance(message, dict):
            return
        if "method" in message:
            if "id" not in message and self.on_notify is not None:
                self.on_notify(message)
            return  # requests from the host (none are expected) go unanswered
        ident = message.get("id")
        if ident == self._init_id:
            self._init_id = None
            error = message.get("error")
            if error is not None:
                raise RpcError(int(error.get("code", 0)),
                               f"initialize: {error.get('message', '')}")
        elif isinstance(ident, int) and ident in self._wanted:
            self._responses[ident] = message

    # ------------------------------------------------------------------ signals, closing
    def interruptible(self) -> _Interruptible:
        """A context in which SIGINT and SIGTERM make the waits raise :class:`Interrupted`
        (once per signal) instead of ending the process."""
        return _Interruptible(self)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals += 1

    def close(self) -> None:
        """End the session (a disconnect, which the host treats like ``exit``)."""
        try:
            self.flush()
        except CliError:
            pass
        self.sock.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_URI_SAFE = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/-._~")


def file_uri(path: str) -> str:
    """``file://`` URI of an absolute path (bytes outside the unreserved set
    percent-encoded)."""
    raw = path.encode("utf-8", "surrogateescape")
    return "file://" + "".join(chr(b) if b in _URI_SAFE else f"%{b:02X}" for b in raw)


class _Interruptible:
    """Installs the client's SIGINT/SIGTERM handlers and the wake-up pipe; restores both."""

    def __init__(self, client: Client) -> None:
        import signal  # not on the path of a plain `sidecar save`

        self.signal = signal
        self.signals = (signal.SIGINT, signal.SIGTERM)
        self.client = client
        self.saved: list[Any] = []
        self.saved_fd = -1

    def __enter__(self) -> Client:
        signal = self.signal
        r, w = os.pipe()
        os.set_blocking(r, False)
        os.set_blocking(w, False)
        self.client._wake = (r, w)
        self.saved_fd = signal.set_wakeup_fd(w)
        self.saved = [signal.signal(s, self.client._on_signal) for s in self.signals]
        return self.client

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        signal = self.signal
        for s, handler in zip(self.signals, self.saved, strict=True):
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)
        signal.set_wakeup_fd(self.saved_fd)
        wake, self.client._wake = self.client._wake, None
        if wake is not None:
            os.close(wake[0])
            os.close(wake[1])
