"""The last lines of a run's output, as ``run_command``, ``get_run`` and ``read_output
tail_lines`` give them: an exact slice of the end of the text."""

from __future__ import annotations

import pytest

from sidecar.frontends.mcp.tools import _last_lines


@pytest.mark.parametrize(("text", "n", "partial_first", "expected"), [
    ("a\nb\nc\n", 2, False, "b\nc\n"),
    ("a\nb\nc", 2, False, "b\nc"),
    ("a\nb\nc\n", 5, False, "a\nb\nc\n"),
    ("xa\nb\n", 5, True, "b\n"),    # the window starts mid-line: that line is left out
    ("xab", 5, True, ""),
    ("a\n", 0, False, ""),
    ("", 3, False, ""),
])
def test_last_lines(text: str, n: int, partial_first: bool, expected: str) -> None:
    assert _last_lines(text, n, partial_first) == expected
