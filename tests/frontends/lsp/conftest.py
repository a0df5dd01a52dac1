"""Helpers for the end-to-end tests of the sidecar server (pytest-lsp client + a raw client)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import textwrap
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from lsprotocol import types as lsp
from pygls.protocol import default_converter
from pygls.protocol.json_rpc import JsonRPCNotification, JsonRPCResponseMessage
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities
from pytest_lsp.client import DEFAULT_CLIENT_FEATURES, register_lsp_features
from pytest_lsp.protocol import LanguageClientProtocol

SERVER_CMD = [sys.executable, "-c", "from sidecar.frontends.lsp import serve; raise SystemExit(serve())"]
PY = sys.executable


class RawClientProtocol(LanguageClientProtocol):
    """Keeps ``sidecar/*`` notifications and untyped results as plain dicts (pygls would turn
    them into namedtuples, renaming keys such as ``src/**/*.py``)."""

    def structure_message(self, data: dict[str, Any]) -> Any:
        if "jsonrpc" in data:
            method = data.get("method")
            if isinstance(method, str) and method.startswith("sidecar/") and "id" not in data:
                return JsonRPCNotification(method=method, jsonrpc="2.0", params=data.get("params"))
            if ("id" in data and "method" not in data and "error" not in data
                    and self._result_types.get(data["id"]) is None):
                self._result_types.pop(data["id"], None)
                return JsonRPCResponseMessage(id=data["id"], jsonrpc="2.0",
                                              result=data.get("result"))
        return super().structure_message(data)


class Recorder:
    """Every sidecar notification, in arrival order, with waiting on a predicate."""

    def __init__(self) -> None:
        self.items: list[tuple[str, dict[str, Any]]] = []
        self._cond: asyncio.Condition | None = None

    def add(self, method: str, params: dict[str, Any]) -> None:
        self.items.append((method, params))
        if self._cond is not None:
            cond = self._cond

            async def notify() -> None:
                async with cond:
                    cond.notify_all()

            asyncio.ensure_future(notify())

    def of(self, method: str) -> list[dict[str, Any]]:
        return [p for m, p in self.items if m == method]

    def updates(self, run_id: str | None = None, command: str | None = None) -> list[dict[str, Any]]:
        return [p for p in self.of("sidecar/runUpdate")
                if (run_id is None or p["runId"] == run_id)
                and (command is None or p["command"] == command)]

    def chunks(self, run_id: str) -> list[dict[str, Any]]:
        return [p for p in self.of("sidecar/outputChunk") if p["runId"] == run_id]

    async def wait_for(self, pred: Callable[[], Any], timeout: float = 10.0) -> Any:
        if self._cond is None:
            self._cond = asyncio.Condition()

        async def loop() -> Any:
            assert self._cond is not None
            async with self._cond:
                while True:
                    value = pred()
                    if value:
                        return value
                    await self._cond.wait()

        return await asyncio.wait_for(loop(), timeout)

    async def final(self, run_id: str, timeout: float = 10.0) -> dict[str, Any]:
        def done() -> dict[str, Any] | None:
            for u in self.updates(run_id):
                if u["state"] in ("success", "failed", "cancelled"):
                    return u
            return None

        result: dict[str, Any] = await self.wait_for(done, timeout)
        return result

    async def final_of(self, command: str, timeout: float = 10.0) -> dict[str, Any]:
        def done() -> dict[str, Any] | None:
            for u in self.updates(command=command):
                if u["state"] in ("success", "failed", "cancelled"):
                    return u
            return None

        result: dict[str, Any] = await self.wait_for(done, timeout)
        return result


def make_client() -> LanguageClient:
    client = LanguageClient(converter_factory=default_converter, protocol_cls=RawClientProtocol)
    rec = Recorder()
    features = dict(DEFAULT_CLIENT_FEATURES)
    default_progress = features[lsp.PROGRESS]

    def progress(client: LanguageClient, params: lsp.ProgressParams) -> None:
        default_progress(client, params)
        rec.add("$/progress", {"token": params.token})

    features[lsp.PROGRESS] = progress
    register_lsp_features(client, features)
    client.rec = rec  # type: ignore[attr-defined]
    for method in ("sidecar/event", "sidecar/runUpdate", "sidecar/outputChunk"):
        def handler(params: Any, method: str = method) -> None:
            rec.add(method, params)
        client.feature(method)(handler)
    return client


async def request(client: LanguageClient, method: str, params: Any = None,
                  timeout: float = 15.0) -> Any:
    return await asyncio.wait_for(client.protocol.send_request_async(method, params), timeout)


def write_config(root: Path, text: str, name: str = "sidecar.toml") -> Path:
    path = root / name
    path.write_text(textwrap.dedent(text))
    return path


@contextlib.asynccontextmanager
async def start(root: Path, *, init_options: Any = None, progress: bool = False,
                env: dict[str, str] | None = None,
                client_name: str | None = None) -> AsyncIterator[LanguageClient]:
    """A server on ``root`` and a client that initialized it (``clientInfo.name`` =
    ``client_name``, none by default)."""
    config = ClientServerConfig(server_command=SERVER_CMD, client_factory=make_client,
                                server_env={**os.environ, **(env or {})})
    client: LanguageClient = await config.start()  # type: ignore[assignment]
    caps = client_capabilities("visual-studio-code") if progress else lsp.ClientCapabilities()
    try:
        await asyncio.wait_for(client.initialize_session(lsp.InitializeParams(
            capabilities=caps, root_uri=root.as_uri(),
            workspace_folders=[lsp.WorkspaceFolder(uri=root.as_uri(), name="ws")],
            initialization_options=init_options,
            client_info=lsp.ClientInfo(name=client_name) if client_name else None)), 15)
        yield client
        if client._server is not None and client._server.returncode is None:
            await asyncio.wait_for(client.shutdown_session(), 15)
    finally:
        server = client._server
        if server is not None and server.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                server.kill()
            await server.wait()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.stop(), 5)


def py(code: str) -> str:
    """A shell-safe ``python -c CODE`` command string for configs."""
    return f"{PY} -c {json.dumps(code)}"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path


# ---------------------------------------------------------------------------- raw client


class RawClient:
    """A plain asyncio JSON-RPC client on the server's pipes; reading is under test control.
    ``async with await RawClient.spawn() as raw:`` kills the server if the test left it up."""

    async def __aenter__(self) -> RawClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        if self._stderr_task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._stderr_task, 5)

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self._id = 0
        self.last_size = 0
        """Body size in bytes of the last message :meth:`read` returned."""
        self.stderr_lines: list[str] = []
        """The server's stderr, when spawned with ``capture_stderr``."""
        self._stderr_task: asyncio.Task[None] | None = None

    @classmethod
    async def spawn(cls, env: dict[str, str] | None = None, limit: int = 1 << 16, *,
                    capture_stderr: bool = False, cmd: list[str] | None = None) -> RawClient:
        """``limit``: the client's read buffer; it stops reading the pipe at ``2 * limit``
        buffered bytes until :meth:`read` is called. ``capture_stderr``: collect the
        server's stderr into :attr:`stderr_lines` (see :meth:`stderr`). ``cmd``: another
        server command line."""
        proc = await asyncio.create_subprocess_exec(
            *(cmd or SERVER_CMD), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE if capture_stderr else None,
            env={**os.environ, **(env or {})}, limit=limit)
        client = cls(proc)
        if capture_stderr:
            client._stderr_task = asyncio.ensure_future(client._drain_stderr())
        return client

    async def _drain_stderr(self) -> None:
        assert self.proc.stderr is not None
        while line := await self.proc.stderr.readline():
            self.stderr_lines.append(line.decode(errors="replace"))

    async def stderr(self, timeout: float = 10.0) -> str:
        """All the server wrote to stderr, once it has exited."""
        assert self._stderr_task is not None, "spawn(capture_stderr=True)"
        await asyncio.wait_for(asyncio.shield(self._stderr_task), timeout)
        return "".join(self.stderr_lines)

    def send(self, method: str, params: Any = None, *, notify: bool = False) -> int:
        msg: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "params": params}
        if not notify:
            self._id += 1
            msg["id"] = self._id
        self.send_raw(msg)
        return self._id

    def send_raw(self, message: Any) -> None:
        """Send anything: bytes as the body as they are, anything else as JSON."""
        body = message if isinstance(message, bytes) else json.dumps(message).encode()
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)

    async def read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        length = 0
        while True:
            line = await self.proc.stdout.readline()
            if not line:
                raise EOFError
            if line == b"\r\n":
                break
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        self.last_size = length
        data: dict[str, Any] = json.loads(await self.proc.stdout.readexactly(length))
        return data

    async def response(self, msg_id: Any, timeout: float = 10.0,
                       seen: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """The response to ``msg_id`` (compared by value and type: ``4.0`` is not ``4``);
        every message read on the way is appended to ``seen``."""

        def is_it(m: dict[str, Any]) -> bool:
            return ("method" not in m and "id" in m and m["id"] == msg_id
                    and type(m["id"]) is type(msg_id))

        return await asyncio.wait_for(
            self.read_until(is_it, seen.append if seen is not None else None), timeout)

    async def read_until(self, pred: Callable[[dict[str, Any]], bool],
                         on_message: Callable[[dict[str, Any]], None] | None = None
                         ) -> dict[str, Any]:
        while True:
            msg = await self.read()
            if on_message is not None:
                on_message(msg)
            if pred(msg):
                return msg

    async def initialize(self, root: Path, options: Any = None) -> None:
        i = self.send("initialize", {"processId": os.getpid(), "rootUri": root.as_uri(),
                                     "capabilities": {}, "initializationOptions": options})
        await self.read_until(lambda m: m.get("id") == i)
        self.send("initialized", {}, notify=True)
