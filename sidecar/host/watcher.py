"""The host watches its config files on disk and reloads when one changes, whoever changed it
(an editor's save, ``git checkout``, another tool).

File events come from :mod:`watchfiles` (inotify on Linux, no polling). The directories of the
config files are watched, not the files: editors and git replace a file by renaming a new one
over it. A change that leaves every file's text as the host last read it (an editor's save the
host has already reloaded for) reloads nothing.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

from .host import Host

logger = logging.getLogger("sidecar.host")


def watched_dirs(host: Host) -> set[str]:
    """The root (where config files are discovered) and every config file's directory."""
    dirs = {str(host.root)}
    dirs.update(str(Path(p).parent) for p in host.config_files.files)
    return {d for d in dirs if os.path.isdir(d)}


async def watch_config_files(host: Host, stop: asyncio.Event) -> None:
    """Reload ``host`` whenever one of its config files changes, until ``stop`` is set."""
    import watchfiles

    files = host.config_files
    while not stop.is_set():
        dirs = watched_dirs(host)
        try:
            async for changes in watchfiles.awatch(*dirs, stop_event=stop, recursive=False,
                                                   debounce=200, step=20,
                                                   rust_timeout=1000, yield_on_timeout=False):
                paths = {Path(path) for _, path in changes}
                if not any(files.is_config_file(p) for p in paths):
                    continue
                if files.changed_on_disk():
                    logger.info("config changed on disk: reloading")
                    host.reload()
                if watched_dirs(host) != dirs:
                    break  # a config file moved to another directory: watch again
        except (OSError, RuntimeError) as exc:
            logger.warning("cannot watch the config files (%s); reload with a save", exc)
            return
