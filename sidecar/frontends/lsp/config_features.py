"""Editor features for config documents: symbols, code lenses, hover, completion, definition.

Everything here reads the *live* state of the config files (the unsaved text of open
documents, see :class:`~sidecar.frontends.lsp.documents.ConfigWorkspace`) through a small
model built with :class:`~sidecar.core.tomlspans.SpanIndex`, which keeps what it can index
even while the TOML is broken mid-edit (so completion works while typing).

Seam: :func:`register(server, workspace, service) <register>` returns a
:class:`ConfigFeatures`. Code lenses show each command's state from the service layer
(``sidecar/status``); run state changes on the service's host (and
:meth:`~ConfigFeatures.on_run_state_changed`, e.g. after a reload) ask the client to refresh
them (``workspace/codeLens/refresh``, throttled, only if the client
supports it). The lenses use the client commands ``sidecar.run`` (arguments ``[name]``) and
``sidecar.cancel`` (arguments ``[{"command": name}]``), which the server registers.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lsprotocol import types

from sidecar.app import protocol as P
from sidecar.app.present import icon, run_label
from sidecar.app.service import Service
from sidecar.core.config import COMMAND_KEYS, SETTINGS_TABLES
from sidecar.core.errors import VariableResolutionError
from sidecar.core.events import Event, RunEvent
from sidecar.core.problems import Span
from sidecar.core.templates import NAME, Resolver
from sidecar.core.tomlspans import SpanIndex
from sidecar.core.triggers import (
    LIFECYCLE_EVENTS,
    auto_events,
    matches,
    split_auto_event,
)
from sidecar.host.config_files import path_key

from .documents import (
    ConfigWorkspace,
    _codec,
    column_from_client,
    span_to_range,
    text_lines,
)

if TYPE_CHECKING:
    from pygls.lsp.server import LanguageServer

logger = logging.getLogger("sidecar.lsp.features")

RUN_COMMAND = "sidecar.run"
CANCEL_COMMAND = "sidecar.cancel"
REFRESH_INTERVAL = 0.25  # seconds between two workspace/codeLens/refresh requests

_REF_AT = re.compile(r"\{\{\s*(" + NAME + r")\s*\}\}")
_OPEN_REF = re.compile(r"\{\{\s*([A-Za-z0-9_.\-]*)$")
_KEY_PREFIX = re.compile(r"^\s*([A-Za-z0-9_\-]*)$")
_HEADER = re.compile(r"^\s*\[(\[)?\s*([^\[\]]+?)\s*\]")
_ARRAY_OPEN = re.compile(r"(?m)^[ \t]*(triggers|cancel_on_triggers)[ \t]*=[ \t]*\[")
_QUOTED = re.compile(r'"(?:[^"\\\n]|\\.)*"|\'[^\'\n]*\'')

_KIND_WORDS = {
    "command_started": "when it starts",
    "command_success": "on success",
    "command_failed": "on failure",
    "command_cancelled": "when cancelled",
}
_LIFECYCLE_WORDS = {
    "orchestrator_started": "the orchestrator when it starts",
    "orchestrator_shutdown": "the orchestrator when it shuts down",
}


# --------------------------------------------------------------------------------------------
# A model of the live config files
# --------------------------------------------------------------------------------------------


@dataclass
class _Doc:
    uri: str
    name: str
    text: str
    lines: list[str]
    index: SpanIndex

    @property
    def short(self) -> str:
        return Path(self.name).name

    def line_span(self, line: int) -> Span:
        return Span(line, 0, line, len(self.lines[line]) if line < len(self.lines) else 0)


@dataclass
class _Value:
    """A string value in a document (``span`` includes the quotes)."""

    text: str
    span: Span | None


@dataclass
class _VarDef:
    name: str
    value: str
    doc: _Doc
    key: Span | None
    span: Span | None  # key start to value end


@dataclass
class _Command:
    doc: _Doc
    index: int
    name: str | None
    header: Span | None
    extent: Span
    name_span: Span | None  # ``name = "X"``: key start to value end
    command: str | None
    triggers: list[_Value] = field(default_factory=list)
    cancel_on_triggers: list[_Value] = field(default_factory=list)
    vars: dict[str, _VarDef] = field(default_factory=dict)
    keys: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return self.name or f"[[command]] #{self.index + 1}"

    def contains(self, line: int) -> bool:
        return self.extent.line <= line <= self.extent.end_line


@dataclass
class _OnSave:
    glob: str
    trigger: _Value
    doc: _Doc


def _join(a: Span | None, b: Span | None) -> Span | None:
    if a is None or b is None:
        return a or b
    return Span(a.line, a.column, b.end_line, b.end_column)


class _Model:
    def __init__(self, workspace: ConfigWorkspace) -> None:
        self.docs: list[_Doc] = []
        self.commands: list[_Command] = []
        self.variables: dict[str, list[_VarDef]] = {}
        self.on_save: list[_OnSave] = []
        self.headers: dict[str, list[tuple[int, str, bool]]] = {}
        for f in workspace.loaded:
            doc = _Doc(workspace.uri_for(f.name), f.name, f.text, text_lines(f.text),
                       SpanIndex(f.text))
            self.docs.append(doc)
            self._read(doc)

    # ---- reading one document -------------------------------------------------------------

    def _read(self, doc: _Doc) -> None:
        index = doc.index
        paths = index.paths()
        headers = self._headers(doc)
        self.headers[doc.uri] = headers
        header_lines = [h[0] for h in headers]
        for path in paths:
            if len(path) == 2 and path[0] == "variables" and isinstance(path[1], str):
                self._variable(doc, path[1], path, self.variables.setdefault(path[1], []))
            elif path[0] == "on_save" and len(path) in (2, 3) and isinstance(path[1], str):
                value = index.string_value(path)
                if value is not None:
                    self.on_save.append(_OnSave(
                        path[1], _Value(value, index.locate_exact(path, "value")), doc))
        i = 0
        while index.locate_exact(("command", i)) is not None:
            self.commands.append(self._command(doc, i, header_lines))
            i += 1

    def _headers(self, doc: _Doc) -> list[tuple[int, str, bool]]:
        """``(line, dotted name, is array of tables)`` of every table header."""
        out: list[tuple[int, str, bool]] = []
        seen: set[int] = set()
        for path in doc.index.paths():
            key = doc.index.locate_exact(path, "key")
            value = doc.index.locate_exact(path, "value")
            if key is None or key != value or key.line in seen:
                continue
            line = doc.lines[key.line] if key.line < len(doc.lines) else ""
            m = _HEADER.match(line)
            if m is not None and line[key.column:].startswith("["):
                seen.add(key.line)
                out.append((key.line, re.sub(r"\s*\.\s*", ".", m.group(2)), bool(m.group(1))))
        return sorted(out)

    def _variable(self, doc: _Doc, name: str, path: tuple[str | int, ...],
                  into: list[_VarDef]) -> None:
        key = doc.index.locate_exact(path, "key")
        value_span = doc.index.locate_exact(path, "value")
        value = doc.index.string_value(path)
        if value is None and value_span is not None:
            value = _span_text(doc, value_span)  # numbers are allowed and used as text
        if value is None:
            return
        into.append(_VarDef(name, value, doc, key, _join(key, value_span)))

    def _command(self, doc: _Doc, i: int, header_lines: list[int]) -> _Command:
        index = doc.index
        base: tuple[str | int, ...] = ("command", i)
        header = index.locate_exact(base, "key")
        assert header is not None
        later = [line for line in header_lines if line > header.line]
        end_line = (later[0] - 1) if later else len(doc.lines) - 1
        while end_line > header.line and not doc.lines[end_line].strip():
            end_line -= 1
        if not doc.lines[header.line][header.column:].startswith("[["):
            # An inline table in ``command = [...]``: its own value span is the extent.
            extent = header
        else:
            extent = Span(header.line, header.column, end_line, len(doc.lines[end_line]))
        name = index.string_value((*base, "name"))
        cmd = _Command(
            doc, i, name if name and name.strip() else None, header, extent,
            _join(index.locate_exact((*base, "name"), "key"),
                  index.locate_exact((*base, "name"), "value")),
            index.string_value((*base, "command")),
        )
        for path in index.paths():
            if len(path) < 3 or path[:2] != base:
                continue
            key = path[2]
            if len(path) == 3 and isinstance(key, str):
                cmd.keys.append(key)
            if len(path) == 4 and key in ("triggers", "cancel_on_triggers"):
                value = index.string_value(path)
                if value is not None:
                    target = cmd.triggers if key == "triggers" else cmd.cancel_on_triggers
                    target.append(_Value(value, index.locate_exact(path, "value")))
            elif len(path) == 4 and key == "vars" and isinstance(path[3], str):
                defs: list[_VarDef] = []
                self._variable(doc, path[3], path, defs)
                if defs:
                    cmd.vars[path[3]] = defs[0]
        return cmd

    # ---- queries --------------------------------------------------------------------------

    def doc(self, uri: str) -> _Doc | None:
        for doc in self.docs:
            if doc.uri == uri:
                return doc
        key = path_key_of_uri(uri)
        for doc in self.docs:
            if key is not None and path_key(doc.name) == key:
                return doc
        return None

    def command_at(self, doc: _Doc, line: int) -> _Command | None:
        for cmd in self.commands:
            if cmd.doc is doc and cmd.contains(line):
                return cmd
        return None

    def table_at(self, doc: _Doc, line: int) -> tuple[str, bool] | None:
        """The (name, is array) of the table whose body ``line`` is in (None: top level)."""
        for n in range(min(line, len(doc.lines) - 1), -1, -1):
            m = _HEADER.match(doc.lines[n])
            if m is not None:
                return (re.sub(r"\s*\.\s*", ".", m.group(2)), bool(m.group(1)))
        return None

    def command_names(self) -> list[str]:
        out: list[str] = []
        for cmd in self.commands:
            if cmd.name and cmd.name not in out:
                out.append(cmd.name)
        return out

    def first_command(self, name: str) -> _Command | None:
        return next((c for c in self.commands if c.name == name), None)

    def global_vars(self) -> dict[str, str]:
        return {name: defs[-1].value for name, defs in self.variables.items() if defs}

    def on_save_triggers(self) -> list[str]:
        out: list[str] = []
        for entry in self.on_save:
            if entry.trigger.text not in out:
                out.append(entry.trigger.text)
        return out

    def emitted(self) -> list[str]:
        """Every event something emits: auto-events, lifecycle events, on_save triggers."""
        out = [e for name in self.command_names() for e in auto_events(name)]
        out += list(LIFECYCLE_EVENTS)
        out += [t for t in self.on_save_triggers() if t not in out]
        return out

    def known_triggers(self) -> list[str]:
        out = self.emitted()
        for cmd in self.commands:
            for value in (*cmd.triggers, *cmd.cancel_on_triggers):
                if value.text not in out:
                    out.append(value.text)
        return out


def path_key_of_uri(uri: str) -> str | None:
    from .documents import uri_to_path

    path = uri_to_path(uri)
    return path_key(path) if path is not None else None


def _span_text(doc: _Doc, span: Span) -> str:
    if span.line != span.end_line or span.line >= len(doc.lines):
        return ""
    return doc.lines[span.line][span.column:span.end_column]


def _contains(span: Span | None, line: int, column: int) -> bool:
    if span is None:
        return False
    start = (span.line, span.column)
    end = (span.end_line, span.end_column)
    return start <= (line, column) <= end


# --------------------------------------------------------------------------------------------
# The features
# --------------------------------------------------------------------------------------------


class ConfigFeatures:
    """Handlers for config documents, registered by :func:`register`."""

    def __init__(self, server: LanguageServer, workspace: ConfigWorkspace,
                 service: Service) -> None:
        self.server = server
        self.workspace = workspace
        self.service = service
        self.refresh_interval = REFRESH_INTERVAL
        self._model: _Model | None = None
        self._model_generation = -1
        self._refresh_handle: asyncio.TimerHandle | None = None
        self._last_refresh = float("-inf")

        def listener(event: Event) -> None:
            if isinstance(event, RunEvent) and event.state != "pending":
                self.on_run_state_changed()

        self.unwatch = service.host.add_listener(listener)

    # ---- model ----------------------------------------------------------------------------

    def model(self) -> _Model:
        if self._model is None or self._model_generation != self.workspace.generation:
            if self.workspace.report is None:
                self.workspace.check_now()
            self._model = _Model(self.workspace)
            self._model_generation = self.workspace.generation
        return self._model

    def _document(self, uri: str) -> tuple[_Model, _Doc | None] | None:
        """The model and the document of ``uri``; None when it is not a config file."""
        if not self.workspace.is_config_file(uri):
            return None
        model = self.model()
        return model, model.doc(uri)

    def _locate(self, uri: str, position: types.Position) -> tuple[_Model, _Doc, int, int] | None:
        found = self._document(uri)
        if found is None:
            return None
        model, doc = found
        if doc is None:
            return None
        column = column_from_client(doc.lines, position, _codec(self.server))
        return model, doc, position.line, column

    def _range(self, doc: _Doc, span: Span) -> types.Range:
        return span_to_range(doc.lines, span, _codec(self.server))

    # ---- document symbols -----------------------------------------------------------------

    def document_symbols(self, uri: str) -> list[types.DocumentSymbol] | None:
        found = self._document(uri)
        if found is None:
            return None
        model, doc = found
        if doc is None:
            return []
        out: list[types.DocumentSymbol] = []
        variables = [d for defs in model.variables.values() for d in defs if d.doc is doc]
        if variables:
            header = doc.index.locate_exact(("variables",), "key")
            children = [self._var_symbol(doc, d) for d in variables if d.span is not None]
            first = header or variables[0].span
            assert first is not None
            last = max((d.span for d in variables if d.span is not None),
                       key=lambda s: (s.end_line, s.end_column), default=first)
            extent = Span(first.line, first.column, last.end_line, last.end_column)
            out.append(types.DocumentSymbol(
                name="variables", kind=types.SymbolKind.Namespace,
                range=self._range(doc, extent),
                selection_range=self._range(doc, header or extent), children=children))
        for cmd in model.commands:
            if cmd.doc is not doc or cmd.header is None:
                continue
            children = [self._var_symbol(doc, d) for d in cmd.vars.values() if d.span is not None]
            for role, values in (("trigger", cmd.triggers),
                                 ("cancel on trigger", cmd.cancel_on_triggers)):
                for value in values:
                    if value.span is not None and value.text:
                        children.append(types.DocumentSymbol(
                            name=value.text, kind=types.SymbolKind.Event, detail=role,
                            range=self._range(doc, value.span),
                            selection_range=self._range(doc, value.span)))
            children.sort(key=lambda c: (c.range.start.line, c.range.start.character))
            out.append(types.DocumentSymbol(
                name=cmd.label, kind=types.SymbolKind.Function, detail=cmd.command or None,
                range=self._range(doc, cmd.extent),
                selection_range=self._range(doc, cmd.name_span or cmd.header),
                children=children or None))
        for table, table_kind in (("output_storage", types.SymbolKind.Struct),
                                  ("on_save", types.SymbolKind.Object)):
            header = doc.index.locate_exact((table,), "key")
            if header is None:
                continue
            end = header
            for path in doc.index.paths():
                if path[0] == table and len(path) > 1:
                    span = doc.index.locate_exact(path, "value")
                    if span is not None and (span.end_line, span.end_column) > (
                            end.end_line, end.end_column):
                        end = span
            extent = Span(header.line, header.column, end.end_line, end.end_column)
            out.append(types.DocumentSymbol(
                name=table, kind=table_kind, range=self._range(doc, extent),
                selection_range=self._range(doc, header)))
        out.sort(key=lambda s: (s.range.start.line, s.range.start.character))
        return out

    def _var_symbol(self, doc: _Doc, d: _VarDef) -> types.DocumentSymbol:
        assert d.span is not None
        return types.DocumentSymbol(
            name=d.name, kind=types.SymbolKind.Variable, detail=d.value,
            range=self._range(doc, d.span), selection_range=self._range(doc, d.key or d.span))

    # ---- code lenses ----------------------------------------------------------------------

    async def code_lenses(self, uri: str) -> list[types.CodeLens] | None:
        found = self._document(uri)
        if found is None:
            return None
        model, doc = found
        if doc is None:
            return []
        try:
            status = {c.name: c for c in (await self.service.status(P.StatusParams())).commands}
        except P.SidecarRpcError:  # no valid configuration (yet)
            status = {}
        out: list[types.CodeLens] = []
        for cmd in model.commands:
            if cmd.doc is not doc or cmd.header is None or cmd.name is None:
                continue
            line = cmd.header.line
            rng = self._range(doc, Span(line, cmd.header.column, line, cmd.header.end_column)
                              if cmd.header.line == cmd.header.end_line else doc.line_span(line))
            out.append(types.CodeLens(range=rng, command=types.Command(
                title="▶ Run", command=RUN_COMMAND, arguments=[cmd.name])))
            st = status.get(cmd.name)
            if st is None:
                continue
            if st.state == "running":
                out.append(types.CodeLens(range=rng, command=types.Command(
                    title="■ Cancel", command=CANCEL_COMMAND,
                    arguments=[{"command": cmd.name}])))
                count = f" ×{st.active_count}" if st.active_count > 1 else ""
                out.append(types.CodeLens(range=rng, command=types.Command(
                    title=f"⟳ running{count}", command="")))
            last = st.last_run
            if last is not None and last.state in P.FINAL_STATES:
                out.append(types.CodeLens(range=rng, command=types.Command(
                    title=f"{icon(last.state)} "
                          f"{run_label(last.state, last.exit_code, last.duration_secs)}",
                    command="")))
        return out

    def _refresh_supported(self) -> bool:
        try:
            caps = self.server.client_capabilities
        except Exception:
            return False
        ws = caps.workspace if caps is not None else None
        lens = ws.code_lens if ws is not None else None
        return bool(lens is not None and lens.refresh_support)

    def on_run_state_changed(self) -> None:
        """Ask the client to refresh code lenses, at most once per ``refresh_interval``.

        Safe to call often, from the event loop's thread."""
        if self._refresh_handle is not None or not self._refresh_supported():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        delay = max(0.0, self._last_refresh + self.refresh_interval - loop.time())
        self._refresh_handle = loop.call_later(delay, self._refresh)

    def _refresh(self) -> None:
        self._refresh_handle = None
        self._last_refresh = asyncio.get_running_loop().time()
        try:
            future = self.server.workspace_code_lens_refresh(None)
        except Exception:  # pragma: no cover - transport closed
            logger.debug("codeLens/refresh failed", exc_info=True)
            return
        future.add_done_callback(_ignore_result)

    # ---- hover ----------------------------------------------------------------------------

    def hover(self, uri: str, position: types.Position) -> types.Hover | None:
        found = self._locate(uri, position)
        if found is None:
            return None
        model, doc, line, column = found
        ref = _reference_at(doc, line, column)
        if ref is not None:
            name, span = ref
            text = self._variable_hover(model, doc, line, name)
            return types.Hover(contents=types.MarkupContent(
                kind=types.MarkupKind.Markdown, value=text), range=self._range(doc, span))
        trig = _trigger_at(model, doc, line, column)
        if trig is not None:
            value, _role = trig
            text = self._trigger_hover(model, value.text)
            assert value.span is not None
            return types.Hover(contents=types.MarkupContent(
                kind=types.MarkupKind.Markdown, value=text), range=self._range(doc, value.span))
        return None

    def _variable_hover(self, model: _Model, doc: _Doc, line: int, name: str) -> str:
        cmd = model.command_at(doc, line)
        definition = _definition_of(model, cmd, name)
        if definition is None:
            return (f"**`{name}`** is not defined: add it to `[variables]`"
                    + (" or the command's `vars`" if cmd is not None else ""))
        variables = model.global_vars()
        if cmd is not None:
            variables.update({k: d.value for k, d in cmd.vars.items()})
        try:
            resolved = Resolver(variables).value(name)
            value_line = f"**`{name}`** = `{_code(resolved)}`"
        except VariableResolutionError as exc:
            value_line = f"**`{name}`**: cannot resolve ({exc})"
        where = "the command's vars" if cmd is not None and name in cmd.vars else "[variables]"
        lines = [value_line, "",
                 f"Defined in {where} at {_where(definition)}"
                 + (f" as `{_code(definition.value)}`" if definition.value != _safe(
                     variables, name) else "")]
        others = [d for d in model.variables.get(name, []) if d is not definition]
        if others:
            verb = ("Overrides [variables] at" if where != "[variables]"
                    else "Overrides the value at")
            lines.append("")
            lines.append(f"{verb} " + ", ".join(_where(d) for d in others))
        return "\n".join(lines)

    def _trigger_hover(self, model: _Model, trigger: str) -> str:
        events = _events_for(model, trigger)
        lines = [f"**Trigger** `{trigger}`", ""]
        emitters = [_describe_emitter(model, e) for e in events]
        emitters = [e for e in emitters if e]
        if emitters:
            lines += ["Emitted by:"] + [f"- {e}" for e in dict.fromkeys(emitters)]
        else:
            lines.append("No command emits it; it fires only when triggered by name "
                         "(`trigger()` or a client).")
        starts, cancels = _listeners(model, trigger, events)
        lines.append("")
        lines.append("Starts: " + (", ".join(f"**{n}**" for n in starts) if starts else "nothing"))
        if cancels:
            lines.append("")
            lines.append("Cancels: " + ", ".join(f"**{n}**" for n in cancels))
        return "\n".join(lines)

    # ---- definition -----------------------------------------------------------------------

    def definition(self, uri: str, position: types.Position) -> list[types.Location] | None:
        found = self._locate(uri, position)
        if found is None:
            return None
        model, doc, line, column = found
        ref = _reference_at(doc, line, column)
        if ref is not None:
            definition = _definition_of(model, model.command_at(doc, line), ref[0])
            if definition is None or definition.span is None:
                return None
            return [types.Location(uri=definition.doc.uri,
                                   range=self._range(definition.doc, definition.span))]
        trig = _trigger_at(model, doc, line, column)
        if trig is None:
            return None
        trigger = trig[0].text
        own = types.Location(uri=doc.uri, range=self._range(doc, trig[0].span)) \
            if trig[0].span is not None else None
        out: list[types.Location] = []
        for event in _events_for(model, trigger):
            auto = split_auto_event(event)
            if auto is not None:
                cmd = model.first_command(auto[1])
                if cmd is not None:
                    span = cmd.name_span or cmd.header
                    assert span is not None
                    loc = types.Location(uri=cmd.doc.uri, range=self._range(cmd.doc, span))
                    if loc not in out:
                        out.append(loc)
            else:
                for entry in model.on_save:
                    if entry.trigger.text == event and entry.trigger.span is not None:
                        loc = types.Location(uri=entry.doc.uri,
                                             range=self._range(entry.doc, entry.trigger.span))
                        if loc not in out and loc != own:
                            out.append(loc)
        return out or None

    # ---- completion -----------------------------------------------------------------------

    def completion(self, uri: str, position: types.Position) -> types.CompletionList | None:
        found = self._locate(uri, position)
        if found is None:
            return None
        model, doc, line, column = found
        text = doc.lines[line] if line < len(doc.lines) else ""
        prefix = text[:column]
        items: list[types.CompletionItem] = []

        m = _OPEN_REF.search(prefix)
        if m is not None:
            start = column - len(m.group(1))
            closed = re.match(r"\s*\}\}", text[column:]) is not None
            cmd = model.command_at(doc, line)
            variables = model.global_vars()
            if cmd is not None:
                variables.update({k: d.value for k, d in cmd.vars.items()})
            for name in sorted(variables):
                items.append(types.CompletionItem(
                    label=name, kind=types.CompletionItemKind.Variable,
                    detail=_safe(variables, name) or variables[name],
                    text_edit=types.TextEdit(
                        range=self._range(doc, Span(line, start, line, column)),
                        new_text=name if closed else f"{name} }}}}"),
                ))
            return types.CompletionList(is_incomplete=False, items=items)

        context = _trigger_context(doc, model, line, column)
        if context is not None:
            start, quoted = context
            for trigger in model.known_triggers():
                items.append(types.CompletionItem(
                    label=trigger, kind=types.CompletionItemKind.Event,
                    detail=_trigger_detail(model, trigger),
                    filter_text=trigger,
                    text_edit=types.TextEdit(
                        range=self._range(doc, Span(line, start, line, column)),
                        new_text=trigger if quoted else f'"{trigger}"'),
                ))
            return types.CompletionList(is_incomplete=False, items=items)

        k = _KEY_PREFIX.match(prefix)
        if k is not None:
            table = model.table_at(doc, line)
            keys: dict[str, str] = {}
            present: set[str] = set()
            if table == ("command", True):
                keys = COMMAND_KEYS
                cmd = model.command_at(doc, line)
                present = set(cmd.keys) if cmd is not None else set()
            elif table is not None and not table[1] and table[0] in SETTINGS_TABLES:
                keys = SETTINGS_TABLES[table[0]]
                present = {str(p[1]) for p in doc.index.paths()
                           if len(p) == 2 and p[0] == table[0]}
            typed = k.group(1)
            current = re.match(r"\s*([A-Za-z0-9_\-]+)\s*=", text)
            if current is not None:
                present.discard(current.group(1))
            start = column - len(typed)
            for key, kind in keys.items():
                if key in present:
                    continue
                items.append(types.CompletionItem(
                    label=key, kind=types.CompletionItemKind.Property, detail=kind,
                    text_edit=types.TextEdit(
                        range=self._range(doc, Span(line, start, line, column)),
                        new_text=f"{key} = "),
                ))
            if keys:
                return types.CompletionList(is_incomplete=False, items=items)
        return None


