"""The run records in SQLite (:mod:`sidecar.adapters.run_db`): orchesjob's run-key rules
(claim, strict, unlock, rerun), lost owners, history, prune, clean and the schema, on real
database files; several processes claiming one key start one run."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from sidecar.adapters import run_db
from sidecar.adapters.run_db import (
    SCHEMA_VERSION,
    NotFound,
    RunDB,
    RunDBError,
    RunRow,
    WrongState,
    current_owner,
    owner_alive,
    owner_of,
)

pytestmark = pytest.mark.timeout(30)

CMD = "deploy"
KEY = "2026-05-02"


# ------------------------------------------------------------------------------ helpers
@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "runs.db"


@pytest.fixture
def db(db_path: Path) -> Iterator[RunDB]:
    records = RunDB(db_path)
    yield records
    records.close()


def new_row(command: str = CMD, key: str | None = KEY, **kw: object) -> RunRow:
    """A run not yet recorded, with a fresh id."""
    return RunRow(run_id=uuid.uuid4().hex, command=command, run_key=key, **kw)  # type: ignore[arg-type]


def finish(db: RunDB, run: RunRow, state: str = "success", *,
           end_time: float | None = None) -> RunRow:
    """Record ``run`` as ended in ``state``; returns the recorded row."""
    done = replace(run, state=state, exit_code=0 if state == "success" else 1,
                   end_time=time.time() if end_time is None else end_time)
    db.record(done)
    return done


def finished(db: RunDB, command: str = CMD, key: str | None = KEY, *,
             end_time: float = 1000.0, output: Path | None = None,
             state: str = "success") -> RunRow:
    """A finished run recorded directly (its output file written if ``output`` is given)."""
    if output is not None:
        output.write_text(f"output of {command} {key} {end_time}\n")
    row = new_row(command, key, state=state, end_time=end_time,
                  output_path=str(output) if output is not None else None)
    db.record(row)
    return row


def active_row(db: RunDB, command: str = CMD, key: str | None = KEY, *,
               owner: str | None = None, output: Path | None = None) -> RunRow:
    """A running run recorded directly, owned by ``owner`` (default: this process)."""
    row = new_row(command, key, state="running", owner=owner or current_owner(),
                  output_path=str(output) if output is not None else None)
    db.record(row)
    return row


def ids(rows: list[RunRow]) -> list[str]:
    return [r.run_id for r in rows]


def stored_ids(db: RunDB) -> set[str]:
    return {r["run_id"] for r in db._db.execute("SELECT run_id FROM runs")}


def exited_owner() -> str:
    """The owner name of a real process, taken while it ran; the process has ended (and is
    reaped) when this returns."""
    proc = subprocess.Popen(["cat"], stdin=subprocess.PIPE)
    try:
        owner = owner_of(proc.pid)
        assert owner_alive(owner), owner
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait()
    assert owner.rsplit(":", 1)[1], "start ticks are known while the process runs"
    return owner


@contextlib.contextmanager
def live_process(*, new_session: bool = False) -> Iterator[subprocess.Popen[bytes]]:
    """A process that runs until the block ends (then it is killed and reaped)."""
    proc = subprocess.Popen(["sleep", "30"], start_new_session=new_session)
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


# ------------------------------------------------------------------------------ claim
def test_first_claim_creates_the_run(db: RunDB) -> None:
    """The first claim of a key records a pending run: attempt 1, owned by this process."""
    row = new_row()
    claim = db.claim(row, now=500.0)
    assert (claim.existing, claim.strict_override_used) == (False, False)
    assert claim.run.run_id == row.run_id
    assert (claim.run.attempt, claim.run.rerun_of, claim.run.state) == (1, None, "pending")
    assert claim.run.owner == current_owner()
    stored = db.get(row.run_id)
    assert stored is not None
    assert (stored.owner, stored.attempt, stored.created_at, stored.strict) == (
        current_owner(), 1, 500.0, False)
    assert stored.seq is not None
    assert db.latest(CMD, KEY) == stored
    assert db.lookup(CMD, KEY) == stored  # active: a start would return it


def test_second_claim_while_active_returns_the_same_run(db: RunDB) -> None:
    """While the key's run is active every claim, strict or not, returns it."""
    first = db.claim(new_row()).run
    again = db.claim(new_row())
    strict = db.claim(new_row(), strict=True)
    assert (again.existing, again.run.run_id) == (True, first.run_id)
    assert (strict.existing, strict.run.run_id) == (True, first.run_id)
    assert db.count() == 1


@pytest.mark.parametrize("state", ["success", "failed", "cancelled", "lost"])
def test_claim_after_the_run_ended_starts_the_next_attempt(db: RunDB, state: str) -> None:
    """A finished key (whatever the end) starts a new run: attempt + 1, ``rerun_of`` set."""
    first = finish(db, db.claim(new_row()).run, state)
    second = db.claim(new_row())
    assert second.existing is False
    assert (second.run.attempt, second.run.rerun_of) == (2, first.run_id)
    third = db.claim(new_row(reason="again"))
    assert third.existing is True  # the second is still active
    finish(db, second.run, "failed")
    third = db.claim(new_row())
    assert (third.existing, third.run.attempt, third.run.rerun_of) == (
        False, 3, second.run.run_id)
    assert db.count() == 3


