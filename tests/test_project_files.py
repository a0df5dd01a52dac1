"""Files a user or a packager expects next to the code."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_license_file_is_the_mit_license_pyproject_declares() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["license"] == {"text": "MIT"}
    license_file = ROOT / "LICENSE"
    assert license_file.is_file(), "pyproject.toml says MIT but there is no LICENSE file"
    lines = license_file.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "MIT License"
    assert "Copyright (c) 2026 the cmdsidecar authors" in lines
    text = " ".join(" ".join(lines).split())
    for sentence in (
        "Permission is hereby granted, free of charge, to any person obtaining a copy of this "
        "software and associated documentation files (the \"Software\"), to deal in the "
        "Software without restriction,",
        "The above copyright notice and this permission notice shall be included in all copies "
        "or substantial portions of the Software.",
        "THE SOFTWARE IS PROVIDED \"AS IS\", WITHOUT WARRANTY OF ANY KIND,",
    ):
        assert sentence in text
