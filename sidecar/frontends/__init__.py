"""Frontends: thin translations between a way of talking to people or programs and the
service layer (:mod:`sidecar.app`). ``lsp`` (LSP-framed JSON-RPC for editors), ``cli`` (the
``sidecar`` command line); later ``mcp`` and a TUI."""
