"""The subcommands that act on a workspace in this process, with a host of their own: ``run``,
``trigger``, ``save``, ``rerun`` (which follow every run and chain to the end), ``status``,
``history``, ``unlock`` and ``clean`` with ``--no-host``; ``preview`` and ``graph`` always.
Imported only when one of them runs, so ``--help``, ``check``, ``init`` and the host-backed
commands (:mod:`.remote`) start without the service layer.

The run records (``.sidecar/runs.db``) are the workspace's, shared with its host and every
other ``--no-host`` process: a ``run --key`` whose key has a run active in another process
follows that run (the orchestrator reads its record until it is final) and exits with its
result; Ctrl-C then stops following it, without cancelling it. The requests that the host also
serves go through :func:`_request`, with the wire params and results of :mod:`.wire`."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from sidecar.app import methods as M
from sidecar.app import protocol as P
from sidecar.app.service import Service
from sidecar.host.host import Host
from sidecar.host.session import Session

from .client import RpcError
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
from .report import Reporter, found_label, status_table
from .wire import (
    clean_params,
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

Work = Callable[[Service], Awaitable["list[str] | None"]]
"""What a following subcommand does once the host has started; it returns the runs it found by
their run key rather than started (followed too), if any."""


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
    """``result``, or the CliError an error response from a host would give (the same exit
    code: 2 for invalid params, 3 without a valid config, else 1)."""
    try:
        return await result
    except P.SidecarRpcError as exc:
        raise RpcError(exc.code, exc.message, exc.data) from None


async def _request(service: Service, method: str, params: dict[str, Any]) -> Any:
    """A request as the host answers it: wire params in (checked as the host checks them),
    wire result out."""
    cls, call = service.operations()[method]
    return P.to_wire(await _checked(call(P.parse_params(cls, params))))


async def _once(args: argparse.Namespace, method: str, params: dict[str, Any]) -> Any:
    """One request to a host of this process's own, closed after it."""
    host = _host(args)
    try:
        return await _request(Service(host), method, params)
    finally:
        await host.close()


async def _drive(args: argparse.Namespace, work: Work, started_by: str = "cli") -> int:
    """Start the host with a session that prints, do ``work`` (its runs are started by
    ``started_by``), follow every run and chain until they settle, and the runs ``work``
    found (:data:`Work`) until they end, and map the runs' results to an exit code."""
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
        found = await _checked(work(service)) or []
        idle = asyncio.ensure_future(_settle(host, service, reporter, found))
        stop = asyncio.ensure_future(interrupted.wait())
        await asyncio.wait([idle, stop], return_when=asyncio.FIRST_COMPLETED)
        if stop.done() and not idle.done():
            if host.active_runs() or not found:
                err("interrupted: cancelling runs")
                await service.cancel(P.CancelParams(all=True))
            else:  # only following a run found by its key: it is not ours to cancel
                err("interrupted: no longer following; the run goes on")
            idle.cancel()
            return EXIT_INTERRUPTED
        stop.cancel()
        idle.result()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await host.close()
        session.close()
    return reporter.exit_code()


async def _settle(host: Host, service: Service, reporter: Reporter, found: list[str]) -> None:
    """Until this process's runs and chains have settled, and the ``found`` runs have ended
    (those another process owns are followed through their records); each found run's end
    is printed, as its final update would have been (none comes for a run of another process,
    nor for a strict key's finished run)."""
    await host.wait_idle()
    for run_id in found:
        reporter.ended((await _request(service, M.M_WAIT, {"runId": run_id}))["run"])


def _started(result: dict[str, Any]) -> list[str]:
    """The run a ``sidecar/run`` or ``sidecar/rerun`` result names: found by its key
    (``existing``: said so, and returned, to follow), or started."""
    run = result["run"]
    if result["existing"]:
        err(found_label(run))
        return [run["runId"]]
    if result["strictOverrideUsed"]:
        err(override_label(run))
    return []


def _report_skipped(result: P.TriggerResultWire) -> None:
    for s in result.skipped:
        err(f"skipped {s.command} ({s.reason}): {s.message}")


def run(args: argparse.Namespace) -> int:
    variables = parse_vars(args.var)

    async def work(service: Service) -> list[str]:
        return _started(await _request(service, M.M_RUN, run_params(args, variables)))

    return asyncio.run(_drive(args, work))


def rerun(args: argparse.Namespace) -> int:
    """``rerun --no-host``: RUN (a run id, or a command's last run) or NAME's key's latest
    run, started again here and followed like ``run``."""

    async def work(service: Service) -> list[str]:
        run_id = None
        if args.key is None:
            run_id = args.run if is_run_id(args.run) else await _last_run(service, args.run)
        result = await _request(service, M.M_RERUN, rerun_params(args, run_id))
        err(rerun_label(result["run"]))
        return _started(result)

    return asyncio.run(_drive(args, work))


async def _last_run(service: Service, name: str) -> str:
    """The id of ``name``'s last run (as :func:`.remote._resolve_run` for a command)."""
    (status,) = (await _request(service, M.M_STATUS, {"command": name}))["commands"]
    if status["lastRun"] is None:
        raise CliError(f"{name} has not run yet")
    run_id: str = status["lastRun"]["runId"]
    return run_id


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
    """``history --no-host``: the runs in the run records (or kept by output storage, with
    ``[history] store = "memory"``)."""
    print_history(args, asyncio.run(_once(args, M.M_HISTORY, history_params(args)))["runs"])
    return 0


def unlock(args: argparse.Namespace) -> int:
    """``unlock --no-host``: in the run records, which every process of the workspace reads."""
    print_unlocked(args, asyncio.run(_once(args, M.M_UNLOCK, unlock_params(args))))
    return 0


def clean(args: argparse.Namespace) -> int:
    """``clean --no-host``: in the run records. A host running meanwhile may still list the
    deleted runs it holds in memory (``sidecar clean`` through it does not)."""
    return print_cleaned(args, asyncio.run(_once(args, M.M_CLEAN, clean_params(args))))


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
