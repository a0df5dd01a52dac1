"""What the service-layer tests share: a real host of a workspace, started in the test's
event loop."""

from __future__ import annotations

from pathlib import Path

from sidecar.host.host import Host


async def started_host(root: Path, config: str) -> Host:
    """A host of ``root`` with ``config`` as its ``sidecar.toml``, loaded and started (close it
    with ``await host.close()``)."""
    (root / "sidecar.toml").write_text(config)
    host = Host(root)
    assert host.reload().ok
    started = host.start()
    assert started is not None
    await started
    return host
