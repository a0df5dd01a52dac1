"""``python -m sidecar.host``: a workspace's host process (see :mod:`sidecar.host.daemon`),
serving each connection as an LSP session (:func:`sidecar.frontends.lsp.server.serve_connection`):
the composition root of the host.
"""

from __future__ import annotations

import sys

from sidecar.frontends.lsp.server import serve_connection

from .daemon import main

sys.exit(main(serve_connection))
