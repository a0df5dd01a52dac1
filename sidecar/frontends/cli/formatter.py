"""argparse's help formatter for every ``sidecar`` parser (standard library only)."""

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
