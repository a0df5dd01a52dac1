"""The MCP server's session with the workspace's host: an asyncio client of protocol.md.

:class:`HostLink` connects to the host's socket (starting the host when none runs; the
blocking connect runs in a thread, so the MCP ``initialize`` is answered meanwhile) and opens
an *agent session* (``clientInfo.name = "mcp"``, ``initializationOptions.agent``), so the
host applies the agent rules to everything asked through it and its runs carry
``startedBy: "mcp"``. Requests may be in flight concurrently (one per tool call); responses
are matched by id. Output chunks are off except for the runs a tool follows for progress
(:meth:`HostLink.follow`). When the host goes away the next request connects again (a new
host if need be).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sidecar.app import methods as M
from sidecar.frontends.cli.client import file_uri
from sidecar.host.framing import FrameParser, frame
from sidecar.host.locate import HostError, Workspace, connect

CLIENT_NAME = "mcp"
"""This session's ``clientInfo.name``: the ``startedBy`` of every run an agent starts."""


class LinkError(Exception):
    """A request failed: the host's error response (``code``, protocol.md §9), or no host
    could be reached (``code`` None)."""

    def __init__(self, message: str, code: int | None = None, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.data = data


class HostLink:
    """One agent session with the host of ``ws``."""

    def __init__(self, ws: Workspace) -> None:
        self.ws = ws
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._next_id = 0
        self._lines: dict[str, Callable[[str], None]] = {}
        self._partial: dict[str, str] = {}

    # ------------------------------------------------------------------ connection
    def start(self) -> None:
        """Begin connecting now (the first request waits for it)."""
        if self._connecting is None or (self._connecting.done() and self._writer is None):
            self._connecting = asyncio.ensure_future(self._connect())
            # A failure reaches the request that waits for it; none may ever come.
            self._connecting.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def _connect(self) -> None:
        try:
            sock = await asyncio.to_thread(connect, self.ws, start=True)
        except (HostError, OSError) as exc:
            raise LinkError(str(exc)) from None
        sock.setblocking(False)
        reader, writer = await asyncio.open_unix_connection(sock=sock)
        self._writer = writer
        self._reader_task = asyncio.ensure_future(self._read(reader))
        init = self._send("initialize", {
            "processId": os.getpid(), "clientInfo": {"name": CLIENT_NAME},
            "rootUri": file_uri(self.ws.root), "capabilities": {},
            "initializationOptions": {"agent": True, "outputChunks": "none",
                                      "progress": False}})
        self._notify("initialized", {})
        await init

    async def _ready(self) -> asyncio.StreamWriter:
        for _ in range(2):
            self.start()
            assert self._connecting is not None
            try:
                await asyncio.shield(self._connecting)
            except LinkError:
                self._connecting = None  # try again on the next request
                raise
            if self._writer is not None:
                return self._writer
        raise LinkError(f"the host closed the connection; see {self.ws.log_path}")

    async def close(self) -> None:
        for task in (self._connecting, self._reader_task):
            if task is not None and not task.done():
                task.cancel()
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    # ------------------------------------------------------------------ messages
    def _send(self, method: str, params: Any) -> asyncio.Future[Any]:
        assert self._writer is not None
        self._next_id += 1
        ident = self._next_id
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[ident] = future
        self._writer.write(frame({"jsonrpc": "2.0", "id": ident, "method": method,
                                  "params": params}))
        future.add_done_callback(lambda _f: self._pending.pop(ident, None))
        return future

    def _notify(self, method: str, params: Any) -> None:
        assert self._writer is not None
        self._writer.write(frame({"jsonrpc": "2.0", "method": method, "params": params}))

    async def request(self, method: str, params: Any = None) -> Any:
        """The result of a request (raises :class:`LinkError`). Cancelling the caller
        stops the wait; the host still answers, and the answer is dropped. A request the
        host did not answer before it went away fails; the next one connects again
        (starting a host)."""
        await self._ready()
        future = self._send(method, params)
        try:
            return await future
        except _Gone:
            raise LinkError(f"lost the connection to the host; see {self.ws.log_path}"
                            ) from None
        finally:
            future.cancel()

    async def _read(self, reader: asyncio.StreamReader) -> None:
        parser = FrameParser(self._dispatch)
        try:
            while data := await reader.read(1 << 16):
                parser.feed(data)
        finally:
            self._writer = None
            for future in list(self._pending.values()):
                if not future.done():
                    future.set_exception(_Gone())

    def _dispatch(self, body: bytes) -> None:
        message = json.loads(body)
        if not isinstance(message, dict):
            return
        method = message.get("method")
        if method == M.N_OUTPUT_CHUNK:
            self._chunk(message.get("params") or {})
            return
        if method is not None:
            return  # other notifications: the tools ask for what they need
        future = self._pending.get(message.get("id"))  # type: ignore[arg-type]
        if future is None or future.done():
            return
        error = message.get("error")
        if error is not None:
            future.set_exception(LinkError(str(error.get("message", "")), error.get("code"),
                                           error.get("data")))
        else:
            future.set_result(message.get("result"))

    # ------------------------------------------------------------------ following output
    @contextmanager
    def follow(self, run_id: str, on_line: Callable[[str], None]) -> Iterator[None]:
        """Within the block, ``on_line`` gets each line the run prints (as the host sends
        its output chunks, which are on for this run only meanwhile)."""
        self._lines[run_id] = on_line
        self._filter(run_id, True)
        try:
            yield
        finally:
            self._lines.pop(run_id, None)
            self._partial.pop(run_id, None)
            self._filter(run_id, False)

    def _filter(self, run_id: str, enabled: bool) -> None:
        if self._writer is not None:
            future = self._send(M.M_SET_OUTPUT_FILTER, {"enabled": enabled, "runIds": [run_id]})
            future.add_done_callback(lambda f: f.cancelled() or f.exception())

    def _chunk(self, params: dict[str, Any]) -> None:
        run_id = str(params.get("runId"))
        on_line = self._lines.get(run_id)
        if on_line is None:
            return
        text = self._partial.pop(run_id, "") + str(params.get("text") or "")
        *lines, rest = text.split("\n")
        if rest:
            self._partial[run_id] = rest[-4096:]
        for line in reversed(lines):
            if line.strip():
                on_line(line)
                break


class _Gone(Exception):
    """The connection to the host closed while a request waited."""


__all__ = ["CLIENT_NAME", "HostLink", "LinkError"]
