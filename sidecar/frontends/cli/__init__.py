"""The ``sidecar`` command line: a frontend over the service layer (see :mod:`.main`).

``sidecar job …`` goes to :mod:`.job` before anything else is imported (no asyncio, no core:
cron and SSH callers start it often and want it fast).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["job"]:
        from .job import main as job

        code = job(args[1:])
        if argv is None:  # the `sidecar` executable: exit now, without tearing down
            _exit(code)  # the interpreter (that would cost `sidecar job` a third of its time)
        return code
    from .main import main as full

    return full(args)


def _exit(code: int) -> None:
    """Flush what was printed and end the process at once."""
    import os

    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can be said
            code = code or 1
    os._exit(code)


__all__ = ["main"]
