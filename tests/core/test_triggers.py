"""Triggers: matching, auto-events, chains, cycle/loop detection, cancel_on_triggers."""

from __future__ import annotations

import asyncio

import pytest
from corehelp import Recorder, orch_of

from sidecar import (
    CommandConfig,
    RunEvent,
    RunState,
    TriggerContext,
    TriggerCycleError,
)
from sidecar.core.triggers import (
    TriggerIndex,
    emitted_events,
    find_cycles,
    matches,
    split_auto_event,
)

pytestmark = pytest.mark.timeout(30)


def test_matching_and_index() -> None:
    assert matches("build", "build")
    assert not matches("build", "build2")
    assert matches("command_*:Lint", "command_success:Lint")
    assert not matches("command_*:Lint", "command_success:Lint2")
    assert matches("*", "anything:at all")
    assert matches("hotkey:*", "hotkey:f5")
    assert not matches("a.c", "abc")  # only * is special
    index = TriggerIndex({"A": ["x", "command_*:B"], "B": ["*"], "C": ["x"]})
    assert index.commands_for("x") == ["A", "C", "B"]
    assert index.commands_for("command_failed:B") == ["A", "B"]
    assert split_auto_event("command_success:Lint") == ("command_success", "Lint")
    assert split_auto_event("command_success:") is None
    assert split_auto_event("hotkey:f5") is None
    assert "command_cancelled:X" in emitted_events(["X"])
    assert "orchestrator_shutdown" in emitted_events([])


def test_static_cycle_detection() -> None:
    cycles = find_cycles({"Lint": ["go", "command_success:Tests"],
                          "Tests": ["command_success:Lint"],
                          "Solo": ["x"]})
    assert cycles == [[("Lint", "command_success:Lint"), ("Tests", "command_success:Tests")]]
    assert find_cycles({"A": ["command_*:A"]}) == [[("A", "command_started:A")]]
    assert find_cycles({"A": ["a"], "B": ["command_success:A"]}) == []


async def test_string_triggers_and_auto_events() -> None:
    orch = orch_of(
        CommandConfig(name="Build", command="true", triggers=["build", "hotkey:f5"]),
        CommandConfig(name="Fail", command="false", triggers=["build"]),
        CommandConfig(name="Slow", command="sleep 30", triggers=["build"],
                      cancel_on_triggers=["stop"]),
        CommandConfig(name="Wild", command="true", triggers=["hotkey:*"]),
    )
    rec = Recorder()
    orch.add_listener(rec)
    events: list[str] = []
    orch.on_event("command_*", lambda h, c: None)
    orch.on_event("*", lambda h, c: events.append(c.history[-1]))
    done = asyncio.Event()
    orch.on_event("command_cancelled:Slow", lambda h, c: done.set())

    outcome = await orch.trigger("build")
    assert [h.command_name for h in outcome.started] == ["Build", "Fail", "Slow"]
    await outcome.started[0].wait(10)
    await outcome.started[1].wait(10)
    stop = await orch.trigger("stop")
    assert stop.cancelled == ["Slow"]
    await asyncio.wait_for(done.wait(), 10)
    slow = outcome.started[2]
    assert slow.state is RunState.CANCELLED
    assert slow.comment == "cancel_on_trigger:stop"

    for expected in ["command_started:Build", "command_success:Build", "command_started:Fail",
                     "command_failed:Fail", "command_started:Slow", "command_cancelled:Slow"]:
        assert expected in events
    assert events.index("command_started:Build") < events.index("command_success:Build")

    hot = await orch.trigger("hotkey:f5")
    assert sorted(h.command_name for h in hot.started) == ["Build", "Wild"]
    assert (await orch.trigger("hotkey:f6")).started[0].command_name == "Wild"
    assert (await orch.trigger("nobody-listens")).started == []


