"""The tests mirror the code: every module of ``structcore/`` and ``registry/`` has its own test module.

``structcore/knn.py`` is tested in ``tests/structcore/test_knn.py``, ``structcore/backbones/dinov2.py``
in ``tests/structcore/backbones/test_dinov2.py``; package ``__init__`` files are left out. Beside
the mirrors: ``tests/e2e/``, ``tests/reliability/``, ``tests/serve/``, ``tests/benchmarks/``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TESTS = REPO / "tests"
#: Packages whose every module must have ``tests/<package>/.../test_<module>.py``.
MIRRORED = ("structcore", "registry")


def _modules(package: str) -> list[Path]:
    return sorted(p for p in (REPO / package).rglob("*.py") if p.name != "__init__.py")


def _test_module(module: Path) -> Path:
    relative = module.relative_to(REPO)
    return TESTS / relative.parent / f"test_{relative.name}"


def _test_functions(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    return [
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test_")
    ]


@pytest.mark.parametrize("package", MIRRORED)
def test_every_module_has_its_own_test_module(package: str) -> None:
    modules = _modules(package)
    assert len(modules) > 5  # the walk found the package
    missing = [str(_test_module(m).relative_to(REPO)) for m in modules if not _test_module(m).is_file()]
    assert missing == []
    empty = [str(_test_module(m).relative_to(REPO)) for m in modules if not _test_functions(_test_module(m))]
    assert empty == []


def test_every_test_folder_is_a_package() -> None:
    """``tests`` is a package: each folder needs ``__init__.py`` (else ``tests/registry`` would shadow ``registry``)."""
    folders = [p for p in TESTS.rglob("*") if p.is_dir() and p.name != "__pycache__"]
    assert folders
    assert [str(f.relative_to(REPO)) for f in folders if not (f / "__init__.py").is_file()] == []


def test_no_test_module_is_left_at_the_root() -> None:
    """Only repository-wide checks live in ``tests/`` itself; the rest sits in the folder of what it tests."""
    assert sorted(p.name for p in TESTS.glob("test_*.py")) == ["test_layering.py", "test_layout.py"]


def test_the_guard_sees_a_missing_test_module(tmp_path: Path) -> None:
    """The mapping the guard uses: a module's test file is named after it, in the mirrored folder."""
    assert _test_module(REPO / "structcore" / "knn.py") == TESTS / "structcore" / "test_knn.py"
    assert _test_module(REPO / "structcore" / "backbones" / "dinov2.py") == (
        TESTS / "structcore" / "backbones" / "test_dinov2.py"
    )
    (tmp_path / "test_x.py").write_text("def helper():\n    pass\n\n\nclass TestNothing:\n    pass\n")
    assert _test_functions(tmp_path / "test_x.py") == []
