"""The package's modules import each other without circles, and only training imports Lightning."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "thinkjepa"
LIGHTNING_ALLOWED = ("train/", "cli.py")  # the training stages and the command line that runs them


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[str]]:
    """``{module: modules of the package it imports}``, wherever in the file the import is."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                found |= {t for t in [node.module, *(f"{node.module}.{a.name}" for a in node.names)] if t in modules}
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name in modules}
        graph[name] = found - {name}
    return graph


def test_no_import_circles() -> None:
    graph = imports()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                raise AssertionError("import circle: " + " -> ".join([*stack[stack.index(n):], n]))
            if n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_only_training_imports_lightning() -> None:
    """Networks, data, planners, policies and releases load and run without Lightning."""
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel.startswith(LIGHTNING_ALLOWED):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([node.module or ""] if isinstance(node, ast.ImportFrom)
                     else [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            if any(n == "lightning" or n.startswith(("lightning.", "pytorch_lightning")) for n in names):
                offenders.append(rel)
    assert not offenders, f"these modules import Lightning outside thinkjepa/train/: {sorted(set(offenders))}"


def test_training_stages_import_lightning_so_the_check_can_fail() -> None:
    assert "lightning" in (PACKAGE / "train" / "worldmodel.py").read_text()