def test_strict_claim_returns_the_finished_run(db: RunDB) -> None:
    """Strict: a finished key returns its run, no new one (and lookup agrees)."""
    done = finish(db, db.claim(new_row(), strict=True).run)
    assert done.strict is True
    claim = db.claim(new_row(), strict=True)
    assert (claim.existing, claim.strict_override_used) == (True, False)
    assert (claim.run.run_id, claim.run.state) == (done.run_id, "success")
    assert db.count() == 1
    assert db.lookup(CMD, KEY, strict=True) == db.get(done.run_id)
    assert db.lookup(CMD, KEY) is None  # a non-strict start would start one
    assert db.lookup(CMD, "other", strict=True) is None


def test_strict_first_claim_starts_a_run(db: RunDB) -> None:
    """Strictness only matters once the key has a run: the first strict claim starts one."""
    claim = db.claim(new_row(), strict=True)
    assert (claim.existing, claim.run.attempt, claim.run.strict) == (False, 1, True)


def test_run_keys_are_per_command(db: RunDB) -> None:
    """The same key of another command, or another key of the same command, is independent."""
    a = db.claim(new_row("a")).run
    b = db.claim(new_row("b"))
    other_key = db.claim(new_row("a", "other-key"))
    assert (b.existing, b.run.attempt, b.run.rerun_of) == (False, 1, None)
    assert (other_key.existing, other_key.run.attempt) == (False, 1)
    finish(db, a, "success")
    assert db.claim(new_row("b"), strict=True).run.run_id == b.run.run_id  # b still active
    assert db.claim(new_row("a"), strict=True).run.run_id == a.run_id  # a finished, strict
    assert db.latest("a", KEY) is not None and db.latest("c", KEY) is None
    assert db.count() == 3


def test_claim_keeps_the_callers_fields(db: RunDB) -> None:
    """A claimed row is stored as given: lists and dicts round-trip, a given owner stays."""
    with live_process() as proc:
        row = new_row(trigger_event="file_saved", trigger_chain=["file_saved", "Lint"],
                      upstream_run_ids=["u1"], vars={"a": "1"}, runtime_vars={"b": "2"},
                      started_by="cli", resolved_command="make deploy", cwd="/srv",
                      comment="by hand", owner=owner_of(proc.pid), pid=4242)
        db.claim(row, now=7.0)
        stored = db.get(row.run_id)
    assert stored is not None
    assert replace(stored, seq=None) == replace(row, created_at=7.0)


def test_record_updates_a_run_but_not_its_creation(db: RunDB) -> None:
    """``record`` of a known id updates the run (and keeps ``created_at`` and ``seq``)."""
    run = db.claim(new_row(), now=10.0).run
    seq = db.get(run.run_id).seq  # type: ignore[union-attr]
    db.record(replace(run, state="running", start_time=11.0, pid=99, created_at=99.0))
    stored = db.get(run.run_id)
    assert stored is not None
    assert (stored.state, stored.start_time, stored.pid) == ("running", 11.0, 99)
    assert (stored.created_at, stored.seq) == (10.0, seq)
    assert db.count() == 1


# ------------------------------------------------------------------------------ unlock
def test_unlock_needs_a_finished_run(db: RunDB) -> None:
    """Unlock: NotFound without a run of the key, WrongState while it is active."""
    with pytest.raises(NotFound):
        db.unlock(CMD, KEY)
    run = db.claim(new_row()).run
    with pytest.raises(NotFound):
        db.unlock("other-command", KEY)
    with pytest.raises(WrongState):
        db.unlock(CMD, KEY, reason="too early")
    finish(db, run)
    unlock = db.unlock(CMD, KEY, reason="data fix", now=1000.0)
    assert (unlock.command, unlock.run_key, unlock.reason) == (CMD, KEY, "data fix")
    assert (unlock.allowed_at, unlock.expires_at) == (1000.0, None)


def test_unlock_lets_exactly_one_strict_claim_through(db: RunDB) -> None:
    """An unlock is consumed by the next strict claim, whose run records its reason."""
    first = finish(db, db.claim(new_row(), strict=True).run)
    db.unlock(CMD, KEY, reason="data fix")
    assert db.lookup(CMD, KEY, strict=True) is None  # a strict start would start one now
    claim = db.claim(new_row(), strict=True)
    assert (claim.existing, claim.strict_override_used) == (False, True)
    assert (claim.run.reason, claim.run.attempt, claim.run.rerun_of) == (
        "data fix", 2, first.run_id)
    assert db.get(claim.run.run_id).reason == "data fix"  # type: ignore[union-attr]
    second = finish(db, claim.run)
    again = db.claim(new_row(), strict=True)
    assert (again.existing, again.strict_override_used) == (True, False)
    assert again.run.run_id == second.run_id
    assert db.count() == 2


