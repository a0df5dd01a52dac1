"""The orchestrator reaches processes and stored runs through injected ports; without them it
uses the local adapters, which the core imports only when it needs them."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from corehelp import orch_of, py

from sidecar import CommandConfig, OutputStorageConfig, RunnerConfig, RunResult, RunState
from sidecar.adapters import LocalExecutor, OutputFilesStore, Process

pytestmark = pytest.mark.timeout(30)


class RecordingExecutor(LocalExecutor):
    def __init__(self) -> None:
        self.started: list[tuple[list[str] | None, str, str | None]] = []
        self.executions: list[Process] = []

    async def start(self, argv: Sequence[str] | None, script: str, *, cwd: str | None,
                    env: Mapping[str, str] | None, on_output: Callable[[bytes], None],
                    **kw: Any) -> Process:
        self.started.append((list(argv) if argv is not None else None, script, cwd))
        execution = await super().start(argv, script, cwd=cwd, env=env, on_output=on_output,
                                        **kw)
        self.executions.append(execution)
        return execution


class RecordingStore(OutputFilesStore):
    def __init__(self, settings: OutputStorageConfig) -> None:
        self.calls: list[tuple[str, Any]] = []
        super().__init__(settings)

    def configure(self, settings: OutputStorageConfig) -> None:
        self.calls.append(("configure", settings.directory))
        super().configure(settings)

    def write_metadata(self, result: RunResult) -> None:
        self.calls.append(("write_metadata", result.run_id))
        super().write_metadata(result)


async def test_injected_executor_starts_the_runs(tmp_path: Path) -> None:
    executor = RecordingExecutor()
    orch = orch_of(CommandConfig(name="E", command=py("print('via executor')"),
                                 cwd=str(tmp_path)),
                   CommandConfig(name="Sh", command="echo a | cat"), executor=executor)
    e = await (await orch.run_command("E")).wait(10)
    sh = await (await orch.run_command("Sh")).wait(10)
    assert (e.state, e.output, sh.output) == (RunState.SUCCESS, "via executor\n", "a\n")
    assert executor.started[0] == (e.resolved_command.argv, e.resolved_command.command,
                                   str(tmp_path))
    assert executor.started[1][0] is None and executor.started[1][1] == "echo a | cat"
    assert len(executor.executions) == 2
    assert all(x.returncode == 0 for x in executor.executions)


async def test_injected_store_keeps_the_runs_and_gets_new_settings(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    store = RecordingStore(OutputStorageConfig(directory=str(first), keep_history=-1))
    cmd = CommandConfig(name="S", command="echo stored")
    orch = orch_of(cmd, store=store)  # the config's own [output_storage] is off
    one = await (await orch.run_command("S")).wait(10)
    assert one.output_file == first / "S" / one.run_id / "output.txt"
    assert one.output_file.read_text() == "stored\n"
    assert ("write_metadata", one.run_id) in store.calls

    orch.reload_config(RunnerConfig(
        commands=[cmd], output_storage=OutputStorageConfig(directory=str(second),
                                                           keep_history=1)))
    assert store.calls[-1] == ("configure", str(second))
    two = await (await orch.run_command("S")).wait(10)
    assert two.metadata_file == second / "S" / two.run_id / "metadata.toml"
    assert two.metadata_file.is_file()
    assert store.calls[-1] == ("write_metadata", two.run_id)


def test_the_core_loads_the_local_adapters_only_when_it_needs_them() -> None:
    code = (
        "import sys\n"
        "import sidecar, sidecar.core\n"
        "from sidecar.core import orchestrator, ports\n"
        "assert not [m for m in sys.modules if m.startswith('sidecar.adapters')], 'early'\n"
        "orch = sidecar.CommandOrchestrator([sidecar.CommandConfig(name='A', command='true')])\n"
        "from sidecar.adapters import LocalExecutor, OutputFilesStore\n"
        "assert type(orch._executor) is LocalExecutor, orch._executor\n"
        "assert type(orch._store) is OutputFilesStore, orch._store\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=20)
    assert proc.returncode == 0, proc.stderr
