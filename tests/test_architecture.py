"""The package's layering, read from its source with ``ast``: no import circles, and no
module importing a layer above its own (docs/architecture.md draws the same picture).

Layers, lowest first: the package root, errors and kernels (speed helpers, knowing nothing
of B12) → config (formats and rules profiles) → ingest → rules → state (the run's plain
record) → outputs → engines → the command line. The engines share ``engines.steps`` and
never import each other. Imports under ``if TYPE_CHECKING:`` are for annotations only and
are not followed; imports inside functions are (they run, only later).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "pipeline"

#: Module (or package prefix) -> layer. The longest matching prefix decides.
LAYERS = {
    "pipeline": 0, "pipeline.errors": 0, "pipeline.kernels": 0,
    "pipeline.config": 1,
    "pipeline.ingest": 2,
    "pipeline.rules": 3,
    "pipeline.state": 4,
    "pipeline.outputs": 5,
    "pipeline.engines": 6,
    "pipeline.cli": 7, "pipeline.sample_data": 7,
}
#: Modules of one layer that must not import each other.
APART = [("pipeline.engines.pandas_engine", "pipeline.engines.dask_engine")]


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(name: str, path: Path, modules: set[str]) -> set[str]:
    """The package modules ``name`` imports (a ``from X import Y`` naming module X.Y counts
    as X.Y), skipping ``if TYPE_CHECKING:`` blocks."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "pipeline")
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1]
                                + ([base] if base else []))
            if base.split(".")[0] == "pipeline":
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    found.add(sub if sub in modules else base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    found.discard(name)
    return found


def _layer(name: str) -> int | None:
    matches = [p for p in LAYERS if name == p or name.startswith(p + ".")]
    return LAYERS[max(matches, key=len)] if matches else None


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, set(modules)) for name, path in modules.items()}


def test_every_module_has_a_layer() -> None:
    """A new folder or top-level module must say where it stands."""
    assert [m for m in _graph() if _layer(m) is None] == []


def test_lower_layers_never_import_higher_ones() -> None:
    upward = sorted(f"{a} (layer {_layer(a)}) imports {b} (layer {_layer(b)})"
                    for a, targets in _graph().items() for b in targets
                    if (_layer(a) or 0) < (_layer(b) or 0))
    assert upward == []


@pytest.mark.parametrize(("one", "other"), APART)
def test_engines_do_not_import_each_other(one: str, other: str) -> None:
    graph = _graph()
    assert other not in graph[one] and one not in graph[other]


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
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
            elif child not in graph:
                continue
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph[child]))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return found


def test_no_import_circles() -> None:
    assert _cycles(_graph()) == []


@pytest.mark.parametrize(("graph", "expected"), [
    ({"a": {"b"}, "b": {"a"}, "c": set()}, [["a", "b"]]),
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, [["a", "b", "c"]]),
    ({"a": {"b"}, "b": set()}, []),
], ids=["two", "three", "none"])
def test_the_circle_finder_finds_circles(graph: dict[str, set[str]],
                                         expected: list[list[str]]) -> None:
    assert _cycles(graph) == expected


def test_the_import_reader_sees_upward_and_lazy_imports(tmp_path: Path) -> None:
    source = tmp_path / "mod.py"
    source.write_text("from typing import TYPE_CHECKING\nimport pipeline.outputs.write\n"
                      "if TYPE_CHECKING:\n    from pipeline.engines import screen\n"
                      "def f():\n    from pipeline.rules import classify\n", encoding="utf-8")
    found = _imports("pipeline.kernels.mod", source, {"pipeline.rules.classify"})
    assert found == {"pipeline.outputs.write", "pipeline.rules.classify"}
