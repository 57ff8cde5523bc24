"""cli/options.py: the fitting commands take the same fit options, named, defaulted and described by the settings."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from cli.common import InputError
from cli.main import app
from cli.options import FIT_OPTIONS, use_backbone_runtime
from structcore.settings import FEATURE_SPACE_PARAMETERS, FIT_PARAMETERS

runner = CliRunner()
FITTING_COMMANDS = ("add-category", "add-categories", "eval")


def _options(command: str) -> dict[str, Any]:
    """The command's Click parameters by option name (Typer builds them; typer 0.28 vendors Click)."""
    group: Any = typer.main.get_command(app)
    return {option: parameter for parameter in group.commands[command].params for option in parameter.opts}


@pytest.mark.parametrize("name", FIT_OPTIONS)
def test_fitting_commands_share_each_fit_option(name: str) -> None:
    setting = FIT_PARAMETERS[name]
    assert setting.option is not None
    seen = []
    for command in FITTING_COMMANDS:
        parameter = _options(command).get(setting.option)
        assert parameter is not None, f"{command} has no {setting.option}"
        seen.append((parameter.default, getattr(parameter, "help", None), parameter.type.name))
    assert seen[0][0] == setting.default
    assert seen[0][1] == setting.help
    assert seen.count(seen[0]) == len(seen), dict(zip(FITTING_COMMANDS, seen, strict=True))


def test_init_takes_the_feature_space_options() -> None:
    options = _options("init")
    for setting in FEATURE_SPACE_PARAMETERS.values():
        assert setting.option is not None
        assert options[setting.option].default == setting.default
        assert getattr(options[setting.option], "help", None) == setting.help


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["add-category", "pill", "--train", "{tmp}", "--coreset-ratio", "2"],
         "--coreset-ratio must be a number in (0, 1], got 2.0"),
        (["add-category", "pill", "--train", "{tmp}", "--batch-size", "0"],
         "--batch-size must be an integer >= 1, got 0"),
        (["add-categories", "--train-root", "{tmp}", "--scoring", "fancy"],
         "--scoring must be one of robust, paper, got 'fancy'"),
        (["add-categories", "--train-root", "{tmp}", "--knn-index", "ivf"],
         "--knn-index must be one of flat, hnsw, got 'ivf'"),
        (["eval", "{tmp}", "--calibration", "oob"],
         "--calibration must be one of loo, in-sample, holdout, mixed, got 'oob'"),
        (["eval", "{tmp}", "--seed", "-1"], f"--seed must be an integer in [0, {(1 << 63) - 1}], got -1"),
        (["init", "--crop", "448"], "--crop must be an integer in [1, resize = 392], got 448"),
        (["init", "--dim", "0"], "--dim must be an integer in [1, 65536], got 0"),
        (["infer", "{tmp}", "--batch-size", "0"], "--batch-size must be an integer >= 1, got 0"),
    ],
)  # fmt: skip
def test_bad_settings_are_one_line_and_exit_1(args: list[str], message: str, tmp_path: Path) -> None:
    root = tmp_path / "registry"
    result = runner.invoke(app, [*(a.format(tmp=tmp_path) for a in args), "--root", str(root)])
    assert result.exit_code == 1, result.output
    assert result.output.strip().splitlines() == [f"error: {message}"]
    assert not root.exists()  # refused before anything was opened or written


def test_backbone_runtime_option_sets_the_variable_for_the_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRUCTCORE_BACKBONE_RUNTIME", "torch")
    assert use_backbone_runtime(None) == "torch"  # not given: the variable stays
    assert use_backbone_runtime("onnx") == "onnx"
    assert os.environ["STRUCTCORE_BACKBONE_RUNTIME"] == "onnx"
    with pytest.raises(InputError, match=r"--backbone-runtime must be one of auto, torch, onnx, openvino"):
        use_backbone_runtime("tensorrt")
