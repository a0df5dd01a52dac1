"""One host per workspace, shared by every client: editors (``sidecar serve``, attached), the
command line and agents on the host's socket. Real processes throughout: the relay, the
detached host, its socket and lock, and the commands it runs."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import stat
import textwrap
from pathlib import Path

import psutil
import pytest
from hostclient import HostClient, make_gate, release
from proctools import wait_gone

from sidecar.host.listener import peer_allowed
from sidecar.host.locate import HostError, Workspace, host_pid, socket_dir

pytestmark = pytest.mark.timeout(60)

CONFIG = """\
[[command]]
name = "Lint"
command = "cat gate"
triggers = ["lint"]

[[command]]
name = "Test"
command = "echo tested"
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


async def host_of(client: HostClient) -> dict:
    info: dict = await client.request("sidecar/hostInfo")
    return info


# ------------------------------------------------------------------------------ sharing
async def test_editors_and_the_command_line_share_one_orchestrator(root: Path) -> None:
    code = await HostClient.serve(root, "Visual Studio Code")
    vim = await HostClient.serve(root, "Neovim")
    try:
        info = await host_of(code)
        assert info["pid"] == (await host_of(vim))["pid"] != os.getpid()
        assert info["protocolVersion"] == 1 and info["root"] == str(root.resolve())
        assert info["socket"] == Workspace(str(root)).socket_path
        assert sorted(s["clientName"] for s in info["sessions"]) == ["Neovim",
                                                                     "Visual Studio Code"]
        assert info["sessions"][0] == {"clientName": "Visual Studio Code", "current": True}

        started = await code.request("sidecar/run", {"command": "Lint"})
        run_id = started["run"]["runId"]
        await release(root)
        for client in (code, vim):
            final = await client.final(run_id)
            assert final["state"] == "success" and final["startedBy"] == "Visual Studio Code"
            chained = await client.final_of("Test")
            assert chained["startedBy"] == "Visual Studio Code"
            assert chained["upstreamRunIds"] == [run_id]
        assert code.output(run_id) == vim.output(run_id) == "linted\n"

        # A client on the socket (the command line) is seen by both editors.
        cli = await HostClient.socket(info["socket"], root, "cli")
        result = await cli.request("sidecar/trigger", {"event": "lint"})
        second = result["started"][0]["runId"]
        await release(root)
        for client in (code, vim, cli):
            assert (await client.final(second))["startedBy"] == "cli"
        await cli.close()
    finally:
        assert await code.close() == 0
        assert await vim.close() == 0


async def test_a_client_leaving_mid_run_leaves_the_run_and_the_other_client(root: Path) -> None:
    code = await HostClient.serve(root, "Visual Studio Code")
    vim = await HostClient.serve(root, "Neovim")
    try:
        run_id = (await code.request("sidecar/run", {"command": "Lint"}))["run"]["runId"]
        await vim.wait_for(lambda: any(u["state"] == "running" for u in vim.updates(run_id)))
        await code.kill()  # the editor dies: no shutdown, pipes closed
        await release(root)
        final = await vim.final(run_id)
        assert final["state"] == "success"
        assert vim.output(run_id) == "linted\n"
        info = await host_of(vim)
        assert [s["clientName"] for s in info["sessions"]] == ["Neovim"]
    finally:
        await code.kill()
        await vim.close()


async def test_unsaved_text_is_per_session_and_a_saved_file_reloads_everyone(
        root: Path) -> None:
    code = await HostClient.serve(root, "Visual Studio Code")
    vim = await HostClient.serve(root, "Neovim")
    try:
        uri = (root / "sidecar.toml").as_uri()
        extra = CONFIG + '\n[[command]]\nname = "Extra"\ncommand = "true"\n'
        code.send("textDocument/didOpen", {"textDocument": {
            "uri": uri, "languageId": "toml", "version": 1, "text": extra}}, notify=True)
        names = [c["name"] for c in (await vim.request("sidecar/commands"))["commands"]]
        assert "Extra" not in names
        names = [c["name"] for c in (await code.request("sidecar/commands"))["commands"]]
        assert "Extra" not in names  # unsaved text is not the configuration

        seen = len(vim.notifications("textDocument/publishDiagnostics"))
        (root / "sidecar.toml").write_text(extra)  # saved (by anyone): the host reloads
        await vim.wait_for(
            lambda: len(vim.notifications("textDocument/publishDiagnostics")) > seen)
        for client in (code, vim):
            names = [c["name"] for c in (await client.request("sidecar/commands"))["commands"]]
            assert "Extra" in names
    finally:
        await code.close()
        await vim.close()


