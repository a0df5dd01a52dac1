"""Output capture with bounded memory.

Small outputs stay in RAM. Past ``spill_at`` bytes everything goes to a file (the run's output
file when output storage is on, else an already-unlinked temporary file, read back through its
descriptor and closed with the run record) and only a
``tail_bytes`` tail stays in RAM. ``text()`` still returns the whole output.
"""

from __future__ import annotations

import codecs
import os
import tempfile
import weakref
from pathlib import Path

SPILL_AT = 1 << 20
TAIL_BYTES = 64 << 10


class OutputCapture:
    def __init__(
        self,
        path: Path | None = None,
        spill_dir: str | None = None,
        spill_at: int = SPILL_AT,
        tail_bytes: int = TAIL_BYTES,
    ) -> None:
        self.path = path  # final file (output storage) or None
        self._spill_dir = spill_dir
        self._spill_at = spill_at
        self._tail_bytes = tail_bytes
        self._chunks: list[bytes] = []
        self._mem = 0
        self._fd: int | None = None
        self._spill_path: str | None = None
        self._read_fd: int | None = None  # the unlinked temporary spill file
        self._lost = False  # the disk refused; only the tail is kept
        #: why (part of) the output could not be written, if it could not
        self.write_error: str | None = None
        self._tail = bytearray()
        self.size = 0
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")

    @property
    def spilled(self) -> bool:
        return self._spill_path is not None

    def decode(self, data: bytes) -> str:
        """``data`` (the bytes just fed) as text; incremental, so split UTF-8 is fine."""
        return self._decoder.decode(data)

    def feed(self, data: bytes) -> None:
        """Record ``data``. Never raises: a write error is kept in :attr:`write_error`."""
        self.size += len(data)
        if self._lost:
            self._keep_tail(data)
        elif self._fd is None or self._fd < 0:
            self._chunks.append(data)
            self._mem += len(data)
            if self._mem > self._spill_at:
                self._spill()
        else:
            try:
                os.write(self._fd, data)
            except OSError as exc:
                self._give_up(exc)
            self._keep_tail(data)

    def _keep_tail(self, data: bytes) -> None:
        self._tail += data
        if len(self._tail) > 2 * self._tail_bytes:
            del self._tail[: len(self._tail) - self._tail_bytes]

    def _give_up(self, exc: OSError) -> None:
        """The disk refused: from here on only the tail is kept (memory stays bounded)."""
        self.write_error = f"output truncated at byte {self.size}: {exc}"
        self._lost = True
        if self._chunks:
            self._tail = bytearray(b"".join(self._chunks)[-self._tail_bytes:])
            self._chunks.clear()
            self._mem = 0

    def _spill(self) -> None:
        if self.path is not None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                self._spill_path = str(self.path)
            except OSError as exc:
                self.write_error = f"cannot write {self.path} ({exc}); output kept elsewhere"
                self.path = None
        if self.path is None:
            # Unlinked at once and read back through the descriptor: nothing is left behind,
            # even if this process is killed.
            try:
                self._fd, self._spill_path = tempfile.mkstemp(
                    prefix="sidecar-output-", suffix=".txt", dir=self._spill_dir)
            except OSError as exc:
                self._give_up(exc)
                return
            os.unlink(self._spill_path)
            self._read_fd = self._fd
            weakref.finalize(self, os.close, self._fd)
        assert self._fd is not None
        data = b"".join(self._chunks)
        self._chunks.clear()
        self._mem = 0
        self._tail = bytearray(data[-self._tail_bytes:])
        try:
            os.write(self._fd, data)
        except OSError as exc:
            self._give_up(exc)

    def finish(self) -> str:
        """Flush; write the output file if storage is on. Returns the decoder's remainder."""
        rest = self._decoder.decode(b"", final=True)
        if self._fd is not None and self._fd >= 0 and self._read_fd is None:
            os.close(self._fd)
        elif self._fd is None and self.path is not None and (self._chunks or self._spill_at):
            # (spill_at 0: the file is written as output arrives; no output, no file)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_bytes(b"".join(self._chunks))
        self._fd = -1
        return rest

    def read(self, offset: int = 0, length: int | None = None) -> bytes:
        """Bytes ``[offset, offset+length)`` of the output so far."""
        end = self.size if length is None else min(self.size, offset + length)
        if offset >= end:
            return b""
        if self._spill_path is None:
            return b"".join(self._chunks)[offset:end]
        if self._read_fd is not None:
            return os.pread(self._read_fd, end - offset, offset)
        with open(self._spill_path, "rb") as f:
            f.seek(offset)
            return f.read(end - offset)

    def text(self) -> str:
        return self.read().decode("utf-8", errors="replace")

    def tail(self, max_bytes: int = 4096) -> str:
        if self._spill_path is None and not self._lost:
            data = b"".join(self._chunks)[-max_bytes:]
        else:
            data = bytes(self._tail[-max_bytes:])
        return data.decode("utf-8", errors="replace")

