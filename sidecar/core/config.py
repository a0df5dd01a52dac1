"""Configuration: the dataclasses of ``cmdorc.toml``, reading and validating one TOML file.

A plain ``cmdorc.toml`` loads unchanged. Validation reports every problem it finds with the
*key path* of the offending key or value (``("command", 2, "max_concurrent")``); the caller
turns paths into file positions with :mod:`sidecar.core.tomlspans`. Checking a whole
configuration (several files merged) is :mod:`sidecar.core.checks`; :mod:`sidecar.core.loading`
(``load_config``/``load_configs``) sits above both. This module imports neither.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

from .errors import ConfigValidationError
from .problems import WHOLE_FIRST_LINE, KeyPath, Problem, Severity, did_you_mean

COMMAND_KEYS: dict[str, str] = {
    "name": "string",
    "command": "string",
    "triggers": "list of strings",
    "cancel_on_triggers": "list of strings",
    "max_concurrent": "integer",
    "timeout_secs": "integer",
    "on_retrigger": "string",
    "keep_in_memory": "integer",
    "vars": "table of strings",
    "cwd": "string",
    "env": "table of strings",
    "debounce_in_ms": "integer",
    "debounce_mode": "string",
    "loop_detection": "boolean",
    "keep_history": "integer",
    "output_extension": "string",
    "keep_runs": "integer",
    "description": "string",
    "agent": "boolean",
}
OUTPUT_STORAGE_KEYS: dict[str, str] = {
    "directory": "string",
    "keep_history": "integer",
    "output_extension": "string",
}
HOST_KEYS: dict[str, str] = {
    "idle_timeout_secs": "number",
}
HISTORY_KEYS: dict[str, str] = {
    "keep_runs": "integer",
    "store": "string",
}
HISTORY_STORES = ("sqlite", "memory")
#: The keys of each settings table, by table name.
SETTINGS_TABLES: dict[str, dict[str, str]] = {
    "output_storage": OUTPUT_STORAGE_KEYS, "host": HOST_KEYS, "history": HISTORY_KEYS}
TOP_LEVEL_KEYS: dict[str, str] = {
    "variables": "table of strings",
    "command": "array of tables",
    "output_storage": "table",
    "on_save": "table",
    "host": "table",
    "history": "table",
}
ON_RETRIGGER = ("cancel_and_restart", "ignore")
DEBOUNCE_MODES = ("start", "completion")


# --------------------------------------------------------------------------------------------
# Value rules, written once: the dataclasses raise on the first rule broken, validate_data
# reports every broken rule at its value's key path
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rule:
    """A range or enum rule on one key's value. ``ok`` sees a value of the right type (or None
    for an optional dataclass field left unset)."""

    key: str
    ok: Callable[[Any], bool]
    message: str


def _not_blank(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _optional(ok: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda value: value is None or ok(value)


def _extension_ok(value: str) -> bool:
    return value.startswith(".") and "/" not in value and "\\" not in value


_KEEP_HISTORY = Rule("keep_history", _optional(lambda v: v >= -1),
                     "keep_history must be -1 (unlimited), 0 (off) or a positive count")
_KEEP_RUNS = Rule("keep_runs", _optional(lambda v: v == -1 or v > 0),
                  "keep_runs must be -1 (unlimited) or a positive count")
_OUTPUT_EXTENSION = Rule("output_extension", _optional(_extension_ok),
                         "output_extension must start with '.' and contain no path separator")

#: The rules of ``[output_storage]`` / :class:`OutputStorageConfig`, in checking order.
OUTPUT_STORAGE_RULES: tuple[Rule, ...] = (_KEEP_HISTORY, _OUTPUT_EXTENSION)
#: The rules of ``[host]`` / :class:`HostConfig`.
HOST_RULES: tuple[Rule, ...] = (
    Rule("idle_timeout_secs", _optional(lambda v: v > 0), "idle_timeout_secs must be positive"),
)
#: The rules of ``[history]`` / :class:`HistoryConfig`.
HISTORY_RULES: tuple[Rule, ...] = (
    _KEEP_RUNS,
    Rule("store", lambda v: v in HISTORY_STORES, "store must be 'sqlite' or 'memory'"),
)
#: The rules of ``[[command]]`` / :class:`CommandConfig`, in checking order.
COMMAND_RULES: tuple[Rule, ...] = (
    Rule("name", _not_blank, "Command name cannot be empty"),
    Rule("command", _not_blank, "Command string cannot be empty"),
    Rule("max_concurrent", lambda v: v >= 0,
         "max_concurrent cannot be negative (0 means unlimited)"),
    Rule("timeout_secs", _optional(lambda v: v > 0), "timeout_secs must be positive"),
    Rule("on_retrigger", lambda v: v in ON_RETRIGGER,
         "on_retrigger must be 'cancel_and_restart' or 'ignore'"),
    Rule("debounce_mode", lambda v: v in DEBOUNCE_MODES,
         "debounce_mode must be 'start' or 'completion'"),
    Rule("debounce_in_ms", lambda v: v >= 0, "debounce_in_ms cannot be negative"),
    Rule("keep_in_memory", lambda v: v >= -1, "keep_in_memory must be -1 (unlimited) or >= 0"),
    _KEEP_HISTORY,
    _OUTPUT_EXTENSION,
    _KEEP_RUNS,
)


def violated_rules(values: Mapping[str, Any], rules: Iterable[Rule]) -> list[Rule]:
    """The rules ``values`` break, in rule order (a key absent from ``values`` is skipped)."""
    return [rule for rule in rules if rule.key in values and not rule.ok(values[rule.key])]


def _enforce(obj: object, rules: tuple[Rule, ...]) -> None:
    """Raise :class:`ConfigValidationError` for the first rule a dataclass instance breaks."""
    broken = violated_rules({rule.key: getattr(obj, rule.key) for rule in rules}, rules)
    if broken:
        raise ConfigValidationError(broken[0].message)


@dataclass
class OutputStorageConfig:
    """``[output_storage]``: where run outputs and metadata are written and how many are kept."""

    directory: str = ".cmdorc/outputs"
    keep_history: int = 0
    output_extension: str = ".txt"

    def __post_init__(self) -> None:
        _enforce(self, OUTPUT_STORAGE_RULES)

    @property
    def is_enabled(self) -> bool:
        return self.keep_history != 0


@dataclass
class CommandConfig:
    """One ``[[command]]``. Field names and defaults follow cmdorc."""

    name: str
    command: str
    triggers: list[str] = field(default_factory=list)
    cancel_on_triggers: list[str] = field(default_factory=list)
    max_concurrent: int = 1
    timeout_secs: int | None = None
    on_retrigger: Literal["cancel_and_restart", "ignore"] = "cancel_and_restart"
    keep_in_memory: int = 3
    vars: dict[str, str] = field(default_factory=dict)
    cwd: str | Path | None = None
    env: dict[str, str] = field(default_factory=dict)
    debounce_in_ms: int = 0
    debounce_mode: Literal["start", "completion"] = "start"
    loop_detection: bool = True
    keep_history: int | None = None
    output_extension: str | None = None
    keep_runs: int | None = None
    description: str = ""
    """A sentence for people and models (shown by the editors and ``list_commands``)."""
    agent: bool = True
    """False hides the command from agents (MCP sessions) entirely."""

    def __post_init__(self) -> None:
        _enforce(self, COMMAND_RULES)


@dataclass
class HostConfig:
    """``[host]``: the workspace's shared host (``sidecar serve``, the CLI and agents attach
    to it)."""

    idle_timeout_secs: float | None = None
    """Seconds the host lives on with no client attached and no run active (None: the
    default, 60; ``SIDECAR_HOST_IDLE_TIMEOUT`` and ``sidecar host start --idle-timeout``
    win over it)."""

    def __post_init__(self) -> None:
        _enforce(self, HOST_RULES)


@dataclass
class HistoryConfig:
    """``[history]``: the run records (every run, its state and output)."""

    keep_runs: int = 1000
    """Finished runs kept per command, with their output (-1: all); a command's own
    ``keep_runs`` wins."""
    store: str = "sqlite"
    """``sqlite``: in ``<workspace>/.sidecar/runs.db``, shared by every process of the
    workspace and kept across restarts; ``memory``: this process's only. Read when the
    host starts."""

    def __post_init__(self) -> None:
        _enforce(self, HISTORY_RULES)

    def keep(self, cmd: CommandConfig) -> int:
        return cmd.keep_runs if cmd.keep_runs is not None else self.keep_runs


@dataclass
class RunnerConfig:
    """Everything an orchestrator needs: commands, global variables, output storage.

    ``on_save`` maps file globs (relative to ``base_dir``) to the triggers a save fires;
    ``base_dir`` is the directory of the first config file (the default ``cwd`` of commands).
    ``sources`` remembers which file each command came from.
    """

    commands: list[CommandConfig]
    vars: dict[str, str] = field(default_factory=dict)
    output_storage: OutputStorageConfig = field(default_factory=OutputStorageConfig)
    on_save: dict[str, list[str]] = field(default_factory=dict)
    base_dir: Path | None = None
    host: HostConfig = field(default_factory=HostConfig)
    sources: dict[str, str] = field(default_factory=dict)
    history: HistoryConfig = field(default_factory=HistoryConfig)


# --------------------------------------------------------------------------------------------
# Validation of parsed TOML data, collecting problems with key paths
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PathProblem:
    """A problem located by key path; ``part`` is ``"key"`` or ``"value"``."""

    path: KeyPath
    part: Literal["key", "value"]
    severity: Severity
    code: str
    message: str


@dataclass
class ParsedFile:
    """One config file after validation: what it declares, and its problems."""

    name: str
    variables: dict[str, str]
    commands: list[CommandConfig]
    command_indexes: list[int]  # index in the file's [[command]] array of each command
    output_storage: dict[str, Any]
    on_save: dict[str, list[str]]
    problems: list[PathProblem]
    host: dict[str, Any] = field(default_factory=dict)
    history: dict[str, Any] = field(default_factory=dict)


def _type_ok(value: Any, kind: str) -> bool:
    if kind == "string":
        return isinstance(value, str)
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "list of strings":
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    if kind == "table of strings":
        return isinstance(value, dict) and all(isinstance(v, str) for v in value.values())
    if kind == "table":
        return isinstance(value, dict)
    if kind == "array of tables":
        return isinstance(value, list) and all(isinstance(v, dict) for v in value)
    raise AssertionError(kind)


def _wrong_type(path: KeyPath, kind: str, value: Any) -> PathProblem:
    return PathProblem(
        path, "value", Severity.ERROR, "wrong-type",
        f"'{path[-1]}' must be {'an' if kind[0] in 'aeiou' else 'a'} {kind}, "
        f"not {type(value).__name__}",
    )


def _unknown_key(path: KeyPath, known: Iterable[str], where: str) -> PathProblem:
    key = str(path[-1])
    return PathProblem(path, "key", Severity.ERROR, "unknown-key",
                       f"unknown key '{key}' in {where}{did_you_mean(key, known)}")


def validate_data(data: Mapping[str, Any], name: str, base_dir: Path | None) -> ParsedFile:
    """Validate one parsed TOML document; never raises for bad content."""
    problems: list[PathProblem] = []
    for key, value in data.items():
        if key not in TOP_LEVEL_KEYS:
            problems.append(_unknown_key((key,), TOP_LEVEL_KEYS, "the top level"))
        elif not _type_ok(value, TOP_LEVEL_KEYS[key]):
            problems.append(_wrong_type((key,), TOP_LEVEL_KEYS[key], value))

    variables: dict[str, str] = {}
    raw_vars = data.get("variables", {})
    if isinstance(raw_vars, dict):
        for k, v in raw_vars.items():
            if isinstance(v, str):
                variables[k] = v
            elif isinstance(v, (int, float, bool)) and not isinstance(v, bool):
                variables[k] = str(v)
            else:
                problems.append(_wrong_type(("variables", k), "string", v))

    storage = _settings(data, "output_storage", OUTPUT_STORAGE_KEYS, OUTPUT_STORAGE_RULES,
                        problems)
    host = _settings(data, "host", HOST_KEYS, HOST_RULES, problems)
    history = _settings(data, "history", HISTORY_KEYS, HISTORY_RULES, problems)

    on_save: dict[str, list[str]] = {}
    raw_on_save = data.get("on_save", {})
    if isinstance(raw_on_save, dict):
        for glob, triggers in raw_on_save.items():
            if isinstance(triggers, str):
                on_save[glob] = [triggers]
            elif _type_ok(triggers, "list of strings"):
                on_save[glob] = list(triggers)
            else:
                problems.append(_wrong_type(("on_save", glob), "string or list of strings",
                                            triggers))

    commands: list[CommandConfig] = []
    indexes: list[int] = []
    raw_commands = data.get("command", [])
    if isinstance(raw_commands, list):
        for i, table in enumerate(raw_commands):
            if not isinstance(table, dict):
                continue
            cmd, cmd_problems = _validate_command(table, i, base_dir)
            problems.extend(cmd_problems)
            if cmd is not None:
                commands.append(cmd)
                indexes.append(i)
    return ParsedFile(name, variables, commands, indexes, storage, on_save, problems, host,
                      history)


def _settings(data: Mapping[str, Any], table: str, keys: Mapping[str, str],
              rules: Iterable[Rule], problems: list[PathProblem]) -> dict[str, Any]:
    """The valid keys of a settings table such as ``[output_storage]``; problems for the
    others."""
    settings: dict[str, Any] = {}
    raw = data.get(table, {})
    if isinstance(raw, dict):
        for k, v in raw.items():
            path: KeyPath = (table, k)
            if k not in keys:
                problems.append(_unknown_key(path, keys, f"[{table}]"))
            elif not _type_ok(v, keys[k]):
                problems.append(_wrong_type(path, keys[k], v))
            else:
                settings[k] = v
        problems.extend(_value_problems(settings, (table,), rules))
    return settings


def _value_problems(values: Mapping[str, Any], prefix: KeyPath,
                    rules: Iterable[Rule]) -> list[PathProblem]:
    """One ``invalid-value`` problem per rule that ``values`` (type-checked) break."""
    return [PathProblem((*prefix, rule.key), "value", Severity.ERROR, "invalid-value",
                        rule.message)
            for rule in violated_rules(values, rules)]


def _validate_command(
    table: Mapping[str, Any], index: int, base_dir: Path | None
) -> tuple[CommandConfig | None, list[PathProblem]]:
    problems: list[PathProblem] = []
    good: dict[str, Any] = {}
    for key, value in table.items():
        path: KeyPath = ("command", index, key)
        if key not in COMMAND_KEYS:
            problems.append(_unknown_key(path, COMMAND_KEYS, "[[command]]"))
        elif not _type_ok(value, COMMAND_KEYS[key]):
            problems.append(_wrong_type(path, COMMAND_KEYS[key], value))
        else:
            good[key] = value
    for required in ("name", "command"):
        if required not in table:
            problems.append(PathProblem(("command", index), "key", Severity.ERROR, "missing-key",
                                        f"[[command]] is missing required key '{required}'"))
    value_problems = _value_problems(good, ("command", index), COMMAND_RULES)
    problems.extend(value_problems)
    if any(p.severity == Severity.ERROR for p in problems):
        return None, problems
    if good.get("cwd") is not None and base_dir is not None:
        # A templated cwd is resolved per run; the orchestrator anchors it at base_dir then.
        if "{{" not in good["cwd"]:
            cwd = Path(good["cwd"])
            good["cwd"] = str(cwd if cwd.is_absolute() else base_dir / cwd)
    elif base_dir is not None:
        good["cwd"] = str(base_dir)
    try:
        return CommandConfig(**good), problems
    except ConfigValidationError as exc:  # pragma: no cover - _value_problems mirrors these
        problems.append(PathProblem(("command", index), "key", Severity.ERROR, "invalid-value",
                                    str(exc)))
        return None, problems


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------

ConfigSource = str | os.PathLike[str] | IO[bytes] | IO[str]


@dataclass
class LoadedFile:
    """The text of one config file and the result of parsing it (``data`` is None on a
    syntax error, described by ``syntax_problem``)."""

    name: str
    text: str
    base_dir: Path | None
    data: dict[str, Any] | None
    syntax_problem: Problem | None


def read_source(source: ConfigSource) -> LoadedFile:
    """Read and TOML-parse one source; syntax errors become a positioned problem."""
    from .tomlspans import syntax_error_span

    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        name, base_dir = str(path), path.resolve().parent
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            return LoadedFile(name, "", base_dir, None, Problem(
                name, WHOLE_FIRST_LINE, Severity.ERROR, "file-error", f"cannot read: {exc}"))
    else:
        raw = source.read()
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        name = str(getattr(source, "name", "<config>"))
        base_dir = None
    return parse_text(text, name, base_dir, syntax_error_span)


def parse_text(text: str, name: str, base_dir: Path | None, span_of: Any = None) -> LoadedFile:
    from .tomlspans import MAX_NESTING, nesting_too_deep

    if span_of is None:
        from .tomlspans import syntax_error_span as span_of
    # tomllib recurses per level of nesting: a value nested too deeply is refused first.
    deep = nesting_too_deep(text)
    if deep is None:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            msg = str(exc)
            return LoadedFile(name, text, base_dir, None, Problem(
                name, span_of(text, msg), Severity.ERROR, "toml-syntax",
                f"TOML syntax error: {msg}"))
        except RecursionError:
            deep = WHOLE_FIRST_LINE
        else:
            return LoadedFile(name, text, base_dir, data, None)
    return LoadedFile(name, text, base_dir, None, Problem(
        name, deep, Severity.ERROR, "too-deep",
        f"value nested too deeply (more than {MAX_NESTING} levels of arrays and inline "
        "tables)"))