def test_unlock_reason_does_not_replace_a_given_reason(db: RunDB) -> None:
    """A claim that brings its own reason keeps it when it consumes an unlock."""
    finish(db, db.claim(new_row(), strict=True).run)
    db.unlock(CMD, KEY, reason="from the unlock")
    claim = db.claim(new_row(reason="from the caller"), strict=True)
    assert claim.strict_override_used is True
    assert claim.run.reason == "from the caller"


def test_unlock_is_not_consumed_while_the_key_is_active(db: RunDB) -> None:
    """A strict claim that returns the active run leaves a (later) unlock alone; unlocking
    twice still lets one strict claim through."""
    finish(db, db.claim(new_row(), strict=True).run)
    db.unlock(CMD, KEY, reason="one")
    db.unlock(CMD, KEY, reason="two")  # replaces the first
    run = db.claim(new_row(), strict=True)
    assert (run.strict_override_used, run.run.reason) == (True, "two")
    assert db.claim(new_row(), strict=True).run.run_id == run.run.run_id  # active
    finish(db, run.run)
    assert db.claim(new_row(), strict=True).existing is True
    assert db.count() == 2


def test_unlock_expires_after_its_ttl(db: RunDB) -> None:
    """ttl 10 at now=1000: usable before 1010, not at 1011 (the run stays locked)."""
    done = finish(db, db.claim(new_row(), strict=True, now=900.0).run, end_time=950.0)
    unlock = db.unlock(CMD, KEY, reason="soon", ttl_secs=10, now=1000.0)
    assert unlock.expires_at == 1010.0
    assert db.lookup(CMD, KEY, strict=True, now=1009.0) is None
    assert db.lookup(CMD, KEY, strict=True, now=1011.0) == db.get(done.run_id)
    late = db.claim(new_row(), strict=True, now=1011.0)
    assert (late.existing, late.strict_override_used, late.run.run_id) == (
        True, False, done.run_id)
    assert db.count() == 1


def test_unlock_within_its_ttl_is_used(db: RunDB) -> None:
    """The same unlock is consumed by a strict claim before it expires."""
    finish(db, db.claim(new_row(), strict=True, now=900.0).run, end_time=950.0)
    db.unlock(CMD, KEY, reason="soon", ttl_secs=10, now=1000.0)
    claim = db.claim(new_row(), strict=True, now=1009.5)
    assert (claim.existing, claim.strict_override_used, claim.run.reason) == (
        False, True, "soon")


@pytest.mark.parametrize("ttl", [0, -5])
def test_unlock_ttl_must_be_positive(db: RunDB, ttl: float) -> None:
    """A ttl <= 0 is refused (ValueError) and unlocks nothing."""
    done = finish(db, db.claim(new_row(), strict=True).run)
    with pytest.raises(ValueError):
        db.unlock(CMD, KEY, ttl_secs=ttl)
    assert db.claim(new_row(), strict=True).run.run_id == done.run_id


def test_non_strict_claim_does_not_use_an_unlock(db: RunDB) -> None:
    """A non-strict start does not need an unlock, and says it used none."""
    finish(db, db.claim(new_row(), strict=True).run)
    db.unlock(CMD, KEY, reason="for strict")
    claim = db.claim(new_row())
    assert (claim.existing, claim.strict_override_used, claim.run.reason) == (
        False, False, None)


def test_a_failed_claim_changes_nothing(db: RunDB) -> None:
    """A claim whose insert fails (a run id already taken) rolls back: the unlock it would
    have consumed is still there."""
    first = finish(db, db.claim(new_row(), strict=True).run)
    db.unlock(CMD, KEY, reason="kept")
    with pytest.raises(sqlite3.IntegrityError):
        db.claim(replace(new_row(), run_id=first.run_id), strict=True)
    assert db._db.in_transaction is False and db.count() == 1
    claim = db.claim(new_row(), strict=True)
    assert (claim.strict_override_used, claim.run.reason) == (True, "kept")


def test_an_unlock_goes_with_the_last_run_of_its_key(db: RunDB, tmp_path: Path) -> None:
    """Cleaning (or pruning) every run of a key drops its unused unlock: the key begins
    anew, strict (one run, then that run again); an unlock of a key with runs left stays."""
    finish(db, db.claim(new_row(), strict=True).run, end_time=100.0)
    db.unlock(CMD, KEY, reason="never used")
    assert len(db.clean(run_key=KEY, all=True).runs) == 1
    fresh = db.claim(new_row(), strict=True)
    assert (fresh.existing, fresh.strict_override_used) == (False, False)
    finish(db, fresh.run, end_time=200.0)
    again = db.claim(new_row(), strict=True)
    assert (again.existing, again.run.run_id) == (True, fresh.run.run_id)
    # pruning a command's every run drops its unlocks too
    finish(db, db.claim(new_row("other"), strict=True).run)
    db.unlock("other", KEY)
    assert len(db.prune("other", 0)) == 1
    assert db.claim(new_row("other"), strict=True).strict_override_used is False
    # runs left: the unlock stays
    finish(db, db.claim(new_row(), rerun=True).run, end_time=300.0)
    db.unlock(CMD, KEY, reason="still wanted")
    assert len(db.clean(before=250.0).runs) == 1
    assert db.claim(new_row(), strict=True).run.reason == "still wanted"


