"""Source positions for TOML: where a syntax error is, and where a key or value lives.

:func:`syntax_error_span` turns a :class:`tomllib.TOMLDecodeError` message into a span.
:class:`SpanIndex` is a small hand-written lexer over *valid* TOML (tomllib has already parsed
it) that remembers the span of every key, value, array item and table header by *key path*
(``("command", 2, "triggers", 1)``), the same paths :func:`sidecar.core.config.validate_data`
reports. Columns count Python characters (code points).
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from .problems import KeyPath, Span

Part = Literal["key", "value"]

_POSITION = re.compile(r"\(at line (\d+), column (\d+)\)\s*$")
_END_OF_DOCUMENT = "(at end of document)"
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_TOKEN_STOP = set(" \t\r\n,[]{}=#")
_SIMPLE_ESCAPES = {"b": "\b", "t": "\t", "n": "\n", "f": "\f", "r": "\r", '"': '"',
                   "\\": "\\", "e": "\x1b"}


class _LineMap:
    """Offset ↔ (line, column) conversion."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.starts = [0]
        for i, ch in enumerate(text):
            if ch == "\n":
                self.starts.append(i + 1)

    def position(self, offset: int) -> tuple[int, int]:
        offset = max(0, min(offset, len(self.text)))
        line = bisect.bisect_right(self.starts, offset) - 1
        return line, offset - self.starts[line]

    def span(self, start: int, end: int) -> Span:
        end = max(end, start)
        line, col = self.position(start)
        end_line, end_col = self.position(end)
        return Span(line, col, end_line, end_col)

    def line_text(self, line: int) -> str:
        start = self.starts[line]
        end = self.starts[line + 1] - 1 if line + 1 < len(self.starts) else len(self.text)
        return self.text[start:end].rstrip("\r")


# --------------------------------------------------------------------------------------------
# Syntax errors
# --------------------------------------------------------------------------------------------


def syntax_error_span(text: str, message: str) -> Span:
    """The span of the token a tomllib error message points at (0-based, at least one
    character where the line has any; end of document → the last non-blank line)."""
    lines = _LineMap(text)
    m = _POSITION.search(message)
    if m is None or message.rstrip().endswith(_END_OF_DOCUMENT):
        return _last_line_span(lines)
    line = min(max(int(m.group(1)) - 1, 0), len(lines.starts) - 1)
    col = max(int(m.group(2)) - 1, 0)
    content = lines.line_text(line)
    if not content:
        return Span(line, 0, line, 0)
    if col >= len(content):
        # Points at the line break: mark the last character of the line.
        return Span(line, len(content) - 1, line, len(content))
    end = col + 1
    if content[col] not in _TOKEN_STOP:
        while end < len(content) and content[end] not in _TOKEN_STOP:
            end += 1
    return Span(line, col, line, end)


def _last_line_span(lines: _LineMap) -> Span:
    for line in range(len(lines.starts) - 1, -1, -1):
        content = lines.line_text(line)
        if content.strip():
            start = len(content) - len(content.lstrip())
            return Span(line, start, line, len(content.rstrip()))
    return Span(0, 0, 0, 0)


# --------------------------------------------------------------------------------------------
# Nesting depth
# --------------------------------------------------------------------------------------------

MAX_NESTING = 100
"""Deepest nesting of arrays and inline tables a config may have. tomllib (and the index
below) recurse once per level and would hit Python's recursion limit a few hundred levels
down; no config needs more than a handful."""

_NESTING_TOKEN = re.compile(r"""\"\"\"|'''|["'#\[\]{}]""")


def nesting_too_deep(text: str, limit: int = MAX_NESTING) -> Span | None:
    """The span of the value (from its outermost bracket to the end of that line) whose
    arrays and inline tables nest more than ``limit`` levels deep; None if there is none.

    A lexer of its own that never recurses (strings and comments hold no brackets), for text
    that may not be valid TOML."""
    if text.count("[") + text.count("{") <= limit:
        return None
    depth = outer = i = 0
    while (m := _NESTING_TOKEN.search(text, i)) is not None:
        token, i = m.group(), m.end()
        if token == "#":
            nl = text.find("\n", i)
            i = len(text) if nl < 0 else nl + 1
        elif token[0] in "\"'":
            i = _string_end(text, i, token)
        elif token in "[{":
            if depth == 0:
                outer = m.start()
            depth += 1
            if depth > limit:
                lines = _LineMap(text)
                line, column = lines.position(outer)
                end = len(lines.line_text(line).rstrip())
                return Span(line, column, line, max(end, column + 1))
        else:
            depth = max(depth - 1, 0)
    return None


