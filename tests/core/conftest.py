"""Fixtures for the core tests."""

from __future__ import annotations

from corehelp import shutdown_created_orchestrators  # noqa: F401 (an autouse fixture)
