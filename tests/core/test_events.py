"""The event stream: subscribers and listeners see triggers, run changes and output live."""

from __future__ import annotations

import asyncio
import os

import pytest
from corehelp import Recorder, assert_contiguous, orch_of, py

from sidecar import (
    CommandConfig,
    OutputEvent,
    RunEvent,
    RunState,
    TriggerEvent,
)
from sidecar.core.events import EventBus

pytestmark = pytest.mark.timeout(30)


def _gated_command(fifo: str) -> str:
    """Prints ``first``, then blocks until the test writes to ``fifo``, then prints what it
    read."""
    code = ("import os\n"
            "os.write(1, b'first\\n')\n"
            f"data = open({fifo!r}).read()\n"
            "os.write(1, ('second:' + data + '\\n').encode())\n")
    return py(code)


async def _release(fifo: str, data: str = "go") -> None:
    def write() -> None:
        with open(fifo, "w") as f:
            f.write(data)

    await asyncio.wait_for(asyncio.to_thread(write), 10)


async def _next_matching(sub, pred, timeout: float = 10.0):
    async def loop():
        async for event in sub:
            if pred(event):
                return event
        raise AssertionError("subscription ended")

    return await asyncio.wait_for(loop(), timeout)


@pytest.fixture
def fifo(tmp_path):
    path = str(tmp_path / "gate")
    os.mkfifo(path)
    return path


async def test_output_arrives_while_command_runs(fifo) -> None:
    orch = orch_of(CommandConfig(name="Gate", command=_gated_command(fifo), triggers=["go"]))
    subs = [orch.subscribe() for _ in range(3)]
    rec = Recorder()
    orch.add_listener(rec)

    outcome = await orch.trigger("go")
    handle = outcome.started[0]
    for sub in subs:
        event = await _next_matching(sub, lambda e: isinstance(e, OutputEvent))
        assert event.text == "first\n"
        assert event.run_id == handle.run_id
        assert event.command == "Gate"
        assert (event.seq, event.offset, event.size) == (0, 0, 6)
    # The command is blocked on the fifo: still running, and the listener already saw it.
    assert handle.state is RunState.RUNNING
    assert not handle.is_finalized
    assert [e.text for e in rec.output(handle.run_id)] == ["first\n"]
    assert orch.tail(handle.run_id) == "first\n"
    assert orch.read_output(handle.run_id) == b"first\n"

    await _release(fifo, "xyz")
    result = await handle.wait(10)
    assert result.state is RunState.SUCCESS
    assert result.output == "first\nsecond:xyz\n"

    for sub in subs:
        rest = []
        while (event := sub.get_nowait()) is not None:
            rest.append(event)
        texts = "".join(e.text for e in rest if isinstance(e, OutputEvent))
        assert texts == "second:xyz\n"
        states = [e.state for e in rest if isinstance(e, RunEvent)]
        assert states == ["success"]
        assert [e.name for e in rest if isinstance(e, TriggerEvent)] == ["command_success:Gate"]
        sub.close()
    assert_contiguous(rec.output(handle.run_id), len(result.output.encode()))


