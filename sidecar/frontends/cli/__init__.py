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

        return job(args[1:])
    from .main import main as full

    return full(args)


__all__ = ["main"]
