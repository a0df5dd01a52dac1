"""Durable runs through the shared host: run keys decided once for every connection, history
and output that outlive the host, lost runs, retention, and a records store that cannot be
written. Real hosts, real SQLite, real commands; waits are on messages and processes."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from hostclient import HostClient, make_gate, release
from proctools import wait_gone

from sidecar.app.methods import E_RUN_NOT_FOUND, E_RUN_STATE

pytestmark = pytest.mark.timeout(60)

CONFIG = """\
[[command]]
name = "Deploy"
command = "sh -c 'echo deploying; echo x >> starts; cat gate'"

[[command]]
name = "Once"
command = "sh -c 'echo x >> starts'"

[[command]]
name = "Echo"
command = "echo said {{ word }}"

[[command]]
name = "Slow"
command = "sh -c 'echo partial; exec sleep 60'"

[variables]
word = "hello"
"""


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "sidecar.toml").write_text(CONFIG)
    make_gate(tmp_path)
    return tmp_path


def starts(root: Path) -> int:
    path = root / "starts"
    return len(path.read_text().splitlines()) if path.exists() else 0


async def stop_host(root: Path) -> None:
    """``sidecar host stop``: the host exits (its runs cancelled, its records closed)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sidecar", "host", "stop", cwd=root,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    _, stderr = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, stderr


# ------------------------------------------------------------------------------ run keys
async def test_twenty_starts_of_one_key_from_four_connections_start_one_process(
        root: Path) -> None:
    clients = [await HostClient.serve(root, f"agent-{i}") for i in range(4)]
    try:
        sent = [(c, c.send("sidecar/run", {"command": "Deploy", "runKey": "release-1"}))
                for _ in range(5) for c in clients]
        replies = [await c.wait_for(lambda c=c, i=i: next(
            (m for m in c.messages if m.get("id") == i and "method" not in m), None))
            for c, i in sent]
        results = [r["result"] for r in replies]
        first = results[0]["run"]
        assert {r["run"]["runId"] for r in results} == {first["runId"]}
        assert sorted(r["existing"] for r in results) == [False] + [True] * 19
        assert first["runKey"] == "release-1" and first["attempt"] == 1

        # While it runs, the key cannot be rerun or unlocked.
        err = await clients[1].error("sidecar/rerun",
                             {"command": "Deploy", "runKey": "release-1"})
        assert err["code"] in (E_RUN_STATE, E_RUN_NOT_FOUND)
        err = await clients[1].error("sidecar/unlock",
                             {"command": "Deploy", "runKey": "release-1"})
        assert err["code"] == E_RUN_STATE and "active" in err["message"]

        await release(root)
        final = await clients[0].final(first["runId"])
        assert final["state"] == "success"
        assert starts(root) == 1

        # After it ended, the same key starts a new attempt (not strict).
        again = await clients[2].request("sidecar/run", {"command": "Deploy",
                                                         "runKey": "release-1"})
        assert again["existing"] is False
        assert again["run"]["attempt"] == 2 and again["run"]["rerunOf"] == first["runId"]
        await release(root)
        assert (await clients[2].final(again["run"]["runId"]))["state"] == "success"
        assert starts(root) == 2
        history = await clients[3].request("sidecar/history",
                                           {"command": "Deploy", "runKey": "release-1"})
        assert [r["attempt"] for r in history["runs"]] == [2, 1]
    finally:
        for c in clients:
            await c.close()


