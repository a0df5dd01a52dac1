"""Loading a configuration: read the files, check and merge them, raise on errors.

``load_config``/``load_configs`` are cmdorc's entry points. This module sits above
:mod:`sidecar.core.config` (reading and validating one file) and :mod:`sidecar.core.checks`
(checking and merging several), so neither of those imports the other.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from .checks import check_files
from .config import ConfigSource, RunnerConfig, read_source
from .errors import ConfigValidationError
from .problems import Severity

logger = logging.getLogger("sidecar.config")


def load_configs(paths: Sequence[ConfigSource]) -> RunnerConfig:
    """Load and merge several config files (cmdorc's merge rules).

    Variables and output storage merge last-in-wins with a warning; a command name defined
    twice is a :class:`ConfigValidationError`. Errors carry positions (``exc.problems``).
    """
    files = [read_source(p) for p in paths]
    if not files:
        raise ConfigValidationError("No config files given")
    report = check_files(files)
    errors = [p for p in report.problems if p.severity == Severity.ERROR]
    for p in report.problems:
        if p.code == "variable-override":
            logger.warning("%s", p.message)
    if errors or report.config is None:
        raise ConfigValidationError(
            "Invalid configuration:\n" + "\n".join(p.format() for p in errors), errors
        )
    return report.config


def load_config(path: ConfigSource) -> RunnerConfig:
    """Load one config file."""
    return load_configs([path])
