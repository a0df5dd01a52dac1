"""``sidecar mcp`` end to end: the MCP SDK's own client (``ClientSession`` over stdio, as an
agent host starts it) against the real server, attached to the workspace's real host, with
an editor's session (``sidecar serve``) beside it where it matters."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

from sidecar.app.agents import MAX_VALUE_CHARS
from sidecar.frontends.mcp.tools import READ_MAX, TOOL_NAMES

sys.path.insert(0, str(Path(__file__).parents[2] / "host"))
from hostclient import HostClient, make_gate, release

pytestmark = pytest.mark.timeout(60)

CONFIG = """
[variables]
target = "world"

[[command]]
name = "Hello"
description = "Say hello to someone."
command = "echo hello {{ target }}"
triggers = ["greet"]

[[command]]
name = "Gate"
description = "Prints a line, then waits for the test to open the gate."
command = "echo waiting at the gate; cat gate"

[[command]]
name = "Big"
command = "yes 0123456789abcde | head -n 65536"

[[command]]
name = "Secret"
command = "echo secret"
triggers = ["greet"]
agent = false
"""
MCP = [sys.executable, "-m", "sidecar", "mcp"]


@asynccontextmanager
async def session(root: Path, argv: list[str] | None = None,
                  cwd: Path | None = None) -> AsyncIterator[ClientSession]:
    command, *args = argv or MCP
    params = StdioServerParameters(command=command, args=args, cwd=cwd or root,
                                   env=dict(os.environ))
    async with stdio_client(params) as (read, write), ClientSession(read, write) as s:
        await s.initialize()
        yield s


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "sidecar.toml").write_text(CONFIG)
    make_gate(tmp_path)
    return tmp_path


async def call(s: ClientSession, tool: str, args: dict[str, Any] | None = None,
               **kw: Any) -> dict[str, Any]:
    """A tool's structured result (it must succeed, and say the same in its text)."""
    res = await s.call_tool(tool, args or {}, **kw)
    assert not res.is_error, res.content
    assert res.content and res.content[0].type == "text" and res.content[0].text
    assert isinstance(res.structured_content, dict)
    return res.structured_content


async def refusal(s: ClientSession, tool: str, args: dict[str, Any]) -> str:
    """The text of a tool error (an ``isError`` result, not a protocol error)."""
    res = await s.call_tool(tool, args)
    assert res.is_error, res
    text = res.content[0].text  # type: ignore[union-attr]
    assert isinstance(text, str)
    return text


async def test_tools_have_schemas_and_a_command_runs(root: Path) -> None:
    async with session(root) as s:
        tools = {t.name: t for t in (await s.list_tools()).tools}
        assert sorted(tools) == sorted(TOOL_NAMES)
        for t in tools.values():
            assert t.description and t.input_schema["type"] == "object", t.name
            assert t.output_schema and t.output_schema["type"] == "object", t.name
        run_schema = tools["run_command"].input_schema
        assert run_schema["required"] == ["command"]
        vars_schema = next(s for s in run_schema["properties"]["vars"]["anyOf"]
                           if s.get("type") == "object")
        (value_schema,) = vars_schema["patternProperties"].values()
        assert value_schema["maxLength"] == MAX_VALUE_CHARS
        assert run_schema["properties"]["wait_secs"]["maximum"] == 600
        assert tools["list_commands"].annotations.read_only_hint is True  # type: ignore[union-attr]

        listed = await call(s, "list_commands")
        by_name = {c["name"]: c for c in listed["commands"]}
        assert list(by_name) == ["Hello", "Gate", "Big"]  # Secret is hidden
        assert by_name["Hello"]["description"] == "Say hello to someone."
        assert by_name["Hello"]["variables"] == [{"name": "target", "default": "world"}]
        assert by_name["Hello"]["triggers"] == ["greet"]

        done = await call(s, "run_command", {"command": "Hello", "vars": {"target": "MCP"}})
        run = done["run"]
        assert (run["state"], run["exit_code"], done["finished"]) == ("success", 0, True)
        assert run["started_by"] == "mcp" and run["trigger_chain"] == []
        assert run["duration_secs"] is not None
        assert done["output_tail"] == "hello MCP\n"
        listed = await call(s, "list_commands")
        assert listed["commands"][0]["last_run"]["run_id"] == run["run_id"]
        history = await call(s, "history", {"command": "Hello"})
        assert [r["run_id"] for r in history["runs"]] == [run["run_id"]]
        preview = await call(s, "preview", {"command": "Hello", "vars": {"target": "a b"}})
        assert preview["resolved"] == "echo hello 'a b'"


async def test_a_slow_run_returns_a_handle_then_get_run_waits(root: Path) -> None:
    async with session(root) as s:
        first = await call(s, "run_command", {"command": "Gate", "wait_secs": 0.2})
        run = first["run"]
        assert (run["state"], first["finished"]) == ("running", False)
        following = await call(s, "get_run", {"run_id": run["run_id"]})
        assert following["run"]["state"] == "running"
        await release(root, "through\n")
        final = await call(s, "get_run", {"run_id": run["run_id"], "wait_secs": 30})
        assert (final["run"]["state"], final["finished"]) == ("success", True)
        assert final["output_tail"] == "waiting at the gate\nthrough\n"


