"""Output storage: layout, metadata, retention, extensions, reloading history."""

from __future__ import annotations

import tomllib

import pytest
from corehelp import orch_of

from sidecar import (
    CommandConfig,
    CommandOrchestrator,
    OutputStorageConfig,
    RunnerConfig,
    RunState,
    load_config,
)

pytestmark = pytest.mark.timeout(30)


def _dirs(root, command: str) -> set[str]:
    base = root / command
    return {d.name for d in base.iterdir()} if base.exists() else set()


async def test_keep_history_zero_writes_nothing(tmp_path) -> None:
    out = tmp_path / "out"
    orch = orch_of(CommandConfig(name="A", command="echo a"),
                   storage=OutputStorageConfig(directory=str(out), keep_history=0))
    handle = await orch.run_command("A")
    await handle.wait(10)
    assert handle.output == "a\n"
    assert handle.output_file is None and handle.metadata_file is None
    assert not out.exists()


async def test_layout_and_metadata(tmp_path) -> None:
    out = tmp_path / "out"
    orch = orch_of(CommandConfig(name="Tests", command="sh -c 'echo {{ msg }}; exit 4'",
                                 triggers=["go"], timeout_secs=60),
                   storage=OutputStorageConfig(directory=str(out), keep_history=-1),
                   vars={"msg": "hello"})
    handle = (await orch.trigger("go")).started[0]
    result = await handle.wait(10)
    run_dir = out / "Tests" / handle.run_id
    assert handle.output_file == run_dir / "output.txt"
    assert handle.metadata_file == run_dir / "metadata.toml"
    assert handle.output_file.read_bytes() == b"hello\n"
    assert handle.output_write_error is None
    meta = tomllib.loads(handle.metadata_file.read_text())
    assert meta["command_name"] == "Tests"
    assert meta["run_id"] == handle.run_id
    assert meta["state"] == "failed"
    assert meta["success"] is False
    assert meta["exit_code"] == 4
    assert meta["trigger_event"] == "go"
    assert meta["trigger_chain"] == ["go"]
    assert meta["output_file"] == "output.txt"
    assert meta["duration_secs"] == pytest.approx(result.duration_secs)
    assert meta["resolved_command"]["command"] == "sh -c 'echo hello; exit 4'"
    assert meta["resolved_command"]["timeout_secs"] == 60
    assert meta["resolved_command"]["vars"] == {"msg": "hello"}
    assert sorted(p.name for p in run_dir.iterdir()) == ["metadata.toml", "output.txt"]


async def test_retention_keeps_newest_n(tmp_path) -> None:
    out = tmp_path / "out"
    orch = orch_of(CommandConfig(name="N", command="echo {{ i }}", keep_in_memory=10),
                   CommandConfig(name="All", command="true", keep_history=-1),
                   storage=OutputStorageConfig(directory=str(out), keep_history=3))
    ids = []
    for i in range(8):
        ids.append((await (await orch.run_command("N", vars={"i": str(i)})).wait(10)).run_id)
        await (await orch.run_command("All")).wait(10)
        assert _dirs(out, "N") == set(ids[-3:]), f"after run {i}"
    assert len(_dirs(out, "All")) == 8
    # Memory history is independent of disk retention.
    assert len(orch.get_history("N")) == 8
    newest = orch.get_history("N")[0]
    assert newest.output_file.read_text() == "7\n"
    # Evicted runs lost their files; their in-memory output is gone with them.
    oldest = orch.get_history("N")[-1]
    assert not oldest.output_file.exists()


async def test_output_extension_global_and_per_command(tmp_path) -> None:
    out = tmp_path / "out"
    orch = orch_of(CommandConfig(name="Build", command="echo b"),
                   CommandConfig(name="Tests", command="echo t", output_extension=".log",
                                 keep_history=5),
                   storage=OutputStorageConfig(directory=str(out), keep_history=2,
                                               output_extension=".json"))
    b = await orch.run_command("Build")
    t = await orch.run_command("Tests")
    await b.wait(10)
    await t.wait(10)
    assert b.output_file.name == "output.json"
    assert t.output_file.name == "output.log"
    assert t.resolved_command.output_extension == ".log"
    assert t.resolved_command.keep_history == 5
    assert b.resolved_command.keep_history == 2
    assert (out / "Tests" / t.run_id / "output.log").read_text() == "t\n"


