"""The agent rules (:mod:`sidecar.app.agents`) as the service layer applies them to an agent
session, and what every session sees of ``description``, ``agent`` and ``variables``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from apphost import started_host

from sidecar.app import agents
from sidecar.app import protocol as P
from sidecar.app.service import Service
from sidecar.host.host import Host

pytestmark = pytest.mark.timeout(30)

CONFIG = """
[variables]
target = "src"
flags = "-q {{ level }}"
level = ""

[[command]]
name = "Lint"
description = "Lint the sources."
command = "echo lint {{ target }} {{ flags }}"
triggers = ["check"]

[[command]]
name = "Deploy"
description = "Ship it."
command = "echo deploy"
triggers = ["check", "command_success:Lint"]
agent = false

[[command]]
name = "Serve"
command = "sleep 30"
cancel_on_triggers = ["stop"]
agent = false

[[command]]
name = "After"
command = "echo after {{ note }}"
vars = { note = "n" }
triggers = ["command_success:Deploy"]
"""


@pytest.fixture
async def host(tmp_path: Path) -> Any:
    host = await started_host(tmp_path, CONFIG)
    yield host
    await host.close()


async def call(service: Service, method: str, params: Any = None) -> Any:
    cls, op = service.operations()[method]
    return P.to_wire(await op(P.parse_params(cls, params)))


async def error(service: Service, method: str, params: Any = None) -> P.SidecarRpcError:
    with pytest.raises(P.SidecarRpcError) as info:
        await call(service, method, params)
    return info.value


async def state(service: Service, run_id: str) -> str:
    """A run's state now (``sidecar/wait`` without waiting)."""
    waited = await call(service, P.M_WAIT, {"runId": run_id, "timeoutMs": 0})
    return str(waited["run"]["state"])


async def test_commands_show_description_agent_and_variables_to_everyone(host: Host) -> None:
    editor = Service(host, "Neovim")
    listed = {c["name"]: c for c in (await call(editor, P.M_COMMANDS))["commands"]}
    assert list(listed) == ["Lint", "Deploy", "Serve", "After"]
    lint = listed["Lint"]
    assert (lint["description"], lint["agent"]) == ("Lint the sources.", True)
    # In order of use, through config variables; `level` has no value: it must be given.
    assert lint["variables"] == [{"name": "target", "default": "src"},
                                 {"name": "flags", "default": "-q "},
                                 {"name": "level", "default": ""}]
    assert listed["Deploy"]["agent"] is False and listed["Deploy"]["variables"] == []
    assert listed["After"]["variables"] == [{"name": "note", "default": "n"}]


async def test_hidden_commands_do_not_exist_for_an_agent(host: Host) -> None:
    agent = Service(host, "mcp", agent=True)
    editor = Service(host, "Neovim")
    names = [c["name"] for c in (await call(agent, P.M_COMMANDS))["commands"]]
    assert names == ["Lint", "After"]
    assert [c["name"] for c in (await call(agent, P.M_STATUS))["commands"]] == names
    for method, params in ((P.M_RUN, {"command": "Deploy"}),
                           (P.M_PREVIEW, {"command": "Deploy"}),
                           (P.M_HISTORY, {"command": "Deploy"}),
                           (P.M_STATUS, {"command": "Deploy"}),
                           (P.M_CANCEL, {"command": "Deploy"})):
        exc = await error(agent, method, params)
        assert exc.code == P.E_COMMAND_NOT_FOUND, method
        assert "Deploy" not in exc.message.split("commands:")[-1]
    # A run of a hidden command, started by someone else, is unknown to the agent.
    run = (await call(editor, P.M_RUN, {"command": "Deploy", "wait": True}))["run"]
    for method, params in ((P.M_WAIT, {"runId": run["runId"]}),
                           (P.M_READ_OUTPUT, {"runId": run["runId"]}),
                           (P.M_CANCEL, {"runId": run["runId"]}),
                           (P.M_RERUN, {"runId": run["runId"]})):
        assert (await error(agent, method, params)).code == P.E_RUN_NOT_FOUND, method
    assert (await call(editor, P.M_WAIT, {"runId": run["runId"]}))["run"]["state"] == "success"


