"""The orchestrator core: a protocol-agnostic asyncio library (never imports pygls)."""

from __future__ import annotations

from .config import (
    CommandConfig,
    OutputStorageConfig,
    RunnerConfig,
    find_config_files,
)
from .errors import (
    CmdorcError,
    CommandNotFoundError,
    ConcurrencyLimitError,
    ConfigValidationError,
    DebounceError,
    ExecutorError,
    OrchestratorShutdownError,
    SidecarError,
    TriggerCycleError,
    VariableResolutionError,
)
from .events import Event, OutputEvent, RunEvent, Subscription, TriggerEvent
from .loading import load_config, load_configs
from .orchestrator import CommandOrchestrator
from .problems import Problem, Severity, Span
from .runs import (
    CommandStatus,
    ResolvedCommand,
    RunHandle,
    RunResult,
    RunSnapshot,
    RunState,
    TriggerResult,
    format_duration,
)
from .triggers import TriggerContext

__all__ = [
    "CmdorcError", "CommandConfig", "CommandNotFoundError", "CommandOrchestrator",
    "CommandStatus", "ConcurrencyLimitError", "ConfigValidationError", "DebounceError",
    "Event", "ExecutorError", "OrchestratorShutdownError", "OutputEvent", "OutputStorageConfig",
    "Problem", "ResolvedCommand", "RunEvent", "RunHandle", "RunResult", "RunSnapshot", "RunState",
    "RunnerConfig", "Severity", "SidecarError", "Span", "Subscription", "TriggerContext",
    "TriggerCycleError", "TriggerEvent", "TriggerResult", "VariableResolutionError",
    "find_config_files", "format_duration", "load_config", "load_configs",
]
