"""The lmforge import graph has no cycles, between files or between packages.

Every ``lmforge/**/*.py`` is parsed with :mod:`ast`; each ``import lmforge...``,
``from lmforge... import ...`` and relative import -- at module level or inside a
function -- is an edge. Imports under ``if TYPE_CHECKING:`` are left out: they never
run. A package is ``lmforge.<name>`` (``lmforge.serve``, ``lmforge.train``, ...); a
top-level module (``lmforge/cli.py``) is a node of its own. A cycle is printed so the
failure says which imports to move.
"""

from __future__ import annotations

import ast
from itertools import pairwise
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "lmforge"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(tree: ast.AST):
    """Every Import/ImportFrom node, at any depth, except under ``if TYPE_CHECKING:``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        children = list(ast.iter_child_nodes(node))
        if isinstance(node, ast.If) and _is_type_checking(node):
            children = list(node.orelse)
        stack.extend(children)


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The longest prefix of a dotted name that is an lmforge module."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def imports_of(module: str, modules: dict[str, Path]) -> set[str]:
    path = modules[module]
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in _import_nodes(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            if node.level:
                # A relative import counts from the containing package.
                base = module.split(".")
                if not is_package:
                    base = base[:-1]
                base = base[: len(base) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            # ``from pkg import sub`` may name a submodule, else an attribute of pkg.
            targets = [f"{prefix}.{alias.name}" for alias in node.names]
        for target in targets:
            if not target.startswith("lmforge"):
                continue
            resolved = _resolve(target, modules)
            if resolved is not None and resolved != module:
                found.add(resolved)
    return found


def package_of(module: str) -> str:
    return ".".join(module.split(".")[:2])


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a closed path of nodes, or None; iterative DFS with colours."""
    white, grey, black = 0, 1, 2
    colour = dict.fromkeys(graph, white)
    for start in sorted(graph):
        if colour[start] != white:
            continue
        path = [start]
        iters = [iter(sorted(graph[start]))]
        colour[start] = grey
        while iters:
            nxt = next(iters[-1], None)
            if nxt is None:
                colour[path.pop()] = black
                iters.pop()
                continue
            if colour.get(nxt, black) == grey:
                return path[path.index(nxt) :] + [nxt]
            if colour.get(nxt) == white:
                colour[nxt] = grey
                path.append(nxt)
                iters.append(iter(sorted(graph[nxt])))
    return None


@pytest.fixture(scope="module")
def file_graph() -> dict[str, set[str]]:
    modules = _modules()
    return {m: imports_of(m, modules) for m in modules}


def package_graph(files: dict[str, set[str]]) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for module, targets in files.items():
        src = package_of(module)
        graph.setdefault(src, set())
        for target in targets:
            dst = package_of(target)
            # The root package ``lmforge`` itself is not a layer of its own.
            if dst != src and dst != "lmforge" and src != "lmforge":
                graph[src].add(dst)
    return graph


def _explain(cycle: list[str], graph: dict[str, set[str]], files: dict[str, set[str]]) -> str:
    lines = [" -> ".join(cycle)]
    for a, b in pairwise(cycle):
        via = sorted(
            f"{m} imports {t}"
            for m, ts in files.items()
            for t in ts
            if package_of(m) == a and package_of(t) == b
        )
        if via:
            lines.append(f"  {a} -> {b}: " + "; ".join(via[:4]))
    return "\n".join(lines)


def test_parser_sees_function_local_and_relative_imports(tmp_path):
    # The walker must see an import inside a function body and skip TYPE_CHECKING ones.
    tree = ast.parse(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    import lmforge.a\n"
        "def f():\n    from . import b\n    import lmforge.c as c\n"
    )
    nodes = list(_import_nodes(tree))
    names = sorted(alias.name for n in nodes for alias in n.names if alias.name != "TYPE_CHECKING")
    assert names == ["b", "lmforge.c"]


def test_find_cycle_reports_a_closed_path():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    cycle = find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}})
    assert cycle is not None and cycle[0] == cycle[-1] and set(cycle) == {"a", "b", "c"}


def test_graph_covers_the_package(file_graph):
    # A sanity floor: the parse found the real tree and its edges, not an empty graph.
    assert "lmforge.cli" in file_graph and "lmforge.serve.server" in file_graph
    assert sum(len(v) for v in file_graph.values()) > 100


def test_no_cycle_between_files(file_graph):
    cycle = find_cycle(file_graph)
    assert cycle is None, "import cycle between files: " + " -> ".join(cycle)


# The layering (issue 15, part 5), from the bottom: errors < atomic, gpus, typed_config < model
# < chat < tokenizer < data < train < inspect < serve < eval < config < tune < export < inputs <
# plan < pipeline < cli. lmforge/config.py gathers the stage packages' config sections into
# RunConfig, so no stage below it may import it at run time (train names it only under
# TYPE_CHECKING; the whole config of a checkpoint is lmforge.config.read_config).
def test_no_cycle_between_packages(file_graph):
    graph = package_graph(file_graph)
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle between packages: " + _explain(cycle, graph, file_graph)