async def test_read_output_pages_a_mebibyte(root: Path) -> None:
    expected = b"0123456789abcde\n" * 65536
    async with session(root) as s:
        run = (await call(s, "run_command", {"command": "Big"}))["run"]
        assert run["output_size"] == len(expected) == 1 << 20
        pages, offset = [], 0
        while True:
            page = await call(s, "read_output", {"run_id": run["run_id"], "offset": offset})
            assert page["offset"] == offset and page["final"] is True
            assert 0 < page["size"] <= READ_MAX and page["total_size"] == len(expected)
            pages.append(page["text"])
            offset = page["next_offset"]
            if offset >= page["total_size"]:
                break
        assert "".join(pages).encode() == expected and len(pages) == 16
        tail = await call(s, "read_output", {"run_id": run["run_id"], "tail_lines": 3})
        assert tail["text"] == "0123456789abcde\n" * 3
        assert tail["offset"] == len(expected) - 48 and tail["size"] == 48
        assert (await refusal(s, "read_output", {"run_id": run["run_id"],
                                                 "length": READ_MAX + 1})).count("65536")


async def test_cancel_a_run_and_cancel_a_tool_call(root: Path) -> None:
    editor = await HostClient.serve(root, "Neovim")
    try:
        async with session(root) as s:
            run = (await call(s, "run_command", {"command": "Gate", "wait_secs": 0}))["run"]
            assert (await call(s, "cancel", {"run_id": run["run_id"]}))["cancelled"] == 1
            final = await editor.final(run["run_id"])
            assert final["state"] == "cancelled" and final["startedBy"] == "mcp"
            assert "exactly one" in await refusal(s, "cancel", {})

            # The agent host gives up on a run_command call: the run it started stops.
            async with anyio.create_task_group() as tg:
                tg.start_soon(s.call_tool, "run_command", {"command": "Gate",
                                                           "wait_secs": 60})
                running = await editor.wait_for(lambda: next(
                    (u for u in editor.updates(command="Gate")
                     if u["state"] == "running" and u["runId"] != run["run_id"]), None))
                tg.cancel_scope.cancel()
            final = await editor.final(running["runId"])
            assert (final["state"], final["comment"]) == ("cancelled", "cancelled by the agent")

            # Giving up on get_run only stops the wait.
            run = (await call(s, "run_command", {"command": "Gate", "wait_secs": 0}))["run"]
            with anyio.move_on_after(0.3):
                await s.call_tool("get_run", {"run_id": run["run_id"], "wait_secs": 60})
            again = await call(s, "get_run", {"run_id": run["run_id"]})
            assert again["run"]["state"] == "running"
            await release(root)
            assert (await editor.final(run["run_id"]))["state"] == "success"
    finally:
        await editor.close()


async def test_progress_notifications_while_a_tool_waits(root: Path) -> None:
    seen: list[tuple[float, str | None]] = []
    got_line = anyio.Event()

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, message))
        if message and "waiting at the gate" in message:
            got_line.set()

    async with session(root) as s, anyio.create_task_group() as tg:
        async def opener() -> None:
            with anyio.fail_after(30):
                await got_line.wait()
            await release(root)

        tg.start_soon(opener)
        done = await call(s, "run_command", {"command": "Gate", "wait_secs": 60},
                          progress_callback=on_progress)
    assert done["run"]["state"] == "success"
    assert any(m and m.startswith("Gate running for") for _, m in seen), seen
    progress = [p for p, _ in seen]
    assert progress == sorted(progress)


async def test_refusals_are_tool_errors_and_nothing_runs(root: Path) -> None:
    async with session(root) as s:
        assert "unknown command 'rm -rf /'" in await refusal(
            s, "run_command", {"command": "rm -rf /"})
        assert "unknown command 'Secret'" in await refusal(s, "run_command",
                                                           {"command": "Secret"})
        assert "unknown variable 'PATH'" in await refusal(
            s, "run_command", {"command": "Hello", "vars": {"PATH": "/tmp"}})
        too_long = await refusal(s, "run_command", {
            "command": "Hello", "vars": {"target": "x" * (MAX_VALUE_CHARS + 1)}})
        assert str(MAX_VALUE_CHARS) in too_long
        assert "orchestrator fires" in await refusal(s, "trigger",
                                                     {"event": "command_success:Hello"})
        assert "unknown command 'Secret'" in await refusal(s, "history",
                                                           {"command": "Secret"})
        outputs = []
        for value in ("; touch PWNED", "$(touch PWNED)", "`touch PWNED`", "' ; touch PWNED '"):
            done = await call(s, "run_command", {"command": "Hello",
                                                 "vars": {"target": value}})
            outputs.append(done["output_tail"])
        assert outputs == ["hello ; touch PWNED\n", "hello $(touch PWNED)\n",
                           "hello `touch PWNED`\n", "hello ' ; touch PWNED '\n"]
        # A trigger starts what the agent may run and says what it skipped.
        fired = await call(s, "trigger", {"event": "greet"})
        assert [r["command"] for r in fired["started"]] == ["Hello"]
        assert [(x["command"], x["reason"]) for x in fired["skipped"]] == [
            ("Secret", "agent_hidden")]
    assert not (root / "PWNED").exists()
    assert not list(root.glob("*PWNED*"))


