from __future__ import annotations

from pathlib import Path

import pytest

from sidecar.core.savehooks import glob_matches, triggers_for_save


@pytest.mark.parametrize(("glob", "path", "expected"), [
    ("src/**/*.py", "src/a.py", True),
    ("src/**/*.py", "src/x/y/a.py", True),
    ("src/**/*.py", "tests/a.py", False),
    ("src/*.py", "src/x/a.py", False),
    ("*.py", "deep/down/a.py", True),
    ("*.py", "a.pyc", False),
    ("docs/**", "docs/a/b.md", True),
    ("file?.txt", "file1.txt", True),
    ("file[12].txt", "file3.txt", False),
    ("/top.toml", "top.toml", True),
])
def test_glob_matches(glob: str, path: str, expected: bool) -> None:
    assert glob_matches(glob, path) is expected


def test_triggers_for_save(tmp_path: Path) -> None:
    on_save = {"src/**/*.py": ["changes_applied"], "*.py": ["changes_applied", "py_saved"],
               "*.md": ["docs"]}
    fired, variables = triggers_for_save(on_save, tmp_path, tmp_path / "src" / "m.py")
    assert fired == ["changes_applied", "py_saved"]
    assert variables == {"saved_file": str(tmp_path / "src" / "m.py"),
                         "saved_file_relative": "src/m.py"}
    assert triggers_for_save(on_save, tmp_path, tmp_path / "x.txt") == ([], {})
    assert triggers_for_save(on_save, tmp_path / "sub", tmp_path / "a.py") == ([], {})
