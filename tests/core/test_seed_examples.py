"""The examples of cmdorc's README, run against ``sidecar``.

Python code is the README's, verbatim, with ``from cmdorc import`` replaced by ``from sidecar
import``; snippets with top-level ``await`` are compiled with ``PyCF_ALLOW_TOP_LEVEL_AWAIT`` and
run in a namespace that provides the names the README leaves to the reader (``config``,
``orchestrator``, ``ui``, ``user_confirms``). TOML is the README's with real tools (ruff,
pytest, gcc, kubectl, black, python scripts) replaced by harmless commands. Where the README's
code is inherently racy, one line is added and marked ``# (test)``.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import logging
import os
import re
import shlex
import stat
import subprocess
import sys
import textwrap
import tomllib

import pytest
from corehelp import Recorder

import sidecar
from sidecar import (
    CommandOrchestrator,
    ConfigValidationError,
    RunState,
    TriggerEvent,
    load_config,
    load_configs,
)

pytestmark = pytest.mark.timeout(30)
PY = shlex.quote(sys.executable)


def _readme(src: str) -> str:
    return textwrap.dedent(src).replace("from cmdorc import", "from sidecar import")


async def run_snippet(src: str, ns: dict) -> dict:
    code = compile(_readme(src), "<README>", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    result = eval(code, ns)
    if inspect.iscoroutine(result):
        await result
    return ns


def _ns(**extra) -> dict:
    ns: dict = {"__name__": "readme", "asyncio": asyncio}
    exec("from sidecar import *", ns)
    ns.update(extra)
    return ns


def _write(path, text: str) -> None:
    path.write_text(textwrap.dedent(text))


class _RecordingOrchestrator(CommandOrchestrator):
    """Stands in for ``CommandOrchestrator`` in snippets that create their own, so the test
    can see what happened inside."""

    instances: list[_RecordingOrchestrator] = []

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.recorder = Recorder()
        self.add_listener(self.recorder)
        type(self).instances.append(self)


# ------------------------------------------------------------------------------------------
# Quick Start
# ------------------------------------------------------------------------------------------

QUICK_START_TOML = """\
[variables]
base_directory = "."
tests_directory = "{{ base_directory }}/tests"

[[command]]
name = "Lint"
triggers = ["changes_applied"]
command = "echo ruff check {{ base_directory }} && sleep 1"
cancel_on_triggers = ["prompt_send", "exit"]
max_concurrent = 1
on_retrigger = "cancel_and_restart"
debounce_in_ms = 500  # Wait 500ms after last trigger before running
timeout_secs = 300
keep_in_memory = 3
loop_detection = true

[[command]]
name = "Tests"
triggers = ["command_success:Lint", "Tests"]
command = "echo pytest {{ tests_directory }} -q && sleep 0.6"
timeout_secs = 180
keep_in_memory = 5
loop_detection = true

# Not in the README's TOML, but its Python runs it.
[[command]]
name = "Deploy"
command = "echo deploy {{ env }} {{ region }}"
vars = { env = "dev", region = "local" }
"""

QUICK_START_PY = """
import asyncio
from cmdorc import CommandOrchestrator, load_config

async def main():
    config = load_config("cmdorc.toml")

    # Recommended: Use async context manager for automatic cleanup
    async with CommandOrchestrator(config) as orchestrator:
        # Trigger a workflow
        await orchestrator.trigger("changes_applied")  # → Lint → (if success) Tests

        # Run a command and get handle for waiting
        handle = await orchestrator.run_command("Tests")
        result = await handle.wait()  # Blocks until complete (with optional timeout)
        print(f"Tests: {result.state.value} ({result.duration_str})")

        # Fire-and-forget (no await on handle.wait())
        handle = await orchestrator.run_command("Lint")  # Starts async
        # ... do other work ...
        await handle.wait()  # Wait later if needed

        # Pass runtime variables for this run only
        await orchestrator.run_command("Deploy", vars={"env": "production", "region": "us-east-1"})

        # Get status and history
        status = orchestrator.get_status("Tests")  # CommandStatus with active runs, etc.
        history = orchestrator.get_history("Tests", limit=5)  # List[RunResult]

        # Cancel running command
        await orchestrator.cancel_command("Lint", comment="User cancelled")

        # Or cancel everything
        await orchestrator.cancel_all()

    # shutdown() called automatically on exit (normal or exception)

