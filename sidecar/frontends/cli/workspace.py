"""The subcommands that act on a workspace in this process, with a host of their own: ``run``,
``trigger``, ``save`` (which follow every run and chain to the end), ``status`` and
``history`` with ``--no-host``; ``preview`` and ``graph`` always. Imported only when one of
them runs, so ``--help``, ``check``, ``init`` and the host-backed commands (:mod:`.remote`)
start without the service layer."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from sidecar.app import protocol as P
from sidecar.app.service import Service
from sidecar.host.host import Host
from sidecar.host.session import Session

from .common import (
    EXIT_CONFIG,
    EXIT_INTERRUPTED,
    CliError,
    config_files,
    err,
    out,
    parse_vars,
    workspace_of,
)
from .report import Reporter, history_table, status_table

Work = Callable[[Service], Awaitable[None]]


def _host(args: argparse.Namespace) -> Host:
    """The workspace's host, with its configuration loaded (or a CliError saying why not)."""
    ws = workspace_of(args)
    host = Host(ws.root, config_files(ws))
    if not host.reload().ok:
        for p in host.config_files.errors():
            sys.stderr.write(p.format() + "\n")
        raise CliError(f"invalid config ({len(host.config_files.errors())} error(s)); "
                       "run `sidecar check` for details", EXIT_CONFIG)
    return host


def _call(result: Awaitable[Any]) -> Any:
    return asyncio.run(_checked(result))


async def _checked(result: Awaitable[Any]) -> Any:
    try:
        return await result
    except P.SidecarRpcError as exc:
        raise CliError(exc.message) from None


async def _drive(args: argparse.Namespace, work: Work, started_by: str = "cli") -> int:
    """Start the host with a session that prints, do ``work`` (its runs are started by
    ``started_by``), follow every run and chain until they settle, and map the runs' results
    to an exit code."""
    host = _host(args)
    reporter = Reporter(sys.stdout, getattr(args, "json", False))
    session = Session(host, reporter)
    service = Service(host, started_by)
    loop = asyncio.get_running_loop()
    interrupted = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, interrupted.set)
    try:
        started = host.start()
        if started is not None:
            await started
        await _checked(work(service))
        idle = asyncio.ensure_future(host.wait_idle())
        stop = asyncio.ensure_future(interrupted.wait())
        await asyncio.wait([idle, stop], return_when=asyncio.FIRST_COMPLETED)
        if stop.done() and not idle.done():
            err("interrupted: cancelling runs")
            await service.cancel(P.CancelParams(all=True))
            idle.cancel()
            return EXIT_INTERRUPTED
        stop.cancel()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await host.close()
        session.close()
    return reporter.exit_code()


def _report_skipped(result: P.TriggerResultWire) -> None:
    for s in result.skipped:
        err(f"skipped {s.command} ({s.reason}): {s.message}")


def run(args: argparse.Namespace) -> int:
    variables = parse_vars(args.var)

    async def work(service: Service) -> None:
        await service.run(P.RunParams(command=args.name, vars=variables))

    return asyncio.run(_drive(args, work))


def trigger(args: argparse.Namespace) -> int:
    variables = parse_vars(args.var)

    async def work(service: Service) -> None:
        result = await service.trigger(P.TriggerParams(event=args.event, vars=variables))
        _report_skipped(result)
        if not result.started and not result.cancelled and not result.skipped:
            err(f"no command listens to {args.event!r}")

    return asyncio.run(_drive(args, work))


def save(args: argparse.Namespace) -> int:
    async def work(service: Service) -> None:
        result = await service.save(P.SaveParams(paths=[str(Path(p).resolve())
                                                        for p in args.paths]))
        for triggered in result.triggered:
            _report_skipped(triggered)
        for ignored in result.ignored:
            err(f"{ignored.path}: {ignored.message}")
        if result.reloaded is not None and not result.reloaded.ok:
            raise CliError(f"config not loaded: {result.reloaded.message}", EXIT_CONFIG)

    return asyncio.run(_drive(args, work, "hook"))


