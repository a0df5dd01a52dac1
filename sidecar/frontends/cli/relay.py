"""``sidecar serve``: attach an editor's stdio to the workspace's shared host.

The editor starts ``sidecar serve`` and speaks LSP on its stdin/stdout. This process reads the
first message (``initialize``: the workspace root and ``initializationOptions.configFiles``
say which host), connects to that host (starting it when none runs), and hands it the two
pipes themselves (``SCM_RIGHTS``) with the bytes it already read. From then on the host reads
and writes the editor's pipes directly: nothing is copied here, and this process only waits
for the host's ``sidecar/detach`` to exit with the session's exit code (non-zero, with a
message on stderr, if the host goes away first).

Standard library only: no asyncio, pygls or core (an editor waits for this to start).
"""

from __future__ import annotations

import array
import json
import os
import socket
import sys
from typing import Any

from sidecar.app.methods import M_ATTACH, M_DETACH
from sidecar.host.framing import FrameParser, frame, split_frame
from sidecar.host.locate import HostError, Workspace, connect


def _read_first_message(fd: int) -> tuple[bytes, dict[str, Any] | None]:
    """Everything read from ``fd`` until the first framed message is complete, and that
    message (None if the input ended first or it is not JSON)."""
    data = b""
    while True:
        try:
            split = split_frame(data)
        except ValueError:
            return data, None
        if split is not None:
            try:
                message = json.loads(split[0])
            except ValueError:
                return data, None
            return data, message if isinstance(message, dict) else None
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return data, None
        data += chunk


def _uri_path(uri: Any) -> str | None:
    if not isinstance(uri, str) or not uri.startswith("file://"):
        return None
    from urllib.parse import unquote, urlparse

    return unquote(urlparse(uri).path) or None


def workspace_of(message: dict[str, Any] | None, config: list[str] | None) -> Workspace:
    """The workspace an ``initialize`` request names (as the standalone server reads it), with
    ``serve --config`` files unless the client names its own."""
    params = message.get("params") if message and message.get("method") == "initialize" \
        else None
    params = params if isinstance(params, dict) else {}
    root = None
    folders = params.get("workspaceFolders")
    if isinstance(folders, list) and folders and isinstance(folders[0], dict):
        root = _uri_path(folders[0].get("uri"))
    root = root or _uri_path(params.get("rootUri"))
    if root is None and isinstance(params.get("rootPath"), str):
        root = params["rootPath"]
    root = root or os.getcwd()
    options = params.get("initializationOptions")
    files = options.get("configFiles") if isinstance(options, dict) else None
    if isinstance(files, list) and files and all(isinstance(f, str) for f in files):
        return Workspace(root, files)
    return Workspace(root, [os.path.abspath(f) for f in config or ()])


def relay(config: list[str] | None = None) -> int:
    """Run ``sidecar serve`` attached to the host; returns the exit code."""
    data, first = _read_first_message(0)
    if not data:
        return 0  # end of input before any message
    ws = workspace_of(first, config)
    try:
        sock = connect(ws)
    except HostError as exc:
        sys.stderr.write(f"sidecar serve: {exc}\n")
        return 1
    sock.settimeout(None)
    hello = frame({"jsonrpc": "2.0", "method": M_ATTACH,
                   "params": {"root": ws.root, "configFiles": list(ws.config_files),
                              "buffered": len(data), "pid": os.getpid()}})
    try:
        sock.sendmsg([hello + data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                       array.array("i", [0, 1]))])
    except OSError as exc:
        sys.stderr.write(f"sidecar serve: cannot attach to the host: {exc}\n")
        return 1
    # The host owns the conversation now; keep nothing of it open here.
    for fd in (0, 1):
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, fd)
        os.close(devnull)
    detach: list[Any] = []

    def on_body(body: bytes) -> None:
        message = json.loads(body)
        if isinstance(message, dict) and message.get("method") == M_DETACH:
            detach.append(message)

    parser = FrameParser(on_body)
    try:
        while not detach:
            chunk = sock.recv(4096)
            if not chunk:
                break
            parser.feed(chunk)
    except (OSError, ValueError):
        pass
    params = detach[0].get("params") if detach else None
    if not isinstance(params, dict):
        sys.stderr.write(f"sidecar serve: the host stopped; see {ws.log_path}\n")
        return 1
    if params.get("message"):
        sys.stderr.write(f"sidecar serve: {params['message']}\n")
    code = params.get("exitCode", 1)
    return code if isinstance(code, int) else 1
