"""What every ``sidecar`` subcommand shares: exit codes, errors, output, the workspace and its
config files, ``--var`` pairs.

Standard library only (with :mod:`sidecar.core.workspace` and :mod:`sidecar.host.locate`):
``sidecar save`` imports this on its way to the host.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from sidecar.core.workspace import CONFIG_FILE_NAMES, config_file_in
from sidecar.host.locate import Workspace

if TYPE_CHECKING:
    from pathlib import Path

EXIT_USAGE = 2
EXIT_CONFIG = 3
EXIT_TIMEOUT = 124
EXIT_INTERRUPTED = 130


class CliError(Exception):
    """A message for stderr and the exit code that goes with it."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def err(message: str) -> None:
    sys.stderr.write(f"sidecar: {message}\n")


def out(text: str) -> None:
    sys.stdout.write(text + "\n")


def workspace_of(args: argparse.Namespace) -> Workspace:
    """The workspace of the command line (protocol.md §1.1): ``--workspace``, else the
    nearest ancestor of the working directory holding a config file, else the working
    directory; with the ``--config`` files."""
    return Workspace.of_cwd(workspace=getattr(args, "workspace", None),
                            config=getattr(args, "config", None))


def config_files(ws: Workspace) -> list[str]:
    """The workspace's config files: the explicit ones (which must exist), else the one
    discovered in its root; a CliError (exit 3) when there is none."""
    if ws.config_files:
        for f in ws.config_files:
            if not os.path.isfile(f):
                raise CliError(f"config file not found: {f}", EXIT_CONFIG)
        return list(ws.config_files)
    found = config_file_in(ws.root)
    if found is None:
        raise CliError(f"no config found: expected {' or '.join(CONFIG_FILE_NAMES)} in "
                       f"{ws.root} or a directory above it (or pass --config FILE; "
                       "`sidecar init` writes a sample)", EXIT_CONFIG)
    return [found]


def config_paths(args: argparse.Namespace) -> list[Path]:
    """:func:`config_files` of the command line's workspace, as paths."""
    from pathlib import Path

    return [Path(p) for p in config_files(workspace_of(args))]


def parse_vars(pairs: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CliError(f"--var expects NAME=VALUE, got {pair!r}", EXIT_USAGE)
        out[key] = value
    return out