def _string_end(text: str, i: int, quote: str) -> int:
    """The offset after the string whose content starts at ``i`` (the end of the line, or of
    the text for a multi-line one, when it is unterminated)."""
    basic = quote[0] == '"'
    multiline = len(quote) == 3
    while i < len(text):
        ch = text[i]
        if basic and ch == "\\":
            i += 2
        elif text.startswith(quote, i):
            return i + len(quote)
        elif ch == "\n" and not multiline:
            return i + 1
        else:
            i += 1
    return len(text)


# --------------------------------------------------------------------------------------------
# Key-path index
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _StringToken:
    """Where a string value's content is: ``kind`` is one of ``"``, ``'``, ``\"\"\"``, ``'''``."""

    kind: str
    start: int  # first character after the opening delimiter
    end: int  # the closing delimiter


@dataclass(slots=True)
class _Entry:
    key: tuple[int, int] | None = None
    value: tuple[int, int] | None = None
    string: _StringToken | None = None


class _LexError(Exception):
    pass


class SpanIndex:
    """Spans of keys and values of a valid TOML document, by key path.

    ``("variables", "x")`` is key ``x`` of ``[variables]``; ``("command", 2, "triggers", 1)``
    the second item of ``triggers`` in the third ``[[command]]``; ``("command", 2)`` that
    table's header. Unknown paths fall back to their nearest known ancestor.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self._lines = _LineMap(text)
        self._entries: dict[KeyPath, _Entry] = {}
        self._aot: dict[KeyPath, int] = {}
        self._i = 0
        self._depth = 0
        try:
            self._parse()
        except (_LexError, IndexError, RecursionError):
            pass  # keep what was indexed so far

    # ---- public API -----------------------------------------------------------------------

    def paths(self) -> list[KeyPath]:
        """Every indexed path, in document order."""
        return list(self._entries)

    def locate(self, path: Sequence[str | int], part: Part = "key") -> Span | None:
        """The span of ``path``'s key or value; the nearest indexed ancestor if ``path``
        itself is not found; None if nothing matches."""
        p = tuple(path)
        while p:
            found = self._exact(p, part)
            if found is not None:
                return found
            p = p[:-1]
        return None

    def locate_exact(self, path: Sequence[str | int], part: Part = "key") -> Span | None:
        """Like :meth:`locate` but without falling back to an ancestor."""
        return self._exact(tuple(path), part)

    def value_offset_to_span(
        self, path: Sequence[str | int], start: int, end: int, expected: str | None = None
    ) -> Span | None:
        """The file span of characters ``[start, end)`` of the *decoded* string at ``path``.

        Exact when the string has no escapes; escapes are mapped through the decoder. If the
        decoded text differs from ``expected`` (when given) or the offsets are out of range,
        the whole value's span is returned (or the nearest ancestor's)."""
        entry = self._entries.get(tuple(path))
        if entry is None or entry.string is None:
            return self.locate(path, "value")
        decoded, spans = _decode(self.text, entry.string)
        if (expected is not None and decoded != expected) or not 0 <= start < end <= len(spans):
            return self.locate(path, "value")
        return self._lines.span(spans[start][0], spans[end - 1][1])

    def string_value(self, path: Sequence[str | int]) -> str | None:
        """The decoded string at ``path`` (None if it is not a string value)."""
        entry = self._entries.get(tuple(path))
        if entry is None or entry.string is None:
            return None
        return _decode(self.text, entry.string)[0]

    # ---- lookup ---------------------------------------------------------------------------

    def _exact(self, path: KeyPath, part: Part) -> Span | None:
        entry = self._entries.get(path)
        if entry is None:
            return None
        first, second = (entry.key, entry.value) if part == "key" else (entry.value, entry.key)
        chosen = first if first is not None else second
        return None if chosen is None else self._lines.span(*chosen)

    # ---- lexer ----------------------------------------------------------------------------

    def _peek(self, n: int = 1) -> str:
        return self.text[self._i : self._i + n]

    def _skip_ws(self) -> None:
        while self._i < len(self.text) and self.text[self._i] in " \t":
            self._i += 1

    def _skip_ws_comments_newlines(self) -> None:
        while self._i < len(self.text):
            ch = self.text[self._i]
            if ch in " \t\r\n":
                self._i += 1
            elif ch == "#":
                self._skip_to_eol()
            else:
                return

    def _skip_to_eol(self) -> None:
        nl = self.text.find("\n", self._i)
        self._i = len(self.text) if nl < 0 else nl + 1

    def _expect(self, s: str) -> None:
        if not self.text.startswith(s, self._i):
            raise _LexError(f"expected {s!r} at {self._i}")
        self._i += len(s)

    def _parse(self) -> None:
        table: KeyPath = ()
        while True:
            self._skip_ws_comments_newlines()
            if self._i >= len(self.text):
                return
            line_start = self._i
            try:
                if self._peek() == "[":
                    table = self._header()
                else:
                    self._key_value(table)
                self._skip_ws()
                if self._peek() == "#":
                    self._skip_to_eol()
            except _LexError:
                self._i = line_start
                self._skip_to_eol()

    def _header(self) -> KeyPath:
        start = self._i
        array = self._peek(2) == "[["
        self._i += 2 if array else 1
        self._skip_ws()
        keys = self._dotted_key()
        self._skip_ws()
        self._expect("]]" if array else "]")
        span = (start, self._i)
        concrete: KeyPath = ()
        for n, (name, _s, _e) in enumerate(keys):
            concrete = (*concrete, name)
            last = n == len(keys) - 1
            if last and array:
                self._record_header(concrete, span)
                index = self._aot.get(concrete, -1) + 1
                self._aot[concrete] = index
                concrete = (*concrete, index)
            elif concrete in self._aot:
                concrete = (*concrete, self._aot[concrete])
            self._record_header(concrete, span)
        return concrete

    def _record_header(self, path: KeyPath, span: tuple[int, int]) -> None:
        if path not in self._entries:
            self._entries[path] = _Entry(key=span, value=span)

    def _dotted_key(self) -> list[tuple[str, int, int]]:
        parts = [self._simple_key()]
        while True:
            save = self._i
            self._skip_ws()
            if self._peek() != ".":
                self._i = save
                return parts
            self._i += 1
            self._skip_ws()
            parts.append(self._simple_key())

    def _simple_key(self) -> tuple[str, int, int]:
        start = self._i
        ch = self._peek()
        if ch in ('"', "'"):
            token = self._string()
            if token.kind not in ('"', "'"):
                raise _LexError("multi-line string used as a key")
            return _decode(self.text, token)[0], start, self._i
        m = _BARE_KEY.match(self.text, self._i)
        if m is None:
            raise _LexError(f"bad key at {self._i}")
        self._i = m.end()
        return m.group(0), start, self._i

    def _key_value(self, table: KeyPath) -> None:
        keys = self._dotted_key()
        path = table
        for name, s, e in keys[:-1]:
            path = (*path, name)
            self._entries.setdefault(path, _Entry(key=(s, e)))
        name, s, e = keys[-1]
        path = (*path, name)
        self._skip_ws()
        self._expect("=")
        self._skip_ws()
        entry = _Entry(key=(s, e))
        self._entries[path] = entry
        entry.value, entry.string = self._value(path)

    def _value(self, path: KeyPath) -> tuple[tuple[int, int], _StringToken | None]:
        start = self._i
        ch = self._peek()
        if ch in ('"', "'"):
            token = self._string()
            return (start, self._i), token
        if ch in ("[", "{"):
            if self._depth >= MAX_NESTING:
                raise _LexError(f"nested too deeply at {start}")
            self._depth += 1
            try:
                if ch == "[":
                    self._array(path)
                else:
                    self._inline_table(path)
            finally:
                self._depth -= 1
            return (start, self._i), None
        end = self._i
        while end < len(self.text) and self.text[end] not in ",]}#\r\n":
            end += 1
        self._i = end
        while end > start and self.text[end - 1] in " \t":
            end -= 1
        if end == start:
            raise _LexError(f"missing value at {start}")
        return (start, end), None

    def _array(self, path: KeyPath) -> None:
        self._expect("[")
        index = 0
        while True:
            self._skip_ws_comments_newlines()
            if self._peek() == "]":
                self._i += 1
                return
            if self._i >= len(self.text):
                raise _LexError("unclosed array")
            item_path = (*path, index)
            span, token = self._value(item_path)
            entry = self._entries.setdefault(item_path, _Entry())
            entry.value, entry.string = span, token
            index += 1
            self._skip_ws_comments_newlines()
            if self._peek() == ",":
                self._i += 1

    def _inline_table(self, path: KeyPath) -> None:
        self._expect("{")
        while True:
            self._skip_ws_comments_newlines()
            if self._peek() == "}":
                self._i += 1
                return
            if self._i >= len(self.text):
                raise _LexError("unclosed inline table")
            self._key_value(path)
            self._skip_ws_comments_newlines()
            if self._peek() == ",":
                self._i += 1

    def _string(self) -> _StringToken:
        text = self.text
        if self._peek(3) in ('"""', "'''"):
            kind = self._peek(3)
            start = self._i + 3
            i = start
            while True:
                if kind == '"""' and i < len(text) and text[i] == "\\":
                    i += 2
                    continue
                if i >= len(text):
                    raise _LexError("unterminated string")
                if text.startswith(kind, i):
                    break
                i += 1
            end = i
            # Up to two quotes right before the closing delimiter belong to the content.
            extra = 0
            while extra < 2 and text.startswith(kind[0], end + 3 + extra):
                extra += 1
            end += extra
            self._i = end + 3
            return _StringToken(kind, start, end)
        kind = self._peek()
        start = self._i + 1
        i = start
        while True:
            if i >= len(text) or text[i] == "\n":
                raise _LexError("unterminated string")
            if kind == '"' and text[i] == "\\":
                i += 2
                continue
            if text[i] == kind:
                break
            i += 1
        self._i = i + 1
        return _StringToken(kind, start, i)


