"""Every test gets a socket directory of its own (``XDG_RUNTIME_DIR``), so hosts started by
one test are never found by another; hosts still running when a test ends are stopped."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator

import psutil
import pytest
from proctools import wait_gone

from sidecar.host.locate import host_pid


def stop_hosts(runtime_dir: str, timeout: float = 5.0) -> list[int]:
    """SIGTERM every host whose lock is under ``runtime_dir``; SIGKILL what is left after
    ``timeout``. Returns the pids that were running."""
    sockets = os.path.join(runtime_dir, "cmdsidecar")
    pids = []
    if os.path.isdir(sockets):
        for name in os.listdir(sockets):
            if name.endswith(".lock"):
                pid = host_pid(os.path.join(sockets, name))
                if pid is not None:
                    pids.append(pid)
    procs = []
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc = psutil.Process(pid)
            proc.send_signal(signal.SIGTERM)
            procs.append(proc)
    for proc in procs:
        if not wait_gone(proc, timeout):
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
    return pids


@pytest.fixture(autouse=True)
def runtime_dir(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="sc", dir="/tmp")  # short: socket paths are limited
    monkeypatch.setenv("XDG_RUNTIME_DIR", path)
    yield path
    stop_hosts(path)
    shutil.rmtree(path, ignore_errors=True)
