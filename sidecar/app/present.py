"""Runs in words: the one human label of a run's state, and of why a run started.

Used by every frontend that shows runs to people: the CLI's lines, the LSP's ``$/progress``
end message and code lenses.
"""

from __future__ import annotations

from collections.abc import Sequence

from sidecar.core.durations import format_duration

ICONS = {"success": "✓", "failed": "✗", "cancelled": "⊘", "lost": "⚠", "running": "▶",
         "pending": "…"}


def run_label(state: str, exit_code: int | None, duration_secs: float | None) -> str:
    """``success in 1.2s``, ``failed in 3.4s (exit 2)``, ``cancelled in 0.5s``."""
    text = state
    if duration_secs is not None:
        text += f" in {format_duration(duration_secs)}"
    if state == "failed" and exit_code is not None:
        text += f" (exit {exit_code})"
    return text


def icon(state: str) -> str:
    """``✓`` success, ``✗`` failed, ``⊘`` cancelled, ``⚠`` lost, ``▶`` running, ``…``
    pending."""
    return ICONS.get(state, "?")


def why_label(trigger_chain: Sequence[str]) -> str:
    """Why a run started: its trigger chain (``save → command_success:Lint``), or
    ``manual run``."""
    return " → ".join(trigger_chain) if trigger_chain else "manual run"
