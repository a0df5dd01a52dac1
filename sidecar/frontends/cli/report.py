"""What the command line shows of a session's notifications.

:class:`Reporter` is the CLI session's outbox (:class:`sidecar.host.session.Outbox`): it gets
the same notifications an editor gets and prints them: coloured lines on a terminal, plain
lines otherwise, or with ``--json`` each notification as one JSON line ``{"method": …,
"params": …}`` (the wire form of protocol.md).
"""

from __future__ import annotations

import json
import os
from typing import Any, TextIO

from sidecar.app import protocol as P
from sidecar.app.present import icon, run_label, why_label

COLORS = {"running": "36", "success": "32", "failed": "31", "cancelled": "33"}


class Reporter:
    """Prints notifications; remembers the final state of every run for the exit code."""

    pending_bytes = 0  # written synchronously

    def __init__(self, stream: TextIO, as_json: bool) -> None:
        self.stream = stream
        self.json = as_json
        self.tty = stream.isatty() and not as_json and os.environ.get("NO_COLOR") is None
        self._partial: dict[str, str] = {}
        #: the final ``sidecar/runUpdate`` params of every run, in the order they ended
        self.finals: list[dict[str, Any]] = []

    def _c(self, code: str, text: str) -> str:
        return f"\033[{code}m{text}\033[0m" if self.tty else text

    def send(self, message: dict[str, Any]) -> None:
        method, params = message.get("method"), message.get("params") or {}
        if method == P.N_RUN_UPDATE and params["state"] in P.FINAL_STATES:
            self.finals.append(params)
        if self.json:
            self.stream.write(json.dumps({"method": method, "params": params}) + "\n")
        elif method == P.N_OUTPUT_CHUNK:
            self._output(params)
        elif method == P.N_RUN_UPDATE:
            self._run(params)
        self.stream.flush()

    def _output(self, chunk: dict[str, Any]) -> None:
        text = self._partial.pop(chunk["runId"], "") + chunk["text"]
        *lines, rest = text.split("\n")
        if rest:
            self._partial[chunk["runId"]] = rest
        prefix = self._c("2", f"[{chunk['command']}] ")
        for line in lines:
            self.stream.write(f"{prefix}{line}\n")

    def _run(self, run: dict[str, Any]) -> None:
        state = run["state"]
        if state == "pending":
            return
        if state != "running" and run["runId"] in self._partial:
            rest = self._partial.pop(run["runId"])
            self.stream.write(self._c("2", f"[{run['command']}] ") + rest + "\n")
        line = f"{icon(state)} {run['command']} "
        line += run_label(state, run["exitCode"], run["durationSecs"])
        if state == "running":
            line += f"  ({why_label(run['triggerChain'])})"
        elif run["comment"]:
            line += f" — {run['comment']}"
        elif run["error"] and state == "failed":
            line += f" — {run['error']}"
        self.stream.write(self._c(COLORS.get(state, "0"), line) + "\n")

    def exit_code(self) -> int:
        """0 when every run succeeded; a failed run's exit status (1 when it has none or it
        is outside 1..125); 1 for a cancelled run."""
        for run in self.finals:
            if run["state"] == "failed":
                code = run["exitCode"]
                return code if code and 0 < code < 126 else 1
            if run["state"] == "cancelled":
                return 1
        return 0
