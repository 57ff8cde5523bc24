"""Fast start: commands that need no model import neither torch nor scikit-learn nor scipy.

Checked by the modules a bare ``registry list`` / ``show`` / ``verify`` leaves in ``sys.modules``
(not by timing: speed targets live in ``registry bench``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from registry import Registry
from registry.core import ARRAY_NAMES
from structcore.model import CategoryModel

HEAVY = ("torch", "sklearn", "scipy", "faiss", "ray")

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


def _heavy_modules(*args: str) -> dict[str, object]:
    completed = subprocess.run(
        [sys.executable, "-c", RUN.format(heavy=HEAVY), *args], capture_output=True, text=True, check=False
    )
    line = next(line for line in completed.stdout.splitlines() if line.startswith("HEAVY="))
    return json.loads(line.removeprefix("HEAVY="))


@pytest.fixture(scope="module")
def empty_registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("start") / "reg"
    Registry.init(root, resize=128, crop=128)
    return root


@pytest.mark.parametrize("command", [["list"], ["list", "--json"], ["verify"], ["--help"]])
def test_model_free_commands_import_no_heavy_library(empty_registry: Path, command: list[str]) -> None:
    args = command if command == ["--help"] else [*command, "--root", str(empty_registry)]
    result = _heavy_modules(*args)
    assert result["code"] == 0
    assert result["heavy"] == []


def test_stored_array_names_match_the_model() -> None:
    assert tuple(CategoryModel.ARRAY_NAMES) == ARRAY_NAMES
