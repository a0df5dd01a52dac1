"""What the command line shows: runs as they happen, and tables of commands and runs.

:class:`Reporter` prints notifications: it is the outbox (:class:`sidecar.host.session.Outbox`)
of an in-process session (``--no-host``), and gets the notifications of the runs a host-backed
command follows (:mod:`.remote`). It prints coloured lines on a terminal, plain lines
otherwise, or with ``--json`` each notification as one JSON line ``{"method": …, "params": …}``
(the wire form of protocol.md). :func:`status_table`, :func:`runs_table`,
:func:`history_table` and :func:`cleaned_table` lay out wire results (``sidecar/status``,
``RunInfo`` lists, ``sidecar/clean``); :func:`found_label` says what a run key found instead
of starting a run.

Standard library only (with :mod:`sidecar.app.methods` and :mod:`sidecar.app.present`): the
host-backed commands import no core.
"""

from __future__ import annotations

import json
import os
from typing import Any, TextIO

from sidecar.app import methods as M
from sidecar.app.present import icon, run_label, why_label

COLORS = {"running": "36", "success": "32", "failed": "31", "cancelled": "33", "lost": "31"}


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
        self._ended: set[str] = set()

    def _c(self, code: str, text: str) -> str:
        return f"\033[{code}m{text}\033[0m" if self.tty else text

    def send(self, message: dict[str, Any]) -> None:
        method, params = message.get("method"), message.get("params") or {}
        if method == M.N_RUN_UPDATE and params["state"] in M.FINAL_STATES:
            self.finals.append(params)
            self._ended.add(params["runId"])
        if self.json:
            self.stream.write(json.dumps({"method": method, "params": params}) + "\n")
        elif method == M.N_OUTPUT_CHUNK:
            self._output(params)
        elif method == M.N_RUN_UPDATE:
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

    def ended(self, run: dict[str, Any]) -> None:
        """A run (``RunInfo``) known to be final without its final ``sidecar/runUpdate``
        having come here (a run found by its key: finished already, or another process's):
        shown, and counted, as that update would have been; nothing if it was."""
        if run["state"] in M.FINAL_STATES and run["runId"] not in self._ended:
            self.send({"method": M.N_RUN_UPDATE,
                       "params": {**run, "previous": run.get("previous")}})

    def exit_code(self) -> int:
        """:func:`exit_code_of` the runs that ended, in the order they ended."""
        return exit_code_of(self.finals)


def exit_code_of(runs: list[dict[str, Any]]) -> int:
    """The result of runs (``RunInfo``) as an exit code: 0 when every run succeeded; else
    the first failed, cancelled or lost one decides: a failed run's exit status (1 when it
    has none or it is outside 1..125), 1 for a cancelled or lost run."""
    for run in runs:
        if run["state"] == "failed":
            code = run["exitCode"]
            return code if code and 0 < code < 126 else 1
        if run["state"] in ("cancelled", "lost"):
            return 1
    return 0


def found_label(run: dict[str, Any]) -> str:
    """What ``run --key`` found instead of starting a run (``existing``): ``run 1a2b3c4d of
    Deploy (key nightly, attempt 2) is already running; following it``."""
    head = (f"run {run['runId'][:8]} of {run['command']} (key {run['runKey']}, attempt "
            f"{run['attempt']})")
    if run["state"] not in M.FINAL_STATES:
        return f"{head} is already {run['state']}; following it"
    return (f"{head} already ran ({run['state']}); strict key: not started again "
            f"(`sidecar unlock {run['command']} --key {run['runKey']}` lets it run once more)")


# ------------------------------------------------------------------------------- tables
def clock(iso: str | None, today: str | None = None) -> str:
    """``14:03:05`` for an ISO 8601 time of today, ``2026-11-22 14:03:05`` for another day,
    ``-`` for none."""
    if not iso:
        return "-"
    if today is None:
        import time

        today = time.strftime("%Y-%m-%d")
    return iso[11:19] if iso[:10] == today else f"{iso[:10]} {iso[11:19]}"


def result_label(run: dict[str, Any]) -> str:
    """``✓ success in 1.2s``, ``✗ failed in 3.4s (exit 2)``, ``▶ running``."""
    return f"{icon(run['state'])} {run_label(run['state'], run['exitCode'], run['durationSecs'])}"


def table(rows: list[list[str]]) -> list[str]:
    """Rows as lines with aligned columns (two spaces apart)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))] if rows else []
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
            for row in rows]


def status_table(commands: list[dict[str, Any]]) -> list[str]:
    """Every command of a ``sidecar/status`` result: state, active runs, last run."""
    rows = [["COMMAND", "STATE", "ACTIVE", "LAST RUN"]]
    for c in commands:
        last = c["lastRun"]
        when = f" at {clock(last['endTime'] or last['startTime'])}" if last else ""
        rows.append([c["name"], c["state"], str(c["activeCount"]),
                     result_label(last) + when if last else "-"])
    return table(rows)


def runs_table(runs: list[dict[str, Any]]) -> list[str]:
    """Runs (``RunInfo``) with who started them and why."""
    rows = [["RUN", "COMMAND", "STATE", "STARTED", "BY", "WHY"]]
    rows += [[r["runId"], r["command"], result_label(r), clock(r["startTime"]),
              r["startedBy"], why_label(r["triggerChain"])] for r in runs]
    return table(rows)


def history_table(runs: list[dict[str, Any]]) -> list[str]:
    """A command's finished runs (``sidecar/history``), most recent first; with their run
    key and attempt when one has a key, and a rerun's or unlock's reason."""
    keyed = any(r.get("runKey") for r in runs)
    rows = [["RUN", *(["KEY", "ATTEMPT"] if keyed else []), "RESULT", "STARTED", "BY", "WHY"]]
    for r in runs:
        why = why_label(r["triggerChain"])
        if r.get("reason"):
            why += f" ({r['reason']})"
        key = [r.get("runKey") or "-", str(r.get("attempt", 1))] if keyed else []
        rows.append([r["runId"], *key, result_label(r), clock(r["startTime"]), r["startedBy"],
                     why])
    return table(rows)


def cleaned_table(runs: list[dict[str, Any]]) -> list[str]:
    """The runs of a ``sidecar/clean`` result (``CleanedRun``)."""
    rows = [["RUN", "COMMAND", "KEY", "STATE", "ENDED"]]
    rows += [[r["runId"], r["command"], r["runKey"] or "-", r["state"], clock(r["endTime"])]
             for r in runs]
    return table(rows)
