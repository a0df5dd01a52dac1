"""The orchestrator core: a protocol-agnostic asyncio library (never imports pygls).

Its public names are imported on first use (``from sidecar.core import CommandOrchestrator``
works as usual): importing one light module of the core, such as :mod:`.workspace`, does not
import the rest.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .config import CommandConfig, OutputStorageConfig, RunnerConfig
    from .durations import format_duration
    from .errors import (
        CmdorcError,
        CommandNotFoundError,
        ConcurrencyLimitError,
        ConfigValidationError,
        DebounceError,
        ExecutorError,
        OrchestratorShutdownError,
        RunNotFoundError,
        RunStateError,
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
    )
    from .triggers import TriggerContext
    from .workspace import find_config_files

_MODULES = {
    "CommandConfig": "config",
    "OutputStorageConfig": "config",
    "RunnerConfig": "config",
    "CmdorcError": "errors",
    "CommandNotFoundError": "errors",
    "ConcurrencyLimitError": "errors",
    "ConfigValidationError": "errors",
    "DebounceError": "errors",
    "ExecutorError": "errors",
    "OrchestratorShutdownError": "errors",
    "RunNotFoundError": "errors",
    "RunStateError": "errors",
    "SidecarError": "errors",
    "TriggerCycleError": "errors",
    "VariableResolutionError": "errors",
    "Event": "events",
    "OutputEvent": "events",
    "RunEvent": "events",
    "Subscription": "events",
    "TriggerEvent": "events",
    "load_config": "loading",
    "load_configs": "loading",
    "CommandOrchestrator": "orchestrator",
    "Problem": "problems",
    "Severity": "problems",
    "Span": "problems",
    "CommandStatus": "runs",
    "ResolvedCommand": "runs",
    "RunHandle": "runs",
    "RunResult": "runs",
    "RunSnapshot": "runs",
    "RunState": "runs",
    "TriggerResult": "runs",
    "format_duration": "durations",
    "TriggerContext": "triggers",
    "find_config_files": "workspace",
}


def __getattr__(name: str) -> Any:
    module = _MODULES.get(name)
    if module is None:
        raise AttributeError(f"module 'sidecar.core' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "CmdorcError", "CommandConfig", "CommandNotFoundError", "CommandOrchestrator",
    "CommandStatus", "ConcurrencyLimitError", "ConfigValidationError", "DebounceError",
    "Event", "ExecutorError", "OrchestratorShutdownError", "OutputEvent", "OutputStorageConfig",
    "Problem", "ResolvedCommand", "RunEvent", "RunHandle", "RunNotFoundError", "RunResult",
    "RunSnapshot", "RunState", "RunStateError",
    "RunnerConfig", "Severity", "SidecarError", "Span", "Subscription", "TriggerContext",
    "TriggerCycleError", "TriggerEvent", "TriggerResult", "VariableResolutionError",
    "find_config_files", "format_duration", "load_config", "load_configs",
]