async def test_strict_keys_unlocks_with_ttl_and_reruns(root: Path) -> None:
    client = await HostClient.serve(root, "agent")
    try:
        def run(**params: Any) -> Any:
            return client.request("sidecar/run", {"command": "Once", "runKey": "2026-05-02",
                                                  "wait": True, **params})

        first = await run(strict=True)
        assert first["existing"] is False and first["run"]["state"] == "success"
        again = await run(strict=True)
        assert again["existing"] is True and again["run"]["runId"] == first["run"]["runId"]
        assert starts(root) == 1

        unlocked = await client.request("sidecar/unlock", {
            "command": "Once", "runKey": "2026-05-02", "reason": "data fix"})
        assert unlocked["reason"] == "data fix" and unlocked["expiresAt"] is None
        second = await run(strict=True)
        assert second["existing"] is False and second["strictOverrideUsed"] is True
        assert second["run"]["attempt"] == 2 and second["run"]["reason"] == "data fix"
        third = await run(strict=True)  # the unlock was used up
        assert third["existing"] is True and third["run"]["runId"] == second["run"]["runId"]
        assert starts(root) == 2

        short = await client.request("sidecar/unlock", {
            "command": "Once", "runKey": "2026-05-02", "ttlSecs": 0.2})
        expires = dt.datetime.fromisoformat(short["expiresAt"]).timestamp()
        while time.time() <= expires:  # the clock is what is waited for
            await asyncio.sleep(expires - time.time() + 0.01)
        expired = await run(strict=True)
        assert expired["existing"] is True and starts(root) == 2

        plain = await run()  # strictness is per call
        assert plain["existing"] is False and plain["run"]["attempt"] == 3

        rerun = await client.request("sidecar/rerun", {
            "runId": first["run"]["runId"], "reason": "retry after disk error", "wait": True})
        assert rerun["run"]["rerunOf"] == first["run"]["runId"]
        assert rerun["run"]["attempt"] == 4 and rerun["run"]["reason"] == "retry after disk error"
        assert rerun["run"]["state"] == "success" and starts(root) == 4

        err = await client.error("sidecar/unlock", {"command": "Once", "runKey": "nope"})
        assert err["code"] == E_RUN_NOT_FOUND
        err = await client.error("sidecar/run", {"command": "Once", "strict": True})
        assert err["code"] == -32602 and err["data"]["field"] == "strict"
    finally:
        await client.close()


# ------------------------------------------------------------------------------ durability
async def test_history_and_output_survive_a_host_restart_the_same_for_every_client(
        root: Path) -> None:
    client = await HostClient.serve(root, "Neovim")
    ids = []
    for word in ("one", "two", "three"):
        done = await client.request("sidecar/run", {"command": "Echo", "vars": {"word": word},
                                                    "wait": True})
        ids.append(done["run"]["runId"])
    before = (await client.request("sidecar/history", {"command": "Echo"}))["runs"]
    once = await client.request("sidecar/run", {"command": "Once", "runKey": "import-1",
                                                "strict": True, "wait": True})
    first_pid = (await client.request("sidecar/hostInfo"))["pid"]
    await client.close()
    await stop_host(root)

    code = await HostClient.serve(root, "Visual Studio Code")
    vim = await HostClient.serve(root, "Neovim")
    try:
        info = await code.request("sidecar/hostInfo")
        assert info["pid"] != first_pid
        assert info["records"] == str(root / ".sidecar" / "runs.db")
        assert info["recordsProblem"] is None
        for c in (code, vim):
            runs = (await c.request("sidecar/history", {"command": "Echo"}))["runs"]
            assert [r["runId"] for r in runs] == ids[::-1]
            assert runs == before
            out = await c.request("sidecar/readOutput", {"runId": ids[1]})
            assert out["text"] == "said two\n" and out["final"] is True
            waited = await c.request("sidecar/wait", {"runId": ids[0]})
            assert waited["run"]["state"] == "success"
        status = await code.request("sidecar/status", {"command": "Echo"})
        assert status["commands"][0]["lastRun"]["runId"] == ids[2]
        # A strict key holds across the restart: the finished run, nothing started.
        again = await vim.request("sidecar/run", {"command": "Once", "runKey": "import-1",
                                                  "strict": True, "wait": True})
        assert again["existing"] is True and again["run"] == once["run"]
        assert starts(root) == 1
    finally:
        await code.close()
        await vim.close()


