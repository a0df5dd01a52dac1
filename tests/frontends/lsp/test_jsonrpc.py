"""JSON-RPC 2.0 conformance of the server (protocol.md §9): ids, envelopes, params, errors, logs.

Everything goes through :class:`conftest.RawClient`, which writes exactly the bytes under test.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import RawClient, write_config

CONFIG = """
[variables]
who = ""
saved_file_relative = ""

[on_save]
"**/*.py" = "saved"

[[command]]
name = "Echo"
command = "echo hi {{ who }}"

[[command]]
name = "Saved"
command = "echo saved {{ saved_file_relative }}"
triggers = ["saved"]
"""

HOVER = {"textDocument": {"uri": "file:///nowhere/sidecar.toml"},
         "position": {"line": 0, "character": 0}}


def request(msg_id: Any, method: Any, params: Any = None, **extra: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params, **extra}


@pytest.mark.timeout(30)
async def test_float_ids_are_echoed(root: Path) -> None:
    write_config(root, CONFIG)
    async with await RawClient.spawn() as raw:
        await raw.initialize(root)
        cases: list[tuple[float, dict[str, Any]]] = [
            (3.5, request(3.5, "sidecar/status")),
            (4.0, request(4.0, "sidecar/status")),
            (5.5, request(5.5, "no/such/method", {})),
            (6.0, request(6.0, "workspace/executeCommand",
                          {"command": "sidecar.cancel", "arguments": [{"all": True}]})),
            (7.25, request(7.25, "textDocument/hover", {"nonsense": True})),
            (8.5, request(8.5, "sidecar/run", {"command": "Nope"})),
        ]
        replies = {}
        for msg_id, msg in cases:
            raw.send_raw(msg)
            replies[msg_id] = await raw.response(msg_id)
        assert replies[3.5]["result"]["commands"][0]["name"] == "Echo"
        assert replies[4.0]["result"]["commands"][0]["name"] == "Echo"
        assert replies[5.5]["error"]["code"] == -32601
        assert replies[6.0]["result"] == {"cancelled": 0}
        assert replies[7.25]["error"]["code"] == -32602
        assert replies[8.5]["error"]["code"] == -32010


@pytest.mark.timeout(30)
async def test_wrong_jsonrpc_version_is_answered_with_the_id(root: Path) -> None:
    write_config(root, CONFIG)
    async with await RawClient.spawn() as raw:
        await raw.initialize(root)
        for n, version in enumerate(["1.0", 2, None, "2"], start=10):
            raw.send_raw({"jsonrpc": version, "id": n, "method": "sidecar/status"})
            reply = await raw.response(n)
            assert reply["error"]["code"] == -32600, version
            assert reply["jsonrpc"] == "2.0"
        raw.send_raw({"id": 20, "method": "sidecar/status"})  # no jsonrpc member at all
        assert (await raw.response(20))["error"]["code"] == -32600


@pytest.mark.timeout(30)
async def test_null_id_is_an_invalid_request_and_runs_nothing(root: Path) -> None:
    write_config(root, CONFIG)
    async with await RawClient.spawn() as raw:
        await raw.initialize(root)
        seen: list[dict[str, Any]] = []
        raw.send_raw(request(None, "sidecar/run", {"command": "Echo"}))
        reply = await raw.response(None, seen=seen)
        assert "id" in reply and reply["id"] is None
        assert reply["error"]["code"] == -32600
        i = raw.send("sidecar/status", {"command": "Echo"})
        status = await raw.response(i, seen=seen)
        assert status["result"]["commands"][0]["state"] == "never_run"
        assert not [m for m in seen if m.get("method") == "sidecar/runUpdate"]


@pytest.mark.timeout(30)
async def test_malformed_envelopes_get_invalid_request(root: Path) -> None:
    write_config(root, CONFIG)
    async with await RawClient.spawn() as raw:
        await raw.initialize(root)

        async def rejected(message: Any, reply_id: Any) -> dict[str, Any]:
            raw.send_raw(message)
            reply = await raw.response(reply_id)
            assert reply["error"]["code"] == -32600, (message, reply)
            return reply

        # neither id nor method
        await rejected({"jsonrpc": "2.0"}, None)
        await rejected({"jsonrpc": "2.0", "params": {}}, None)
        # an id without a method (and not a response)
        await rejected({"jsonrpc": "2.0", "id": 30}, 30)
        # a method that is not a string: the request's id, and no Python in the message
        for n, method in enumerate([5, None, ["sidecar/status"], {"m": 1}], start=31):
            reply = await rejected(request(n, method), n)
            assert "JsonRPC" not in reply["error"]["message"]
            assert "__init__" not in reply["error"]["message"]
        # object, array and boolean ids, on an LSP method with bad params too
        for bad_id in ({"a": 1}, [1], True, False):
            await rejected(request(bad_id, "textDocument/hover", {"nonsense": True}), None)
            await rejected(request(bad_id, "sidecar/status"), None)
        # not an object at all
        await rejected([request(40, "sidecar/status")], None)
        await rejected("sidecar/status", None)
        # requests without params are requests (not "invalid params")
        raw.send_raw({"jsonrpc": "2.0", "id": 41, "method": "no/such/method"})
        assert (await raw.response(41))["error"]["code"] == -32601
        raw.send_raw({"jsonrpc": "2.0", "id": 42, "method": "sidecar/status"})
        assert "result" in await raw.response(42)
        # the server is still fine
        i = raw.send("sidecar/run", {"command": "Echo", "wait": True})
        assert (await raw.response(i))["result"]["run"]["state"] == "success"


@pytest.mark.timeout(30)
async def test_empty_params_array_means_no_params(root: Path) -> None:
    write_config(root, CONFIG)
    async with await RawClient.spawn() as raw:
        await raw.initialize(root)
        for method in ("sidecar/status", "sidecar/commands", "sidecar/triggerGraph",
                       "sidecar/reload"):
            i = raw.send(method, [])
            reply = await raw.response(i)
            assert "result" in reply, (method, reply)
        i = raw.send("sidecar/status", [])
        assert len((await raw.response(i))["result"]["commands"]) == 2
        # required fields are still required; a non-empty array is still not an object
        i = raw.send("sidecar/history", [])
        reply = await raw.response(i)
        assert reply["error"]["code"] == -32602 and reply["error"]["data"]["field"] == "command"
        i = raw.send("sidecar/run", ["Echo"])
        reply = await raw.response(i)
        assert reply["error"]["code"] == -32602 and reply["error"]["data"]["field"] == "params"
        i = raw.send("shutdown", [])
        assert (await raw.response(i))["result"] is None


@pytest.mark.timeout(30)
async def test_second_initialize_is_refused_and_changes_nothing(root: Path) -> None:
    write_config(root, CONFIG)
    async with await RawClient.spawn() as raw:
        await raw.initialize(root, {"outputChunks": "none"})
        i = raw.send("initialize", {"processId": None, "rootUri": root.as_uri(),
                                    "capabilities": {},
                                    "initializationOptions": {"outputChunks": "all"}})
        reply = await raw.response(i)
        assert reply["error"]["code"] == -32600
        assert "already initialized" in reply["error"]["message"]
        # still no chunks: they would come before the final runUpdate, so before this answer
        seen: list[dict[str, Any]] = []
        i = raw.send("sidecar/run", {"command": "Echo", "wait": True})
        reply = await raw.response(i, seen=seen)
        assert reply["result"]["run"]["state"] == "success"
        assert [m["params"]["state"] for m in seen if m.get("method") == "sidecar/runUpdate"] \
            == ["pending", "running", "success"]
        assert not [m for m in seen if m.get("method") == "sidecar/outputChunk"]
        # the session is the one started first (same root, same config)
        i = raw.send("sidecar/commands")
        assert [c["name"] for c in (await raw.response(i))["result"]["commands"]] == [
            "Echo", "Saved"]


@pytest.mark.timeout(30)
async def test_nul_and_lone_surrogates_are_invalid_params(root: Path) -> None:
    write_config(root, CONFIG)
    async with await RawClient.spawn() as raw:
        await raw.initialize(root)
        seen: list[dict[str, Any]] = []

        async def invalid(method: str, params: Any, field: str) -> None:
            i = raw.send(method, params)
            reply = await raw.response(i, seen=seen)
            assert reply["error"]["code"] == -32602, (method, params, reply)
            assert reply["error"]["data"]["field"] == field
            assert field in reply["error"]["message"]

        for bad in ("a\u0000b", "\ud800", "x\udcff"):
            await invalid("sidecar/run", {"command": "Echo", "vars": {"who": bad}}, "vars.who")
            await invalid("sidecar/trigger", {"event": "go", "vars": {"who": bad}}, "vars.who")
            await invalid("sidecar/preview", {"command": "Echo", "vars": {"who": bad}},
                          "vars.who")
            await invalid("sidecar/run", {"command": "Echo", "vars": {bad: "x"}}, "vars")
            await invalid("sidecar/run", {"command": bad}, "command")
            await invalid("sidecar/trigger", {"event": bad}, "event")
            await invalid("sidecar/status", {"command": bad}, "command")
            await invalid("sidecar/setOutputFilter", {"enabled": True, "commands": [bad]},
                          "commands[0]")
            await invalid("workspace/executeCommand",
                          {"command": "sidecar.run", "arguments": ["Echo", {"who": bad}]},
                          "vars.who")
        # nothing was started, nothing was recorded
        assert not [m for m in seen if m.get("method") == "sidecar/runUpdate"]
        i = raw.send("sidecar/history", {"command": "Echo", "limit": 0})
        assert (await raw.response(i))["result"]["runs"] == []
        i = raw.send("sidecar/status", {"command": "Echo"})
        assert (await raw.response(i))["result"]["commands"][0]["state"] == "never_run"
        # a save whose path is not valid Unicode starts nothing; a good one still does
        raw.send("textDocument/didSave", {"textDocument": {"uri": (root / "b").as_uri()
                                                           + "/\udcff.py"}}, notify=True)
        raw.send("textDocument/didSave", {"textDocument": {"uri": (root / "ok.py").as_uri()}},
                 notify=True)
        final = await raw.read_until(lambda m: m.get("method") == "sidecar/runUpdate"
                                     and m["params"]["state"] == "success")
        assert final["params"]["resolvedCommand"] == "echo saved ok.py"
        i = raw.send("sidecar/history", {"command": "Saved", "limit": 0})
        runs = (await raw.response(i))["result"]["runs"]
        i = raw.send("sidecar/status", {"command": "Saved"})
        status = (await raw.response(i))["result"]["commands"][0]
        assert [r["resolvedCommand"] for r in runs] == ["echo saved ok.py"]
        assert status["activeCount"] == 0


# A server whose sidecar/triggerGraph handler has a bug (the exception names a server path).
BUGGY_SERVER = [sys.executable, "-c", """
from sidecar.core.orchestrator import CommandOrchestrator
def broken(self):
    raise RuntimeError("boom in /srv/secret/place.py")
