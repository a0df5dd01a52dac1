"""CommandOrchestrator: registry, queries, cancelling, callbacks, lifecycle, policies."""

from __future__ import annotations

import asyncio
import os

import pytest
from corehelp import Recorder, orch_of, py

from sidecar import (
    CommandConfig,
    CommandNotFoundError,
    CommandOrchestrator,
    CommandStatus,
    ConcurrencyLimitError,
    ConfigValidationError,
    DebounceError,
    OrchestratorShutdownError,
    RunHandle,
    RunState,
    TriggerContext,
    TriggerEvent,
    TriggerResult,
)

pytestmark = pytest.mark.timeout(30)

LONG = "sleep 30"


# ------------------------------------------------------------------------------------------
# Registry and queries
# ------------------------------------------------------------------------------------------


async def test_list_and_get_commands_and_not_found() -> None:
    orch = orch_of(CommandConfig(name="A", command="true"),
                   CommandConfig(name="B", command="true", triggers=["b"]))
    assert orch.list_commands() == ["A", "B"]
    assert orch.get_command("B").triggers == ["b"]
    with pytest.raises(CommandNotFoundError):
        await orch.run_command("Nope")
    with pytest.raises(CommandNotFoundError):
        orch.get_status("Nope")
    with pytest.raises(CommandNotFoundError):
        orch.get_history("Nope")
    with pytest.raises(CommandNotFoundError):
        await orch.cancel_command("Nope")
    with pytest.raises(CommandNotFoundError):
        orch.preview_command("Nope")


async def test_programmatic_list_of_commands_and_duplicates() -> None:
    orch = CommandOrchestrator([CommandConfig(name="X", command="echo x")])
    assert (await (await orch.run_command("X")).wait(10)).output == "x\n"
    await orch.shutdown()
    with pytest.raises(ConfigValidationError, match="Duplicate command name 'X'"):
        CommandOrchestrator([CommandConfig(name="X", command="true"),
                             CommandConfig(name="X", command="false")])


async def test_add_update_remove_command() -> None:
    orch = orch_of(CommandConfig(name="A", command="echo a"))
    orch.add_command(CommandConfig(name="B", command="echo b", triggers=["t"]))
    assert orch.get_trigger_graph() == {"t": ["B"]}
    await (await orch.run_command("A")).wait(10)
    orch.update_command(CommandConfig(name="A", command="echo a2", keep_in_memory=5))
    await (await orch.run_command("A")).wait(10)
    assert [r.output for r in orch.get_history("A")] == ["a2\n", "a\n"]
    orch.remove_command("B")
    assert orch.list_commands() == ["A"]
    assert (await orch.trigger("t")).started == []


async def test_get_status_through_a_runs_life() -> None:
    orch = orch_of(CommandConfig(name="S", command=LONG),
                   CommandConfig(name="Ok", command="true"),
                   CommandConfig(name="Bad", command="false"))
    status = orch.get_status("S")
    assert isinstance(status, CommandStatus)
    assert (status.state, status.active_count, status.last_run) == ("never_run", 0, None)

    handle = await orch.run_command("S")
    status = orch.get_status("S")
    assert (status.state, status.active_count) == ("running", 1)
    await orch.cancel_command("S")
    status = orch.get_status("S")
    assert (status.state, status.active_count) == ("cancelled", 0)
    assert status.last_run is handle.result

    await (await orch.run_command("Ok")).wait(10)
    assert orch.get_status("Ok").state == "success"
    await (await orch.run_command("Bad")).wait(10)
    assert orch.get_status("Bad").state == "failed"
    assert orch.get_status("Bad").last_run.exit_code == 1


