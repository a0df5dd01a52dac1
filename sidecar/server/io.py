"""Stdio transport that never blocks the event loop.

pygls' own ``StdoutWriter`` writes and flushes synchronously on the event loop: a client that
stops reading fills the pipe and freezes the whole server (and with it every command whose
output the loop reads). :class:`QueueWriter` instead queues encoded messages and writes them
from a daemon thread; :attr:`QueueWriter.pending_bytes` is what the output streamer checks for
its backpressure cap (see protocol.md, "Backpressure").

:class:`FrameReader` reads LSP-framed messages (``Content-Length`` headers) from stdin in a
daemon thread and hands each body to the loop; end of input (the client closed the pipe or
died) is reported through ``on_eof``. Daemon threads never keep the process alive at exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections import deque
from collections.abc import Callable
from typing import BinaryIO

logger = logging.getLogger("sidecar.server.io")


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
                 on_body: Callable[[bytes], None], on_eof: Callable[[], None]) -> None:
        self._stream = stream
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

    def _reader(self) -> tuple[Callable[[], bytes], Callable[[int], bytes]]:
        """readline/read over the raw fd (no buffered-object lock, which a daemon thread
        blocked in it would hold at interpreter shutdown), or the stream's own methods."""
        try:
            fd = self._stream.fileno()
        except (AttributeError, OSError, ValueError):
            return self._stream.readline, self._stream.read
        buf = bytearray()
        eof = False

        def fill() -> bool:
            nonlocal eof
            if eof:
                return False
            data = os.read(fd, 1 << 16)
            if not data:
                eof = True
                return False
            buf.extend(data)
            return True

        def readline() -> bytes:
            while True:
                i = buf.find(b"\n")
                if i >= 0:
                    line = bytes(buf[: i + 1])
                    del buf[: i + 1]
                    return line
                if not fill():
                    line = bytes(buf)
                    buf.clear()
                    return line

        def read(n: int) -> bytes:
            while len(buf) < n and fill():
                pass
            data = bytes(buf[:n])
            del buf[:n]
            return data

        return readline, read

    def _run(self) -> None:
        try:
            readline, read = self._reader()
            while True:
                length = -1
                while True:
                    line = readline()
                    if not line:
                        return
                    if line in (b"\r\n", b"\n"):
                        if length >= 0:
                            break
                        continue
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        try:
                            length = int(value.strip())
                        except ValueError:
                            length = -1
                body = read(length) if length > 0 else b""
                if length > 0 and len(body) < length:
                    return
                if not self._post(self._on_body, body):
                    return
        except (OSError, ValueError):
            logger.debug("stdin closed", exc_info=True)
        finally:
            self._post(self._on_eof)
