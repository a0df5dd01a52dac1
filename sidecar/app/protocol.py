"""Wire types of the sidecar protocol (see ``protocol.md`` at the top of the repository, which is
normative; this module mirrors it).

* Method and notification names (``M_*`` / ``N_*``), the run states and the error codes
  (``E_*``, JSON-RPC ``error.code``) are defined in :mod:`.methods` (standard library only,
  for thin clients) and re-exported here.
* Results and notifications are attrs classes; :data:`converter` unstructures them to JSON with
  camelCase keys (``run_id`` → ``runId``).
* Request params are validated by :func:`parse_params` against the attrs ``*Params`` classes: a
  wrong type, or a string with NUL or a lone surrogate (:func:`text_problem`), raises
  :class:`InvalidParams` whose message and ``data.field`` name the offending camelCase field
  (``vars.FOO``, ``timeoutMs``…). Unknown keys are ignored.
* :func:`wire_text` decodes output bytes for ``sidecar/readOutput`` within a JSON size bound.
"""

from __future__ import annotations

import codecs
import datetime as dt
import json
import math
import types
import typing
from typing import Any, Literal

import attrs
import cattrs
from cattrs.gen import make_dict_unstructure_fn, override

from sidecar.core.events import RunEvent, TriggerEvent
from sidecar.core.runs import RunSnapshot

from .methods import *  # noqa: F403  (every name of methods is part of this module)
from .methods import E_INVALID_PARAMS


