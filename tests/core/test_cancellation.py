"""Cancellation racing with spawns, restarts and cancelled callers.

``await asyncio.sleep(0)`` below is one event-loop turn, not a timed wait: it lets a started
``run_command`` reach its ``await`` on the spawn, so the test can act inside that window."""

from __future__ import annotations

import asyncio
import os

import psutil
import pytest
from corehelp import orch_of

from sidecar import CommandConfig, OutputEvent, RunState

pytestmark = pytest.mark.timeout(30)


async def _running(orch, name: str):
    (handle,) = orch.get_active_handles(name)
    while handle.state is not RunState.RUNNING:
        await asyncio.sleep(0)
    return handle


async def test_overlapping_cancel_and_restart_keeps_max_concurrent() -> None:
    orch = orch_of(CommandConfig(name="C", command="sleep 30", triggers=["go"],
                                 max_concurrent=1), grace_secs=0.5)
    await orch.trigger("go")
    first = await _running(orch, "C")
    a, b = await asyncio.gather(orch.trigger("go"), orch.trigger("go"))
    assert len(orch.get_active_handles("C")) == 1
    assert first.state is RunState.CANCELLED
    started = a.started + b.started
    assert sum(h.state is RunState.CANCELLED for h in started) == len(started) - 1
    await orch.cancel_all()


async def test_cancel_during_spawn_stops_the_process() -> None:
    orch = orch_of(CommandConfig(name="C", command="sh -c 'sleep 2; echo finished'"),
                   grace_secs=0.5)
    task = asyncio.ensure_future(orch.run_command("C"))
    await asyncio.sleep(0)  # run_command is now spawning
    assert await orch.cancel_command("C", "stop") == 1
    handle = await task
    result = await handle.wait(5)
    assert result.state is RunState.CANCELLED and result.comment == "stop"
    assert "finished" not in result.output
    assert result.duration is not None and result.duration.total_seconds() < 1.5


async def test_caller_cancelled_mid_spawn_does_not_leave_a_stuck_run() -> None:
    orch = orch_of(CommandConfig(name="C", command="true", on_retrigger="ignore"))
    task = asyncio.ensure_future(orch.run_command("C"))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert orch.get_status("C").active_count == 0
    assert await orch.wait_idle(5)
    assert orch.get_history("C")[0].state is RunState.CANCELLED
    again = await orch.run_command("C")  # the concurrency slot is free again
    assert (await again.wait(5)).state is RunState.SUCCESS


async def test_cancelled_canceller_still_escalates_to_sigkill() -> None:
    orch = orch_of(CommandConfig(name="C", command="sh -c \"trap '' TERM; echo ready; "
                                                   "sleep 30; echo survived\""),
                   grace_secs=0.5)
    ready = asyncio.Event()
    orch.add_listener(lambda e: ready.set() if isinstance(e, OutputEvent)
                      and "ready" in e.text else None)
    handle = await orch.run_command("C")
    await asyncio.wait_for(ready.wait(), 10)
    pgid = os.getpgid(orch._runs[handle.run_id].process.pid)
    canceller = asyncio.ensure_future(orch.cancel_run(handle.run_id))
    await asyncio.sleep(0)  # SIGTERM sent (ignored by the command); grace period running
    canceller.cancel()  # e.g. the client's $/cancelRequest of sidecar/cancel
    with pytest.raises(asyncio.CancelledError):
        await canceller
    result = await handle.wait(5)  # SIGKILL after the grace period all the same
    assert result.state is RunState.CANCELLED
    assert "survived" not in result.output
    assert not [p for p in psutil.process_iter(["pid", "status"]) if _pgid(p.pid) == pgid
                and p.info["status"] != psutil.STATUS_ZOMBIE]  # dead, not yet reaped


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


async def test_lowering_keep_in_memory_forgets_dropped_runs() -> None:
    orch = orch_of(CommandConfig(name="C", command="true", keep_in_memory=3))
    ids = [(await (await orch.run_command("C")).wait(5)).run_id for _ in range(3)]
    orch.update_command(CommandConfig(name="C", command="true", keep_in_memory=1))
    assert [r.run_id for r in orch.get_history("C")] == [ids[-1]]
    assert [orch.get_handle_by_run_id(i) is not None for i in ids] == [False, False, True]


async def test_a_command_restarted_by_its_own_auto_event_does_not_hang() -> None:
    orch = orch_of(CommandConfig(name="Self", command="sleep 30",
                                 triggers=["go", "command_started:Self"]), grace_secs=0.5)
    first = (await orch.trigger("go")).started[0]
    # Restarted by its own command_started (loop detection stops the chain after one
    # restart), promptly: the restart must not wait for the run whose task is restarting it.
    result = await first.wait(2)
    assert result.state is RunState.CANCELLED
    (second,) = orch.get_active_handles("Self")
    assert second.trigger_chain == ["go", "command_started:Self"]
    await orch.cancel_all()
    assert await orch.wait_idle(10)
