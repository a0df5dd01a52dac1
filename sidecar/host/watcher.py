"""The host watches its config files on disk and reloads when one changes, whoever changed it
(an editor's save, ``git checkout``, another tool).

File events come from :mod:`watchfiles` (inotify on Linux, no polling). The directories of the
config files are watched, not the files: editors and git replace a file by renaming a new one
over it. A change that leaves every file's text as the host last read it (an editor's save the
host has already reloaded for) reloads nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
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
    """Reload ``host`` whenever one of its config files changes, until ``stop`` is set.

    The watching itself runs in a daemon thread (it never holds up the host's exit); changes
    are handled on the event loop."""
    import threading

    import watchfiles

    loop = asyncio.get_running_loop()
    files = host.config_files
    halt = threading.Event()
    changed: asyncio.Queue[set[str] | None] = asyncio.Queue()

    def watch(dirs: set[str]) -> None:
        try:
            for changes in watchfiles.watch(*dirs, stop_event=halt, recursive=False,
                                            debounce=200, step=20, rust_timeout=500,
                                            yield_on_timeout=False, raise_interrupt=False):
                loop.call_soon_threadsafe(changed.put_nowait, {path for _, path in changes})
        except Exception as exc:
            logger.warning("cannot watch the config files (%s); reload with a save", exc)
        finally:
            with contextlib.suppress(RuntimeError):  # the loop is closed
                loop.call_soon_threadsafe(changed.put_nowait, None)

    stopping = asyncio.ensure_future(stop.wait())
    try:
        while not stop.is_set():
            dirs = watched_dirs(host)
            halt.clear()
            threading.Thread(target=watch, args=(dirs,), name="sidecar-config-watch",
                             daemon=True).start()
            while True:
                got = asyncio.ensure_future(changed.get())
                await asyncio.wait([got, stopping], return_when=asyncio.FIRST_COMPLETED)
                if not got.done():
                    got.cancel()
                    return
                paths = got.result()
                if paths is None:
                    return  # the watcher failed (logged)
                if not any(files.is_config_file(Path(p)) for p in paths):
                    continue
                if files.changed_on_disk():
                    logger.info("config changed on disk: reloading")
                    host.reload()
                if watched_dirs(host) != dirs:
                    halt.set()  # a config file moved to another directory: watch again
                    while await changed.get() is not None:
                        pass
                    break
    finally:
        halt.set()
        stopping.cancel()
