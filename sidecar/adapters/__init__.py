"""Adapters: the core's ports (:mod:`sidecar.core.ports`) implemented for this machine.

* :class:`LocalExecutor` (:mod:`.local_process`): runs are local child processes, each in its
  own process group, with a reaper that outlives this process.
* :class:`OutputFilesStore` (:mod:`.output_files`): finished runs as files under
  ``[output_storage] directory``.

Adapters import the core; the core imports them only lazily, as defaults of
:class:`~sidecar.core.orchestrator.CommandOrchestrator`.
"""

from __future__ import annotations

from .local_process import LocalExecutor, Process
from .output_files import OutputFilesStore

__all__ = ["LocalExecutor", "OutputFilesStore", "Process"]
