"""The ``sidecar`` command line: the parser, and the subcommands that need no host.

``sidecar run NAME``, ``trigger EVENT``, ``save PATH…``, ``preview NAME`` and ``graph`` act on the
workspace through the service layer (:mod:`.workspace`, imported only for them); ``check``,
``init``, ``serve`` (also plain ``sidecar`` when stdin is not a TTY) and ``--version`` are
here. Messages go to stderr; stdout carries results (and, for ``serve``, only the protocol).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from .common import EXIT_INTERRUPTED, EXIT_USAGE, CliError, config_paths, err, out

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
    p.set_defaults(func="run")

    p = sub.add_parser("trigger", parents=[common, runtime],
                       help="fire a trigger and run what follows")
    p.add_argument("event")
    p.set_defaults(func="trigger")

    p = sub.add_parser("save", parents=[common],
                       help="fire the [on_save] triggers of saved files (for editor/git hooks)")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func="save")

    p = sub.add_parser("check", parents=[common], help="report config problems")
    p.add_argument("files", nargs="*")
    p.add_argument("--json", action="store_true")
    p.add_argument("--hints", action="store_true", help="also show hints")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("preview", parents=[common, runtime],
                       help="show what a command would run")
    p.add_argument("name")
    p.set_defaults(func="preview")

    p = sub.add_parser("graph", parents=[common], help="show the trigger graph")
    p.add_argument("--mermaid", action="store_true", help="Mermaid flowchart")
    p.add_argument("--json", action="store_true", help="the graph as protocol.md's "
                   "sidecar/triggerGraph result")
    p.set_defaults(func="graph")

    p = sub.add_parser("init", parents=[common], help="write a commented sample config")
    p.add_argument("path", nargs="?", default=".")
    p.add_argument("--force", action="store_true")
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("serve", parents=[common], help="JSON-RPC sidecar on stdio (attached to "
                       "the workspace's shared host)")
    p.add_argument("--standalone", action="store_true",
                   help="serve in this process with an orchestrator of its own, which ends "
                        "with the session")
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
    func = args.func
    if isinstance(func, str):  # a workspace command: load the service layer only now
        from . import workspace

        func = getattr(workspace, func)
    try:
        return int(func(args))
    except CliError as exc:
        err(str(exc))
        return exc.code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