class SidecarRpcError(Exception):
    """Raised by handlers; becomes a JSON-RPC error response ``{code, message, data}``."""

    def __init__(self, code: int, message: str, data: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data


class InvalidParams(SidecarRpcError):
    """``-32602``; ``data = {"field": "<camelCase path>"}``."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(E_INVALID_PARAMS, f"invalid params: {field}: {message}", {"field": field})
        self.field = field


# --------------------------------------------------------------------------- converter


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def _make_converter() -> cattrs.Converter:
    conv = cattrs.Converter()

    def factory(cls: type[Any]) -> Any:
        overrides = {a.name: override(rename=camel(a.name)) for a in attrs.fields(cls)}
        return make_dict_unstructure_fn(cls, conv, **overrides)  # type: ignore[arg-type]

    conv.register_unstructure_hook_factory(attrs.has, factory)
    return conv


converter = _make_converter()
"""Unstructures the attrs classes below to JSON-ready dicts with camelCase keys."""


def to_wire(obj: Any) -> Any:
    return converter.unstructure(obj)


# --------------------------------------------------------------------------- params


@attrs.define
class NoParams:
    """``sidecar/commands``, ``sidecar/triggerGraph``, ``sidecar/reload``: no params (null or {})."""


@attrs.define
class TriggerParams:
    event: str
    """The trigger name to fire (any string, e.g. ``changes_applied``)."""
    vars: dict[str, str] | None = None
    """Runtime variables for the runs this starts (never shell code; see protocol.md §4)."""


@attrs.define
class RunParams:
    command: str
    """Name of the command to start."""
    vars: dict[str, str] | None = None
    """Runtime variables (string → string)."""
    wait: bool = False
    """If true, answer with the final run (bounded by ``timeout_ms``)."""
    timeout_ms: int | None = None
    """With ``wait``: give up waiting after this many ms (the run keeps going)."""
    run_key: str | None = None
    """Idempotency key (per command): while a run with this key is active it is returned
    (``existing: true``) instead of a new one; after it ended a new run starts (attempt + 1),
    unless ``strict``."""
    strict: bool = False
    """With ``runKey``: return the key's finished run too, never a second run, until the key
    is unlocked (``sidecar/unlock``)."""


@attrs.define
class RerunParams:
    run_id: str | None = None
    """The finished run to start again."""
    command: str | None = None
    """With ``runKey``: the command whose key's latest run to start again."""
    run_key: str | None = None
    """With ``command``: start the key's latest run again."""
    reason: str | None = None
    """Why (recorded as the new run's ``reason``)."""
    wait: bool = False
    """As for ``sidecar/run``."""
    timeout_ms: int | None = None
    """As for ``sidecar/run``."""


@attrs.define
class UnlockParams:
    command: str
    """The command of the key."""
    run_key: str
    """The key whose next strict start may start a new run, once."""
    reason: str | None = None
    """Why (becomes the new run's ``reason``)."""
    ttl_secs: float | None = None
    """The unlock expires after this many seconds (never, if omitted)."""


@attrs.define
class CleanParams:
    before: str | None = None
    """Delete runs that ended before this ISO 8601 time (local time without an offset)."""
    after: str | None = None
    """Delete runs that ended at or after this time (with ``before``: a range)."""
    all: bool = False
    """Delete every finished run (of ``command``/``runKey``, if given)."""
    run_id: str | None = None
    """Delete this run only (not combined with the others)."""
    command: str | None = None
    """Only runs of this command."""
    run_key: str | None = None
    """Only runs with this key."""
    dry_run: bool = False
    """List what would be deleted; delete nothing."""


@attrs.define
class WaitParams:
    run_id: str
    """The run to wait for."""
    timeout_ms: int | None = None
    """Give up after this many ms; the result then has ``timedOut: true``."""
    chain: bool = False
    """Also wait for every run this run's events start, transitively; the result's ``runs``
    then lists them all."""


@attrs.define
class CancelParams:
    run_id: str | None = None
    """Cancel this run."""
    command: str | None = None
    """Cancel every active run of this command."""
    all: bool = False
    """Cancel every active run."""
    run_key: str | None = None
    """With ``command``: cancel the key's active run only."""
    reason: str | None = None
    """Why (the runs' ``comment``; default ``cancelled by client``)."""
    grace_secs: float | None = None
    """Seconds between SIGTERM and SIGKILL (default: the host's, 3)."""


@attrs.define
class StatusParams:
    command: str | None = None
    """One command, or every command when omitted."""


@attrs.define
class HistoryParams:
    command: str
    """Command whose finished runs to list, most recent first."""
    limit: int = 10
    """At most this many runs; 0 or negative = all kept."""
    run_key: str | None = None
    """Only the runs with this key (its attempts)."""


@attrs.define
class ReadOutputParams:
    run_id: str
    """The run whose output to read."""
    offset: int = 0
    """Byte offset to start at (>= 0)."""
    length: int | None = None
    """Bytes to read (>= 0); default and maximum :data:`READ_OUTPUT_MAX`."""


@attrs.define
class PreviewParams:
    command: str
    """Command to resolve."""
    vars: dict[str, str] | None = None
    """Runtime variables to resolve it with."""


@attrs.define
class SaveParams:
    paths: list[str]
    """Files that were saved (absolute, or relative to the workspace root)."""


@attrs.define
class SetOutputFilterParams:
    enabled: bool
    """Send (true) or stop sending (false) ``sidecar/outputChunk`` for the selection."""
    commands: list[str] | None = None
    """Select runs of these commands (current and future)."""
    run_ids: list[str] | None = None
    """Select these runs."""


READ_OUTPUT_MAX = 4 << 20
"""Default and maximum ``length`` of ``sidecar/readOutput``."""

_DECODE_BLOCK = 1 << 16


def json_size(text: str) -> int:
    """Bytes of ``text`` as a JSON string the way responses are written (ASCII JSON: non-ASCII
    characters and control characters as ``\\uXXXX``), without the quotes."""
    return len(json.encoder.encode_basestring_ascii(text)) - 2


def _decode_prefix(state: tuple[bytes, int], data: bytes) -> tuple[str, int]:
    """Decode ``data`` after a decoder state; the text and the bytes left undecoded."""
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    decoder.setstate(state)
    text = decoder.decode(data)
    return text, len(decoder.getstate()[0])


def wire_text(data: bytes, budget: int, *, end: bool) -> tuple[str, int]:
    """Decode output bytes as UTF-8 (invalid sequences as U+FFFD) for a response whose size
    is bounded whatever the bytes are (readOutput; protocol.md §4).

    Returns ``(text, consumed)``: ``text`` decodes ``data[:consumed]`` and its JSON string
    (:func:`json_size`) takes at most ``budget`` bytes. The cut never splits a character: a
    character cut by the end of ``data`` is left for the next read, unless ``end`` says that
    ``data`` ends the output for good (its bytes then read as U+FFFD). When ``data`` is not
    empty at least one character is returned, over the budget if need be (a character takes
    at most 12 bytes), so a reader always gets on.
    """
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    parts: list[str] = []
    used = fed = 0
    while fed < len(data):
        block = data[fed:fed + _DECODE_BLOCK]
        state = decoder.getstate()
        text = decoder.decode(block, final=end and fed + len(block) >= len(data))
        cost = json_size(text)
        if used + cost <= budget:
            parts.append(text)
            used += cost
            fed += len(block)
            continue
        # The budget ends in this block: keep its longest prefix that fits.
        lo, hi = 0, len(block)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if used + json_size(_decode_prefix(state, block[:mid])[0]) <= budget:
                lo = mid
            else:
                hi = mid
        text, pending = _decode_prefix(state, block[:lo])
        parts.append(text)
        fed += lo
        break
    else:
        pending = len(decoder.getstate()[0])
    out = "".join(parts)
    if out or not data:
        return out, fed - pending
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    for i in range(len(data)):
        text = decoder.decode(data[i:i + 1])
        if text:
            return text, i + 1 - len(decoder.getstate()[0])
    return decoder.decode(b"", final=True), len(data)


def _type_name(tp: Any) -> str:
    if tp is str:
        return "a string"
    if tp is bool:
        return "a boolean"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    origin = typing.get_origin(tp)
    if origin is list:
        return "an array of strings"
    if origin is dict:
        return "an object of strings"
    return str(tp)


def text_problem(value: str) -> str | None:
    """Why ``value`` cannot be used as a name, an argument or an environment value: it
    contains NUL (no process argument or environment can) or a lone surrogate (not Unicode:
    it cannot be encoded as UTF-8). None when it is fine."""
    if "\x00" in value:
        return "must not contain NUL characters"
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "must be valid Unicode (it contains a lone surrogate)"
    return None


def _check_text(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise InvalidParams(field, "must be a string")
    problem = text_problem(value)
    if problem is not None:
        raise InvalidParams(field, problem)
    return value


def _check(value: Any, tp: Any, field: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _check(value, args[0], field)
    if tp is str:
        return _check_text(value, field)
    if tp is bool:
        if not isinstance(value, bool):
            raise InvalidParams(field, "must be a boolean")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise InvalidParams(field, "must be an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value):
            raise InvalidParams(field, "must be a number")
        return float(value)
    if origin is list:
        if not isinstance(value, list):
            raise InvalidParams(field, "must be an array of strings")
        for i, item in enumerate(value):
            _check_text(item, f"{field}[{i}]")
        return list(value)
    if origin is dict:
        if not isinstance(value, dict):
            raise InvalidParams(field, "must be an object mapping strings to strings")
        for k, v in value.items():
            problem = text_problem(k)
            if problem is not None:
                raise InvalidParams(field, f"names {problem}")
            _check_text(v, f"{field}.{k}")
        return dict(value)
    raise AssertionError(tp)  # pragma: no cover


_HINTS: dict[type[Any], dict[str, Any]] = {}


def _hints(cls: type[Any]) -> dict[str, Any]:
    hints = _HINTS.get(cls)
    if hints is None:
        hints = _HINTS[cls] = typing.get_type_hints(cls)
    return hints


def parse_params(cls: type[Any], raw: Any) -> Any:
    """Validate ``raw`` (a JSON object, or null) into ``cls``; raise :class:`InvalidParams`."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise InvalidParams("params", "must be an object")
    hints = _hints(cls)
    kwargs: dict[str, Any] = {}
    for a in attrs.fields(cls):
        key = camel(a.name)
        tp = hints[a.name]
        if key not in raw or (raw[key] is None and a.default is not attrs.NOTHING):
            if a.default is attrs.NOTHING:
                raise InvalidParams(key, "is required")
            continue
        kwargs[a.name] = _check(raw[key], tp, key)
    return cls(**kwargs)


# --------------------------------------------------------------------------- results


@attrs.define
class RunInfo:
    """One run, as in results and ``sidecar/runUpdate``."""

    run_id: str
    """Unique id (UUID string)."""
    command: str
    """Command name."""
    state: str
    """``pending`` | ``running`` | ``success`` | ``failed`` | ``cancelled`` | ``lost``."""
    trigger_chain: list[str]
    """Events that led to this run, oldest first (empty for a manual ``sidecar/run``)."""
    started_by: str
    """Who caused the run: the client's ``clientInfo.name`` for its requests and saves (e.g.
    ``Visual Studio Code``, ``Neovim``; ``lsp`` when it sends none), ``cli`` for the command
    line, ``hook`` for ``sidecar save``, ``mcp`` for agents, ``watch`` for the file watcher,
    ``host`` for lifecycle events; runs started by events inherit it from the run or request
    that began the chain."""
    upstream_run_ids: list[str]
    """Runs whose auto-events led to this one, oldest first (parallel to the last entries of
    ``triggerChain``); empty for a run started by a request, a save or a lifecycle event. A
    client follows a chain with it."""
    trigger_event: str | None = None
    """The event that started it (last of the chain), null for a manual run."""
    exit_code: int | None = None
    """Exit status once known (negative: killed by that signal)."""
    start_time: str | None = None
    """ISO 8601 local time the run started running."""
    end_time: str | None = None
    """ISO 8601 local time the run finished."""
    duration_secs: float | None = None
    """Seconds from start to end (final runs only)."""
    comment: str = ""
    """Why it was cancelled etc. (e.g. ``cancel_on_trigger:stop``)."""
    error: str | None = None
    """Why it failed (``Command exited with code 1``, timeout, spawn error)."""
    resolved_command: str | None = None
    """The command line after variable substitution."""
    output_size: int = 0
    """Bytes of output so far (total when final)."""
    output_file: str | None = None
    """Path of the run's output file (the run records', or ``[output_storage]``'s)."""
    run_key: str | None = None
    """The idempotency key it was started with."""
    attempt: int = 1
    """Its number among the runs of its key (1 without a key, unless a rerun)."""
    rerun_of: str | None = None
    """The run it starts again (a rerun, or a new attempt of a finished key)."""
    reason: str | None = None
    """Why it was started again (a rerun's or an unlock's reason)."""

    @classmethod
    def of(cls, run: RunSnapshot) -> RunInfo:
        """The wire form of a run: the one mapping from the core's run to the protocol's."""
        return cls(**_run_fields(run))


def _iso(t: dt.datetime | None) -> str | None:
    return t.isoformat() if t is not None else None


def _run_fields(run: RunSnapshot) -> dict[str, Any]:
    return {
        "run_id": run.run_id, "command": run.command, "state": run.state,
        "trigger_chain": list(run.trigger_chain),
        "started_by": run.started_by if run.started_by is not None else "host",
        "upstream_run_ids": list(run.upstream_run_ids), "trigger_event": run.trigger_event,
        "exit_code": run.exit_code, "start_time": _iso(run.start_time),
        "end_time": _iso(run.end_time), "duration_secs": run.duration_secs,
        "comment": run.comment, "error": run.error, "resolved_command": run.resolved_command,
        "output_size": run.output_size, "output_file": run.output_file,
        "run_key": run.run_key, "attempt": run.attempt, "rerun_of": run.rerun_of,
        "reason": run.reason,
    }


@attrs.define
class RunUpdate(RunInfo):
    """``sidecar/runUpdate``: a :class:`RunInfo` plus the state it left."""

    previous: str | None = None
    """State before this change; null for a new run (state ``pending``)."""

    @classmethod
    def of(cls, run: RunSnapshot) -> RunUpdate:
        assert isinstance(run, RunEvent)
        return cls(**_run_fields(run), previous=run.previous)


@attrs.define
class VariableInfo:
    name: str
    """Variable name (``{{ name }}``)."""
    default: str | None
    """Its value when none is given at run time (resolved); null: a run must receive it."""


@attrs.define
class CommandInfo:
    name: str
    """Command name."""
    command: str
    """Command template as configured."""
    triggers: list[str]
    """Trigger patterns that start it."""
    cancel_on_triggers: list[str]
    """Trigger patterns that cancel it."""
    max_concurrent: int
    """0 = unlimited."""
    on_retrigger: str
    """``cancel_and_restart`` | ``ignore``."""
    debounce_in_ms: int
    """Debounce window."""
    timeout_secs: int | None
    """Run timeout."""
    state: str
    """``never_run`` | ``running`` | the last run's state."""
    active_run_ids: list[str]
    """Runs in progress."""
    source: str | None = None
    """Config file it came from."""
    description: str = ""
    """The command's ``description``: a sentence for people and models."""
    agent: bool = True
    """The command's ``agent`` key: false hides it from agent sessions."""
    variables: list[VariableInfo] = attrs.field(factory=list)
    """The runtime variables it accepts: those its templates use, in order of use."""


@attrs.define
class CommandsResult:
    commands: list[CommandInfo]
    """Every configured command, in config order."""
    config_files: list[str]
    """Config files loaded."""
    on_save: dict[str, list[str]]
    """The ``[on_save]`` table: glob → triggers."""


@attrs.define
class SkippedInfo:
    command: str
    """Command that did not start."""
    reason: str
    """``debounce`` | ``concurrency_limit`` | ``variable_error`` | ``shutting_down`` |
    ``agent_hidden`` (an agent session's trigger never starts an ``agent = false``
    command)."""
    message: str
    """Human-readable detail."""


@attrs.define
class TriggerResultWire:
    event: str
    """The event fired."""
    started: list[RunInfo]
    """Runs it started directly (chained runs are announced by notifications)."""
    skipped: list[SkippedInfo]
    """Commands it would have started but did not, with why."""
    cancelled: list[str]
    """Commands whose runs it cancelled (``cancel_on_triggers``)."""


@attrs.define
class WaitedRun:
    run: RunInfo
    """The run (final when waited for and not timed out)."""
    timed_out: bool = False
    """True when ``wait`` gave up after ``timeoutMs`` (the run goes on)."""


@attrs.define
class RunResultWire(WaitedRun):
    """``sidecar/run``, ``sidecar/rerun``: the run started (or found, by its key)."""

    existing: bool = False
    """The run key's rules returned a run already there: nothing was started."""
    strict_override_used: bool = False
    """A strict start consumed the key's unlock."""


@attrs.define
class UnlockResult:
    command: str
    run_key: str
    reason: str | None
    allowed_at: str
    """ISO 8601 time of the unlock."""
    expires_at: str | None
    """ISO 8601 time it expires (null: never)."""


@attrs.define
class CleanedRun:
    run_id: str
    command: str
    run_key: str | None
    state: str
    end_time: str | None
    """ISO 8601 time it ended."""


@attrs.define
class CleanResult:
    deleted: int
    """Records deleted (0 with ``dryRun``)."""
    dry_run: bool
    runs: list[CleanedRun]
    """The runs deleted (or that would be)."""
    errors: list[str]
    """Output files that could not be deleted (their records are gone)."""


@attrs.define
class WaitResult(WaitedRun):
    """``sidecar/wait``: the run plus, with ``chain``, the chain's runs."""

    runs: list[RunInfo] = attrs.field(factory=list)
    """With ``chain``: the run and every run its events started, transitively (the run first,
    then the others in the order they started); empty otherwise. On ``timedOut`` (some of
    them not final yet), the runs known by then."""


@attrs.define
class CancelResult:
    cancelled: int
    """Number of runs that were active and are now cancelled."""


@attrs.define
class CommandStatusInfo:
    name: str
    state: str
    """``never_run`` | ``running`` | last run's state."""
    active_count: int
    """Runs in progress."""
    active_runs: list[RunInfo]
    """The runs in progress."""
    last_run: RunInfo | None = None
    """The latest run (active or finished)."""


@attrs.define
class StatusResult:
    commands: list[CommandStatusInfo]


@attrs.define
class HistoryResult:
    runs: list[RunInfo]
    """Finished runs, most recent first (from the run records)."""


@attrs.define
class ReadOutputResult:
    run_id: str
    text: str
    """Bytes ``[offset, offset+size)`` decoded as UTF-8 (invalid sequences replaced); as JSON
    at most twice the ``length`` asked for (see :func:`wire_text`)."""
    offset: int
    """Byte offset of ``text`` (as requested)."""
    size: int
    """Number of bytes ``text`` covers: less than asked at the end of the output, at the
    4 MiB cap, when the JSON size bound is reached or before a character cut by the end of
    the slice. Continue at ``offset + size``."""
    total_size: int
    """Bytes of output so far."""
    final: bool
    """True once the run is final: ``totalSize`` will not grow any more."""


@attrs.define
class PreviewResult:
    command: str
    """Command name."""
    resolved: str
    """The command line after variable substitution."""
    cwd: str | None
    """Working directory."""
    vars: dict[str, str]
    """Variables used and their values."""
    argv: list[str] | None = None
    """Argument vector when exec'd directly; null when run through ``/bin/sh -c``."""
    timeout_secs: int | None = None
    env: dict[str, str] = attrs.field(factory=dict)
    """The command's own ``env`` table, resolved (the rest of the environment is the
    server's)."""


@attrs.define
class TriggerGraphResult:
    triggers: dict[str, list[str]]
    """Trigger pattern → commands it starts."""
    cancels: dict[str, list[str]]
    """Trigger pattern → commands it cancels."""
    on_save: dict[str, list[str]]
    """Glob → triggers a save fires."""
    commands: list[str] = attrs.field(factory=list)
    """Every command, in config order."""
    edges: list[GraphEdge] = attrs.field(factory=list)
    """Command → command: a run's auto-event that starts another command."""
    external: list[str] = attrs.field(factory=list)
    """Triggers no command emits (fired by clients, saves, hooks), sorted."""


@attrs.define
class GraphEdge:
    source: str
    """The command whose run emits ``event``."""
    target: str
    """The command that ``event`` starts."""
    event: str
    """The trigger pattern of ``target`` it matches (``command_success:Lint``…)."""


@attrs.define
class SaveResult:
    triggered: list[TriggerResultWire]
    """One entry per trigger a saved file fired through ``[on_save]``."""
    reloaded: ReloadResult | None = None
    """Set when a config file was among the saved files: the config was reloaded."""
    ignored: list[IgnoredSave] = attrs.field(factory=list)
    """Saved files (or triggers of them) that started nothing, with why."""


@attrs.define
class SessionInfo:
    """One client attached to the host."""

    client_name: str | None
    """The client's ``clientInfo.name`` (``Visual Studio Code``, ``Neovim``, ``cli``,
    ``hook`` …); null if it sent none."""
    current: bool = False
    """True for the session that asked."""


@attrs.define
class HostInfoResult:
    """``sidecar/hostInfo``: the process serving this session, for health checks."""

    version: str
    """The cmdsidecar version of the host."""
    protocol_version: int
    """The protocol.md version it speaks (also in ``initialize``'s result)."""
    pid: int
    """The host's process id."""
    socket: str | None
    """The host's Unix socket; null for a standalone server (``sidecar serve --standalone``)."""
    root: str
    """The workspace root."""
    config_files: list[str]
    """The config files, in config order."""
    started_at: str
    """ISO 8601 time the host started."""
    sessions: list[SessionInfo]
    """Every client attached now, this one included."""
    active_runs: list[RunInfo]
    """Every run not final yet, whoever started it."""
    records: str | None = None
    """The run records' database (null: in memory)."""
    records_problem: str | None = None
    """Why runs are not being recorded there (read-only directory, full disk), if they are
    not."""


@attrs.define
class IgnoredSave:
    path: str
    """The path as given."""
    reason: str
    """``bad-path`` (NUL or a lone surrogate in it), ``no-config``, ``duplicate`` (this save,
    same mtime, was already handled), ``no-match`` (no ``[on_save]`` glob), ``error`` (a
    trigger failed), ``shutting-down``."""
    message: str
    """Human-readable detail."""


@attrs.define
class ReloadResult:
    ok: bool
    """False when the config is broken: the previous good one stays in use."""
    commands: list[str]
    """Commands now configured."""
    config_files: list[str]
    """Config files in use."""
    message: str = ""
    """What went wrong (when ``ok`` is false)."""


@attrs.define
class OutputFilterResult:
    enabled_default: bool
    """Whether runs not named in any filter get chunks."""


# --------------------------------------------------------------------------- notifications


@attrs.define
class EventNotification:
    """``sidecar/event``: a trigger fired."""

    name: str
    """The event name (``changes_applied``, ``command_success:Lint``…)."""
    kind: str
    """``trigger`` (from a client or a save), ``auto`` (``command_*:X``) or ``lifecycle``."""
    chain: list[str]
    """Trigger chain leading here, ending with ``name``."""
    time: str
    """ISO 8601 local time."""
    run_id: str | None = None
    """For auto events: the run that emitted it."""
    command: str | None = None
    """For auto events: that run's command."""

    @classmethod
    def of(cls, ev: TriggerEvent) -> EventNotification:
        return cls(name=ev.name, kind=ev.kind, chain=list(ev.chain), time=ev.time.isoformat(),
                   run_id=ev.run_id, command=ev.command)


@attrs.define
class OutputChunk:
    """``sidecar/outputChunk``: output bytes ``[offset, offset+size)`` of one run."""

    run_id: str
    command: str
    seq: int
    """Per run, from 0, +1 for each chunk sent (no gaps in seq)."""
    offset: int
    """Byte offset of the first byte in the run's output."""
    size: int
    """Number of output bytes this chunk covers."""
    text: str
    """Those bytes decoded as UTF-8 (empty when ``dropped``)."""
    dropped: bool = False
    """True: the bytes were not sent (backpressure); fetch with ``sidecar/readOutput``."""


# --------------------------------------------------------------------------- initializationOptions


OutputChunksMode = Literal["all", "none"]


@attrs.define
class InitializationOptions:
    """``initialize.params.initializationOptions`` (all optional)."""

    config_files: list[str] = attrs.field(factory=list)
    """Config files to load (relative to the workspace root); several merge. Default: find
    ``sidecar.toml`` or ``cmdorc.toml`` in the root."""
    output_chunks: str = "all"
    """``all``: send ``sidecar/outputChunk``; ``none``: never (use ``sidecar/readOutput``)."""
    progress: bool = True
    """Create a ``$/progress`` token per run when the client supports workDoneProgress."""
    chunk_interval_ms: int = 30
    """Flush interval of coalesced output (1..1000)."""
    chunk_max_bytes: int = 32768
    """Flush a run's buffer once it holds this many bytes (1024..1048576)."""
    max_pending_bytes: int = 4 << 20
    """Backpressure cap: bytes queued for the client above which chunk text is dropped
    (65536..268435456)."""
    agent: bool = False
    """An agent session (``sidecar mcp``): requests obey the agent rules of
    :mod:`sidecar.app.agents` (protocol.md §2.1)."""


OPTION_RANGES: dict[str, tuple[int, int]] = {
    "chunk_interval_ms": (1, 1000),
    "chunk_max_bytes": (1024, 1 << 20),
    "max_pending_bytes": (1 << 16, 1 << 28),
}


def parse_initialization_options(raw: Any) -> tuple[InitializationOptions, list[str]]:
    """Options plus a list of problems (each: an option that fell back to its default)."""
    opts = InitializationOptions()
    problems: list[str] = []
    if raw is None:
        return opts, problems
    if not isinstance(raw, dict):
        return opts, ["initializationOptions must be an object"]
    hints = typing.get_type_hints(InitializationOptions)
    for a in attrs.fields(InitializationOptions):
        key = camel(a.name)
        if key not in raw or raw[key] is None:
            continue
        try:
            value = _check(raw[key], hints[a.name], key)
        except InvalidParams as exc:
            problems.append(f"{exc.field}: {str(exc).split(': ', 2)[-1]}; using the default")
            continue
        if a.name == "output_chunks" and value not in ("all", "none"):
            problems.append(f"{key}: must be \"all\" or \"none\"; using the default")
            continue
        if a.name in OPTION_RANGES:
            lo, hi = OPTION_RANGES[a.name]
            if not lo <= value <= hi:
                problems.append(f"{key}: must be between {lo} and {hi}; using the default")
                continue
        setattr(opts, a.name, value)
    return opts, problems
