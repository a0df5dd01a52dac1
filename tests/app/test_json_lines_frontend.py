"""The test of the service layer's design: a whole new frontend in this one module.

:class:`JsonLinesFrontend` speaks JSON lines (``{"id", "method", "params"}`` in; responses and
notifications out) using nothing but the host, a session and the service: no code of the LSP
frontend or the CLI. Through it the tests run, trigger, cancel, read output and get errors.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from apphost import started_host

from sidecar.app import protocol as P
from sidecar.app.service import Service
from sidecar.host.host import Host
from sidecar.host.session import Session

pytestmark = pytest.mark.timeout(30)


class JsonLinesFrontend:
    """JSON lines over the service layer; also the session's outbox."""

    pending_bytes = 0

    def __init__(self, host: Host) -> None:
        self.lines: list[str] = []
        self._changed = asyncio.Event()
        self.session = Session(host, self)
        self.service = Service(host)
        self.operations = self.service.operations()

    def send(self, message: dict[str, Any]) -> None:
        self.lines.append(json.dumps(message))
        self._changed.set()

    async def handle(self, line: str) -> None:
        msg = json.loads(line)
        reply: dict[str, Any] = {"id": msg["id"]}
        try:
            cls, call = self.operations[msg["method"]]
            reply["result"] = P.to_wire(await call(P.parse_params(cls, msg.get("params"))))
        except KeyError:
            reply["error"] = {"code": P.E_METHOD_NOT_FOUND, "message": msg["method"]}
        except P.SidecarRpcError as exc:
            reply["error"] = {"code": exc.code, "message": exc.message, "data": exc.data}
        self.send(reply)

    # ---- the test side -------------------------------------------------------------------
    async def call(self, method: str, params: Any = None) -> dict[str, Any]:
        ident = len(self.lines) + 1000
        await self.handle(json.dumps({"id": ident, "method": method, "params": params}))
        return await self.wait(lambda m: m.get("id") == ident)

    def messages(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.lines]

    def notes(self, method: str) -> list[dict[str, Any]]:
        return [m["params"] for m in self.messages() if m.get("method") == method]

    async def wait(self, pred: Callable[[dict[str, Any]], bool],
                   timeout: float = 10.0) -> dict[str, Any]:
        async def loop() -> dict[str, Any]:
            while True:
                for m in self.messages():
                    if pred(m):
                        return m
                self._changed.clear()
                await self._changed.wait()

        return await asyncio.wait_for(loop(), timeout)

    async def final(self, run_id: str) -> dict[str, Any]:
        msg = await self.wait(lambda m: m.get("method") == P.N_RUN_UPDATE
                              and m["params"]["runId"] == run_id
                              and m["params"]["state"] in P.FINAL_STATES)
        return msg["params"]  # type: ignore[no-any-return]


CONFIG = """
[[command]]
name = "Hello"
command = "echo hello {{ who }}"
vars = { who = "world" }
triggers = ["greet"]

[[command]]
name = "After"
command = "true"
triggers = ["command_success:Hello"]

[[command]]
name = "Slow"
command = "sleep 30"
"""


@pytest.fixture
async def frontend(tmp_path: Path) -> Any:
    host = await started_host(tmp_path, CONFIG)
    fe = JsonLinesFrontend(host)
    yield fe
    await host.close()
    fe.session.close()


async def test_run_and_read_output(frontend: JsonLinesFrontend) -> None:
    reply = await frontend.call("sidecar/run", {"command": "Hello", "vars": {"who": "you"}})
    run = reply["result"]["run"]
    final = await frontend.final(run["runId"])
    assert final["state"] == "success" and final["exitCode"] == 0
    assert final["outputSize"] == len(b"hello you\n")
    out = await frontend.call("sidecar/readOutput", {"runId": run["runId"]})
    assert out["result"]["text"] == "hello you\n" and out["result"]["final"] is True
    chunks = [c["text"] for c in frontend.notes(P.N_OUTPUT_CHUNK) if c["runId"] == run["runId"]]
    assert "".join(chunks) == "hello you\n"


async def test_trigger_chains_and_says_why(frontend: JsonLinesFrontend) -> None:
    reply = await frontend.call("sidecar/trigger", {"event": "greet"})
    (started,) = reply["result"]["started"]
    assert started["command"] == "Hello" and started["triggerChain"] == ["greet"]
    after = await frontend.wait(lambda m: m.get("method") == P.N_RUN_UPDATE
                                and m["params"]["command"] == "After"
                                and m["params"]["state"] == "success")
    assert after["params"]["triggerChain"] == ["greet", "command_started:Hello",
                                               "command_success:Hello"]
    names = [e["name"] for e in frontend.notes(P.N_EVENT)]
    assert names.index("greet") < names.index("command_success:Hello")


async def test_cancel(frontend: JsonLinesFrontend) -> None:
    run = (await frontend.call("sidecar/run", {"command": "Slow"}))["result"]["run"]
    await frontend.wait(lambda m: m.get("method") == P.N_RUN_UPDATE
                        and m["params"]["runId"] == run["runId"]
                        and m["params"]["state"] == "running")
    reply = await frontend.call("sidecar/cancel", {"command": "Slow"})
    assert reply["result"] == {"cancelled": 1}
    final = await frontend.final(run["runId"])
    assert final["state"] == "cancelled" and final["comment"] == "cancelled by client"


async def test_errors_have_documented_codes(frontend: JsonLinesFrontend) -> None:
    reply = await frontend.call("sidecar/run", {"command": "Helo"})
    assert reply["error"]["code"] == P.E_COMMAND_NOT_FOUND
    assert "did you mean 'Hello'?" in reply["error"]["message"]
    reply = await frontend.call("sidecar/wait", {"runId": "nope"})
    assert reply["error"]["code"] == P.E_RUN_NOT_FOUND
    reply = await frontend.call("sidecar/run", {"command": 3})
    assert reply["error"]["code"] == P.E_INVALID_PARAMS
    assert reply["error"]["data"] == {"field": "command"}
