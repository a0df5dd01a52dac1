"""RunSnapshot: the one flat view of a run, behind RunEvent, to_dict and stored metadata."""

from __future__ import annotations

import dataclasses
import tomllib

import pytest
from corehelp import Recorder, orch_of, py

from sidecar import (
    CommandConfig,
    OutputStorageConfig,
    RunEvent,
    RunResult,
    RunSnapshot,
)

pytestmark = pytest.mark.timeout(30)

SNAPSHOT_FIELDS = ["run_id", "command", "state", "exit_code", "start_time", "end_time",
                   "duration_secs", "trigger_event", "trigger_chain", "started_by",
                   "upstream_run_ids", "comment", "error",
                   "resolved_command", "cwd", "output_file", "output_size",
                   "run_key", "attempt", "rerun_of", "reason"]
# Every field RunEvent had before it became a snapshot: consumers keep reading them.
OLD_RUN_EVENT_FIELDS = ["run_id", "command", "state", "previous", "exit_code", "start_time",
                        "end_time", "duration_secs", "trigger_event", "trigger_chain",
                        "comment", "error", "resolved_command", "output_file"]
TO_DICT_KEYS = ["command_name", "run_id", "state", "success", "exit_code", "error", "comment",
                "trigger_event", "trigger_chain", "started_by", "start_time", "end_time", "duration_secs",
                "duration_str", "resolved_command", "cwd", "output_file", "metadata_file"]


def _fields(obj: object) -> dict[str, object]:
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}  # type: ignore[arg-type]


def test_snapshot_shape() -> None:
    assert [f.name for f in dataclasses.fields(RunSnapshot)] == SNAPSHOT_FIELDS
    snap = RunResult(command_name="X").snapshot()
    assert not hasattr(snap, "__dict__")  # slotted
    with pytest.raises(dataclasses.FrozenInstanceError):
        snap.state = "running"  # type: ignore[misc]
    assert (snap.command, snap.state, snap.duration_secs, snap.output_size) == ("X", "pending",
                                                                                None, 0)
    assert issubclass(RunEvent, RunSnapshot)
    names = [f.name for f in dataclasses.fields(RunEvent)]
    assert set(OLD_RUN_EVENT_FIELDS) <= set(names)
    assert names == [*SNAPSHOT_FIELDS, "previous"]
    event = RunEvent.of(snap, "pending")
    assert _fields(event) == {**_fields(snap), "previous": "pending"}


async def test_events_and_to_dict_come_from_the_snapshot(tmp_path) -> None:
    orch = orch_of(CommandConfig(name="S", command=py("print('héllo'); raise SystemExit(3)"),
                                 triggers=["go"], cwd=str(tmp_path)))
    rec = Recorder()
    orch.add_listener(rec)
    handle = (await orch.trigger("go", started_by="Neovim")).started[0]
    result = await handle.wait(10)
    events = [e for e in rec.of(RunEvent) if e.run_id == handle.run_id]
    assert [e.state for e in events] == ["pending", "running", "failed"]
    assert [e.duration_secs for e in events[:2]] == [None, None]
    final = events[-1]
    snap = result.snapshot()
    assert _fields(final) == {**_fields(snap), "previous": "running"}
    assert snap.output_size == len("héllo\n".encode()) == orch.output_size(handle.run_id)
    assert snap.cwd == str(tmp_path) and snap.exit_code == 3 and snap.trigger_chain == ("go",)
    assert snap.error == "Command exited with code 3"
    assert snap.started_by == "Neovim" and snap.upstream_run_ids == ()
    d = result.to_dict()
    assert list(d) == TO_DICT_KEYS
    assert d == {
        "command_name": "S", "run_id": handle.run_id, "state": "failed", "success": False,
        "exit_code": 3, "error": "Command exited with code 3", "comment": "",
        "trigger_event": "go", "trigger_chain": ["go"], "started_by": "Neovim",
        "start_time": result.start_time.isoformat(), "end_time": result.end_time.isoformat(),
        "duration_secs": result.duration_secs, "duration_str": result.duration_str,
        "resolved_command": result.resolved_command.command, "cwd": str(tmp_path),
        "output_file": None, "metadata_file": None,
    }


async def test_stored_metadata_and_reloaded_history(tmp_path) -> None:
    out = tmp_path / "out"
    storage = OutputStorageConfig(directory=str(out), keep_history=-1)
    cmd = CommandConfig(name="M", command=py("print('x' * 1000)"), cwd=str(tmp_path))
    orch = orch_of(cmd, storage=storage)
    result = await (await orch.run_command("M", started_by="cli")).wait(10)
    meta = tomllib.loads(result.metadata_file.read_text())
    top = {k: v for k, v in meta.items() if not isinstance(v, dict)}
    assert list(top) == ["command_name", "run_id", "state", "success", "exit_code", "comment",
                         "trigger_chain", "started_by", "start_time", "end_time", "duration_secs",
                         "output_file"]  # None values (error, trigger_event) are left out
    assert top["output_file"] == "output.txt"
    assert meta["resolved_command"]["cwd"] == str(tmp_path)
    # A run reloaded from disk has no capture: its size is the output file's.
    again = orch_of(cmd, storage=storage)
    loaded = again.get_history("M")[0]
    assert loaded.capture is None and loaded.started_by == "cli"
    assert loaded.snapshot().output_size == 1001 == result.snapshot().output_size
    assert loaded.snapshot().duration_secs == pytest.approx(result.duration_secs)


async def test_a_reloaded_run_reads_the_bytes_its_size_counts(tmp_path) -> None:
    """Output that is not valid UTF-8: a run reloaded from disk reports the file's size, and
    ``read_output`` returns exactly those bytes (not the text decoded and encoded again, which
    would be longer and disagree with ``outputSize``)."""
    raw = b"ok \xff\xfe end\n"
    storage = OutputStorageConfig(directory=str(tmp_path / "out"), keep_history=-1)
    cmd = CommandConfig(name="B", cwd=str(tmp_path),
                        command=py(f"import sys; sys.stdout.buffer.write({raw!r})"))
    orch = orch_of(cmd, storage=storage)
    live = await (await orch.run_command("B")).wait(10)
    assert orch.read_output(live.run_id) == raw
    again = orch_of(cmd, storage=storage)
    loaded = again.get_history("B")[0]
    assert loaded.capture is None
    assert again.output_size(loaded.run_id) == loaded.snapshot().output_size == len(raw)
    assert again.read_output(loaded.run_id) == raw
    assert again.read_output(loaded.run_id, 3, 2) == raw[3:5]

