"""Ports: what the orchestrator needs from the world outside the core, as small Protocols.

* :class:`Executor` starts a run's process and gives back an :class:`Execution` (wait for it,
  stop it).
* :class:`RunStore` keeps finished runs as cmdorc's output files: per-command
  output/metadata paths, metadata, retention, reloading history (``[output_storage]``).
* :class:`RunRecords` records every run (its start and each change of state), holds the
  history, decides starts with a run key and says where a run's output goes as it arrives.

:class:`~sidecar.core.orchestrator.CommandOrchestrator` takes both as constructor arguments.
The implementations live outside the core, in :mod:`sidecar.adapters`
(:class:`~sidecar.adapters.local_process.LocalExecutor`,
:class:`~sidecar.adapters.output_files.OutputFilesStore`); when none is injected the
orchestrator imports them lazily, inside a factory function, so no module of
``sidecar.core`` imports ``sidecar.adapters`` at module level (adapters import the core, never
the other way round). The records default to
:class:`~sidecar.adapters.sqlite_records.SQLiteRecords` in memory (this process only); the
host gives a durable one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Protocol

from .config import CommandConfig, OutputStorageConfig
from .runs import KeyClaim, RunResult

#: Seconds between SIGTERM and SIGKILL when a run is stopped.
DEFAULT_GRACE = 3.0

#: Receives a run's output (stdout and stderr interleaved), one read at a time.
OutputCallback = Callable[[bytes], None]


class Execution(Protocol):
    """A started run's process (and whatever it started)."""

    @property
    def pid(self) -> int | None:
        """Its process id (the leader of its process group), if it has one."""
        ...

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


class RunRecords(Protocol):
    """Every run's record, the history read from them, and the run-key rules.

    :meth:`record` and :meth:`claim` never stop a run: a records store that cannot be written
    says so once (:attr:`problem`) and goes on in memory.
    """

    @property
    def durable(self) -> bool:
        """Records outlive this process (and are shared with others): the history is read
        from them."""
        ...

    @property
    def problem(self) -> str | None:
        """Why records are not written where they should be (None: they are)."""
        ...

    def output_path(self, command: str, run_id: str) -> Path | None:
        """Where the run's output is written as it arrives (None: kept in memory)."""
        ...

    def record(self, result: RunResult) -> None:
        """Record the run as it is now (called at each change of state). The write may wait
        a moment (a batch), but this object's own reads must include it."""
        ...

    def lookup(self, command: str, run_key: str, strict: bool) -> RunResult | None:
        """The run a start with this key would get without starting one (read only)."""
        ...

    def claim(self, result: RunResult, *, strict: bool, rerun: bool) -> KeyClaim:
        """Decide, atomically, whether ``result`` (its ``run_key`` set, or a rerun's
        ``rerun_of``) starts: if so it is recorded, its ``attempt`` (and ``rerun_of``,
        ``reason``) filled in; otherwise the run already there is returned. Raises
        :class:`~.errors.RunStateError` for a rerun while the key has an active run."""
        ...

    def get(self, run_id: str) -> RunResult | None:
        """The recorded run of that id (a copy; an active one whose owner is gone is
        ``lost``)."""
        ...

    def history(self, command: str, limit: int, run_key: str | None = None
                ) -> list[RunResult]:
        """Finished runs of ``command`` (of ``run_key`` only, if given), newest first
        (``limit`` <= 0: all)."""
        ...

    def prune(self, command: str, keep: int) -> None:
        """Delete ``command``'s finished runs beyond the newest ``keep`` (-1: none), with
        their output."""
        ...