# ------------------------------------------------------------------------------ one host
async def test_twenty_clients_starting_at_once_get_one_host(root: Path) -> None:
    clients = await asyncio.gather(*(HostClient.serve(root, f"client-{i}")
                                     for i in range(20)))
    try:
        pids = {(await host_of(c))["pid"] for c in clients}
        assert len(pids) == 1
        info = await host_of(clients[0])
        assert len(info["sessions"]) == 20
        hosts = [p for p in psutil.process_iter(["cmdline"])
                 if "sidecar.host" in (p.info["cmdline"] or [])
                 and str(root.resolve()) in (p.info["cmdline"] or [])]
        assert [p.pid for p in hosts] == list(pids)
    finally:
        await asyncio.gather(*(c.close() for c in clients))


async def test_a_stale_socket_file_is_replaced(root: Path) -> None:
    path = Workspace(str(root)).socket_path
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)  # bound, never listening, then abandoned: nobody answers
    stale.close()
    assert stat.S_ISSOCK(os.stat(path).st_mode)
    client = await HostClient.serve(root, "Neovim")
    try:
        info = await host_of(client)
        assert info["socket"] == path and info["pid"] != os.getpid()
    finally:
        await client.close()


async def test_a_killed_host_leaves_no_process_and_the_next_client_starts_a_fresh_one(
        root: Path) -> None:
    client = await HostClient.serve(root, "Neovim")
    info = await host_of(client)
    run = (await client.request("sidecar/trigger", {"event": "sleep"}))["started"][0]
    await client.wait_for(lambda: any(u["state"] == "running"
                                      for u in client.updates(run["runId"])))
    host = psutil.Process(info["pid"])
    sleepers = [p for p in host.children(recursive=True) if p.name() == "sleep"]
    assert len(sleepers) == 1
    os.kill(info["pid"], signal.SIGKILL)
    assert await asyncio.wait_for(client.proc.wait(), 15) != 0  # the relay says so
    stderr = (await client.proc.stderr.read()).decode()
    assert "the host stopped" in stderr and "host.log" in stderr
    assert wait_gone(sleepers[0].pid), "the run outlived its host"
    await client.kill()

    again = await HostClient.serve(root, "Neovim")
    try:
        assert (await host_of(again))["pid"] != info["pid"]
    finally:
        await again.close()


async def test_a_signalled_host_cancels_its_runs_and_tells_its_clients(root: Path) -> None:
    client = await HostClient.serve(root, "Neovim")
    info = await host_of(client)
    run_id = (await client.request("sidecar/trigger", {"event": "sleep"}))["started"][0]["runId"]
    await client.wait_for(lambda: any(u["state"] == "running" for u in client.updates(run_id)))
    os.kill(info["pid"], signal.SIGTERM)
    assert (await client.final(run_id))["state"] == "cancelled"
    assert await asyncio.wait_for(client.proc.wait(), 15) == 1
    assert wait_gone(info["pid"])
    await client.kill()


# ------------------------------------------------------------------------------ idle exit
async def test_the_host_exits_when_idle_but_not_while_a_run_is_active(root: Path) -> None:
    (root / "sidecar.toml").write_text(CONFIG + textwrap.dedent("""
        [[command]]
        name = "Slow"
        command = "sleep 1 && touch finished"
        triggers = ["slow"]
        """))
    env = {"SIDECAR_HOST_IDLE_TIMEOUT": "0.2"}
    client = await HostClient.serve(root, "Neovim", env=env)
    info = await host_of(client)
    await client.request("sidecar/trigger", {"event": "slow"})
    assert await client.close() == 0  # no client left; a run is active
    assert wait_gone(info["pid"]), "the host did not exit after its idle timeout"
    # Idle exit never cancels: the run had ended (its file exists) before the host left.
    assert (root / "finished").exists()
    assert not os.path.exists(info["socket"])


