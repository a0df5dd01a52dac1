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
        self._file: object | None = None
        self._fd: int | None = None
        self._spill_path: str | None = None
        self._read_fd: int | None = None  # the unlinked temporary spill file
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
        """Record ``data``."""
        self.size += len(data)
        if self._fd is None or self._fd < 0:
            self._chunks.append(data)
            self._mem += len(data)
            if self._mem > self._spill_at:
                self._spill()
        else:
            os.write(self._fd, data)
            self._tail += data
            if len(self._tail) > 2 * self._tail_bytes:
                del self._tail[: len(self._tail) - self._tail_bytes]

    def _spill(self) -> None:
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._spill_path = str(self.path)
            self._fd = os.open(self._spill_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        else:
            # Unlinked at once and read back through the descriptor: nothing is left behind,
            # even if this process is killed.
            self._fd, self._spill_path = tempfile.mkstemp(
                prefix="sidecar-output-", suffix=".txt", dir=self._spill_dir)
            os.unlink(self._spill_path)
            self._read_fd = self._fd
            weakref.finalize(self, os.close, self._fd)
        data = b"".join(self._chunks)
        self._chunks.clear()
        self._mem = 0
        os.write(self._fd, data)
        self._tail = bytearray(data[-self._tail_bytes:])

    def finish(self) -> str:
        """Flush; write the output file if storage is on. Returns the decoder's remainder."""
        rest = self._decoder.decode(b"", final=True)
        if self._fd is not None and self._read_fd is None:
            os.close(self._fd)
        elif self._fd is None and self.path is not None:
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
        if self._spill_path is None:
            data = b"".join(self._chunks)[-max_bytes:]
        else:
            data = bytes(self._tail[-max_bytes:])
        return data.decode("utf-8", errors="replace")

