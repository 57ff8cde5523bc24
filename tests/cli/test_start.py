"""Fast start: commands that need no model import neither torch nor scikit-learn nor scipy.

Checked by the modules each command leaves in ``sys.modules`` (not by timing: the speed target,
``registry list`` on 1,000 categories in <= 0.5 s, lives in ``registry bench --sections start``).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from registry import Registry
from tests.support_registry import random_registry

HEAVY = ("torch", "sklearn", "scipy", "faiss", "ray")
#: What a bare ``registry list`` must not load either: it reads the catalogue with sqlite3.
LIST_MUST_NOT_LOAD = (*HEAVY, "sqlalchemy", "alembic", "zarr", "numpy", "PIL", "h5py", "pydantic")

RUN = """
import json, sys
from cli.main import app
try:
    app(sys.argv[1:])
except SystemExit as exit:
    code = exit.code
else:
    code = 0
heavy = sorted(name for name in {heavy!r} if name in sys.modules)
print("HEAVY=" + json.dumps({{"code": code, "heavy": heavy}}))
"""


def _heavy_modules(*args: str, modules: tuple[str, ...] = HEAVY) -> dict[str, object]:
    completed = subprocess.run(
        [sys.executable, "-c", RUN.format(heavy=modules), *args], capture_output=True, text=True, check=False
    )
    line = next(line for line in completed.stdout.splitlines() if line.startswith("HEAVY="))
    return json.loads(line.removeprefix("HEAVY="))


@pytest.fixture(scope="module")
def empty_registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("start") / "reg"
    Registry.init(root, resize=128, crop=128)
    return root


@pytest.fixture(scope="module")
def two_categories(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A registry with ``pill`` (versions 1 and 2) and ``screw`` (version 1), fitted on random vectors."""
    root = tmp_path_factory.mktemp("start") / "fitted"
    random_registry(root, [("pill", None), ("pill", None), ("screw", None)])
    return root


@pytest.mark.parametrize("command", [["list"], ["list", "--json"], ["verify"], ["--help"]])
def test_model_free_commands_import_no_heavy_library(empty_registry: Path, command: list[str]) -> None:
    args = command if command == ["--help"] else [*command, "--root", str(empty_registry)]
    result = _heavy_modules(*args)
    assert result["code"] == 0
    assert result["heavy"] == []


@pytest.mark.parametrize(
    "command",
    [
        ["list"],
        ["show", "pill"],
        ["verify"],
        ["set-current", "pill", "1"],
        ["remove", "screw"],
        ["export", "pill", "--out", "{tmp}/pill.h5"],
    ],
)
def test_commands_on_categories_import_no_heavy_library(
    two_categories: Path, tmp_path: Path, command: list[str]
) -> None:
    root = tmp_path / "registry"
    shutil.copytree(two_categories, root)  # each command on its own copy (remove and set-current write)
    args = [part.format(tmp=tmp_path) for part in command]
    result = _heavy_modules(*args, "--root", str(root))
    assert result["code"] == 0
    assert result["heavy"] == []
    if command[0] == "export":
        assert (tmp_path / "pill.h5").is_file()


def test_bare_list_reads_the_catalogue_only(two_categories: Path) -> None:
    result = _heavy_modules("list", "--root", str(two_categories), modules=LIST_MUST_NOT_LOAD)
    assert result["code"] == 0
    assert result["heavy"] == []


def test_data_check_imports_no_heavy_library(tmp_path: Path) -> None:
    good = tmp_path / "bottle" / "train" / "good"
    good.mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(good / "000.png")
    result = _heavy_modules("data", "check", "--root", str(tmp_path), "--categories", "bottle")
    assert result["code"] == 1  # known answer: a one-image copy of bottle is incomplete
    assert result["heavy"] == []