async def test_a_host_killed_mid_run_leaves_a_lost_run_with_its_partial_output(
        root: Path) -> None:
    client = await HostClient.serve(root, "Neovim")
    done = await client.request("sidecar/run", {"command": "Echo", "wait": True})
    started = await client.request("sidecar/run", {"command": "Slow"})
    run_id = started["run"]["runId"]
    await client.wait_for(lambda: "partial" in client.output(run_id))
    hostpid = (await client.request("sidecar/hostInfo"))["pid"]
    host = psutil.Process(hostpid)
    sleeps = [p for p in host.children(recursive=True) if p.name() == "sleep"]
    assert len(sleeps) == 1
    host.kill()
    assert wait_gone(host, 10)
    await client.kill()
    assert wait_gone(sleeps[0], 15), "the reaper kills the run's process group"

    again = await HostClient.serve(root, "Neovim")
    try:
        assert (await again.request("sidecar/hostInfo"))["pid"] != hostpid
        lost = (await again.request("sidecar/history", {"command": "Slow"}))["runs"]
        assert [r["runId"] for r in lost] == [run_id]
        assert lost[0]["state"] == "lost" and "lost" in lost[0]["error"]
        assert lost[0]["endTime"] is not None
        out = await again.request("sidecar/readOutput", {"runId": run_id})
        assert out["text"] == "partial\n" and out["final"] is True
        kept = (await again.request("sidecar/history", {"command": "Echo"}))["runs"]
        assert [(r["runId"], r["state"]) for r in kept] == [(done["run"]["runId"], "success")]
        assert (await again.request("sidecar/hostInfo"))["activeRuns"] == []
        # A lost run is final: a new start of the command runs.
        status = await again.request("sidecar/status", {"command": "Slow"})
        assert status["commands"][0]["state"] == "lost"
    finally:
        await again.close()


async def test_retention_and_clean_delete_records_with_their_output(root: Path) -> None:
    (root / "sidecar.toml").write_text(CONFIG + "\n[history]\nkeep_runs = 2\n")
    client = await HostClient.serve(root, "cli")
    try:
        runs = [(await client.request("sidecar/run", {"command": "Echo", "wait": True}))["run"]
                for _ in range(4)]
        files = [Path(r["outputFile"]) for r in runs]
        assert all(f.parent == root / ".sidecar" / "output" for f in files)
        history = (await client.request("sidecar/history", {"command": "Echo", "limit": 0}))
        assert [r["runId"] for r in history["runs"]] == [runs[3]["runId"], runs[2]["runId"]]
        assert [f.exists() for f in files] == [False, False, True, True]
        err = await client.error("sidecar/readOutput", {"runId": runs[0]["runId"]})
        assert err["code"] == E_RUN_NOT_FOUND

        dry = await client.request("sidecar/clean", {"all": True, "command": "Echo",
                                                     "dryRun": True})
        assert dry["deleted"] == 0 and len(dry["runs"]) == 2 and files[2].exists()
        one = await client.request("sidecar/clean", {"runId": runs[2]["runId"]})
        assert one["deleted"] == 1 and one["errors"] == [] and not files[2].exists()
        err = await client.error("sidecar/readOutput", {"runId": runs[2]["runId"]})
        assert err["code"] == E_RUN_NOT_FOUND
        history = (await client.request("sidecar/history", {"command": "Echo"}))
        assert [r["runId"] for r in history["runs"]] == [runs[3]["runId"]]
        err = await client.error("sidecar/clean", {"command": "Echo"})
        assert err["code"] == -32602
        err = await client.error("sidecar/clean", {"before": "yesterday"})
        assert err["code"] == -32602 and err["data"]["field"] == "before"
    finally:
        await client.close()


async def test_cancel_with_a_reason_and_a_grace_period(root: Path) -> None:
    (root / "sidecar.toml").write_text(CONFIG + """
[[command]]
name = "Stubborn"
command = "sh -c 'trap \\"\\" TERM; echo ready; sleep 60'"
""")
    client = await HostClient.serve(root, "cli")
    try:
        started = await client.request("sidecar/run", {"command": "Stubborn", "runKey": "k"})
        run_id = started["run"]["runId"]
        await client.wait_for(lambda: "ready" in client.output(run_id))
        t0 = time.monotonic()
        done = await client.request("sidecar/cancel", {"command": "Stubborn", "runKey": "k",
                                                       "reason": "manual intervention",
                                                       "graceSecs": 0.3})
        assert done == {"cancelled": 1}
        assert time.monotonic() - t0 < 2.5  # SIGKILL after 0.3 s, not the default 3 s
        final = await client.final(run_id)
        assert final["state"] == "cancelled" and final["comment"] == "manual intervention"
        assert final["exitCode"] == -signal.SIGKILL
    finally:
        await client.close()