async def test_every_event_type_in_order() -> None:
    orch = orch_of(
        CommandConfig(name="Boot", command="echo boot", triggers=["orchestrator_started"]),
        CommandConfig(name="Lint", command="echo lint", triggers=["changes"]),
        CommandConfig(name="Bad", command="sh -c 'echo bad; exit 2'",
                      triggers=["command_success:Lint"]),
    )
    rec = Recorder()
    orch.add_listener(rec)
    seen_final = asyncio.Event()
    orch.on_event("command_failed:Bad", lambda h, c: seen_final.set())
    async with orch:
        boot = orch.get_active_handles("Boot")[0]
        await boot.wait(10)
        await orch.trigger("changes")
        await asyncio.wait_for(seen_final.wait(), 10)

    kinds = {(e.name, e.kind) for e in rec.of(TriggerEvent)}
    assert ("orchestrator_started", "lifecycle") in kinds
    assert ("orchestrator_shutdown", "lifecycle") in kinds
    assert ("changes", "trigger") in kinds
    assert ("command_started:Lint", "auto") in kinds
    assert ("command_success:Lint", "auto") in kinds
    assert ("command_failed:Bad", "auto") in kinds

    bad = orch.get_history("Bad")[0]
    assert rec.states(bad.run_id) == ["pending", "running", "failed"]
    run_events = [e for e in rec.of(RunEvent) if e.run_id == bad.run_id]
    assert run_events[0].previous is None
    assert [e.previous for e in run_events[1:]] == ["pending", "running"]
    final = run_events[-1]
    assert final.exit_code == 2
    assert final.trigger_chain == ("changes", "command_started:Lint", "command_success:Lint")
    assert final.trigger_event == "command_success:Lint"
    assert final.duration_secs is not None and final.duration_secs >= 0
    assert [e.text for e in rec.output(bad.run_id)] == ["bad\n"]

    started = next(e for e in rec.of(TriggerEvent) if e.name == "command_started:Lint")
    assert started.chain == ("changes", "command_started:Lint")
    assert started.command == "Lint"
    lint = orch.get_history("Lint")[0]
    assert started.run_id == lint.run_id

    # Ordering within one run: started trigger after the pending/running run events, output
    # before the final run event, the final trigger after it.
    idx = {id(e): i for i, e in enumerate(rec.events)}
    lint_events = [e for e in rec.events
                   if getattr(e, "run_id", None) == lint.run_id]
    pos = {type(e).__name__ + ":" + getattr(e, "state", getattr(e, "name", "out")): idx[id(e)]
           for e in lint_events}
    assert pos["RunEvent:pending"] < pos["RunEvent:running"] < pos["RunEvent:success"]
    assert pos["OutputEvent:out"] < pos["RunEvent:success"] < pos["TriggerEvent:command_success:Lint"]
    shutdown_idx = next(i for i, e in enumerate(rec.events)
                        if isinstance(e, TriggerEvent) and e.name == "orchestrator_shutdown")
    assert shutdown_idx == max(i for i, e in enumerate(rec.events) if isinstance(e, TriggerEvent))


async def test_seq_and_offsets_are_contiguous_for_many_chunks() -> None:
    code = ("import sys\n"
            "for i in range(2500):\n"  # more than a (grown) pipe holds: several reads
            "    sys.stdout.write(f'line {i} ' + 'x' * 500 + '\\n'); sys.stdout.flush()\n")
    orch = orch_of(CommandConfig(name="Many", command=py(code)))
    rec = Recorder()
    orch.add_listener(rec)
    result = await (await orch.run_command("Many")).wait(10)
    chunks = rec.output(result.run_id)
    total = len(result.output.encode())
    assert total == sum(len(f"line {i} ") + 501 for i in range(2500))
    assert len(chunks) > 1
    assert_contiguous(chunks, total)
    assert "".join(c.text for c in chunks) == result.output


async def test_split_utf8_is_decoded_across_chunks(tmp_path) -> None:
    fifo = str(tmp_path / "gate")
    os.mkfifo(fifo)
    # "é" is two bytes; the first byte goes out, then the command waits for us.
    code = ("import os\n"
            "os.write(1, b'a\\xc3')\n"
            f"open({fifo!r}).read()\n"
            "os.write(1, b'\\xa9b\\n')\n")
    orch = orch_of(CommandConfig(name="U", command=py(code)))
    sub = orch.subscribe()
    handle = await orch.run_command("U")
    first = await _next_matching(sub, lambda e: isinstance(e, OutputEvent))
    assert (first.text, first.size) == ("a", 2)
    await _release(fifo)
    second = await _next_matching(sub, lambda e: isinstance(e, OutputEvent))
    assert (second.text, second.offset, second.size) == ("\u00e9b\n", 2, 3)
    assert (await handle.wait(10)).output == "a\u00e9b\n"


async def test_slow_subscriber_drops_only_output_and_does_not_block() -> None:
    # ~2 MB of output; the idle subscriber may hold at most 4 KiB of pending output.
    code = ("import sys\n"
            "for i in range(2000):\n"
            "    sys.stdout.write('y' * 1023 + '\\n'); sys.stdout.flush()\n")
    orch = orch_of(CommandConfig(name="Flood", command=py(code), triggers=["flood"]))
    idle = orch.subscribe(max_pending_output=4096)
    reader = orch.subscribe()
    received: list[OutputEvent] = []

    async def read_all() -> None:
        async for event in reader:
            if isinstance(event, OutputEvent):
                received.append(event)

    reader_task = asyncio.create_task(read_all())
    outcome = await orch.trigger("flood")
    result = await outcome.started[0].wait(15)
    assert result.state is RunState.SUCCESS
    total = 2000 * 1024
    assert orch.output_size(result.run_id) == total

    # The reading subscriber got every byte, contiguously.
    reader.close()
    await asyncio.wait_for(reader_task, 5)
    assert_contiguous(received, total)

    events = []
    while (event := idle.get_nowait()) is not None:
        events.append(event)
    assert idle.dropped_chunks > 0
    out = [e for e in events if isinstance(e, OutputEvent)]
    assert sum(e.size for e in out) <= 4096
    assert len(out) + idle.dropped_chunks == len(received)
    assert [e.state for e in events if isinstance(e, RunEvent)] == ["pending", "running",
                                                                     "success"]
    assert [e.name for e in events if isinstance(e, TriggerEvent)] == [
        "flood", "command_started:Flood", "command_success:Flood"]
    # The gap is visible (seq jumps) and every dropped chunk reads back byte for byte.
    assert [e.seq for e in out] != list(range(len(received)))
    kept = {e.seq for e in out}
    dropped = [e for e in received if e.seq not in kept]
    assert len(dropped) == idle.dropped_chunks
    everything = orch.read_output(result.run_id)
    assert everything == (b"y" * 1023 + b"\n") * 2000
    for gap in dropped:
        assert orch.read_output(result.run_id, gap.offset, gap.size) == \
            everything[gap.offset:gap.offset + gap.size]
        assert gap.text.encode() == everything[gap.offset:gap.offset + gap.size]


