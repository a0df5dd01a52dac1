"""A duration in words for people (``452ms``, ``2.4s``, ``1m 23s``).

Standard library only and no asyncio: the command line's thin clients print run durations
with it (re-exported by :mod:`sidecar.core.runs` and the core's API).
"""

from __future__ import annotations


def format_duration(secs: float) -> str:
    """``452ms``, ``2.4s``, ``1m 23s``, ``1h 5m``, ``1d 3h``."""
    if secs < 1:
        return f"{secs * 1000:.0f}ms"
    if secs < 60:
        return f"{secs:.1f}s"
    mins, s = divmod(int(secs), 60)
    if mins < 60:
        return f"{mins}m {s}s"
    hrs, mins = divmod(mins, 60)
    if hrs < 24:
        return f"{hrs}h {mins}m"
    days, hrs = divmod(hrs, 24)
    if days < 7:
        return f"{days}d {hrs}h"
    weeks, days = divmod(days, 7)
    return f"{weeks}w {days}d"
