"""cmdsidecar: a trigger-driven command orchestrator (cmdorc-compatible Python API) and the
stdio JSON-RPC sidecar that serves it to editors and agents."""

from __future__ import annotations

from .core import *  # noqa: F403
from .core import __all__ as _core_all

__version__ = "0.1.0"
__all__ = ["__version__", *_core_all]
