"""LSP base-protocol framing: ``Content-Length: N\\r\\n\\r\\n`` then N bytes of JSON.

Standard library only (no asyncio): the host's transports and the thin command-line clients
(``sidecar save``, the ``sidecar serve`` relay) share it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any


def frame(message: dict[str, Any], *, ascii: bool = False) -> bytes:
    """A framed JSON-RPC message: UTF-8 JSON, or ASCII JSON (``\\uXXXX`` escapes) with
    ``ascii`` or when a string holds a lone surrogate, which UTF-8 cannot carry but JSON text
    can."""
    try:
        body = json.dumps(message, ensure_ascii=ascii).encode("utf-8")
    except UnicodeEncodeError:
        body = json.dumps(message).encode()
    return b"Content-Length: %d\r\n\r\n" % len(body) + body


def split_frame(data: bytes) -> tuple[bytes, bytes] | None:
    """The first framed body in ``data`` and the bytes after it; None while incomplete.
    Raises ValueError for a header without a valid ``Content-Length``."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return None
    length = -1
    for line in data[:end].splitlines():
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length" and value.strip().isdigit():
            length = int(value.strip())
    if length < 0:
        raise ValueError("a message without a valid Content-Length")
    start = end + 4
    if len(data) < start + length:
        return None
    return data[start:start + length], data[start + length:]


class FrameParser:
    """Incremental ``Content-Length`` frame parser: feed bytes, get message bodies."""

    def __init__(self, on_body: Callable[[bytes], None]) -> None:
        self._buf = bytearray()
        self._length = -1
        self._on_body = on_body

    def feed(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        while True:
            if self._length < 0:
                end = buf.find(b"\r\n\r\n")
                sep = 4
                if end < 0:
                    end = buf.find(b"\n\n")
                    sep = 2
                    if end < 0:
                        return
                length = -1
                for line in bytes(buf[:end]).splitlines():
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        try:
                            length = int(value.strip())
                        except ValueError:
                            length = -1
                del buf[: end + sep]
                if length < 0:
                    import logging

                    logging.getLogger("sidecar.transport").warning(
                        "dropping a message without a valid Content-Length")
                    continue
                self._length = length
            if len(buf) < self._length:
                return
            body = bytes(buf[: self._length])
            del buf[: self._length]
            self._length = -1
            self._on_body(body)
