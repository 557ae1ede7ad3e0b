"""The package's import graph has no cycle, and ``vecflow.core`` imports no stage (issue 24 item 3).

The graph is read from the source with ``ast``, so an import inside a function counts as much as one at the top
of a file: hiding an import in a function keeps Python from failing at start-up, it does not remove the
dependency. Every ``import x`` and ``from x import y`` is an edge (relative ones resolved against the module's
package); ``from pkg import mod`` is an edge to ``pkg`` and to ``pkg.mod``. A name computed at run time (the
CLI's dispatch table, ``importlib.import_module(name)``) is not read.

Layers: ``vecflow.core`` is the floor every stage stands on (errors, I/O, settings, devices, config checks), so
a core module imports only other core modules and the root package ``vecflow`` (its ``__version__``); the
stages (data, lvm, summary, hpo, ship) and the benchmarks sit above it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE_ROOT = Path(__file__).resolve().parents[1] / "scripts"
CORE = "vecflow.core"
CORE_MAY_IMPORT = {"vecflow"}  # besides vecflow.core itself: the root package (it holds __version__ only)

# edge: (importer, imported) -> the importer's line numbers
Graph = dict[str, dict[str, list[int]]]


def module_files(root: Path, package: str = "vecflow") -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, is a package ``__init__``) for every .py file under ``root/package``."""
    modules = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        modules[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return modules


def _resolve(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The absolute module a ``from ... import`` names (``from . import x`` in ``a.b.c`` -> ``a.b``)."""
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _known(name: str, modules) -> str | None:
    """The longest prefix of ``name`` that is one of the package's modules (``a.b.func`` -> ``a.b``)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_graph(root: Path = PACKAGE_ROOT, package: str = "vecflow") -> Graph:
    """Each module's imports of other modules of the package, wherever in the file they are."""
    modules = module_files(root, package)
    graph: Graph = {}
    for module, (path, is_package) in modules.items():
        edges: dict[str, list[int]] = {}
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                source = _resolve(node, module, is_package)
                names = [source] + [f"{source}.{alias.name}" for alias in node.names]
            else:
                continue
            for target in {_known(name, modules) for name in names} - {None, module}:
                edges.setdefault(target, []).append(node.lineno)
        graph[module] = {target: sorted(lines) for target, lines in sorted(edges.items())}
    return graph


def strongly_connected(graph: Graph) -> list[list[str]]:
    """The groups of modules that reach each other (Tarjan), each sorted; only groups of two or more."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, {}):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(groups)


def one_cycle(graph: Graph, group: list[str]) -> list[str]:
    """A shortest import path from the group's first module back to itself, inside the group."""
    start, members = group[0], set(group)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for nxt in graph[node]:
                if nxt == start:
                    return paths[node] + [start]
                if nxt in members and nxt not in paths:
                    paths[nxt] = paths[node] + [nxt]
                    following.append(nxt)
        frontier = following
    raise AssertionError(f"{group} is not a cycle")  # a strongly connected group always has one


def describe_cycle(graph: Graph, cycle: list[str]) -> str:
    """``a (line 3) -> b (line 9) -> a``: each module with the line of its import of the next one."""
    steps = [f"{a} (line {', '.join(map(str, graph[a][b]))})" for a, b in zip(cycle, cycle[1:])]
    return " -> ".join(steps + [cycle[-1]])


def upward_imports(graph: Graph, floor: str = CORE, allowed=frozenset(CORE_MAY_IMPORT)) -> list[str]:
    """Each import from a module of ``floor`` of a module outside it (other than ``allowed``), as text."""
    def inside(name: str) -> bool:
        return name == floor or name.startswith(floor + ".")

    return [f"{module} (line {', '.join(map(str, lines))}) imports {target}"
            for module, edges in sorted(graph.items()) if inside(module)
            for target, lines in edges.items() if not inside(target) and target not in allowed]


# ------------------------------------------------------------------------------------------- the package
def test_the_package_has_no_import_cycle():
    graph = import_graph()
    cycles = [describe_cycle(graph, one_cycle(graph, group)) for group in strongly_connected(graph)]
    assert not cycles, "import cycles (move the shared piece into the lower module):\n  " + "\n  ".join(cycles)


def test_core_imports_no_stage():
    upward = upward_imports(import_graph())
    assert not upward, f"{CORE} must not import a stage or the benchmarks:\n  " + "\n  ".join(upward)


def test_the_graph_sees_the_whole_package():
    """The real graph is read: every stage is there, and known edges (one inside a function) are found."""
    graph = import_graph()
    for package in ("vecflow.core", "vecflow.data", "vecflow.lvm", "vecflow.summary", "vecflow.hpo",
                    "vecflow.ship", "vecflow.bench"):
        assert package in graph
    assert "vecflow.core.errors" in graph["vecflow.cli"]
    assert "vecflow.lvm.train" in graph["vecflow.hpo.lvm_worker"]  # imported inside run_lvm_worker


# ------------------------------------------------------------------------------- the checks can fail
def write_package(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


@pytest.fixture()
def tangled(tmp_path) -> Graph:
    """A package with a cycle hidden in a function, a relative-import cycle and a core module importing up."""
    return import_graph(write_package(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/core/__init__.py": "",
        "pkg/core/io.py": "import os\n\n\ndef f():\n    from pkg.stage.model import thing\n",
        "pkg/stage/__init__.py": "",
        "pkg/stage/model.py": "from pkg.core.io import f\nthing = 1\n",
        "pkg/stage/a.py": "from . import b\n",
        "pkg/stage/b.py": "def g():\n    from .a import x\n",
        "pkg/stage/c.py": "from ..core import io\nimport pkg.stage.model\n",
    }), "pkg")


def test_imports_inside_functions_and_relative_imports_are_edges(tangled):
    assert tangled["pkg.core.io"] == {"pkg.stage.model": [5]}
    assert tangled["pkg.stage.a"] == {"pkg.stage": [1], "pkg.stage.b": [1]}
    assert tangled["pkg.stage.b"] == {"pkg.stage.a": [2]}
    assert tangled["pkg.stage.c"] == {"pkg.core": [1], "pkg.core.io": [1], "pkg.stage.model": [2]}


def test_a_cycle_is_found_and_named_with_its_lines(tangled):
    groups = strongly_connected(tangled)
    assert groups == [["pkg.core.io", "pkg.stage.model"], ["pkg.stage.a", "pkg.stage.b"]]
    assert describe_cycle(tangled, one_cycle(tangled, groups[0])) == \
        "pkg.core.io (line 5) -> pkg.stage.model (line 1) -> pkg.core.io"
    assert one_cycle(tangled, groups[1]) == ["pkg.stage.a", "pkg.stage.b", "pkg.stage.a"]


def test_a_core_module_importing_a_stage_is_found(tangled):
    assert upward_imports(tangled, floor="pkg.core", allowed={"pkg"}) == \
        ["pkg.core.io (line 5) imports pkg.stage.model"]


def test_a_clean_package_passes(tmp_path):
    graph = import_graph(write_package(tmp_path, {
        "pkg/__init__.py": "__version__ = '1'\n",
        "pkg/core/__init__.py": "",
        "pkg/core/io.py": "from pkg import __version__\n",
        "pkg/stage.py": "from pkg.core import io\n",
    }), "pkg")
    assert strongly_connected(graph) == [] and upward_imports(graph, floor="pkg.core", allowed={"pkg"}) == []
