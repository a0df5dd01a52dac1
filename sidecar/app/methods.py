"""The protocol's names that thin clients need without the wire types: its version, the
method and notification names, the run states and the error codes.

Standard library only (``sidecar save`` in a git hook imports this);
:mod:`sidecar.app.protocol` re-exports everything here.
"""

from __future__ import annotations

PROTOCOL_VERSION = 1
"""The version of protocol.md spoken by hosts and clients. It is part of the host socket's
name (a host of another version is never reused) and of the ``initialize`` result."""

# --------------------------------------------------------------------------- method names

M_COMMANDS = "sidecar/commands"
M_TRIGGER = "sidecar/trigger"
M_RUN = "sidecar/run"
M_WAIT = "sidecar/wait"
M_CANCEL = "sidecar/cancel"
M_STATUS = "sidecar/status"
M_HISTORY = "sidecar/history"
M_READ_OUTPUT = "sidecar/readOutput"
M_PREVIEW = "sidecar/preview"
M_TRIGGER_GRAPH = "sidecar/triggerGraph"
M_RELOAD = "sidecar/reload"
M_SET_OUTPUT_FILTER = "sidecar/setOutputFilter"
M_SAVE = "sidecar/save"
M_HOST_INFO = "sidecar/hostInfo"
M_RERUN = "sidecar/rerun"
M_UNLOCK = "sidecar/unlock"
M_CLEAN = "sidecar/clean"

M_ATTACH = "sidecar/attach"
"""relay → host, the first message of a ``sidecar serve`` relay, with the editor's stdin and
stdout as ``SCM_RIGHTS`` (protocol.md §1.5)."""
M_DETACH = "sidecar/detach"
"""host → relay: the session ended; ``params.exitCode`` is the relay's exit status."""

N_EVENT = "sidecar/event"
N_RUN_UPDATE = "sidecar/runUpdate"
N_OUTPUT_CHUNK = "sidecar/outputChunk"

# workspace/executeCommand command ids
CMD_RUN = "sidecar.run"
CMD_TRIGGER = "sidecar.trigger"
CMD_CANCEL = "sidecar.cancel"
EXECUTE_COMMANDS = (CMD_RUN, CMD_TRIGGER, CMD_CANCEL)

REQUESTS = (
    M_COMMANDS, M_TRIGGER, M_RUN, M_WAIT, M_CANCEL, M_STATUS, M_HISTORY, M_READ_OUTPUT,
    M_PREVIEW, M_TRIGGER_GRAPH, M_RELOAD, M_SET_OUTPUT_FILTER, M_SAVE, M_HOST_INFO, M_RERUN,
    M_UNLOCK, M_CLEAN,
)
NOTIFICATIONS = (N_EVENT, N_RUN_UPDATE, N_OUTPUT_CHUNK)

# --------------------------------------------------------------------------- run states

RUN_STATES = ("pending", "running", "success", "failed", "cancelled", "lost")
"""The run states on the wire (protocol.md §3): the core's ``RunState`` values."""
FINAL_STATES = ("success", "failed", "cancelled", "lost")
"""The states a run never leaves."""

# --------------------------------------------------------------------------- error codes

E_PARSE_ERROR = -32700
E_INVALID_REQUEST = -32600
E_METHOD_NOT_FOUND = -32601
E_INVALID_PARAMS = -32602
E_INTERNAL = -32603
E_COMMAND_NOT_FOUND = -32010
"""No command of that name in the current configuration."""
E_CONCURRENCY_LIMIT = -32011
"""``max_concurrent`` reached and ``on_retrigger = "ignore"``."""
E_DEBOUNCED = -32012
"""Refused: within ``debounce_in_ms`` of the command's last start/completion."""
E_RUN_NOT_FOUND = -32013
"""No run with that id is known (never existed, or dropped from history)."""
E_NO_VALID_CONFIG = -32014
"""No configuration loaded (none found, or broken since start)."""
E_SHUTTING_DOWN = -32015
"""The server is shutting down (after ``shutdown``, or the orchestrator stopped)."""
E_VARIABLE_ERROR = -32016
"""A ``{{ variable }}`` of the command could not be resolved."""
E_TRIGGER_CYCLE = -32017
"""The trigger would re-enter its own chain."""
E_RUN_STATE = -32018
"""The run (or its key's latest run) is in the wrong state for the request: rerun of an active
run, unlock of a key with no finished run, cancel of a run another process owns."""

__all__ = [
    "PROTOCOL_VERSION", "M_COMMANDS", "M_TRIGGER", "M_RUN", "M_WAIT", "M_CANCEL", "M_STATUS",
    "M_HISTORY", "M_READ_OUTPUT", "M_PREVIEW", "M_TRIGGER_GRAPH", "M_RELOAD",
    "M_SET_OUTPUT_FILTER", "M_SAVE", "M_HOST_INFO", "M_RERUN", "M_UNLOCK", "M_CLEAN", "M_ATTACH", "M_DETACH", "N_EVENT",
    "N_RUN_UPDATE", "N_OUTPUT_CHUNK",
    "CMD_RUN", "CMD_TRIGGER", "CMD_CANCEL", "EXECUTE_COMMANDS", "REQUESTS", "NOTIFICATIONS",
    "RUN_STATES", "FINAL_STATES", "E_PARSE_ERROR", "E_INVALID_REQUEST", "E_METHOD_NOT_FOUND",
    "E_INVALID_PARAMS", "E_INTERNAL", "E_COMMAND_NOT_FOUND", "E_CONCURRENCY_LIMIT", "E_DEBOUNCED",
    "E_RUN_NOT_FOUND", "E_NO_VALID_CONFIG", "E_SHUTTING_DOWN", "E_VARIABLE_ERROR",
    "E_TRIGGER_CYCLE", "E_RUN_STATE",
]