# ------------------------------------------------------------------------------ rerun
def test_rerun_starts_a_new_run_even_for_a_strict_key(db: RunDB) -> None:
    """``rerun=True`` starts attempt + 1 whatever the strictness, with the caller's reason."""
    first = finish(db, db.claim(new_row(), strict=True).run, "failed")
    assert db.claim(new_row(), strict=True).existing is True
    source = db.source(command=CMD, run_key=KEY)
    assert source.run_id == first.run_id
    rerun = db.claim(new_row(reason="retry after disk error"), strict=True, rerun=True)
    assert (rerun.existing, rerun.strict_override_used) == (False, False)
    assert (rerun.run.attempt, rerun.run.rerun_of, rerun.run.reason) == (
        2, first.run_id, "retry after disk error")
    finish(db, rerun.run)
    third = db.claim(new_row(rerun_of=first.run_id), rerun=True).run  # a rerun of an id
    assert (third.attempt, third.rerun_of) == (3, first.run_id)
    assert db.count() == 3


def test_rerun_is_refused_while_the_key_is_active(db: RunDB) -> None:
    """A rerun of a key with an active run raises WrongState and records nothing."""
    run = db.claim(new_row()).run
    with pytest.raises(WrongState):
        db.claim(new_row(), rerun=True)
    with pytest.raises(WrongState):
        db.claim(new_row(), strict=True, rerun=True)
    assert db.count() == 1
    assert db.get(run.run_id).state == "pending"  # type: ignore[union-attr]


def test_source_by_id_and_by_key(db: RunDB) -> None:
    """``source``: the finished run of an id, or a key's latest; NotFound / WrongState."""
    with pytest.raises(NotFound):
        db.source("no-such-run")
    with pytest.raises(NotFound):
        db.source(command=CMD, run_key=KEY)
    first = db.claim(new_row()).run
    with pytest.raises(WrongState):
        db.source(first.run_id)
    with pytest.raises(WrongState):
        db.source(command=CMD, run_key=KEY)
    first = finish(db, first)
    second = finish(db, db.claim(new_row()).run, "failed")
    assert db.source(first.run_id).run_id == first.run_id
    assert db.source(command=CMD, run_key=KEY).run_id == second.run_id
    with pytest.raises(NotFound):
        db.source(command="other", run_key=KEY)


def test_source_of_a_run_whose_owner_is_gone_is_the_lost_run(db: RunDB) -> None:
    """An active run of a dead owner is marked lost on the way, so it can be rerun."""
    run = active_row(db, owner=exited_owner())
    source = db.source(command=CMD, run_key=KEY)
    assert (source.run_id, source.state) == (run.run_id, "lost")
    assert db.source(run.run_id).state == "lost"


# ------------------------------------------------------------------------------ processes
_CLAIMER = r"""
import importlib.util, json, sys

module, path, open_early, run_id = sys.argv[1:5]
spec = importlib.util.spec_from_file_location("run_db", module)
run_db = importlib.util.module_from_spec(spec)
sys.modules["run_db"] = run_db
spec.loader.exec_module(run_db)

def open_db():
    return run_db.RunDB(path, alive=lambda owner: True)

db = open_db() if open_early == "1" else None
print("ready", flush=True)
sys.stdin.readline()
db = db or open_db()
claim = db.claim(run_db.RunRow(run_id=run_id, command="deploy", run_key="2026-05-02"))
print(json.dumps({"run_id": claim.run.run_id, "existing": claim.existing,
                  "owner": claim.run.owner, "me": run_db.current_owner()}), flush=True)
"""


