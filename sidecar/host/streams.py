"""Output chunks: coalescing, numbering, filtering and backpressure (protocol.md, "Output
chunks" and "Backpressure").

The core publishes an :class:`~sidecar.core.events.OutputEvent` for every pipe read. Per run,
:class:`ChunkStreamer` appends them to a buffer and sends one ``sidecar/outputChunk`` when the
buffer reaches ``chunk_max_bytes``, every ``chunk_interval_ms`` otherwise, and at the end of the
run (:meth:`ChunkStreamer.finish`, called before the final ``sidecar/runUpdate`` is sent).

Backpressure: before sending a chunk the streamer looks at the bytes queued for the client
(:attr:`QueueWriter.pending_bytes`). Above ``max_pending_bytes`` the chunk's text is not sent;
its byte range is remembered instead. When sending resumes (or at the end of the run) one chunk
with ``dropped: true`` and empty text covers the whole skipped range, so ``seq`` stays
contiguous and offsets stay exact; the client fetches the range with ``sidecar/readOutput``.
The server therefore holds at most one buffer (≤ ``chunk_max_bytes`` plus one pipe read) per
live run plus ``max_pending_bytes`` of queued chunk text (+ the one message that crossed it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from sidecar.app.protocol import N_OUTPUT_CHUNK, InitializationOptions, OutputChunk, to_wire
from sidecar.core.events import OutputEvent


class _Stream:
    __slots__ = ("run_id", "command", "parts", "start", "size", "seq", "drop_start", "drop_size",
                 "enabled", "last_line")

    def __init__(self, run_id: str, command: str, enabled: bool) -> None:
        self.run_id = run_id
        self.command = command
        self.parts: list[str] = []
        self.start = 0
        self.size = 0
        self.seq = 0
        self.drop_start = 0
        self.drop_size = 0
        self.enabled = enabled
        self.last_line = ""


class ChunkStreamer:
    """One client's output chunks. ``options`` are the client's (``chunkIntervalMs``,
    ``chunkMaxBytes``, ``maxPendingBytes``, ``outputChunks``)."""

    def __init__(self, notify: Callable[[str, Any], None], pending_bytes: Callable[[], int],
                 options: InitializationOptions) -> None:
        self._notify = notify
        self._pending_bytes = pending_bytes
        self.configure(options)
        self._streams: dict[str, _Stream] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._command_filter: dict[str, bool] = {}
        self._run_filter: dict[str, bool] = {}
        self.dropped_bytes = 0
        """Total bytes whose text was dropped (for logs/tests)."""
        self.on_line: Callable[[str, str], None] | None = None
        """Called with (run_id, last complete-or-partial output line) per received event."""

    def configure(self, options: InitializationOptions) -> None:
        self.interval = options.chunk_interval_ms / 1000
        self.max_bytes = options.chunk_max_bytes
        self.max_pending = options.max_pending_bytes
        self.default_enabled = options.output_chunks == "all"

    # ---------------------------------------------------------------- filters
    def set_filter(self, enabled: bool, commands: list[str] | None,
                   run_ids: list[str] | None) -> None:
        if commands is None and run_ids is None:
            self.default_enabled = enabled
            self._command_filter.clear()
            self._run_filter.clear()
        for c in commands or ():
            self._command_filter[c] = enabled
        for r in run_ids or ():
            self._run_filter[r] = enabled
        for s in self._streams.values():
            s.enabled = self._enabled_for(s.run_id, s.command)

    def _enabled_for(self, run_id: str, command: str) -> bool:
        if run_id in self._run_filter:
            return self._run_filter[run_id]
        return self._command_filter.get(command, self.default_enabled)

    # ---------------------------------------------------------------- events
    def start_run(self, run_id: str, command: str) -> None:
        self._streams[run_id] = _Stream(run_id, command, self._enabled_for(run_id, command))

    def on_output(self, ev: OutputEvent) -> None:
        s = self._streams.get(ev.run_id)
        if s is None:  # a run that started before this session: its output from here on
            s = self._streams[ev.run_id] = _Stream(ev.run_id, ev.command,
                                                    self._enabled_for(ev.run_id, ev.command))
        if self.on_line is not None and ev.text:
            text = ev.text.rstrip("\r\n")
            if text:
                s.last_line = text.rsplit("\n", 1)[-1][-200:]
                self.on_line(ev.run_id, s.last_line)
        if not s.enabled:
            return
        if not s.parts and s.size == 0:
            s.start = ev.offset
        if ev.size == 0 and not ev.text:
            return
        s.parts.append(ev.text)
        s.size += ev.size
        if s.size >= self.max_bytes:
            self._flush(s)
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.interval, self._flush_all)

    def _flush_all(self) -> None:
        self._timer = None
        for s in list(self._streams.values()):
            if s.parts:
                self._flush(s)

    def _send(self, chunk: OutputChunk) -> None:
        self._notify(N_OUTPUT_CHUNK, to_wire(chunk))

    def _send_dropped(self, s: _Stream) -> None:
        if s.drop_size:
            self._send(OutputChunk(s.run_id, s.command, s.seq, s.drop_start, s.drop_size, "",
                                   dropped=True))
            s.seq += 1
            s.drop_size = 0

    def _flush(self, s: _Stream, final: bool = False) -> None:
        if not s.parts:
            if final:
                self._send_dropped(s)
            return
        text = "".join(s.parts)
        start, size = s.start, s.size
        s.parts = []
        s.start = start + size
        s.size = 0
        if self._pending_bytes() + len(text) > self.max_pending:
            # Backpressure: keep the range, not the text.
            if not s.drop_size:
                s.drop_start = start
            s.drop_size = start + size - s.drop_start
            self.dropped_bytes += size
            if final:
                self._send_dropped(s)
            return
        self._send_dropped(s)
        self._send(OutputChunk(s.run_id, s.command, s.seq, start, size, text))
        s.seq += 1

    def finish(self, run_id: str) -> None:
        """The run is final: send what is buffered (and any dropped range), forget the run."""
        s = self._streams.pop(run_id, None)
        if s is not None and s.enabled:
            self._flush(s, final=True)
        self._run_filter.pop(run_id, None)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._streams.clear()
