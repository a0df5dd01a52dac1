"""Where a workspace is: its config file names, the files of a directory, and the root of a
working directory (the nearest ancestor holding a config file, the way git finds its
repository).

Standard library only and no :mod:`pathlib` at import time: the command line's thin clients
import this before anything else.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

CONFIG_FILE_NAMES = ("sidecar.toml", "cmdorc.toml")
"""The config files looked for in a workspace root, in order of preference."""


def config_file_in(directory: str) -> str | None:
    """The path of ``sidecar.toml`` or else ``cmdorc.toml`` in ``directory``, or None."""
    for name in CONFIG_FILE_NAMES:
        candidate = os.path.join(directory, name)
        if os.path.isfile(candidate):
            return candidate
    return None


def find_config_files(directory: str | os.PathLike[str]) -> list[Path]:
    """``sidecar.toml`` or else ``cmdorc.toml`` in ``directory`` (empty list if neither)."""
    from pathlib import Path

    found = config_file_in(os.fspath(directory))
    return [Path(found)] if found is not None else []


def find_root(start: str) -> str | None:
    """The nearest directory from ``start`` upwards that holds a config file, or None."""
    directory = os.path.abspath(start)
    while True:
        if config_file_in(directory) is not None:
            return directory
        parent = os.path.dirname(directory)
        if parent == directory:
            return None
        directory = parent
