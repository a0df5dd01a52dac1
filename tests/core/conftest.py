"""Fixtures for the core tests."""

from __future__ import annotations

import asyncio

import corehelp
import pytest


@pytest.fixture(autouse=True)
async def _shutdown_created_orchestrators():
    """Shut down every orchestrator a test built with ``corehelp.orch_of`` (same loop)."""
    corehelp.CREATED.clear()
    yield
    created = list(corehelp.CREATED)
    corehelp.CREATED.clear()
    for orch in created:
        if not orch.is_shutdown:
            await asyncio.wait_for(orch.shutdown(timeout=5), 10)