def status(args: argparse.Namespace) -> int:
    """``status --no-host``: the commands as the config and the stored history leave them."""
    result = P.to_wire(_call(Service(_host(args)).status(P.StatusParams(command=args.name))))
    if args.json:
        out(json.dumps({"commands": result["commands"], "activeRuns": []}, indent=2))
        return 0
    for line in status_table(result["commands"]):
        out(line)
    return 0


def history(args: argparse.Namespace) -> int:
    """``history --no-host``: the runs kept by output storage."""
    result = P.to_wire(_call(Service(_host(args)).history(
        P.HistoryParams(command=args.name, limit=args.limit))))
    if args.json:
        out(json.dumps(result["runs"], indent=2))
    elif result["runs"]:
        for line in history_table(result["runs"]):
            out(line)
    else:
        err(f"{args.name} has no finished runs")
    return 0


def preview(args: argparse.Namespace) -> int:
    service = Service(_host(args))
    rc = _call(service.preview(P.PreviewParams(command=args.name, vars=parse_vars(args.var))))
    if args.json:
        out(json.dumps(P.to_wire(rc), indent=2))
        return 0
    out(f"command: {rc.resolved}")
    out("runs as: " + ("/bin/sh -c <command>" if rc.argv is None else json.dumps(rc.argv)))
    out(f"cwd:     {rc.cwd}")
    out(f"timeout: {rc.timeout_secs}s" if rc.timeout_secs else "timeout: none")
    for k, v in rc.env.items():
        out(f"env:     {k}={v}")
    for k, v in sorted(rc.vars.items()):
        out(f"var:     {k} = {v}")
    return 0


def graph(args: argparse.Namespace) -> int:
    graph = _call(Service(_host(args)).graph())
    if args.json:
        out(json.dumps(P.to_wire(graph), indent=2))
    elif args.mermaid:
        for line in _mermaid(graph):
            out(line)
    else:
        for event in graph.external:
            out(f"{event} → {', '.join(graph.triggers.get(event, []))}")
        for edge in graph.edges:
            out(f"{edge.source} --{edge.event.split(':', 1)[0]}--> {edge.target}")
        for event, name in _cancel_pairs(graph):
            out(f"{event} ⊘ cancels {name}")
    return 0


def _mermaid_label(text: str) -> str:
    return text.replace('"', "#quot;")


def _mermaid(graph: P.TriggerGraphResult) -> list[str]:
    """A Mermaid flowchart that depends only on the config (it can be committed and diffed):
    commands ``c0…`` in config order, events ``e0…`` sorted by name, one node per event
    whether it starts commands, cancels them, or both."""
    cmd_ids = {name: f"c{i}" for i, name in enumerate(graph.commands)}
    events = sorted({*graph.external, *graph.cancels})
    ev_ids = {event: f"e{i}" for i, event in enumerate(events)}
    lines = ["flowchart LR"]
    lines += [f'  {node}["{_mermaid_label(name)}"]' for name, node in cmd_ids.items()]
    lines += [f'  {node}(["{_mermaid_label(event)}"])' for event, node in ev_ids.items()]
    for event in graph.external:
        for name in graph.triggers.get(event, []):
            lines.append(f"  {ev_ids[event]} --> {cmd_ids[name]}")
    for edge in graph.edges:
        kind = edge.event.split(":", 1)[0].removeprefix("command_")
        lines.append(f'  {cmd_ids[edge.source]} -- "{kind}" --> {cmd_ids[edge.target]}')
    for event, name in _cancel_pairs(graph):
        lines.append(f"  {ev_ids[event]} -. cancels .-> {cmd_ids[name]}")
    return lines


def _cancel_pairs(graph: P.TriggerGraphResult) -> list[tuple[str, str]]:
    """(event, command it cancels), commands in config order."""
    return [(event, name) for name in graph.commands
            for event, names in graph.cancels.items() if name in names]
