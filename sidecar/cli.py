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
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from .core import (
    CommandNotFoundError,
    CommandOrchestrator,
    ConcurrencyLimitError,
    ConfigValidationError,
    DebounceError,
    OutputEvent,
    RunEvent,
    RunnerConfig,
    TriggerEvent,
    VariableResolutionError,
    format_duration,
)
from .core.checks import check_files
from .core.config import CONFIG_FILE_NAMES, find_config_files, read_source
from .core.events import Event
from .core.loading import load_configs
from .core.problems import Severity
from .core.savehooks import triggers_for_save
from .core.triggers import command_graph, emitted_events

EXIT_USAGE = 2
EXIT_CONFIG = 3
EXIT_INTERRUPTED = 130

SAMPLE_CONFIG = Path(__file__).with_name("sample.toml")


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


def _load(args: argparse.Namespace) -> RunnerConfig:
    try:
        return load_configs(_config_paths(args))
    except ConfigValidationError as exc:
        for p in exc.problems:
            sys.stderr.write(p.format() + "\n")
        raise CliError(f"invalid config ({len(exc.problems)} error(s)); "
                       "run `sidecar check` for details", EXIT_CONFIG) from None


def _parse_vars(pairs: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CliError(f"--var expects NAME=VALUE, got {pair!r}", EXIT_USAGE)
        out[key] = value
    return out


# ----------------------------------------------------------------------------------- reporting
class Reporter:
    """Streams events to the terminal: coloured on a TTY, plain lines otherwise, JSON lines
    with ``--json``."""

    COLORS = {"running": "36", "success": "32", "failed": "31", "cancelled": "33"}
    ICONS = {"running": "▶", "success": "✓", "failed": "✗", "cancelled": "■", "pending": "…"}

    def __init__(self, stream: TextIO, as_json: bool, quiet_output: bool = False) -> None:
        self.stream = stream
        self.json = as_json
        self.tty = stream.isatty() and not as_json and os.environ.get("NO_COLOR") is None
        self.quiet_output = quiet_output
        self._partial: dict[str, str] = {}

    def _c(self, code: str, text: str) -> str:
        return f"\033[{code}m{text}\033[0m" if self.tty else text

    def __call__(self, event: Event) -> None:
        if self.json:
            self.stream.write(json.dumps(_event_json(event)) + "\n")
            self.stream.flush()
            return
        if isinstance(event, OutputEvent):
            if self.quiet_output:
                return
            text = self._partial.pop(event.run_id, "") + event.text
            *lines, rest = text.split("\n")
            if rest:
                self._partial[event.run_id] = rest
            prefix = self._c("2", f"[{event.command}] ")
            for line in lines:
                self.stream.write(f"{prefix}{line}\n")
        elif isinstance(event, RunEvent):
            if event.state == "pending":
                return
            if event.state != "running" and event.run_id in self._partial:
                rest = self._partial.pop(event.run_id)
                self.stream.write(self._c("2", f"[{event.command}] ") + rest + "\n")
            icon = self.ICONS.get(event.state, "?")
            color = self.COLORS.get(event.state, "0")
            line = f"{icon} {event.command} {event.state}"
            if event.state == "running":
                why = " → ".join(event.trigger_chain) if event.trigger_chain else "manual run"
                line += f"  ({why})"
            else:
                if event.duration_secs is not None:
                    line += f" in {format_duration(event.duration_secs)}"
                if event.state == "failed" and event.exit_code is not None:
                    line += f" (exit {event.exit_code})"
                if event.comment:
                    line += f" — {event.comment}"
                elif event.error and event.state == "failed":
                    line += f" — {event.error}"
            self.stream.write(self._c(color, line) + "\n")
        self.stream.flush()


def _event_json(event: Event) -> dict[str, Any]:
    if isinstance(event, TriggerEvent):
        return {"type": "event", "name": event.name, "kind": event.kind,
                "chain": list(event.chain), "runId": event.run_id, "command": event.command,
                "time": event.time.isoformat()}
    if isinstance(event, RunEvent):
        return {"type": "runUpdate", "runId": event.run_id, "command": event.command,
                "state": event.state, "exitCode": event.exit_code,
                "startTime": event.start_time.isoformat() if event.start_time else None,
                "endTime": event.end_time.isoformat() if event.end_time else None,
                "durationMs": round(event.duration_secs * 1000, 3)
                if event.duration_secs is not None else None,
                "triggerChain": list(event.trigger_chain), "comment": event.comment,
                "error": event.error}
    return {"type": "outputChunk", "runId": event.run_id, "command": event.command,
            "seq": event.seq, "offset": event.offset, "text": event.text}


async def _drive(config: RunnerConfig, args: argparse.Namespace, start: Any) -> int:
    """Start work with ``start(orch)``, stream events until every chain settles, and map the
    runs' results to an exit code."""
    reporter = Reporter(sys.stdout, args.json)
    finals: list[RunEvent] = []
    async with CommandOrchestrator(config) as orch:
        orch.add_listener(reporter)
        orch.add_listener(lambda e: finals.append(e) if isinstance(e, RunEvent)
                          and e.state in ("success", "failed", "cancelled") else None)
        loop = asyncio.get_running_loop()
        interrupted = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, interrupted.set)
        try:
            await start(orch)
            idle = asyncio.ensure_future(orch.wait_idle())
            stop = asyncio.ensure_future(interrupted.wait())
            await asyncio.wait([idle, stop], return_when=asyncio.FIRST_COMPLETED)
            if stop.done() and not idle.done():
                _err("interrupted: cancelling runs")
                await orch.cancel_all("interrupted")
                idle.cancel()
                return EXIT_INTERRUPTED
            stop.cancel()
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
    for run in finals:
        if run.state == "failed":
            code = run.exit_code if run.exit_code and 0 < run.exit_code < 126 else 1
            return code
        if run.state == "cancelled":
            return 1
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    config = _load(args)
    variables = _parse_vars(args.var)

    async def start(orch: CommandOrchestrator) -> None:
        try:
            await orch.run_command(args.name, vars=variables)
        except CommandNotFoundError:
            raise CliError(f"unknown command {args.name!r}; commands: "
                           + ", ".join(orch.list_commands())) from None
        except (DebounceError, ConcurrencyLimitError, VariableResolutionError) as exc:
            raise CliError(str(exc)) from None

    return asyncio.run(_drive(config, args, start))


