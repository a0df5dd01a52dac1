"""Ports: what the orchestrator needs from the world outside the core, as small Protocols.

* :class:`Executor` starts a run's process and gives back an :class:`Execution` (wait for it,
  stop it).
* :class:`RunStore` keeps finished runs: per-command output/metadata paths, metadata,
  retention, reloading history.

:class:`~sidecar.core.orchestrator.CommandOrchestrator` takes both as constructor arguments.
The implementations live outside the core, in :mod:`sidecar.adapters`
(:class:`~sidecar.adapters.local_process.LocalExecutor`,
:class:`~sidecar.adapters.output_files.OutputFilesStore`); when none is injected the
orchestrator imports them lazily, inside a factory function, so no module of
``sidecar.core`` imports ``sidecar.adapters`` at module level (adapters import the core, never
the other way round).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Protocol

from .config import CommandConfig, OutputStorageConfig
from .runs import RunResult

#: Seconds between SIGTERM and SIGKILL when a run is stopped.
DEFAULT_GRACE = 3.0

#: Receives a run's output (stdout and stderr interleaved), one read at a time.
OutputCallback = Callable[[bytes], None]


class Execution(Protocol):
    """A started run's process (and whatever it started)."""

    async def wait(self, grace: float) -> int:
        """Wait until the process has exited and its output has ended; whatever it left
        running is stopped (``grace`` seconds between SIGTERM and SIGKILL). Returns the exit
        code (negative: killed by that signal)."""
        ...

    async def terminate(self, grace: float) -> None:
        """Stop it: SIGTERM, then SIGKILL after ``grace`` seconds. No-op once finished."""
        ...

    def kill_now(self) -> None:
        """SIGKILL everything at once, synchronously (the event loop is going away)."""
        ...


class Executor(Protocol):
    """Starts runs' processes."""

    async def start(
        self,
        argv: Sequence[str] | None,
        script: str,
        *,
        cwd: str | None,
        env: Mapping[str, str] | None,
        on_output: OutputCallback,
        on_start: Callable[[Execution], None],
    ) -> Execution:
        """Start ``argv`` directly, or ``script`` under ``/bin/sh -c`` when ``argv`` is None,
        in ``cwd`` with ``env`` (None: inherit), and return its :class:`Execution`.

        ``on_start(execution)`` is called once, as soon as the process exists and *before* the
        first ``on_output`` call (output that arrives earlier is held until then): the
        orchestrator marks the run running there. ``on_output`` then gets the output in order.

        Raises ``OSError`` (e.g. ``FileNotFoundError``) if it cannot be started; ``on_start``
        is not called then.
        """
        ...


class RunStore(Protocol):
    """Where finished runs are kept (``[output_storage]``, per-command overrides)."""

    def configure(self, settings: OutputStorageConfig) -> None:
        """Apply new ``[output_storage]`` settings (``reload_config``)."""
        ...

    def keep_history(self, cmd: CommandConfig) -> int:
        """How many runs of ``cmd`` are kept: 0 none, -1 all."""
        ...

    def extension(self, cmd: CommandConfig) -> str:
        """The output file extension of ``cmd``'s runs (``.txt``)."""
        ...

    def enabled(self, cmd: CommandConfig) -> bool:
        """Whether ``cmd``'s runs are stored at all."""
        ...

    def paths(self, cmd: CommandConfig, run_id: str) -> tuple[Path, Path]:
        """(output file, metadata file) of a run."""
        ...

    def write_metadata(self, result: RunResult) -> None:
        """Record a finished run (its ``metadata_file`` is set). May raise ``OSError``."""
        ...

    def enforce_retention(self, cmd: CommandConfig) -> None:
        """Delete ``cmd``'s runs beyond its ``keep_history``."""
        ...

    def load_history(self, cmd: CommandConfig, limit: int) -> list[RunResult]:
        """Up to ``limit`` (-1: all) most recent stored runs of ``cmd``, oldest first."""
        ...