async def test_an_editor_sees_agent_runs_and_run_keys_are_idempotent(root: Path) -> None:
    editor = await HostClient.serve(root, "Neovim")
    try:
        async with session(root) as s:
            first = await call(s, "run_command", {"command": "Hello", "run_key": "k1",
                                                  "wait_secs": 0})
            final = await editor.final(first["run"]["run_id"])
            assert (final["startedBy"], final["state"]) == ("mcp", "success")
            assert final["runKey"] == "k1"
            info = await editor.request("sidecar/hostInfo")
            assert sorted(x["clientName"] for x in info["sessions"]) == ["Neovim", "mcp"]
            # A retry with the same key returns the same run, running or finished: the
            # command never runs twice for one key.
            retry = await call(s, "run_command", {"command": "Gate", "run_key": "g",
                                                  "wait_secs": 0})
            again = await call(s, "run_command", {"command": "Gate", "run_key": "g",
                                                  "wait_secs": 0})
            assert (again["existing"], again["run"]["run_id"]) == (True, retry["run"]["run_id"])
            await release(root)
            assert (await editor.final(retry["run"]["run_id"]))["state"] == "success"
            later = await call(s, "run_command", {"command": "Gate", "run_key": "g"})
            assert (later["existing"], later["run"]["run_id"]) == (True, retry["run"]["run_id"])
            assert later["run"]["state"] == "success"
            retried = await s.call_tool("run_command", {"command": "Gate", "run_key": "g"})
            assert "existing run" in retried.content[0].text  # type: ignore[union-attr]
            assert len([u for u in editor.updates(command="Gate")
                        if u["state"] == "pending"]) == 1
            done = await call(s, "run_command", {"command": "Hello",
                                                 "vars": {"target": "records"}})
            # What the person runs is visible to the agent.
            mine = await editor.request("sidecar/run", {"command": "Hello", "wait": True})
            got = await call(s, "get_run", {"run_id": mine["run"]["runId"]})
            assert got["run"]["started_by"] == "Neovim"
    finally:
        await editor.close()
    # Every agent run is in the durable records, with its variables (read once the host,
    # stopped, has written everything).
    stopped = subprocess.run([*MCP[:-1], "host", "stop"], cwd=root, timeout=30)
    assert stopped.returncode == 0
    with sqlite3.connect(root / ".sidecar" / "runs.db") as db:
        row = db.execute("SELECT started_by, runtime_vars FROM runs WHERE run_id = ?",
                         (done["run"]["run_id"],)).fetchone()
    assert row is not None and row[0] == "mcp"
    assert json.loads(row[1]) == {"target": "records"}


@pytest.mark.parametrize("client", ["claude", "cursor", "vscode"])
async def test_the_printed_configuration_starts_a_working_server(root: Path,
                                                                 client: str) -> None:
    printed = subprocess.run([*MCP, "--print-config", client], cwd=root, check=True,
                             capture_output=True, text=True)
    config = json.loads(printed.stdout)
    servers = config["servers" if client == "vscode" else "mcpServers"]
    server = servers["cmdsidecar"]
    assert os.path.isabs(server["command"]) and str(root) in server["args"]
    # An agent host starts it from anywhere: the workspace is in the arguments.
    async with session(root, [server["command"], *server["args"]], cwd=Path("/")) as s:
        done = await call(s, "run_command", {"command": "Hello"})
        assert done["output_tail"] == "hello world\n"


async def test_the_server_outlives_its_host(root: Path) -> None:
    async with session(root) as s:
        first = await call(s, "run_command", {"command": "Hello"})
        stopped = subprocess.run([*MCP[:-1], "host", "stop"], cwd=root,
                                 capture_output=True, text=True, timeout=30)
        assert stopped.returncode == 0, stopped.stderr
        # The call that finds the host gone fails clearly, or already reaches a new host;
        # the next one does, and the history is the workspace's, as before.
        res = await s.call_tool("run_command", {"command": "Hello"})
        if res.is_error:
            assert "host" in res.content[0].text  # type: ignore[union-attr]
            res = await s.call_tool("run_command", {"command": "Hello"})
        assert not res.is_error and res.structured_content is not None
        assert res.structured_content["run"]["state"] == "success"
        history = await call(s, "history", {"command": "Hello"})
        assert first["run"]["run_id"] in [r["run_id"] for r in history["runs"]]


async def test_no_config_is_a_clear_error(tmp_path: Path) -> None:
    proc = subprocess.run(MCP, cwd=tmp_path, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=30)
    assert proc.returncode == 3 and "no config found" in proc.stderr
    assert proc.stdout == ""