def _ignore_result(future: Any) -> None:
    try:
        future.result()
    except Exception:
        logger.debug("codeLens/refresh was rejected", exc_info=True)


def _code(text: str) -> str:
    return text.replace("`", "'")


def _safe(variables: dict[str, str], name: str) -> str | None:
    try:
        return Resolver(variables).value(name)
    except VariableResolutionError:
        return None


def _where(d: _VarDef) -> str:
    line = (d.key.line + 1) if d.key is not None else 1
    return f"{d.doc.short}:{line}"


def _reference_at(doc: _Doc, line: int, column: int) -> tuple[str, Span] | None:
    if line >= len(doc.lines):
        return None
    for m in _REF_AT.finditer(doc.lines[line]):
        if m.start() <= column < m.end():
            return m.group(1), Span(line, m.start(), line, m.end())
    return None


def _definition_of(model: _Model, cmd: _Command | None, name: str) -> _VarDef | None:
    if cmd is not None and name in cmd.vars:
        return cmd.vars[name]
    defs = model.variables.get(name)
    return defs[-1] if defs else None


def _trigger_at(model: _Model, doc: _Doc, line: int,
                column: int) -> tuple[_Value, str] | None:
    for cmd in model.commands:
        if cmd.doc is not doc or not cmd.contains(line):
            continue
        for role, values in (("trigger", cmd.triggers), ("cancel", cmd.cancel_on_triggers)):
            for value in values:
                if _contains(value.span, line, column):
                    return value, role
    for entry in model.on_save:
        if entry.doc is doc and _contains(entry.trigger.span, line, column):
            return entry.trigger, "on_save"
    return None


