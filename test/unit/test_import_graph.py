"""No import circles: the import graph of `core.cli` (and of the rest of `core`), read from the source's AST.

Every import that runs counts, at module level or inside a function (an import
moved into a function to dodge a circle is still a circle); imports under
``if TYPE_CHECKING:`` never run and are left out. ``from . import x`` points at the
submodule ``x``; ``from .x import y`` at ``x`` (and at ``x.y`` when that is a module).
Also checked here: no ``core.cli`` module imports another's private (``_``) name,
and every module of ``core.cli`` stays within 400 lines.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "core"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in ROOT.rglob("*.py")}


def _imports(name: str, path: Path, known: dict[str, Path]) -> list[tuple[str, list[str]]]:
    """(module imported, names imported from it) for every import in `path` of a module in `known`."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[tuple[str, list[str]]] = []
    tree = ast.parse(path.read_text(encoding="utf-8"))
    typing_only = {
        id(inner) for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for inner in ast.walk(node)
    }
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names if alias.name in known]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [alias.name for alias in node.names]
            if target in known:
                found.append((target, names))
            found += [(f"{target}.{n}", []) for n in names if f"{target}.{n}" in known]
    return found


def _graph(prefix: str) -> dict[str, set[str]]:
    known = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in known.items():
        if name == prefix or name.startswith(prefix + "."):
            graph[name] = {
                target for target, _ in _imports(name, path, known)
                if target != name and (target == prefix or target.startswith(prefix + "."))
            }
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
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


def test_core_cli_has_no_import_circle() -> None:
    graph = _graph("core.cli")
    # The package's __init__ re-exports `main`: it sits above every module, none imports it.
    graph.pop("core.cli", None)
    assert {"core.cli.main", "core.cli.ingest", "core.cli.status"} <= set(graph)
    assert not _cycles(graph)
    assert not graph["core.cli.status"] and graph["core.cli.console"] == set()  # the bottom imports nothing above


def test_core_has_no_import_circle() -> None:
    graph = _graph("core")
    assert len(graph) > 50 and "core.testing.openai_server.vectors" in graph
    assert not _cycles(graph)


def test_core_cli_imports_no_private_name_of_another_module() -> None:
    known = _modules()
    private = [
        (name, target, imported)
        for name, path in known.items() if name.startswith("core.cli")
        for target, names in _imports(name, path, known) if target.startswith("core.cli")
        for imported in names if imported.startswith("_")
    ]
    assert not private


@pytest.mark.parametrize("name", sorted(n for n in _modules() if n.startswith("core.cli")))
def test_core_cli_modules_stay_within_400_lines(name: str) -> None:
    assert len(_modules()[name].read_text(encoding="utf-8").splitlines()) <= 400


def test_the_package_namespace_is_the_public_api() -> None:
    """Issue #21: ``dir(core)`` listed names twice and showed `Any`, `TYPE_CHECKING`, `importlib`."""
    import core

    names = dir(core)
    assert names == sorted(set(names)) == sorted(core.__all__)
    assert len(core.__all__) == len(set(core.__all__)) == 26
    assert not {"Any", "TYPE_CHECKING", "importlib", "annotations", "errors"} & set(names)
    import importlib

    for name in core.__all__:  # each one importable, the very object of the module the list names
        assert getattr(core, name) is getattr(importlib.import_module(f"core.{core._HOME[name]}"), name)
    assert "EmbeddedPostgres" in dir(core) and "PostgresStore" in dir(core)  # before and after first use