def cmd_trigger(args: argparse.Namespace) -> int:
    config = _load(args)
    variables = _parse_vars(args.var)

    async def start(orch: CommandOrchestrator) -> None:
        result = await orch.trigger(args.event, vars=variables)
        for name, reason, message in result.skipped:
            _err(f"skipped {name} ({reason}): {message}")
        if not result.started and not result.cancelled:
            _err(f"no command listens to {args.event!r}")

    return asyncio.run(_drive(config, args, start))


def cmd_save(args: argparse.Namespace) -> int:
    config = _load(args)

    async def start(orch: CommandOrchestrator) -> None:
        fired_any = False
        for path in args.paths:
            triggers, variables = triggers_for_save(config.on_save, config.base_dir, path)
            for event in triggers:
                fired_any = True
                result = await orch.trigger(event, vars=variables)
                for name, reason, message in result.skipped:
                    _err(f"skipped {name} ({reason}): {message}")
        if not fired_any:
            _err("no [on_save] glob matches " + ", ".join(args.paths))

    return asyncio.run(_drive(config, args, start))


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
    config = _load(args)
    orch = CommandOrchestrator(config)
    try:
        rc = orch.preview_command(args.name, vars=_parse_vars(args.var))
    except CommandNotFoundError:
        raise CliError(f"unknown command {args.name!r}; commands: "
                       + ", ".join(orch.list_commands())) from None
    except VariableResolutionError as exc:
        raise CliError(str(exc)) from None
    config_env = {k: rc.env[k] for k in orch.get_command(args.name).env}
    if args.json:
        _out(json.dumps({"command": rc.command, "argv": rc.argv, "shell": rc.argv is None,
                         "cwd": rc.cwd, "timeoutSecs": rc.timeout_secs, "vars": rc.vars,
                         "env": config_env}, indent=2))
        return 0
    _out(f"command: {rc.command}")
    _out("runs as: " + ("/bin/sh -c <command>" if rc.argv is None else json.dumps(rc.argv)))
    _out(f"cwd:     {rc.cwd}")
    _out(f"timeout: {rc.timeout_secs}s" if rc.timeout_secs else "timeout: none")
    for k, v in config_env.items():
        _out(f"env:     {k}={v}")
    for k, v in sorted(rc.vars.items()):
        _out(f"var:     {k} = {v}")
    return 0


