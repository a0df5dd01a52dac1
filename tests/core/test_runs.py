"""Runs: the state machine, durations, RunResult and RunHandle."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from corehelp import orch_of, py

from sidecar import CommandConfig, RunHandle, RunResult, RunState, format_duration
from sidecar.core.runs import InvalidTransition

pytestmark = pytest.mark.timeout(30)


@pytest.mark.parametrize("secs,text", [
    (0.452, "452ms"), (2.44, "2.4s"), (83, "1m 23s"), (3900, "1h 5m"),
    (97200, "1d 3h"), (0, "0ms"), (59.99, "60.0s"), (60, "1m 0s"),
])
def test_format_duration(secs: float, text: str) -> None:
    assert format_duration(secs) == text


def test_state_machine() -> None:
    changes: list[tuple[str, str]] = []
    r = RunResult(command_name="X")
    r.on_change = lambda res, prev: changes.append((prev.value, res.state.value))
    assert r.state is RunState.PENDING and r.success is None and r.duration_str == "-"
    r.mark_running()
    assert r.start_time is not None and r.end_time is None
    r.mark_failed("boom", comment="why")
    assert (r.state, r.success, r.error, r.comment) == (RunState.FAILED, False, "boom", "why")
    assert r.end_time is not None and r.duration is not None and r.is_finalized
    assert changes == [("pending", "running"), ("running", "failed")]
    with pytest.raises(InvalidTransition):
        r.mark_success()
    r2 = RunResult(command_name="Y")
    r2.mark_cancelled("never started")
    assert r2.state is RunState.CANCELLED and r2.start_time == r2.end_time
    with pytest.raises(InvalidTransition):
        RunResult(command_name="Z").mark_success()  # pending -> success is not allowed
    assert RunState.SUCCESS.is_final and not RunState.RUNNING.is_final
    d = r.to_dict()
    assert d["state"] == "failed" and d["error"] == "boom" and d["run_id"] == r.run_id


async def test_handle_properties_while_running_and_after(tmp_path) -> None:
    fifo = tmp_path / "gate"
    import os

    os.mkfifo(fifo)
    code = f"import os; os.write(1, b'out\\n'); open({str(fifo)!r}).read(); os.write(2, b'err\\n')"
    orch = orch_of(CommandConfig(name="H", command=py(code), timeout_secs=20))
    before = dt.datetime.now()
    handle = await orch.run_command("H")
    assert isinstance(handle, RunHandle)
    assert handle.command_name == "H"
    assert handle.state is RunState.RUNNING
    assert handle.success is None
    assert not handle.is_finalized
    assert handle.start_time is not None and handle.start_time >= before
    assert handle.end_time is None
    assert handle.comment == ""
    assert handle.trigger_chain == []
    assert handle.resolved_command is not None
    assert handle.resolved_command.timeout_secs == 20
    assert handle.resolved_command.argv is not None
    assert handle.output_file is None and handle.metadata_file is None
    assert handle.output_write_error is None
    with pytest.raises(TimeoutError):
        await handle.wait(timeout=0.05)
    assert handle.state is RunState.RUNNING  # a wait timeout does not cancel the run

    def release() -> None:
        with open(fifo, "w") as f:
            f.write("x")

    await asyncio.to_thread(release)
    result = await handle.wait(timeout=10)
    assert result is handle.result
    assert handle.state is RunState.SUCCESS and handle.success is True
    assert handle.exit_code == 0
    assert handle.output == "out\nerr\n"
    assert handle.end_time >= handle.start_time
    assert handle.duration_str.endswith(("ms", "s"))
    assert handle.time_ago_str.endswith(" ago")
    assert await handle.wait() is result  # waiting again returns at once
    handle.cleanup()


async def test_two_waiters_and_repr() -> None:
    orch = orch_of(CommandConfig(name="W", command="sleep 0.2"))
    handle = await orch.run_command("W")
    a, b = await asyncio.gather(handle.wait(10), RunHandle(handle.result).wait(10))
    assert a is b and a.state is RunState.SUCCESS
    assert "W" in repr(handle) and handle.run_id in repr(handle)
