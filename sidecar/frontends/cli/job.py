"""``sidecar job``: orchesjob 1.1's command line (start, status, logs, abort, unlock, rerun,
clean) over :mod:`sidecar.app.jobs`, with its flags, JSON and exit codes (0 ok, 1 error,
2 usage, 3 not found, 4 wrong state, 5 lock).

:func:`sidecar.frontends.cli.main` hands ``sidecar job …`` here before it imports anything
else: this path imports no asyncio, no core and no host client.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
from collections.abc import Sequence

from sidecar.adapters.run_db import RunDBError
from sidecar.app import jobs
from sidecar.app.jobs import JobError, Jobs, UsageError

from .args import Formatter, duration_secs

TYPE_CHECKING = False  # typing is not imported at run time: `sidecar job` starts fast
if TYPE_CHECKING:
    from typing import Any, NoReturn

EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args: Any, **kw: Any) -> None:
        kw.setdefault("formatter_class", Formatter)
        super().__init__(*args, **kw)

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(jobs.EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _key_or_id(p: argparse.ArgumentParser, what: str) -> None:
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--run-key", metavar="KEY", help=f"{what} the latest job of this key")
    which.add_argument("--job-id", metavar="ID", help=f"{what} this job")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="sidecar job",
        description="Idempotent one-shot jobs, as orchesjob 1.1 (same commands, flags, JSON "
                    "and exit codes). Jobs are the local user's own commands: they are never "
                    "run for agents or over the protocol. State: $SIDECAR_HOME, else "
                    "~/.local/share/cmdsidecar.")
    parser.add_argument("--version", action="version", version="sidecar job (orchesjob 1.1 "
                        "compatible)")
    sub = parser.add_subparsers(dest="cmd", required=True, metavar="COMMAND",
                                parser_class=_Parser)

    p = sub.add_parser("start", help="start a job, or return the active one of its run key")
    p.add_argument("--run-key", required=True, metavar="KEY", help="idempotency key")
    p.add_argument("--sync", action="store_true", help="wait for the job to finish")
    p.add_argument("--start-timeout", type=float, default=jobs.DEFAULT_START_TIMEOUT,
                   metavar="SECS",
                   help="seconds an async start waits for the command to run (default 10)")
    p.add_argument("--strict", action="store_true",
                   help="one execution per run key, ever (until `sidecar job unlock`)")
    p.add_argument("command", nargs=argparse.REMAINDER, help="the command, after --")

    p = sub.add_parser("status", help="a job's status, a key's history, or the running jobs")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--run-key", metavar="KEY")
    which.add_argument("--job-id", metavar="ID")
    which.add_argument("--running", action="store_true", help="every STARTING/RUNNING job")
    p.add_argument("--all", action="store_true",
                   help="every job of --run-key, newest attempt first")

    p = sub.add_parser("logs", help="print a job's stdout or stderr")
    _key_or_id(p, "print")
    p.add_argument("--stream", choices=["stdout", "stderr"], default="stdout")

    p = sub.add_parser("clean", help="delete finished jobs and their logs")
    p.add_argument("--before", metavar="DATETIME", help="finished before (ISO 8601; local "
                   "time without an offset)")
    p.add_argument("--after", metavar="DATETIME", help="finished at or after")
    p.add_argument("--all", action="store_true", help="every finished job")
    p.add_argument("--job-id", metavar="ID", help="this job only")
    p.add_argument("--run-key", metavar="KEY", help="only jobs of this key")
    p.add_argument("--dry-run", action="store_true", help="print what would be deleted")

    p = sub.add_parser("abort", help="stop a running job (SIGTERM, grace, SIGKILL)")
    _key_or_id(p, "abort")
    p.add_argument("--reason", metavar="TEXT")
    p.add_argument("--grace-seconds", type=float, default=jobs.DEFAULT_GRACE, metavar="SECS",
                   help="seconds between SIGTERM and SIGKILL (default 5)")

    p = sub.add_parser("unlock", help="let the next start --strict of a finished key run once")
    p.add_argument("--run-key", required=True, metavar="KEY")
    p.add_argument("--reason", metavar="TEXT")
    p.add_argument("--ttl", metavar="DURATION",
                   help="expiry: seconds, or with s, m, h or d (30m, 2h)")

    p = sub.add_parser("rerun", help="start a finished job again now (any strictness)")
    _key_or_id(p, "rerun")
    p.add_argument("--sync", action="store_true")
    p.add_argument("--start-timeout", type=float, default=jobs.DEFAULT_START_TIMEOUT,
                   metavar="SECS")
    p.add_argument("--reason", metavar="TEXT")
    return parser


def _print(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2) + "\n")  # ASCII, as orchesjob prints


def _run(args: argparse.Namespace) -> int:
    if args.cmd in ("status", "logs", "abort", "rerun", "clean"):
        # An empty --run-key or --job-id counts as not given (orchesjob's reading).
        args.run_key = args.run_key or None
        args.job_id = args.job_id or None
        if args.cmd != "clean" and not args.run_key and not args.job_id \
                and not getattr(args, "running", False):
            raise UsageError("either --run-key or --job-id is required")
    ttl = None
    if getattr(args, "ttl", None) is not None:
        try:
            ttl = duration_secs(args.ttl)
        except ValueError as exc:
            raise UsageError(f"--ttl: {exc}") from None
    store = Jobs()
    try:
        if args.cmd == "start":
            command = args.command[1:] if args.command[:1] == ["--"] else args.command
            _print(store.start(command, args.run_key, strict=args.strict, sync=args.sync,
                               start_timeout=args.start_timeout))
        elif args.cmd == "rerun":
            _print(store.rerun(args.run_key, args.job_id, reason=args.reason, sync=args.sync,
                               start_timeout=args.start_timeout))
        elif args.cmd == "status":
            _print(store.status(args.run_key, args.job_id, running=args.running,
                                all=args.all))
        elif args.cmd == "logs":
            path = store.log_file(args.run_key, args.job_id, args.stream)
            with open(path, "rb") as f:
                sys.stdout.flush()
                while chunk := f.read(1 << 16):
                    sys.stdout.buffer.write(chunk)
        elif args.cmd == "abort":
            _print(store.abort(args.run_key, args.job_id, reason=args.reason,
                               grace=args.grace_seconds))
        elif args.cmd == "unlock":
            _print(store.unlock(args.run_key, reason=args.reason, ttl=ttl))
        elif args.cmd == "clean":
            _print(store.clean(before=args.before, after=args.after, all=args.all,
                               job_id=args.job_id, run_key=args.run_key,
                               dry_run=args.dry_run))
    finally:
        store.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[2:] if argv is None else list(argv))
    try:
        return _run(args)
    except JobError as exc:
        sys.stderr.write(f"sidecar job: {exc}\n")
        return exc.code
    except sqlite3.Error as exc:
        error = jobs.db_error(exc)
        sys.stderr.write(f"sidecar job: {error}\n")
        return error.code
    except (RunDBError, OSError) as exc:
        sys.stderr.write(f"sidecar job: {exc}\n")
        return jobs.EXIT_ERROR
    except KeyboardInterrupt:
        if args.cmd in ("start", "rerun"):
            sys.stderr.write("sidecar job: stopped waiting; the job goes on (`sidecar job "
                             "status`, `sidecar job abort`)\n")
        return EXIT_INTERRUPTED
