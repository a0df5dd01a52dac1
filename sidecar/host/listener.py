"""The host's socket: accepting clients, checking who they are, and the relay handshake.

Every connection is checked first: the peer's uid (``SO_PEERCRED``) must be this process's
(the socket directory's 0700 mode already keeps other users out; this is the second lock).
Then its first bytes say what it is:

* a protocol connection (the command line, agents): ``Content-Length``-framed JSON-RPC
  from the first byte, served on the socket itself (:class:`~.transport.SocketConnection`);
* a ``sidecar serve`` relay: one framed ``sidecar/attach`` notification that carries, as
  ``SCM_RIGHTS`` ancillary data, the editor's stdin and stdout, followed by the bytes the
  relay already read from that stdin. The session then reads and writes the editor's pipes
  directly (:class:`~.transport.StdioConnection`); the relay only waits on the socket for
  ``sidecar/detach`` with the session's exit code (protocol.md §1, "The host").
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import json
import logging
import os
import socket
import struct
from collections.abc import Awaitable, Callable
from typing import Any

from sidecar.app.methods import M_ATTACH, M_DETACH

from .framing import frame, split_frame
from .transport import Connection, SocketConnection, StdioConnection

logger = logging.getLogger("sidecar.host")

HANDSHAKE_TIMEOUT = 10.0
_CREDS = struct.Struct("3i")  # struct ucred: pid, uid, gid

Handler = Callable[[Connection], Awaitable[object]]
"""Serves one connection (until it ends)."""
AttachCheck = Callable[[dict[str, Any]], str | None]
"""Why a relay's ``sidecar/attach`` params are refused (None: accepted)."""


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end of a Unix socket."""
    return _CREDS.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CREDS.size))


def peer_allowed(credentials: tuple[int, int, int], uid: int | None = None) -> bool:
    """Whether a peer with these credentials may use the host: the same user only."""
    return credentials[1] == (os.getuid() if uid is None else uid)


class Listener:
    """Accepts connections on a listening Unix socket and hands each to ``handler``."""

    def __init__(self, sock: socket.socket, handler: Handler,
                 check_attach: AttachCheck | None = None,
                 on_change: Callable[[], None] | None = None) -> None:
        self.sock = sock
        self.handler = handler
        self.check_attach = check_attach
        self.on_change = on_change
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.sock.setblocking(False)
        self._loop.add_reader(self.sock.fileno(), self._accept)

    def stop(self) -> None:
        if self._loop is not None:
            with contextlib.suppress(ValueError, OSError):
                self._loop.remove_reader(self.sock.fileno())
        self.sock.close()

    @property
    def connections(self) -> int:
        """Connections accepted and not yet closed (including ones still in the handshake)."""
        return len(self._tasks)

    def accept_pending(self) -> int:
        """Accept every connection waiting in the backlog now; returns how many."""
        before = len(self._tasks)
        self._accept()
        return len(self._tasks) - before

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                logger.warning("accept failed: %s", exc)
                return
            try:
                creds = peer_credentials(conn)
            except OSError:
                logger.warning("refused a connection: no peer credentials")
                conn.close()
                continue
            if not peer_allowed(creds):
                logger.warning("refused a connection from pid %d uid %d (this host is uid %d)",
                               creds[0], creds[1], os.getuid())
                conn.close()
                continue
            conn.setblocking(False)
            task = asyncio.ensure_future(self._serve(conn, creds[0]))
            self._tasks.add(task)
            task.add_done_callback(self._done)
            if self.on_change is not None:
                self.on_change()

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if self.on_change is not None:
            self.on_change()

    async def _serve(self, conn: socket.socket, pid: int) -> None:
        try:
            connection = await asyncio.wait_for(_handshake(conn, self.check_attach),
                                                HANDSHAKE_TIMEOUT)
        except ConnectionError as exc:  # a probe, or a client that died at once
            logger.debug("dropped a connection from pid %d: %s", pid, exc)
            conn.close()
            return
        except Exception as exc:
            logger.warning("dropped a connection from pid %d: %s", pid, exc)
            conn.close()
            return
        try:
            await self.handler(connection)
        except Exception:
            logger.exception("session of pid %d failed", pid)
            with contextlib.suppress(Exception):
                connection.close(1)

    async def wait_closed(self, timeout: float) -> None:
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout)


async def _readable(sock: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not fut.done():
            fut.set_result(None)

    loop.add_reader(sock.fileno(), wake)
    try:
        await fut
    finally:
        loop.remove_reader(sock.fileno())


def _send_detach(conn: socket.socket, code: int, message: str | None = None) -> None:
    params: dict[str, Any] = {"exitCode": code}
    if message is not None:
        params["message"] = message
    with contextlib.suppress(OSError):
        conn.setblocking(True)
        conn.settimeout(1.0)
        conn.sendall(frame({"jsonrpc": "2.0", "method": M_DETACH, "params": params}))
    conn.close()


async def _handshake(conn: socket.socket, check: AttachCheck | None) -> Connection:
    """Read the connection's first message: a relay's ``sidecar/attach`` (with two file
    descriptors), or the first bytes of a protocol connection."""
    data = b""
    fds: list[int] = []
    split = None
    fd_size = socket.CMSG_SPACE(2 * array.array("i").itemsize)
    try:
        while split is None:
            await _readable(conn)
            try:
                chunk, ancdata, _, _ = conn.recvmsg(1 << 16, fd_size)
            except BlockingIOError:
                continue
            for level, kind, payload in ancdata:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    got = array.array("i")
                    got.frombytes(payload[: len(payload) - len(payload) % got.itemsize])
                    fds.extend(got)
            if not chunk:
                raise ConnectionError("closed before its first message")
            data += chunk
            split = split_frame(data)
        body, rest = split
        try:
            first = json.loads(body)
        except ValueError:
            first = None
        if not (isinstance(first, dict) and first.get("method") == M_ATTACH):
            _close_fds(fds)
            return SocketConnection(conn, data)
        params = first.get("params") or {}
        if len(fds) != 2 or not isinstance(params, dict):
            raise ConnectionError(f"{M_ATTACH} without two file descriptors")
        # What follows the attach message is the client's input the relay read already.
        want = params.get("buffered", 0)
        while isinstance(want, int) and len(rest) < want:
            await _readable(conn)
            chunk = conn.recv(want - len(rest))
            if not chunk:
                raise ConnectionError("closed during the attach handshake")
            rest += chunk
    except BaseException:
        _close_fds(fds)
        raise
    why = check(params) if check is not None else None
    if why is not None:
        _close_fds(fds)
        _send_detach(conn, 2, why)
        raise ConnectionError(f"relay refused: {why}")
    stdin = os.fdopen(fds[0], "rb", buffering=0)
    stdout = os.fdopen(fds[1], "wb", buffering=0)
    return StdioConnection(stdin, stdout, initial=rest,
                           on_close=lambda code: _send_detach(conn, code),
                           owns_streams=True, relay=conn)


def _close_fds(fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)
