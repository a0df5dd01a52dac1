"""Config problems with positions: what ``sidecar check`` prints and the server publishes.

Positions are 0-based (line, character), like LSP; :meth:`Problem.format` prints them 1-based
the way compilers do (``file:line:col: severity: message``).
"""

from __future__ import annotations

import difflib
import enum
from collections.abc import Iterable
from dataclasses import dataclass, field

#: Where a key or value is in a parsed TOML document: table keys and array indexes from the
#: root, e.g. ``("command", 2, "triggers", 1)``. Validation reports problems by key path;
#: :class:`sidecar.core.tomlspans.SpanIndex` turns them into spans.
KeyPath = tuple[str | int, ...]


class Severity(enum.IntEnum):
    """Same numbering as LSP's DiagnosticSeverity."""

    ERROR = 1
    WARNING = 2
    INFORMATION = 3
    HINT = 4

    @property
    def label(self) -> str:
        return {1: "error", 2: "warning", 3: "info", 4: "hint"}[int(self)]


@dataclass(frozen=True, slots=True)
class Span:
    """A 0-based, end-exclusive range in a file's text."""

    line: int
    column: int
    end_line: int
    end_column: int

    @classmethod
    def point(cls, line: int, column: int, length: int = 1) -> Span:
        return cls(line, column, line, column + length)


WHOLE_FIRST_LINE = Span(0, 0, 0, 1)


@dataclass(frozen=True, slots=True)
class Problem:
    """One config problem.

    ``code`` is stable and documented in protocol.md (``toml-syntax``, ``unknown-key``,
    ``wrong-type``, ``invalid-value``, ``missing-key``, ``undefined-variable``,
    ``variable-cycle``, ``unterminated-template``, ``invalid-template``, ``trigger-cycle``, ``duplicate-command``,
    ``unknown-command``, ``unemitted-trigger``, ``untriggered-command``, ``variable-override``,
    ``file-error``, ``too-deep``).
    """

    file: str
    span: Span
    severity: Severity
    code: str
    message: str
    related: tuple[tuple[str, Span, str], ...] = field(default=())

    def format(self) -> str:
        return (
            f"{self.file}:{self.span.line + 1}:{self.span.column + 1}: "
            f"{self.severity.label}: {self.message} [{self.code}]"
        )


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """``"; did you mean 'X'?"`` for the choice closest to a misspelt ``word``, else ``""``."""
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f"; did you mean '{close[0]}'?" if close else ""
