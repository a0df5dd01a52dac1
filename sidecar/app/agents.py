"""The rules of agent sessions: what an LLM agent may do in a workspace.

A session opened with ``initializationOptions.agent: true`` (``sidecar mcp`` opens one) is an
agent session; :class:`~sidecar.app.service.Service` applies these rules to each of its
requests (protocol.md §2.1):

- only declared commands whose ``agent`` key is true exist for it: any other command, and any
  run of one, is reported as unknown (``CommandNotFound``, ``RunNotFound``);
- a trigger never starts or cancels a hidden command directly (skipped with reason
  ``agent_hidden``; the chains the config declares after a visible command still run), and
  auto-event and lifecycle names (``command_*:X``, ``flow_*:X``, ``orchestrator_*``) are not
  events an agent may fire;
- runtime variables must be ones the command's templates use (for a trigger: those of a
  command it starts), at most :data:`MAX_VARS` of them, each value a string of at most
  :data:`MAX_VALUE_CHARS` characters (NUL and lone surrogates are refused for every session,
  and values are passed to the shell as data, never code: :mod:`sidecar.core.shellsafe`);
- the requests that change the workspace's state beyond runs (``sidecar/save``,
  ``sidecar/reload``, ``sidecar/clean``, ``sidecar/unlock``) and ``sidecar/triggerGraph``
  (which names every command) are refused with ``MethodNotFound``.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping

from sidecar.core.triggers import LIFECYCLE_EVENTS, split_auto_event

from . import protocol as P

HIDDEN = "agent_hidden"
"""The ``skipped`` reason of a hidden command in an agent's trigger result."""
MAX_VALUE_CHARS = 4096
"""The longest runtime variable value an agent may pass, in characters."""
MAX_VARS = 64
"""The most runtime variables one agent request may pass."""
REFUSED_METHODS = (P.M_SAVE, P.M_RELOAD, P.M_CLEAN, P.M_UNLOCK, P.M_TRIGGER_GRAPH)
"""Requests an agent session may not make."""

_FLOW_EVENT = re.compile(r"flow_[A-Za-z_]+:")


def refused_method(method: str) -> P.SidecarRpcError:
    return P.SidecarRpcError(P.E_METHOD_NOT_FOUND,
                             f"{method} is not available to agent sessions")


def check_event(event: str) -> None:
    """Refuse the names of events only the orchestrator fires."""
    if (split_auto_event(event) is not None or _FLOW_EVENT.match(event)
            or event.startswith("orchestrator_") or event in LIFECYCLE_EVENTS):
        raise P.InvalidParams("event", f"{event!r} is an event the orchestrator fires "
                              "itself (command_*:X, flow_*:X, orchestrator_*); agents fire "
                              "only the config's own triggers")


def check_vars(vars: Mapping[str, str], accepted: Collection[str], whom: str) -> None:
    """Refuse variables ``whom`` does not use, too many, and values that are too long."""
    if len(vars) > MAX_VARS:
        raise P.InvalidParams("vars", f"at most {MAX_VARS} variables")
    for name, value in vars.items():
        if name not in accepted:
            known = ", ".join(sorted(accepted)) or "none"
            raise P.InvalidParams(f"vars.{name}", f"unknown variable {name!r}: {whom} uses "
                                  f"{known}")
        if len(value) > MAX_VALUE_CHARS:
            raise P.InvalidParams(f"vars.{name}", f"longer than {MAX_VALUE_CHARS} characters "
                                  f"({len(value)})")


__all__ = ["HIDDEN", "MAX_VALUE_CHARS", "MAX_VARS", "REFUSED_METHODS", "check_event",
           "check_vars", "refused_method"]
