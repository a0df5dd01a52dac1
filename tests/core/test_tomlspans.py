from __future__ import annotations

import tomllib

import pytest

from sidecar.core.config import parse_text
from sidecar.core.problems import Span
from sidecar.core.tomlspans import (
    MAX_NESTING,
    SpanIndex,
    nesting_too_deep,
    syntax_error_span,
    value_offset_to_span,
)

DOC = '''\
top = 1 # a comment
"quoted key" = 'literal'
dotted.key = "x\\"y{{ z }}"

[variables]
# comment line

root = "/app"
multi = """
first
{{ root }}/second"""
lit = \'\'\'{{ root }}\\n\'\'\'

[[command]]
name = "A"
triggers = [
  "one", # comment
  'two',
]
env = { A = "1", B = "{{ root }}" }

[[command]]
name = "B"  # trailing
command = "echo {{ root }}"

[on_save]
"src/*.py" = ["save"]
'''


@pytest.fixture()
def index() -> SpanIndex:
    tomllib.loads(DOC)  # the index is only built from valid TOML
    return SpanIndex(DOC)


def text_of(span: Span | None) -> str:
    assert span is not None
    lines = DOC.split("\n")
    if span.line == span.end_line:
        return lines[span.line][span.column : span.end_column]
    parts = [lines[span.line][span.column :]]
    parts += lines[span.line + 1 : span.end_line]
    parts.append(lines[span.end_line][: span.end_column])
    return "\n".join(parts)


def test_top_level_keys(index: SpanIndex) -> None:
    assert index.locate(("top",), "key") == Span(0, 0, 0, 3)
    assert index.locate(("top",), "value") == Span(0, 6, 0, 7)
    assert index.locate(("quoted key",), "key") == Span(1, 0, 1, 12)
    assert text_of(index.locate(("quoted key",), "value")) == "'literal'"


def test_dotted_key(index: SpanIndex) -> None:
    assert index.locate(("dotted", "key"), "key") == Span(2, 7, 2, 10)
    assert text_of(index.locate(("dotted", "key"), "value")) == '"x\\"y{{ z }}"'
    assert index.locate(("dotted",), "key") == Span(2, 0, 2, 6)


def test_table_keys_and_header(index: SpanIndex) -> None:
    assert index.locate(("variables",)) == Span(4, 0, 4, 11)
    assert index.locate(("variables", "root"), "key") == Span(7, 0, 7, 4)
    assert index.locate(("variables", "root"), "value") == Span(7, 7, 7, 13)


def test_multiline_string_value(index: SpanIndex) -> None:
    assert index.locate(("variables", "multi"), "value") == Span(8, 8, 10, 20)
    assert index.string_value(("variables", "multi")) == "first\n{{ root }}/second"


def test_array_of_tables_and_items(index: SpanIndex) -> None:
    assert index.locate(("command", 0)) == Span(13, 0, 13, 11)
    assert index.locate(("command", 1)) == Span(21, 0, 21, 11)
    assert index.locate(("command", 1, "name"), "value") == Span(22, 7, 22, 10)
    assert index.locate(("command", 0, "triggers"), "key") == Span(15, 0, 15, 8)
    assert index.locate(("command", 0, "triggers", 0), "value") == Span(16, 2, 16, 7)
    assert index.locate(("command", 0, "triggers", 1), "value") == Span(17, 2, 17, 7)


def test_inline_table(index: SpanIndex) -> None:
    assert index.locate(("command", 0, "env", "A"), "key") == Span(19, 8, 19, 9)
    assert index.locate(("command", 0, "env", "A"), "value") == Span(19, 12, 19, 15)
    assert text_of(index.locate(("command", 0, "env", "B"), "value")) == '"{{ root }}"'


def test_quoted_table_key(index: SpanIndex) -> None:
    assert index.locate(("on_save", "src/*.py"), "key") == Span(26, 0, 26, 10)
    assert index.locate(("on_save", "src/*.py", 0), "value") == Span(26, 14, 26, 20)


def test_fallback_to_ancestor(index: SpanIndex) -> None:
    assert index.locate(("command", 1, "timeout_secs"), "key") == Span(21, 0, 21, 11)
    assert index.locate(("command", 0, "env", "Z"), "key") == Span(19, 0, 19, 3)
    assert index.locate_exact(("command", 1, "timeout_secs")) is None
    assert index.locate(("nothing", "here")) is None


def test_value_offsets_plain_and_escaped(index: SpanIndex) -> None:
    # '{{ root }}' at decoded offsets 5..15 of 'echo {{ root }}'
    span = index.value_offset_to_span(("command", 1, "command"), 5, 15, "echo {{ root }}")
    assert span == Span(23, 16, 23, 26)
    assert text_of(span) == "{{ root }}"
    # decoded 'x"y{{ z }}': the escape \" shifts '{{ z }}' one column to the right
    span = value_offset_to_span(index, ("dotted", "key"), 3, 10, 'x"y{{ z }}')
    assert text_of(span) == "{{ z }}"
    assert span == Span(2, 18, 2, 25)
    # the escape itself maps to both source characters
    assert text_of(index.value_offset_to_span(("dotted", "key"), 1, 2)) == '\\"'


def test_value_offsets_in_multiline_and_literal(index: SpanIndex) -> None:
    span = index.value_offset_to_span(("variables", "multi"), 6, 16)
    assert span == Span(10, 0, 10, 10)
    # literal strings keep backslashes: '{{ root }}\n' has 12 characters
    assert index.string_value(("variables", "lit")) == "{{ root }}\\n"
    assert index.value_offset_to_span(("variables", "lit"), 0, 10) == Span(11, 9, 11, 19)


