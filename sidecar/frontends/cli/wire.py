"""What a subcommand asks for and how it prints the answer, whoever answers: the workspace's
host (:mod:`.remote`) or this process (:mod:`.workspace`, ``--no-host``) get the same wire
params (protocol.md's camelCase objects, options not given left out) and give the same wire
results to the same printers.

Standard library only, like :mod:`.remote`.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from .common import err, out
from .report import cleaned_table, clock, history_table

Runs = list[dict[str, Any]]


def given(**params: Any) -> dict[str, Any]:
    """Params without the options not given (None)."""
    return {k: v for k, v in params.items() if v is not None}


# ------------------------------------------------------------------------------- params
def is_run_id(ref: str) -> bool:
    """Whether RUN|NAME is a run id (a UUID) rather than a command."""
    parts = ref.split("-")
    return (len(ref) == 36 and [len(p) for p in parts] == [8, 4, 4, 4, 12]
            and all(c in "0123456789abcdefABCDEF" for p in parts for c in p))


def run_params(args: argparse.Namespace, variables: dict[str, str]) -> dict[str, Any]:
    """``sidecar/run``: ``run NAME [--var K=V] [--key K [--strict]]``."""
    return given(command=args.name, vars=variables, runKey=args.key,
                 strict=True if args.strict else None)


def rerun_params(args: argparse.Namespace, run_id: str | None) -> dict[str, Any]:
    """``sidecar/rerun``: ``run_id`` (resolved from RUN|NAME), or with ``--key`` NAME's key."""
    if args.key is not None:
        return given(command=args.run, runKey=args.key, reason=args.reason)
    return given(runId=run_id, reason=args.reason)


def history_params(args: argparse.Namespace) -> dict[str, Any]:
    return given(command=args.name, limit=args.limit, runKey=args.key)


def unlock_params(args: argparse.Namespace) -> dict[str, Any]:
    return given(command=args.name, runKey=args.key, reason=args.reason, ttlSecs=args.ttl)


def clean_params(args: argparse.Namespace) -> dict[str, Any]:
    return given(before=args.before, after=args.after, all=True if args.all else None,
                 runId=args.run, command=args.command, runKey=args.key,
                 dryRun=True if args.dry_run else None)


# ------------------------------------------------------------------------------- answers
def print_history(args: argparse.Namespace, runs: Runs) -> None:
    """``history``: the runs as a table, or ``--json`` the ``RunInfo`` list."""
    if args.json:
        out(json.dumps(runs, indent=2))
    elif runs:
        for line in history_table(runs):
            out(line)
    else:
        key = f" with key {args.key}" if args.key is not None else ""
        err(f"{args.name} has no finished runs{key}")


def print_unlocked(args: argparse.Namespace, result: dict[str, Any]) -> None:
    """``unlock``: what was unlocked, or ``--json`` the ``sidecar/unlock`` result."""
    if args.json:
        out(json.dumps(result, indent=2))
        return
    until = f" until {clock(result['expiresAt'])}" if result["expiresAt"] else ""
    why = f" ({result['reason']})" if result["reason"] else ""
    out(f"unlocked {result['command']} key {result['runKey']}{why}: its next `run --strict` "
        f"starts once{until}")


def print_cleaned(args: argparse.Namespace, result: dict[str, Any]) -> int:
    """``clean``: the runs deleted (or that would be), or ``--json`` the ``sidecar/clean``
    result; output files that stayed go to stderr. Exit code 1 if there are any."""
    if args.json:
        out(json.dumps(result, indent=2))
    else:
        n = len(result["runs"])
        runs = f"{n} run{'s' if n != 1 else ''}"
        out(f"would delete {runs} (dry run)" if result["dryRun"] else f"deleted {runs}")
        if result["runs"]:
            for line in cleaned_table(result["runs"]):
                out("  " + line)
    for problem in result["errors"]:
        err(f"not deleted: {problem}")
    return 1 if result["errors"] else 0


def rerun_label(run: dict[str, Any]) -> str:
    """``rerun of 1a2b3c4d: run 5e6f7a8b of Deploy (key nightly, attempt 3)``."""
    key = f"key {run['runKey']}, " if run.get("runKey") else ""
    return (f"rerun of {str(run.get('rerunOf'))[:8]}: run {run['runId'][:8]} of "
            f"{run['command']} ({key}attempt {run['attempt']})")


def override_label(run: dict[str, Any]) -> str:
    """A strict start that consumed its key's unlock."""
    return (f"strict key {run['runKey']} was unlocked: running {run['command']} once more "
            f"(attempt {run['attempt']})")

