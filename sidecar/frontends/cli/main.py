"""The ``sidecar`` command line: the parser, and the subcommands that need no host.

``run``, ``trigger``, ``save``, ``rerun``, ``status``, ``history``, ``output``, ``cancel``,
``wait``, ``unlock``, ``clean`` and ``host …`` talk to the workspace's host (:mod:`.remote`,
standard library only); with ``--no-host`` (``run``, ``trigger``, ``save``, ``rerun``,
``status``, ``history``, ``unlock``, ``clean``), and for ``preview`` and ``graph``, the work is
done in this process through the service layer (:mod:`.workspace`). Each is imported only when
its command runs. ``check``, ``init``, ``serve`` (also plain ``sidecar`` when stdin is not a
TTY) and ``--version`` are here. Usage errors the parser cannot see (``--strict`` without
``--key``, ``clean`` without a selection) are checked here too, before either is imported.
Messages go to stderr; stdout carries results (and, for ``serve``, only the protocol).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from .args import Formatter, parse_duration
from .common import (
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    CliError,
    config_paths,
    err,
    out,
)

SAMPLE_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "sample.toml")


def cmd_check(args: argparse.Namespace) -> int:
    from pathlib import Path

    from sidecar.core.checks import check_files
    from sidecar.core.config import read_source
    from sidecar.core.problems import Severity

    paths = [Path(p) for p in args.files] if args.files else config_paths(args)
    report = check_files([read_source(p) for p in paths])
    shown = [p for p in report.problems if args.hints or p.severity != Severity.HINT]
    if args.json:
        out(json.dumps([{
            "file": p.file, "line": p.span.line + 1, "column": p.span.column + 1,
            "endLine": p.span.end_line + 1, "endColumn": p.span.end_column + 1,
            "severity": p.severity.label, "code": p.code, "message": p.message}
            for p in shown], indent=2))
    else:
        for p in shown:
            out(p.format())
    errors = sum(p.severity == Severity.ERROR for p in report.problems)
    warnings = sum(p.severity == Severity.WARNING for p in report.problems)
    commands = len(report.config.commands) if report.config else 0
    sys.stderr.write(f"{len(paths)} file(s): {errors} error(s), {warnings} warning(s)"
                     + (f", {commands} command(s)" if report.config else "") + "\n")
    return 1 if errors else 0


def cmd_init(args: argparse.Namespace) -> int:
    from pathlib import Path

    target = Path(args.path)
    if target.is_dir():
        target = target / "sidecar.toml"
    if target.exists() and not args.force:
        raise CliError(f"{target} exists (use --force to overwrite)")
    with open(SAMPLE_CONFIG, encoding="utf-8") as sample:
        target.write_text(sample.read(), encoding="utf-8")
    sys.stderr.write(f"wrote {target}; try: sidecar check && sidecar graph\n")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    if not args.standalone:
        from .relay import relay

        return relay(args.config)
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


class _Parents:
    """The option groups subcommands share (argparse ``parents``)."""

    def __init__(self) -> None:
        self.common = argparse.ArgumentParser(add_help=False, formatter_class=Formatter)
        self.common.add_argument(
            "--workspace", "-w", metavar="DIR",
            help="the workspace root. Default: the nearest directory from here up holding "
                 "sidecar.toml or cmdorc.toml, else this one")
        self.common.add_argument(
            "--config", "-c", action="append", metavar="FILE",
            help="config file (repeatable; several files merge). Default: sidecar.toml or "
                 "cmdorc.toml in the workspace root")
        self.common.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                                 help="default: $SIDECAR_LOG, else WARNING")
        self.no_host = argparse.ArgumentParser(add_help=False, formatter_class=Formatter)
        self.no_host.add_argument("--no-host", action="store_true",
                                  help="run in this process instead of the workspace's host")
        self.json = argparse.ArgumentParser(add_help=False, formatter_class=Formatter)
        self.json.add_argument("--json", action="store_true", help="JSON instead of text")
        self.vars = argparse.ArgumentParser(add_help=False, formatter_class=Formatter)
        self.vars.add_argument("--var", action="append", default=[], metavar="NAME=VALUE",
                               help="runtime variable (never shell code; see README "
                                    "\"Safety\")")


Sub = Any  # argparse's _SubParsersAction (private)


def _add(sub: Sub, name: str, parents: list[argparse.ArgumentParser], text: str,
         func: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(name, parents=parents, help=text,
                                                formatter_class=Formatter)
    if func is not None:
        p.set_defaults(func=func)
    return p


def _run(sub: Sub, o: _Parents) -> None:
    p = _add(sub, "run", [o.common, o.no_host, o.vars, o.json],
             "run a command and follow the chain it triggers", "run")
    p.add_argument("name")
    p.add_argument("--key", metavar="K",
                   help="run key: while a run of NAME with this key is active, follow it "
                        "instead of starting another; once it ended, start the next attempt")
    p.add_argument("--strict", action="store_true",
                   help="with --key: never start the key again once it ran (until `sidecar "
                        "unlock`); its finished run is printed instead")


def _rerun(sub: Sub, o: _Parents) -> None:
    p = _add(sub, "rerun", [o.common, o.no_host, o.json],
             "start a finished run again (same variables and key, next attempt) and follow "
             "it", "rerun")
    p.add_argument("run", metavar="RUN|NAME",
                   help="a run id, or a command (its last run; with --key: that key's)")
    p.add_argument("--key", metavar="K", help="rerun the latest run of NAME with this key")
    p.add_argument("--reason", metavar="TEXT", help="why (recorded with the new run)")


def _unlock(sub: Sub, o: _Parents) -> None:
    p = _add(sub, "unlock", [o.common, o.no_host, o.json],
             "let the next `run --strict` of a finished key start once more", "unlock")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--key", metavar="K", required=True, help="the run key")
    p.add_argument("--reason", metavar="TEXT", help="why (recorded with the run it lets in)")
    p.add_argument("--ttl", type=parse_duration, metavar="DURATION",
                   help="the unlock expires after DURATION: seconds, or with s, m, h or d "
                        "(30m, 2h). Default: never")


def _clean(sub: Sub, o: _Parents) -> None:
    p = _add(sub, "clean", [o.common, o.no_host, o.json],
             "delete finished runs from the run records, with their output", "clean")
    p.add_argument("--before", metavar="T",
                   help="runs that ended before T (ISO 8601, local time without an offset: "
                        "2026-01-31 or 2026-01-31T12:00)")
    p.add_argument("--after", metavar="T", help="runs that ended at or after T")
    p.add_argument("--all", action="store_true", help="every finished run")
    p.add_argument("--run", metavar="RUN", help="this run only (a run id)")
    p.add_argument("--command", metavar="NAME", help="only runs of NAME")
    p.add_argument("--key", metavar="K", help="only runs with this run key")
    p.add_argument("--dry-run", action="store_true",
                   help="list what would be deleted; delete nothing")


def _trigger(sub: Sub, o: _Parents) -> None:
    p = _add(sub, "trigger", [o.common, o.no_host, o.vars, o.json],
             "fire a trigger and follow what it starts", "trigger")
    p.add_argument("event")


def _save(sub: Sub, o: _Parents) -> None:
    p = _add(sub, "save", [o.common, o.no_host, o.json],
             "fire the [on_save] triggers of saved files (for editor/git hooks)", "save")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("--wait", action="store_true",
                   help="wait for the runs it starts and their chains; exit with their result")


def _status(sub: Sub, o: _Parents) -> None:
    p = _add(sub, "status", [o.common, o.no_host, o.json],
             "every command's state and the active runs", "status")
    p.add_argument("name", nargs="?", metavar="NAME")


def _history(sub: Sub, o: _Parents) -> None:
    p = _add(sub, "history", [o.common, o.no_host, o.json],
             "a command's finished runs, most recent first", "history")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--limit", type=int, default=10, metavar="N", help="default 10; 0: all")
    p.add_argument("--key", metavar="K", help="only the runs with this run key")


def _output(sub: Sub, o: _Parents) -> None:
    p = _add(sub, "output", [o.common], "a run's output (NAME: its newest run)", "output")
    p.add_argument("run", metavar="RUN|NAME")
    p.add_argument("--follow", "-f", action="store_true",
                   help="keep printing until the run is final; exit with its result")


def _cancel(sub: Sub, o: _Parents) -> None:
    p = _add(sub, "cancel", [o.common], "cancel a run, a command's runs, or all", "cancel")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("run", nargs="?", metavar="RUN")
    which.add_argument("--command", metavar="NAME", help="every active run of NAME")
    which.add_argument("--all", action="store_true", help="every active run")
    p.add_argument("--key", metavar="K", help="with --command: its active run with this key")
    p.add_argument("--reason", metavar="TEXT",
                   help="why (the runs' comment; default: cancelled by client)")
    p.add_argument("--grace", type=float, metavar="S",
                   help="seconds between SIGTERM and SIGKILL (default: the host's, 3)")


def _wait(sub: Sub, o: _Parents) -> None:
    p = _add(sub, "wait", [o.common, o.json], "wait for a run to end; exit with its result",
             "wait")
    p.add_argument("run", metavar="RUN|NAME")
    p.add_argument("--timeout", type=float, metavar="S",
                   help="give up after S seconds (exit 124; the run goes on)")
    p.add_argument("--chain", action="store_true", help="also wait for the runs it starts")


def _check(sub: Sub, o: _Parents) -> None:
    p = _add(sub, "check", [o.common], "report config problems", cmd_check)
    p.add_argument("files", nargs="*")
    p.add_argument("--json", action="store_true")
    p.add_argument("--hints", action="store_true", help="also show hints")


def _preview(sub: Sub, o: _Parents) -> None:
    p = _add(sub, "preview", [o.common, o.vars, o.json], "show what a command would run",
             "preview")
    p.add_argument("name")


def _graph(sub: Sub, o: _Parents) -> None:
    p = _add(sub, "graph", [o.common], "show the trigger graph", "graph")
    p.add_argument("--mermaid", action="store_true", help="Mermaid flowchart")
    p.add_argument("--json", action="store_true",
                   help="the graph as protocol.md's sidecar/triggerGraph result")


def _init(sub: Sub, o: _Parents) -> None:
    p = _add(sub, "init", [o.common], "write a commented sample config", cmd_init)
    p.add_argument("path", nargs="?", default=".")
    p.add_argument("--force", action="store_true")


def _serve(sub: Sub, o: _Parents) -> None:
    p = _add(sub, "serve", [o.common],
             "JSON-RPC sidecar on stdio (attached to the workspace's shared host)", cmd_serve)
    p.add_argument("--standalone", action="store_true",
                   help="serve in its own process with an orchestrator of its own, which ends "
                        "with the session")


def _host(sub: Sub, o: _Parents) -> None:
    p = _add(sub, "host", [], "the workspace's host: start, status, stop, logs", None)
    host = p.add_subparsers(dest="host_cmd", required=True, metavar="ACTION")
    h = _add(host, "start", [o.common], "start the host (if none runs)", "host_start")
    h.add_argument("--idle-timeout", type=float, metavar="S",
                   help="exit after S seconds with no client and no run (default: "
                        "$SIDECAR_HOST_IDLE_TIMEOUT, else [host] idle_timeout_secs, else 60)")
    h = _add(host, "status", [o.common, o.json], "the running host (exit 1 when none runs)",
             "host_status")
    h = _add(host, "stop", [o.common], "stop the host: its runs are cancelled", "host_stop")
    h = _add(host, "logs", [o.common], "the host's log", "host_logs")
    h.add_argument("--lines", "-n", type=int, default=50, metavar="N",
                   help="the last N lines (default 50; 0: all)")
    h.add_argument("--follow", "-f", action="store_true", help="then print what is added")


def cmd_mcp(args: argparse.Namespace) -> int:
    from sidecar.frontends.mcp import main as mcp  # the MCP SDK, only now

    return mcp(args)


def _mcp(sub: Sub, o: _Parents) -> None:
    p = _add(sub, "mcp", [o.common],
             "MCP server on stdio: the workspace's declared commands as tools for agents "
             "(attached to the workspace's host)", cmd_mcp)
    p.add_argument("--print-config", nargs="?", const="claude", choices=("claude", "cursor",
                                                                          "vscode"),
                   metavar="CLIENT",
                   help="print a configuration for an agent host to paste (claude, the "
                        "default; cursor; vscode) and exit")


def _job(sub: Sub, o: _Parents) -> None:
    # Listed for --help only: `sidecar job …` is parsed by .job (see the package's main).
    _add(sub, "job", [], "orchesjob-compatible one-shot jobs of your own commands (start, "
         "status, logs, abort, unlock, rerun, clean): `sidecar job --help`", None)


SUBCOMMANDS = {
    "run": _run, "trigger": _trigger, "save": _save, "rerun": _rerun, "status": _status,
    "history": _history, "output": _output, "cancel": _cancel, "wait": _wait,
    "unlock": _unlock, "clean": _clean, "check": _check, "preview": _preview, "graph": _graph,
    "init": _init, "serve": _serve, "mcp": _mcp, "host": _host, "job": _job,
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The ``sidecar`` parser; with ``only``, with that subcommand alone (what :func:`main`
    uses when the command line names one: a git hook's ``sidecar save`` builds one
    subparser, not seventeen)."""
    parser = argparse.ArgumentParser(
        prog="sidecar", formatter_class=Formatter,
        description="Trigger-driven command orchestrator (cmdorc-compatible). run, trigger, "
                    "save, rerun, status, history, output, cancel, wait, unlock and clean talk "
                    "to the workspace's host; run, trigger, save and rerun start it when none "
                    "runs.")
    parser.add_argument("--version", action=_VersionAction)
    sub = parser.add_subparsers(dest="cmd")
    parents = _Parents()
    for name, add in SUBCOMMANDS.items():
        if only is None or name == only:
            add(sub, parents)
    return parser


