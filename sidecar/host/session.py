"""A session: what belongs to one client connection of a host.

A :class:`Session` holds the client's options (``initializationOptions``), its output filter
and chunk streamer (:mod:`sidecar.host.streams`), the gates that hold notifications caused by
a request until its response is written, and an optional progress reporter. It turns the
host's core events into the protocol's notifications (``sidecar/event``,
``sidecar/runUpdate``, ``sidecar/outputChunk``; wire forms from :mod:`sidecar.app.protocol`)
and hands them to its :class:`Outbox`, which knows nothing of sessions (framing, flow control
and the count of bytes not yet written belong to the transport, :mod:`sidecar.host.transport`).

Closing a session detaches it from the host; it never ends the host.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from typing import Any, Protocol

from sidecar.app import protocol as P
from sidecar.core.events import Event, OutputEvent, RunEvent, TriggerEvent

from .host import Host
from .streams import ChunkStreamer


class Outbox(Protocol):
    """Where a session's messages go: ``send`` one JSON-RPC message (a dict);
    ``pending_bytes`` is what has been sent and not yet written to the client."""

    def send(self, message: dict[str, Any]) -> None: ...

    @property
    def pending_bytes(self) -> int: ...


class ProgressReporter(Protocol):
    """Per-run progress for clients that show it (LSP ``$/progress``)."""

    def started(self, event: RunEvent) -> None: ...

    def line(self, run_id: str, line: str) -> None: ...

    def finished(self, event: RunEvent) -> None: ...


class _Gate:
    """Holds notifications caused by a request until its response has been written (only
    the requesting session's: other sessions see them at once)."""

    __slots__ = ("open", "items", "runs", "session")

    def __init__(self, session: Session) -> None:
        self.session = session
        self.open = False
        self.items: list[dict[str, Any]] = []
        self.runs: set[str] = set()


_gate_var: contextvars.ContextVar[_Gate | None] = contextvars.ContextVar("sidecar_gate",
                                                                        default=None)


class Session:
    """One client of a :class:`Host`."""

    def __init__(self, host: Host, outbox: Outbox,
                 options: P.InitializationOptions | None = None) -> None:
        self.host = host
        self.outbox = outbox
        self.options = options if options is not None else P.InitializationOptions()
        self.streamer = ChunkStreamer(self._send_chunk, lambda: self.outbox.pending_bytes,
                                      self.options)
        self.progress: ProgressReporter | None = None
        self._gates: dict[Any, _Gate] = {}
        self._held_runs: dict[str, _Gate] = {}
        self._detach: Callable[[], None] | None = host.add_listener(self._on_event)
        self.closed = False
        #: the client's name (``clientInfo.name``; ``cli``, ``hook``, ``mcp`` …)
        self.client_name: str | None = None
        #: set by the frontend: ends this client's connection (see :meth:`end`)
        self.on_end: Callable[[], None] | None = None
        host.attach(self)

    def configure(self, options: P.InitializationOptions,
                  progress: ProgressReporter | None = None) -> None:
        """Apply the client's options (and its progress reporter, if it shows progress)."""
        self.options = options
        self.streamer.configure(options)
        self.progress = progress
        self.streamer.on_line = progress.line if progress is not None else None

    # ------------------------------------------------------------------ sending
    def notify(self, method: str, params: Any, run_id: str | None = None) -> None:
        """Send a notification, unless it must wait for a response (see :meth:`hold`)."""
        gate = self._held_runs.get(run_id) if run_id is not None else None
        if gate is None:
            g = _gate_var.get()
            if g is not None and not g.open and g.session is self:
                gate = g
                if run_id is not None:
                    g.runs.add(run_id)
                    self._held_runs[run_id] = g
        message = {"jsonrpc": "2.0", "method": method, "params": params}
        if gate is not None and not gate.open:
            gate.items.append(message)
        elif not self.closed:
            self.outbox.send(message)

    def _send_chunk(self, method: str, params: dict[str, Any]) -> None:
        self.notify(method, params, params["runId"])

    def hold(self, request_id: Any) -> None:
        """Hold the notifications this request causes (in the current context), and later
        ones of the runs it starts, until :meth:`response_sent` for it: a client sees a
        request's result before the updates of the runs it names."""
        gate = _Gate(self)
        self._gates[request_id] = gate
        _gate_var.set(gate)

    def response_sent(self, request_id: Any) -> None:
        gate = self._gates.pop(request_id, None)
        if gate is not None:
            self._release(gate)

    def _release(self, gate: _Gate) -> None:
        gate.open = True
        for r in gate.runs:
            if self._held_runs.get(r) is gate:
                del self._held_runs[r]
        items, gate.items = gate.items, []
        if not self.closed:
            for message in items:
                self.outbox.send(message)

    # ------------------------------------------------------------------ core events
    def _on_event(self, ev: Event) -> None:
        if isinstance(ev, OutputEvent):
            self.streamer.on_output(ev)
        elif isinstance(ev, RunEvent):
            if ev.previous is None:
                self.streamer.start_run(ev.run_id, ev.command)
                if self.progress is not None:
                    self.progress.started(ev)
            final = ev.state in P.FINAL_STATES
            if final:
                self.streamer.finish(ev.run_id)
            self.notify(P.N_RUN_UPDATE, P.to_wire(P.RunUpdate.of(ev)), ev.run_id)
            if final and self.progress is not None:
                self.progress.finished(ev)
        elif isinstance(ev, TriggerEvent):
            self.notify(P.N_EVENT, P.to_wire(P.EventNotification.of(ev)), ev.run_id)

    # ------------------------------------------------------------------ end
    def end(self) -> None:
        """Ask the frontend to end this client's connection (the host is stopping)."""
        if self.on_end is not None and not self.closed:
            self.on_end()

    def close(self) -> None:
        """Send what is held, stop streaming and detach from the host (which goes on)."""
        if self._detach is not None:
            self._detach()
            self._detach = None
        self.streamer.close()
        for gate in list(self._gates.values()):
            self._release(gate)
        self._gates.clear()
        if not self.closed:
            self.closed = True
            self.host.detach(self)