CommandOrchestrator.get_trigger_graph = broken
from sidecar.frontends.lsp import serve
raise SystemExit(serve())
"""]


@pytest.mark.timeout(30)
async def test_internal_errors_are_short_and_tracebacks_stay_in_the_log(root: Path) -> None:
    write_config(root, CONFIG)
    async with await RawClient.spawn(cmd=BUGGY_SERVER, capture_stderr=True) as raw:
        await raw.initialize(root)
        seen: list[dict[str, Any]] = []
        i = raw.send("sidecar/triggerGraph")
        reply = await raw.response(i, seen=seen)
        error = reply["error"]
        assert error["code"] == -32603
        assert "RuntimeError" in error["message"]
        text = json.dumps(error)
        assert "Traceback" not in text and "/srv/secret" not in text
        assert "traceback" not in (error.get("data") or {})
        assert len(text) < 200
        # nor through window/logMessage
        i = raw.send("sidecar/status")
        await raw.response(i, seen=seen)
        logs = [m["params"]["message"] for m in seen if m.get("method") == "window/logMessage"]
        assert not [m for m in logs if "Traceback" in m or "File \"" in m]
        i = raw.send("shutdown")
        await raw.response(i)
        raw.send("exit", notify=True)
        stderr = await raw.stderr()
        assert "Traceback" in stderr and "boom in /srv/secret/place.py" in stderr


def _malformed(n: int) -> Any:
    """The n-th of a mix of broken messages (bytes: a raw body)."""
    kind = n % 12
    if kind == 0:
        return b"{not json"
    if kind == 1:
        return {"jsonrpc": "2.0"}
    if kind == 2:
        return request([n], "sidecar/status")
    if kind == 3:
        return {"jsonrpc": "1.0", "id": n, "method": "sidecar/status"}
    if kind == 4:
        return request(n, 42)
    if kind == 5:
        return request(n, "textDocument/hover", {"nonsense": True})
    if kind == 6:
        return {"jsonrpc": "2.0", "method": "textDocument/didOpen", "params": {"x": 1}}
    if kind == 7:
        return request(n, "no/such/method", {})
    if kind == 8:
        return request(n, "sidecar/run", {"command": "Echo", "vars": {"who": 1}})
    if kind == 9:
        return request(None, "sidecar/status")
    if kind == 10:
        return request(n, "textDocument/definition", HOVER | {"position": {"line": "x"}})
    return [1, 2, 3]


@pytest.mark.timeout(60)
async def test_malformed_messages_log_one_line_each(root: Path) -> None:
    write_config(root, CONFIG)
    count = 240
    async with await RawClient.spawn(capture_stderr=True) as raw:
        await raw.initialize(root)
        for n in range(count):
            raw.send_raw(_malformed(n))
        i = raw.send("sidecar/status")
        await raw.response(i, timeout=30)
        i = raw.send("shutdown")
        await raw.response(i)
        raw.send("exit", notify=True)
        stderr = await raw.stderr()
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) <= count + 5, "\n".join(lines[:40])