def _events_for(model: _Model, trigger: str) -> list[str]:
    """The concrete events a trigger string stands for (all matches of a wildcard)."""
    if "*" not in trigger:
        return [trigger]
    return [e for e in model.emitted() if matches(trigger, e)]


def _describe_emitter(model: _Model, event: str) -> str | None:
    parts: list[str] = []
    auto = split_auto_event(event)
    if auto is not None:
        kind, name = auto
        if model.first_command(name) is not None:
            parts.append(f"**{name}** {_KIND_WORDS[kind]} (`{event}`)")
        else:
            parts.append(f"unknown command **{name}** (`{event}`)")
    if event in _LIFECYCLE_WORDS:
        parts.append(_LIFECYCLE_WORDS[event] + f" (`{event}`)")
    globs = [e.glob for e in model.on_save if e.trigger.text == event]
    if globs:
        parts.append("saving files matching " + ", ".join(f"`{g}`" for g in globs))
    return "; ".join(parts) or None


def _listeners(model: _Model, trigger: str, events: Iterable[str]) -> tuple[list[str], list[str]]:
    events = list(events) or [trigger]
    starts: list[str] = []
    cancels: list[str] = []
    for cmd in model.commands:
        if cmd.name is None:
            continue
        if any(v.text == trigger or any(matches(v.text, e) for e in events)
               for v in cmd.triggers) and cmd.name not in starts:
            starts.append(cmd.name)
        if any(v.text == trigger or any(matches(v.text, e) for e in events)
               for v in cmd.cancel_on_triggers) and cmd.name not in cancels:
            cancels.append(cmd.name)
    return starts, cancels


