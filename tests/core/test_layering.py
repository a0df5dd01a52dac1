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


def _core_imports(path: Path) -> set[str]:
    """The sidecar.core modules ``path`` imports, at module level or inside functions
    (``if TYPE_CHECKING:`` blocks excluded)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module:
                found.add(node.module.split(".")[0])
            elif node.level == 1:
                found.update(a.name for a in node.names)
            elif node.module and node.module.startswith("sidecar.core."):
                found.add(node.module.split(".")[2])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[2] for a in node.names
                         if a.name.startswith("sidecar.core."))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    found.discard(path.stem)
    return found


def _graph() -> dict[str, set[str]]:
    return {p.stem: _core_imports(p) for p in CORE.glob("*.py") if p.stem != "__init__"}


def test_config_and_checks_do_not_import_each_other() -> None:
    graph = _graph()
    assert "checks" not in graph["config"] and "loading" not in graph["config"]
    assert "loading" not in graph["checks"]
    assert {"config", "checks"} <= graph["loading"]


def test_core_modules_import_each_other_without_cycles() -> None:
    graph = _graph()
    done: set[str] = set()

    def walk(module: str, path: list[str]) -> None:
        if module in path:
            raise AssertionError("import cycle: " + " -> ".join([*path, module]))
        if module in done:
            return
        for dep in sorted(graph.get(module, ())):
            walk(dep, [*path, module])
        done.add(module)

    for module in sorted(graph):
        walk(module, [])


def _module_level_imports(path: Path) -> set[str]:
    """Absolute names of the modules ``path`` imports when it is imported (statements outside
    functions and classes, including ``if``/``try`` blocks; ``TYPE_CHECKING`` blocks too)."""
    found: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                continue
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = ["sidecar", "core"][: 3 - node.level]
                    module = ".".join([*base, *([node.module] if node.module else [])])
                    found.update([module] if node.module else
                                 [f"{module}.{a.name}" for a in node.names])
                else:
                    found.add(node.module or "")
            for field in ("body", "orelse", "finalbody", "handlers"):
                visit(getattr(node, field, []))

    visit(ast.parse(path.read_text(encoding="utf-8")).body)
    return found


def test_core_never_imports_adapters_at_module_level() -> None:
    offenders = {p.name: sorted(m for m in _module_level_imports(p)
                                if m == "sidecar.adapters" or m.startswith("sidecar.adapters."))
                 for p in CORE.glob("*.py")}
    assert {k: v for k, v in offenders.items() if v} == {}
    # The check sees relative imports too.
    assert "sidecar.core.ports" in _module_level_imports(CORE / "orchestrator.py")
    assert "sidecar.core.config" in _module_level_imports(CORE / "loading.py")