IN_PROCESS = ("preview", "graph")
"""Workspace commands that always run in this process (the others talk to the host unless
``--no-host``)."""


def _usage(args: argparse.Namespace) -> None:
    """Usage errors argparse cannot express (exit 2): combinations of options."""
    cmd = args.cmd
    key = getattr(args, "key", None)
    if key is not None and not key.strip():
        raise CliError("--key must not be empty", EXIT_USAGE)
    if cmd == "run" and args.strict and key is None:
        raise CliError("--strict needs --key", EXIT_USAGE)
    if cmd == "cancel":
        if key is not None and args.command is None:
            raise CliError("--key needs --command NAME", EXIT_USAGE)
        if args.grace is not None and not args.grace >= 0:
            raise CliError("--grace must be 0 or more seconds", EXIT_USAGE)
    if cmd == "clean":
        if args.run is not None and (args.before or args.after or args.all or key):
            raise CliError("--run cannot be combined with --before, --after, --all or --key",
                           EXIT_USAGE)
        if args.run is None and args.before is None and args.after is None and not args.all:
            raise CliError("say what to delete: --before T, --after T, --all or --run RUN",
                           EXIT_USAGE)


def _log_to_stderr(args: argparse.Namespace) -> None:
    """Log records of in-process work go to stderr (the host logs to its own file)."""
    import logging

    level = getattr(args, "log_level", None) or os.environ.get("SIDECAR_LOG") or "WARNING"
    logging.basicConfig(stream=sys.stderr, level=getattr(logging, level.upper(),
                                                         logging.WARNING),
                        format="%(levelname)s %(name)s: %(message)s")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv and not sys.stdin.isatty():
        argv = ["serve"]
    parser = build_parser(argv[0] if argv and argv[0] in SUBCOMMANDS else None)
    args = parser.parse_args(argv)
    if args.cmd is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    func = args.func
    try:
        _usage(args)
        if isinstance(func, str) and (func in IN_PROCESS or getattr(args, "no_host", False)):
            _log_to_stderr(args)
            from . import workspace  # the service layer, only now

            func = getattr(workspace, func)
        elif isinstance(func, str):
            from . import remote  # the host's client: standard library only

            func = getattr(remote, func)
        elif args.cmd != "serve":  # serve logs with timestamps (frontends.lsp.configure_logging)
            _log_to_stderr(args)
        return int(func(args))
    except CliError as exc:
        err(str(exc))
        return exc.code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