@pytest.mark.parametrize("created_first", [True, False], ids=["existing-db", "new-db"])
def test_concurrent_claims_in_processes_start_one_run(db_path: Path,
                                                      created_first: bool) -> None:
    """20 processes, each with its own RunDB on one file, claim one key at once (released
    together by a line on stdin): one starts the run, all 20 get its id. ``new-db``: they
    also create the database at once."""
    n = 20
    if created_first:
        RunDB(db_path).close()
    else:
        db_path.parent.mkdir(parents=True)
    candidates = [uuid.uuid4().hex for _ in range(n)]
    # The module alone (stdlib only), without the sidecar package: quick to start.
    argv = [sys.executable, "-I", "-S", "-c", _CLAIMER, run_db.__file__, str(db_path),
            "1" if created_first else "0"]
    procs: list[subprocess.Popen[str]] = []
    try:
        for run_id in candidates:
            procs.append(subprocess.Popen([*argv, run_id], stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                          text=True))
        for proc in procs:  # every one has started (and opened the database, if early)
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert line == "ready\n", proc.communicate(timeout=20)
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        outputs = [proc.communicate(timeout=25) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert [p.returncode for p in procs] == [0] * n, [err for _, err in outputs]
    results = [json.loads(out) for out, _ in outputs]
    winners = [r for r in results if not r["existing"]]
    assert len(winners) == 1, results
    winner = winners[0]
    assert winner["run_id"] in candidates
    assert winner["owner"] == winner["me"]
    assert {r["run_id"] for r in results} == {winner["run_id"]}
    assert {r["owner"] for r in results} == {winner["owner"]}
    check = RunDB(db_path, alive=lambda owner: True)
    try:
        assert check.count() == 1
        assert check.latest(CMD, KEY).run_id == winner["run_id"]  # type: ignore[union-attr]
    finally:
        check.close()


# ------------------------------------------------------------------------------ lost runs
def test_recover_marks_runs_of_dead_owners_lost(db: RunDB, tmp_path: Path) -> None:
    """``recover`` marks an active run of an exited owner lost: error text, end time, and its
    output (path kept, size measured) stays."""
    output = tmp_path / "out.log"
    output.write_bytes(b"x" * 1234)
    owner = exited_owner()
    run = active_row(db, owner=owner, output=output)
    mine = active_row(db, "other")  # owned by this process
    before = time.time()
    lost = db.recover()
    assert ids(lost) == [run.run_id]
    stored = db.get(run.run_id)
    assert stored is not None
    for row in (lost[0], stored):
        assert row.state == "lost"
        assert row.error is not None and "lost" in row.error
        assert str(run_db.owner_pid(owner)) in row.error
        assert row.end_time is not None and row.end_time >= before
        assert (row.output_path, row.output_size) == (str(output), 1234)
    assert output.read_bytes() == b"x" * 1234
    assert db.get(mine.run_id).state == "running"  # type: ignore[union-attr]
    assert db.recover() == []


def test_get_marks_a_run_of_a_dead_owner_lost(db: RunDB, db_path: Path) -> None:
    """``get`` of such a run marks it lost (for every reader), without ``recover``."""
    run = active_row(db, owner=exited_owner())
    got = db.get(run.run_id)
    assert got is not None and got.state == "lost" and got.end_time is not None
    other = RunDB(db_path, alive=lambda owner: True)  # would not mark it itself
    try:
        assert other.get(run.run_id).state == "lost"  # type: ignore[union-attr]
    finally:
        other.close()
    assert db.active() == []


def test_claim_after_a_lost_run_starts_the_next_attempt(db: RunDB) -> None:
    """A key whose active run has lost its owner starts a new run; the old one is lost."""
    run = active_row(db, owner=exited_owner())
    claim = db.claim(new_row(), strict=False)
    assert (claim.existing, claim.run.attempt, claim.run.rerun_of) == (False, 2, run.run_id)
    assert db.get(run.run_id).state == "lost"  # type: ignore[union-attr]


def test_runs_of_live_owners_are_not_marked(db: RunDB) -> None:
    """A run owned by another live process, or by this one, stays active."""
    with live_process() as proc:
        theirs = active_row(db, "a", owner=owner_of(proc.pid))
        mine = db.claim(new_row("b")).run
        assert db.recover() == []
        assert db.get(theirs.run_id).state == "running"  # type: ignore[union-attr]
        assert ids(db.active()) == [theirs.run_id, mine.run_id]
        assert db.claim(new_row("a")).run.run_id == theirs.run_id
        assert db.claim(new_row("b")).existing is True


def test_active_lists_live_runs_oldest_first(db: RunDB) -> None:
    """``active``: the live active runs, oldest first; dead owners' runs are marked lost."""
    one = db.claim(new_row("a")).run
    dead = active_row(db, "b", owner=exited_owner())
    finished(db, "c")
    two = db.claim(new_row("d")).run
    assert ids(db.active()) == [one.run_id, two.run_id]
    assert db.get(dead.run_id).state == "lost"  # type: ignore[union-attr]


def test_lost_error_tells_of_a_process_group_still_running(db: RunDB) -> None:
    """A lost run whose process group still runs says so (and leaves it alone)."""
    with live_process(new_session=True) as group:
        run = replace(new_row(), state="running", owner=exited_owner(), pid=group.pid)
        db.record(run)
        lost = db.recover()
        assert ids(lost) == [run.run_id]
        assert lost[0].error is not None and f"group {group.pid}" in lost[0].error
        assert group.poll() is None


def test_a_zombie_owner_counts_as_gone() -> None:
    """An owner that has exited but is not reaped yet is not alive."""
    proc = subprocess.Popen(["cat"], stdin=subprocess.PIPE)
    try:
        owner = owner_of(proc.pid)
        assert owner_alive(owner)
        assert proc.stdin is not None
        proc.stdin.close()
        os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)  # exited, still a zombie
        assert not owner_alive(owner)
    finally:
        proc.wait()


