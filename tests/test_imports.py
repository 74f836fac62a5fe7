"""The package's modules import each other without circles, and network files never import Lightning."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "thinkjepa"
NETWORKS = ["worldmodel/encoder.py", "worldmodel/predictor.py", "worldmodel/jepa.py", "worldmodel/goal_distance.py",
            "worldmodel/regularizers.py", "thinker/head.py", "thinker/router.py", "thinker/thinker.py"]


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


def test_network_files_do_not_import_lightning() -> None:
    for rel in NETWORKS:
        source = (PACKAGE / rel).read_text()
        assert "lightning" not in source, f"{rel} is a network file and imports Lightning"
