"""The layout's rules, checked on the source: ``pipeline/`` never imports ``workers/``, its
modules import each other in one direction (no cycles), and modules and functions stay small
enough to read (DESIGN.md, "Components"; the layout issue's limits)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PIPELINE = REPO / "pipeline"
#: Longest module under pipeline/, in lines.
MAX_MODULE_LINES = 400
#: Longest function (decorators and docstring included), in lines.
MAX_FUNCTION_LINES = 80


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PIPELINE.rglob("*.py"))}
WORKERS = {_module_name(p): p for p in sorted((REPO / "workers").rglob("*.py"))}


def _imports(path: Path, known: dict[str, Path] | None = None) -> Iterator[str]:
    """Every module a file imports, at any depth (function-level imports included);
    ``from package import name`` counts as ``package.name`` when that is a module."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                yield candidate if candidate in (known or MODULES) else node.module


def test_the_library_never_imports_workers() -> None:
    offenders = sorted(
        f"{name} imports {target}"
        for name, path in MODULES.items()
        for target in _imports(path)
        if target == "workers" or target.startswith("workers.")
    )
    assert not offenders, offenders


def _graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Module → the modules of the same tree it imports. A package's ``__init__`` that
    re-exports its submodules is not a cycle with them."""
    return {
        name: {
            t
            for t in _imports(path, modules)
            if t in modules and t != name and not t.startswith(name + ".")
        }
        for name, path in modules.items()
    }


@pytest.mark.parametrize("tree", ["pipeline", "workers"])
def test_no_import_cycles(tree: str) -> None:
    cycles = _cycles(_graph(MODULES if tree == "pipeline" else WORKERS))
    assert not cycles, cycles


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize("name", sorted(MODULES))
def test_modules_and_functions_stay_small(name: str) -> None:
    path = MODULES[name]
    source = path.read_text(encoding="utf-8")
    assert len(source.splitlines()) <= MAX_MODULE_LINES, f"{name}: split it"
    long = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            if (node.end_lineno or node.lineno) - first + 1 > MAX_FUNCTION_LINES:
                long.append(node.name)
    assert not long, f"{name}: functions over {MAX_FUNCTION_LINES} lines: {long}"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_every_module_says_what_it_is_for(name: str) -> None:
    tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
    if name.endswith("__init__") or not tree.body:
        return
    assert ast.get_docstring(tree), f"{name} has no module docstring"