def _trigger_detail(model: _Model, trigger: str) -> str:
    auto = split_auto_event(trigger)
    if auto is not None:
        return f"{auto[1]} {_KIND_WORDS[auto[0]]}"
    if trigger in _LIFECYCLE_WORDS:
        return _LIFECYCLE_WORDS[trigger]
    if trigger in model.on_save_triggers():
        return "fired on save"
    return "custom trigger"


def _trigger_context(doc: _Doc, model: _Model, line: int, column: int) -> tuple[int, bool] | None:
    """Inside a ``triggers``/``cancel_on_triggers`` array or an ``[on_save]`` value:
    ``(start column of the text to replace, whether the cursor is inside quotes)``."""
    line_text = doc.lines[line] if line < len(doc.lines) else ""
    prefix = line_text[:column]
    table = model.table_at(doc, line)
    before = "\n".join([*doc.lines[:line], prefix])
    segment: str | None = None
    m = None
    for m in _ARRAY_OPEN.finditer(before):  # noqa: B007 - the last match is wanted
        continue
    if m is not None and table == ("command", True):
        candidate = before[m.end():]
        stripped = _QUOTED.sub("", candidate)
        if "]" not in stripped and not re.search(r"\n\s*[A-Za-z0-9_\-]+\s*=", stripped) \
                and "\n[" not in stripped:
            segment = candidate
    if segment is None and table == ("on_save", False):
        eq = _equals_outside_quotes(prefix)
        if eq is not None:
            segment = prefix[eq + 1:]
    if segment is None:
        return None
    last_line = segment.split("\n")[-1]
    rest = _QUOTED.sub(lambda q: " " * len(q.group(0)), last_line)
    quote = max(rest.rfind('"'), rest.rfind("'"))
    if quote >= 0:
        return column - (len(last_line) - quote - 1), True
    word = re.search(r"[A-Za-z0-9_:*.\-]*$", prefix)
    return column - (len(word.group(0)) if word else 0), False


