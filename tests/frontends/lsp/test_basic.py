"""Requests, notifications and errors of the sidecar protocol, end to end over stdio."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from conftest import RawClient, request, start, write_config
from lsprotocol import types as lsp
from pygls.exceptions import JsonRpcException

CONFIG = """
[variables]
greeting = "hello"
who = ""
saved_file_relative = ""

[on_save]
"src/**/*.py" = "changes_applied"

[[command]]
name = "Lint"
command = "echo lint"
triggers = ["changes_applied"]

[[command]]
name = "Tests"
command = "echo tests {{ saved_file_relative }}"
triggers = ["command_success:Lint"]

[[command]]
name = "Echo"
command = "echo {{ greeting }} {{ who }}"

[[command]]
name = "Fail"
command = "sh -c 'echo bad; exit 3'"
"""


@pytest.mark.timeout(30)
async def test_commands_status_preview_graph(root: Path) -> None:
    write_config(root, CONFIG)
    async with start(root) as client:
        res = await request(client, "sidecar/commands")
        names = [c["name"] for c in res["commands"]]
        assert names == ["Lint", "Tests", "Echo", "Fail"]
        assert res["onSave"] == {"src/**/*.py": ["changes_applied"]}
        assert res["commands"][0]["triggers"] == ["changes_applied"]
        assert res["commands"][0]["state"] == "never_run"

        prev = await request(client, "sidecar/preview",
                             {"command": "Echo", "vars": {"who": "a b"}})
        assert prev["resolved"] == "echo hello 'a b'"
        assert prev["vars"]["who"] == "a b"

        graph = await request(client, "sidecar/triggerGraph")
        assert graph["triggers"]["command_success:Lint"] == ["Tests"]
        assert graph["onSave"] == {"src/**/*.py": ["changes_applied"]}
        assert graph["commands"] == ["Lint", "Tests", "Echo", "Fail"]
        assert graph["edges"] == [{"source": "Lint", "target": "Tests",
                                   "event": "command_success:Lint"}]
        assert graph["external"] == ["changes_applied"]

        st = await request(client, "sidecar/status", {"command": "Echo"})
        assert st["commands"][0]["state"] == "never_run"
        st_all = await request(client, "sidecar/status")
        assert len(st_all["commands"]) == 4


@pytest.mark.timeout(30)
async def test_run_wait_history_and_read_output(root: Path) -> None:
    write_config(root, CONFIG)
    async with start(root) as client:
        rec = client.rec  # type: ignore[attr-defined]
        res = await request(client, "sidecar/run",
                            {"command": "Echo", "vars": {"who": "world"}, "wait": True})
        run = res["run"]
        assert run["state"] == "success" and run["exitCode"] == 0
        assert run["triggerChain"] == []
        assert res["timedOut"] is False
        assert run["outputSize"] == len(b"hello world\n")
        # with wait: true every notification of the run precedes the response
        states = [u["state"] for u in rec.updates(run["runId"])]
        assert states == ["pending", "running", "success"]
        text = "".join(c["text"] for c in rec.chunks(run["runId"]))
        assert text == "hello world\n"

        out = await request(client, "sidecar/readOutput", {"runId": run["runId"]})
        assert out == {"runId": run["runId"], "text": "hello world\n", "offset": 0, "size": 12,
                       "totalSize": 12, "final": True}
        part = await request(client, "sidecar/readOutput",
                             {"runId": run["runId"], "offset": 6, "length": 3})
        assert part["text"] == "wor" and part["size"] == 3

        fail = await request(client, "sidecar/run", {"command": "Fail", "wait": True})
        assert fail["run"]["state"] == "failed" and fail["run"]["exitCode"] == 3

        hist = await request(client, "sidecar/history", {"command": "Echo"})
        assert [r["runId"] for r in hist["runs"]] == [run["runId"]]

        waited = await request(client, "sidecar/wait", {"runId": run["runId"]})
        assert waited["run"]["state"] == "success"


@pytest.mark.timeout(30)
async def test_run_response_precedes_its_notifications(root: Path) -> None:
    """Wire order (read with a raw client): the sidecar/run and sidecar/trigger responses come
    before any notification about the runs they started."""
    write_config(root, CONFIG)
    async with await RawClient.spawn() as raw:
        await raw.initialize(root)
        for method, params in (("sidecar/run", {"command": "Echo", "vars": {"who": "x"}}),
                               ("sidecar/trigger", {"event": "changes_applied"})):
            i = raw.send(method, params)
            before: list[dict[str, Any]] = []
            resp = await raw.read_until(lambda m, i=i: m.get("id") == i, before.append)
            started = ([resp["result"]["run"]] if method == "sidecar/run"
                       else resp["result"]["started"])
            ids = {r["runId"] for r in started}
            assert ids
            assert not [m for m in before if (m.get("params") or {}).get("runId") in ids]
            seen: list[dict[str, Any]] = []
            await raw.read_until(lambda m, ids=ids: m.get("method") == "sidecar/runUpdate"
                                 and m["params"]["runId"] in ids
                                 and m["params"]["state"] == "success", seen.append)
            states = [m["params"]["state"] for m in seen if m.get("method") == "sidecar/runUpdate"
                      and m["params"]["runId"] in ids]
            assert states == ["pending", "running", "success"]
        i = raw.send("shutdown")
        await raw.read_until(lambda m: m.get("id") == i)
        raw.send("exit", notify=True)
        assert await asyncio.wait_for(raw.proc.wait(), 10) == 0


@pytest.mark.timeout(30)
async def test_save_triggers_chain_with_output(root: Path) -> None:
    write_config(root, CONFIG)
    (root / "src" / "pkg").mkdir(parents=True)
    f = root / "src" / "pkg" / "mod.py"
    f.write_text("x = 1\n")
    other = root / "README.md"
    other.write_text("hi\n")
    async with start(root) as client:
        rec = client.rec  # type: ignore[attr-defined]
        client.text_document_did_save(lsp.DidSaveTextDocumentParams(
            text_document=lsp.TextDocumentIdentifier(uri=other.as_uri())))
        client.text_document_did_save(lsp.DidSaveTextDocumentParams(
            text_document=lsp.TextDocumentIdentifier(uri=f.as_uri())))
        tests = await rec.final_of("Tests")
        assert tests["state"] == "success"
        assert tests["triggerChain"] == ["changes_applied", "command_started:Lint",
                                         "command_success:Lint"]
        lint = await rec.final_of("Lint")
        assert lint["triggerChain"] == ["changes_applied"]
        text = "".join(c["text"] for c in rec.chunks(tests["runId"]))
        assert text == "tests src/pkg/mod.py\n"
        # chunks of a run all arrive before its final runUpdate
        idx_final = rec.items.index(("sidecar/runUpdate", tests))
        idx_chunks = [i for i, (m, p) in enumerate(rec.items)
                      if m == "sidecar/outputChunk" and p["runId"] == tests["runId"]]
        assert idx_chunks and max(idx_chunks) < idx_final
        events = [e["name"] for e in rec.of("sidecar/event")]
        assert "changes_applied" in events and "command_success:Lint" in events
        ev = next(e for e in rec.of("sidecar/event") if e["name"] == "command_success:Lint")
        assert ev["kind"] == "auto"
        assert ev["chain"] == ["changes_applied", "command_started:Lint", "command_success:Lint"]
        assert ev["runId"] == lint["runId"]
        # README.md matched no glob: exactly one changes_applied event
        assert events.count("changes_applied") == 1

        # the same file reported again by the watcher (same mtime) does not fire twice
        client.workspace_did_change_watched_files(lsp.DidChangeWatchedFilesParams(changes=[
            lsp.FileEvent(uri=f.as_uri(), type=lsp.FileChangeType.Changed)]))
        st = await request(client, "sidecar/status", {"command": "Lint"})
        assert st["commands"][0]["lastRun"]["runId"] == lint["runId"]


@pytest.mark.timeout(30)
async def test_errors(root: Path) -> None:
    write_config(root, CONFIG + """