asyncio.run(main())
"""


def test_quick_start(tmp_path) -> None:
    (tmp_path / "cmdorc.toml").write_text(QUICK_START_TOML)
    (tmp_path / "main.py").write_text(_readme(QUICK_START_PY) + textwrap.dedent("""
        # (test) report what happened
        import sidecar
        print("OK", sidecar.__name__)
    """))
    proc = subprocess.run([sys.executable, "main.py"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=25)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert re.fullmatch(r"Tests: (success|cancelled) \(\d+(ms|\.\ds)\)", lines[0]), lines
    assert lines[-1] == "OK sidecar"


async def test_quick_start_flow_in_process(tmp_path, monkeypatch) -> None:
    """The same flow, checking the state it leaves behind."""
    (tmp_path / "cmdorc.toml").write_text(QUICK_START_TOML)
    monkeypatch.chdir(tmp_path)
    _RecordingOrchestrator.instances.clear()
    ns = _ns(CommandOrchestrator=_RecordingOrchestrator)
    body = QUICK_START_PY.replace("asyncio.run(main())", "")
    await run_snippet(body, ns)
    ns["CommandOrchestrator"] = _RecordingOrchestrator
    await ns["main"]()
    (orch,) = _RecordingOrchestrator.instances
    assert orch.is_shutdown
    lint = orch.get_history("Lint")
    assert lint[0].state is RunState.SUCCESS
    assert lint[0].output == "ruff check .\n"
    assert lint[0].trigger_chain == []
    assert lint[1].state is RunState.CANCELLED  # restarted by the manual run
    assert lint[1].trigger_chain == ["changes_applied"]
    deploy = orch.get_history("Deploy")[0]
    assert deploy.resolved_command.command == "echo deploy production us-east-1"
    # Deploy is fire-and-forget and cancel_all() follows at once: either outcome is fine.
    assert (deploy.state, deploy.output) in [
        (RunState.SUCCESS, "deploy production us-east-1\n"), (RunState.CANCELLED, ""),
        (RunState.CANCELLED, "deploy production us-east-1\n")]
    tests = orch.get_history("Tests", limit=0)
    assert tests[0].trigger_chain == ["command_started:Lint", "command_success:Lint"]
    assert tests[-1].output == "pytest ./tests -q\n"


# ------------------------------------------------------------------------------------------
# Orchestrator lifecycle triggers
# ------------------------------------------------------------------------------------------

LIFECYCLE_TOML = """\
[[command]]
name = "Initialize Database"
triggers = ["orchestrator_started"]
command = "{python} scripts/init_db.py"

[[command]]
name = "Save State"
triggers = ["orchestrator_shutdown"]
command = "{python} scripts/save_state.py"

