"""Finding a workspace's host, and starting it: the client side of the host socket.

A workspace is a root directory plus its config files (explicit ones, or none: then
``sidecar.toml``/``cmdorc.toml`` in the root are discovered). Its host listens on a Unix socket
whose name is derived from the workspace and :data:`PROTOCOL_VERSION`, in a directory only this
user can enter (:func:`socket_dir`). :func:`connect` returns a connected socket, starting the
host first when asked to: a lock file serialises clients that start one at the same moment,
and the host itself holds a second lock for as long as it lives, so a socket file nobody
answers on is stale and is replaced.

Standard library only, no asyncio: ``sidecar save`` in a git hook imports this and little else.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import stat
import sys
import time

from sidecar.app.methods import PROTOCOL_VERSION
from sidecar.core.workspace import config_file_in, find_root

DEFAULT_IDLE_TIMEOUT = 60.0
"""Seconds a host lives on with no client attached and no run active."""

STATE_DIR_NAME = ".sidecar"


class HostError(Exception):
    """No host could be reached or started; the message says why (and where its log is)."""


class Workspace:
    """A workspace: ``root`` (absolute, symlinks resolved) and its explicit config files
    (absolute; empty: discovered in the root)."""

    __slots__ = ("_base", "_key", "config_files", "root")

    def __init__(self, root: str, config_files: list[str] | tuple[str, ...] = ()) -> None:
        self.root = os.path.realpath(root)
        files = tuple(os.path.realpath(os.path.join(self.root, f)) for f in config_files)
        # Naming the file discovery would find is the same workspace as not naming it.
        if len(files) == 1 and files[0] == config_file_in(self.root):
            files = ()
        self.config_files = files
        self._key: str | None = None
        self._base: str | None = None

    @classmethod
    def of_cwd(cls, cwd: str | None = None, *, workspace: str | None = None,
               config: list[str] | None = None) -> Workspace:
        """The workspace of a command line: ``--workspace``, else the nearest ancestor of the
        working directory holding a config file, else the working directory; ``--config``
        files are taken from the working directory."""
        cwd = os.path.abspath(cwd or os.getcwd())
        root = workspace if workspace is not None else (find_root(cwd) or cwd)
        files = [os.path.join(cwd, f) for f in config or ()]
        return cls(root, files)

    @property
    def key(self) -> str:
        """A short stable name of this workspace and protocol version."""
        if self._key is None:
            import hashlib

            text = "\0".join((str(PROTOCOL_VERSION), self.root, *self.config_files))
            digest = hashlib.sha256(text.encode("utf-8", "surrogateescape"))
            self._key = digest.hexdigest()[:20]
        return self._key

    def _in_socket_dir(self, suffix: str) -> str:
        if self._base is None:  # the directory is made and checked once per workspace
            self._base = os.path.join(socket_dir(), self.key)
        return self._base + suffix

    @property
    def socket_path(self) -> str:
        return self._in_socket_dir(".sock")

    @property
    def lock_path(self) -> str:
        """Held (``flock``) by the host for as long as it lives."""
        return self._in_socket_dir(".lock")

    @property
    def start_lock_path(self) -> str:
        """Held by a client while it starts the host."""
        return self._in_socket_dir(".start")

    @property
    def state_dir(self) -> str:
        return state_dir(self.root)

    @property
    def log_path(self) -> str:
        """The host's log: ``host.log`` in the state directory, else (it cannot be
        written: a read-only checkout) beside the socket."""
        state = self.state_dir
        if os.access(state, os.W_OK) or (not os.path.lexists(state) and os.access(
                os.path.dirname(state) or ".", os.W_OK)):
            return os.path.join(state, "host.log")
        return self._in_socket_dir(".log")

    def describe(self) -> str:
        files = ", ".join(self.config_files) if self.config_files else "discovered config"
        return f"{self.root} ({files})"


def socket_dir() -> str:
    """``$XDG_RUNTIME_DIR/cmdsidecar``, else ``$TMPDIR/cmdsidecar-UID`` (or ``/tmp``):
    created with mode 0700; refused unless it is this user's and nobody else's."""
    uid = os.getuid()
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime):
        path = os.path.join(runtime, "cmdsidecar")
    else:
        path = os.path.join(os.environ.get("TMPDIR") or "/tmp", f"cmdsidecar-{uid}")
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != uid or st.st_mode & 0o077:
        raise HostError(f"unsafe socket directory {path}: it must be a directory owned by "
                        f"uid {uid} with mode 0700 (remove it and try again)")
    return path


def state_dir(root: str) -> str:
    """``$SIDECAR_STATE_DIR``, else ``<root>/.sidecar``: the host's log lives there."""
    return os.environ.get("SIDECAR_STATE_DIR") or os.path.join(root, STATE_DIR_NAME)