async def test_history_most_recent_first_limit_and_keep_in_memory() -> None:
    orch = orch_of(CommandConfig(name="H", command="echo {{ n }}", keep_in_memory=3),
                   CommandConfig(name="None", command="true", keep_in_memory=0),
                   CommandConfig(name="All", command="true", keep_in_memory=-1))
    ids = []
    for n in range(5):
        result = await (await orch.run_command("H", vars={"n": str(n)})).wait(10)
        ids.append(result.run_id)
    history = orch.get_history("H")
    assert [r.output for r in history] == ["4\n", "3\n", "2\n"]
    assert [r.run_id for r in history] == ids[:1:-1]
    assert [r.output for r in orch.get_history("H", limit=2)] == ["4\n", "3\n"]
    assert all(r.is_finalized for r in history)
    # Evicted runs are forgotten by id; kept ones are found.
    assert orch.get_handle_by_run_id(ids[0]) is None
    assert orch.get_handle_by_run_id(ids[4]).result is history[0]

    handle = await orch.run_command("None")
    await handle.wait(10)
    assert orch.get_history("None") == []
    assert orch.get_status("None").state == "success"  # latest still known

    for _ in range(12):
        await (await orch.run_command("All")).wait(10)
    assert len(orch.get_history("All", limit=0)) == 12
    assert len(orch.get_history("All")) == 10  # default limit


async def test_active_handles_and_lookup_by_run_id() -> None:
    orch = orch_of(CommandConfig(name="L", command=LONG, max_concurrent=0),
                   CommandConfig(name="M", command=LONG))
    h1 = await orch.run_command("L")
    h2 = await orch.run_command("L")
    h3 = await orch.run_command("M")
    assert isinstance(h1, RunHandle)
    assert [h.run_id for h in orch.get_active_handles("L")] == [h1.run_id, h2.run_id]
    assert {h.run_id for h in orch.get_all_active_handles()} == {h1.run_id, h2.run_id,
                                                                 h3.run_id}
    found = orch.get_handle_by_run_id(h2.run_id)
    assert found is not None and found.run_id == h2.run_id and found.state is RunState.RUNNING
    assert orch.get_handle_by_run_id("run-does-not-exist") is None
    assert await orch.cancel_all(comment="bye") == 3
    assert orch.get_all_active_handles() == []
    for h in (h1, h2, h3):
        assert h.state is RunState.CANCELLED and h.comment == "bye"
    # Finished runs are still found by id.
    assert orch.get_handle_by_run_id(h1.run_id).state is RunState.CANCELLED


async def test_trigger_graph() -> None:
    orch = orch_of(
        CommandConfig(name="Lint", command="true", triggers=["changes_applied", "lint"]),
        CommandConfig(name="Tests", command="true", triggers=["command_success:Lint", "Tests"]),
        CommandConfig(name="All", command="true", triggers=["lint"]),
        CommandConfig(name="Idle", command="true"),
    )
    assert orch.get_trigger_graph() == {
        "changes_applied": ["Lint"],
        "lint": ["Lint", "All"],
        "command_success:Lint": ["Tests"],
        "Tests": ["Tests"],
    }


async def test_preview_does_not_run(tmp_path) -> None:
    orch = orch_of(
        CommandConfig(name="Deploy", command="deploy --env={{ env }} --dir={{ base_dir }}",
                      cwd="{{ base_dir }}", env={"DEPLOY_ENV": "{{ env }}"}, timeout_secs=300),
        vars={"env": "dev", "base_dir": str(tmp_path)})
    preview = orch.preview_command("Deploy", vars={"env": "staging"})
    assert preview.command == f"deploy --env=staging --dir={tmp_path}"
    assert preview.cwd == str(tmp_path)
    assert preview.env["DEPLOY_ENV"] == "staging"
    assert preview.env["PATH"] == os.environ["PATH"]
    assert preview.timeout_secs == 300
    assert preview.vars == {"env": "staging", "base_dir": str(tmp_path)}
    assert preview.argv == ["deploy", "--env=staging", f"--dir={tmp_path}"]
    assert orch.preview_command("Deploy").command.startswith("deploy --env=dev ")
    assert orch.get_status("Deploy").state == "never_run"


# ------------------------------------------------------------------------------------------
# Cancelling
# ------------------------------------------------------------------------------------------