[[command]]
name = "Compile"
triggers = ["build"]
command = "echo compiled"
"""


def _lifecycle_project(tmp_path):
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "init_db.py").write_text(
        "open('events.log', 'a').write('init\\n')\n")
    (tmp_path / "scripts" / "save_state.py").write_text(
        "import time; time.sleep(0.2); open('events.log', 'a').write('save\\n')\n")
    (tmp_path / "cmdorc.toml").write_text(LIFECYCLE_TOML.format(python=PY))
    return load_config(tmp_path / "cmdorc.toml")


@pytest.mark.parametrize("pattern", ["context_manager", "manual"])
async def test_lifecycle_usage_patterns(tmp_path, pattern: str) -> None:
    config = _lifecycle_project(tmp_path)
    _RecordingOrchestrator.instances.clear()
    ns = _ns(config=config, CommandOrchestrator=_RecordingOrchestrator)
    if pattern == "context_manager":
        await run_snippet("""
            async with CommandOrchestrator(config) as orchestrator:
                # startup() called automatically - orchestrator_started emitted
                await orchestrator.trigger("build")
                # ... work ...
            # shutdown() called automatically - orchestrator_shutdown emitted
        """, ns)
    else:
        await run_snippet("""
            orchestrator = CommandOrchestrator(config)
            await orchestrator.startup()  # Emit orchestrator_started
            try:
                await orchestrator.trigger("build")
                # ... work ...
            finally:
                await orchestrator.shutdown()  # Emit orchestrator_shutdown
        """, ns)
    (orch,) = _RecordingOrchestrator.instances
    lifecycle = [e for e in orch.recorder.of(TriggerEvent) if e.kind == "lifecycle"]
    assert [e.name for e in lifecycle] == ["orchestrator_started", "orchestrator_shutdown"]
    assert all(e.chain == (e.name,) for e in lifecycle)  # fresh TriggerContext each
    names = orch.recorder.triggers()
    assert names.index("orchestrator_started") < names.index("build") < names.index(
        "orchestrator_shutdown")
    init = orch.get_history("Initialize Database")[0]
    assert init.trigger_chain == ["orchestrator_started"]
    assert init.state in (RunState.SUCCESS, RunState.CANCELLED)
    save = orch.get_history("Save State")[0]
    assert save.state is RunState.SUCCESS  # shutdown commands get to finish
    assert "save" in (tmp_path / "events.log").read_text().split()


async def test_lifecycle_example_auto_events(tmp_path) -> None:
    config = _lifecycle_project(tmp_path)
    orchestrator = CommandOrchestrator(config)
    seen: list[str] = []
    done = asyncio.Event()
    orchestrator.on_event("command_*:Compile", lambda h, c: seen.append(c.history[-1]))
    orchestrator.on_event("command_success:Compile", lambda h, c: done.set())
    await run_snippet("""
        await orchestrator.trigger("build")

        # If "build" triggers a command named "Compile":
        # 1. command_started:Compile    ← can trigger other commands
        # 2. ... subprocess runs ...
        # 3. command_success:Compile    ← triggers on success
    """, _ns(orchestrator=orchestrator))
    await asyncio.wait_for(done.wait(), 10)
    assert seen == ["command_started:Compile", "command_success:Compile"]
    await orchestrator.shutdown()


# ------------------------------------------------------------------------------------------
# Trigger chains
# ------------------------------------------------------------------------------------------


async def test_trigger_chains_example(capsys) -> None:
    from sidecar import CommandConfig

    orchestrator = CommandOrchestrator([
        CommandConfig(name="Lint", command="echo lint", triggers=["user_saves"]),
        CommandConfig(name="Tests", command="sleep 30", triggers=["command_success:Lint"]),
    ])
    triggered_tests_started = asyncio.Event()
    orchestrator.on_event("command_started:Tests",
                          lambda h, c: triggered_tests_started.set() if h.trigger_chain else None)
    ns = _ns(orchestrator=orchestrator, triggered_tests_started=triggered_tests_started)
    await run_snippet("""
        # Manual run
        handle = await orchestrator.run_command("Tests")
        print(handle.trigger_chain)  # []

        # Triggered run
        await orchestrator.trigger("user_saves")  # → Lint → Tests
        await asyncio.wait_for(triggered_tests_started.wait(), 10)  # (test) Tests starts later
        handle = orchestrator.get_active_handles("Tests")[0]
        print(handle.trigger_chain)
        # ["user_saves", "command_started:Lint", "command_success:Lint"]
    """, ns)
    out = capsys.readouterr().out.splitlines()
    assert out == ["[]", "['user_saves', 'command_started:Lint', 'command_success:Lint']"]
    await orchestrator.cancel_all()
    # RunResult.trigger_chain - Historical runs (via get_history())
    assert orchestrator.get_history("Tests")[0].trigger_chain == [
        "user_saves", "command_started:Lint", "command_success:Lint"]
    await orchestrator.shutdown()


# ------------------------------------------------------------------------------------------
# API highlights, RunHandle
# ------------------------------------------------------------------------------------------


async def test_api_highlights_and_runhandle(tmp_path) -> None:
    _write(tmp_path / "cmdorc.toml", """\
        [output_storage]
        keep_history = 5

        [[command]]
        name = "Lint"
        command = "echo lint"
        triggers = ["build"]

        [[command]]
        name = "Tests"
        command = "echo tests"
        triggers = ["build"]
    """)
    orchestrator = CommandOrchestrator(load_config(tmp_path / "cmdorc.toml"))
    ns = _ns(orchestrator=orchestrator)
    await run_snippet("""
        await orchestrator.trigger("build")                    # Fire event
        await orchestrator.cancel_command("Tests")             # Cancel specific
        orchestrator.get_status("Lint")                        # → CommandStatus (IDLE, RUNNING, etc.)
        orchestrator.get_history("Lint", limit=10)             # → List[RunResult]
        orchestrator.list_commands()                           # → List[str] of command names
    """, ns)
    assert orchestrator.list_commands() == ["Lint", "Tests"]
    await run_snippet("""
        handle = await orchestrator.run_command("Tests")
        result = await handle.wait(timeout=30)  # Await completion (event-driven, no polling)

        # Properties (read-only)
        handle.state            # RunState: PENDING, RUNNING, SUCCESS, FAILED, CANCELLED
        handle.success          # bool or None
        handle.output           # str (stdout + stderr)
        handle.duration_str     # "1m 23s", "452ms", "1h 5m", "1d 3h"
        handle.is_finalized     # bool: True if completed
        handle.start_time       # datetime.datetime or None: When run started
        handle.end_time         # datetime.datetime or None: When run ended
        handle.comment          # str: Cancellation reason or note
        handle.resolved_command # ResolvedCommand | None: Fully resolved command details
                                #   (command string, cwd, env vars, timeout, variable snapshot)
        handle.metadata_file    # Path | None: Path to metadata.toml (if output_storage enabled)
        handle.output_file      # Path | None: Path to output file (if output_storage enabled)
        handle.output_write_error  # str | None: Error if output files failed to write
    """, ns)
    handle, result = ns["handle"], ns["result"]
    assert result.state is RunState.SUCCESS and handle.success is True
    assert handle.output == "tests\n" and handle.is_finalized
    assert handle.metadata_file.parent == tmp_path / ".cmdorc/outputs/Tests" / handle.run_id
    assert handle.output_file.read_text() == "tests\n"
    assert handle.resolved_command.command == "echo tests"
    assert handle.resolved_command.cwd == str(tmp_path)
    assert handle._result is result  # "RunResult (Accessed via RunHandle._result or history)"
    await orchestrator.shutdown()


# ------------------------------------------------------------------------------------------
# Configuration
# ------------------------------------------------------------------------------------------


def _multi_file_project(tmp_path):
    _write(tmp_path / "base.toml", """\
        [variables]
        root = "/app"
        env = "dev"

        [output_storage]
        directory = ".cmdorc/outputs"
        keep_history = 10
        output_extension = ".txt"
    """)
    _write(tmp_path / "tests.toml", """\
        [variables]
        test_flags = "-v"

        [[command]]
        name = "Unit"
        command = "echo pytest {{ root }}/tests {{ test_flags }}"
        keep_history = 50  # Override: keep more test history
    """)
    _write(tmp_path / "build.toml", """\
        [[command]]
        name = "Compile"
        command = "echo gcc -o {{ root }}/bin/app main.c"
        output_extension = ".log"  # Override: use .log for builds
    """)


async def test_multi_file_configuration(tmp_path, monkeypatch, caplog) -> None:
    _multi_file_project(tmp_path)
    monkeypatch.chdir(tmp_path)
    ns = _ns()
    await run_snippet("""
        from cmdorc import load_configs

        config = load_configs(["base.toml", "tests.toml", "build.toml"])
        orchestrator = CommandOrchestrator(config)
    """, ns)
    orchestrator = ns["orchestrator"]
    config = ns["config"]
    assert config.vars == {"root": "/app", "env": "dev", "test_flags": "-v"}
    unit = await (await orchestrator.run_command("Unit")).wait(10)
    compile_ = await (await orchestrator.run_command("Compile")).wait(10)
    assert unit.output == "pytest /app/tests -v\n"
    assert compile_.output == "gcc -o /app/bin/app main.c\n"
    assert unit.output_file == tmp_path / ".cmdorc/outputs/Unit" / unit.run_id / "output.txt"
    assert compile_.output_file.name == "output.log"
    assert unit.resolved_command.keep_history == 50
    assert compile_.resolved_command.keep_history == 10
    await orchestrator.shutdown()

    # Warnings and errors
    _write(tmp_path / "other.toml", """\
        [variables]
        root = "/other"
    """)
    with caplog.at_level(logging.WARNING):
        merged = load_configs(["base.toml", "tests.toml", "other.toml"])
    assert merged.vars["root"] == "/other"
    assert 'Variable \'root\' overridden by other.toml (was: "/app", now: "/other")' in \
        caplog.text
    _write(tmp_path / "dup.toml", """\
        [[command]]
        name = "Unit"
        command = "true"
    """)
    with pytest.raises(ConfigValidationError, match="Duplicate command name 'Unit'"):
        load_configs(["base.toml", "tests.toml", "dup.toml"])


async def test_programmatic_configuration() -> None:
    ns = _ns()
    await run_snippet("""
        from cmdorc import CommandConfig, CommandOrchestrator

        commands = [
            CommandConfig(
                name="Format",
                command="echo black .",
                triggers=["Format", "changes_applied"]
            )
        ]

        orchestrator = CommandOrchestrator(commands)
    """, ns)
    orchestrator = ns["orchestrator"]
    assert ns["CommandOrchestrator"] is sidecar.CommandOrchestrator
    outcome = await orchestrator.trigger("changes_applied")
    assert (await outcome.started[0].wait(10)).output == "black .\n"
    await orchestrator.shutdown()


async def test_async_context_manager_and_manual_shutdown(tmp_path) -> None:
    from sidecar import CommandConfig

    config = [CommandConfig(name="Build", command="sleep 30", triggers=["build"])]
    ns = _ns(config=config)
    await run_snippet("""
        async with CommandOrchestrator(config) as orchestrator:
            await orchestrator.trigger("build")
            # ... orchestrator is fully functional here ...

        # shutdown() called automatically - all running commands cancelled, resources cleaned up
    """, ns)
    first = ns["orchestrator"]
    assert first.is_shutdown
    assert first.get_history("Build")[0].state is RunState.CANCELLED

    ns = _ns(config=config)
    await run_snippet("""
        orchestrator = CommandOrchestrator(config)
        try:
            # ... long-running application ...
            await orchestrator.trigger("build")  # (test)
        finally:
            await orchestrator.shutdown(timeout=30.0, cancel_running=True)
    """, ns)
    assert ns["orchestrator"].get_history("Build")[0].state is RunState.CANCELLED


# ------------------------------------------------------------------------------------------
# Output storage
# ------------------------------------------------------------------------------------------

STORAGE_TOML = """\
[output_storage]
directory = ".cmdorc/outputs"
keep_history = 10                       # Global default: 10 runs
output_extension = ".txt"               # Global default: .txt