def _decode(text: str, token: _StringToken) -> tuple[str, list[tuple[int, int]]]:
    """The decoded string and, per decoded character, its ``[start, end)`` in ``text``."""
    out: list[str] = []
    spans: list[tuple[int, int]] = []
    i, end = token.start, token.end
    multiline = len(token.kind) == 3
    if multiline:
        if text.startswith("\r\n", i):
            i += 2
        elif text.startswith("\n", i):
            i += 1
    basic = token.kind[0] == '"'
    while i < end:
        ch = text[i]
        if multiline and text.startswith("\r\n", i):
            out.append("\n")
            spans.append((i, i + 2))
            i += 2
            continue
        if not basic or ch != "\\":
            out.append(ch)
            spans.append((i, i + 1))
            i += 1
            continue
        nxt = text[i + 1] if i + 1 < end else ""
        if nxt in _SIMPLE_ESCAPES:
            out.append(_SIMPLE_ESCAPES[nxt])
            spans.append((i, i + 2))
            i += 2
        elif nxt in ("u", "U"):
            width = 4 if nxt == "u" else 8
            try:
                out.append(chr(int(text[i + 2 : i + 2 + width], 16)))
            except ValueError:
                out.append("\ufffd")
            spans.append((i, i + 2 + width))
            i += 2 + width
        elif nxt == "x":
            try:
                out.append(chr(int(text[i + 2 : i + 4], 16)))
            except ValueError:
                out.append("\ufffd")
            spans.append((i, i + 4))
            i += 4
        elif multiline and nxt in " \t\r\n":
            # Line-ending backslash: drop it and all whitespace and newlines after it.
            i += 1
            while i < end and text[i] in " \t\r\n":
                i += 1
        else:
            out.append(ch)
            spans.append((i, i + 1))
            i += 1
    return "".join(out), spans


def value_offset_to_span(
    index: SpanIndex, path: Sequence[str | int], start: int, end: int,
    expected: str | None = None,
) -> Span | None:
    """Function form of :meth:`SpanIndex.value_offset_to_span`."""
    return index.value_offset_to_span(path, start, end, expected)