async def test_subscription_close_ends_iteration_and_listener_removal() -> None:
    orch = orch_of(CommandConfig(name="E", command="echo hi", triggers=["t"]))
    sub = orch.subscribe()
    rec = Recorder()
    remove = orch.add_listener(rec)

    async def consume() -> list:
        return [e async for e in sub]

    task = asyncio.create_task(consume())
    await (await orch.run_command("E")).wait(10)
    sub.close()
    events = await asyncio.wait_for(task, 5)
    assert any(isinstance(e, OutputEvent) and e.text == "hi\n" for e in events)
    remove()
    before = len(rec.events)
    await orch.trigger("t")
    assert len(rec.events) == before


def test_failing_listener_does_not_break_others() -> None:
    bus = EventBus()
    got = []

    def bad(event) -> None:
        raise RuntimeError("boom")

    bus.add_listener(bad)
    bus.add_listener(got.append)
    event = OutputEvent("r", "c", 0, 0, 1, "x")
    bus.publish(event)
    assert got == [event]


def _hold_start_until_output(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``subprocess_exec`` return only once the child's first output has been read, so
    output is always there before the executor is done starting the process."""
    loop = asyncio.get_running_loop()
    real = loop.subprocess_exec

    async def exec_after_output(factory, *args, **kwargs):
        got = asyncio.Event()

        def factory_with_signal():
            protocol = factory()
            received = protocol.pipe_data_received

            def pipe_data_received(fd: int, data: bytes) -> None:
                received(fd, data)
                got.set()

            protocol.pipe_data_received = pipe_data_received
            return protocol

        transport, protocol = await real(factory_with_signal, *args, **kwargs)
        await asyncio.wait_for(got.wait(), 10)
        return transport, protocol

    monkeypatch.setattr(loop, "subprocess_exec", exec_after_output)


async def test_running_is_announced_with_its_process_before_early_output(monkeypatch) -> None:
    _hold_start_until_output(monkeypatch)
    orch = orch_of(CommandConfig(name="Early", command=py("print('early', flush=True)")))
    rec = Recorder()
    at_running: list[tuple[bool, int]] = []

    def listener(event) -> None:
        rec(event)
        if isinstance(event, RunEvent) and event.state == "running":
            run = orch._runs.get(event.run_id)
            at_running.append((run is not None and run.process is not None,
                               len(rec.output(event.run_id))))

    orch.add_listener(listener)
    handle = await orch.run_command("Early")
    result = await handle.wait(10)
    assert result.state is RunState.SUCCESS and result.output == "early\n"
    assert at_running == [(True, 0)]
    kinds = [e.state if isinstance(e, RunEvent) else "output"
             for e in rec.events
             if isinstance(e, (RunEvent, OutputEvent)) and e.run_id == handle.run_id]
    assert kinds[:3] == ["pending", "running", "output"] and kinds[-1] == "success"
    assert "".join(e.text for e in rec.output(handle.run_id)) == "early\n"


async def test_running_precedes_output_for_every_run() -> None:
    orch = orch_of(CommandConfig(name="Fast", command="echo fast", max_concurrent=0,
                                 keep_in_memory=-1))
    rec = Recorder()
    orch.add_listener(rec)
    handles = [await orch.run_command("Fast") for _ in range(20)]
    for h in handles:
        assert (await h.wait(10)).output == "fast\n"
    for h in handles:
        kinds = [e.state if isinstance(e, RunEvent) else "output"
                 for e in rec.events
                 if isinstance(e, (RunEvent, OutputEvent)) and e.run_id == h.run_id]
        assert kinds == ["pending", "running", "output", "success"], kinds
