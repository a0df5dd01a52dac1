"""What every ``sidecar`` subcommand shares: exit codes, errors, output, config paths,
``--var`` pairs."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from sidecar.core.workspace import CONFIG_FILE_NAMES, find_config_files

if TYPE_CHECKING:
    from pathlib import Path

EXIT_USAGE = 2
EXIT_CONFIG = 3
EXIT_INTERRUPTED = 130

class CliError(Exception):
    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def err(message: str) -> None:
    sys.stderr.write(f"sidecar: {message}\n")


def out(text: str) -> None:
    sys.stdout.write(text + "\n")


def config_paths(args: argparse.Namespace) -> list[Path]:
    from pathlib import Path

    if args.config:
        return [Path(p) for p in args.config]
    found = find_config_files(Path.cwd())
    if not found:
        raise CliError(f"no config found: expected {' or '.join(CONFIG_FILE_NAMES)} in "
                       f"{Path.cwd()} (or pass --config FILE; `sidecar init` writes a sample)",
                       EXIT_CONFIG)
    return found


def parse_vars(pairs: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CliError(f"--var expects NAME=VALUE, got {pair!r}", EXIT_USAGE)
        out[key] = value
    return out


# ----------------------------------------------------------------------------------- sessions