async def test_trigger_chain_on_live_handles_and_history() -> None:
    orch = orch_of(CommandConfig(name="Lint", command="true", triggers=["user_saves"]),
                   CommandConfig(name="Tests", command="sleep 30",
                                 triggers=["command_success:Lint"]))
    started = asyncio.Event()
    orch.on_event("command_started:Tests",
                  lambda h, c: started.set() if h.trigger_chain else None)
    manual = await orch.run_command("Tests")
    assert manual.trigger_chain == []
    await orch.trigger("user_saves")
    await asyncio.wait_for(started.wait(), 10)
    handle = orch.get_active_handles("Tests")[0]
    assert handle.trigger_chain == ["user_saves", "command_started:Lint", "command_success:Lint"]
    assert manual.state is RunState.CANCELLED  # restarted by the triggered run
    await orch.cancel_command("Tests")
    history = orch.get_history("Tests")
    assert history[0].trigger_chain == ["user_saves", "command_started:Lint",
                                        "command_success:Lint"]
    assert history[0].trigger_event == "command_success:Lint"
    assert history[1].trigger_chain == []
    lint = orch.get_history("Lint")[0]
    assert lint.trigger_chain == ["user_saves"]


async def test_retriggering_an_event_in_its_own_chain_raises() -> None:
    orch = orch_of(CommandConfig(name="A", command="true", triggers=["a"]))
    ctx = TriggerContext()
    await orch.trigger("a", ctx)
    await orch.trigger("b", ctx)
    with pytest.raises(TriggerCycleError) as info:
        await orch.trigger("a", ctx)
    assert info.value.event_name == "a"
    assert info.value.cycle_path == ["a", "b"]
    assert "a -> b -> a" in str(info.value)

    # From inside a callback of the same chain.
    errors: list[BaseException] = []

    async def retrigger(handle, context):
        try:
            await orch.trigger("c", context)
        except TriggerCycleError as exc:
            errors.append(exc)

    orch.on_event("c", retrigger)
    await orch.trigger("c")
    assert len(errors) == 1 and errors[0].cycle_path == ["c"]


async def _settle(orch, name: str, count: int, rec: Recorder) -> None:
    """Wait until ``count`` runs of ``name`` have finished."""

    def finished() -> int:
        return sum(1 for e in rec.events
                   if isinstance(e, RunEvent) and e.command == name and e.state in
                   ("success", "failed", "cancelled"))

    while finished() < count:
        await asyncio.wait_for(rec.changed.wait(), 10)
        rec.changed.clear()


class _Rec(Recorder):
    def __init__(self) -> None:
        super().__init__()
        self.changed = asyncio.Event()

    def __call__(self, event) -> None:
        super().__call__(event)
        self.changed.set()


async def test_lint_tests_loop_stops() -> None:
    orch = orch_of(
        CommandConfig(name="Lint", command="true", keep_in_memory=10,
                      triggers=["changes", "command_success:Tests"]),
        CommandConfig(name="Tests", command="true", keep_in_memory=10,
                      triggers=["command_success:Lint"]))
    rec = _Rec()
    orch.add_listener(rec)
    await orch.trigger("changes")
    await _settle(orch, "Lint", 2, rec)
    # Let every pending auto-event task finish, then count.
    await orch.shutdown()
    assert len(orch.get_history("Lint")) == 2
    assert len(orch.get_history("Tests")) == 1
    # The second Lint run's own command_started:Lint repeats an event of its chain: blocked.
    assert rec.triggers().count("command_started:Lint") == 1
    assert rec.triggers().count("command_success:Lint") == 1
    second = orch.get_history("Lint")[0]
    assert second.state is RunState.SUCCESS
    assert second.trigger_chain == ["changes", "command_started:Lint", "command_success:Lint",
                                    "command_started:Tests", "command_success:Tests"]


async def test_loop_detection_false_keeps_looping() -> None:
    orch = orch_of(
        CommandConfig(name="Lint", command="true", keep_in_memory=-1, loop_detection=False,
                      triggers=["changes", "command_success:Tests"]),
        CommandConfig(name="Tests", command="true", keep_in_memory=-1, loop_detection=False,
                      triggers=["command_success:Lint"]))
    rec = _Rec()
    orch.add_listener(rec)
    await orch.trigger("changes")
    await _settle(orch, "Lint", 5, rec)
    await orch.shutdown()
    assert len(orch.get_history("Lint", limit=0)) >= 5
    assert len(orch.get_history("Tests", limit=0)) >= 4
