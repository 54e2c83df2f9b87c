"""Imports between the zoo's packages point one way: the package-level import graph has no cycle.

Read from the source (every ``import``/``from … import`` of a ``zoo`` module, including those inside
functions), so a lazy import that closes a circle is caught too; imports under ``if TYPE_CHECKING:`` are for
annotations only and do not count.
"""

from __future__ import annotations

import ast
from pathlib import Path

import zoo

ROOT = Path(zoo.__file__).parent


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = ("zoo", *path.relative_to(ROOT).with_suffix("").parts)
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _resolve(target: str, modules: dict[str, Path]) -> str | None:
    while target and target not in modules:
        target = target.rsplit(".", 1)[0] if "." in target else ""
    return target or None


def _package(module: str) -> str:
    """``zoo.data.collect`` -> ``zoo.data``; a top-level module is its own package (``zoo.cli``)."""
    return ".".join(module.split(".")[:2])


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node of the tree except those inside ``if TYPE_CHECKING:`` blocks."""
    out: list[ast.AST] = []
    stack = [tree]
    while stack:
        node = stack.pop()
        out.append(node)
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))
    return out


def package_graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        for node in _runtime_nodes(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [f"{node.module}.{a.name}" for a in node.names]
            for target in targets:
                resolved = _resolve(target, modules) if target.startswith("zoo.") else None
                if resolved and _package(resolved) != _package(name) and _package(resolved) != "zoo":
                    graph.setdefault(_package(name), set()).add(_package(resolved))
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the directed graph as a list of nodes (first = last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_find_cycle_sees_a_planted_circle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}}) is None


def test_the_package_import_graph_has_no_cycle() -> None:
    graph = package_graph()
    assert "zoo.data" in graph.get("zoo.tasks", set())  # the graph is really read: tasks load their data
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def test_data_never_imports_tasks() -> None:
    """The data layer (loaders, collection, behaviour runs and their reference returns) sits below the tasks."""
    assert "zoo.tasks" not in package_graph().get("zoo.data", set())
