"""The LSP frontend: ``sidecar serve``, LSP-framed JSON-RPC on stdio (pygls 2). See
``protocol.md``."""

from __future__ import annotations

from .server import SidecarServer, create_server, serve

__all__ = ["SidecarServer", "create_server", "serve"]
