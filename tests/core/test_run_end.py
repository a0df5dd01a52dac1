"""How a run ends: the bookkeeping (slot, history, latest, metadata, auto-event) happens once,
before the final RunEvent announces it, whoever ends the run: the orchestrator, or cmdorc's
``mark_*`` called on a live run's result."""

from __future__ import annotations

import asyncio
import os
import tomllib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pytest
from corehelp import (
    Recorder,
    assert_tree_gone,
    find_tree,
    group_members,
    marker,
    orch_of,
    py,
    tree_cmd,
    wait_until,
)

from sidecar import CommandConfig, OutputStorageConfig, RunEvent, RunState
from sidecar.adapters import LocalExecutor, Process

pytestmark = pytest.mark.timeout(30)
FINAL = {"success", "failed", "cancelled"}


async def test_final_run_event_comes_after_the_bookkeeping(tmp_path) -> None:
    orch = orch_of(CommandConfig(name="F", command=py("print('out'); raise SystemExit(1)"),
                                 keep_in_memory=5),
                   storage=OutputStorageConfig(directory=str(tmp_path / "out"),
                                               keep_history=-1))
    seen: list[dict[str, Any]] = []

    def listener(event: object) -> None:
        if isinstance(event, RunEvent) and event.state in FINAL:
            status = orch.get_status("F")
            handle = orch.get_handle_by_run_id(event.run_id)
            seen.append({
                "state": status.state,
                "active": (status.active_count, len(orch.get_active_handles("F")),
                           len(orch.get_all_active_handles())),
                "latest": status.last_run.run_id if status.last_run else None,
                "history": [r.run_id for r in orch.get_history("F")],
                "handle": handle is not None and handle.is_finalized,
                "output": (orch.read_output(event.run_id), orch.output_size(event.run_id)),
                "stored": handle is not None and handle.metadata_file.is_file(),
            })

    orch.add_listener(listener)
    first = await (await orch.run_command("F")).wait(10)  # the command's first run
    second = await (await orch.run_command("F")).wait(10)
    expected = [{"state": "failed", "active": (0, 0, 0), "latest": r.run_id,
                 "history": ids, "handle": True, "output": (b"out\n", 4), "stored": True}
                for r, ids in ((first, [first.run_id]),
                               (second, [second.run_id, first.run_id]))]
    assert seen == expected


async def test_final_run_event_of_a_cancelled_run_sees_it_in_history() -> None:
    orch = orch_of(CommandConfig(name="C", command="sleep 100"))
    at_final: list[tuple[str, int, list[str]]] = []
    orch.add_listener(lambda e: at_final.append(
        (orch.get_status("C").state, orch.get_status("C").active_count,
         [r.run_id for r in orch.get_history("C")]))
        if isinstance(e, RunEvent) and e.state in FINAL else None)
    handle = await orch.run_command("C")
    assert await orch.cancel_run(handle.run_id)
    assert at_final == [("cancelled", 0, [handle.run_id])]


@pytest.mark.parametrize(("mark", "state", "auto_event"), [
    (lambda r: r.mark_success("done by hand"), RunState.SUCCESS, "command_success:M"),
    (lambda r: r.mark_failed("broken by hand"), RunState.FAILED, "command_failed:M"),
    (lambda r: r.mark_cancelled("stopped by hand"), RunState.CANCELLED, "command_cancelled:M"),
])
async def test_mark_on_a_live_run_ends_it_like_the_orchestrator(
        tmp_path, mark: Callable[[Any], None], state: RunState, auto_event: str) -> None:
    mark_id = marker()
    orch = orch_of(CommandConfig(name="M", command=tree_cmd(mark_id), on_retrigger="ignore"),
                   storage=OutputStorageConfig(directory=str(tmp_path), keep_history=-1))
    rec = Recorder()
    orch.add_listener(rec)
    fired: list[str] = []
    auto = asyncio.Event()

    def on_final(handle: Any, context: Any) -> None:
        fired.append(handle.run_id)
        auto.set()

    orch.on_event(auto_event, on_final)
    handle = await orch.run_command("M")
    assert handle.state is RunState.RUNNING
    leader, sleeps = find_tree(mark_id)
    pgid = os.getpgid(leader)
    task = orch._runs[handle.run_id].task

    mark(handle.result)

    # Booked at once: slot free, latest and history set, metadata stored.
    status = orch.get_status("M")
    assert (status.state, status.active_count) == (state.value, 0)
    assert status.last_run is handle.result
    assert [r.run_id for r in orch.get_history("M")] == [handle.run_id]
    assert orch.get_active_handles("M") == [] and orch.get_all_active_handles() == []
    assert tomllib.loads(handle.metadata_file.read_text())["state"] == state.value
    again = await orch.run_command("M")  # the concurrency slot is free (on_retrigger=ignore)
    assert orch.get_status("M").active_count == 1

    # Its process group is stopped; the auto-event fires once, the run's task ends cleanly.
    await asyncio.wait_for(auto.wait(), 10)
    await asyncio.wait_for(asyncio.shield(task), 10)
    assert task.exception() is None
    assert_tree_gone(leader, sleeps)  # and nothing (but zombies) left in its group
    assert group_members(pgid) == []
    assert fired == [handle.run_id]
    assert rec.states(handle.run_id) == ["pending", "running", state.value]
    assert handle.result.state is state and handle.result.exit_code is None
    await orch.cancel_run(again.run_id)
    assert await orch.wait_idle(10)
    assert fired.count(handle.run_id) == 1


class GatedExecutor(LocalExecutor):
    """Starts processes only once ``gate`` is set; keeps what it started."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.started: list[Process] = []

    async def start(self, argv: Sequence[str] | None, script: str, *, cwd: str | None,
                    env: Mapping[str, str] | None, on_output: Callable[[bytes], None],
                    **kw: Any) -> Process:
        await asyncio.wait_for(self.gate.wait(), 10)
        process = await super().start(argv, script, cwd=cwd, env=env, on_output=on_output, **kw)
        self.started.append(process)
        return process


async def test_mark_cancelled_while_spawning_stops_the_process_once_it_exists() -> None:
    executor = GatedExecutor()
    orch = orch_of(CommandConfig(name="P", command="sleep 100"), executor=executor)
    rec = Recorder()
    orch.add_listener(rec)
    pending = asyncio.Event()
    orch.add_listener(lambda e: pending.set()
                      if isinstance(e, RunEvent) and e.state == "pending" else None)
    fired: list[str] = []
    orch.on_event("command_cancelled:P", lambda h, c: fired.append(h.run_id))
    starting = asyncio.ensure_future(orch.run_command("P"))
    await asyncio.wait_for(pending.wait(), 10)
    (handle,) = orch.get_active_handles("P")
    handle.result.mark_cancelled("not wanted")
    assert orch.get_status("P").state == "cancelled"
    assert orch.get_status("P").active_count == 0
    executor.gate.set()
    assert (await asyncio.wait_for(starting, 10)).run_id == handle.run_id
    assert await orch.wait_idle(10)
    (process,) = executor.started
    wait_until(lambda: group_members(process.pgid) == [], what="the process group to end")
    assert fired == [handle.run_id]
    assert rec.states(handle.run_id) == ["pending", "cancelled"]
    assert handle.result.comment == "not wanted"
