"""What every ``sidecar`` parser shares, ``sidecar job``'s too: the help formatter and
durations (``--ttl 30m``). Standard library only."""

from __future__ import annotations

import argparse
import os
import sys


class Formatter(argparse.HelpFormatter):
    """argparse's help formatter, sized as :func:`shutil.get_terminal_size` would without
    importing :mod:`shutil` (and with it bz2 and lzma) on every start: argparse makes one
    for every argument it adds."""

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24,
                 width: int | None = None) -> None:
        if width is None:
            try:
                width = int(os.environ.get("COLUMNS", ""))
            except ValueError:
                try:
                    width = os.get_terminal_size(sys.__stdout__.fileno()).columns \
                        if sys.__stdout__ is not None else 80
                except (AttributeError, ValueError, OSError):
                    width = 80
            width = (width or 80) - 2
        super().__init__(prog, indent_increment, max_help_position, width)


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration_secs(text: str) -> int:
    """A duration as whole seconds: a number, or one with a suffix ``s``, ``m``, ``h`` or
    ``d`` (``90``, ``30m``, ``2h``), the number read as ``int()`` reads it (``+10``, ``1_0``;
    orchesjob's reading); positive. ValueError otherwise, saying what is expected."""
    value = text.strip().lower()
    unit = _UNITS.get(value[-1:], 0) if value else 0
    try:
        seconds = int(value[:-1] if unit else value) * (unit or 1)
    except ValueError:
        seconds = 0
    if seconds <= 0:
        raise ValueError(f"expected a positive number of seconds, or one with s, m, h or d "
                         f"(30m, 2h), got {text!r}")
    return seconds


def parse_duration(text: str) -> int:
    """:func:`duration_secs` for argparse's ``type=`` (a bad value is a usage error, exit 2)."""
    try:
        return duration_secs(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None

