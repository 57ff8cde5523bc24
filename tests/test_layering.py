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


# ------------------------------------------------------------------ cli/ and server/ score through a Detector
#: The model code: fitted banks, routing, kNN, maps, scoring, feature extraction.
MODEL_MODULES = (
    "structcore.model",
    "structcore.routing",
    "structcore.knn",
    "structcore.coreset",
    "structcore.anomaly_map",
    "structcore.scoring",
    "structcore.features",
)
#: What cli/ and server/ may import from the model modules: setting choices (UPPER_CASE constants)
#: and ``CategoryModel`` as the holder of fit settings handed to ``Registry.add_category``.
ALLOWED_MODEL_NAMES = frozenset({"CategoryModel"})
#: Registry methods that hand out model parts; cli/ and server/ call none (they use a Detector).
MODEL_ACCESSORS = frozenset({"load_category", "load_router", "routing", "extractor", "read_version"})


def detector_only_violations(source: str, module: str) -> list[str]:
    """Where ``source`` (a module of cli/ or server/) reaches models other than through a Detector.

    The rule: it imports from :data:`MODEL_MODULES` only UPPER_CASE constants and
    :data:`ALLOWED_MODEL_NAMES` (never a module object, never ``registry.inference``), and it calls
    none of :data:`MODEL_ACCESSORS`. Scoring goes through ``Registry.detector()`` / ``Detector.predict``.
    """
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module is not None:
            if node.module == "registry.inference" or node.module.startswith(MODEL_MODULES):
                bad = [a.name for a in node.names if not (a.name.isupper() or a.name in ALLOWED_MODEL_NAMES)]
                found += [f"{module}:{node.lineno} imports {name} from {node.module}" for name in bad]
            elif node.module == "structcore" and any(f"structcore.{a.name}" in MODEL_MODULES for a in node.names):
                found.append(f"{module}:{node.lineno} imports a model module from structcore")
        elif isinstance(node, ast.Import):
            found += [
                f"{module}:{node.lineno} imports {a.name}"
                for a in node.names
                if a.name.startswith(MODEL_MODULES) or a.name == "registry.inference"
            ]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in MODEL_ACCESSORS:
            found.append(f"{module}:{node.lineno} calls .{node.func.attr}()")
    return found


def test_cli_and_server_reach_models_only_through_a_detector() -> None:
    violations = [
        violation
        for package in ("cli", "server")
        for path in sorted((REPO / package).rglob("*.py"))
        for violation in detector_only_violations(path.read_text(), _module_name(path))
    ]
    assert violations == []


def test_the_detector_rule_sees_planted_violations() -> None:
    planted = (
        "from structcore.model import CALIBRATION_MODES, CategoryModel\n"  # allowed: settings
        "from structcore.routing import PrototypeRouter\n"
        "import structcore.knn\n"
        "def f(registry):\n"
        "    from registry.inference import predict\n"
        "    return registry.load_category('bottle'), registry.detector().predict([])\n"
    )
    assert detector_only_violations(planted, "cli.planted") == [
        "cli.planted:2 imports PrototypeRouter from structcore.routing",
        "cli.planted:3 imports structcore.knn",
        "cli.planted:5 imports predict from registry.inference",
        "cli.planted:6 calls .load_category()",
    ]


def test_bundle_and_detector_do_not_know_the_registry(graph: dict[str, tuple[set[str], set[str]]]) -> None:
    """No import at all (type-only included) from the bundle or the Detector back to ``registry.core``."""
    assert "registry.core" not in graph["registry.bundle"][0]
    assert "registry.core" not in graph["registry.detector"][0]


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


#: The torch-free runtime (``runtime/structcore_runtime``) sits below ``structcore``: it imports
#: none of our packages, and no torch (a line PC installs it alone).
RUNTIME_FORBIDDEN = (*LAYERS, "tests", "torch", "scipy", "sklearn")


def test_runtime_imports_nothing_of_ours_nor_torch() -> None:
    found = []
    for path in sorted((REPO / "runtime" / "structcore_runtime").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [alias.name for alias in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom) and not node.level
                else []
            )
            found.extend(f"{path.name} imports {name}" for name in names if name.split(".")[0] in RUNTIME_FORBIDDEN)
    assert found == []
