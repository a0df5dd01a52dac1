"""Config-document features end to end over LSP: document symbols, code lenses (with a real
orchestrator and codeLens/refresh), hover, completion, go to definition."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from _features_server import Session, open_session
from lsprotocol import types

pytestmark = pytest.mark.timeout(30)

FEAT = """\
[variables]
root = "src"
path = "{{ root }}/app"

[on_save]
"*.py" = "changed"

[output_storage]
directory = "out"

[[command]]
name = "Lint"
command = "ruff {{ path }}"
triggers = ["changed"]

[[command]]
name = "Test"
command = "pytest {{ path }} {{ flags }}"
triggers = ["command_success:Lint"]
cancel_on_triggers = ["command_started:Lint"]
vars = { flags = "-x", path = "tests" }

[[command]]
name = "Report"
command = "echo done"
triggers = ["command_*:Test"]
"""

RUNNABLE = """\
[[command]]
name = "Ok"
command = "true"

[[command]]
name = "Bad"
command = "false"

[[command]]
name = "Slow"
command = "sleep 30"
"""


def pos(line: int, character: int) -> types.Position:
    return types.Position(line=line, character=character)


def rng(line: int, start: int, end: int, end_line: int | None = None) -> types.Range:
    return types.Range(start=pos(line, start),
                       end=pos(line if end_line is None else end_line, end))


@pytest.fixture
def files() -> dict[str, str]:
    return {"sidecar.toml": FEAT}


@pytest.fixture
async def session(tmp_path: Path, files: dict[str, str]):
    async with open_session(tmp_path, files) as s:
        mark = s.mark()
        version = s.open("sidecar.toml")
        await s.diagnostics("sidecar.toml", since=mark, version=version)
        yield s


async def change(s: Session, text: str) -> None:
    mark = s.mark()
    version = s.change("sidecar.toml", text)
    await s.diagnostics("sidecar.toml", since=mark, version=version)


async def hover(s: Session, line: int, character: int) -> types.Hover | None:
    return await s.client.text_document_hover_async(types.HoverParams(
        text_document=s.doc("sidecar.toml"), position=pos(line, character)))


async def definition(s: Session, line: int, character: int, name: str = "sidecar.toml"
                     ) -> list[types.Location]:
    result = await s.client.text_document_definition_async(types.DefinitionParams(
        text_document=s.doc(name), position=pos(line, character)))
    if result is None:
        return []
    return list(result) if isinstance(result, (list, tuple)) else [result]


async def complete(s: Session, line: int, character: int) -> list[types.CompletionItem]:
    result = await s.client.text_document_completion_async(types.CompletionParams(
        text_document=s.doc("sidecar.toml"), position=pos(line, character)))
    if result is None:
        return []
    return list(result.items if isinstance(result, types.CompletionList) else result)


async def lenses(s: Session) -> list[types.CodeLens]:
    return list(await s.client.text_document_code_lens_async(types.CodeLensParams(
        text_document=s.doc("sidecar.toml"))) or [])


def hover_text(h: types.Hover | None) -> str:
    assert h is not None
    assert isinstance(h.contents, types.MarkupContent)
    assert h.contents.kind == types.MarkupKind.Markdown
    return h.contents.value


# --------------------------------------------------------------------------------------------
# Document symbols
# --------------------------------------------------------------------------------------------


async def test_document_symbols(session: Session) -> None:
    result = await session.client.text_document_document_symbol_async(
        types.DocumentSymbolParams(text_document=session.doc("sidecar.toml")))
    assert result is not None
    symbols: list[Any] = list(result)
    assert [(s.name, s.kind) for s in symbols] == [
        ("variables", types.SymbolKind.Namespace),
        ("on_save", types.SymbolKind.Object),
        ("output_storage", types.SymbolKind.Struct),
        ("Lint", types.SymbolKind.Function),
        ("Test", types.SymbolKind.Function),
        ("Report", types.SymbolKind.Function),
    ]
    variables, _, _, lint, test, report = symbols
    assert [(c.name, c.kind, c.detail) for c in variables.children] == [
        ("root", types.SymbolKind.Variable, "src"),
        ("path", types.SymbolKind.Variable, "{{ root }}/app"),
    ]
    assert variables.children[1].selection_range == rng(2, 0, 4)
    # A command spans its table; its name line is the selection.
    assert lint.range == rng(10, 0, 22, end_line=13)
    assert lint.selection_range == rng(11, 0, 13)
    assert lint.detail == "ruff {{ path }}"
    assert [(c.name, c.kind) for c in lint.children] == [("changed", types.SymbolKind.Event)]
    assert [(c.name, c.kind, c.detail) for c in test.children] == [
        ("command_success:Lint", types.SymbolKind.Event, "trigger"),
        ("command_started:Lint", types.SymbolKind.Event, "cancel on trigger"),
        ("flags", types.SymbolKind.Variable, "-x"),
        ("path", types.SymbolKind.Variable, "tests"),
    ]
    assert test.children[0].range == rng(18, 12, 34)
    assert report.range == rng(22, 0, 29, end_line=25)


async def test_document_symbols_while_the_toml_is_broken(session: Session) -> None:
    await change(session, FEAT.replace('name = "Test"', 'name = "Test'))
    result = await session.client.text_document_document_symbol_async(
        types.DocumentSymbolParams(text_document=session.doc("sidecar.toml")))
    assert result is not None
    names = [s.name for s in result]
    assert names == ["variables", "on_save", "output_storage", "Lint", "[[command]] #2",
                     "Report"]


# --------------------------------------------------------------------------------------------
# Code lenses
# --------------------------------------------------------------------------------------------


async def test_run_lenses_without_orchestrator_state(session: Session) -> None:
    found = await lenses(session)
    assert [(lens.range, lens.command.title if lens.command else None,
             lens.command.command if lens.command else None,
             list(lens.command.arguments or []) if lens.command else None)
            for lens in found] == [
        (rng(10, 0, 11), "▶ Run", "sidecar.run", ["Lint"]),
        (rng(15, 0, 11), "▶ Run", "sidecar.run", ["Test"]),
        (rng(22, 0, 11), "▶ Run", "sidecar.run", ["Report"]),
    ]


async def lens_titles(s: Session) -> dict[str, list[str]]:
    """Lens titles by the command name of their ▶ Run lens."""
    out: dict[str, list[str]] = {}
    by_line: dict[int, str] = {}
    found = await lenses(s)
    for lens in found:
        if lens.command and lens.command.command == "sidecar.run":
            by_line[lens.range.start.line] = str(lens.command.arguments[0])  # type: ignore
    for lens in found:
        assert lens.command is not None
        out.setdefault(by_line[lens.range.start.line], []).append(lens.command.title)
    return out


async def lenses_until(s: Session, check: Any) -> dict[str, list[str]]:
    """Re-request lenses after each workspace/codeLens/refresh until ``check`` passes."""
    while True:
        seen = s.lens_refreshes
        titles = await lens_titles(s)
        if check(titles):
            return titles
        await s.wait_for(lambda seen=seen: s.lens_refreshes > seen)


async def execute(s: Session, command: str, *arguments: Any) -> Any:
    return await s.client.workspace_execute_command_async(types.ExecuteCommandParams(
        command=command, arguments=list(arguments)))


async def test_lenses_show_run_results_and_refresh(tmp_path: Path) -> None:
    async with open_session(tmp_path, {"sidecar.toml": RUNNABLE}) as s:
        s.open("sidecar.toml")
        assert await lens_titles(s) == {"Ok": ["▶ Run"], "Bad": ["▶ Run"], "Slow": ["▶ Run"]}

        await execute(s, "sidecar.run", "Ok")
        titles = await lenses_until(s, lambda t: len(t["Ok"]) == 2)
        assert titles["Ok"][0] == "▶ Run"
        assert re.fullmatch(r"✓ success in \d+(ms|\.\ds)", titles["Ok"][1])

        await execute(s, "sidecar.run", "Bad")
        titles = await lenses_until(s, lambda t: len(t["Bad"]) == 2)
        assert re.fullmatch(r"✗ failed in \d+(ms|\.\ds) \(exit 1\)", titles["Bad"][1])

        await execute(s, "sidecar.run", "Slow")
        titles = await lenses_until(s, lambda t: "■ Cancel" in t["Slow"])
        assert titles["Slow"][:3] == ["▶ Run", "■ Cancel", "⟳ running"]
        cancel = [lens for lens in await lenses(s)
                  if lens.command and lens.command.title == "■ Cancel"]
        assert cancel[0].command is not None
        assert cancel[0].command.command == "sidecar.cancel"
        assert list(cancel[0].command.arguments or []) == [{"command": "Slow"}]

        await execute(s, "sidecar.cancel", {"command": "Slow"})
        titles = await lenses_until(s, lambda t: "■ Cancel" not in t["Slow"])
        assert len(titles["Slow"]) == 2
        assert re.fullmatch(r"⊘ cancelled in \d+(ms|\.\ds)", titles["Slow"][1])
        # The other results are still shown.
        assert titles["Ok"][1].startswith("✓ success")


# --------------------------------------------------------------------------------------------
# Hover
# --------------------------------------------------------------------------------------------


async def test_hover_variable_shows_resolved_value_and_definition(session: Session) -> None:
    h = await hover(session, 12, 20)  # {{ path }} in Lint's command
    assert h is not None
    assert h.range == rng(12, 16, 26)
    text = hover_text(h)
    assert "**`path`** = `src/app`" in text
    assert "Defined in [variables] at sidecar.toml:3" in text
    assert "`{{ root }}/app`" in text


async def test_hover_variable_uses_the_command_vars(session: Session) -> None:
    text = hover_text(await hover(session, 17, 20))  # {{ path }} in Test's command
    assert "**`path`** = `tests`" in text
    assert "Defined in the command's vars at sidecar.toml:21" in text
    assert "Overrides [variables] at sidecar.toml:3" in text


async def test_hover_undefined_and_cyclic_variables(session: Session) -> None:
    await change(session, FEAT.replace('"echo done"', '"echo {{ nope }}"'))
    assert "**`nope`** is not defined" in hover_text(await hover(session, 24, 20))
    await change(session, FEAT.replace('root = "src"', 'root = "{{ path }}"'))
    text = hover_text(await hover(session, 12, 20))
    assert "cannot resolve" in text and "cycle" in text.lower()


async def test_hover_trigger_shows_emitter_and_listeners(session: Session) -> None:
    h = await hover(session, 18, 20)  # "command_success:Lint"
    assert h is not None
    assert h.range == rng(18, 12, 34)
    text = hover_text(h)
    assert "**Lint** on success" in text
    assert "Starts: **Test**" in text

    text = hover_text(await hover(session, 19, 30))  # cancel_on_triggers "command_started:Lint"
    assert "**Lint** when it starts" in text
    assert "Cancels: **Test**" in text


async def test_hover_wildcard_and_on_save_triggers(session: Session) -> None:
    text = hover_text(await hover(session, 25, 15))  # "command_*:Test"
    for kind in ("when it starts", "on success", "on failure", "when cancelled"):
        assert f"**Test** {kind}" in text
    assert "Starts: **Report**" in text

    text = hover_text(await hover(session, 5, 12))  # on_save "changed"
    assert "saving files matching `*.py`" in text
    assert "Starts: **Lint**" in text


async def test_hover_unemitted_trigger(session: Session) -> None:
    await change(session, FEAT.replace('["changed"]', '["deploy"]'))
    text = hover_text(await hover(session, 13, 15))
    assert "No command emits it" in text
    assert "Starts: **Lint**" in text


async def test_no_hover_elsewhere(session: Session) -> None:
    assert await hover(session, 11, 2) is None


# --------------------------------------------------------------------------------------------
# Completion
# --------------------------------------------------------------------------------------------


async def test_complete_variables_inside_template(session: Session) -> None:
    await change(session, FEAT.replace('"echo done"', '"echo {{ ro"'))
    items = await complete(session, 24, 21)
    assert [i.label for i in items] == ["path", "root"]
    root = items[1]
    assert root.kind == types.CompletionItemKind.Variable
    assert root.detail == "src"
    assert root.text_edit == types.TextEdit(range=rng(24, 19, 21), new_text="root }}")


async def test_complete_variables_includes_command_vars(session: Session) -> None:
    await change(session, FEAT.replace('"pytest {{ path }} {{ flags }}"',
                                       '"pytest {{ path }} {{  }}"'))
    items = await complete(session, 17, 32)
    assert [i.label for i in items] == ["flags", "path", "root"]
    assert items[1].detail == "tests"
    assert items[0].text_edit is not None
    assert items[0].text_edit.new_text == "flags"  # "}}" is already there


async def test_complete_triggers_in_triggers_array(session: Session) -> None:
    await change(session, FEAT.replace('triggers = ["command_*:Test"]',
                                       'triggers = ["command_s'))
    items = await complete(session, 25, 22)
    labels = [i.label for i in items]
    for name in ("Lint", "Test", "Report"):
        for kind in ("started", "success", "failed", "cancelled"):
            assert f"command_{kind}:{name}" in labels
    assert "orchestrator_started" in labels and "orchestrator_shutdown" in labels
    assert "changed" in labels  # on_save trigger and used elsewhere
    assert len(labels) == len(set(labels))
    success = items[labels.index("command_success:Lint")]
    assert success.kind == types.CompletionItemKind.Event
    assert success.detail == "Lint on success"
    assert success.text_edit == types.TextEdit(range=rng(25, 13, 22),
                                               new_text="command_success:Lint")


async def test_complete_triggers_outside_quotes_and_multiline(session: Session) -> None:
    await change(session, FEAT.replace('cancel_on_triggers = ["command_started:Lint"]',
                                       'cancel_on_triggers = ["changed", '))
    items = await complete(session, 19, 33)
    assert items
    assert all(i.text_edit is not None and i.text_edit.new_text == f'"{i.label}"'
               for i in items)

    await change(session, FEAT.replace('triggers = ["command_*:Test"]',
                                       'triggers = [\n  "changed",\n  "'))
    items = await complete(session, 27, 3)
    assert "command_failed:Test" in [i.label for i in items]


async def test_complete_keys_in_command_table(session: Session) -> None:
    await change(session, FEAT.replace('triggers = ["command_*:Test"]', "ti"))
    items = await complete(session, 25, 2)
    labels = [i.label for i in items]
    assert "triggers" in labels and "timeout_secs" in labels and "cancel_on_triggers" in labels
    assert "name" not in labels and "command" not in labels  # already present
    item = items[labels.index("timeout_secs")]
    assert item.kind == types.CompletionItemKind.Property
    assert item.detail == "integer"
    assert item.text_edit == types.TextEdit(range=rng(25, 0, 2), new_text="timeout_secs = ")


async def test_complete_keys_in_output_storage(session: Session) -> None:
    await change(session, FEAT.replace('directory = "out"', 'directory = "out"\nk'))
    items = await complete(session, 9, 1)
    assert [i.label for i in items] == ["keep_history", "output_extension"]


async def test_complete_on_save_trigger(session: Session) -> None:
    await change(session, FEAT.replace('"*.py" = "changed"', '"*.py" = "ch'))
    items = await complete(session, 5, 12)
    assert "command_success:Test" in [i.label for i in items]
    assert items[0].text_edit is not None
    assert items[0].text_edit.range == rng(5, 10, 12)


async def test_no_completion_in_plain_values(session: Session) -> None:
    assert await complete(session, 12, 12) == []


# --------------------------------------------------------------------------------------------
# Definition
# --------------------------------------------------------------------------------------------


async def test_definition_of_auto_event_goes_to_the_command(session: Session) -> None:
    (loc,) = await definition(session, 18, 20)  # "command_success:Lint"
    assert loc.uri == session.uri("sidecar.toml")
    assert loc.range == rng(11, 0, 13)  # name = "Lint"
    (loc,) = await definition(session, 25, 15)  # "command_*:Test"
    assert loc.range == rng(16, 0, 13)


async def test_definition_of_variable(session: Session) -> None:
    (loc,) = await definition(session, 12, 20)  # {{ path }} in Lint → [variables]
    assert loc.range == rng(2, 0, 23)
    (loc,) = await definition(session, 17, 20)  # {{ path }} in Test → its vars
    assert loc.range == rng(20, 23, 37)
    (loc,) = await definition(session, 2, 12)  # {{ root }} inside a variable
    assert loc.range == rng(1, 0, 12)


async def test_definition_of_on_save_trigger_and_nothing(session: Session) -> None:
    (loc,) = await definition(session, 13, 15)  # "changed" → the on_save entry
    assert loc.range == rng(5, 9, 18)
    assert await definition(session, 11, 2) == []


async def test_definition_across_files(tmp_path: Path) -> None:
    root = tmp_path.resolve()
    files = {"a.toml": FEAT,
             "b.toml": '[[command]]\nname = "Deploy"\ncommand = "echo {{ root }}"\n'
                       'triggers = ["command_success:Report"]\n'}
    async with open_session(root, files, config_files=["a.toml", "b.toml"]) as s:
        mark = s.mark()
        version = s.open("b.toml")
        assert await s.diagnostics("b.toml", since=mark, version=version) == []
        (loc,) = await definition(s, 3, 20, "b.toml")
        assert loc.uri == s.uri("a.toml")
        assert loc.range == rng(23, 0, 15)  # name = "Report"
        (loc,) = await definition(s, 2, 20, "b.toml")
        assert loc.uri == s.uri("a.toml")
        assert loc.range == rng(1, 0, 12)


async def test_features_ignore_other_documents(session: Session, tmp_path: Path) -> None:
    (tmp_path / "other.toml").write_text(FEAT)
    session.open("other.toml")
    result = await session.client.text_document_document_symbol_async(
        types.DocumentSymbolParams(text_document=session.doc("other.toml")))
    assert result is None