[[command]]
name = "Tests"
command = "echo pytest tests/"
keep_history = 50                       # Override: keep more test history
output_extension = ".log"               # Override: use .log extension

[[command]]
name = "Build"
command = "echo make build"
# No override: uses global defaults (10 runs, .txt extension)

[[command]]
name = "Benchmark"
command = "echo '{\\"score\\": 1}'"
keep_history = -1                       # Override: unlimited (never delete)
output_extension = ".json"              # Override: JSON format for parsing
"""


async def test_output_storage_example(tmp_path, capsys) -> None:
    (tmp_path / "cmdorc.toml").write_text(STORAGE_TOML)
    orchestrator = CommandOrchestrator(load_config(tmp_path / "cmdorc.toml"))
    ns = _ns(orchestrator=orchestrator)
    await run_snippet("""
        handle = await orchestrator.run_command("Tests")
        await handle.wait()

        # Access output files
        if handle.output_file:
            print(f"Output saved to: {handle.output_file}")
            with open(handle.output_file) as f:
                print(f.read())

        if handle.metadata_file:
            print(f"Metadata saved to: {handle.metadata_file}")
    """, ns)
    handle = ns["handle"]
    run_dir = tmp_path / ".cmdorc" / "outputs" / "Tests" / handle.run_id
    assert capsys.readouterr().out == (
        f"Output saved to: {run_dir / 'output.log'}\npytest tests/\n\n"
        f"Metadata saved to: {run_dir / 'metadata.toml'}\n")
    meta = tomllib.loads((run_dir / "metadata.toml").read_text())
    assert meta["state"] == "success"
    assert meta["resolved_command"]["command"] == "echo pytest tests/"

    build = await (await orchestrator.run_command("Build")).wait(10)
    bench = await (await orchestrator.run_command("Benchmark")).wait(10)
    assert build.output_file.name == "output.txt"
    import json

    assert json.loads(bench.output_file.read_text()) == {"score": 1}
    assert bench.output_file.name == "output.json"
    assert build.resolved_command.keep_history == 10
    assert bench.resolved_command.keep_history == -1
    await orchestrator.shutdown()


async def test_memory_vs_disk_history_example(tmp_path, monkeypatch, capsys) -> None:
    _write(tmp_path / "cmdorc.toml", """\
        # Pattern 1: Small memory cache, large disk archive
        [output_storage]
        keep_history = 100  # Keep 100 runs on disk

        [[command]]
        name = "Tests"
        command = "echo tests"
        keep_in_memory = 3  # Only 3 in RAM for UI queries
        # → On startup: Loads 3 most recent from disk

        # Pattern 4: Large memory for dashboard
        [[command]]
        name = "Benchmark"
        command = "echo bench"
        keep_in_memory = -1  # Unlimited memory
    """)
    monkeypatch.chdir(tmp_path)

    async def run_some(orch1) -> list[str]:
        ids = []
        for _ in range(5):
            ids.append((await (await orch1.run_command("Tests")).wait(10)).run_id)
            await (await orch1.run_command("Benchmark")).wait(10)
        return ids

    ns = _ns(run_some=run_some)
    await run_snippet("""
        # First run: create and execute commands
        config = load_config("cmdorc.toml")
        orch1 = CommandOrchestrator(config)
        # ... run commands, outputs written to disk ...
        ids = await run_some(orch1)  # (test)

        # Later (after restart): history auto-loaded
        orch2 = CommandOrchestrator(config)
        history = orch2.get_history("Tests")  # Already populated!
        print(f"Loaded {len(history)} runs from disk")
    """, ns)
    assert capsys.readouterr().out == "Loaded 3 runs from disk\n"
    orch2 = ns["orch2"]
    history = ns["history"]
    assert [r.run_id for r in history] == list(reversed(ns["ids"]))[:3]
    assert [r.output for r in history] == ["tests\n"] * 3
    assert len(orch2.get_history("Benchmark", limit=0)) == 5
    assert orch2.get_status("Tests").last_run.run_id == history[0].run_id
    await ns["orch1"].shutdown()
    await orch2.shutdown()


# ------------------------------------------------------------------------------------------
# Preview, callbacks, template variables, history retention
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("confirm", [False, True])
async def test_preview_example(tmp_path, capsys, confirm: bool) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "kubectl"
    fake.write_text(f"#!/bin/sh\necho fake-kubectl \"$@\" > {shlex.quote(str(tmp_path))}/ran\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    _write(tmp_path / "cmdorc.toml", f"""\
        [variables]
        base_dir = "{tmp_path}"
        env = "dev"
        region = "local"

        [[command]]
        name = "Deploy"
        command = "kubectl apply -f deploy.yaml --env={{{{ env }}}} --region={{{{ region }}}}"
        cwd = "{tmp_path}"
        timeout_secs = 300
        env = {{ PATH = "{bin_dir}:{os.environ['PATH']}" }}
    """)
    orchestrator = CommandOrchestrator(load_config(tmp_path / "cmdorc.toml"))
    ns = _ns(orchestrator=orchestrator, user_confirms=lambda: confirm)
    await run_snippet("""
        # Preview with variable overrides
        preview = orchestrator.preview_command("Deploy", vars={"env": "staging", "region": "us-east-1"})

        print(f"Would run: {preview.command}")
        # Output: "kubectl apply -f deploy.yaml --env=staging --region=us-east-1"

        print(f"Working directory: {preview.cwd}")
        # Output: "/home/user/project"

        print(f"Environment: {preview.env}")
        # Output: {...merged system env + config env...}

        print(f"Timeout: {preview.timeout_secs}s")
        # Output: 300

        print(f"Variables used: {preview.vars}")
        # Output: {"env": "staging", "region": "us-east-1", "base_dir": "/home/user/project"}

        # Confirm before running
        if user_confirms():
            handle = await orchestrator.run_command("Deploy", vars={"env": "staging", "region": "us-east-1"})
    """, ns)
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "Would run: kubectl apply -f deploy.yaml --env=staging --region=us-east-1"
    assert out[1] == f"Working directory: {tmp_path}"
    assert out[3] == "Timeout: 300s"
    preview = ns["preview"]
    assert preview.env["PATH"].startswith(str(bin_dir))
    assert preview.env["HOME"] == os.environ["HOME"]  # merged system env
    assert preview.vars == {"base_dir": str(tmp_path), "env": "staging", "region": "us-east-1"}
    if confirm:
        result = await ns["handle"].wait(10)
        assert result.state is RunState.SUCCESS, result.output
        assert (tmp_path / "ran").read_text() == (
            "fake-kubectl apply -f deploy.yaml --env=staging --region=us-east-1\n")
    else:
        assert "handle" not in ns
        assert orchestrator.get_status("Deploy").state == "never_run"
    await orchestrator.shutdown()


async def test_callbacks_example() -> None:
    from sidecar import CommandConfig

    class UI:
        def __init__(self) -> None:
            self.calls: list[str] = []
            self.hidden = asyncio.Event()

        def show_spinner(self) -> None:
            self.calls.append("show")

        def hide_spinner(self) -> None:
            self.calls.append("hide")
            self.hidden.set()

    ui = UI()
    orchestrator = CommandOrchestrator([CommandConfig(name="Tests", command="echo ok")])
    await run_snippet("""
        orchestrator.on_event("command_started:Tests", lambda handle, context: ui.show_spinner())
        orchestrator.on_event("command_success:Tests", lambda handle, context: ui.hide_spinner())
    """, _ns(orchestrator=orchestrator, ui=ui))
    await orchestrator.run_command("Tests")
    await asyncio.wait_for(ui.hidden.wait(), 10)
    assert ui.calls == ["show", "hide"]
    await orchestrator.shutdown()


async def test_template_variables_example() -> None:
    from sidecar import CommandConfig, RunnerConfig

    config = RunnerConfig(commands=[
        CommandConfig(name="Where", command="echo {{ env }} {{ region }}")])
    ns = _ns(config=config)
    await run_snippet("""
        orchestrator = CommandOrchestrator(config, vars={"env": "production", "region": "us-west-2"})
        # Now commands can use {{ env }} and {{ region }}
    """, ns)
    orchestrator = ns["orchestrator"]
    result = await (await orchestrator.run_command("Where")).wait(10)
    assert result.output == "production us-west-2\n"
    await orchestrator.shutdown()


async def test_history_retention_example(capsys) -> None:
    from sidecar import CommandConfig

    orchestrator = CommandOrchestrator([CommandConfig(name="Tests", command="echo t",
                                                      keep_in_memory=10)])
    ids = [(await (await orchestrator.run_command("Tests")).wait(10)).run_id for _ in range(12)]
    await run_snippet("""
        history = orchestrator.get_history("Tests")
        for result in history:
            print(f"{result.run_id}: {result.state.value} in {result.duration_str}")
    """, _ns(orchestrator=orchestrator))
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == list(reversed(ids))[:10]
    assert all(re.fullmatch(r"[0-9a-f-]+: success in \d+ms|[0-9a-f-]+: success in [\d.]+s", x)
               for x in lines), lines
    await orchestrator.shutdown()


def test_public_names_exist() -> None:
    for name in ["CommandOrchestrator", "load_config", "load_configs", "CommandConfig",
                 "RunHandle", "RunResult", "RunState", "CommandStatus", "TriggerContext",
                 "CommandNotFoundError", "ConcurrencyLimitError", "DebounceError",
                 "TriggerCycleError", "ConfigValidationError", "VariableResolutionError",
                 "OutputStorageConfig", "ResolvedCommand"]:
        assert hasattr(sidecar, name), name


def test_templated_absolute_cwd_from_toml(tmp_path) -> None:
    _write(tmp_path / "cmdorc.toml", f"""\
        [variables]
        base_dir = "{tmp_path}"

        [[command]]
        name = "Deploy"
        command = "true"
        cwd = "{{{{ base_dir }}}}"
    """)
    orchestrator = CommandOrchestrator(load_config(tmp_path / "cmdorc.toml"))
    assert orchestrator.preview_command("Deploy").cwd == str(tmp_path)
