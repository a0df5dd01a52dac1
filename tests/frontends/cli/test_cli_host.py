"""The command line through the workspace's host: real ``sidecar`` processes, the detached host
they start or find, and other clients of that host (:class:`HostClient`) watching what they
do. Runs are held with ``cat gate`` (a FIFO) where a test needs one to be running; nothing
waits by sleeping."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil
import pytest
from proctools import wait_gone

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "host"))
from hostclient import HostClient, make_gate, release

from sidecar.host.locate import Workspace, host_pid

pytestmark = pytest.mark.timeout(60)

_SCRIPT = Path(sys.executable).with_name("sidecar")
SIDECAR = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "sidecar"]

CONFIG = """\
[on_save]
"*.py" = "saved"

[[command]]
name = "Gate"
command = "cat gate"
triggers = ["gate", "saved"]

[[command]]
name = "Step1"
command = "echo step one"
triggers = ["steps"]

[[command]]
name = "Step2"
command = "echo step two; cat gate"
triggers = ["command_success:Step1"]

[[command]]
name = "Lint"
command = "echo linting"

[[command]]
name = "Tests"
command = "echo testing; exit 3"
triggers = ["command_success:Lint"]

[[command]]
name = "Sleep"
command = "sleep 60"
triggers = ["sleep"]
"""


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "sidecar.toml").write_text(CONFIG)
    make_gate(tmp_path)
    return tmp_path


def sidecar(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SIDECAR, *args], cwd=cwd, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=50,
                          env={**os.environ, "NO_COLOR": "1"})


async def asidecar(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """:func:`sidecar` without blocking the event loop (a HostClient reads meanwhile)."""
    return await asyncio.to_thread(sidecar, *args, cwd=cwd)


async def spawn(*args: str, cwd: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *SIDECAR, *args, cwd=cwd, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "NO_COLOR": "1"})


def socket_of(root: Path) -> str:
    return Workspace(str(root)).socket_path


def running(client: HostClient, command: str) -> Any:
    """A predicate: the first ``running`` update of ``command`` that ``client`` saw."""
    return lambda: next((u for u in client.updates(command=command)
                         if u["state"] == "running"), None)


def host_info(root: Path) -> dict[str, Any]:
    proc = sidecar("host", "status", "--json", cwd=root)
    assert proc.returncode == 0, proc.stderr
    info: dict[str, Any] = json.loads(proc.stdout)
    return info


# ------------------------------------------------------------------------------ run
def test_run_follows_its_chain_through_the_host_which_stays(root: Path) -> None:
    proc = sidecar("run", "Lint", cwd=root)
    lines = proc.stdout.splitlines()
    assert "[Lint] linting" in lines and "[Tests] testing" in lines, proc.stdout + proc.stderr
    assert any(line.startswith("✓ Lint success") for line in lines)
    assert any(line.startswith("✗ Tests failed") and "(exit 3)" in line for line in lines)
    assert proc.returncode == 3
    pid = host_pid(Workspace(str(root)).lock_path)
    assert pid is not None and pid != os.getpid()
    info = host_info(root)
    assert info["pid"] == pid and info["activeRuns"] == []

    proc = sidecar("run", "Lint", "--json", cwd=root)
    assert proc.returncode == 3
    messages = [json.loads(line) for line in proc.stdout.splitlines()]
    finals = [m["params"] for m in messages if m["method"] == "sidecar/runUpdate"
              and m["params"]["state"] in ("success", "failed")]
    assert [(p["command"], p["startedBy"]) for p in finals] == [("Lint", "cli"),
                                                                ("Tests", "cli")]
    assert finals[1]["upstreamRunIds"] == [finals[0]["runId"]]
    chunks = [m["params"]["text"] for m in messages if m["method"] == "sidecar/outputChunk"]
    assert "".join(chunks) == "linting\ntesting\n"
    assert host_info(root)["pid"] == pid  # the same host, still there


def test_the_workspace_is_found_from_below_and_named_from_elsewhere(root: Path,
                                                                    tmp_path_factory: Any
                                                                    ) -> None:
    below = root / "src" / "pkg"
    below.mkdir(parents=True)
    assert sidecar("run", "Lint", cwd=below).returncode == 3
    pid = host_pid(Workspace(str(root)).lock_path)
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    proc = sidecar("host", "status", "--json", "--workspace", str(root), cwd=elsewhere)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["pid"] == pid
    proc = sidecar("status", "Lnt", "--workspace", str(root), cwd=elsewhere)
    assert proc.returncode == 1 and "did you mean 'Lint'?" in proc.stderr


async def test_ctrl_c_cancels_the_runs_it_started_and_their_chain_only(root: Path) -> None:
    other = await HostClient.serve(root, "Neovim")
    try:
        theirs = (await other.request("sidecar/trigger", {"event": "sleep"}))["started"][0]
        await other.wait_for(running(other, "Sleep"))
        cli = await spawn("run", "Step1", cwd=root)
        step2 = await other.wait_for(running(other, "Step2"))  # Step1's chain, held by the gate
        assert step2["startedBy"] == "cli" and len(step2["upstreamRunIds"]) == 1
        cli.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(cli.wait(), 20) == 130
        stdout = (await cli.stdout.read()).decode()
        stderr = (await cli.stderr.read()).decode()
        assert "▶ Step2 running" in stdout and "⊘ Step2 cancelled" in stdout, stdout + stderr
        assert "interrupted" in stderr
        final = await other.final(step2["runId"])
        assert final["state"] == "cancelled" and final["comment"] == "cancelled by client"
        # The other client's run goes on.
        info = await other.request("sidecar/hostInfo")
        assert [r["runId"] for r in info["activeRuns"]] == [theirs["runId"]]
        assert not any(u["state"] != "running" and u["state"] != "pending"
                       for u in other.updates(theirs["runId"]))
    finally:
        await other.request("sidecar/cancel", {"all": True})
        await other.close()


# ------------------------------------------------------------------------------ save
async def test_save_returns_at_once_while_the_run_it_started_goes_on(root: Path) -> None:
    watcher = await HostClient.serve(root, "Neovim")
    try:
        (root / "app.py").write_text("x = 1\n")
        proc = await asidecar("save", "app.py", cwd=root)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout == ""
        # The save process is gone; its run is still held by the gate.
        info = await watcher.request("sidecar/hostInfo")
        (run,) = info["activeRuns"]
        assert (run["command"], run["startedBy"]) == ("Gate", "hook")
        assert run["state"] in ("pending", "running")
        assert run["triggerChain"] == ["saved"]
        await release(root, "released\n")
        assert (await watcher.final(run["runId"]))["state"] == "success"

        proc = await asidecar("save", "app.py", cwd=root)  # same file, same mtime
        assert proc.returncode == 0 and "already handled" in proc.stderr
        proc = await asidecar("save", "notes.txt", cwd=root)
        assert proc.returncode == 0 and "no [on_save] glob matches" in proc.stderr
    finally:
        await watcher.close()


async def test_save_wait_returns_the_result_of_its_runs(root: Path) -> None:
    (root / "sidecar.toml").write_text('[on_save]\n"*.py" = "saved"\n[[command]]\n'
                                       'name = "Check"\ncommand = "echo checked; exit 4"\n'
                                       'triggers = ["saved"]\n')
    (root / "app.py").write_text("x = 1\n")
    proc = await asidecar("save", "--wait", "app.py", cwd=root)
    assert proc.returncode == 4, proc.stderr
    assert "[Check] checked" in proc.stdout.splitlines()
    assert any(line.startswith("✗ Check failed") for line in proc.stdout.splitlines())


def test_save_starts_a_host_when_none_runs(root: Path) -> None:
    ws = Workspace(str(root))
    assert host_pid(ws.lock_path) is None
    (root / "app.py").write_text("x = 1\n")
    assert sidecar("save", "app.py", cwd=root).returncode == 0
    assert host_pid(ws.lock_path) is not None
    history = json.loads(sidecar("status", "Gate", "--json", cwd=root).stdout)
    (run,) = history["activeRuns"]
    assert run["startedBy"] == "hook"
    waiter = subprocess.Popen([*SIDECAR, "wait", "Gate"], cwd=root, stdout=subprocess.PIPE,
                              text=True)
    with open(root / "gate", "w") as gate:
        gate.write("done\n")
    out, _ = waiter.communicate(timeout=20)
    assert waiter.returncode == 0 and out.startswith("✓ Gate success")


# ------------------------------------------------------------------------------ looking
async def test_status_output_and_history_of_another_clients_run(root: Path) -> None:
    editor = await HostClient.serve(root, "Neovim")
    try:
        run = (await editor.request("sidecar/run", {"command": "Gate"}))["run"]
        await editor.wait_for(running(editor, "Gate"))
        proc = await asidecar("status", cwd=root)
        assert proc.returncode == 0, proc.stderr
        table = proc.stdout.splitlines()
        assert any(line.split()[:3] == ["Gate", "running", "1"] for line in table), table
        assert any(line.startswith(run["runId"]) and "Neovim" in line.split()
                   and "manual run" in line for line in table), table
        status = json.loads((await asidecar("status", "Gate", "--json", cwd=root)).stdout)
        assert [(r["runId"], r["startedBy"]) for r in status["activeRuns"]] == [
            (run["runId"], "Neovim")]

        # output --follow streams the run while it goes, and ends with it.
        follow = await spawn("output", "--follow", "Gate", cwd=root)
        gate = await asyncio.to_thread(open, root / "gate", "w")
        try:
            gate.write("first line\n")
            gate.flush()
            assert (await asyncio.wait_for(follow.stdout.readline(), 15)) == b"first line\n"
            gate.write("second line\n")
        finally:
            gate.close()
        assert await asyncio.wait_for(follow.wait(), 15) == 0
        assert await follow.stdout.read() == b"second line\n"

        proc = await asidecar("output", "Gate", cwd=root)
        assert proc.stdout == "first line\nsecond line\n"
        proc = await asidecar("output", run["runId"], cwd=root)
        assert proc.stdout == "first line\nsecond line\n"
        proc = await asidecar("history", "Gate", cwd=root)
        (header, row) = proc.stdout.splitlines()
        assert header.split() == ["RUN", "RESULT", "STARTED", "BY", "WHY"]
        assert row.startswith(run["runId"]) and "✓ success in" in row and "Neovim" in row
        proc = await asidecar("output", "Sleep", cwd=root)
        assert (proc.returncode, proc.stdout, proc.stderr) == (
            1, "", "sidecar: Sleep has not run yet\n")
    finally:
        await editor.close()


async def test_cancel_and_wait(root: Path) -> None:
    editor = await HostClient.serve(root, "Neovim")
    try:
        run_id = (await editor.request("sidecar/run", {"command": "Gate"}))["run"]["runId"]
        await editor.wait_for(running(editor, "Gate"))
        proc = await asidecar("wait", run_id, "--timeout", "0.1", cwd=root)
        assert proc.returncode == 124 and "timed out" in proc.stderr
        assert proc.stdout.startswith("▶ Gate running")
        proc = await asidecar("cancel", run_id, cwd=root)
        assert (proc.returncode, proc.stdout) == (0, "cancelled 1 run\n")
        assert (await editor.final(run_id))["state"] == "cancelled"
        proc = await asidecar("wait", run_id, cwd=root)
        assert proc.returncode == 1 and proc.stdout.startswith("⊘ Gate cancelled")

        await editor.request("sidecar/trigger", {"event": "sleep"})
        proc = await asidecar("cancel", "--command", "Sleep", cwd=root)
        assert proc.stdout == "cancelled 1 run\n"
        await editor.request("sidecar/run", {"command": "Lint"})
        proc = await asidecar("cancel", "--all", cwd=root)
        assert proc.returncode == 0 and proc.stdout.startswith("cancelled ")
        proc = await asidecar("cancel", "00000000-0000-0000-0000-000000000000", cwd=root)
        assert proc.returncode == 1 and "no run with id" in proc.stderr
        proc = await asidecar("cancel", cwd=root)
        assert proc.returncode == 2

        step1 = (await editor.request("sidecar/trigger", {"event": "steps"}))["started"][0]
        waiter = await spawn("wait", "--chain", "--json", step1["runId"], cwd=root)
        await editor.wait_for(running(editor, "Step2"))
        await release(root, "released\n")
        assert await asyncio.wait_for(waiter.wait(), 15) == 0
        result = json.loads(await waiter.stdout.read())
        assert [r["command"] for r in result["runs"]] == ["Step1", "Step2"]
    finally:
        await editor.close()


@pytest.mark.parametrize("command", [["status"], ["history", "Gate"], ["output", "Gate"],
                                     ["cancel", "--all"], ["wait", "Gate"],
                                     ["host", "status"], ["host", "stop"]])
def test_without_a_host_the_commands_say_so(root: Path, command: list[str]) -> None:
    proc = sidecar(*command, cwd=root)
    assert proc.returncode == 1
    assert "no host is running for" in proc.stderr, proc.stderr
    assert host_pid(Workspace(str(root)).lock_path) is None  # and none was started


def test_status_and_history_in_process(root: Path) -> None:
    (root / "sidecar.toml").write_text('[output_storage]\ndirectory = "out"\nkeep_history = 5\n'
                                       + CONFIG)
    assert sidecar("run", "--no-host", "Lint", cwd=root).returncode == 3
    proc = sidecar("history", "--no-host", "Lint", cwd=root)
    assert proc.returncode == 0, proc.stderr
    (header, row) = proc.stdout.splitlines()
    assert "✓ success in" in row and " cli " in row
    proc = sidecar("status", "--no-host", cwd=root)
    assert any(line.split()[:2] == ["Gate", "never_run"] for line in proc.stdout.splitlines())
    assert host_pid(Workspace(str(root)).lock_path) is None


# ------------------------------------------------------------------------------ host
async def test_host_start_status_stop_and_logs(root: Path) -> None:
    proc = await asidecar("host", "start", "--idle-timeout", "30", cwd=root)
    assert proc.returncode == 0, proc.stderr
    fields = dict(line.split(":", 1) for line in proc.stdout.splitlines())
    pid = int(fields["pid"])
    assert fields["socket"].strip() == socket_of(root)
    assert fields["log"].strip() == str(root / ".sidecar" / "host.log")
    again = await asidecar("host", "start", cwd=root)
    assert again.returncode == 0 and "already running" in again.stderr
    assert int(dict(line.split(":", 1) for line in again.stdout.splitlines())["pid"]) == pid

    agent = await HostClient.socket(socket_of(root), root, "agent")
    run_id = (await agent.request("sidecar/trigger", {"event": "sleep"}))["started"][0]["runId"]
    await agent.wait_for(running(agent, "Sleep"))
    (sleeper,) = [p for p in psutil.Process(pid).children(recursive=True) if p.name() == "sleep"]

    proc = await asidecar("host", "status", cwd=root)
    status = proc.stdout.splitlines()
    assert f"pid:         {pid}" in status
    assert f"root:        {root.resolve()}" in status
    assert f"config:      {root.resolve() / 'sidecar.toml'}" in status
    assert "sessions:    1 (agent)" in status and "active runs: 1" in status
    assert any(run_id in line and "agent" in line for line in status)

    logs = await spawn("host", "logs", "--follow", cwd=root)
    await asyncio.wait_for(logs.stdout.readline(), 15)  # the end of the log is out
    stop = await asidecar("host", "stop", cwd=root)
    assert stop.returncode == 0 and stop.stdout == f"stopped the host (pid {pid})\n"
    assert (await agent.final(run_id))["state"] == "cancelled"
    assert wait_gone(pid) and wait_gone(sleeper), "the host or its run outlived host stop"
    seen = b""
    while b"stopped" not in seen:
        seen += await asyncio.wait_for(logs.stdout.readline(), 15)
    logs.send_signal(signal.SIGINT)
    assert await asyncio.wait_for(logs.wait(), 15) == 130
    await agent.kill()

    proc = await asidecar("host", "status", cwd=root)
    assert proc.returncode == 1 and "no host is running" in proc.stderr
    proc = await asidecar("host", "logs", "-n", "2", cwd=root)
    assert proc.returncode == 0 and proc.stdout.splitlines()[-1].endswith(f"host {pid} stopped")


# ------------------------------------------------------------------------------ weight
@pytest.mark.parametrize("command", [["save", "app.py"], ["status"]])
def test_the_host_clients_import_no_asyncio_pygls_attrs_or_core(root: Path,
                                                                command: list[str]) -> None:
    """``sidecar save`` runs in git hooks on every save: through the host it imports the
    standard library's light modules and the client, nothing of the server."""
    (root / "app.py").write_text("x = 1\n")
    assert sidecar("host", "start", cwd=root).returncode == 0
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "sidecar", *command],
                          cwd=root, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines()
                if line.startswith("import time:")}
    assert "sidecar.frontends.cli.remote" in imported
    heavy = {"asyncio", "pygls", "lsprotocol", "attr", "attrs", "cattrs", "logging",
             "sidecar.core.orchestrator", "sidecar.core.runs", "sidecar.core.config",
             "sidecar.app.protocol", "sidecar.app.service", "sidecar.host.host",
             "sidecar.frontends.cli.workspace"}
    assert imported & heavy == set()
