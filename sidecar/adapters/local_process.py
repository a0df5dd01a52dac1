"""The local :class:`~sidecar.core.ports.Executor`: each run a child process of this one.

Own process group per run, streamed output, cleanup that cannot be skipped.

* Each run is started with ``start_new_session=True``: its own session and process group, so
  the whole tree can be signalled at once. stdin is ``/dev/null``; stderr goes to stdout.
* Commands without shell syntax are exec'd directly; others run under ``/bin/sh -c``.
* :meth:`Process.terminate` sends SIGTERM to the group, waits ``grace`` seconds, then SIGKILL.
  When the leader exits on its own, whatever is left in its group is terminated the same way,
  so a run never leaves background processes behind.
* A *reaper* process (one per host process, started with the first run) holds the list of live
  process groups on a pipe; if the host dies, even by SIGKILL, the pipe closes and the reaper
  terminates every group still registered. (A child that calls ``setsid`` itself leaves our
  group and escapes this, as with any process-group based cleanup.)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping, Sequence

from sidecar.core.ports import DEFAULT_GRACE

_SHELL = "/bin/sh"


def _signal_group(pgid: int, sig: int) -> bool:
    """Send ``sig`` to the group; False if the group no longer exists."""
    try:
        os.killpg(pgid, sig)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return False


def group_alive(pgid: int) -> bool:
    return _signal_group(pgid, 0)


# --------------------------------------------------------------------------------------------
# Reaper: kills registered process groups when the host process dies
# --------------------------------------------------------------------------------------------

_REAPER_CODE = r"""
import fcntl, os, signal, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
fcntl.fcntl(0, fcntl.F_SETFL, fcntl.fcntl(0, fcntl.F_GETFL) | os.O_NONBLOCK)
groups = set()
buf = b""
eof = False
while not eof:
    # Polling (rather than blocking on the pipe) keeps registration cheap for the host: a
    # write does not wake this process up.
    time.sleep(float(sys.argv[2]))
    while True:
        try:
            data = os.read(0, 65536)
        except BlockingIOError:
            break
        if not data:
            eof = True
            break
        buf += data
    *lines, buf = buf.split(b"\n")
    for line in lines:
        if line[:1] == b"+":
            groups.add(int(line[1:]))
        elif line[:1] == b"-":
            groups.discard(int(line[1:]))
def kill(sig):
    alive = set()
    for g in groups:
        try:
            os.killpg(g, sig)
            alive.add(g)
        except OSError:
            pass
    return alive
groups = kill(signal.SIGTERM)
deadline = time.monotonic() + float(sys.argv[1])
while groups and time.monotonic() < deadline:
    time.sleep(0.05)
    groups = kill(0)