def test_owner_alive_checks_boot_pid_and_start_ticks() -> None:
    """An owner is alive only with this boot id, its pid and its start ticks."""
    me = current_owner()
    boot, pid, ticks = me.split(":")
    assert me == owner_of(os.getpid()) and int(pid) == os.getpid() and ticks.isdigit()
    assert owner_alive(me)
    assert not owner_alive(f"{boot}:{pid}:{int(ticks) + 1}")  # a reused pid
    assert not owner_alive(f"{uuid.uuid4()}:{pid}:{ticks}")  # another boot
    assert not owner_alive(None) and not owner_alive("") and not owner_alive("garbage")
    assert not owner_alive(f"{boot}:not-a-pid:{ticks}")
    assert not owner_alive(exited_owner())
    with live_process() as proc:  # a live pid, but not the process that started then
        other = owner_of(proc.pid)
        assert owner_alive(other) and other.split(":")[2] != ticks
        assert not owner_alive(f"{boot}:{proc.pid}:{ticks}")


# ------------------------------------------------------------------------------ history
def test_history_newest_first_with_limit_key_and_active(db: RunDB) -> None:
    """``history``: newest first, ``limit`` (<= 0: all), ``run_key``, ``active``; other
    commands' runs never."""
    k1a = finished(db, key="k1", end_time=1.0)
    k2a = finished(db, key="k2", end_time=2.0)
    finished(db, "other", key="k1", end_time=3.0)
    k1b = finished(db, key="k1", end_time=4.0, state="failed")
    running = active_row(db, key="k2")
    nokey = finished(db, key=None, end_time=5.0)
    assert ids(db.history(CMD)) == [nokey.run_id, k1b.run_id, k2a.run_id, k1a.run_id]
    assert ids(db.history(CMD, 2)) == [nokey.run_id, k1b.run_id]
    assert ids(db.history(CMD, 0)) == ids(db.history(CMD, -1)) == ids(db.history(CMD, 100))
    assert ids(db.history(CMD, run_key="k1")) == [k1b.run_id, k1a.run_id]
    assert ids(db.history(CMD, run_key="k2")) == [k2a.run_id]
    assert ids(db.history(CMD, run_key="k2", active=True)) == [running.run_id, k2a.run_id]
    assert ids(db.history(CMD, 2, active=True)) == [nokey.run_id, running.run_id]
    assert db.history("nothing") == []
    assert {r.command for r in db.history(CMD, 0, active=True)} == {CMD}


def test_history_marks_active_runs_of_dead_owners(db: RunDB) -> None:
    """With ``active``, a run whose owner is gone is listed as lost."""
    run = active_row(db, owner=exited_owner())
    (row,) = db.history(CMD, active=True)
    assert (row.run_id, row.state) == (run.run_id, "lost")


# ------------------------------------------------------------------------------ prune
def test_prune_deletes_the_oldest_finished_runs_and_their_output(db: RunDB,
                                                                 tmp_path: Path) -> None:
    """``prune(keep=2)``: the finished runs beyond the newest two go with their files;
    active runs and other commands stay."""
    outs = [tmp_path / f"run{i}.log" for i in range(5)]
    old_active = active_row(db, key="live", output=tmp_path / "live.log")
    (tmp_path / "live.log").write_text("still writing")
    runs = [finished(db, key=f"k{i}", end_time=float(i), output=outs[i]) for i in range(5)]
    other = finished(db, "other", output=tmp_path / "other.log")
    deleted = db.prune(CMD, 2)
    assert sorted(ids(deleted)) == sorted(ids(runs[:3]))
    assert [o.exists() for o in outs] == [False, False, False, True, True]
    assert (tmp_path / "live.log").exists() and (tmp_path / "other.log").exists()
    assert stored_ids(db) == {old_active.run_id, other.run_id, runs[3].run_id, runs[4].run_id}
    assert db.prune(CMD, 2) == []


def test_prune_keep_negative_or_large_deletes_nothing(db: RunDB, tmp_path: Path) -> None:
    """``keep`` < 0 keeps everything, as does a ``keep`` of at least the count; 0 keeps no
    finished run; a missing output file is no error."""
    runs = [finished(db, output=tmp_path / f"{i}.log") for i in range(3)]
    (tmp_path / "0.log").unlink()
    running = active_row(db, key="other")
    assert db.prune(CMD, -1) == []
    assert db.prune(CMD, 3) == [] and db.prune(CMD, 10) == []
    assert db.count() == 4
    assert sorted(ids(db.prune(CMD, 0))) == sorted(ids(runs))
    assert stored_ids(db) == {running.run_id}
    assert not any((tmp_path / f"{i}.log").exists() for i in range(3))


