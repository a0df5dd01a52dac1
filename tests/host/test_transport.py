"""The stdio transport: frame parsing, and serving from non-pipe streams (the thread
fallbacks)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sidecar.host.framing import FrameParser


def frame(msg: dict[str, object]) -> bytes:
    body = json.dumps(msg).encode()
    return b"Content-Length: %d\r\n\r\n" % len(body) + body


def test_frame_parser_handles_splits_batches_and_bad_headers() -> None:
    bodies: list[bytes] = []
    parser = FrameParser(bodies.append)
    data = frame({"id": 1}) + frame({"id": 2}) + b"X-Junk: 1\r\n\r\n" + frame({"id": 3})
    for i in range(0, len(data), 7):  # arbitrary splits, even inside headers
        parser.feed(data[i:i + 7])
    assert [json.loads(b)["id"] for b in bodies] == [1, 2, 3]
    parser.feed(b"Content-Type: x\r\nContent-Length: 2\r\n\r\n{}")
    assert bodies[-1] == b"{}"


@pytest.mark.timeout(30)
def test_serve_from_regular_files(tmp_path: Path) -> None:
    """A session read from a file: the messages are served, then end of input works like a
    client that went away (runs cancelled, exit code 1 without shutdown)."""
    (tmp_path / "sidecar.toml").write_text('[[command]]\nname = "Hi"\ncommand = "echo hi"\n')
    session = tmp_path / "session.in"
    session.write_bytes(
        frame({"jsonrpc": "2.0", "id": 1, "method": "initialize",
               "params": {"processId": None, "rootUri": tmp_path.as_uri(), "capabilities": {}}})
        + frame({"jsonrpc": "2.0", "method": "initialized", "params": {}})
        + frame({"jsonrpc": "2.0", "id": 2, "method": "sidecar/commands"}))
    out = tmp_path / "session.out"
    code = ("import sys; from sidecar.frontends.lsp import serve; "
            "raise SystemExit(serve(open(sys.argv[1], 'rb'), open(sys.argv[2], 'wb')))")
    proc = subprocess.run([sys.executable, "-c", code, str(session), str(out)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=25)
    assert proc.returncode == 1, proc.stderr
    bodies: list[bytes] = []
    FrameParser(bodies.append).feed(out.read_bytes())
    messages = [json.loads(b) for b in bodies]
    responses = {m["id"]: m for m in messages if "id" in m and "method" not in m}
    assert "capabilities" in responses[1]["result"]
    assert [c["name"] for c in responses[2]["result"]["commands"]] == ["Hi"]
    lifecycle = [m["params"]["name"] for m in messages if m.get("method") == "sidecar/event"]
    assert lifecycle == ["orchestrator_started", "orchestrator_shutdown"]
