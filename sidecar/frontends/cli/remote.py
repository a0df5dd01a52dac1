"""The subcommands served by the workspace's host (protocol.md §1), one function each.

``run``, ``trigger``, ``save`` and ``rerun`` start the host when none runs; ``status``,
``history``, ``output``, ``cancel``, ``wait``, ``unlock``, ``clean`` and ``host status|stop|logs``
need one to be running (or say so, exit 1). ``run``, ``trigger`` and ``rerun`` (and ``save
--wait``) follow the runs they started and every run of their chains (:class:`Follower`) and
exit with their result; Ctrl-C cancels those runs, and no others. A run that ``run --key``
found rather than started (``existing``: already running, or a strict key's finished run) is
followed and printed the same way, and never cancelled.

Standard library only, like :mod:`.client`: no asyncio, pygls, attrs or core.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from typing import Any

from sidecar.app import methods as M
from sidecar.host.locate import host_pid

from .client import Client, Interrupted, Message, RpcError
from .common import (
    EXIT_CONFIG,
    EXIT_INTERRUPTED,
    EXIT_TIMEOUT,
    CliError,
    config_files,
    err,
    out,
    parse_vars,
    workspace_of,
)
from .report import Reporter, clock, exit_code_of, found_label, runs_table, status_table
from .wire import (
    clean_params,
    given,
    history_params,
    is_run_id,
    override_label,
    print_cleaned,
    print_history,
    print_unlocked,
    rerun_label,
    rerun_params,
    run_params,
    unlock_params,
)

Runs = list[dict[str, Any]]

STOP_TIMEOUT = 30.0
"""Seconds ``host stop`` waits for the host to cancel its runs and exit."""


def _open(args: argparse.Namespace, name: str = "cli", *, start: bool = False,
          chunks: bool = False) -> Client:
    """A session with the workspace's host (started when ``start``: only with a config, so
    that no host is started for nothing). Without a host, a command that also works in this
    process says so."""
    ws = workspace_of(args)
    if start:
        config_files(ws)
    try:
        return Client.open(ws, name, start=start, chunks=chunks)
    except CliError as exc:
        if hasattr(args, "no_host") and str(exc).startswith("no host is running"):
            raise CliError(f"{exc}, or use --no-host") from None
        raise


# ------------------------------------------------------------------------------- following
class Follower:
    """The runs a command line started and every run of their chains: prints their
    notifications, waits until the chains are over (``sidecar/wait`` with ``chain``) and,
    when interrupted, cancels them (but not the runs that the cancellation itself starts,
    through ``command_cancelled:…`` triggers).

    Runs in :attr:`found` (put there before they are adopted) were found by their run key,
    not started: they and their chains are followed the same way but never cancelled, and a
    run that ended before it was followed (a strict key's) is printed from the answer to
    ``sidecar/wait``, whose runs count for the exit code like the others."""

    def __init__(self, client: Client, reporter: Reporter) -> None:
        self.client = client
        self.reporter = reporter
        self.ours: set[str] = set()
        self.final: set[str] = set()
        #: runs found by their key rather than started, and the runs of their chains
        self.found: set[str] = set()
        self.waits: list[int] = []
        self.cancelling = False
        client.on_notify = self.notify

    def adopt(self, runs: Runs) -> None:
        """Follow these runs (and, through ``upstreamRunIds``, what they start)."""
        for run in runs:
            run_id = run["runId"]
            self.ours.add(run_id)
            self.waits.append(self.client.send(M.M_WAIT, {"runId": run_id, "chain": True}))

    def notify(self, message: Message) -> None:
        params = message.get("params")
        if not isinstance(params, dict):
            return
        method, run_id = message.get("method"), params.get("runId")
        if not isinstance(run_id, str):
            return
        upstream = params.get("upstreamRunIds") or ()
        if (method == M.N_RUN_UPDATE and run_id not in self.ours
                and not self.ours.isdisjoint(upstream)):
            self.ours.add(run_id)
            if not self.found.isdisjoint(upstream):
                self.found.add(run_id)
            elif self.cancelling and not str(params.get("triggerEvent")).startswith(
                    "command_cancelled:"):
                self._cancel(run_id)  # what reacts to the cancellation itself may run
        if run_id not in self.ours:
            return
        if method == M.N_RUN_UPDATE and params.get("state") in M.FINAL_STATES:
            self.final.add(run_id)
        self.reporter.send(message)

    def _cancel(self, run_id: str) -> None:
        self.client.forget(self.client.send(M.M_CANCEL, {"runId": run_id}))

    def wait(self) -> None:
        """Until every chain is over: their notifications have all been handled then. A
        final run whose last update did not come (it had ended already) is printed from the
        answers."""
        client = self.client
        client.wait_until(lambda: all(client.answered(w) for w in self.waits))
        for ident in self.waits:
            try:
                result = client.response(ident)
            except RpcError as exc:  # a run already evicted from the host's memory
                err(exc.args[0])
                continue
            for run in result["runs"] or [result["run"]]:
                self.reporter.ended(run)

    def follow(self, method: str, params: Any, runs_of: Callable[[Any], Runs]) -> int:
        """Send the request that starts runs (``runs_of`` picks them from its result),
        follow them to the end and return their result as an exit code; Ctrl-C (or
        SIGTERM) cancels them and returns 130 (a second one leaves at once)."""
        ident = self.client.send(method, params)
        started = False
        with self.client.interruptible():
            try:
                self.adopt(runs_of(self.client.response(ident)))
                started = True
                self.wait()
            except Interrupted:
                self.cancelling = True
                try:
                    if not started:
                        self.adopt(runs_of(self.client.response(ident)))
                    mine = self.ours - self.final - self.found
                    if not mine and self.ours <= self.found:
                        err("interrupted: no longer following; the run goes on")
                        return EXIT_INTERRUPTED
                    err("interrupted: cancelling the runs it started")
                    for run_id in mine:
                        self._cancel(run_id)
                    self.wait()
                except Interrupted:
                    err("interrupted again: not waiting for the runs to end")
                return EXIT_INTERRUPTED
        return self.reporter.exit_code()

    def started_run(self, result: dict[str, Any]) -> Runs:
        """The run of a ``sidecar/run`` or ``sidecar/rerun`` result, to follow: one its run
        key found (``existing``) is said so on stderr and never cancelled."""
        run: dict[str, Any] = result["run"]
        if result.get("existing"):
            err(found_label(run))
            self.found.add(run["runId"])
        elif result.get("strictOverrideUsed"):
            err(override_label(run))
        return [run]


def _report_skipped(result: dict[str, Any]) -> None:
    for s in result["skipped"]:
        err(f"skipped {s['command']} ({s['reason']}): {s['message']}")


def run(args: argparse.Namespace) -> int:
    variables = parse_vars(args.var)
    client = _open(args, start=True, chunks=True)
    with client:
        follower = Follower(client, Reporter(sys.stdout, args.json))
        return follower.follow(M.M_RUN, run_params(args, variables), follower.started_run)


def rerun(args: argparse.Namespace) -> int:
    """Start a finished run again (a run id; a command's last run; a command's key's latest
    run) and follow the new run like ``run``."""
    client = _open(args, start=True, chunks=True)
    with client:
        run_id = None if args.key is not None else _resolve_run(client, args.run)["runId"]
        params = rerun_params(args, run_id)
        follower = Follower(client, Reporter(sys.stdout, args.json))

        def started(result: dict[str, Any]) -> Runs:
            err(rerun_label(result["run"]))
            return follower.started_run(result)

        return follower.follow(M.M_RERUN, params, started)


def trigger(args: argparse.Namespace) -> int:
    variables = parse_vars(args.var)

    def started(result: dict[str, Any]) -> Runs:
        _report_skipped(result)
        if not result["started"] and not result["cancelled"] and not result["skipped"]:
            err(f"no command listens to {args.event!r}")
        runs: Runs = result["started"]
        return runs

    client = _open(args, start=True, chunks=True)
    with client:
        follower = Follower(client, Reporter(sys.stdout, args.json))
        return follower.follow(M.M_TRIGGER, {"event": args.event, "vars": variables}, started)


def save(args: argparse.Namespace) -> int:
    """Fire the ``[on_save]`` triggers in the host and return after its answer; with
    ``--wait``, follow the runs they started like ``run``."""
    paths = [os.path.abspath(p) for p in args.paths]

    def started(result: dict[str, Any]) -> Runs:
        for triggered in result["triggered"]:
            _report_skipped(triggered)
        for ignored in result["ignored"]:
            err(f"{ignored['path']}: {ignored['message']}")
        reloaded = result.get("reloaded")
        if reloaded is not None and not reloaded["ok"]:
            raise CliError(f"config not loaded: {reloaded['message']}", EXIT_CONFIG)
        return [run for t in result["triggered"] for run in t["started"]]

    client = _open(args, "hook", start=True, chunks=args.wait)
    with client:
        if args.wait:
            follower = Follower(client, Reporter(sys.stdout, args.json))
            return follower.follow(M.M_SAVE, {"paths": paths}, started)
        result = client.request(M.M_SAVE, {"paths": paths})
        started(result)
        if args.json:
            out(json.dumps(result))
    return 0


# ------------------------------------------------------------------------------- looking
def _resolve_run(client: Client, ref: str) -> dict[str, Any]:
    """The run ``ref`` names: a run id, or a command (its newest active run, else its last
    run)."""
    if is_run_id(ref):
        return {"runId": ref}
    (status,) = client.request(M.M_STATUS, {"command": ref})["commands"]
    if status["activeRuns"]:
        run: dict[str, Any] = status["activeRuns"][-1]
        return run
    if status["lastRun"] is None:
        raise CliError(f"{ref} has not run yet")
    last: dict[str, Any] = status["lastRun"]
    return last


def status(args: argparse.Namespace) -> int:
    with _open(args) as client:
        sid = client.send(M.M_STATUS, {"command": args.name} if args.name else None)
        hid = client.send(M.M_HOST_INFO)
        commands = client.response(sid)["commands"]
        active = [r for r in client.response(hid)["activeRuns"]
                  if args.name is None or r["command"] == args.name]
    if args.json:
        out(json.dumps({"commands": commands, "activeRuns": active}, indent=2))
        return 0
    for line in status_table(commands):
        out(line)
    out("")
    for line in runs_table(active) if active else ["no active runs"]:
        out(line)
    return 0


def history(args: argparse.Namespace) -> int:
    with _open(args) as client:
        runs = client.request(M.M_HISTORY, history_params(args))["runs"]
    print_history(args, runs)
    return 0


def output(args: argparse.Namespace) -> int:
    """Print a run's output; with ``--follow``, until the run is final (exit code: its
    result)."""
    with _open(args) as client:
        run_id = _resolve_run(client, args.run)["runId"]
        seen = [0]  # notifications of the run: each may mean more output

        def notify(message: Message) -> None:
            params = message.get("params")
            if isinstance(params, dict) and params.get("runId") == run_id:
                seen[0] += 1

        def news_since(count: int) -> Callable[[], bool]:
            return lambda: seen[0] > count

        if args.follow:
            client.on_notify = notify
            client.request(M.M_SET_OUTPUT_FILTER, {"enabled": True, "runIds": [run_id]})
        stream = sys.stdout
        offset = 0
        while True:
            before = seen[0]
            part = client.request(M.M_READ_OUTPUT, {"runId": run_id, "offset": offset})
            stream.write(part["text"])
            stream.flush()
            offset += part["size"]
            if part["final"] and offset >= part["totalSize"]:
                break
            if part["size"] and offset < part["totalSize"]:
                continue  # more is there already
            if not args.follow:
                return 0
            client.wait_until(news_since(before))
        if not args.follow:
            return 0
        return exit_code_of([client.request(M.M_WAIT, {"runId": run_id})["run"]])


def cancel(args: argparse.Namespace) -> int:
    params = ({"runId": args.run} if args.run else given(command=args.command, runKey=args.key)
              if args.command else {"all": True})
    params.update(given(reason=args.reason, graceSecs=args.grace))
    with _open(args) as client:
        n = client.request(M.M_CANCEL, params)["cancelled"]
    out(f"cancelled {n} run{'s' if n != 1 else ''}")
    return 0


def wait(args: argparse.Namespace) -> int:
    """Wait for a run (``--chain``: and its chain); exit code: its result, 124 on timeout."""
    with _open(args) as client:
        run_id = _resolve_run(client, args.run)["runId"]
        params: dict[str, Any] = {"runId": run_id, "chain": args.chain}
        if args.timeout is not None:
            params["timeoutMs"] = max(0, round(args.timeout * 1000))
        result = client.request(M.M_WAIT, params)
    runs: Runs = result["runs"] or [result["run"]]
    if args.json:
        out(json.dumps(result))
    else:
        reporter = Reporter(sys.stdout, False)
        for run_info in runs:
            reporter.send({"method": M.N_RUN_UPDATE, "params": run_info})
    if result["timedOut"]:
        err(f"timed out after {args.timeout:g} s; the run goes on" if args.timeout is not None
            else "the host stopped waiting; the run goes on")
        return EXIT_TIMEOUT
    return exit_code_of(runs)


# ------------------------------------------------------------------------------- records
def unlock(args: argparse.Namespace) -> int:
    with _open(args) as client:
        print_unlocked(args, client.request(M.M_UNLOCK, unlock_params(args)))
    return 0


def clean(args: argparse.Namespace) -> int:
    with _open(args) as client:
        return print_cleaned(args, client.request(M.M_CLEAN, clean_params(args)))


# ------------------------------------------------------------------------------- the host
def host_start(args: argparse.Namespace) -> int:
    ws = workspace_of(args)
    config_files(ws)
    running = host_pid(ws.lock_path)
    with Client.open(ws, "cli", start=True, chunks=False,
                     idle_timeout=args.idle_timeout) as client:
        info = client.request(M.M_HOST_INFO)
    if running is not None:
        err(f"a host was already running for {ws.root}"
            + ("; its idle timeout is unchanged" if args.idle_timeout is not None else ""))
    out(f"pid:    {info['pid']}")
    out(f"socket: {info['socket']}")
    out(f"log:    {ws.log_path}")
    return 0


def host_status(args: argparse.Namespace) -> int:
    ws = workspace_of(args)
    with _open(args) as client:
        info = client.request(M.M_HOST_INFO)
    if args.json:
        out(json.dumps(info, indent=2))
        return 0
    others = [s["clientName"] or "(unnamed)" for s in info["sessions"] if not s["current"]]
    out(f"pid:         {info['pid']}")
    out(f"version:     cmdsidecar {info['version']}, protocol {info['protocolVersion']}")
    out(f"root:        {info['root']}")
    out(f"config:      {', '.join(info['configFiles']) or 'none'}")
    out(f"started:     {clock(info['startedAt'])}")
    out(f"socket:      {info['socket']}")
    out(f"log:         {ws.log_path}")
    out(f"sessions:    {len(others)}" + (f" ({', '.join(others)})" if others else ""))
    out(f"active runs: {len(info['activeRuns'])}")
    if info["activeRuns"]:
        for line in runs_table(info["activeRuns"]):
            out("  " + line)
    return 0


def host_stop(args: argparse.Namespace) -> int:
    """SIGTERM the host (it cancels its runs, then exits) and wait until it is gone."""
    import select
    import signal
    import time

    ws = workspace_of(args)
    pid = host_pid(ws.lock_path)
    if pid is None:
        raise CliError(f"no host is running for {ws.describe()}")
    try:
        pidfd: int | None = os.pidfd_open(pid)
    except (AttributeError, OSError):
        pidfd = None
    try:
        os.kill(pid, signal.SIGTERM)
        if pidfd is not None:
            gone = bool(select.select([pidfd], [], [], STOP_TIMEOUT)[0])
        else:
            deadline = time.monotonic() + STOP_TIMEOUT
            while host_pid(ws.lock_path) == pid and time.monotonic() < deadline:
                time.sleep(0.05)
            gone = host_pid(ws.lock_path) != pid
    except ProcessLookupError:
        gone = True
    finally:
        if pidfd is not None:
            os.close(pidfd)
    if not gone:
        raise CliError(f"the host (pid {pid}) did not stop within {STOP_TIMEOUT:g} s; "
                       f"see {ws.log_path}")
    out(f"stopped the host (pid {pid})")
    return 0


def host_logs(args: argparse.Namespace) -> int:
    """The end of the host's log (``--lines``, 0: all); ``--follow`` prints what is added
    until interrupted."""
    import time

    path = workspace_of(args).log_path
    try:
        log = open(path, "rb")
    except FileNotFoundError:
        raise CliError(f"no host log at {path}") from None
    with log:
        lines = log.read().splitlines(keepends=True)
        sink = sys.stdout.buffer
        sink.write(b"".join(lines[-args.lines:] if args.lines > 0 else lines))
        sink.flush()
        while args.follow:
            chunk = log.read()
            if chunk:
                sink.write(chunk)
                sink.flush()
            else:
                time.sleep(0.2)
    return 0