# ------------------------------------------------------------------------------ clean
def _four_runs(db: RunDB, tmp_path: Path) -> list[RunRow]:
    """Finished runs ending at 100, 200 (key k1) and 300, 400 (key k2), with output."""
    return [finished(db, key="k1" if t < 250 else "k2", end_time=t,
                     output=tmp_path / f"{int(t)}.log") for t in (100.0, 200.0, 300.0, 400.0)]


def test_clean_dry_run_lists_and_deletes_nothing(db: RunDB, tmp_path: Path) -> None:
    """``dry_run``: the runs that would go, nothing deleted (records or files)."""
    runs = _four_runs(db, tmp_path)
    cleaned = db.clean(all=True, dry_run=True)
    assert cleaned.dry_run is True and cleaned.errors == []
    assert ids(cleaned.runs) == ids(runs)
    assert db.count() == 4
    assert all(Path(r.output_path).exists() for r in runs)  # type: ignore[arg-type]


def test_clean_by_run_key_and_all(db: RunDB, tmp_path: Path) -> None:
    """``run_key`` with ``all``: that key's finished runs and files go, no others."""
    runs = _four_runs(db, tmp_path)
    running = active_row(db, key="k1")
    cleaned = db.clean(run_key="k1", all=True)
    assert (ids(cleaned.runs), cleaned.errors, cleaned.dry_run) == (
        ids(runs[:2]), [], False)
    assert stored_ids(db) == {runs[2].run_id, runs[3].run_id, running.run_id}
    assert [Path(r.output_path).exists() for r in runs] == [  # type: ignore[arg-type]
        False, False, True, True]


@pytest.mark.parametrize(("before", "after", "expected"), [
    (300.0, None, [100.0, 200.0]),  # ended before: strictly
    (None, 300.0, [300.0, 400.0]),  # ended at or after
    (400.0, 200.0, [200.0, 300.0]),  # a range
    (50.0, None, []),
])
def test_clean_by_end_time(db: RunDB, tmp_path: Path, before: float | None,
                           after: float | None, expected: list[float]) -> None:
    """``before``/``after`` select by end time (``before`` exclusive, ``after`` inclusive)."""
    runs = _four_runs(db, tmp_path)
    cleaned = db.clean(before=before, after=after)
    assert [r.end_time for r in cleaned.runs] == expected
    kept = {r.run_id for r in runs if r.end_time not in expected}
    assert stored_ids(db) == kept
    assert {Path(r.output_path).exists() for r in cleaned.runs} <= {False}  # type: ignore[arg-type]


def test_clean_one_run_id(db: RunDB, tmp_path: Path) -> None:
    """``run_id`` alone deletes that run only; an unknown id deletes nothing."""
    runs = _four_runs(db, tmp_path)
    cleaned = db.clean(run_id=runs[1].run_id)
    assert ids(cleaned.runs) == [runs[1].run_id]
    assert not Path(runs[1].output_path).exists()  # type: ignore[arg-type]
    assert db.get(runs[1].run_id) is None and db.count() == 3
    assert db.clean(run_id="no-such-run").runs == []


def test_clean_by_command(db: RunDB, tmp_path: Path) -> None:
    """``command`` restricts a selection to that command's runs."""
    mine = finished(db, CMD, "k")
    theirs = finished(db, "other", "k")
    assert ids(db.clean(all=True, command=CMD).runs) == [mine.run_id]
    assert stored_ids(db) == {theirs.run_id}


@pytest.mark.parametrize("selection", [
    {},
    {"run_key": KEY},
    {"dry_run": True},
    {"run_id": "x", "all": True},
    {"run_id": "x", "before": 1.0},
    {"run_id": "x", "after": 1.0},
    {"run_id": "x", "run_key": KEY},
])
def test_clean_refuses_a_missing_or_mixed_selection(db: RunDB, tmp_path: Path,
                                                    selection: dict[str, object]) -> None:
    """No selection, or ``run_id`` with another one: ValueError, nothing deleted."""
    _four_runs(db, tmp_path)
    with pytest.raises(ValueError):
        db.clean(**selection)  # type: ignore[arg-type]
    assert db.count() == 4


def test_clean_never_deletes_active_runs(db: RunDB, tmp_path: Path) -> None:
    """Active runs (and their files) survive ``all``, a time range and their own ``run_id``."""
    output = tmp_path / "live.log"
    running = active_row(db, output=output)
    output.write_text("still writing")
    assert db.clean(all=True).runs == []
    assert db.clean(after=0.0).runs == []
    assert db.clean(run_id=running.run_id).runs == []
    assert stored_ids(db) == {running.run_id} and output.exists()


