"""The event stream: every trigger, run state change and output chunk, to any number of
subscribers.

Listeners are plain callables invoked synchronously in publish order (cheap; the language
server uses one). :meth:`EventBus.subscribe` gives an async iterator with a bounded queue: when
a subscriber falls behind, *output chunks* are dropped for it (chunks carry ``seq`` and byte
``offset``, so the gap is visible and the bytes can be read back with ``read_output``), while
trigger and run events are always delivered.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, fields

from .runs import RunSnapshot

logger = logging.getLogger("sidecar.events")


@dataclass(frozen=True, slots=True)
class TriggerEvent:
    """A trigger fired. ``kind``: ``trigger`` (from a caller), ``auto`` (``command_*:X``) or
    ``lifecycle`` (``orchestrator_started``/``orchestrator_shutdown``). ``chain`` is the trigger
    chain that led to this event, ending with it. ``run_id`` is the run that emitted an auto
    event."""

    name: str
    kind: str
    chain: tuple[str, ...]
    time: dt.datetime
    run_id: str | None = None
    command: str | None = None


@dataclass(frozen=True, slots=True)
class RunEvent(RunSnapshot):
    """A run changed state (from ``previous``; None for a new run): the run's
    :class:`~sidecar.core.runs.RunSnapshot` at that moment, plus ``previous``."""

    previous: str | None = None

    @classmethod
    def of(cls, snapshot: RunSnapshot, previous: str | None = None) -> RunEvent:
        return cls(**{name: getattr(snapshot, name) for name in _SNAPSHOT_FIELDS},
                   previous=previous)


_SNAPSHOT_FIELDS = tuple(f.name for f in fields(RunSnapshot))


@dataclass(frozen=True, slots=True)
class OutputEvent:
    """Output of a run: ``text`` decoded from ``size`` bytes starting at byte ``offset``;
    ``seq`` counts a run's chunks from 0."""

    run_id: str
    command: str
    seq: int
    offset: int
    size: int
    text: str


Event = TriggerEvent | RunEvent | OutputEvent
Listener = Callable[[Event], None]


class Subscription:
    """Async iterator over events; see the module doc for the drop policy."""

    def __init__(self, bus: EventBus, max_pending_output: int) -> None:
        self._bus = bus
        self._queue: deque[Event] = deque()
        self._pending_output = 0
        self._max_pending_output = max_pending_output
        self._waiter: asyncio.Future[None] | None = None
        self.dropped_chunks = 0
        self._closed = False

    def _push(self, event: Event) -> None:
        if isinstance(event, OutputEvent):
            if self._pending_output + event.size > self._max_pending_output:
                self.dropped_chunks += 1
                return
            self._pending_output += event.size
        self._queue.append(event)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def __aiter__(self) -> AsyncIterator[Event]:
        return self

    async def __anext__(self) -> Event:
        while not self._queue:
            if self._closed:
                raise StopAsyncIteration
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        event = self._queue.popleft()
        if isinstance(event, OutputEvent):
            self._pending_output -= event.size
        return event

    def get_nowait(self) -> Event | None:
        if not self._queue:
            return None
        event = self._queue.popleft()
        if isinstance(event, OutputEvent):
            self._pending_output -= event.size
        return event

    def close(self) -> None:
        self._closed = True
        self._bus._subs.discard(self)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


class EventBus:
    def __init__(self) -> None:
        self._listeners: list[Listener] = []
        self._subs: set[Subscription] = set()

    @property
    def has_subscribers(self) -> bool:
        """False while nobody listens: publishers may skip building events."""
        return bool(self._listeners or self._subs)

    def add_listener(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(event)`` for every event; returns a function that removes it."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def subscribe(self, max_pending_output: int = 8 << 20) -> Subscription:
        sub = Subscription(self, max_pending_output)
        self._subs.add(sub)
        return sub

    def publish(self, event: Event) -> None:
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                logger.exception("event listener failed")
        for sub in list(self._subs):
            sub._push(event)
