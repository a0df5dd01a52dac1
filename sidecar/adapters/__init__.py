"""Adapters: the core's ports (:mod:`sidecar.core.ports`) implemented for this machine.

* :class:`LocalExecutor` (:mod:`.local_process`): runs are local child processes, each in its
  own process group, with a reaper that outlives this process.
* :class:`OutputFilesStore` (:mod:`.output_files`): finished runs as files under
  ``[output_storage] directory``.

Adapters import the core; the core imports them only lazily, as defaults of
:class:`~sidecar.core.orchestrator.CommandOrchestrator`.
"""

from __future__ import annotations

import importlib

TYPE_CHECKING = False  # typing is not imported at run time: `sidecar job` starts fast
if TYPE_CHECKING:
    from typing import Any

    from .local_process import LocalExecutor, Process
    from .output_files import OutputFilesStore

_HOMES = {"LocalExecutor": "local_process", "Process": "local_process",
          "OutputFilesStore": "output_files"}


def __getattr__(name: str) -> Any:
    """The adapters are imported on first use: :mod:`.run_db` (``sidecar job``'s store) is
    imported without asyncio or the core."""
    if name in _HOMES:
        return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["LocalExecutor", "OutputFilesStore", "Process"]
