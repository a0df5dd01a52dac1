"""Host and sessions: sessions come and go, the host and its runs stay."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from sidecar.app import protocol as P
from sidecar.app.service import Service
from sidecar.host.host import Host
from sidecar.host.session import Session

pytestmark = pytest.mark.timeout(30)


class Inbox:
    """A session's outbox that keeps what it is sent."""

    pending_bytes = 0

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.changed = asyncio.Event()

    def send(self, message: dict[str, Any]) -> None:
        self.messages.append(message)
        self.changed.set()

    def of(self, method: str) -> list[dict[str, Any]]:
        return [m["params"] for m in self.messages if m["method"] == method]

    async def until(self, pred: Any, timeout: float = 10.0) -> None:
        async def loop() -> None:
            while not pred():
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(loop(), timeout)


def _config(root: Path, text: str) -> None:
    (root / "sidecar.toml").write_text(text)


GATE = '[[command]]\nname = "Gate"\ncommand = "sleep 30"\n' \
       '[[command]]\nname = "Quick"\ncommand = "true"\ntriggers = ["go"]\n'


async def test_a_session_ending_does_not_end_the_host(tmp_path: Path) -> None:
    _config(tmp_path, GATE)
    host = Host(tmp_path)
    a, b = Inbox(), Inbox()
    first, second = Session(host, a), Session(host, b)
    assert host.reload().ok
    service = Service(host)
    try:
        run = (await service.run(P.RunParams(command="Gate"))).run
        first.close()
        assert not host.closing and host.orchestrator is not None
        handle = host.orchestrator.get_handle_by_run_id(run.run_id)
        assert handle is not None and not handle.is_finalized  # its run goes on
        sent_to_first = len(a.messages)
        await service.trigger(P.TriggerParams(event="go"))
        await b.until(lambda: any(u["command"] == "Quick" and u["state"] == "success"
                                  for u in b.of(P.N_RUN_UPDATE)))
        assert len(a.messages) == sent_to_first  # a closed session gets nothing more
    finally:
        await host.close()
        second.close()
    assert any(u["runId"] == run.run_id and u["state"] == "cancelled"
               for u in b.of(P.N_RUN_UPDATE))


async def test_sessions_attached_before_the_first_config_see_everything(
        tmp_path: Path) -> None:
    """A session attaches before a valid config exists; the orchestrator the host creates
    later (a fixed config) reaches it, ``orchestrator_started`` included."""
    _config(tmp_path, '[[command]]\nname = "Broken"\n')
    host = Host(tmp_path)
    inbox = Inbox()
    session = Session(host, inbox)
    try:
        host.start()
        first = host.reload()
        assert not first.ok and not first.had_config and host.orchestrator is None
        _config(tmp_path, '[[command]]\nname = "Up"\ncommand = "true"\n'
                          'triggers = ["orchestrator_started"]\n')
        assert host.reload().ok
        await inbox.until(lambda: any(u["command"] == "Up" and u["state"] == "success"
                                      for u in inbox.of(P.N_RUN_UPDATE)))
        assert inbox.of(P.N_EVENT)[0]["name"] == "orchestrator_started"
    finally:
        await host.close()
        session.close()


async def test_a_broken_reload_keeps_the_previous_config(tmp_path: Path) -> None:
    _config(tmp_path, GATE)
    host = Host(tmp_path)
    seen: list[Any] = []
    host.on_reload(seen.append)
    try:
        assert host.reload().ok
        _config(tmp_path, GATE + '[[command]]\nname = "Quick"\ncommand = "true"\n')
        outcome = host.reload()
        assert not outcome.ok and outcome.had_config
        assert outcome.error is not None and "Quick" in outcome.error
        assert host.orchestrator is not None
        assert host.orchestrator.list_commands() == ["Gate", "Quick"]
        assert [o.ok for o in seen] == [True, False]
        result = await Service(host).reload()
        assert result.ok is False and result.commands == ["Gate", "Quick"]
    finally:
        await host.close()


async def test_held_notifications_follow_the_response(tmp_path: Path) -> None:
    """What a request causes waits until its response is written; later updates of the runs
    it started wait too, so a client never learns of a run before its id."""
    _config(tmp_path, GATE)
    host = Host(tmp_path)
    inbox = Inbox()
    session = Session(host, inbox)
    assert host.reload().ok
    try:
        async def request() -> P.RunResultWire:
            session.hold("req-1")
            return await Service(host).run(P.RunParams(command="Quick"))

        result = await asyncio.ensure_future(request())
        handle = host.orchestrator.get_handle_by_run_id(result.run.run_id)  # type: ignore
        assert handle is not None
        await handle.wait(10)
        assert inbox.of(P.N_RUN_UPDATE) == []  # all held
        session.response_sent("req-1")
        states = [u["state"] for u in inbox.of(P.N_RUN_UPDATE)]
        assert states[0] == "pending" and states[-1] == "success"
    finally:
        await host.close()
        session.close()
