"""``$/progress`` for runs: one work-done progress per run, for clients that support it.

The token (``sidecar/run/<runId>``) is created with ``window/workDoneProgress/create`` when the
run is announced; ``begin`` has the command as title and why it runs as message, ``report``
carries the last output line (at most 5 reports per second), ``end`` the run's label
(:func:`sidecar.app.present.run_label`). Cancelling the progress in the client cancels the
run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from lsprotocol import types as lsp
from pygls.lsp.server import LanguageServer

from sidecar.app.present import run_label, why_label
from sidecar.core.events import RunEvent

logger = logging.getLogger("sidecar.lsp.progress")

PROGRESS_INTERVAL = 0.2  # at most 5 reports per second per run
PROGRESS_CREATE_TIMEOUT = 5.0  # a client that never answers workDoneProgress/create


class _RunProgress:
    __slots__ = ("token", "title", "message", "last_line", "changed", "done", "final", "task")

    def __init__(self, token: str, title: str, message: str) -> None:
        self.token = token
        self.title = title
        self.message = message
        self.last_line = ""
        self.changed = asyncio.Event()
        self.done = asyncio.Event()
        self.final: RunEvent | None = None
        self.task: asyncio.Task[None] | None = None


class RunProgress:
    """Implements :class:`sidecar.host.session.ProgressReporter` with LSP work-done
    progress. ``spawn`` runs a task owned by the server; ``cancel_run`` is called with a run id
    when the user cancels its progress."""

    def __init__(self, server: LanguageServer, spawn: Callable[[Any], Any],
                 cancel_run: Callable[[str], None]) -> None:
        self.server = server
        self._spawn = spawn
        self._cancel_run = cancel_run
        self._runs: dict[str, _RunProgress] = {}

    def started(self, ev: RunEvent) -> None:
        prog = _RunProgress(f"sidecar/run/{ev.run_id}", ev.command, why_label(ev.trigger_chain))
        self._runs[ev.run_id] = prog
        prog.task = self._spawn(self._run(ev.run_id, prog))

    def line(self, run_id: str, line: str) -> None:
        prog = self._runs.get(run_id)
        if prog is not None:
            prog.last_line = line
            prog.changed.set()

    def finished(self, ev: RunEvent) -> None:
        prog = self._runs.get(ev.run_id)
        if prog is not None:
            prog.final = ev
            prog.changed.set()
            prog.done.set()

    async def _run(self, run_id: str, prog: _RunProgress) -> None:
        wdp = self.server.work_done_progress
        try:
            await asyncio.sleep(0)  # let the response of the request that started it go first
            try:
                await asyncio.wait_for(wdp.create_async(prog.token), PROGRESS_CREATE_TIMEOUT)
            except Exception as exc:
                logger.debug("progress token refused: %s", exc)
                return
            wdp.begin(prog.token, lsp.WorkDoneProgressBegin(
                title=prog.title, message=prog.message, cancellable=True))
            fut = wdp.tokens.get(prog.token)
            if fut is not None:
                fut.add_done_callback(lambda f: self._cancelled(run_id, f))
            last_report = ""
            while prog.final is None:
                await prog.changed.wait()
                prog.changed.clear()
                if prog.final is not None:
                    break
                if prog.last_line != last_report:
                    last_report = prog.last_line
                    wdp.report(prog.token, lsp.WorkDoneProgressReport(message=last_report))
                with contextlib.suppress(TimeoutError):
                    # throttle reports; an end is never delayed by it
                    await asyncio.wait_for(prog.done.wait(), PROGRESS_INTERVAL)
            ev = prog.final
            wdp.end(prog.token, lsp.WorkDoneProgressEnd(
                message=run_label(ev.state, ev.exit_code, ev.duration_secs)))
        finally:
            self._runs.pop(run_id, None)
            wdp.tokens.pop(prog.token, None)

    def _cancelled(self, run_id: str, fut: Any) -> None:
        if fut.cancelled():
            self._cancel_run(run_id)
