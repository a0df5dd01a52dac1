"""Progress, backpressure with a stalled client, shutdown and no orphaned processes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from conftest import RawClient, request, start, write_config
from lsprotocol import types as lsp


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _is_reaper(p: psutil.Process) -> bool:
    try:
        return any("REAPER" in a or "groups = set()" in a for a in p.cmdline())
    except psutil.Error:
        return False


@pytest.mark.timeout(30)
async def test_progress_begin_report_end(root: Path) -> None:
    write_config(root, """
    [[command]]
    name = "Steps"
    command = "sh -c 'echo one; sleep 0.3; echo two; sleep 0.3; echo three'"
    triggers = ["go"]
    """)
    async with start(root, progress=True) as client:
        rec = client.rec  # type: ignore[attr-defined]
        res = await request(client, "sidecar/trigger", {"event": "go"})
        run_id = res["started"][0]["runId"]
        token = f"sidecar/run/{run_id}"

        def ended() -> bool:
            return any(getattr(v, "kind", None) == "end"
                       for v in client.progress_reports.get(token, []))

        await rec.wait_for(ended, 10)
        values = client.progress_reports[token]
        kinds = [v.kind for v in values]
        assert kinds[0] == "begin" and kinds[-1] == "end"
        assert values[0].title == "Steps" and values[0].message == "go"
        reports = [v.message for v in values if v.kind == "report"]
        assert reports and set(reports) <= {"one", "two", "three"}
        assert values[-1].message.startswith("success in ")


@pytest.mark.timeout(30)
async def test_shutdown_cancels_runs(root: Path) -> None:
    write_config(root, """
    [[command]]
    name = "Long"
    command = "sleep 100"
    """)
    async with start(root) as client:
        rec = client.rec  # type: ignore[attr-defined]
        res = await request(client, "sidecar/run", {"command": "Long"})
        run_id = res["run"]["runId"]
        await rec.wait_for(lambda: any(u["state"] == "running" for u in rec.updates(run_id)))
        server_pid = client._server.pid  # type: ignore[union-attr]
        sleepers = [p for p in _descendants(server_pid) if p.name() == "sleep"]
        assert sleepers
        await asyncio.wait_for(client.shutdown_async(None), 15)
        # shutdown answered after the runs were cancelled
        final = await rec.final(run_id, timeout=1)
        assert final["state"] == "cancelled"
        _, alive = psutil.wait_procs(sleepers, timeout=5)
        assert not alive
        client.exit(None)
        assert await asyncio.wait_for(client._server.wait(), 10) == 0  # type: ignore[union-attr]


@pytest.mark.timeout(40)
@pytest.mark.parametrize("how", ["close-stdin", "kill-server"])
async def test_no_orphans_when_client_goes_away(root: Path, how: str) -> None:
    write_config(root, """
    [[command]]
    name = "Tree"
    command = "sh -c 'sleep 100 & sleep 100; wait'"
    """)
    async with await RawClient.spawn() as raw:
        await raw.initialize(root)
        i = raw.send("sidecar/run", {"command": "Tree"})
        resp = await raw.read_until(lambda m: m.get("id") == i)
        run_id = resp["result"]["run"]["runId"]
        await raw.read_until(lambda m: m.get("method") == "sidecar/runUpdate"
                             and m["params"]["runId"] == run_id
                             and m["params"]["state"] == "running")
        procs = [p for p in _descendants(raw.proc.pid) if not _is_reaper(p)]
        sleepers = [p for p in procs if p.name() == "sleep"]
        # wait until both sleeps exist (the shell starts them right away)
        deadline = time.monotonic() + 5
        while len(sleepers) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
            procs = [p for p in _descendants(raw.proc.pid) if not _is_reaper(p)]
            sleepers = [p for p in procs if p.name() == "sleep"]
        assert len(sleepers) == 2
        pgids = {os.getpgid(p.pid) for p in procs}
        if how == "close-stdin":
            assert raw.proc.stdin is not None
            raw.proc.stdin.close()
            code = await asyncio.wait_for(raw.proc.wait(), 15)
            assert code == 1  # went away without shutdown
        else:
            raw.proc.send_signal(signal.SIGKILL)
            await raw.proc.wait()
        _, alive = psutil.wait_procs(procs, timeout=10)
        assert not alive, alive
        for pgid in pgids:
            with pytest.raises(ProcessLookupError):
                os.killpg(pgid, 0)


@pytest.mark.timeout(60)
async def test_stalled_client_large_output_bounded(root: Path) -> None:
    """20 MiB of output while the client reads nothing: the command still finishes, server
    memory stays bounded, and afterwards chunks + dropped ranges cover every byte exactly;
    the dropped ranges read back with sidecar/readOutput."""
    total = 20 << 20
    write_config(root, f"""
    [[command]]
    name = "Big"
    command = "sh -c 'yes 0123456789abcdef | head -c {total}; touch finished'"
    """)
    finished = root / "finished"
    async with await RawClient.spawn() as raw:
        proc = psutil.Process(raw.proc.pid)
        await raw.initialize(root, {"maxPendingBytes": 1 << 20})
        i = raw.send("sidecar/status")
        await raw.read_until(lambda m: m.get("id") == i)
        base_rss = proc.memory_info().rss
        raw.send("sidecar/run", {"command": "Big"})
        # Stall: read nothing while the command runs (it may well finish before the first
        # sample: it only waits on the server); sample the server's RSS meanwhile.
        peak = base_rss
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            peak = max(peak, proc.memory_info().rss)
            if finished.exists() and not [p for p in _descendants(raw.proc.pid)
                                          if not _is_reaper(p)]:
                break
            await asyncio.sleep(0.05)
        assert finished.exists() and not [p for p in _descendants(raw.proc.pid)
                                          if not _is_reaper(p)], \
            "command did not finish while the client was stalled"
        growth = (peak - base_rss) / (1 << 20)
        assert growth < 40, f"server RSS grew by {growth:.1f} MiB"

        chunks: list[dict[str, Any]] = []
        msgs: list[dict[str, Any]] = []
        final = await asyncio.wait_for(raw.read_until(
            lambda m: m.get("method") == "sidecar/runUpdate"
            and m["params"]["state"] in ("success", "failed"), msgs.append), 30)
        assert final["params"]["state"] == "success"
        run_id = final["params"]["runId"]
        chunks = [m["params"] for m in msgs if m.get("method") == "sidecar/outputChunk"
                  and m["params"]["runId"] == run_id]
        assert [c["seq"] for c in chunks] == list(range(len(chunks)))
        pos = 0
        for c in chunks:
            assert c["offset"] == pos
            if not c["dropped"]:
                assert len(c["text"].encode()) == c["size"]
            pos += c["size"]
        assert pos == total == final["params"]["outputSize"]
        dropped = [c for c in chunks if c["dropped"]]
        assert dropped, "expected backpressure to drop some chunk text"
        gap = dropped[0]
        n = min(gap["size"], 1000)
        i = raw.send("sidecar/readOutput", {"runId": run_id, "offset": gap["offset"] + 5,
                                            "length": n})
        out = await raw.read_until(lambda m: m.get("id") == i)
        expected = (b"0123456789abcdef\n" * ((total // 17) + 2))[gap["offset"] + 5:][:n]
        assert out["result"]["text"].encode() == expected
        assert out["result"]["totalSize"] == total and out["result"]["final"] is True


@pytest.mark.timeout(30)
async def test_requests_served_while_commands_run_and_bad_input(root: Path) -> None:
    write_config(root, """
    [[command]]
    name = "Long"
    command = "sleep 100"
    """)
    async with start(root) as client:
        await request(client, "sidecar/run", {"command": "Long"})
        t0 = time.monotonic()
        await request(client, "sidecar/status")
        assert time.monotonic() - t0 < 2
        client.protocol.notify("sidecar/whatever", {"x": 1})
        res = await request(client, "sidecar/cancel", {"all": True})
        assert res["cancelled"] == 1
        hist = await request(client, "sidecar/history", {"command": "Long", "limit": 0})
        assert hist["runs"][0]["state"] == "cancelled"
        client.workspace_did_change_watched_files(lsp.DidChangeWatchedFilesParams(changes=[]))
        assert (await request(client, "sidecar/commands"))["commands"][0]["name"] == "Long"


@pytest.mark.timeout(30)
async def test_garbage_input_gets_errors_not_crashes(root: Path) -> None:
    write_config(root, """
    [[command]]
    name = "X"
    command = "true"
    """)
    async with await RawClient.spawn() as raw:
        await raw.initialize(root)
        assert raw.proc.stdin is not None

        def frame(body: bytes) -> None:
            assert raw.proc.stdin is not None
            raw.proc.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)

        frame(b"{not json")
        m = await raw.read_until(lambda m: "error" in m)
        assert m["error"]["code"] == -32700 and m["id"] is None
        frame(json.dumps({"jsonrpc": "2.0", "id": [1], "method": "sidecar/status"}).encode())
        m = await raw.read_until(lambda m: "error" in m)
        assert m["error"]["code"] == -32600 and m["id"] is None
        i = raw.send("textDocument/hover", {"nonsense": True})
        m = await raw.read_until(lambda m: m.get("id") == i)
        assert m["error"]["code"] == -32602 and "textDocument" in m["error"]["message"]
        i = raw.send("sidecar/run", ["X"])
        m = await raw.read_until(lambda m: m.get("id") == i)
        assert m["error"]["code"] == -32602 and m["error"]["data"]["field"] == "params"
        i = raw.send("no/such/method", {})
        m = await raw.read_until(lambda m: m.get("id") == i)
        assert m["error"]["code"] == -32601
        i = raw.send("sidecar/run", {"command": "X", "wait": True, "timeoutMs": 5000})
        m = await raw.read_until(lambda m: m.get("id") == i)
        assert m["result"]["run"]["state"] == "success"
        i = raw.send("shutdown")
        await raw.read_until(lambda m: m.get("id") == i)
        i = raw.send("sidecar/status")
        m = await raw.read_until(lambda m: m.get("id") == i)
        assert m["error"]["code"] == -32600
        raw.send("exit", notify=True)
        assert await asyncio.wait_for(raw.proc.wait(), 10) == 0