def make_state_dir(root: str) -> str:
    """:func:`state_dir`, created, with a ``.gitignore`` that ignores everything in it (as
    pytest does for its cache)."""
    path = state_dir(root)
    os.makedirs(path, exist_ok=True)
    ignore = os.path.join(path, ".gitignore")
    if not os.path.exists(ignore):
        with open(ignore, "w", encoding="utf-8") as f:
            f.write("# created by cmdsidecar: the host's state and logs\n*\n")
    return path


# ------------------------------------------------------------------------------- connecting
def try_connect(path: str, timeout: float = 5.0) -> socket.socket | None:
    """A socket connected to ``path``, or None when nobody listens there."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
    except (FileNotFoundError, ConnectionRefusedError):
        sock.close()
        return None
    except OSError as exc:
        sock.close()
        if exc.errno in (errno.ENOENT, errno.ECONNREFUSED, errno.ENOTSOCK):
            return None
        raise HostError(f"cannot connect to {path}: {exc}") from None
    return sock


def host_pid(lock_path: str) -> int | None:
    """The pid of the live host holding ``lock_path`` (a workspace's ``lock_path``), or
    None when no host holds it."""
    try:
        fd = os.open(lock_path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.pread(fd, 32, 0).strip()
            return int(text) if text.isdigit() else None
        return None
    finally:
        os.close(fd)


def connect(ws: Workspace, *, start: bool = True, idle_timeout: float | None = None,
            timeout: float = 20.0) -> socket.socket:
    """A socket connected to the workspace's host; with ``start``, the host is started when
    none runs (one host, however many clients start it at once)."""
    sock = try_connect(ws.socket_path)
    if sock is not None:
        return sock
    if not start:
        raise HostError(f"no host is running for {ws.describe()}")
    deadline = time.monotonic() + timeout
    fd = os.open(ws.start_lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        while True:  # wait for whoever is starting it
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise HostError("timed out waiting for another client starting the "
                                    "host") from None
                time.sleep(0.02)
        sock = try_connect(ws.socket_path)
        if sock is None:
            spawn_host(ws, idle_timeout=idle_timeout, timeout=deadline - time.monotonic())
            sock = try_connect(ws.socket_path)
        if sock is None:
            raise HostError(f"the host started but does not answer; see {ws.log_path}")
        return sock
    finally:
        os.close(fd)  # releases the start lock


def spawn_host(ws: Workspace, *, idle_timeout: float | None = None,
               timeout: float = 20.0) -> None:
    """Start the workspace's host as a detached process (its own session; output to its
    log) and return once it listens."""
    import select
    import subprocess

    try:
        make_state_dir(ws.root)
    except OSError:  # a read-only state directory: the host logs beside its socket
        pass
    log_path = ws.log_path
    argv = [sys.executable, "-m", "sidecar.host", "--root", ws.root]
    for f in ws.config_files:
        argv += ["--config", f]
    if idle_timeout is not None:
        argv += ["--idle-timeout", str(idle_timeout)]
    read_end, write_end = os.pipe()
    argv += ["--ready-fd", str(write_end)]
    # Through a shell that exits at once: the host is nobody's child (never a zombie of a
    # long-lived client such as `sidecar serve`).
    argv = ["/bin/sh", "-c", '"$@" &', "sh", *argv]
    # A git hook's repository variables would follow every command the host runs later.
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    try:
        with open(log_path, "ab") as log:
            subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                           cwd=ws.root, env=env, start_new_session=True,
                           pass_fds=(write_end,), check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        os.close(read_end)
        raise HostError(f"cannot start the host: {exc}") from None
    finally:
        os.close(write_end)
    try:
        data = b""
        deadline = time.monotonic() + timeout
        while not data.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([read_end], [], [], left)[0]:
                raise HostError(f"the host did not start within {timeout:.0f} s; see "
                                f"{log_path}")
            chunk = os.read(read_end, 256)
            if not chunk:
                raise HostError(f"the host exited during start; see {log_path}")
            data += chunk
    finally:
        os.close(read_end)