def test_clean_reports_an_output_it_cannot_delete(db: RunDB, tmp_path: Path) -> None:
    """An output path that cannot be unlinked (a directory) is an error; the record goes."""
    blocker = tmp_path / "a-directory"
    blocker.mkdir()
    (blocker / "inside").write_text("x")
    bad = new_row(state="failed", end_time=1.0, output_path=str(blocker))
    db.record(bad)
    good = finished(db, key="other", output=tmp_path / "good.log")
    missing = finished(db, key="gone", output=tmp_path / "missing.log")
    Path(missing.output_path).unlink()  # type: ignore[arg-type]
    cleaned = db.clean(all=True)
    assert ids(cleaned.runs) == [bad.run_id, good.run_id, missing.run_id]
    assert len(cleaned.errors) == 1
    assert cleaned.errors[0].startswith(f"{blocker}: ")
    assert "directory" in cleaned.errors[0].lower()
    assert db.count() == 0
    assert blocker.is_dir() and not (tmp_path / "good.log").exists()


# ------------------------------------------------------------------------------ schema
def test_a_newer_schema_is_refused(db_path: Path) -> None:
    """A database of a newer schema raises RunDBError (and is left at its version)."""
    db_path.parent.mkdir(parents=True)
    with contextlib.closing(sqlite3.connect(db_path)) as raw:
        raw.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
        raw.commit()
    with pytest.raises(RunDBError, match="newer"):
        RunDB(db_path)
    with contextlib.closing(sqlite3.connect(db_path)) as raw:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1


def test_a_new_database_gets_the_schema(db_path: Path) -> None:
    """Opening creates the file (and its directory) at ``SCHEMA_VERSION`` in WAL mode."""
    RunDB(db_path).close()
    with contextlib.closing(sqlite3.connect(db_path)) as raw:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {r[0] for r in raw.execute("SELECT name FROM sqlite_master")}
    assert {"runs", "unlocks"} <= tables


def test_a_schema_1_database_gets_the_job_columns(db_path: Path) -> None:
    """A file written before jobs (schema 1) gets schema 2's columns; its runs stay, read with
    the new fields empty, and the new fields can be written."""
    v1 = run_db._SCHEMA
    for column in run_db._V2_COLUMNS:
        v1 = v1.replace(f",\n    {column}", "")
    assert "argv" not in v1
    db_path.parent.mkdir(parents=True)
    with contextlib.closing(sqlite3.connect(db_path)) as raw:
        raw.executescript(v1 + ";\nPRAGMA user_version=1;")
        raw.execute("INSERT INTO runs (run_id, command, state, created_at, output_path) "
                    "VALUES ('old', 'Lint', 'success', 1.0, '/x.log')")
        raw.commit()
    db = RunDB(db_path)
    try:
        old = db.get("old")
        assert old is not None
        assert (old.state, old.output_path, old.argv, old.stderr_path) == (
            "success", "/x.log", None, None)
        job = new_row(argv=["echo", "hi"], stderr_path="/e.log")
        db.claim(job)
        assert db.update_if(job.run_id, ("pending",), state="running", pid_start="42")
        stored = db.get(job.run_id)
        assert stored is not None
        assert (stored.argv, stored.stderr_path, stored.pid_start) == (
            ["echo", "hi"], "/e.log", "42")
    finally:
        db.close()
    with contextlib.closing(sqlite3.connect(db_path)) as raw:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2


def test_update_if_changes_a_run_only_in_the_given_states(db: RunDB) -> None:
    """A conditional update is refused once the run has moved on (a worker's end after an
    abort), and names only the columns that change."""
    run = db.claim(new_row()).run
    assert db.update_if(run.run_id, ("pending", "running"), state="cancelled",
                        abort_reason="stop", aborted_at=5.0)
    assert not db.update_if(run.run_id, ("pending", "running"), state="failed", exit_code=1)
    stored = db.get(run.run_id)
    assert stored is not None
    assert (stored.state, stored.exit_code, stored.abort_reason) == ("cancelled", None, "stop")
    with pytest.raises(ValueError, match="command"):
        db.update_if(run.run_id, ("cancelled",), command="other")


def test_a_reopened_database_keeps_runs_and_unlocks(db_path: Path) -> None:
    """Runs and unlocks outlive the RunDB that wrote them."""
    first = RunDB(db_path)
    done = finish(first, first.claim(new_row(vars={"v": "1"}), strict=True).run)
    first.unlock(CMD, KEY, reason="after reopen")
    first.close()
    second = RunDB(db_path)
    try:
        stored = second.get(done.run_id)
        assert stored is not None
        assert (stored.state, stored.vars, stored.strict) == ("success", {"v": "1"}, True)
        claim = second.claim(new_row(), strict=True)
        assert (claim.strict_override_used, claim.run.reason) == (True, "after reopen")
    finally:
        second.close()


def test_an_in_memory_database_works_alone() -> None:
    """``RunDB(None)``: the rules hold in memory; two such databases share nothing."""
    one, two = RunDB(None), RunDB(None)
    try:
        assert one.path is None
        run = one.claim(new_row()).run
        assert one.claim(new_row()).existing is True
        assert two.claim(new_row()).existing is False
        finish(one, run)
        assert one.claim(new_row(), strict=True).run.run_id == run.run_id
        assert ids(one.history(CMD)) == [run.run_id]
        assert (one.count(), two.count()) == (1, 1)
    finally:
        one.close()
        two.close()
