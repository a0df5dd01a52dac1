"""Waiting for processes the tests did not start (hosts, their runs): gone means exited, or a
zombie (this machine's init may reap orphans seconds later)."""

from __future__ import annotations

import time

import psutil


def gone(proc: psutil.Process) -> bool:
    try:
        return proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_gone(pid: int | psutil.Process, timeout: float = 15.0) -> bool:
    """True once the process has exited (or is a zombie); False after ``timeout``."""
    try:
        proc = pid if isinstance(pid, psutil.Process) else psutil.Process(pid)
    except psutil.NoSuchProcess:
        return True
    deadline = time.monotonic() + timeout
    while not gone(proc):
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        try:
            proc.wait(min(left, 0.05))  # returns at once for a child; polls otherwise
        except psutil.TimeoutExpired:
            pass
    return True
