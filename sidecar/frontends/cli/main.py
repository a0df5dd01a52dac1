"""The ``sidecar`` command line.

``sidecar run NAME``, ``sidecar trigger EVENT``, ``sidecar save PATH``, ``sidecar check``, ``sidecar preview NAME``,
``sidecar graph``, ``sidecar init``, ``sidecar serve`` (also plain ``sidecar`` when stdin is not
a TTY), ``sidecar --version``. Messages go to stderr; stdout carries results (and, for
``serve``, only the protocol).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from sidecar.app import protocol as P
from sidecar.app.service import Service
from sidecar.core.checks import check_files
from sidecar.core.config import CONFIG_FILE_NAMES, find_config_files, read_source
from sidecar.core.problems import Severity
from sidecar.host.host import Host
from sidecar.host.session import Session

from .report import Reporter

EXIT_USAGE = 2
EXIT_CONFIG = 3
EXIT_INTERRUPTED = 130

SAMPLE_CONFIG = Path(__file__).resolve().parents[2] / "sample.toml"


class CliError(Exception):
    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def _err(message: str) -> None:
    sys.stderr.write(f"sidecar: {message}\n")


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")


def _config_paths(args: argparse.Namespace) -> list[Path]:
    if args.config:
        return [Path(p) for p in args.config]
    found = find_config_files(Path.cwd())
    if not found:
        raise CliError(f"no config found: expected {' or '.join(CONFIG_FILE_NAMES)} in "
                       f"{Path.cwd()} (or pass --config FILE; `sidecar init` writes a sample)",
                       EXIT_CONFIG)
    return found


def _parse_vars(pairs: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CliError(f"--var expects NAME=VALUE, got {pair!r}", EXIT_USAGE)
        out[key] = value
    return out


# ----------------------------------------------------------------------------------- sessions
Work = Callable[[Service], Awaitable[None]]


def _host(args: argparse.Namespace) -> Host:
    """The workspace's host, with its configuration loaded (or a CliError saying why not)."""
    host = Host(Path.cwd(), [str(p.resolve()) for p in _config_paths(args)])
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


async def _drive(args: argparse.Namespace, work: Work) -> int:
    """Start the host with a session that prints, do ``work``, follow every run and chain
    until they settle, and map the runs' results to an exit code."""
    host = _host(args)
    reporter = Reporter(sys.stdout, getattr(args, "json", False))
    session = Session(host, reporter)
    service = Service(host)
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
            _err("interrupted: cancelling runs")
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
        _err(f"skipped {s.command} ({s.reason}): {s.message}")


def cmd_run(args: argparse.Namespace) -> int:
    variables = _parse_vars(args.var)

    async def work(service: Service) -> None:
        await service.run(P.RunParams(command=args.name, vars=variables))

    return asyncio.run(_drive(args, work))


def cmd_trigger(args: argparse.Namespace) -> int:
    variables = _parse_vars(args.var)

    async def work(service: Service) -> None:
        result = await service.trigger(P.TriggerParams(event=args.event, vars=variables))
        _report_skipped(result)
        if not result.started and not result.cancelled:
            _err(f"no command listens to {args.event!r}")

    return asyncio.run(_drive(args, work))


def cmd_save(args: argparse.Namespace) -> int:
    async def work(service: Service) -> None:
        result = await service.save(P.SaveParams(paths=[str(Path(p).resolve())
                                                        for p in args.paths]))
        for triggered in result.triggered:
            _report_skipped(triggered)
        for ignored in result.ignored:
            _err(f"{ignored.path}: {ignored.message}")
        if result.reloaded is not None and not result.reloaded.ok:
            raise CliError(f"config not loaded: {result.reloaded.message}", EXIT_CONFIG)

    return asyncio.run(_drive(args, work))


def cmd_check(args: argparse.Namespace) -> int:
    paths = [Path(p) for p in args.files] if args.files else _config_paths(args)
    report = check_files([read_source(p) for p in paths])
    shown = [p for p in report.problems if args.hints or p.severity != Severity.HINT]
    if args.json:
        _out(json.dumps([{
            "file": p.file, "line": p.span.line + 1, "column": p.span.column + 1,
            "endLine": p.span.end_line + 1, "endColumn": p.span.end_column + 1,
            "severity": p.severity.label, "code": p.code, "message": p.message}
            for p in shown], indent=2))
    else:
        for p in shown:
            _out(p.format())
    errors = sum(p.severity == Severity.ERROR for p in report.problems)
    warnings = sum(p.severity == Severity.WARNING for p in report.problems)
    commands = len(report.config.commands) if report.config else 0
    sys.stderr.write(f"{len(paths)} file(s): {errors} error(s), {warnings} warning(s)"
                     + (f", {commands} command(s)" if report.config else "") + "\n")
    return 1 if errors else 0


