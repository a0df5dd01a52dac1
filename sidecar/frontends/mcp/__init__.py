"""The MCP frontend: ``sidecar mcp``, the workspace's declared commands as tools for agents.

:mod:`.server` builds the server, :mod:`.tools` holds the tools, :mod:`.link` is the agent
session with the workspace's host, :mod:`.clients` prints client configurations. The ``mcp``
SDK is imported only here: no other subcommand pays for it.
"""

from __future__ import annotations

import argparse


def main(args: argparse.Namespace) -> int:
    """``sidecar mcp [--workspace DIR] [--config FILE]… [--print-config [CLIENT]]``."""
    from sidecar.frontends.cli.common import config_files, workspace_of

    ws = workspace_of(args)
    if args.print_config:
        from .clients import print_config

        return print_config(args.print_config, ws)
    config_files(ws)  # no config: say so now, with exit code 3, instead of serving nothing
    import asyncio

    from .server import serve

    try:
        asyncio.run(serve(ws))
    except KeyboardInterrupt:
        return 130
    return 0


__all__ = ["main"]
