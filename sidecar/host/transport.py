"""Transport: connections, flow control and the count of bytes not yet written, per client.

Knows nothing of sessions: a session hands whole messages to a :class:`FramedOutbox`, which
frames them (:mod:`.framing`) onto a writer; incoming bytes are cut into message bodies for
whoever reads them. A client is a :data:`Connection`: a pair of byte streams
(:class:`StdioConnection`: the server's own stdin/stdout, or an editor's pipes handed to the
host by a ``sidecar serve`` relay) or a socket (:class:`SocketConnection`: the host's Unix
socket). A connection opens its writer first, then starts reading.

pygls' own ``StdoutWriter`` writes and flushes synchronously on the event loop: a client that
stops reading fills the pipe and freezes the whole server (and with it every command whose
output the loop reads). Here writes go through asyncio transports (:class:`TransportWriter`):
a write goes straight to the pipe or socket when it has room and is queued otherwise;
:attr:`pending_bytes` is what the output streamer checks for its backpressure cap (see
protocol.md, "Backpressure"). Closing a connection drops what a client never took. End of
input (the client closed its end or died) is reported through ``on_eof``.

Streams the event loop cannot poll (a regular file, ``/dev/null``: epoll refuses both) fall
back to :class:`QueueWriter` / :class:`FrameReader`, which do the same from daemon threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import selectors
import socket
import threading
from collections import deque
from collections.abc import Callable
from typing import Any, BinaryIO

from .framing import FrameParser, frame

logger = logging.getLogger("sidecar.transport")


class QueueWriter:
    """pygls writer interface (``write(bytes)``, ``close()``) backed by a writer thread."""

    def __init__(self, stream: BinaryIO, on_broken: Callable[[], None] | None = None) -> None:
        self._stream = stream
        try:
            self._fd: int | None = stream.fileno()
        except (AttributeError, OSError, ValueError):
            self._fd = None
        self._queue: deque[bytes] = deque()
        self._cond = threading.Condition()
        self._pending = 0
        self._closed = False
        self.broken = False
        self._on_broken = on_broken
        self._thread = threading.Thread(target=self._run, name="sidecar-writer", daemon=True)
        self._thread.start()

    @property
    def pending_bytes(self) -> int:
        """Bytes queued and not yet written to the client."""
        return self._pending

    def write(self, data: bytes) -> None:
        if self._closed or self.broken:
            return
        with self._cond:
            self._queue.append(data)
            self._pending += len(data)
            self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()

    def flush(self, timeout: float = 2.0) -> bool:
        """Block until the queue is written (or ``timeout``); True if it drained."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._queue or self.broken, timeout)

    def _write_all(self, data: bytes) -> None:
        if self._fd is None:
            self._stream.write(data)
            self._stream.flush()
            return
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if not self._queue and self._closed:
                    break
                batch: list[bytes] = []
                size = 0
                while self._queue and size < (1 << 20):
                    item = self._queue.popleft()
                    batch.append(item)
                    size += len(item)
            try:
                self._write_all(b"".join(batch))
            except (OSError, ValueError):
                self.broken = True
                with self._cond:
                    self._queue.clear()
                    self._pending = 0
                    self._cond.notify_all()
                if self._on_broken is not None:
                    self._on_broken()
                return
            with self._cond:
                self._pending -= size
                self._cond.notify_all()
        with contextlib.suppress(OSError, ValueError):
            self._stream.flush()