async def test_cancel_command_and_cancel_run() -> None:
    orch = orch_of(CommandConfig(name="L", command=LONG, max_concurrent=0),
                   CommandConfig(name="Other", command=LONG))
    assert await orch.cancel_command("L") == 0
    h1 = await orch.run_command("L")
    h2 = await orch.run_command("L")
    other = await orch.run_command("Other")
    assert await orch.cancel_run(h1.run_id, comment="just one") is True
    assert h1.state is RunState.CANCELLED and h1.comment == "just one"
    assert h2.state is RunState.RUNNING
    assert await orch.cancel_run(h1.run_id) is False
    assert await orch.cancel_command("L", comment="User cancelled") == 1
    result = await h2.wait(1)
    assert result.state is RunState.CANCELLED
    assert result.comment == "User cancelled"
    assert result.success is False
    assert other.state is RunState.RUNNING
    await orch.cancel_all()
    assert other.state is RunState.CANCELLED


async def test_cancelled_run_keeps_output_and_emits_event() -> None:
    code = "import os, time; os.write(1, b'partial\\n'); time.sleep(30)"
    orch = orch_of(CommandConfig(name="P", command=py(code)))
    sub = orch.subscribe()
    got = asyncio.Event()
    orch.on_event("command_cancelled:P", lambda h, c: got.set())
    handle = await orch.run_command("P")
    async for event in sub:
        if getattr(event, "text", None) == "partial\n":
            break
    await orch.cancel_command("P")
    await asyncio.wait_for(got.wait(), 5)
    assert handle.output == "partial\n"
    assert handle.end_time is not None


# ------------------------------------------------------------------------------------------
# Callbacks
# ------------------------------------------------------------------------------------------


async def test_on_event_exact_wildcard_sync_and_async() -> None:
    orch = orch_of(CommandConfig(name="Lint", command="echo lint", triggers=["go"]),
                   CommandConfig(name="Tests", command="true", triggers=["command_success:Lint"]))
    calls: list[tuple[str, str | None, list[str]]] = []
    done = asyncio.Event()

    def exact(handle, context):
        calls.append(("exact", handle.command_name if handle else None, list(context.history)))

    def wild_lint(handle, context):
        calls.append(("wild_lint:" + context.history[-1], handle.state.value, []))

    async def everything(handle, context):
        await asyncio.sleep(0)
        calls.append(("all:" + context.history[-1], None, []))
        if context.history[-1] == "command_success:Tests":
            done.set()

    orch.on_event("command_success:Lint", exact)
    orch.on_event("command_*:Lint", wild_lint)
    orch.on_event("*", everything)
    with pytest.raises(ValueError):
        orch.on_event("", exact)

    await orch.trigger("go")
    await asyncio.wait_for(done.wait(), 10)
    assert ("exact", "Lint", ["go", "command_started:Lint", "command_success:Lint"]) in calls
    wild = [c for c in calls if c[0].startswith("wild_lint")]
    assert wild == [("wild_lint:command_started:Lint", "running", []),
                    ("wild_lint:command_success:Lint", "success", [])]
    everything_seen = [c[0] for c in calls if c[0].startswith("all:")]
    assert everything_seen == ["all:go", "all:command_started:Lint", "all:command_success:Lint",
                               "all:command_started:Tests", "all:command_success:Tests"]

    # Removing callbacks.
    assert orch.off_event("*", everything) is True
    assert orch.off_event("command_success:Lint", exact) is True
    assert orch.off_event("command_success:Lint", exact) is False
    calls.clear()
    await orch.trigger("unrelated")
    assert calls == []


async def test_failing_callback_does_not_stop_the_chain() -> None:
    orch = orch_of(CommandConfig(name="A", command="true", triggers=["go"]),
                   CommandConfig(name="B", command="true", triggers=["command_success:A"]))
    done = asyncio.Event()

    def boom(handle, context):
        raise RuntimeError("callback failure")

    orch.on_event("command_success:A", boom)
    orch.on_event("command_success:B", lambda h, c: done.set())
    await orch.trigger("go")
    await asyncio.wait_for(done.wait(), 10)
    assert orch.get_status("B").state == "success"


