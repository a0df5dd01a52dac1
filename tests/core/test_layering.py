"""How the core's modules depend on each other: each definition lives in one module and the
imports only go down (config never imports checks)."""

from __future__ import annotations

import ast
from pathlib import Path

CORE = Path(__file__).resolve().parents[2] / "sidecar" / "core"


def _assigned_names(path: Path) -> set[str]:
    """Names bound at module level by assignment (``X = ...`` / ``X: T = ...``)."""
    names: set[str] = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        targets = (node.targets if isinstance(node, ast.Assign)
                   else [node.target] if isinstance(node, ast.AnnAssign) else [])
        names.update(t.id for t in targets if isinstance(t, ast.Name))
    return names


def test_key_path_is_defined_once() -> None:
    defining = sorted(p.name for p in CORE.glob("*.py") if "KeyPath" in _assigned_names(p))
    assert defining == ["problems.py"]
    from sidecar.core import checks, config, problems, tomlspans

    assert config.KeyPath is problems.KeyPath
    assert tomlspans.KeyPath is problems.KeyPath
    assert checks.KeyPath is problems.KeyPath
