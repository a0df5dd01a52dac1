"""A test client of a workspace's host: ``sidecar serve`` (attached) on pipes, or the host's
socket directly. A reader task records every message; tests wait on predicates over them (no
sleeps)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sidecar.app.methods import FINAL_STATES
from sidecar.host.framing import FrameParser, frame

SERVE = [sys.executable, "-m", "sidecar", "serve"]


class HostClient:
    """One session: ``await HostClient.serve(root, "Neovim")`` spawns ``sidecar serve``;
    ``await HostClient.socket(path, root, "cli")`` connects to the host's socket."""

    def __init__(self, reader: asyncio.StreamReader, writer: Any,
                 proc: asyncio.subprocess.Process | None = None) -> None:
        self.reader = reader
        self.writer = writer
        self.proc = proc
        self.messages: list[dict[str, Any]] = []
        self._id = 0
        self._changed = asyncio.Event()
        self._task = asyncio.ensure_future(self._read())
        self.closed = False

    @classmethod
    async def serve(cls, root: Path, name: str | None, options: Any = None, *,
                    env: dict[str, str] | None = None, initialize: bool = True,
                    cmd: list[str] | None = None) -> HostClient:
        proc = await asyncio.create_subprocess_exec(
            *(cmd or SERVE), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, cwd=root, env={**os.environ, **(env or {})})
        assert proc.stdout is not None
        client = cls(proc.stdout, proc.stdin, proc)
        if initialize:
            await client.initialize(root, name, options)
        return client

    @classmethod
    async def socket(cls, path: str, root: Path, name: str | None,
                     options: Any = None) -> HostClient:
        reader, writer = await asyncio.open_unix_connection(path)
        client = cls(reader, writer)
        await client.initialize(root, name, options)
        return client

    async def _read(self) -> None:
        parser = FrameParser(lambda body: self.messages.append(json.loads(body)))
        try:
            while data := await self.reader.read(1 << 16):
                parser.feed(data)
                self._changed.set()
        finally:
            self.closed = True
            self._changed.set()

    async def wait_for(self, pred: Callable[[], Any], timeout: float = 15.0) -> Any:
        async def loop() -> Any:
            while True:
                value = pred()
                if value:
                    return value
                if self.closed:
                    raise EOFError(f"connection closed; last messages: {self.messages[-3:]}")
                self._changed.clear()
                await self._changed.wait()

        return await asyncio.wait_for(loop(), timeout)

    # ------------------------------------------------------------------ sending
    def send(self, method: str, params: Any = None, *, notify: bool = False) -> int:
        msg: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            msg["params"] = params
        if not notify:
            self._id += 1
            msg["id"] = self._id
        self.writer.write(frame(msg))
        return self._id

    async def reply(self, method: str, params: Any = None, timeout: float = 15.0
                    ) -> dict[str, Any]:
        """Send a request; its response, whole."""
        i = self.send(method, params)
        response: dict[str, Any] = await self.wait_for(lambda: next(
            (m for m in self.messages if m.get("id") == i and "method" not in m), None), timeout)
        return response

    async def request(self, method: str, params: Any = None, timeout: float = 15.0) -> Any:
        reply = await self.reply(method, params, timeout)
        assert "error" not in reply, reply
        return reply["result"]

    async def error(self, method: str, params: Any = None) -> dict[str, Any]:
        """The error a request is answered with (it must fail)."""
        reply = await self.reply(method, params)
        assert "error" in reply, reply
        error: dict[str, Any] = reply["error"]
        return error

    async def initialize(self, root: Path, name: str | None, options: Any = None) -> Any:
        params: dict[str, Any] = {"processId": os.getpid(), "rootUri": root.as_uri(),
                                  "capabilities": {}, "initializationOptions": options}
        if name is not None:
            params["clientInfo"] = {"name": name}
        result = await self.request("initialize", params)
        self.send("initialized", {}, notify=True)
        return result

    async def close(self) -> int | None:
        """``shutdown`` + ``exit``; the relay's exit code (None for a socket)."""
        with contextlib.suppress(EOFError, asyncio.TimeoutError):
            await self.request("shutdown", timeout=5)
        self.send("exit", notify=True)
        return await self.disconnect()

    async def disconnect(self) -> int | None:
        with contextlib.suppress(Exception):
            self.writer.close()
        if self.proc is not None:
            code = await asyncio.wait_for(self.proc.wait(), 10)
            await asyncio.wait_for(self._task, 5)
            return code
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._task, 5)
        return None

    def stop_reading(self) -> None:
        """Stop reading: the host's writes to this client back up."""
        self._task.cancel()

    async def kill(self) -> None:
        """SIGKILL ``sidecar serve`` (an editor's server dying): no shutdown, pipes closed."""
        with contextlib.suppress(Exception):
            self.writer.close()
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            if self._task.done():  # read to the end, or the pipe never counts as closed
                self._task = asyncio.ensure_future(self._discard())
            await asyncio.wait_for(self.proc.wait(), 15)
        self._task.cancel()

    async def _discard(self) -> None:
        while await self.reader.read(1 << 16):
            pass

    # ------------------------------------------------------------------ reading
    def notifications(self, method: str) -> list[dict[str, Any]]:
        return [m["params"] for m in self.messages if m.get("method") == method]

    def updates(self, run_id: str | None = None, command: str | None = None
                ) -> list[dict[str, Any]]:
        return [p for p in self.notifications("sidecar/runUpdate")
                if (run_id is None or p["runId"] == run_id)
                and (command is None or p["command"] == command)]

    async def final(self, run_id: str, timeout: float = 15.0) -> dict[str, Any]:
        result: dict[str, Any] = await self.wait_for(lambda: next(
            (u for u in self.updates(run_id) if u["state"] in FINAL_STATES), None), timeout)
        return result

    async def final_of(self, command: str, timeout: float = 15.0) -> dict[str, Any]:
        result: dict[str, Any] = await self.wait_for(lambda: next(
            (u for u in self.updates(command=command) if u["state"] in FINAL_STATES), None), timeout)
        return result

    def output(self, run_id: str) -> str:
        return "".join(p["text"] for p in self.notifications("sidecar/outputChunk")
                       if p["runId"] == run_id)


def make_gate(root: Path) -> None:
    """A FIFO ``gate`` in ``root``: a command ``cat gate`` runs until :func:`release`."""
    os.mkfifo(root / "gate")


async def release(root: Path, text: str = "linted\n") -> None:
    """Let ``cat gate`` finish with ``text`` as its output (opening the FIFO for writing
    waits until the command has it open for reading)."""

    def write() -> None:
        with open(root / "gate", "w") as f:
            f.write(text)

    await asyncio.wait_for(asyncio.to_thread(write), 15)