[[command]]
name = "Slow"
command = "sleep 5"
on_retrigger = "ignore"
debounce_in_ms = 0

[[command]]
name = "Deb"
command = "true"
debounce_in_ms = 60000

[[command]]
name = "NeedsTarget"
command = "echo deploy {{ target }}"
triggers = ["deploy"]
""")
    async with start(root) as client:
        async def err(method: str, params: object) -> JsonRpcException:
            with pytest.raises(JsonRpcException) as info:
                await request(client, method, params)
            return info.value

        e = await err("sidecar/run", {"command": "Nope"})
        assert e.code == -32010
        e = await err("sidecar/run", {"command": "Echo", "vars": {"who": 3}})
        assert e.code == -32602 and "vars.who" in e.message
        e = await err("sidecar/run", {"command": "Echo", "vars": ["x"]})
        assert e.code == -32602 and "vars" in e.message
        e = await err("sidecar/run", {})
        assert e.code == -32602 and "command" in e.message
        e = await err("sidecar/run", {"command": "Echo", "wait": "yes"})
        assert e.code == -32602 and "wait" in e.message
        e = await err("sidecar/readOutput", {"runId": "nope"})
        assert e.code == -32013
        e = await err("sidecar/readOutput", {"runId": "x", "offset": -1})
        assert e.code == -32602 and "offset" in e.message
        e = await err("sidecar/cancel", {})
        assert e.code == -32602
        e = await err("sidecar/wait", {"runId": "nope"})
        assert e.code == -32013
        e = await err("sidecar/frobnicate", {})
        assert e.code == -32601

        first = await request(client, "sidecar/run", {"command": "Slow"})
        e = await err("sidecar/run", {"command": "Slow"})
        assert e.code == -32011 and e.data["maxConcurrent"] == 1
        trig = await request(client, "sidecar/trigger", {"event": "nothing_listens"})
        assert trig == {"event": "nothing_listens", "started": [], "skipped": [], "cancelled": []}

        await request(client, "sidecar/run", {"command": "Deb", "wait": True})
        e = await err("sidecar/run", {"command": "Deb"})
        assert e.code == -32012

        # {{ target }} is declared nowhere (a warning, not an error): it must come at run time
        e = await err("sidecar/run", {"command": "NeedsTarget"})
        assert e.code == -32016 and "target" in e.message
        trig = await request(client, "sidecar/trigger", {"event": "deploy"})
        assert [(s["command"], s["reason"]) for s in trig["skipped"]] == [
            ("NeedsTarget", "variable_error")]
        ok = await request(client, "sidecar/run", {"command": "NeedsTarget", "wait": True,
                                                   "vars": {"target": "prod; rm -rf /"}})
        assert ok["run"]["resolvedCommand"] == "echo deploy 'prod; rm -rf /'"
        assert ok["run"]["state"] == "success"

        cancel = await request(client, "sidecar/cancel", {"runId": first["run"]["runId"]})
        assert cancel == {"cancelled": 1}
        # still alive and answering after all of that
        res = await request(client, "sidecar/commands")
        assert len(res["commands"]) == 7


@pytest.mark.timeout(30)
async def test_trigger_skips_with_reasons(root: Path) -> None:
    write_config(root, """
    [[command]]
    name = "A"
    command = "sleep 5"
    triggers = ["go"]
    on_retrigger = "ignore"

    [[command]]
    name = "B"
    command = "true"
    triggers = ["go"]
    debounce_in_ms = 60000
    """)
    async with start(root) as client:
        rec = client.rec  # type: ignore[attr-defined]
        r1 = await request(client, "sidecar/trigger", {"event": "go"})
        assert [s["command"] for s in r1["started"]] == ["A", "B"]
        assert r1["started"][0]["triggerChain"] == ["go"]
        assert r1["skipped"] == []
        r2 = await request(client, "sidecar/trigger", {"event": "go"})
        assert r2["started"] == []
        assert sorted((s["command"], s["reason"]) for s in r2["skipped"]) == [
            ("A", "concurrency_limit"), ("B", "debounce")]
        res = await request(client, "sidecar/cancel", {"all": True})
        assert res["cancelled"] == 1
        final = await rec.final(r1["started"][0]["runId"])
        assert final["state"] == "cancelled"


@pytest.mark.timeout(30)
async def test_cancel_by_name_and_cancel_trigger(root: Path) -> None:
    write_config(root, """
    [[command]]
    name = "Server"
    command = "sleep 30"
    cancel_on_triggers = ["stop"]
    max_concurrent = 0

    [[command]]
    name = "Other"
    command = "sleep 30"
    """)
    async with start(root) as client:
        rec = client.rec  # type: ignore[attr-defined]
        a = (await request(client, "sidecar/run", {"command": "Server"}))["run"]["runId"]
        b = (await request(client, "sidecar/run", {"command": "Server"}))["run"]["runId"]
        res = await request(client, "sidecar/cancel", {"command": "Server"})
        assert res["cancelled"] == 2
        assert (await rec.final(a))["state"] == "cancelled"
        assert (await rec.final(b))["state"] == "cancelled"

        c = (await request(client, "sidecar/run", {"command": "Server"}))["run"]["runId"]
        trig = await request(client, "sidecar/trigger", {"event": "stop"})
        assert trig["cancelled"] == ["Server"]
        final = await rec.final(c)
        assert final["state"] == "cancelled" and final["comment"] == "cancel_on_trigger:stop"

        d = await client.workspace_execute_command_async(lsp.ExecuteCommandParams(
            command="sidecar.run", arguments=["Other"]))
        d_id = d["run"]["runId"] if isinstance(d, dict) else d.run.runId
        await client.workspace_execute_command_async(lsp.ExecuteCommandParams(
            command="sidecar.cancel", arguments=[{"runId": d_id}]))
        assert (await rec.final(d_id))["state"] == "cancelled"


@pytest.mark.timeout(30)
async def test_execute_command_trigger_and_output_filter(root: Path) -> None:
    write_config(root, """
    [[command]]
    name = "Say"
    command = "echo said"
    triggers = ["say"]
    """)
    async with start(root) as client:
        rec = client.rec  # type: ignore[attr-defined]
        await request(client, "sidecar/setOutputFilter", {"enabled": False, "commands": ["Say"]})
        await client.workspace_execute_command_async(lsp.ExecuteCommandParams(
            command="sidecar.trigger", arguments=["say"]))
        final = await rec.final_of("Say")
        assert final["state"] == "success" and final["outputSize"] == 5
        assert rec.chunks(final["runId"]) == []
        out = await request(client, "sidecar/readOutput", {"runId": final["runId"]})
        assert out["text"] == "said\n"


@pytest.mark.timeout(30)
async def test_no_config_then_reload(root: Path) -> None:
    async with start(root) as client:
        e = None
        with pytest.raises(JsonRpcException) as info:
            await request(client, "sidecar/commands")
        e = info.value
        assert e.code == -32014
        assert any("config" in m.message for m in client.messages)
        write_config(root, """
        [[command]]
        name = "X"
        command = "true"
        """)
        res = await request(client, "sidecar/reload")
        assert res["ok"] is True and res["commands"] == ["X"]
        # a broken config keeps the last good one
        write_config(root, "[[command]]\nname = 3\n")
        res = await request(client, "sidecar/reload")
        assert res["ok"] is False and res["commands"] == ["X"]
        run = await request(client, "sidecar/run", {"command": "X", "wait": True})
        assert run["run"]["state"] == "success"


@pytest.mark.timeout(30)
async def test_config_save_reloads(root: Path) -> None:
    cfg = write_config(root, """
    [[command]]
    name = "X"
    command = "true"
    """)
    async with start(root, init_options={"configFiles": ["sidecar.toml"], "chunkIntervalMs": 0,
                                         "outputChunks": "some"}) as client:
        assert any("chunkIntervalMs" in m.message for m in client.messages)
        assert any("outputChunks" in m.message for m in client.messages)
        write_config(root, """
        [[command]]
        name = "Y"
        command = "true"
        """)
        client.text_document_did_save(lsp.DidSaveTextDocumentParams(
            text_document=lsp.TextDocumentIdentifier(uri=cfg.as_uri())))
        res = await request(client, "sidecar/commands")
        assert [c["name"] for c in res["commands"]] == ["Y"]
        assert not client.rec.of("sidecar/runUpdate")  # type: ignore[attr-defined]


@pytest.mark.timeout(30)
async def test_save_request_answers_what_each_path_did(root: Path) -> None:
    """``sidecar/save`` (what ``sidecar save`` and hooks send): a matching file fires its
    triggers, the result says what started; a file that matches nothing, the same save again
    and a config file (reloaded) are each accounted for."""
    write_config(root, CONFIG)
    (root / "src").mkdir()
    f = root / "src" / "a.py"
    f.write_text("x = 1\n")
    (root / "notes.txt").write_text("\n")
    async with start(root) as client:
        res = await request(client, "sidecar/save", {"paths": ["src/a.py", "notes.txt"]})
        (fired,) = res["triggered"]
        assert fired["event"] == "changes_applied"
        assert [r["command"] for r in fired["started"]] == ["Lint"]
        assert res["ignored"] == [{"path": "notes.txt", "reason": "no-match",
                                   "message": "no [on_save] glob matches"}]
        assert res["reloaded"] is None
        tests = await client.rec.final_of("Tests")  # type: ignore[attr-defined]
        assert tests["triggerChain"][0] == "changes_applied"
        assert tests["state"] == "success"

        again = await request(client, "sidecar/save", {"paths": [str(f)]})
        assert again["triggered"] == [] and again["ignored"][0]["reason"] == "duplicate"
        reload = await request(client, "sidecar/save", {"paths": ["sidecar.toml"]})
        assert reload["reloaded"]["ok"] is True and reload["triggered"] == []
        with pytest.raises(JsonRpcException) as info:
            await request(client, "sidecar/save", {"paths": "src/a.py"})
        assert info.value.code == -32602 and "paths" in info.value.message
