"""Exceptions. Names and constructor signatures follow cmdorc so code written for it runs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .problems import Problem


class CmdorcError(Exception):
    """Base class of every error this package raises on purpose."""


SidecarError = CmdorcError


class CommandNotFoundError(CmdorcError):
    """The named command is not registered."""


class ConcurrencyLimitError(CmdorcError):
    """A new run was refused: ``max_concurrent`` reached and ``on_retrigger = "ignore"``."""

    def __init__(
        self, command_name: str, active_count: int, max_concurrent: int, policy: str = "ignore"
    ) -> None:
        self.command_name = command_name
        self.active_count = active_count
        self.max_concurrent = max_concurrent
        self.policy = policy
        super().__init__(
            f"Command '{command_name}' is at its concurrency limit "
            f"({active_count}/{max_concurrent}, on_retrigger={policy})"
        )


class DebounceError(CmdorcError):
    """A new run was refused: it came within ``debounce_in_ms`` of the last start/completion."""

    def __init__(self, command_name: str, debounce_ms: int, elapsed_ms: float) -> None:
        self.command_name = command_name
        self.debounce_ms = debounce_ms
        self.elapsed_ms = elapsed_ms
        super().__init__(
            f"Command '{command_name}' debounced: {elapsed_ms:.0f}ms since last run "
            f"< {debounce_ms}ms"
        )


class ConfigValidationError(CmdorcError):
    """The configuration is invalid. ``problems`` carry file, line, column and span."""

    def __init__(self, message: str, problems: Sequence[Problem] = ()) -> None:
        self.problems = list(problems)
        super().__init__(message)

    @property
    def file(self) -> str | None:
        return self.problems[0].file if self.problems else None

    @property
    def line(self) -> int | None:
        """1-based line of the first problem."""
        return self.problems[0].span.line + 1 if self.problems else None

    @property
    def column(self) -> int | None:
        """1-based column of the first problem."""
        return self.problems[0].span.column + 1 if self.problems else None


class VariableResolutionError(CmdorcError):
    """A ``{{ template }}`` could not be resolved (undefined variable, cycle, bad syntax)."""


class ExecutorError(CmdorcError):
    """The process could not be started."""


class OrchestratorShutdownError(CmdorcError):
    """The orchestrator is shutting down and takes no new work."""


class TriggerCycleError(CmdorcError):
    """An event was triggered again inside its own trigger chain."""

    def __init__(self, event_name: str, cycle_path: list[str]) -> None:
        self.event_name = event_name
        self.cycle_path = list(cycle_path)
        super().__init__(
            f"Trigger cycle detected: {' -> '.join([*cycle_path, event_name])}"
        )


class RunStateError(CmdorcError):
    """The run (or its run key's latest run) is in the wrong state for the request: a rerun
    or unlock while it is active, a cancel of a run another process owns."""


class RunNotFoundError(CmdorcError):
    """No run with that id (or run key) is recorded."""
