"""``python -m sidecar.host``: a workspace's host process (see :mod:`sidecar.host.daemon`),
serving each connection as an LSP session (:func:`sidecar.frontends.lsp.server.serve_connection`).
"""

from __future__ import annotations

import sys

from .daemon import main

sys.exit(main())