async def test_per_command_enable_with_global_off(tmp_path) -> None:
    out = tmp_path / "out"
    orch = orch_of(CommandConfig(name="Off", command="true"),
                   CommandConfig(name="On", command="true", keep_history=1),
                   storage=OutputStorageConfig(directory=str(out), keep_history=0))
    off = await orch.run_command("Off")
    on = await orch.run_command("On")
    await off.wait(10)
    await on.wait(10)
    assert off.output_file is None
    assert on.metadata_file.is_file()


async def test_cancelled_and_failed_runs_are_stored(tmp_path) -> None:
    out = tmp_path / "out"
    orch = orch_of(CommandConfig(name="L", command="sh -c 'echo partial; sleep 30'"),
                   storage=OutputStorageConfig(directory=str(out), keep_history=5))
    sub = orch.subscribe()
    handle = await orch.run_command("L")
    async for event in sub:
        if getattr(event, "text", "") == "partial\n":
            break
    await orch.cancel_command("L", comment="stop")
    meta = tomllib.loads(handle.metadata_file.read_text())
    assert meta["state"] == "cancelled"
    assert meta["comment"] == "stop"
    assert handle.output_file.read_text() == "partial\n"


async def test_history_reloaded_by_new_orchestrator(tmp_path) -> None:
    (tmp_path / "cmdorc.toml").write_text(
        '[variables]\nn = ""\n\n[output_storage]\nkeep_history = 10\n\n'
        '[[command]]\nname = "Tests"\ncommand = "echo run {{ n }}"\nkeep_in_memory = 3\n\n'
        '[[command]]\nname = "Deploy"\ncommand = "echo d"\nkeep_in_memory = -1\n\n'
        '[[command]]\nname = "Never"\ncommand = "true"\n')
    config = load_config(tmp_path / "cmdorc.toml")
    assert config.output_storage.directory == str(tmp_path / ".cmdorc/outputs")
    orch1 = CommandOrchestrator(config)
    runs = []
    for n in range(5):
        runs.append(await (await orch1.run_command("Tests", vars={"n": str(n)})).wait(10))
    for _ in range(4):
        await (await orch1.run_command("Deploy")).wait(10)
    await orch1.shutdown()

    orch2 = CommandOrchestrator(load_config(tmp_path / "cmdorc.toml"))
    history = orch2.get_history("Tests")
    assert [r.run_id for r in history] == [r.run_id for r in reversed(runs)][:3]
    assert [r.output for r in history] == ["run 4\n", "run 3\n", "run 2\n"]
    assert all(r.state is RunState.SUCCESS and r.success for r in history)
    assert history[0].duration_str != "-"
    assert history[0].resolved_command.command == "echo run 4"
    assert orch2.get_status("Tests").state == "success"
    assert orch2.get_status("Tests").last_run.run_id == runs[-1].run_id
    assert orch2.get_handle_by_run_id(runs[-1].run_id) is not None
    assert len(orch2.get_history("Deploy", limit=0)) == 4
    assert orch2.get_status("Never").state == "never_run"
    await orch2.shutdown()


async def test_corrupted_metadata_is_skipped(tmp_path) -> None:
    out = tmp_path / "out"
    cfg = RunnerConfig(commands=[CommandConfig(name="T", command="echo {{ n }}",
                                               keep_in_memory=10)],
                       output_storage=OutputStorageConfig(directory=str(out), keep_history=-1))
    orch1 = CommandOrchestrator(cfg)
    handles = [await orch1.run_command("T", vars={"n": str(n)}) for n in range(1)]
    results = [await handles[0].wait(10)]
    for n in range(1, 4):
        results.append(await (await orch1.run_command("T", vars={"n": str(n)})).wait(10))
    await orch1.shutdown()
    results[1].metadata_file.write_text("this is = = not toml [[[")
    results[2].metadata_file.write_text('command_name = "T"\n')  # missing keys
    (out / "T" / "stray-dir").mkdir()  # no metadata: ignored
    orch2 = CommandOrchestrator(cfg)
    assert [r.output for r in orch2.get_history("T")] == ["3\n", "0\n"]
    await orch2.shutdown()


async def test_output_write_error_is_reported(tmp_path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    orch = orch_of(CommandConfig(name="W", command="echo w"),
                   storage=OutputStorageConfig(directory=str(blocker), keep_history=1))
    handle = await orch.run_command("W")
    result = await handle.wait(10)
    assert result.state is RunState.SUCCESS
    assert handle.output_write_error
    assert handle.output == "w\n"
