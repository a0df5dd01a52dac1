"""The ``sidecar`` command line: a frontend over the service layer (see :mod:`.main`)."""

from __future__ import annotations

from .main import main

__all__ = ["main"]
