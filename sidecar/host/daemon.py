"""The host process: one per workspace, shared by every client, until it is idle.

``python -m sidecar.host --root DIR [--config FILE…] [--idle-timeout S] [--ready-fd N]`` (what
:func:`sidecar.host.locate.spawn_host` starts, detached, with its output in the workspace's
log). It

1. takes the workspace's lock (``flock``, held for its whole life: a second host of the same
   workspace exits at once, and a socket file without a live lock holder is stale);
2. listens on the workspace's socket (mode 0600, in the 0700 socket directory) and tells
   whoever started it that it is ready (a line on ``--ready-fd``);
3. serves every connection as a session of its one :class:`~sidecar.host.host.Host`
   (``session_handler``: the LSP frontend's, see ``sidecar/host/__main__.py``);
4. reloads the config when one of its files changes on disk (:mod:`.watcher`);
5. exits after ``idle_timeout`` seconds with no session attached and no run active, or on
   SIGTERM/SIGINT/SIGHUP (``sidecar host stop``): runs are cancelled (SIGTERM → grace →
   SIGKILL of each process group), then the socket is removed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import logging
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from sidecar.adapters.local_process import use_pidfd_child_watcher
from sidecar.app.methods import FINAL_STATES
from sidecar.core.events import Event, RunEvent

from .host import Host
from .listener import Listener
from .locate import DEFAULT_IDLE_TIMEOUT, Workspace, socket_dir
from .transport import Connection

logger = logging.getLogger("sidecar.host")

SessionHandler = Callable[[Host, Connection], Awaitable[int]]

IDLE_TIMEOUT_ENV = "SIDECAR_HOST_IDLE_TIMEOUT"


class HostProcess:
    """The lifetime of one host process (see the module's docstring)."""

    def __init__(self, ws: Workspace, session_handler: SessionHandler, *,
                 idle_timeout: float | None = None) -> None:
        self.ws = ws
        self.session_handler = session_handler
        self.idle_timeout = idle_timeout
        self.host = Host(ws.root, list(ws.config_files) or None)
        self._stop: asyncio.Event | None = None
        self._idle_timer: asyncio.TimerHandle | None = None
        self._lock_fd: int | None = None
        self.listener: Listener | None = None

    # ------------------------------------------------------------------ start
    def take_lock(self) -> bool:
        """The workspace's lock; False when another host holds it."""
        fd = os.open(self.ws.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.set_inheritable(fd, False)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd
        return True

    def bind(self) -> socket.socket:
        """Listen on the workspace's socket, replacing a stale one (we hold the lock, so
        nobody answers on it)."""
        path = self.ws.socket_path
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            sock.bind(path)
        finally:
            os.umask(old)
        os.chmod(path, 0o600)
        sock.listen(128)
        return sock

    def _idle_secs(self) -> float:
        if self.idle_timeout is not None:
            return self.idle_timeout
        env = os.environ.get(IDLE_TIMEOUT_ENV)
        if env:
            try:
                return float(env)
            except ValueError:
                logger.warning("ignoring %s=%r (not a number)", IDLE_TIMEOUT_ENV, env)
        config = self.host.config
        configured = config.host.idle_timeout_secs if config is not None else None
        return configured if configured is not None else DEFAULT_IDLE_TIMEOUT

    # ------------------------------------------------------------------ run
    async def run(self, sock: socket.socket, ready: Callable[[], None]) -> int:
        loop = asyncio.get_running_loop()
        use_pidfd_child_watcher(loop)
        self._stop = asyncio.Event()
        host = self.host
        host.socket_path = self.ws.socket_path
        host.reload()
        host.start()
        host.add_listener(self._on_event)
        self.listener = listener = Listener(sock, lambda conn: self.session_handler(host, conn),
                                            self._check_attach, self._check_idle)
        listener.start()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.add_signal_handler(sig, self._request_stop, sig.name)
        from .watcher import watch_config_files

        watcher = asyncio.ensure_future(watch_config_files(host, self._stop))
        logger.info("host %d serving %s on %s", os.getpid(), self.ws.describe(),
                    self.ws.socket_path)
        ready()
        self._check_idle()
        try:
            await self._stop.wait()
        finally:
            listener.stop()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.ws.socket_path)
            await host.close()
            watcher.cancel()
            await asyncio.wait([watcher], timeout=2.0)
            for session in list(host.sessions):
                session.end()
            await listener.wait_closed(3.0)
        logger.info("host %d stopped", os.getpid())
        return 0

    def _request_stop(self, why: str) -> None:
        logger.info("stopping: %s", why)
        if self._stop is not None:
            self._stop.set()

    def _check_attach(self, params: dict[str, Any]) -> str | None:
        root = params.get("root")
        files = params.get("configFiles") or []
        if not isinstance(root, str) or not isinstance(files, list):
            return "bad sidecar/attach params"
        asked = Workspace(root, [str(f) for f in files])
        if asked.key != self.ws.key:
            return (f"this host serves {self.ws.describe()}, not {asked.describe()}")
        return None

    # ------------------------------------------------------------------ idle exit
    def _on_event(self, ev: Event) -> None:
        # Only a run starting or ending changes whether the host is idle (not its output,
        # nor its other transitions: this runs for every event).
        if isinstance(ev, RunEvent) and (ev.previous is None or ev.state in FINAL_STATES):
            self._check_idle()

    @property
    def idle(self) -> bool:
        """No connection open (or being accepted) and the host idle."""
        return (self.listener is not None and not self.listener.connections
                and self.host.idle)

    def _check_idle(self) -> None:
        idle = self.idle
        if idle and self._idle_timer is None and self._stop is not None:
            secs = self._idle_secs()
            self._idle_timer = asyncio.get_running_loop().call_later(secs, self._idle_expired)
        elif not idle and self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None

    def _idle_expired(self) -> None:
        self._idle_timer = None
        if self.listener is not None:
            self.listener.accept_pending()  # a client connecting right now keeps us
        if self.idle:
            self._request_stop(f"idle for {self._idle_secs():g} s")
        else:
            self._check_idle()


def main(session_handler: SessionHandler, argv: Sequence[str] | None = None) -> int:
    """The host process serving each connection with ``session_handler``."""
    parser = argparse.ArgumentParser(prog="python -m sidecar.host",
                                     description="a workspace's host (started on demand)")
    parser.add_argument("--root", required=True)
    parser.add_argument("--config", action="append", default=[])
    parser.add_argument("--idle-timeout", type=float)
    parser.add_argument("--ready-fd", type=int)
    parser.add_argument("--log-level", default=os.environ.get("SIDECAR_LOG") or "INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=getattr(logging, args.log_level.upper(),
                                                         logging.INFO),
                        format=f"%(asctime)s [{os.getpid()}] %(levelname)s %(name)s: "
                               "%(message)s")
    logging.getLogger("pygls").setLevel(logging.WARNING)
    ws = Workspace(args.root, args.config)
    socket_dir()  # checks its mode
    proc = HostProcess(ws, session_handler, idle_timeout=args.idle_timeout)

    def ready(word: bytes = b"ready\n") -> None:
        if args.ready_fd is not None:
            with contextlib.suppress(OSError):
                os.write(args.ready_fd, word)
                os.close(args.ready_fd)
            args.ready_fd = None

    if not proc.take_lock():
        logger.info("a host already serves %s", ws.describe())
        ready(b"running\n")
        return 0
    sock = proc.bind()
    return asyncio.run(proc.run(sock, ready))
