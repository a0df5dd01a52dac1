"""Shared helpers for the core tests (imported as a plain module; not collected)."""

from __future__ import annotations

import asyncio
import os
import shlex
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import psutil
import pytest

from sidecar import (
    CommandConfig,
    CommandOrchestrator,
    OutputEvent,
    OutputStorageConfig,
    RunEvent,
    RunnerConfig,
    TriggerEvent,
)

PY = sys.executable
TREE_SCRIPT = "sleep 100 & sleep 100; wait"


def py(code: str) -> str:
    """A command string running ``code`` with this interpreter (exec'd, no shell)."""
    return f"{shlex.quote(PY)} -c {shlex.quote(code)}"


def marker() -> str:
    return f"sidecar-test-{uuid.uuid4().hex[:12]}"


def tree_cmd(mark: str) -> str:
    """``sh -c 'sleep 100 & sleep 100; wait'`` with ``$0`` set to a unique marker."""
    return f"sh -c '{TREE_SCRIPT}' {mark}"


# Orchestrators made by orch_of in the current test; conftest shuts them down afterwards so
# no test leaves processes running past its event loop.
CREATED: list[CommandOrchestrator] = []


@pytest.fixture(autouse=True)
async def shutdown_created_orchestrators():
    """Shut down every orchestrator a test built with ``orch_of`` (same loop). Autouse in the
    directories whose conftest imports it (tests/core, tests/adapters)."""
    CREATED.clear()
    yield
    created = list(CREATED)
    CREATED.clear()
    for orch in created:
        if not orch.is_shutdown:
            await asyncio.wait_for(orch.shutdown(timeout=5), 10)


def orch_of(*commands: CommandConfig, storage: OutputStorageConfig | None = None,
            vars: dict[str, str] | None = None, **kw: Any) -> CommandOrchestrator:
    cfg = RunnerConfig(commands=list(commands),
                       output_storage=storage or OutputStorageConfig())
    orch = CommandOrchestrator(cfg, vars=vars, **kw)
    CREATED.append(orch)
    return orch


def wait_until(pred: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02,
               what: str = "condition") -> Any:
    """Poll an *external* condition (processes, files) with a deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def alive(pid: int) -> bool:
    """True if ``pid`` runs (zombies count as gone: PID 1 here may not reap orphans)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def group_members(pgid: int) -> list[int]:
    out = []
    for p in psutil.process_iter(["pid"]):
        try:
            if os.getpgid(p.pid) == pgid and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p.pid)
        except (ProcessLookupError, psutil.NoSuchProcess):
            continue
    return out


def find_tree(mark: str, timeout: float = 10.0) -> tuple[int, list[int]]:
    """(leader pid, the two ``sleep`` pids) of the tree started with :func:`tree_cmd`."""

    def probe() -> tuple[int, list[int]] | None:
        for p in psutil.process_iter(["pid", "cmdline"]):
            cmdline = p.info["cmdline"] or []
            if cmdline and cmdline[-1] == mark and TREE_SCRIPT in cmdline:
                try:
                    sleeps = [c.pid for c in p.children() if c.name() == "sleep"]
                except psutil.NoSuchProcess:
                    return None
                if len(sleeps) == 2:
                    return p.pid, sleeps
        return None

    return wait_until(probe, timeout, what=f"process tree {mark}")


def assert_tree_gone(leader: int, sleeps: Iterable[int], timeout: float = 10.0) -> None:
    pids = [leader, *sleeps]
    wait_until(lambda: not any(alive(p) for p in pids), timeout,
               what=f"processes {pids} to exit")
    assert group_members(leader) == []


class Recorder:
    """An ``add_listener`` target that keeps every event."""

    def __init__(self) -> None:
        self.events: list[Any] = []

    def __call__(self, event: Any) -> None:
        self.events.append(event)

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]

    def triggers(self) -> list[str]:
        return [e.name for e in self.of(TriggerEvent)]

    def states(self, run_id: str) -> list[str]:
        return [e.state for e in self.of(RunEvent) if e.run_id == run_id]

    def output(self, run_id: str) -> list[OutputEvent]:
        return [e for e in self.of(OutputEvent) if e.run_id == run_id]


def assert_contiguous(chunks: list[OutputEvent], total: int) -> None:
    """seq 0..n-1, each chunk starts where the previous ended, ending at ``total``."""
    assert [c.seq for c in chunks] == list(range(len(chunks)))
    pos = 0
    for c in chunks:
        assert c.offset == pos, (c.seq, c.offset, pos)
        pos += c.size
    assert pos == total