def _equals_outside_quotes(text: str) -> int | None:
    masked = _QUOTED.sub(lambda q: " " * len(q.group(0)), text)
    i = masked.find("=")
    return i if i >= 0 else None


# --------------------------------------------------------------------------------------------
# Registration
# --------------------------------------------------------------------------------------------


def register(server: LanguageServer, workspace: ConfigWorkspace,
             service: Service) -> ConfigFeatures:
    """Register symbols, code lenses, hover, completion and definition for config files.

    Returns the :class:`ConfigFeatures`; it refreshes code lenses when runs of the service's
    host change state, and on ``on_run_state_changed()``.
    """
    features = ConfigFeatures(server, workspace, service)

    @server.feature(types.TEXT_DOCUMENT_DOCUMENT_SYMBOL)
    def document_symbol(params: types.DocumentSymbolParams) -> list[types.DocumentSymbol] | None:
        return features.document_symbols(params.text_document.uri)

    @server.feature(types.TEXT_DOCUMENT_CODE_LENS)
    async def code_lens(params: types.CodeLensParams) -> list[types.CodeLens] | None:
        return await features.code_lenses(params.text_document.uri)

    @server.feature(types.TEXT_DOCUMENT_HOVER)
    def hover(params: types.HoverParams) -> types.Hover | None:
        return features.hover(params.text_document.uri, params.position)

    @server.feature(types.TEXT_DOCUMENT_DEFINITION)
    def definition(params: types.DefinitionParams) -> list[types.Location] | None:
        return features.definition(params.text_document.uri, params.position)

    @server.feature(types.TEXT_DOCUMENT_COMPLETION,
                    types.CompletionOptions(trigger_characters=["{", '"', ":", "'"]))
    def completion(params: types.CompletionParams) -> types.CompletionList | None:
        return features.completion(params.text_document.uri, params.position)

    return features