def cmd_graph(args: argparse.Namespace) -> int:
    config = _load(args)
    triggers = {c.name: c.triggers for c in config.commands}
    cancels = {c.name: c.cancel_on_triggers for c in config.commands}
    graph = command_graph(triggers)
    emitted = emitted_events(triggers)
    external = sorted({t for ts in triggers.values() for t in ts if t not in emitted})
    if args.mermaid:
        for line in _mermaid(triggers, cancels, graph, external):
            _out(line)
        return 0
    for event in external:
        listeners = [n for n, ts in triggers.items() if event in ts]
        _out(f"{event} → {', '.join(listeners)}")
    for a, edges in graph.items():
        for b, event in edges:
            _out(f"{a} --{event.split(':', 1)[0]}--> {b}")
    for name, ts in cancels.items():
        for t in ts:
            _out(f"{t} ⊘ cancels {name}")
    return 0


def _mermaid_label(text: str) -> str:
    return text.replace('"', "#quot;")


def _mermaid(triggers: dict[str, list[str]], cancels: dict[str, list[str]],
             graph: dict[str, list[tuple[str, str]]], external: list[str]) -> list[str]:
    """A Mermaid flowchart that depends only on the config (it can be committed and diffed):
    commands ``c0…`` in config order, events ``e0…`` sorted by name, one node per event
    whether it starts commands, cancels them, or both."""
    cmd_ids = {name: f"c{i}" for i, name in enumerate(triggers)}
    events = sorted({*external, *(t for ts in cancels.values() for t in ts)})
    ev_ids = {event: f"e{i}" for i, event in enumerate(events)}
    lines = ["flowchart LR"]
    lines += [f'  {node}["{_mermaid_label(name)}"]' for name, node in cmd_ids.items()]
    lines += [f'  {node}(["{_mermaid_label(event)}"])' for event, node in ev_ids.items()]
    for event in external:
        for name, ts in triggers.items():
            if event in ts:
                lines.append(f"  {ev_ids[event]} --> {cmd_ids[name]}")
    for a, edges in graph.items():
        for b, event in edges:
            kind = event.split(":", 1)[0].removeprefix("command_")
            lines.append(f'  {cmd_ids[a]} -- "{kind}" --> {cmd_ids[b]}')
    for name, ts in cancels.items():
        for t in ts:
            lines.append(f"  {ev_ids[t]} -. cancels .-> {cmd_ids[name]}")
    return lines


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
    from .server import serve

    return serve()


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
        from . import __version__

        return __version__


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", "-c", action="append", metavar="FILE",
                        help="config file (repeatable; several files merge). Default: "
                             "sidecar.toml or cmdorc.toml in the current directory")
    common.add_argument("--log-level", default="WARNING",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"])

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
    logging.basicConfig(stream=sys.stderr, level=getattr(args, "log_level", "WARNING"),
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args))
    except CliError as exc:
        _err(str(exc))
        return exc.code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
