"""cmdsidecar: a trigger-driven command orchestrator (cmdorc-compatible Python API) and the
JSON-RPC sidecar that serves it to editors and agents.

``from sidecar import CommandOrchestrator`` (and the rest of :mod:`sidecar.core`'s API) works
as with cmdorc. The core is imported on first use, so the command line's thin clients
(``sidecar save`` in a git hook) start without it.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

TYPE_CHECKING = False  # typing is not imported at run time: `sidecar job` starts fast
if TYPE_CHECKING:
    from typing import Any

    from .core import *  # noqa: F403


def __getattr__(name: str) -> Any:
    core = importlib.import_module("sidecar.core")

    if name == "__all__":  # `from sidecar import *`
        return ["__version__", *core.__all__]
    if name in core.__all__:
        return getattr(core, name)
    raise AttributeError(f"module 'sidecar' has no attribute {name!r}")


def __dir__() -> list[str]:
    core = importlib.import_module("sidecar.core")

    return sorted({*globals(), *core.__all__})