async def test_an_agents_trigger_skips_hidden_commands_but_chains_still_run(
        host: Host) -> None:
    agent = Service(host, "mcp", agent=True)
    res = await call(agent, P.M_TRIGGER, {"event": "check"})
    assert [r["command"] for r in res["started"]] == ["Lint"]
    assert [(s["command"], s["reason"]) for s in res["skipped"]] == [("Deploy", agents.HIDDEN)]
    assert host.orchestrator is not None
    lint = host.orchestrator.get_handle_by_run_id(res["started"][0]["runId"])
    assert lint is not None
    await lint.wait(10)
    # The config declares Deploy after Lint's success: that chain runs, started by the agent.
    chain = await host.orchestrator.wait_chain([lint.run_id], 10)
    assert [(r.command_name, r.state.value, r.started_by) for r in chain] == [
        ("Lint", "success", "mcp"), ("Deploy", "success", "mcp"), ("After", "success", "mcp")]
    editor = Service(host, "Neovim")
    editor_res = await call(editor, P.M_TRIGGER, {"event": "check"})
    assert sorted(r["command"] for r in editor_res["started"]) == ["Deploy", "Lint"]
    # cancel_on_triggers of a hidden command is not the agent's either; an editor's is.
    serve = (await call(editor, P.M_RUN, {"command": "Serve"}))["run"]
    res = await call(agent, P.M_TRIGGER, {"event": "stop"})
    assert res["cancelled"] == []
    assert await state(editor, serve["runId"]) in ("pending", "running")
    assert (await call(editor, P.M_TRIGGER, {"event": "stop"}))["cancelled"] == ["Serve"]


@pytest.mark.parametrize("event", ["command_success:Lint", "command_started:X",
                                   "flow_success:release", "orchestrator_started",
                                   "orchestrator_shutdown", "orchestrator_whatever"])
async def test_agents_cannot_fire_the_orchestrators_own_events(host: Host, event: str) -> None:
    exc = await error(Service(host, "mcp", agent=True), P.M_TRIGGER, {"event": event})
    assert exc.code == P.E_INVALID_PARAMS and exc.data == {"field": "event"}
    assert host.orchestrator is not None
    assert all(not host.orchestrator.get_active_handles(n)
               for n in host.orchestrator.list_commands())


async def test_variables_must_be_used_and_short(host: Host) -> None:
    agent = Service(host, "mcp", agent=True)
    exc = await error(agent, P.M_RUN, {"command": "Lint", "vars": {"PATH": "/tmp"}})
    assert exc.code == P.E_INVALID_PARAMS and exc.data == {"field": "vars.PATH"}
    assert "uses flags, level, target" in exc.message
    long = "x" * (agents.MAX_VALUE_CHARS + 1)
    exc = await error(agent, P.M_RUN, {"command": "Lint", "vars": {"level": long}})
    assert exc.data == {"field": "vars.level"} and str(agents.MAX_VALUE_CHARS) in exc.message
    exc = await error(agent, P.M_PREVIEW, {"command": "Lint", "vars": {"nope": "1"}})
    assert exc.data == {"field": "vars.nope"}
    # A trigger's variables are those of the commands it starts for the agent.
    exc = await error(agent, P.M_TRIGGER, {"event": "check", "vars": {"note": "x"}})
    assert exc.data == {"field": "vars.note"}
    many = {f"v{i}": "1" for i in range(agents.MAX_VARS + 1)}
    assert (await error(agent, P.M_RUN, {"command": "Lint", "vars": many})).data == {
        "field": "vars"}
    assert host.orchestrator is not None and not host.orchestrator.get_history("Lint", 0)
    # Within the rules, a value is data: shown quoted, never run.
    ok = await call(agent, P.M_RUN, {"command": "Lint", "vars": {"level": "$(id)"},
                                     "wait": True})
    assert ok["run"]["state"] == "success"
    out = await call(agent, P.M_READ_OUTPUT, {"runId": ok["run"]["runId"]})
    assert out["text"] == "lint src -q $(id)\n"
    # The same requests are fine for an editor's session.
    assert (await call(Service(host, "Neovim"), P.M_PREVIEW,
                       {"command": "Lint", "vars": {"nope": "1"}}))["command"] == "Lint"


async def test_agents_cannot_change_the_workspace(host: Host) -> None:
    agent = Service(host, "mcp", agent=True)
    params = {P.M_SAVE: {"paths": ["x.py"]}, P.M_CLEAN: {"all": True},
              P.M_UNLOCK: {"command": "Lint", "runKey": "k"}}
    for method in agents.REFUSED_METHODS:
        exc = await error(agent, method, params.get(method))
        assert exc.code == P.E_METHOD_NOT_FOUND and "agent" in exc.message, method
    # cancel {all: true} reaches the agent's commands only.
    editor = Service(host, "Neovim")
    serve = (await call(editor, P.M_RUN, {"command": "Serve"}))["run"]
    assert (await call(agent, P.M_CANCEL, {"all": True}))["cancelled"] == 0
    assert await state(editor, serve["runId"]) in ("pending", "running")
    assert (await call(editor, P.M_CANCEL, {"all": True}))["cancelled"] == 1
