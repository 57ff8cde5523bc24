"""The import graph: one way, cli -> server -> evaluation -> registry -> structcore, and no loops.

``benchmarks/`` and ``experiments/`` (in a checkout, not installed) sit above everything: they may
import any package of ours, and nothing of ours imports them (``registry bench`` runs the
benchmark in a child process).

Read from the source with :mod:`ast` (nothing is imported). Every ``import`` counts for the
direction, those inside functions included; the module-level ones (outside ``if TYPE_CHECKING``)
must form no cycle.
"""

from __future__ import annotations

import ast
import fnmatch
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: Package -> layer: a module may import its own layer and the layers below, never above.
LAYERS = {
    "structcore": 0,
    "registry": 1,
    "migrations": 1,
    "evaluation": 2,
    "server": 3,
    "cli": 4,
    "benchmarks": 5,
    "experiments": 5,
}
#: Folders of the checkout that are not installed (pyproject's packages.find must not pick them up).
NOT_INSTALLED = ("benchmarks", "experiments")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {
        _module_name(path): path
        for package in LAYERS
        for path in sorted((REPO / package).rglob("*.py"))
        if "versions" not in path.parts  # Alembic revision scripts are loaded by Alembic, not imported
    }


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.Module, module: str, known: set[str]) -> tuple[set[str], set[str]]:
    """(every imported module of ours, the ones imported at module level outside TYPE_CHECKING)."""
    everywhere: set[str] = set()
    top_level: set[str] = set()

    def resolve(node: ast.Import | ast.ImportFrom) -> set[str]:
        if isinstance(node, ast.Import):
            names = {alias.name for alias in node.names}
        else:
            base = node.module or ""
            if node.level:  # relative import
                base = ".".join([*module.split(".")[: -node.level], base]).strip(".")
            names = {base} | {f"{base}.{alias.name}" for alias in node.names}
        found = set()
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
        return found

    def visit(nodes: list[ast.stmt], at_top: bool) -> None:
        """``at_top``: executed when the module is imported (not in a function, class body aside)."""
        for node in nodes:
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = resolve(node)
                everywhere.update(names)
                if at_top:
                    top_level.update(names)
            elif isinstance(node, ast.If):
                visit(node.body, at_top and not _is_type_checking(node))
                visit(node.orelse, at_top)
            elif isinstance(node, ast.Try):
                visit(node.body + node.orelse + node.finalbody, at_top)
                for handler in node.handlers:
                    visit(handler.body, at_top)
            elif isinstance(node, ast.With | ast.ClassDef):
                visit(node.body, at_top)
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                visit(node.body, at_top=False)
            else:
                visit([child for child in ast.iter_child_nodes(node) if isinstance(child, ast.stmt)], at_top)

    visit(tree.body, at_top=True)
    everywhere.discard(module)
    top_level.discard(module)
    return everywhere, top_level


@pytest.fixture(scope="module")
def graph() -> dict[str, tuple[set[str], set[str]]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(ast.parse(path.read_text()), name, known) for name, path in modules.items()}


def _layer(module: str) -> int:
    return LAYERS[module.split(".")[0]]


def test_imports_flow_one_way(graph: dict[str, tuple[set[str], set[str]]]) -> None:
    upward = sorted(
        f"{module} imports {target}"
        for module, (everywhere, _) in graph.items()
        for target in everywhere
        if _layer(target) > _layer(module)
    )
    assert upward == []


def find_cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Import cycles of ``edges`` (module -> modules it imports), each as the modules around it."""
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def walk(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(edges.get(module, ())):
            if state.get(target) == 1:
                cycles.append([*path[path.index(target) :], target])
            elif target not in state:
                walk(target, [*path, target])
        state[module] = 2

    for module in sorted(edges):
        if module not in state:
            walk(module, [module])
    return cycles


def test_module_level_imports_have_no_cycle(graph: dict[str, tuple[set[str], set[str]]]) -> None:
    assert find_cycles({module: top for module, (_, top) in graph.items()}) == []


def test_the_checker_finds_a_planted_cycle() -> None:
    edges = {"registry.core": {"registry.bundle"}, "registry.bundle": {"registry.records", "registry.core"}}
    assert find_cycles(edges) == [["registry.bundle", "registry.core", "registry.bundle"]]


def test_the_checker_sees_a_planted_upward_import() -> None:
    """The direction check can fail: an import of cli from structcore is found."""
    known = {"structcore.knn", "cli.main"}
    everywhere, top = _imports(ast.parse("def f():\n    from cli.main import app\n"), "structcore.knn", known)
    assert everywhere == {"cli.main"} and top == set()


def test_benchmarks_and_experiments_are_in_the_graph(graph: dict[str, tuple[set[str], set[str]]]) -> None:
    """The walk sees the lab: the benchmark imports the packages, and nothing imports the lab."""
    assert "benchmarks.bench" in graph and "experiments.quality.analyze" in graph
    assert {"registry.core", "structcore.knn", "evaluation.datasets"} <= graph["benchmarks.bench"][0]
    importers = sorted(
        f"{module} imports {target}"
        for module, (everywhere, _) in graph.items()
        if module.split(".")[0] not in NOT_INSTALLED
        for target in everywhere
        if target.split(".")[0] in NOT_INSTALLED
    )
    assert importers == []


def test_benchmarks_and_experiments_are_not_installed() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    include = config["tool"]["setuptools"]["packages"]["find"]["include"]
    for folder in NOT_INSTALLED:
        assert (REPO / folder).is_dir()
        assert not any(fnmatch.fnmatch(folder, pattern) for pattern in include), (folder, include)