def test_value_offsets_fall_back_to_whole_value(index: SpanIndex) -> None:
    whole = index.locate(("command", 1, "command"), "value")
    assert index.value_offset_to_span(("command", 1, "command"), 0, 4, "different") == whole
    assert index.value_offset_to_span(("command", 1, "command"), 0, 999) == whole
    assert index.value_offset_to_span(("top",), 0, 1) == Span(0, 6, 0, 7)


def test_line_ending_backslash_and_unicode_escape() -> None:
    text = 'a = """x\\\n    {{ v }}"""\nb = "\\u00e9{{ w }}"\n'
    data = tomllib.loads(text)
    index = SpanIndex(text)
    assert index.string_value(("a",)) == data["a"] == "x{{ v }}"
    assert index.value_offset_to_span(("a",), 1, 8, data["a"]) == Span(1, 4, 1, 11)
    assert index.string_value(("b",)) == data["b"]
    assert index.value_offset_to_span(("b",), 1, 8, data["b"]) == Span(2, 11, 2, 18)


def test_crlf_and_nested_array_of_tables() -> None:
    text = "[[a]]\r\nx = 1\r\n[[a.b]]\r\ny = 2\r\n[[a]]\r\n[[a.b]]\r\ny = 3\r\n"
    tomllib.loads(text)
    index = SpanIndex(text)
    assert index.locate(("a", 0, "b", 0, "y"), "value") == Span(3, 4, 3, 5)
    assert index.locate(("a", 1, "b", 0, "y"), "value") == Span(6, 4, 6, 5)
    assert index.locate(("a", 1)) == Span(4, 0, 4, 5)


def test_tricky_strings_do_not_confuse_lexer() -> None:
    text = 'a = "# not a comment ]" # real\nb = """ "" ""\\"""" \nc = [ [1, 2], {} ]\nd = 3\n'
    data = tomllib.loads(text)
    index = SpanIndex(text)
    assert index.string_value(("a",)) == data["a"]
    assert index.string_value(("b",)) == data["b"]
    assert index.locate(("c", 0, 1), "value") == Span(2, 10, 2, 11)
    assert index.locate(("d",), "value") == Span(3, 4, 3, 5)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("x = 1\n[t]\ny = tru\n", Span(2, 4, 2, 7)),  # the bad token
        ("a = 1 2\n", Span(0, 6, 0, 7)),
        ("= 3\n", Span(0, 0, 0, 1)),
        ("[x\na=1\n", Span(0, 1, 0, 2)),  # column past the line: last character
        ("a = 1\nb = [1,\n  2\n\n", Span(2, 2, 2, 3)),  # end of document: last line
        ("", Span(0, 0, 0, 0)),
    ],
)
def test_syntax_error_span(text: str, expected: Span) -> None:
    if text:
        with pytest.raises(tomllib.TOMLDecodeError) as info:
            tomllib.loads(text)
        message = str(info.value)
    else:
        message = "Invalid value (at end of document)"
    assert syntax_error_span(text, message) == expected


def test_syntax_error_span_clamps_out_of_range_positions() -> None:
    assert syntax_error_span("a = 1\n", "bad (at line 9, column 40)") == Span(1, 0, 1, 0)
    assert syntax_error_span("abc", "bad (at line 1, column 40)") == Span(0, 2, 0, 3)


# ---- nesting depth ---------------------------------------------------------------------------


def _nested(levels: int, open_: str = "{ a = ", close: str = " }") -> str:
    return open_ * levels + "1" + close * levels


@pytest.mark.parametrize("levels", [MAX_NESTING + 1, 350, 500, 20000])
@pytest.mark.parametrize("kind", ["table", "array"])
def test_values_nested_too_deeply_are_a_problem_not_a_crash(levels: int, kind: str) -> None:
    value = _nested(levels) if kind == "table" else _nested(levels, "[", "]")
    text = f'top = 1\ndeep = {value}\nafter = "x"\n'
    loaded = parse_text(text, "f.toml", None)
    assert loaded.data is None
    problem = loaded.syntax_problem
    assert problem is not None and problem.code == "too-deep"
    assert "nested too deeply" in problem.message
    assert problem.span == Span(1, 7, 1, 7 + len(value))
    index = SpanIndex(text)  # keeps what it can, without recursing into the value
    assert index.locate_exact(("top",), "value") == Span(0, 6, 0, 7)
    assert index.locate_exact(("after",), "value") == Span(2, 8, 2, 11)


def test_nesting_at_the_limit_parses() -> None:
    text = f"deep = {_nested(MAX_NESTING)}\narr = {_nested(MAX_NESTING, '[', ']')}\n"
    loaded = parse_text(text, "f.toml", None)
    assert loaded.syntax_problem is None and loaded.data is not None
    assert SpanIndex(text).locate_exact(("deep",) + ("a",) * MAX_NESTING, "value") is not None


def test_nesting_ignores_brackets_in_strings_and_comments() -> None:
    many = "[" * 300 + "{" * 300
    text = (f'a = "{many}"\nb = \'{many}\'\n# {many}\nc = """\n{many}\n"""\n'
            f"d = \'\'\'{many}\'\'\'\ne = \"\\\"{many}\"\n[[t]]\n[x.y]\n")
    assert tomllib.loads(text)
    assert nesting_too_deep(text) is None
    assert parse_text(text, "f.toml", None).syntax_problem is None
    # a multi-line value: the span is the line of its outermost bracket
    deep = "x = [\n" + "[\n" * 150 + "]\n" * 151
    assert nesting_too_deep(deep) == Span(0, 4, 0, 5)
