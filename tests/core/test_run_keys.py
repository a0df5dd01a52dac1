"""Run keys, reruns and durable records at the orchestrator's API (``run_command(...,
run_key=, strict=)``, ``rerun``, ``get_history(..., run_key)``), with the SQLite records in
memory (the default) and on disk (shared by two orchestrators, as by two processes)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from corehelp import orch_of, py

from sidecar import CommandConfig, OutputStorageConfig, RunState
from sidecar.adapters.sqlite_records import SQLiteRecords
from sidecar.core.errors import RunNotFoundError, RunStateError
from sidecar.core.runs import FINAL_STATES, TRANSITIONS

pytestmark = pytest.mark.timeout(30)


def gated(path: Path) -> CommandConfig:
    """A command that prints, then runs until ``path`` exists."""
    return CommandConfig(name="Job", command=py(
        "import os, time\nprint('working', flush=True)\n"
        f"while not os.path.exists({str(path)!r}): time.sleep(0.01)"))


async def test_concurrent_starts_of_one_key_start_one_run(tmp_path: Path) -> None:
    orch = orch_of(gated(tmp_path / "go"))
    handles = await asyncio.gather(*[orch.run_command("Job", run_key="k") for _ in range(20)])
    assert len({h.run_id for h in handles}) == 1
    assert sorted(h.existing for h in handles) == [False] + [True] * 19
    assert len(orch.get_active_handles("Job")) == 1
    (tmp_path / "go").touch()
    done = await handles[0].wait(10)
    assert done.state is RunState.SUCCESS and done.run_key == "k" and done.attempt == 1

    strict = await orch.run_command("Job", run_key="k", strict=True)
    assert strict.existing and strict.run_id == done.run_id
    again = await orch.run_command("Job", run_key="k")
    assert not again.existing and again.result.attempt == 2
    assert again.result.rerun_of == done.run_id
    await again.wait(10)
    assert [r.attempt for r in orch.get_history("Job", 0, run_key="k")] == [2, 1]
    assert orch.get_history("Job", 0, run_key="other") == []


async def test_rerun_repeats_the_runtime_variables_and_refuses_active_runs(
        tmp_path: Path) -> None:
    orch = orch_of(CommandConfig(name="Say", command="echo {{ word }}"),
                   gated(tmp_path / "go"))
    first = await (await orch.run_command("Say", {"word": "hi"})).wait(10)
    rerun = await orch.rerun(first.run_id, reason="again")
    result = await rerun.wait(10)
    assert result.output == "hi\n" and result.rerun_of == first.run_id
    assert result.attempt == 2 and result.reason == "again" and result.run_key is None

    active = await orch.run_command("Job", run_key="j")
    with pytest.raises(RunStateError):
        await orch.rerun(active.run_id)
    with pytest.raises(RunNotFoundError):
        await orch.rerun("no-such-run")
    (tmp_path / "go").touch()
    await active.wait(10)


async def test_two_orchestrators_sharing_records_start_one_run_and_follow_it(
        tmp_path: Path) -> None:
    """As two processes would: B's start of A's active key returns A's run, which B
    follows (polling the records) until it ends, and whose output B reads from its file."""
    cmd = gated(tmp_path / "go")
    a = orch_of(cmd, records=SQLiteRecords(tmp_path / "state"))
    b = orch_of(cmd, records=SQLiteRecords(tmp_path / "state"))
    mine = await a.run_command("Job", run_key="nightly")
    theirs = await b.run_command("Job", run_key="nightly")
    assert theirs.existing and theirs.run_id == mine.run_id
    assert b.get_active_handles("Job") == []  # B runs nothing
    (tmp_path / "go").touch()
    followed = await theirs.wait(10)
    assert followed is not mine.result and followed.state is RunState.SUCCESS
    assert followed.exit_code == 0 and b.read_output(mine.run_id) == b"working\n"
    assert [r.run_id for r in b.get_history("Job")] == [mine.run_id]


async def test_durable_records_stream_output_and_export_cmdorc_files(tmp_path: Path) -> None:
    storage = OutputStorageConfig(directory=str(tmp_path / "outputs"), keep_history=2)
    orch = orch_of(CommandConfig(name="Say", command="echo stored"), storage=storage,
                   records=SQLiteRecords(tmp_path / "state"))
    result = await (await orch.run_command("Say")).wait(10)
    assert result.output_file == tmp_path / "state" / "output" / f"{result.run_id}.log"
    exported = tmp_path / "outputs" / "Say" / result.run_id / "output.txt"
    assert exported.read_text() == "stored\n"
    assert os.stat(exported).st_ino == os.stat(result.output_file).st_ino  # one file
    assert "\"output_file\" = \"output.txt\"" in (exported.parent / "metadata.toml").read_text()


def test_lost_is_a_final_state_reached_only_from_active_ones() -> None:
    assert RunState.LOST in FINAL_STATES and RunState.LOST.is_final
    assert RunState.LOST in TRANSITIONS[RunState.PENDING]
    assert RunState.LOST in TRANSITIONS[RunState.RUNNING]
    assert TRANSITIONS[RunState.LOST] == frozenset()


async def test_a_rerun_while_its_key_is_active_is_refused_and_cancels_nothing(
        tmp_path: Path) -> None:
    orch = orch_of(gated(tmp_path / "go"))
    first = await orch.run_command("Job", run_key="k")
    (tmp_path / "go").touch()
    await first.wait(10)
    (tmp_path / "go").unlink()
    second = await orch.run_command("Job", run_key="k")
    assert not second.existing and second.result.attempt == 2
    with pytest.raises(RunStateError, match="active run"):
        await orch.rerun(first.run_id)
    assert not second.is_finalized  # not cancelled by a retrigger
    (tmp_path / "go").touch()
    assert (await second.wait(10)).state is RunState.SUCCESS


async def test_wait_chain_waits_for_a_run_another_orchestrator_owns(tmp_path: Path) -> None:
    cmd = gated(tmp_path / "go")
    a = orch_of(cmd, records=SQLiteRecords(tmp_path / "state"))
    b = orch_of(cmd, records=SQLiteRecords(tmp_path / "state"))
    mine = await a.run_command("Job", run_key="w")
    waiter = asyncio.ensure_future(b.wait_chain([mine.run_id], timeout=10))
    await asyncio.sleep(0)
    assert not waiter.done()
    (tmp_path / "go").touch()
    runs = await waiter
    assert [(r.run_id, r.state) for r in runs] == [(mine.run_id, RunState.SUCCESS)]
