"""``sidecar serve --standalone``'s own options: ``--config``, ``--log-level`` and ``$SIDECAR_LOG``."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from conftest import RawClient, write_config

pytestmark = pytest.mark.timeout(30)

SERVE = [sys.executable, "-m", "sidecar", "serve", "--standalone"]


async def _commands(raw: RawClient, root: Path, options: object = None) -> list[str]:
    await raw.initialize(root, options)
    reply = await raw.response(raw.send("sidecar/commands"))
    assert "error" not in reply, reply
    return [c["name"] for c in reply["result"]["commands"]]


async def _stop(raw: RawClient) -> None:
    await raw.response(raw.send("shutdown"))
    raw.send("exit", notify=True)
    assert await raw.proc.wait() == 0


async def test_serve_config_names_the_config_files(tmp_path: Path) -> None:
    write_config(tmp_path, '[[command]]\nname = "Default"\ncommand = "true"\n')
    other = write_config(tmp_path, '[[command]]\nname = "Other"\ncommand = "true"\n',
                         name="other.toml")
    async with await RawClient.spawn(cmd=[*SERVE, "--config", str(other)]) as raw:
        assert await _commands(raw, tmp_path) == ["Other"]
        await _stop(raw)
    # The client's initializationOptions.configFiles win over the command line.
    async with await RawClient.spawn(cmd=[*SERVE, "--config", str(other)]) as raw:
        assert await _commands(raw, tmp_path, {"configFiles": ["sidecar.toml"]}) == ["Default"]
        await _stop(raw)


@pytest.mark.parametrize("how", ["option", "environment"])
async def test_serve_log_level(tmp_path: Path, how: str) -> None:
    write_config(tmp_path, '[[command]]\nname = "A"\ncommand = "true"\n')
    cmd = [*SERVE, "--log-level", "DEBUG"] if how == "option" else SERVE
    env = {"SIDECAR_LOG": "debug"} if how == "environment" else {"SIDECAR_LOG": ""}
    async with await RawClient.spawn(env=env, cmd=cmd, capture_stderr=True) as raw:
        await _commands(raw, tmp_path)
        await _stop(raw)
        log = await raw.stderr()
    assert " INFO sidecar.host: config loaded: 1 command(s)" in log, log


async def test_serve_log_level_option_wins_over_the_environment(tmp_path: Path) -> None:
    write_config(tmp_path, '[[command]]\nname = "A"\ncommand = "true"\n')
    async with await RawClient.spawn(env={"SIDECAR_LOG": "DEBUG"}, capture_stderr=True,
                                     cmd=[*SERVE, "--log-level", "ERROR"]) as raw:
        await _commands(raw, tmp_path)
        await _stop(raw)
        log = await raw.stderr()
    assert " DEBUG " not in log and " INFO " not in log, log
