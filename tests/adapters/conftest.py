"""Fixtures for the adapter tests: they share the core tests' helpers (``corehelp``)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "core"))

from corehelp import shutdown_created_orchestrators  # noqa: F401 (an autouse fixture)