def cmd_preview(args: argparse.Namespace) -> int:
    service = Service(_host(args))
    rc = _call(service.preview(P.PreviewParams(command=args.name, vars=_parse_vars(args.var))))
    if args.json:
        _out(json.dumps(P.to_wire(rc), indent=2))
        return 0
    _out(f"command: {rc.resolved}")
    _out("runs as: " + ("/bin/sh -c <command>" if rc.argv is None else json.dumps(rc.argv)))
    _out(f"cwd:     {rc.cwd}")
    _out(f"timeout: {rc.timeout_secs}s" if rc.timeout_secs else "timeout: none")
    for k, v in rc.env.items():
        _out(f"env:     {k}={v}")
    for k, v in sorted(rc.vars.items()):
        _out(f"var:     {k} = {v}")
    return 0


def cmd_graph(args: argparse.Namespace) -> int:
    graph = _call(Service(_host(args)).graph())
    if args.json:
        _out(json.dumps(P.to_wire(graph), indent=2))
    elif args.mermaid:
        for line in _mermaid(graph):
            _out(line)
    else:
        for event in graph.external:
            _out(f"{event} → {', '.join(graph.triggers.get(event, []))}")
        for edge in graph.edges:
            _out(f"{edge.source} --{edge.event.split(':', 1)[0]}--> {edge.target}")
        for event, name in _cancel_pairs(graph):
            _out(f"{event} ⊘ cancels {name}")
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


def cmd_init(args: argparse.Namespace) -> int:
    target = Path(args.path)
    if target.is_dir():
        target = target / "sidecar.toml"
    if target.exists() and not args.force:
        raise CliError(f"{target} exists (use --force to overwrite)")
    target.write_text(SAMPLE_CONFIG.read_text(encoding="utf-8"), encoding="utf-8")
    sys.stderr.write(f"wrote {target}; try: sidecar check && sidecar graph\n")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from sidecar.frontends.lsp import serve

    return serve(config_files=args.config, log_level=args.log_level)


# ----------------------------------------------------------------------------------- parser
class _VersionAction(argparse.Action):
    """``--version``, with the version looked up only when it is asked for."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kw: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS,
                         help="print the version and exit")

    def __call__(self, parser: argparse.ArgumentParser, *args: Any) -> None:
        sys.stdout.write(f"sidecar {version()}\n")
        parser.exit()


def version() -> str:
    """The installed version of the ``cmdsidecar`` distribution (the package's own
    ``__version__`` when run from a source tree that is not installed)."""
    import importlib.metadata  # only for --version: every other command starts without it

    try:
        return importlib.metadata.version("cmdsidecar")
    except importlib.metadata.PackageNotFoundError:
        from sidecar import __version__

        return __version__


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", "-c", action="append", metavar="FILE",
                        help="config file (repeatable; several files merge). Default: "
                             "sidecar.toml or cmdorc.toml in the current directory")
    common.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        help="default: $SIDECAR_LOG, else WARNING")

    runtime = argparse.ArgumentParser(add_help=False)
    runtime.add_argument("--var", action="append", default=[], metavar="NAME=VALUE",
                         help="runtime variable (never shell code; see README \"Safety\")")
    runtime.add_argument("--json", action="store_true", help="JSON instead of text")

    parser = argparse.ArgumentParser(
        prog="sidecar", description="Trigger-driven command orchestrator (cmdorc-compatible).")
    parser.add_argument("--version", action=_VersionAction)
    sub = parser.add_subparsers(dest="cmd")

    p = sub.add_parser("run", parents=[common, runtime],
                       help="run a command and the chain it triggers")
    p.add_argument("name")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("trigger", parents=[common, runtime],
                       help="fire a trigger and run what follows")
    p.add_argument("event")
    p.set_defaults(func=cmd_trigger)

    p = sub.add_parser("save", parents=[common],
                       help="fire the [on_save] triggers of saved files (for editor/git hooks)")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_save)

    p = sub.add_parser("check", parents=[common], help="report config problems")
    p.add_argument("files", nargs="*")
    p.add_argument("--json", action="store_true")
    p.add_argument("--hints", action="store_true", help="also show hints")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("preview", parents=[common, runtime],
                       help="show what a command would run")
    p.add_argument("name")
    p.set_defaults(func=cmd_preview)

    p = sub.add_parser("graph", parents=[common], help="show the trigger graph")
    p.add_argument("--mermaid", action="store_true", help="Mermaid flowchart")
    p.add_argument("--json", action="store_true", help="the graph as protocol.md's "
                   "sidecar/triggerGraph result")
    p.set_defaults(func=cmd_graph)

    p = sub.add_parser("init", parents=[common], help="write a commented sample config")
    p.add_argument("path", nargs="?", default=".")
    p.add_argument("--force", action="store_true")
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("serve", parents=[common], help="JSON-RPC sidecar on stdio")
    p.set_defaults(func=cmd_serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv and not sys.stdin.isatty():
        argv = ["serve"]
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.cmd is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    if args.cmd != "serve":  # serve logs with timestamps (see frontends.lsp.configure_logging)
        level = getattr(args, "log_level", None) or os.environ.get("SIDECAR_LOG") or "WARNING"
        logging.basicConfig(stream=sys.stderr, level=getattr(logging, level.upper(),
                                                             logging.WARNING),
                            format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args))
    except CliError as exc:
        _err(str(exc))
        return exc.code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