class FrameReader:
    """Reads ``Content-Length`` framed bodies in a daemon thread."""

    def __init__(self, stream: BinaryIO, loop: asyncio.AbstractEventLoop,
                 on_body: Callable[[bytes], None], on_eof: Callable[[], None],
                 initial: bytes = b"") -> None:
        self._stream = stream
        self._initial = initial
        self._loop = loop
        self._on_body = on_body
        self._on_eof = on_eof
        self._thread = threading.Thread(target=self._run, name="sidecar-reader", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _post(self, fn: Callable[..., None], *args: object) -> bool:
        try:
            self._loop.call_soon_threadsafe(fn, *args)
            return True
        except RuntimeError:  # loop closed
            return False

    def _run(self) -> None:
        parser = FrameParser(lambda body: None if self._post(self._on_body, body) else None)
        parser.feed(self._initial)
        read: Callable[[int], bytes]
        try:
            # The raw fd, not the buffered object: a daemon thread blocked inside it would
            # hold its lock at interpreter shutdown.
            fd = self._stream.fileno()
            read = lambda n: os.read(fd, n)  # noqa: E731
        except (AttributeError, OSError, ValueError):
            read = getattr(self._stream, "read1", self._stream.read)
        try:
            while data := read(1 << 16):
                parser.feed(data)
        except (OSError, ValueError):
            logger.debug("stdin closed", exc_info=True)
        finally:
            self._post(self._on_eof)


class _ReadProtocol(asyncio.Protocol):
    def __init__(self, on_body: Callable[[bytes], None], on_eof: Callable[[], None],
                 initial: bytes = b"") -> None:
        self._parser = FrameParser(on_body)
        self._on_eof = on_eof
        self._initial = initial

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Before the pipe is read: what a relay already read comes first.
        initial, self._initial = self._initial, b""
        if initial:
            self._parser.feed(initial)

    def data_received(self, data: bytes) -> None:
        self._parser.feed(data)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._on_eof()


class _WriteProtocol(asyncio.Protocol):
    def __init__(self, on_broken: Callable[[], None] | None) -> None:
        self._on_broken = on_broken
        self.lost = False
        self.writer: TransportWriter | None = None

    def pause_writing(self) -> None:
        if self.writer is not None:
            self.writer._paused = True

    def resume_writing(self) -> None:
        if self.writer is not None:
            self.writer._paused = False
            self.writer._drain_queue()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self._on_broken is not None:
            self._on_broken()


class TransportWriter:
    """pygls writer interface (``write(bytes)``, ``close()``) over an asyncio write pipe.

    Messages written during one turn of the event loop go out in one system call (a response
    and the notifications it caused reach the client together). The transport's own buffer is
    kept small with flow control (its bytearray buffer copies on every partial write); while
    the client is slow, messages wait in a queue of their own."""

    HIGH_WATER = 256 << 10
    LOW_WATER = 64 << 10

    def __init__(self, transport: asyncio.WriteTransport, protocol: _WriteProtocol) -> None:
        self._transport = transport
        self._protocol = protocol
        protocol.writer = self
        transport.set_write_buffer_limits(high=self.HIGH_WATER, low=self.LOW_WATER)
        self._batch: list[bytes] = []
        self._batched = 0
        self._queue: deque[bytes] = deque()
        self._queued = 0
        self._paused = False

    @property
    def pending_bytes(self) -> int:
        """Bytes accepted and not yet written to the client."""
        return self._transport.get_write_buffer_size() + self._batched + self._queued

    @property
    def broken(self) -> bool:
        return self._protocol.lost or self._transport.is_closing()

    def write(self, data: bytes) -> None:
        if self.broken:
            return
        if not self._batch:
            asyncio.get_running_loop().call_soon(self._flush)
        self._batch.append(data)
        self._batched += len(data)

    def _flush(self) -> None:
        batch, self._batch, self._batched = self._batch, [], 0
        if not batch or self.broken:
            return
        data = b"".join(batch)
        if self._paused or self._queue:
            self._queue.append(data)
            self._queued += len(data)
        else:
            self._transport.write(data)

    def _drain_queue(self) -> None:
        while self._queue and not self._paused and not self.broken:
            data = self._queue.popleft()
            self._queued -= len(data)
            self._transport.write(data)

    def close(self) -> None:
        """Nothing to do: :meth:`drain` bounds the wait for what is buffered."""

    async def drain(self, timeout: float = 2.0) -> bool:
        """Wait (up to ``timeout``) until everything is written; True if it was."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        self._flush()
        while self.pending_bytes and not self.broken and loop.time() < deadline:
            await asyncio.sleep(0.01)
        return not self.pending_bytes
class ThreadWriterAdapter:
    """:class:`QueueWriter` with the same async ``drain`` as :class:`TransportWriter`."""

    def __init__(self, writer: QueueWriter) -> None:
        self._writer = writer

    @property
    def pending_bytes(self) -> int:
        return self._writer.pending_bytes

    def write(self, data: bytes) -> None:
        self._writer.write(data)

    def close(self) -> None:
        self._writer.close()

    async def drain(self, timeout: float = 2.0) -> bool:
        self._writer.close()
        return await asyncio.get_running_loop().run_in_executor(None, self._writer.flush,
                                                                timeout)


Writer = TransportWriter | ThreadWriterAdapter


F_SETPIPE_SZ = 1031  # Linux


def _grow_pipe(stream: BinaryIO, size: int = 1 << 20) -> None:
    """Ask for a 1 MiB pipe buffer (Linux's default is 64 KiB): fewer wake-ups for both
    sides when output streams fast. Best effort."""
    try:
        import fcntl

        fcntl.fcntl(stream.fileno(), F_SETPIPE_SZ, size)
    except (ImportError, OSError, ValueError, AttributeError):
        pass


def _pollable(stream: BinaryIO, events: int) -> bool:
    """Whether the event loop's selector accepts ``stream``. asyncio's pipe transports take
    any pipe, socket or character device, but register it with the selector only later, in a
    callback: ``/dev/null`` (a character device epoll refuses with EPERM) would then fail
    there, with a logged traceback and no end-of-input, instead of falling back."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        return False
    selector = selectors.DefaultSelector()
    try:
        selector.register(fd, events)
    except (OSError, ValueError):
        return False
    finally:
        selector.close()
    return True


class StdioConnection:
    """A client on a pair of byte streams: the server's own stdin/stdout, or the ones a
    ``sidecar serve`` relay handed to the host (then ``initial`` holds what the relay already
    read of the input, and ``on_close`` tells the relay the session's exit code)."""

    def __init__(self, stdin: BinaryIO, stdout: BinaryIO, *, initial: bytes = b"",
                 on_close: Callable[[int], None] | None = None,
                 owns_streams: bool = False, relay: socket.socket | None = None) -> None:
        self.stdin, self.stdout = stdin, stdout
        self._initial = initial
        self._on_close = on_close
        self._owns = owns_streams
        self._transports: list[asyncio.BaseTransport] = []
        #: the relay's connection: the session ends when it closes (the editor's server
        #: process is gone, whether or not the editor ever closes its pipes)
        self._relay = relay
        self._watching = False

    async def open_writer(self, on_broken: Callable[[], None]) -> Writer:
        loop = asyncio.get_running_loop()
        _grow_pipe(self.stdout)
        try:
            if not _pollable(self.stdout, selectors.EVENT_WRITE):
                raise ValueError("stdout cannot be polled")
            transport, wproto = await loop.connect_write_pipe(
                lambda: _WriteProtocol(on_broken), self.stdout)
            self._transports.append(transport)  # it closes stdout when it closes
            return TransportWriter(transport, wproto)
        except (ValueError, OSError, AttributeError):
            return ThreadWriterAdapter(QueueWriter(self.stdout, on_broken=on_broken))

    async def start_reading(self, on_body: Callable[[bytes], None],
                            on_eof: Callable[[], None]) -> None:
        loop = asyncio.get_running_loop()
        initial, self._initial = self._initial, b""
        try:
            if not _pollable(self.stdin, selectors.EVENT_READ):
                raise ValueError("stdin cannot be polled")
            transport, _ = await loop.connect_read_pipe(
                lambda: _ReadProtocol(on_body, on_eof, initial), self.stdin)
            self._transports.append(transport)  # it closes stdin when it closes
        except (ValueError, OSError, AttributeError):
            FrameReader(self.stdin, loop, on_body, on_eof, initial).start()
        if self._relay is not None:
            relay = self._relay

            def relay_readable() -> None:
                try:
                    data = relay.recv(64)
                except (BlockingIOError, InterruptedError):
                    return
                except OSError:
                    data = b""
                if not data:
                    self._unwatch()
                    on_eof()

            loop.add_reader(relay.fileno(), relay_readable)
            self._watching = True

    def _unwatch(self) -> None:
        if self._watching and self._relay is not None:
            self._watching = False
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self._relay.fileno())

    def close(self, exit_code: int) -> None:
        """End the connection (what was not written by now is dropped: a client that
        stopped reading must not keep it open) and tell the relay, if any."""
        self._unwatch()
        if self._owns:
            taken = set()
            for transport in self._transports:
                taken.add(id(transport.get_extra_info("pipe")))
                if transport.is_closing():
                    continue
                if isinstance(transport, asyncio.WriteTransport):
                    transport.abort()
                else:
                    transport.close()
            for stream in (self.stdin, self.stdout):
                if id(stream) not in taken:
                    with contextlib.suppress(OSError, ValueError):
                        stream.close()
        if self._on_close is not None:
            self._on_close(exit_code)


class _SocketProtocol(_WriteProtocol):
    """Both directions of a client's socket; reading starts with :meth:`start`."""

    def __init__(self, on_broken: Callable[[], None], initial: bytes) -> None:
        super().__init__(on_broken)
        self._initial = initial
        self._parser: FrameParser | None = None
        self._on_eof: Callable[[], None] | None = None
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        transport.pause_reading()

    def start(self, on_body: Callable[[bytes], None], on_eof: Callable[[], None]) -> None:
        self._parser = FrameParser(on_body)
        self._on_eof = on_eof
        initial, self._initial = self._initial, b""
        if initial:
            self._parser.feed(initial)
        if self._transport is not None and not self._transport.is_closing():
            self._transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        if self._parser is not None:
            self._parser.feed(data)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self._on_eof is not None:
            self._on_eof()


class SocketConnection:
    """A client on a connected stream socket (the host's Unix socket)."""

    def __init__(self, sock: socket.socket, initial: bytes = b"") -> None:
        self.sock = sock
        self._initial = initial
        self._protocol: _SocketProtocol | None = None
        self._transport: asyncio.BaseTransport | None = None

    async def open_writer(self, on_broken: Callable[[], None]) -> Writer:
        loop = asyncio.get_running_loop()
        transport, proto = await loop.connect_accepted_socket(
            lambda: _SocketProtocol(on_broken, self._initial), sock=self.sock)
        self._protocol, self._transport = proto, transport
        assert isinstance(transport, asyncio.WriteTransport)
        return TransportWriter(transport, proto)

    async def start_reading(self, on_body: Callable[[bytes], None],
                            on_eof: Callable[[], None]) -> None:
        assert self._protocol is not None, "open_writer first"
        self._protocol.start(on_body, on_eof)

    def close(self, exit_code: int) -> None:
        """End the connection; what was not written by now is dropped."""
        if isinstance(self._transport, asyncio.WriteTransport):
            if not self._transport.is_closing():
                self._transport.abort()
        else:
            self.sock.close()


Connection = StdioConnection | SocketConnection


class FramedOutbox:
    """A session's :class:`~sidecar.host.session.Outbox` on a ``Content-Length``-framed
    byte stream. A notification every session sends (the same params object, see
    :func:`sidecar.host.session._wire`) is encoded once."""

    _last: tuple[Any, Any, bytes] | None = None  # (method, params, framed bytes)

    def __init__(self, writer: Writer) -> None:
        self.writer = writer

    def send(self, message: dict[str, Any]) -> None:
        last = FramedOutbox._last
        params, method = message.get("params"), message.get("method")
        if "id" in message or method is None:
            data = frame(message)
        elif last is not None and last[1] is params and last[0] == method:
            data = last[2]
        else:
            data = frame(message)
            FramedOutbox._last = (method, params, data)
        self.writer.write(data)

    @property
    def pending_bytes(self) -> int:
        return self.writer.pending_bytes
