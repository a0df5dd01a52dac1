"""Whole-configuration checks: validation, cmdorc's multi-file merge, templates, triggers.

:func:`check_files` turns loaded config files into positioned :class:`Problem`\\ s and, when
there is no error, the merged :class:`RunnerConfig`. It is what ``load_configs``, ``sidecar
check`` and the language server share.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import (
    CommandConfig,
    HistoryConfig,
    HostConfig,
    LoadedFile,
    OutputStorageConfig,
    ParsedFile,
    PathProblem,
    RunnerConfig,
    validate_data,
)
from .problems import WHOLE_FIRST_LINE, KeyPath, Problem, Severity, Span, did_you_mean
from .templates import find_cycle, scan
from .tomlspans import Part, SpanIndex
from .triggers import LIFECYCLE_EVENTS, emitted_events, find_cycles, matches, split_auto_event


@dataclass
class CheckReport:
    """The merged config (None if any problem is an error), every problem, and the span index
    of each parsed file by file name."""

    config: RunnerConfig | None
    problems: list[Problem] = field(default_factory=list)
    index: dict[str, SpanIndex] = field(default_factory=dict)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == Severity.ERROR]


@dataclass
class _RawCommand:
    """A ``[[command]]`` table as written (possibly invalid), for cross-file checks."""

    file: str
    index: int  # position in the file's [[command]] array
    name: str | None
    triggers: list[str]
    cancel_on_triggers: list[str]
    loop_detection: bool
    vars: dict[str, str]
    table: Mapping[str, Any]


def _str_list(value: Any) -> list[str]:
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []


def _str_dict(value: Any) -> dict[str, str]:
    if isinstance(value, dict):
        return {k: v for k, v in value.items() if isinstance(v, str)}
    return {}


def _quote(value: Any) -> str:
    return f'"{value}"' if isinstance(value, str) else repr(value)


class _Checker:
    def __init__(self, files: list[LoadedFile]) -> None:
        self.files = files
        self.problems: list[Problem] = []
        self.index: dict[str, SpanIndex] = {}
        self.parsed: list[tuple[LoadedFile, ParsedFile]] = []
        self.raw_commands: list[_RawCommand] = []
        self.commands: dict[str, _RawCommand] = {}  # first definition of each name
        self.variables: dict[str, str] = {}
        self.variable_source: dict[str, str] = {}  # variable -> file of the winning value
        self.storage: dict[str, Any] = {}
        self.host_settings: dict[str, Any] = {}
        self.history_settings: dict[str, Any] = {}
        self.on_save: dict[str, list[str]] = {}

    # ---- positions ------------------------------------------------------------------------

    def span(self, file: str, path: KeyPath, part: Part = "key") -> Span:
        index = self.index.get(file)
        found = index.locate(path, part) if index is not None else None
        return found if found is not None else WHOLE_FIRST_LINE

    def string_span(self, file: str, path: KeyPath, start: int, end: int, text: str) -> Span:
        index = self.index.get(file)
        found = index.value_offset_to_span(path, start, end, text) if index else None
        return found if found is not None else self.span(file, path, "value")

    def add(
        self, file: str, span: Span, severity: Severity, code: str, message: str,
        related: tuple[tuple[str, Span, str], ...] = (),
    ) -> None:
        self.problems.append(Problem(file, span, severity, code, message, related))

    def add_path_problem(self, file: str, p: PathProblem) -> None:
        self.add(file, self.span(file, p.path, p.part), p.severity, p.code, p.message)

    # ---- passes ---------------------------------------------------------------------------

    def run(self) -> CheckReport:
        for f in self.files:
            if f.syntax_problem is not None:
                self.problems.append(f.syntax_problem)
            if f.data is None:
                continue
            self.index[f.name] = SpanIndex(f.text)
            parsed = validate_data(f.data, f.name, f.base_dir)
            for p in parsed.problems:
                self.add_path_problem(f.name, p)
            self.parsed.append((f, parsed))
            self.collect_commands(f)
        self.merge()
        self.check_templates()
        self.check_variable_cycles()
        self.check_triggers()
        order = {f.name: i for i, f in enumerate(self.files)}
        self.problems.sort(key=lambda p: (order.get(p.file, len(order)), p.span.line,
                                          p.span.column))
        config = None
        if not any(p.severity == Severity.ERROR for p in self.problems):
            config = self.build_config()
        return CheckReport(config, self.problems, self.index)

    def collect_commands(self, f: LoadedFile) -> None:
        assert f.data is not None
        tables = f.data.get("command", [])
        if not isinstance(tables, list):
            return
        for i, table in enumerate(tables):
            if not isinstance(table, dict):
                continue
            name = table.get("name")
            loop = table.get("loop_detection", True)
            cmd = _RawCommand(
                f.name, i, name if isinstance(name, str) and name.strip() else None,
                _str_list(table.get("triggers")), _str_list(table.get("cancel_on_triggers")),
                loop if isinstance(loop, bool) else True, _str_dict(table.get("vars")), table,
            )
            self.raw_commands.append(cmd)
            if cmd.name is None:
                continue
            first = self.commands.get(cmd.name)
            if first is None:
                self.commands[cmd.name] = cmd
                continue
            where = Path(first.file).name
            self.add(
                f.name, self.span(f.name, ("command", i, "name"), "value"), Severity.ERROR,
                "duplicate-command",
                f"Duplicate command name '{cmd.name}' (first defined in {where})",
                ((first.file, self.span(first.file, ("command", first.index, "name"), "value"),
                  f"'{cmd.name}' first defined here"),),
            )

    def merge(self) -> None:
        """Last file wins for [variables], [output_storage], [host] and [history] (a warning on
        each override); [on_save] triggers accumulate."""
        var_sources: dict[str, str] = {}
        storage_sources: dict[str, str] = {}
        host_sources: dict[str, str] = {}
        history_sources: dict[str, str] = {}
        for f, parsed in self.parsed:
            for key, value in parsed.variables.items():
                self._merge_value(f.name, "variables", key, value, self.variables, var_sources,
                                  f"Variable '{key}'")
            for key, value in parsed.output_storage.items():
                self._merge_value(f.name, "output_storage", key, value, self.storage,
                                  storage_sources, f"output_storage.{key}")
            for key, value in parsed.host.items():
                self._merge_value(f.name, "host", key, value, self.host_settings,
                                  host_sources, f"host.{key}")
            for key, value in parsed.history.items():
                self._merge_value(f.name, "history", key, value, self.history_settings,
                                  history_sources, f"history.{key}")
            for glob, triggers in parsed.on_save.items():
                merged = self.on_save.setdefault(glob, [])
                merged.extend(t for t in triggers if t not in merged)
        self.variable_source = var_sources

    def _merge_value(self, file: str, table: str, key: str, value: Any,
                     merged: dict[str, Any], sources: dict[str, str], label: str) -> None:
        path: KeyPath = (table, key)
        if key in merged and merged[key] != value:
            prev = sources[key]
            self.add(
                file, self.span(file, path), Severity.WARNING, "variable-override",
                f"{label} overridden by {Path(file).name} "
                f"(was: {_quote(merged[key])}, now: {_quote(value)})",
                ((prev, self.span(prev, path), "previous value"),),
            )
        merged[key] = value
        sources[key] = file

    # ---- templates ------------------------------------------------------------------------

    def template_strings(self) -> list[tuple[str, KeyPath, str, _RawCommand | None]]:
        """Every string that is templated at run time: (file, path, text, command)."""
        out: list[tuple[str, KeyPath, str, _RawCommand | None]] = []
        for f, _parsed in self.parsed:
            assert f.data is not None
            raw_vars = f.data.get("variables")
            if isinstance(raw_vars, dict):
                for key, value in raw_vars.items():
                    if isinstance(value, str):
                        out.append((f.name, ("variables", key), value, None))
        for cmd in self.raw_commands:
            base: KeyPath = ("command", cmd.index)
            for key in ("command", "cwd"):
                value = cmd.table.get(key)
                if isinstance(value, str):
                    out.append((cmd.file, (*base, key), value, cmd))
            for key in ("env", "vars"):
                for k, v in _str_dict(cmd.table.get(key)).items():
                    out.append((cmd.file, (*base, key, k), v, cmd))
        return out

    def check_templates(self) -> None:
        any_command_vars: set[str] = set()
        for raw in self.raw_commands:
            any_command_vars.update(raw.vars)
        for file, path, text, cmd in self.template_strings():
            refs, errors = scan(text)
            for err in errors:
                code = ("unterminated-template" if err.message.startswith("unterminated")
                        else "invalid-template")
                self.add(file, self.string_span(file, path, err.start, err.end, text),
                         Severity.ERROR, code, err.message)
            for ref in refs:
                if ref.name in self.variables:
                    continue
                if cmd is not None and ref.name in cmd.vars:
                    continue
                if cmd is None and ref.name in any_command_vars:
                    continue  # a global variable may rely on a command's vars
                where = ("[variables] or the vars of the commands that use it" if cmd is None
                         else "[variables] or the command's vars")
                self.add(
                    file, self.string_span(file, path, ref.start, ref.end, text),
                    Severity.WARNING, "undefined-variable",
                    f"Undefined variable '{ref.name}': runs fail unless it is passed at run "
                    f"time (vars=, --var); define it in {where} "
                    f"(e.g. {ref.name} = \"\" for a value passed at run time)",
                )

    def check_variable_cycles(self) -> None:
        reported: set[str] = set()
        for cycle, scope_cmd in self._variable_cycles():
            if set(cycle) <= reported:
                continue
            reported.update(cycle)
            text = " -> ".join(cycle)
            for name, nxt in zip(cycle, cycle[1:], strict=False):
                if scope_cmd is not None and name in scope_cmd.vars:
                    file = scope_cmd.file
                    path: KeyPath = ("command", scope_cmd.index, "vars", name)
                    value = scope_cmd.vars[name]
                else:
                    file = self.variable_source[name]
                    path = ("variables", name)
                    value = self.variables[name]
                span = self.span(file, path, "key")
                for ref in scan(value)[0]:
                    if ref.name == nxt:
                        span = self.string_span(file, path, ref.start, ref.end, value)
                        break
                self.add(file, span, Severity.ERROR, "variable-cycle",
                         f"Variable cycle: {text}")

    def _variable_cycles(self) -> list[tuple[list[str], _RawCommand | None]]:
        out: list[tuple[list[str], _RawCommand | None]] = []
        scopes: list[tuple[dict[str, str], _RawCommand | None]] = [(dict(self.variables), None)]
        for raw in self.raw_commands:
            if raw.vars:
                scopes.append(({**self.variables, **raw.vars}, raw))
        for variables, cmd in scopes:
            remaining = dict(variables)
            while (cycle := find_cycle(remaining)) is not None:
                if cmd is None or any(n in cmd.vars for n in cycle):
                    out.append((cycle, cmd))
                for name in cycle:
                    remaining.pop(name, None)
        return out

    # ---- triggers -------------------------------------------------------------------------

    def check_triggers(self) -> None:
        graph = {name: cmd.triggers for name, cmd in self.commands.items()}
        for cycle in find_cycles(graph):
            self._report_trigger_cycle(cycle)
        names = set(self.commands)
        emitted = emitted_events(names)
        on_save = {t for triggers in self.on_save.values() for t in triggers}
        for cmd in self.raw_commands:
            base: KeyPath = ("command", cmd.index)
            for key, items in (("triggers", cmd.triggers),
                               ("cancel_on_triggers", cmd.cancel_on_triggers)):
                for j, trigger in enumerate(items):
                    span = self.span(cmd.file, (*base, key, j), "value")
                    auto = split_auto_event(trigger)
                    if auto is not None and "*" not in auto[1] and auto[1] not in names:
                        self.add(cmd.file, span, Severity.ERROR, "unknown-command",
                                 f"'{trigger}' names unknown command '{auto[1]}'"
                                 + did_you_mean(auto[1], self.commands))
                        continue
                    if key != "triggers" or trigger == cmd.name or trigger in on_save:
                        continue
                    if trigger in LIFECYCLE_EVENTS:
                        continue
                    if any(matches(trigger, e) for e in emitted | on_save):
                        continue
                    self.add(
                        cmd.file, span, Severity.HINT, "unemitted-trigger",
                        f"No command emits '{trigger}'; it fires only when triggered by "
                        "name (trigger() or a client)",
                    )
            if cmd.name is not None and not cmd.triggers and isinstance(
                    cmd.table.get("triggers", []), list):
                self.add(cmd.file, self.span(cmd.file, (*base, "name"), "value"), Severity.HINT,
                         "untriggered-command",
                         f"Command '{cmd.name}' has no triggers; it runs only with run_command")

    def _report_trigger_cycle(self, cycle: list[tuple[str, str]]) -> None:
        parts: list[str] = []
        for name, event in cycle:
            parts += [name, event]
        text = " -> ".join([*parts, cycle[0][0]])
        members = [self.commands[name] for name, _ in cycle]
        endless = [c.name for c in members if not c.loop_detection]
        severity = Severity.ERROR if endless else Severity.WARNING
        note = (f" ({', '.join(n for n in endless if n)} "
                f"{'has' if len(endless) == 1 else 'have'} loop_detection = false: "
                "it would run forever)" if endless
                else " (stopped at run time by loop_detection)")
        for i, (_name, event) in enumerate(cycle):
            target = self.commands[cycle[(i + 1) % len(cycle)][0]]
            j = next((k for k, t in enumerate(target.triggers) if matches(t, event)), None)
            path: KeyPath = ("command", target.index, "triggers")
            if j is not None:
                path = (*path, j)
            self.add(target.file, self.span(target.file, path, "value"), severity,
                     "trigger-cycle", f"trigger cycle: {text}{note}")

    # ---- result ---------------------------------------------------------------------------

    def build_config(self) -> RunnerConfig:
        commands: list[CommandConfig] = []
        sources: dict[str, str] = {}
        for f, parsed in self.parsed:
            for cmd in parsed.commands:
                commands.append(cmd)
                sources[cmd.name] = f.name
        base_dir = self.files[0].base_dir if self.files else None
        storage = dict(self.storage)
        directory = storage.get("directory", OutputStorageConfig.directory)
        if isinstance(directory, str) and base_dir is not None:
            path = Path(directory)
            if not path.is_absolute():
                storage["directory"] = str(base_dir / path)
        return RunnerConfig(
            commands=commands, vars=dict(self.variables),
            output_storage=OutputStorageConfig(**storage),
            on_save={k: list(v) for k, v in self.on_save.items()},
            base_dir=base_dir, sources=sources, host=HostConfig(**self.host_settings),
            history=HistoryConfig(**self.history_settings),
        )


def check_files(files: list[LoadedFile]) -> CheckReport:
    """Check and merge loaded config files (cmdorc's merge rules); never raises for bad
    content. ``report.config`` is None when any problem is an error."""
    return _Checker(files).run()
