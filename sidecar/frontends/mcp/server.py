"""``sidecar mcp``: a stdio MCP server (the official SDK's ``MCPServer``) over the host.

The server answers ``initialize`` at once and connects to the workspace's host meanwhile (the
first tool call waits for that). Each tool of :mod:`.tools` is registered with its input
schema (from its typed arguments), its output schema (its result model) and a description
written for a model. stdout is the protocol; logs go to stderr.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from mcp.server.mcpserver import MCPServer
from mcp.types import ToolAnnotations

from sidecar import __version__
from sidecar.host.locate import Workspace

from .link import HostLink
from .tools import READ_ONLY, TOOL_NAMES, Tools

logger = logging.getLogger("sidecar.mcp")

INSTRUCTIONS = """\
This server runs the commands declared in one workspace's sidecar.toml (or cmdorc.toml):
tests, linters, builds, formatters. Call list_commands first; then run_command (which waits
up to wait_secs and otherwise returns a run_id), get_run to wait for or look at a run,
read_output to page through its output, cancel to stop it, history for past runs, preview to
see the exact command line, and trigger to fire one of the config's events. Only declared
commands run, with the variables list_commands shows; the person in the editor sees every
run live. Pass run_key to make a start safe to retry."""


def build_server(ws: Workspace) -> tuple[MCPServer[Any], HostLink]:
    """The MCP server of the workspace ``ws`` and its link to the host (not connected)."""
    link = HostLink(ws)
    tools = Tools(link)

    @asynccontextmanager
    async def lifespan(_server: MCPServer[Any]) -> AsyncIterator[None]:
        link.start()  # connect (or start the host) while the client initializes
        try:
            yield
        finally:
            await link.close()

    server: MCPServer[Any] = MCPServer(
        name="cmdsidecar", title="cmdsidecar: the workspace's declared commands",
        instructions=INSTRUCTIONS, version=__version__, lifespan=lifespan,
        log_level=logging.getLevelName(logging.getLogger().level),  # type: ignore[arg-type]
        warn_on_duplicate_tools=False)
    for name in TOOL_NAMES:
        read_only = name in READ_ONLY
        server.add_tool(getattr(tools, name), name=name, annotations=ToolAnnotations(
            read_only_hint=read_only, destructive_hint=False if read_only else None,
            idempotent_hint=read_only, open_world_hint=False))
    return server, link


async def serve(ws: Workspace) -> None:
    """Serve MCP on stdin/stdout until the client closes stdin."""
    server, _link = build_server(ws)
    await server.run_stdio_async()


__all__ = ["INSTRUCTIONS", "build_server", "serve"]
