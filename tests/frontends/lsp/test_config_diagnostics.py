"""Diagnostics of config documents, end to end over LSP: exact ranges from unsaved text,
clearing when fixed, cross-file problems, full and incremental sync, UTF-16 positions."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from _features_server import Session, open_session
from lsprotocol import types

pytestmark = pytest.mark.timeout(30)

CLEAN = """\
[variables]
src = "src"

[on_save]
"*.py" = "changed"

[[command]]
name = "Lint"
command = "ruff check {{ src }}"
triggers = ["changed"]

[[command]]
name = "Test"
command = "pytest"
triggers = ["command_success:Lint"]
"""

DEPLOY = """\
[[command]]
name = "Deploy"
command = "echo deploy"
triggers = ["command_success:Test"]
"""


def rng(line: int, start: int, end: int, end_line: int | None = None) -> types.Range:
    return types.Range(start=types.Position(line=line, character=start),
                       end=types.Position(line=line if end_line is None else end_line,
                                          character=end))


def summary(diags: list[types.Diagnostic]) -> list[tuple[str, types.Range, int]]:
    return [(str(d.code), d.range, int(d.severity or 0)) for d in diags]


@pytest.fixture
def files() -> dict[str, str]:
    return {"sidecar.toml": CLEAN}


@pytest.fixture
async def session(tmp_path: Path, files: dict[str, str]):
    async with open_session(tmp_path, files) as s:
        yield s


async def open_clean(s: Session) -> int:
    mark = s.mark()
    version = s.open("sidecar.toml")
    assert await s.diagnostics("sidecar.toml", since=mark, version=version) == []
    return version


async def change(s: Session, text: str, name: str = "sidecar.toml") -> list[types.Diagnostic]:
    mark = s.mark()
    version = s.change(name, text)
    return await s.diagnostics(name, since=mark, version=version)


async def test_diagnostics_published_on_initialize_for_unopened_files(session: Session) -> None:
    # The clean file has no problem: an empty list is still published for it.
    assert await session.diagnostics("sidecar.toml") == []


async def test_syntax_error_range_and_clearing(session: Session) -> None:
    await open_clean(session)
    diags = await change(session, CLEAN.replace('name = "Lint"', 'name = "Lint'))
    assert summary(diags) == [("toml-syntax", rng(7, 11, 12), 1)]
    (d,) = diags
    assert d.source == "sidecar"
    assert "Illegal character" in d.message
    assert await change(session, CLEAN) == []


async def test_unclosed_array_is_a_syntax_error(session: Session) -> None:
    await open_clean(session)
    diags = await change(session, CLEAN.replace('["changed"]', '["changed"'))
    assert summary(diags) == [("toml-syntax", rng(11, 0, 1), 1)]
    assert "Unclosed array" in diags[0].message


async def test_unknown_key_range(session: Session) -> None:
    await open_clean(session)
    diags = await change(session, CLEAN.replace('command = "pytest"',
                                                'command = "pytest"\ncolour = "red"'))
    assert summary(diags) == [("unknown-key", rng(14, 0, 6), 1)]
    assert "colour" in diags[0].message


async def test_wrong_type_range_is_the_value(session: Session) -> None:
    await open_clean(session)
    diags = await change(session, CLEAN.replace('command = "pytest"',
                                                'command = "pytest"\nmax_concurrent = "two"'))
    assert summary(diags) == [("wrong-type", rng(14, 17, 22), 1)]
    assert "max_concurrent" in diags[0].message


async def test_undefined_variable_range_inside_the_string(session: Session) -> None:
    await open_clean(session)
    diags = await change(session, CLEAN.replace("{{ src }}", "{{ src }} {{ nope }}"))
    assert summary(diags) == [("undefined-variable", rng(8, 32, 42), 2)]
    assert "'nope'" in diags[0].message
    assert await change(session, CLEAN) == []


async def test_unterminated_template_range(session: Session) -> None:
    await open_clean(session)
    diags = await change(session, CLEAN.replace("{{ src }}", "{{ src }} {{ src"))
    assert summary(diags) == [("unterminated-template", rng(8, 32, 34), 1)]


async def test_positions_are_utf16(session: Session) -> None:
    await open_clean(session)
    # U+1F600 is one code point but two UTF-16 code units: columns after it shift by one.
    diags = await change(session, CLEAN.replace('"ruff check {{ src }}"',
                                                '"echo \U0001F600 {{ nope }}"'))
    assert summary(diags) == [("undefined-variable", rng(8, 19, 29), 2)]


async def test_variable_cycle_on_each_variable(session: Session) -> None:
    await open_clean(session)
    diags = await change(session, CLEAN.replace(
        'src = "src"', 'src = "{{ base }}/src"\nbase = "{{ src }}/.."'))
    assert summary(diags) == [
        ("variable-cycle", rng(1, 7, 17), 1),
        ("variable-cycle", rng(2, 8, 17), 1),
    ]
    assert all(d.message == "Variable cycle: src -> base -> src" for d in diags)


async def test_trigger_cycle_on_every_command_with_the_path(session: Session) -> None:
    await open_clean(session)
    text = CLEAN.replace('triggers = ["changed"]',
                         'triggers = ["changed", "command_failed:Test"]')
    diags = await change(session, text)
    assert summary(diags) == [
        ("trigger-cycle", rng(9, 23, 44), 2),  # Lint's trigger on Test
        ("trigger-cycle", rng(14, 12, 34), 2),  # Test's trigger on Lint
    ]
    path = "Lint -> command_success:Lint -> Test -> command_failed:Test -> Lint"
    assert all(path in d.message for d in diags)
    # loop_detection = false makes the cycle endless: an error.
    diags = await change(session, text.replace('command = "pytest"',
                                               'command = "pytest"\nloop_detection = false'))
    assert [d.severity for d in diags] == [types.DiagnosticSeverity.Error] * 2
    assert all("Test has loop_detection = false" in d.message for d in diags)


async def test_three_command_trigger_cycle(session: Session) -> None:
    await open_clean(session)
    text = CLEAN.replace('triggers = ["changed"]',
                         'triggers = ["changed", "command_success:Deploy"]') + (
        '\n[[command]]\nname = "Deploy"\ncommand = "echo"\n'
        'triggers = ["command_success:Test"]\n')
    diags = await change(session, text)
    assert summary(diags) == [
        ("trigger-cycle", rng(9, 23, 47), 2),
        ("trigger-cycle", rng(14, 12, 34), 2),
        ("trigger-cycle", rng(19, 12, 34), 2),
    ]
    path = ("Lint -> command_success:Lint -> Test -> command_success:Test -> Deploy -> "
            "command_success:Deploy -> Lint")
    assert all(path in d.message for d in diags)


async def test_unknown_command_suggests_a_close_name(session: Session) -> None:
    await open_clean(session)
    diags = await change(session, CLEAN.replace("command_success:Lint", "command_success:Lnt"))
    assert summary(diags) == [("unknown-command", rng(14, 12, 33), 1)]
    assert diags[0].message == ("'command_success:Lnt' names unknown command 'Lnt'; "
                                "did you mean 'Lint'?")


async def test_unemitted_trigger_is_an_unnecessary_hint(session: Session) -> None:
    await open_clean(session)
    diags = await change(session, CLEAN.replace('["changed"]', '["changed", "deploy"]'))
    assert summary(diags) == [("unemitted-trigger", rng(9, 23, 31), 4)]
    assert list(diags[0].tags or []) == [types.DiagnosticTag.Unnecessary]
    assert "deploy" in diags[0].message


async def test_incremental_changes(session: Session) -> None:
    await open_clean(session)
    # Insert an unknown key at the start of line 13 (`command = "pytest"`), then delete it.
    mark = session.mark()
    version = session.edit("sidecar.toml", (13, 0), (13, 0), "colr = 1\n")
    diags = await session.diagnostics("sidecar.toml", since=mark, version=version)
    assert summary(diags) == [("unknown-key", rng(13, 0, 4), 1)]
    mark = session.mark()
    version = session.edit("sidecar.toml", (13, 0), (14, 0), "")
    assert await session.diagnostics("sidecar.toml", since=mark, version=version) == []


async def test_close_reverts_to_the_file_on_disk(session: Session) -> None:
    await open_clean(session)
    diags = await change(session, CLEAN.replace("{{ src }}", "{{ nope }}"))
    assert [d.code for d in diags] == ["undefined-variable"]
    mark = session.mark()
    session.client.text_document_did_close(types.DidCloseTextDocumentParams(
        text_document=session.doc("sidecar.toml")))
    assert await session.diagnostics("sidecar.toml", since=mark) == []


async def test_diagnostics_follow_unsaved_text_not_disk(session: Session, tmp_path: Path
                                                        ) -> None:
    # The file on disk is broken; the editor's unsaved text is clean and wins.
    (tmp_path / "sidecar.toml").write_text(CLEAN.replace("{{ src }}", "{{ nope }}"))
    mark = session.mark()
    version = session.open("sidecar.toml", CLEAN)
    assert await session.diagnostics("sidecar.toml", since=mark, version=version) == []


async def test_duplicate_command_across_two_files(tmp_path: Path) -> None:
    root = tmp_path.resolve()
    files = {"a.toml": CLEAN, "b.toml": DEPLOY}
    async with open_session(root, files, config_files=["a.toml", "b.toml"]) as s:
        # b.toml is not open: its diagnostics have no version. Those of a check are the
        # ones published after a.toml's of the same check (an earlier, empty list for
        # b.toml may still arrive after a mark).
        mark = s.mark()
        version = s.open("a.toml")
        assert await s.diagnostics("a.toml", since=mark, version=version) == []
        assert await s.diagnostics("b.toml", since=mark, after=("a.toml", version)) == []

        # Unsaved: a.toml gets its own Deploy; b.toml (not open) now repeats the name.
        mark = s.mark()
        version = s.change("a.toml", CLEAN + (
            '\n[[command]]\nname = "Deploy"\ncommand = "echo"\ntriggers = ["changed"]\n'))
        assert await s.diagnostics("a.toml", since=mark, version=version) == []
        diags = await s.diagnostics("b.toml", since=mark, after=("a.toml", version))
        assert summary(diags) == [("duplicate-command", rng(1, 7, 15), 1)]
        (d,) = diags
        assert "first defined in a.toml" in d.message
        assert d.related_information is not None
        (related,) = d.related_information
        assert related.location.uri == s.uri("a.toml")
        assert related.location.range == rng(17, 7, 15)

        # Fixing a.toml clears b.toml.
        mark = s.mark()
        version = s.change("a.toml", CLEAN)
        assert await s.diagnostics("a.toml", since=mark, version=version) == []
        assert await s.diagnostics("b.toml", since=mark, after=("a.toml", version)) == []


async def test_session_skips_stale_diagnostics_of_an_unopened_file(tmp_path: Path) -> None:
    """The race behind a once-flaky test, replayed deterministically: b.toml's empty list from
    the check of a.toml version 1 arrives after the mark taken for version 2."""
    publish = types.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS
    client: Any = SimpleNamespace(
        protocol=SimpleNamespace(fm=SimpleNamespace(features={publish: lambda params: None})),
        feature=lambda method: lambda fn: fn)
    s = Session(client, tmp_path)
    deliver = client.protocol.fm.features[publish]

    def publish_diags(name: str, version: int | None, codes: list[str]) -> None:
        deliver(types.PublishDiagnosticsParams(uri=s.uri(name), version=version, diagnostics=[
            types.Diagnostic(range=rng(0, 0, 1), message=code, code=code) for code in codes]))

    publish_diags("a.toml", 1, [])
    mark = s.mark()  # the test has seen a.toml version 1 and sends version 2
    publish_diags("b.toml", None, [])  # still from the check of version 1
    publish_diags("a.toml", 2, [])
    publish_diags("b.toml", None, ["duplicate-command"])
    diags = await s.diagnostics("b.toml", since=mark, after=("a.toml", 2))
    assert [d.code for d in diags] == ["duplicate-command"]
    # Without the anchor, the stale list would have been taken.
    assert await s.diagnostics("b.toml", since=mark) == []


async def test_variable_override_across_files_is_a_warning(tmp_path: Path) -> None:
    root = tmp_path.resolve()
    files = {"a.toml": CLEAN, "b.toml": '[variables]\nsrc = "lib"\n'}
    async with open_session(root, files, config_files=["a.toml", "b.toml"]) as s:
        diags = await s.diagnostics("b.toml")
        assert summary(diags) == [("variable-override", rng(1, 0, 3), 2)]
        assert diags[0].related_information is not None
        assert diags[0].related_information[0].location.range == rng(1, 0, 3)
        assert diags[0].related_information[0].location.uri == s.uri("a.toml")


async def test_new_config_file_not_on_disk_yet(tmp_path: Path) -> None:
    async with open_session(tmp_path, {}) as s:
        mark = s.mark()
        version = s.open("sidecar.toml", '[[command]]\nname = "X"\n')
        diags = await s.diagnostics("sidecar.toml", since=mark, version=version)
        assert summary(diags) == [
            ("missing-key", rng(0, 0, 11), 1),
            ("untriggered-command", rng(1, 7, 10), 4),
        ]
        assert "missing required key 'command'" in diags[0].message


async def test_other_toml_files_are_ignored(session: Session) -> None:
    await open_clean(session)
    mark = session.mark()
    session.open("pyproject.toml", "[project\n")
    # A config-file change after it proves the server processed the didOpen in order.
    version = session.change("sidecar.toml", CLEAN)
    await session.diagnostics("sidecar.toml", since=mark, version=version)
    assert all(p.uri != session.uri("pyproject.toml") for p in session.published)
