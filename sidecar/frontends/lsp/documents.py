"""A session's config documents: unsaved text, live checks and diagnostics.

:class:`ConfigWorkspace` is one client's view of the host's config files
(:class:`sidecar.host.config_files.ConfigFiles`): it tracks the unsaved text of those open in
the editor, runs :func:`sidecar.core.checks.check_files` over all of them (open text wins over
disk, so cross-file problems such as duplicate command names see the editor's state) and
publishes ``textDocument/publishDiagnostics`` for every config file, an empty list once a
file's problems are fixed. A config file being written that is not on disk yet (a
``sidecar.toml`` opened in the root) is checked too.

Seam with the server:

* :func:`register` installs ``didOpen``/``didChange``/``didClose`` handlers (chained after any
  handler already registered for those methods). Saves are the host's business: after each
  reload the server calls :meth:`ConfigWorkspace.reloaded`, which republishes.
* :meth:`ConfigWorkspace.check_now` re-checks from unsaved text and republishes.

Positions: core spans count code points; they are converted to the client's position
encoding (UTF-16 unless negotiated otherwise) here, and back with :func:`column_from_client`.
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lsprotocol import types
from pygls.uris import from_fs_path, to_fs_path
from pygls.workspace.position_codec import PositionCodec

from sidecar.core.checks import CheckReport, check_files
from sidecar.core.config import LoadedFile, parse_text, read_source
from sidecar.core.problems import Problem, Span
from sidecar.core.workspace import CONFIG_FILE_NAMES
from sidecar.host.config_files import ConfigFiles, index_of, path_key

if TYPE_CHECKING:
    from pygls.lsp.server import LanguageServer

logger = logging.getLogger("sidecar.lsp.documents")

SOURCE = "sidecar"

# Codes whose diagnostics mark something that has no effect (rendered faded by editors).
UNNECESSARY_CODES = frozenset({"unemitted-trigger"})

ReportListener = Callable[[CheckReport], None]


# --------------------------------------------------------------------------------------------
# Positions
# --------------------------------------------------------------------------------------------


def _codec(server: LanguageServer | None) -> PositionCodec:
    if server is not None:
        try:
            return server.workspace.position_codec
        except RuntimeError:  # not initialized yet
            pass
    return PositionCodec()


def text_lines(text: str) -> list[str]:
    """Lines split on ``\\n`` only (like the core's spans), ``\\r`` stripped."""
    return [line.rstrip("\r") for line in text.split("\n")]


def position_to_client(lines: Sequence[str], line: int, column: int,
                       codec: PositionCodec) -> types.Position:
    """A code-point position as an LSP position in the client's encoding."""
    if line >= len(lines):
        return types.Position(line=line, character=0)
    return types.Position(line=line, character=codec.client_num_units(lines[line][:column]))


def span_to_range(text: str | Sequence[str], span: Span, codec: PositionCodec) -> types.Range:
    lines = text_lines(text) if isinstance(text, str) else text
    return types.Range(
        start=position_to_client(lines, span.line, span.column, codec),
        end=position_to_client(lines, span.end_line, span.end_column, codec),
    )


def column_from_client(lines: Sequence[str], position: types.Position,
                       codec: PositionCodec) -> int:
    """The code-point column of an LSP position (clamped to the line)."""
    if position.line >= len(lines):
        return 0
    line = lines[position.line]
    units = 0
    for i, ch in enumerate(line):
        if units >= position.character:
            return i
        units += codec.client_num_units(ch)
    return len(line)


# --------------------------------------------------------------------------------------------
# Paths and URIs
# --------------------------------------------------------------------------------------------


def uri_to_path(uri: str) -> Path | None:
    fs = to_fs_path(uri)
    return Path(fs) if fs else None


# --------------------------------------------------------------------------------------------
# The workspace
# --------------------------------------------------------------------------------------------


class ConfigWorkspace:
    """One client's view of the workspace's config files: their unsaved text and last
    check."""

    def __init__(self, server: LanguageServer | None, disk: ConfigFiles) -> None:
        self.server = server
        self.disk = disk
        self.files: list[Path] = []
        #: uri -> unsaved text of each open config document
        self.texts: dict[str, str] = {}
        self._open_uri: dict[str, str] = {}  # path key -> the client's uri of an open file
        self._versions: dict[str, int | None] = {}  # uri -> document version
        #: the last live check (open text wins over disk); None before the first check
        self.report: CheckReport | None = None
        #: the files the last live check saw, in config order
        self.loaded: list[LoadedFile] = []
        #: incremented on every live check (cache key for features)
        self.generation = 0
        self._published: set[str] = set()  # uris with a non-empty diagnostic list out there
        self._listeners: list[ReportListener] = []
        self._discover()

    @property
    def root(self) -> Path:
        return self.disk.root

    # ---- the set of files -----------------------------------------------------------------

    def _discover(self) -> None:
        files = list(self.disk.files)
        if not files and not self.disk.explicit:
            # A config file being written in the editor that is not on disk yet.
            for name in CONFIG_FILE_NAMES:
                if path_key(self.root / name) in self._open_uri:
                    files = [Path(path_key(self.root / name))]
                    break
        self.files = files

    def is_config_file(self, uri: str) -> bool:
        """True for a URI of one of the workspace's config files."""
        path = uri_to_path(uri)
        return path is not None and (index_of(self.files, path) is not None
                                     or self.disk.is_config_file(path))

    def uri_for(self, name: str | os.PathLike[str]) -> str:
        """The URI to publish for a config file: the client's own if it is open."""
        key = path_key(name)
        return self._open_uri.get(key) or from_fs_path(key) or Path(key).as_uri()

    def path_for(self, uri: str) -> Path | None:
        path = uri_to_path(uri)
        if path is None:
            return None
        index = index_of(self.files, path)
        return self.files[index] if index is not None else None

    def text_of(self, uri: str) -> str | None:
        """The current text of a config file: unsaved if open, else from the last check."""
        if uri in self.texts:
            return self.texts[uri]
        path = self.path_for(uri)
        if path is None:
            return None
        for f in self.loaded:
            if path_key(f.name) == str(path):
                return f.text
        try:
            return path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return None

    # ---- document sync --------------------------------------------------------------------

    def did_open(self, uri: str, text: str, version: int | None = None) -> None:
        path = uri_to_path(uri)
        if path is None or not self.is_config_file(uri):
            return
        self._open_uri[path_key(path)] = uri
        self.texts[uri] = text
        self._versions[uri] = version
        if index_of(self.files, path) is None:
            self._discover()
        self.check_now(uri)

    def did_change(self, uri: str, text: str, version: int | None = None) -> None:
        if uri not in self.texts:
            if not self.is_config_file(uri):
                return
            path = uri_to_path(uri)
            if path is not None:
                self._open_uri[path_key(path)] = uri
        self.texts[uri] = text
        self._versions[uri] = version
        self.check_now(uri)

    def did_close(self, uri: str) -> None:
        if uri not in self.texts:
            return
        del self.texts[uri]
        self._versions.pop(uri, None)
        path = uri_to_path(uri)
        if path is not None:
            self._open_uri.pop(path_key(path), None)
        self._discover()
        # The file on disk is now the truth again (unsaved edits were discarded).
        self.check_now()

    # ---- checking -------------------------------------------------------------------------

    def _load(self) -> list[LoadedFile]:
        out: list[LoadedFile] = []
        for path in self.files:
            uri = self._open_uri.get(str(path))
            if uri is not None and uri in self.texts:
                out.append(parse_text(self.texts[uri], str(path), path.parent))
            else:
                out.append(read_source(path))
        return out

    def check_now(self, uri: str | None = None) -> CheckReport:
        """Check every config file from its unsaved text (disk for files not open) and
        publish diagnostics. ``uri`` names the document that changed (informational: all
        files are re-checked because problems cross files)."""
        del uri
        self.loaded = self._load()
        report = check_files(self.loaded) if self.loaded else CheckReport(None)
        self._checked(report)
        return report

    def _checked(self, report: CheckReport) -> None:
        self.report = report
        self.generation += 1
        self.publish(report)
        for listener in list(self._listeners):
            try:
                listener(report)
            except Exception:  # pragma: no cover - a listener's bug must not stop checks
                logger.exception("config report listener failed")

    def reloaded(self) -> None:
        """The host reloaded the files from disk: take its file set and check, from the
        disk's report when no open document differs from disk (right after a save), else
        from the live text."""
        self._discover()
        disk, report = self.disk.loaded, self.disk.report
        live_differs = report is None or len(disk) != len(self.files) or any(
            self._open_uri.get(str(p)) in self.texts
            and self.texts[self._open_uri[str(p)]] != f.text
            for p, f in zip(self.files, disk, strict=False)
        )
        if live_differs:
            self.check_now()
            return
        assert report is not None
        self.loaded = list(disk)
        self._checked(report)

    def add_listener(self, listener: ReportListener) -> Callable[[], None]:
        """Call ``listener(report)`` after every live check; returns a remover."""
        self._listeners.append(listener)

        def remove() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return remove

    # ---- diagnostics ----------------------------------------------------------------------

    def diagnostics(self, report: CheckReport | None = None) -> dict[str, list[types.Diagnostic]]:
        """Diagnostics by URI for every config file (empty lists included)."""
        report = report if report is not None else self.report
        codec = _codec(self.server)
        lines = {path_key(f.name): text_lines(f.text) for f in self.loaded}
        out: dict[str, list[types.Diagnostic]] = {self.uri_for(p): [] for p in self.files}
        if report is None:
            return out
        for problem in report.problems:
            uri = self.uri_for(problem.file)
            out.setdefault(uri, []).append(
                self._diagnostic(problem, lines.get(path_key(problem.file), []), lines, codec))
        return out

    def _diagnostic(self, p: Problem, file_lines: list[str], lines: dict[str, list[str]],
                    codec: PositionCodec) -> types.Diagnostic:
        related = [
            types.DiagnosticRelatedInformation(
                location=types.Location(
                    uri=self.uri_for(file),
                    range=span_to_range(lines.get(path_key(file), []), span, codec)),
                message=message)
            for file, span, message in p.related
        ]
        tags = [types.DiagnosticTag.Unnecessary] if p.code in UNNECESSARY_CODES else None
        return types.Diagnostic(
            range=span_to_range(file_lines, p.span, codec),
            message=p.message,
            severity=types.DiagnosticSeverity(int(p.severity)),
            code=p.code,
            source=SOURCE,
            related_information=related or None,
            tags=tags,
        )

    def publish(self, report: CheckReport | None = None) -> None:
        """Publish the diagnostics of every config file, in config order, and empty lists
        for files that had diagnostics and are no longer config files."""
        by_uri = self.diagnostics(report)
        stale = self._published - set(by_uri)
        self._published = {uri for uri, diags in by_uri.items() if diags}
        if self.server is None:
            return
        for uri, diags in by_uri.items():
            self._send(uri, diags)
        for uri in sorted(stale):
            self._send(uri, [])

    def _send(self, uri: str, diagnostics: list[types.Diagnostic]) -> None:
        assert self.server is not None
        version = self._versions.get(uri) if uri in self.texts else None
        self.server.text_document_publish_diagnostics(types.PublishDiagnosticsParams(
            uri=uri, diagnostics=diagnostics, version=version))

# --------------------------------------------------------------------------------------------
# Registration
# --------------------------------------------------------------------------------------------


def _chain(server: LanguageServer, method: str, handler: Callable[[Any], None]) -> None:
    """Register ``handler`` for a notification, after any handler already registered."""
    features = server.protocol.fm.features
    previous = features.get(method)
    if previous is None:
        server.feature(method)(handler)
        return

    async def chained(params: Any) -> None:
        result = previous(params)
        if inspect.isawaitable(result):
            await result
        handler(params)

    features[method] = chained


def register(server: LanguageServer, workspace: ConfigWorkspace) -> None:
    """Track config documents: ``didOpen``/``didChange``/``didClose`` (not ``didSave``).

    pygls keeps the document text itself (full or incremental sync); the handlers read it
    back from ``server.workspace`` after pygls applied the change.
    """

    def current(uri: str, fallback: str | None = None) -> str:
        try:
            return server.workspace.get_text_document(uri).source
        except Exception:  # pragma: no cover - pygls failing to apply a change
            logger.exception("cannot read document %s", uri)
            return fallback if fallback is not None else workspace.texts.get(uri, "")

    def did_open(params: types.DidOpenTextDocumentParams) -> None:
        doc = params.text_document
        if workspace.is_config_file(doc.uri):
            workspace.did_open(doc.uri, current(doc.uri, doc.text), doc.version)

    def did_change(params: types.DidChangeTextDocumentParams) -> None:
        doc = params.text_document
        if doc.uri in workspace.texts or workspace.is_config_file(doc.uri):
            workspace.did_change(doc.uri, current(doc.uri), doc.version)

    def did_close(params: types.DidCloseTextDocumentParams) -> None:
        workspace.did_close(params.text_document.uri)

    _chain(server, types.TEXT_DOCUMENT_DID_OPEN, did_open)
    _chain(server, types.TEXT_DOCUMENT_DID_CHANGE, did_change)
    _chain(server, types.TEXT_DOCUMENT_DID_CLOSE, did_close)