kill(signal.SIGKILL)
"""
REAPER_POLL_SECS = 0.2


class _Reaper:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._pid = 0
        self._pending = bytearray()

    def _ensure(self) -> subprocess.Popen[bytes] | None:
        if self._proc is not None and self._pid == os.getpid() and self._proc.poll() is None:
            return self._proc
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-c", _REAPER_CODE, str(DEFAULT_GRACE), str(REAPER_POLL_SECS)],
                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            self._pid = os.getpid()
            self._pending.clear()
            assert self._proc.stdin is not None
            os.set_blocking(self._proc.stdin.fileno(), False)
        except OSError:
            self._proc = None
        return self._proc

    def _send(self, line: str) -> None:
        with self._lock:
            proc = self._ensure()
            if proc is None or proc.stdin is None:
                return
            self._pending += line.encode()
            try:
                n = os.write(proc.stdin.fileno(), self._pending)
                del self._pending[:n]
            except BlockingIOError:
                pass  # the reaper drains the pipe on its next poll; sent with the next line
            except OSError:
                self._proc = None

    def register(self, pgid: int) -> None:
        self._send(f"+{pgid}\n")

    def unregister(self, pgid: int) -> None:
        self._send(f"-{pgid}\n")

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None


reaper = _Reaper()


# --------------------------------------------------------------------------------------------
# Process
# --------------------------------------------------------------------------------------------


F_SETPIPE_SZ = 1031  # Linux
PIPE_SIZE = 256 << 10


def _grow_pipe(transport: asyncio.SubprocessTransport) -> None:
    """A 256 KiB output pipe (Linux's default is 64 KiB): a chatty command is read in fewer,
    larger pieces. Modest on purpose: a hundred concurrent runs stay well inside the per-user
    pipe budget (``fs.pipe-user-pages-soft``). Best effort."""
    pipe = transport.get_pipe_transport(1)
    raw = pipe.get_extra_info("pipe") if pipe is not None else None
    try:
        import fcntl

        fcntl.fcntl(raw.fileno(), F_SETPIPE_SZ, PIPE_SIZE)  # type: ignore[union-attr]
    except (ImportError, OSError, ValueError, AttributeError):
        pass


class _Protocol(asyncio.SubprocessProtocol):
    """Output is held until :meth:`release` (output can arrive before ``subprocess_exec``
    returns; it is delivered only once the process has been announced)."""

    def __init__(self, on_output: Callable[[bytes], None]) -> None:
        self.on_output = on_output
        self._held: list[bytes] | None = []
        self.exited = asyncio.get_running_loop().create_future()
        self.eof = asyncio.get_running_loop().create_future()

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        if self._held is not None:
            self._held.append(data)
        else:
            self.on_output(data)

    def release(self) -> None:
        """Deliver the held output, then everything as it comes."""
        held, self._held = self._held, None
        for data in held or ():
            self.on_output(data)

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        if fd == 1 and not self.eof.done():
            self.eof.set_result(None)

    def process_exited(self) -> None:
        if not self.exited.done():
            self.exited.set_result(None)


class Process:
    """A started child process in its own process group."""

    def __init__(self, transport: asyncio.SubprocessTransport, protocol: _Protocol) -> None:
        self._transport = transport
        self._protocol = protocol
        self.pid: int = transport.get_pid()
        self.pgid: int = self.pid
        self.killed_by_us = False
        self._finished = False
        reaper.register(self.pgid)

    @classmethod
    async def start(
        cls,
        argv: Sequence[str] | None,
        command: str,
        *,
        cwd: str | None,
        env: Mapping[str, str] | None,
        on_output: Callable[[bytes], None],
        on_start: Callable[[Process], None] | None = None,
    ) -> Process:
        """Start ``argv`` directly, or ``command`` under the shell when ``argv`` is None.

        ``on_start(process)`` is called as soon as the process exists, before any output is
        passed to ``on_output``.

        Raises ``OSError`` (e.g. ``FileNotFoundError``) if the program cannot be started.
        """
        loop = asyncio.get_running_loop()
        args = list(argv) if argv is not None else [_SHELL, "-c", command]
        transport, protocol = await loop.subprocess_exec(
            lambda: _Protocol(on_output),
            *args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=dict(env) if env is not None else None,
            start_new_session=True,
        )
        _grow_pipe(transport)
        process = cls(transport, protocol)
        try:
            if on_start is not None:
                on_start(process)
        finally:
            protocol.release()
        return process

    @property
    def returncode(self) -> int | None:
        return self._transport.get_returncode()

    async def wait(self, grace: float = DEFAULT_GRACE) -> int:
        """Wait for the leader to exit and the output to end; clean up the rest of the group."""
        await self._protocol.exited
        if not self._protocol.eof.done() and group_alive(self.pgid):
            # The leader is gone but something in its group still holds the output open.
            await self._stop_group(grace, self._protocol.eof)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._protocol.eof), grace)
        self._finish()
        rc = self.returncode
        return rc if rc is not None else -1

    async def terminate(self, grace: float = DEFAULT_GRACE) -> None:
        """SIGTERM the group, wait up to ``grace`` seconds for the leader, then SIGKILL."""
        if self._finished:
            return
        self.killed_by_us = True
        await self._stop_group(grace, self._protocol.exited)

    async def _stop_group(self, grace: float, until: asyncio.Future[None]) -> None:
        if not _signal_group(self.pgid, signal.SIGTERM):
            return
        try:
            await asyncio.wait_for(asyncio.shield(until), grace)
        except TimeoutError:
            pass
        _signal_group(self.pgid, signal.SIGKILL)

    def kill_now(self) -> None:
        """SIGKILL the group synchronously (used when the event loop is going away)."""
        _signal_group(self.pgid, signal.SIGKILL)
        self._finish()

    def _finish(self) -> None:
        if not self._finished:
            self._finished = True
            # Anything still in the group after the leader is gone is killed outright.
            _signal_group(self.pgid, signal.SIGKILL)
            reaper.unregister(self.pgid)
            self._transport.close()


class LocalExecutor:
    """:class:`~sidecar.core.ports.Executor` running each run as a local :class:`Process`."""

    async def start(
        self,
        argv: Sequence[str] | None,
        script: str,
        *,
        cwd: str | None,
        env: Mapping[str, str] | None,
        on_output: Callable[[bytes], None],
        on_start: Callable[[Process], None] | None = None,
    ) -> Process:
        return await Process.start(argv, script, cwd=cwd, env=env, on_output=on_output,
                                   on_start=on_start)


def use_pidfd_child_watcher(loop: asyncio.AbstractEventLoop) -> None:
    """Python 3.11 waits for each child in a thread of its own; a pidfd watcher (the default
    from 3.12 on) waits in the event loop instead, which makes short runs cheaper."""
    if sys.version_info >= (3, 12) or not sys.platform.startswith("linux"):
        return
    try:
        watcher = asyncio.PidfdChildWatcher()
        watcher.attach_loop(loop)
        asyncio.set_child_watcher(watcher)
    except (OSError, AttributeError, NotImplementedError):
        pass  # the default watcher stays
