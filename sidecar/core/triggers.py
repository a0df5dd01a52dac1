"""Trigger names, pattern matching, the trigger graph and its cycles.

Any string is a trigger. Each run emits auto-events ``command_started:X``, then one of
``command_success:X``, ``command_failed:X``, ``command_cancelled:X``. Patterns in ``triggers``,
``cancel_on_triggers`` and ``on_event`` may use ``*`` (any run of characters).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

AUTO_EVENT_KINDS = ("command_started", "command_success", "command_failed", "command_cancelled")
LIFECYCLE_EVENTS = ("orchestrator_started", "orchestrator_shutdown")


def auto_events(command: str) -> list[str]:
    return [f"{kind}:{command}" for kind in AUTO_EVENT_KINDS]


def split_auto_event(event: str) -> tuple[str, str] | None:
    """``("command_success", "Lint")`` for ``command_success:Lint``; None otherwise."""
    kind, sep, name = event.partition(":")
    if sep and kind in AUTO_EVENT_KINDS and name:
        return kind, name
    return None


@lru_cache(maxsize=1024)
def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile(re.escape(pattern).replace(r"\*", ".*"))


def matches(pattern: str, event: str) -> bool:
    """Exact match, or ``*`` wildcard match of the whole name."""
    if pattern == event:
        return True
    return "*" in pattern and _regex(pattern).fullmatch(event) is not None


@dataclass
class TriggerContext:
    """The chain of events that led here (``history``) and the set used for loop detection.

    ``vars`` are caller-supplied runtime variables that travel with the chain. ``started_by``
    names who caused the chain (a client, ``cli``…; None for lifecycle events); runs of the
    chain inherit it. ``upstream`` is the ``(event, run_id)`` of each run whose auto-event led
    here, oldest first.
    """

    seen: set[str] = field(default_factory=set)
    history: list[str] = field(default_factory=list)
    vars: dict[str, str] = field(default_factory=dict)
    started_by: str | None = None
    upstream: list[tuple[str, str]] = field(default_factory=list)


class TriggerIndex:
    """Which commands listen to which triggers; exact names in a dict, wildcards scanned."""

    def __init__(self, listeners: Mapping[str, Sequence[str]]) -> None:
        self._exact: dict[str, list[str]] = {}
        self._wild: list[tuple[str, str]] = []
        for command, patterns in listeners.items():
            for pattern in patterns:
                if "*" in pattern:
                    self._wild.append((pattern, command))
                else:
                    self._exact.setdefault(pattern, []).append(command)

    def commands_for(self, event: str) -> list[str]:
        """Commands listening to ``event``: exact matches first, then wildcard, no repeats."""
        out = list(self._exact.get(event, ()))
        for pattern, command in self._wild:
            if command not in out and matches(pattern, event):
                out.append(command)
        return out


def command_graph(triggers: Mapping[str, Sequence[str]]) -> dict[str, list[tuple[str, str]]]:
    """Edges ``A -> [(B, event)]``: an auto-event of A starts B."""
    index = TriggerIndex(triggers)
    graph: dict[str, list[tuple[str, str]]] = {}
    for a in triggers:
        edges: list[tuple[str, str]] = []
        for event in auto_events(a):
            for b in index.commands_for(event):
                edges.append((b, event))
        graph[a] = edges
    return graph


def find_cycles(triggers: Mapping[str, Sequence[str]]) -> list[list[tuple[str, str]]]:
    """Elementary trigger cycles, each as ``[(command, event that starts the next), …]``,
    one per strongly-connected group, rotated to start at its first command in config order."""
    graph = command_graph(triggers)
    order = {name: i for i, name in enumerate(triggers)}
    cycles: list[list[tuple[str, str]]] = []
    covered: set[str] = set()
    for start in triggers:
        if start in covered:
            continue
        path = _cycle_from(start, graph)
        if path:
            steps = path
            first = min(range(len(steps)), key=lambda i: order[steps[i][0]])
            steps = steps[first:] + steps[:first]
            names = {n for n, _ in steps}
            if not names & covered:
                cycles.append(steps)
            covered |= names
    return cycles


def _cycle_from(
    start: str, graph: Mapping[str, list[tuple[str, str]]]
) -> list[tuple[str, str]] | None:
    """Shortest cycle through ``start`` (BFS), as (command, event) steps."""
    parents: dict[str, tuple[str, str]] = {}
    frontier = [start]
    visited = {start}
    while frontier:
        nxt: list[str] = []
        for node in frontier:
            for target, event in graph.get(node, ()):
                if target == start:
                    steps = [(node, event)]
                    while node != start:
                        prev, ev = parents[node]
                        steps.append((prev, ev))
                        node = prev
                    return list(reversed(steps))
                if target not in visited:
                    visited.add(target)
                    parents[target] = (node, event)
                    nxt.append(target)
        frontier = nxt
    return None


def emitted_events(commands: Iterable[str]) -> set[str]:
    """Every event the orchestrator itself can emit for these commands."""
    out = set(LIFECYCLE_EVENTS)
    for name in commands:
        out.update(auto_events(name))
    return out