async def test_idle_timeout_from_the_config(root: Path) -> None:
    (root / "sidecar.toml").write_text("[host]\nidle_timeout_secs = 0.2\n" + CONFIG)
    client = await HostClient.serve(root, "Neovim", env={"SIDECAR_HOST_IDLE_TIMEOUT": ""})
    pid = (await host_of(client))["pid"]
    await client.close()
    assert wait_gone(pid)


# ------------------------------------------------------------------------------ security
def test_socket_directory_and_socket_permissions(root: Path) -> None:
    from sidecar.host.locate import connect

    sock = connect(Workspace(str(root)))
    sock.close()
    directory = socket_dir()
    assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
    ws = Workspace(str(root))
    assert stat.S_IMODE(os.stat(ws.socket_path).st_mode) == 0o600
    assert host_pid(ws.lock_path) is not None


def test_a_socket_directory_others_can_enter_is_refused() -> None:
    directory = socket_dir()
    os.chmod(directory, 0o755)
    with pytest.raises(HostError, match="unsafe socket directory"):
        socket_dir()


def test_the_peer_check_refuses_another_user() -> None:
    uid = os.getuid()
    assert peer_allowed((1234, uid, 0), uid)
    assert not peer_allowed((1234, uid + 1, 0), uid)
    assert not peer_allowed((1234, 65534, 65534), 0)


def test_the_state_directory_ignores_itself(root: Path) -> None:
    from sidecar.host.locate import connect

    connect(Workspace(str(root))).close()
    assert (root / ".sidecar" / ".gitignore").read_text().splitlines()[-1] == "*"
    assert "host" in (root / ".sidecar" / "host.log").read_text()


async def test_a_client_that_stops_reading_slows_neither_the_others_nor_the_commands(
        root: Path) -> None:
    (root / "sidecar.toml").write_text(CONFIG + textwrap.dedent("""
        [[command]]
        name = "Big"
        command = "head -c 30000000 /dev/zero"
        triggers = ["big"]
        """))
    stuck = await HostClient.serve(root, "stuck")
    vim = await HostClient.serve(root, "Neovim")
    try:
        stuck.stop_reading()  # the host's writes to it back up
        run_id = (await vim.request("sidecar/trigger", {"event": "big"}))["started"][0]["runId"]
        final = await vim.final(run_id, timeout=30)
        assert final["state"] == "success" and final["outputSize"] == 30_000_000
        chunks = [p for p in vim.notifications("sidecar/outputChunk") if p["runId"] == run_id]
        assert sum(p["size"] for p in chunks) == 30_000_000  # every byte, sent or marked
        info = await host_of(vim)
        assert sorted(s["clientName"] for s in info["sessions"]) == ["Neovim", "stuck"]
        assert psutil.Process(info["pid"]).memory_info().rss < 200 << 20
    finally:
        await stuck.kill()
        await vim.close()


async def test_a_broken_config_on_disk_keeps_the_last_good_one_and_tells_everyone(
        root: Path) -> None:
    code = await HostClient.serve(root, "Visual Studio Code")
    vim = await HostClient.serve(root, "Neovim")
    try:
        (root / "sidecar.toml").write_text(CONFIG + "\n[[command]\nname = \n")
        for client in (code, vim):
            message = await client.wait_for(lambda c=client: next(
                (m for m in c.notifications("window/showMessage")
                 if "config not loaded" in m["message"]), None))
            assert "keeping the previous configuration" in message["message"]
            names = [c["name"] for c in (await client.request("sidecar/commands"))["commands"]]
            assert names == ["Lint", "Test", "Sleep"]
    finally:
        await code.close()
        await vim.close()


def test_the_state_directory_can_be_elsewhere(root: Path, tmp_path_factory: pytest.TempPathFactory,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from sidecar.host.locate import connect

    state = tmp_path_factory.mktemp("state")
    monkeypatch.setenv("SIDECAR_STATE_DIR", str(state))
    connect(Workspace(str(root))).close()
    assert "serving" in (state / "host.log").read_text()
    assert not (root / ".sidecar").exists()