# ------------------------------------------------------------------------------ bad disks
@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs",
                              str(path)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(path: Path) -> None:
    """Fill the file system of ``path`` until it refuses."""
    with open(path / "filler", "wb") as f:
        with contextlib.suppress(OSError):
            while True:
                f.write(b"\0" * 65536)
                f.flush()


async def test_a_full_disk_never_stops_runs_and_is_reported_once(root: Path,
                                                                  tmp_path: Path) -> None:
    with tmpfs(tmp_path / "state", "1m") as state:
        env = {"SIDECAR_STATE_DIR": str(state)}
        client = await HostClient.serve(root, "cli", env=env)
        try:
            first = await client.request("sidecar/run", {"command": "Echo", "wait": True})
            assert first["run"]["state"] == "success"
            info = await client.request("sidecar/hostInfo")
            assert info["records"] == str(state / "runs.db") and info["recordsProblem"] is None
            fill(state)
            words = [f"w{i}" for i in range(3)]
            for word in words:
                done = await client.request("sidecar/run", {"command": "Echo", "wait": True,
                                                            "vars": {"word": word}})
                assert done["run"]["state"] == "success"
            info = await client.request("sidecar/hostInfo")
            assert "not being saved" in info["recordsProblem"]
            assert info["records"] is None
            # Runs go on being recorded in memory: keys still hold.
            keyed = [await client.request("sidecar/run", {"command": "Echo", "runKey": "k",
                                                          "strict": True, "wait": True})
                     for _ in range(2)]
            assert [k["existing"] for k in keyed] == [False, True]
        finally:
            await client.close()
            await stop_host(root)


async def test_a_read_only_state_directory_never_stops_runs(root: Path,
                                                            tmp_path: Path) -> None:
    with tmpfs(tmp_path / "state", "1m") as state:
        env = {"SIDECAR_STATE_DIR": str(state)}
        client = await HostClient.serve(root, "cli", env=env)
        await client.request("sidecar/run", {"command": "Echo", "wait": True})
        await client.close()
        await stop_host(root)
        subprocess.run(["mount", "-o", "remount,ro", str(state)], check=True)

        client = await HostClient.serve(root, "cli", env=env)
        try:
            done = await client.request("sidecar/run", {"command": "Echo", "wait": True})
            assert done["run"]["state"] == "success"
            out = await client.request("sidecar/readOutput", {"runId": done["run"]["runId"]})
            assert out["text"] == "said hello\n"
            info = await client.request("sidecar/hostInfo")
            assert "not being saved" in info["recordsProblem"]
        finally:
            await client.close()
            await stop_host(root)



async def test_a_client_attaching_mid_run_gets_its_output_from_then_on(root: Path) -> None:
    first = await HostClient.serve(root, "Neovim")
    try:
        started = await first.request("sidecar/run", {"command": "Deploy", "runKey": "r"})
        run_id = started["run"]["runId"]
        await first.wait_for(lambda: "deploying" in first.output(run_id))
        second = await HostClient.serve(root, "agent")
        found = await second.request("sidecar/run", {"command": "Deploy", "runKey": "r"})
        assert found["existing"] is True and found["run"]["runId"] == run_id
        await release(root, "released\n")
        final = await second.final(run_id)
        assert final["state"] == "success"
        chunks = [c for c in second.notifications("sidecar/outputChunk")
                  if c["runId"] == run_id]
        assert "".join(c["text"] for c in chunks) == "released\n"
        assert chunks[0]["offset"] == len("deploying\n")
        await second.close()
    finally:
        await first.close()