# ------------------------------------------------------------------------------------------
# Lifecycle
# ------------------------------------------------------------------------------------------


async def test_startup_and_shutdown_lifecycle(tmp_path) -> None:
    marker = tmp_path / "saved"
    orch = orch_of(
        CommandConfig(name="Init", command="echo init", triggers=["orchestrator_started"]),
        CommandConfig(name="Save", command=py(
            f"import time; time.sleep(0.2); open({str(marker)!r}, 'w').write('saved')"),
            triggers=["orchestrator_shutdown"]),
        CommandConfig(name="Long", command=LONG),
    )
    rec = Recorder()
    orch.add_listener(rec)
    seen_running: list[str] = []
    orch.on_event("orchestrator_shutdown",
                  lambda h, c: seen_running.append(orch.get_status("Long").state))

    await orch.startup()
    await orch.startup()  # idempotent
    assert rec.triggers().count("orchestrator_started") == 1
    init = orch.get_active_handles("Init") or [orch.get_handle_by_run_id(
        orch.get_history("Init")[0].run_id)]
    assert (await init[0].wait(10)).output == "init\n"
    assert init[0].trigger_chain == ["orchestrator_started"]

    long = await orch.run_command("Long")
    summary = await orch.shutdown(timeout=10)
    # Shutdown event fired while Long was still running; Save ran to completion first.
    assert seen_running == ["running"]
    assert marker.read_text() == "saved"
    assert orch.get_history("Save")[0].state is RunState.SUCCESS
    assert long.state is RunState.CANCELLED
    assert summary["cancelled_count"] == 1
    assert orch.is_shutdown
    lifecycle = [e for e in rec.of(TriggerEvent) if e.kind == "lifecycle"]
    assert [e.name for e in lifecycle] == ["orchestrator_started", "orchestrator_shutdown"]
    assert lifecycle[1].chain == ("orchestrator_shutdown",)  # fresh context

    with pytest.raises(OrchestratorShutdownError):
        await orch.run_command("Long")
    with pytest.raises(OrchestratorShutdownError):
        await orch.trigger("anything")
    again = await orch.shutdown()
    assert again["cancelled_count"] == 0


async def test_async_with_shuts_down_on_exception() -> None:
    orch = orch_of(CommandConfig(name="Long", command=LONG))
    handle = None
    with pytest.raises(RuntimeError, match="inside"):
        async with orch as entered:
            assert entered is orch
            handle = await orch.run_command("Long")
            raise RuntimeError("inside")
    assert orch.is_shutdown
    assert handle is not None and handle.state is RunState.CANCELLED


async def test_failing_lifecycle_command_does_not_break_orchestrator() -> None:
    orch = orch_of(CommandConfig(name="Boot", command="false", triggers=["orchestrator_started"]),
                   CommandConfig(name="Work", command="echo ok"))
    async with orch:
        work = await orch.run_command("Work")
        assert (await work.wait(10)).output == "ok\n"
        boot = orch.get_history("Boot") or [h.result for h in orch.get_active_handles("Boot")]
        assert (await RunHandle(boot[0]).wait(10)).state is RunState.FAILED


# ------------------------------------------------------------------------------------------
# Concurrency, retrigger, debounce, timeout
# ------------------------------------------------------------------------------------------


async def test_max_concurrent_with_ignore_raises() -> None:
    orch = orch_of(CommandConfig(name="L", command=LONG, max_concurrent=2, on_retrigger="ignore",
                                 triggers=["go"]))
    h1 = await orch.run_command("L")
    h2 = await orch.run_command("L")
    with pytest.raises(ConcurrencyLimitError) as info:
        await orch.run_command("L")
    assert (info.value.command_name, info.value.active_count, info.value.max_concurrent) == (
        "L", 2, 2)
    outcome = await orch.trigger("go")
    assert isinstance(outcome, TriggerResult)
    assert outcome.started == []
    assert [s[:2] for s in outcome.skipped] == [("L", "concurrency_limit")]
    assert h1.state is RunState.RUNNING and h2.state is RunState.RUNNING
    assert orch.get_status("L").active_count == 2


