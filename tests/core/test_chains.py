"""Chains of runs: who started them (started_by), which runs led to them (upstream_run_ids),
and waiting for a whole chain (wait_chain)."""

from __future__ import annotations

import asyncio
import os
import shlex
from pathlib import Path

import pytest
from corehelp import Recorder, orch_of

from sidecar import CommandConfig, RunEvent, RunState, TriggerContext

pytestmark = pytest.mark.timeout(30)


def abc(b_command: str = "true", **c_options: object) -> list[CommandConfig]:
    """A on ``go``; A's success starts B; B's success starts C."""
    return [CommandConfig(name="A", command="true", triggers=["go"]),
            CommandConfig(name="B", command=b_command, triggers=["command_success:A"]),
            CommandConfig(name="C", command="true", triggers=["command_success:B"],
                          **c_options)]


def gate(tmp_path: Path) -> tuple[Path, str]:
    """A FIFO and a command that blocks until something is written to it (then succeeds)."""
    fifo = tmp_path / "gate"
    os.mkfifo(fifo)
    return fifo, f"cat {shlex.quote(str(fifo))}"


async def test_started_by_and_upstream_run_ids_along_a_chain() -> None:
    orch = orch_of(*abc())
    rec = Recorder()
    orch.add_listener(rec)
    first = (await orch.trigger("go", started_by="Neovim")).started[0]
    a, b, c = await orch.wait_chain([first.run_id], timeout=10)
    assert [r.command_name for r in (a, b, c)] == ["A", "B", "C"]
    assert [r.state for r in (a, b, c)] == [RunState.SUCCESS] * 3
    assert [r.started_by for r in (a, b, c)] == ["Neovim"] * 3
    assert first.started_by == "Neovim"
    assert a.upstream_run_ids == []
    assert b.upstream_run_ids == [("command_success:A", a.run_id)]
    assert c.upstream_run_ids == [("command_success:A", a.run_id),
                                  ("command_success:B", b.run_id)]
    assert c.snapshot().upstream_run_ids == (a.run_id, b.run_id)
    assert c.snapshot().started_by == "Neovim" and c.to_dict()["started_by"] == "Neovim"
    # Every event of the chained run carries both, from its first (pending) one.
    events = [e for e in rec.of(RunEvent) if e.run_id == c.run_id]
    assert [e.state for e in events] == ["pending", "running", "success"]
    assert {(e.started_by, e.upstream_run_ids) for e in events} == {
        ("Neovim", (a.run_id, b.run_id))}

    # run_command: the same, from the run it started; no started_by gives None all along.
    manual = await orch.run_command("A", started_by="cli")
    runs = await orch.wait_chain([manual.run_id], timeout=10)
    assert [(r.command_name, r.started_by) for r in runs] == [("A", "cli"), ("B", "cli"),
                                                              ("C", "cli")]
    assert runs[2].upstream_run_ids[0] == ("command_success:A", manual.run_id)
    anonymous = await orch.run_command("B")
    runs = await orch.wait_chain([anonymous.run_id], timeout=10)
    assert [(r.command_name, r.started_by) for r in runs] == [("B", None), ("C", None)]
    # A context carried into trigger() keeps its started_by unless one is given.
    ctx = TriggerContext(started_by="hook")
    again = (await orch.trigger("go", ctx)).started[0]
    assert [r.started_by for r in await orch.wait_chain([again.run_id], timeout=10)] == \
        ["hook"] * 3


async def test_lifecycle_runs_have_no_started_by() -> None:
    orch = orch_of(CommandConfig(name="Boot", command="true", triggers=["orchestrator_started"]),
                   CommandConfig(name="Next", command="true",
                                 triggers=["command_success:Boot"]))
    await orch.startup()
    boot = orch.get_all_active_handles()[0]
    boot_run, next_run = await orch.wait_chain([boot.run_id], timeout=10)
    assert (boot_run.started_by, next_run.started_by) == (None, None)
    assert boot_run.upstream_run_ids == []
    assert next_run.upstream_run_ids == [("command_success:Boot", boot.run_id)]


async def test_wait_chain_returns_the_whole_chain_once_it_has_settled(tmp_path: Path) -> None:
    """B blocks until the test opens the gate; C is started only after the wait began and is
    forgotten as soon as it ends (keep_in_memory = 0), and handling its success takes until
    the test releases it. An unrelated chain runs meanwhile."""
    fifo, blocked = gate(tmp_path)
    orch = orch_of(*abc(blocked, keep_in_memory=0),
                   CommandConfig(name="X", command="true", triggers=["other"]),
                   CommandConfig(name="Y", command="true", triggers=["command_success:X"]))
    rec = Recorder()
    orch.add_listener(rec)
    b_running = asyncio.Event()
    orch.on_event("command_started:B", lambda h, c: b_running.set())
    c_succeeded, release = asyncio.Event(), asyncio.Event()

    async def hold(handle: object, context: object) -> None:
        c_succeeded.set()
        await release.wait()

    orch.on_event("command_success:C", hold)
    first = (await orch.trigger("go")).started[0]
    waiter = asyncio.ensure_future(orch.wait_chain([first.run_id]))
    await asyncio.wait_for(b_running.wait(), 10)

    x = (await orch.trigger("other")).started[0]
    others = await orch.wait_chain([x.run_id], timeout=10)
    assert [r.command_name for r in others] == ["X", "Y"]
    assert all(r.state is RunState.SUCCESS for r in others)
    done, _ = await asyncio.wait([waiter], timeout=0.2)
    assert not done, "wait_chain returned while B was still running"

    await asyncio.to_thread(fifo.write_text, "open\n")
    await asyncio.wait_for(c_succeeded.wait(), 10)
    done, _ = await asyncio.wait([waiter], timeout=0.2)
    assert not done, "wait_chain returned while C's auto-event was being handled"
    release.set()
    runs = await asyncio.wait_for(waiter, 10)
    assert [r.command_name for r in runs] == ["A", "B", "C"]
    assert all(r.state is RunState.SUCCESS for r in runs)
    assert runs[0] is first.result
    assert "command_success:C" in rec.triggers()
    assert orch.get_handle_by_run_id(runs[2].run_id) is None  # C is forgotten

    # Waiting again for a settled chain answers at once with the runs still known.
    assert [r.run_id for r in await orch.wait_chain([first.run_id])] == \
        [r.run_id for r in runs[:2]]
    # Several chains at once: the given runs first.
    both = await orch.wait_chain([x.run_id, first.run_id])
    assert [r.command_name for r in both] == ["X", "A", "B", "Y"]


async def test_wait_chain_timeout_returns_what_is_known(tmp_path: Path) -> None:
    _, blocked = gate(tmp_path)
    orch = orch_of(*abc(blocked))
    b_running = asyncio.Event()
    orch.on_event("command_started:B", lambda h, c: b_running.set())
    first = (await orch.trigger("go", started_by="cli")).started[0]
    await asyncio.wait_for(b_running.wait(), 10)
    runs = await orch.wait_chain([first.run_id], timeout=0.1)
    assert [(r.command_name, r.state) for r in runs] == [("A", RunState.SUCCESS),
                                                         ("B", RunState.RUNNING)]
    await orch.cancel_command("B")
    runs = await orch.wait_chain([first.run_id], timeout=10)
    assert [(r.command_name, r.state) for r in runs] == [("A", RunState.SUCCESS),
                                                         ("B", RunState.CANCELLED)]
    with pytest.raises(KeyError):
        await orch.wait_chain([first.run_id, "no-such-run"])
