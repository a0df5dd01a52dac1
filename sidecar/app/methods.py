"""The protocol's names that thin clients need without the wire types: its version.

Standard library only (``sidecar save`` in a git hook imports this);
:mod:`sidecar.app.protocol` re-exports everything here.
"""

from __future__ import annotations

PROTOCOL_VERSION = 1
"""The version of protocol.md spoken by hosts and clients. It is part of the host socket's
name (a host of another version is never reused) and of the ``initialize`` result."""
