"""``sidecar mcp --print-config [claude|cursor|vscode]``: a client configuration to paste.

Claude Code (``.mcp.json`` in the project, or ``claude mcp add-json``) and Cursor
(``.cursor/mcp.json``) take ``{"mcpServers": {name: {command, args}}}``; VS Code
(``.vscode/mcp.json``) takes ``{"servers": {name: {type, command, args}}}``. The command is
this installation's ``sidecar`` (absolute, so the client's PATH does not matter) and the
workspace is named explicitly.
"""

from __future__ import annotations

import json
import os
import sys

from sidecar.host.locate import Workspace

CLIENTS = ("claude", "cursor", "vscode")
SERVER_NAME = "cmdsidecar"
WHERE = {
    "claude": "Claude Code: save as .mcp.json in the project (or `claude mcp add-json "
              f"{SERVER_NAME} '<the inner object>'`); Claude Desktop: merge into "
              "claude_desktop_config.json",
    "cursor": "Cursor: save as .cursor/mcp.json in the project (or ~/.cursor/mcp.json)",
    "vscode": "VS Code: save as .vscode/mcp.json in the workspace",
}


def command_line(ws: Workspace) -> list[str]:
    """The argv that starts this installation's ``sidecar mcp`` for ``ws``."""
    script = os.path.join(os.path.dirname(sys.executable), "sidecar")
    argv = [script] if os.access(script, os.X_OK) else [sys.executable, "-m", "sidecar"]
    argv += ["mcp", "--workspace", ws.root]
    for f in ws.config_files:
        argv += ["--config", f]
    return argv


def config_for(client: str, ws: Workspace) -> dict[str, object]:
    command, *args = command_line(ws)
    server: dict[str, object] = {"command": command, "args": args}
    if client == "vscode":
        return {"servers": {SERVER_NAME: {"type": "stdio", **server}}}
    return {"mcpServers": {SERVER_NAME: server}}


def print_config(client: str, ws: Workspace) -> int:
    """Print the configuration (stdout) and where it goes (stderr)."""
    sys.stdout.write(json.dumps(config_for(client, ws), indent=2) + "\n")
    sys.stderr.write(f"sidecar: {WHERE[client]}\n")
    return 0
