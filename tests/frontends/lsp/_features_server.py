"""A tiny language server with only the config-document features, and the test session helper.

Run as a script it is the server: a pygls ``LanguageServer`` with a
:class:`~sidecar.frontends.lsp.documents.ConfigWorkspace` over a :class:`~sidecar.host.host.Host`
and the config features registered (the host reloads on save), and ``sidecar.run`` /
``sidecar.cancel`` commands so code lenses can be exercised.

Imported by the tests it provides :data:`SERVER_COMMAND` (the one place the launcher is
defined: switch it to ``[sys.executable, "-m", "sidecar", "serve"]`` for the real server) and
:func:`open_session`, which writes files into a root, starts the server, initializes it and
records every ``textDocument/publishDiagnostics`` with its version.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from lsprotocol import types

#: How the config-feature tests start a server. ``SIDECAR_TEST_SERVER=real`` runs them
#: against the real server instead of this module's.
SERVER_COMMAND: list[str] = (
    [sys.executable, "-m", "sidecar", "serve"] if os.environ.get("SIDECAR_TEST_SERVER") == "real"
    else [sys.executable, str(Path(__file__).resolve())]
)
WAIT_TIMEOUT = 10.0


# --------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------


def build_server() -> Any:
    from pygls.lsp.server import LanguageServer
    from pygls.uris import to_fs_path

    from sidecar.app.service import Service
    from sidecar.frontends.lsp import config_features, documents
    from sidecar.host.host import Host

    server = LanguageServer("sidecar-features-test", "0")
    host = Host(Path.cwd())

    @server.feature(types.INITIALIZE)
    def initialize(params: types.InitializeParams) -> None:
        root = Path.cwd()
        if params.root_uri:
            root = Path(to_fs_path(params.root_uri) or root)
        # Explicit config files, as the real server takes them: initializationOptions.
        options = params.initialization_options
        files = options.get("configFiles") if isinstance(options, dict) else None
        host.configure(root, files or None)
        workspace = documents.ConfigWorkspace(server, host.config_files)
        documents.register(server, workspace)
        features = config_features.register(server, workspace, Service(host))

        def reloaded(outcome: Any) -> None:
            workspace.reloaded()
            features.on_run_state_changed()

        host.on_reload(reloaded)
        server.sidecar_workspace = workspace  # type: ignore[attr-defined]

    @server.feature(types.INITIALIZED)
    def initialized(params: types.InitializedParams) -> None:
        host.reload()

    @server.feature(types.TEXT_DOCUMENT_DID_SAVE)
    def did_save(params: types.DidSaveTextDocumentParams) -> None:
        if server.sidecar_workspace.is_config_file(params.text_document.uri):  # type: ignore
            host.reload()

    @server.command("sidecar.run")
    async def run(*args: Any) -> Any:
        assert host.orchestrator is not None
        handle = await host.orchestrator.run_command(str(args[0]))
        return {"runId": handle.run_id}

    @server.command("sidecar.cancel")
    async def cancel(*args: Any) -> Any:
        assert host.orchestrator is not None
        arg = args[0]
        name = arg["command"] if isinstance(arg, dict) else getattr(arg, "command", arg)
        return {"cancelled": await host.orchestrator.cancel_command(str(name))}

    @server.feature(types.SHUTDOWN)
    async def shutdown(params: Any) -> None:
        await host.close(timeout=2)

    return server


# --------------------------------------------------------------------------------------------
# The test side
# --------------------------------------------------------------------------------------------


def client_capabilities(*, code_lens_refresh: bool = True) -> types.ClientCapabilities:
    """A capable editor: related information, diagnostic tags, hierarchical symbols,
    markdown hover, code lens refresh."""
    return types.ClientCapabilities(
        workspace=types.WorkspaceClientCapabilities(
            code_lens=types.CodeLensWorkspaceClientCapabilities(
                refresh_support=code_lens_refresh),
            workspace_folders=True,
        ),
        text_document=types.TextDocumentClientCapabilities(
            synchronization=types.TextDocumentSyncClientCapabilities(did_save=True),
            publish_diagnostics=types.PublishDiagnosticsClientCapabilities(
                related_information=True, version_support=True,
                tag_support=types.ClientDiagnosticsTagOptions(
                    value_set=[types.DiagnosticTag.Unnecessary, types.DiagnosticTag.Deprecated]),
            ),
            document_symbol=types.DocumentSymbolClientCapabilities(
                hierarchical_document_symbol_support=True),
            hover=types.HoverClientCapabilities(
                content_format=[types.MarkupKind.Markdown, types.MarkupKind.PlainText]),
            completion=types.CompletionClientCapabilities(
                completion_item=types.ClientCompletionItemOptions(snippet_support=False)),
            code_lens=types.CodeLensClientCapabilities(),
            definition=types.DefinitionClientCapabilities(link_support=False),
        ),
        general=types.GeneralClientCapabilities(
            position_encodings=[types.PositionEncodingKind.Utf16]),
    )


class Session:
    """A started, initialized client with helpers keyed by file name (relative to root)."""

    def __init__(self, client: Any, root: Path) -> None:
        self.client = client
        self.root = root
        self.published: list[types.PublishDiagnosticsParams] = []
        self.lens_refreshes = 0
        self._changed = asyncio.Event()
        self._versions: dict[str, int] = {}
        fm = client.protocol.fm
        original = fm.features[types.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS]

        def record(params: types.PublishDiagnosticsParams) -> None:
            original(params)
            self.published.append(params)
            self._changed.set()

        fm.features[types.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS] = record

        @client.feature(types.WORKSPACE_CODE_LENS_REFRESH)
        def lens_refresh(params: Any) -> None:
            self.lens_refreshes += 1
            self._changed.set()

    def uri(self, name: str) -> str:
        return (self.root / name).as_uri()

    def mark(self) -> int:
        return len(self.published)

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = WAIT_TIMEOUT) -> Any:
        """Wait (without polling sleeps) until ``predicate()`` is truthy; return its value."""

        async def loop() -> Any:
            while True:
                self._changed.clear()
                value = predicate()
                if value:
                    return value
                await self._changed.wait()

        return await asyncio.wait_for(loop(), timeout)

    async def diagnostics(self, name: str, *, since: int = 0, version: int | None = None,
                          after: tuple[str, int] | None = None) -> list[types.Diagnostic]:
        """The first diagnostics published for ``name`` after mark ``since`` (and for
        ``version`` when given).

        A file that is not open has no version to wait for, and the first diagnostics for
        it after a mark may come from a check that ran *before* the mark (its message was
        still on the way). ``after=(other, version)`` skips those: only diagnostics
        published after ``other``'s diagnostics for ``version`` count. The server checks
        all config files on every change and publishes them together, in config order, so
        for a file that comes after ``other`` in the config these are from that same check.
        """
        uri = self.uri(name)

        def find() -> list[types.Diagnostic] | None:
            start = since
            if after is not None:
                anchor = self.uri(after[0])
                for i in range(since, len(self.published)):
                    params = self.published[i]
                    if params.uri == anchor and params.version == after[1]:
                        start = i + 1
                        break
                else:
                    return None
            for params in self.published[start:]:
                if params.uri == uri and (version is None or params.version == version):
                    return list(params.diagnostics) or [None]  # type: ignore[list-item]
            return None

        found = await self.wait_for(find)
        return [d for d in found if d is not None]

    def open(self, name: str, text: str | None = None) -> int:
        """didOpen (text from disk unless given); returns the version."""
        if text is None:
            text = (self.root / name).read_text(encoding="utf-8")
        self._versions[name] = 1
        self.client.text_document_did_open(types.DidOpenTextDocumentParams(
            text_document=types.TextDocumentItem(
                uri=self.uri(name), language_id="toml", version=1, text=text)))
        return 1

    def change(self, name: str, text: str) -> int:
        """A full-text didChange; returns the new version."""
        version = self._versions.get(name, 1) + 1
        self._versions[name] = version
        self.client.text_document_did_change(types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=self.uri(name),
                                                                version=version),
            content_changes=[types.TextDocumentContentChangeWholeDocument(text=text)]))
        return version

    def edit(self, name: str, start: tuple[int, int], end: tuple[int, int], text: str) -> int:
        """An incremental didChange replacing ``[start, end)`` (line, UTF-16 character)."""
        version = self._versions.get(name, 1) + 1
        self._versions[name] = version
        self.client.text_document_did_change(types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=self.uri(name),
                                                                version=version),
            content_changes=[types.TextDocumentContentChangePartial(
                range=types.Range(start=types.Position(line=start[0], character=start[1]),
                                  end=types.Position(line=end[0], character=end[1])),
                text=text)]))
        return version

    def save(self, name: str, text: str) -> None:
        (self.root / name).write_text(text, encoding="utf-8")
        self.client.text_document_did_save(types.DidSaveTextDocumentParams(
            text_document=types.TextDocumentIdentifier(uri=self.uri(name))))

    def doc(self, name: str) -> types.TextDocumentIdentifier:
        return types.TextDocumentIdentifier(uri=self.uri(name))


@contextlib.asynccontextmanager
async def open_session(
    root: Path, files: dict[str, str], *,
    capabilities: types.ClientCapabilities | None = None,
    config_files: list[str] | None = None,
) -> AsyncIterator[Session]:
    """Write ``files`` into ``root``, start the server and initialize it with ``root`` as the
    workspace; ``config_files`` (relative to root, merged in order) instead of discovery."""
    from pytest_lsp import ClientServerConfig

    root = root.resolve()
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")
    client = await ClientServerConfig(server_command=SERVER_COMMAND).start()
    session = Session(client, root)
    try:
        await client.initialize_session(types.InitializeParams(
            capabilities=capabilities or client_capabilities(),
            root_uri=root.as_uri(),
            workspace_folders=[types.WorkspaceFolder(uri=root.as_uri(), name=root.name)],
            initialization_options={"configFiles": config_files} if config_files else None,
        ))
        yield session
        await asyncio.wait_for(client.shutdown_session(), WAIT_TIMEOUT)
    finally:
        process = getattr(client, "_server", None)
        if process is not None and process.returncode is None:
            # A failed test did not shut the server down: pytest-lsp's stop() would wait
            # for it forever.
            with contextlib.suppress(ProcessLookupError):
                process.kill()
        await client.stop()


if __name__ == "__main__":
    build_server().start_io()