async def test_max_concurrent_zero_is_unlimited() -> None:
    orch = orch_of(CommandConfig(name="L", command=LONG, max_concurrent=0, on_retrigger="ignore"))
    handles = [await orch.run_command("L") for _ in range(4)]
    assert all(h.state is RunState.RUNNING for h in handles)
    assert orch.get_status("L").active_count == 4


async def test_cancel_and_restart() -> None:
    orch = orch_of(CommandConfig(name="L", command=LONG, triggers=["go"]))
    first = await orch.run_command("L")
    second = (await orch.trigger("go")).started[0]
    assert first.state is RunState.CANCELLED
    assert "retrigger" in first.comment
    assert second.state is RunState.RUNNING
    assert [h.run_id for h in orch.get_active_handles("L")] == [second.run_id]
    assert second.trigger_chain == ["go"]


async def test_debounce_start_mode() -> None:
    orch = orch_of(CommandConfig(name="D", command="true", debounce_in_ms=5000, triggers=["go"]),
                   CommandConfig(name="Slow", command="sleep 0.4", debounce_in_ms=300))
    await (await orch.run_command("D")).wait(10)
    with pytest.raises(DebounceError) as info:
        await orch.run_command("D")
    assert info.value.debounce_ms == 5000 and info.value.elapsed_ms < 5000
    outcome = await orch.trigger("go")
    assert [s[:2] for s in outcome.skipped] == [("D", "debounce")]
    # Start mode measures from the START: a 400 ms run outlives a 300 ms debounce.
    await (await orch.run_command("Slow")).wait(10)
    await (await orch.run_command("Slow")).wait(10)
    assert len(orch.get_history("Slow")) == 2


async def test_debounce_completion_mode() -> None:
    orch = orch_of(
        CommandConfig(name="C", command="sleep 0.4", debounce_in_ms=300,
                      debounce_mode="completion"),
        CommandConfig(name="Long", command=LONG, debounce_in_ms=5000,
                      debounce_mode="completion"))
    await (await orch.run_command("C")).wait(10)
    with pytest.raises(DebounceError):
        await orch.run_command("C")  # 400 ms since start, but ~0 since completion

    # No completion yet: a second start is not debounced (it restarts the first) ...
    first = await orch.run_command("Long")
    second = await orch.run_command("Long")
    assert first.state is RunState.CANCELLED
    # ... but now a run has completed (cancelled) just now.
    with pytest.raises(DebounceError):
        await orch.run_command("Long")
    assert second.state is RunState.RUNNING


async def test_timeout_marks_failed_and_emits_failed() -> None:
    orch = orch_of(CommandConfig(name="T", command=LONG, timeout_secs=1))
    failed = asyncio.Event()
    orch.on_event("command_failed:T", lambda h, c: failed.set())
    handle = await orch.run_command("T")
    result = await handle.wait(10)
    assert result.state is RunState.FAILED
    assert "timed out after 1 seconds" in str(result.error)
    await asyncio.wait_for(failed.wait(), 5)


async def test_runtime_vars_on_run_command_and_trigger() -> None:
    orch = orch_of(CommandConfig(name="V", command="echo {{ greeting }} {{ who }}",
                                 triggers=["hello"], vars={"who": "world"}),
                   vars={"greeting": "hi"})
    assert (await (await orch.run_command("V")).wait(10)).output == "hi world\n"
    result = await (await orch.run_command("V", vars={"who": "you"})).wait(10)
    assert result.output == "hi you\n"
    assert result.resolved_command.vars["who"] == "you"
    outcome = await orch.trigger("hello", vars={"greeting": "hey"})
    assert (await outcome.started[0].wait(10)).output == "hey world\n"


async def test_trigger_with_explicit_context() -> None:
    orch = orch_of(CommandConfig(name="A", command="true", triggers=["second"]))
    ctx = TriggerContext()
    await orch.trigger("first", ctx)
    outcome = await orch.trigger("second", ctx)
    assert outcome.started[0].trigger_chain == ["first", "second"]
