"""DINOv2 backbone end to end through the registry and the CLI, with a random ViT-S/14 checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from cli.main import app
from evaluation.synthetic import make_category, write_mvtec_layout
from tests.support_dinov2 import make_random_state_dict

runner = CliRunner()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("weights") / "dinov2_vits14_pretrain.pth"
    torch.save(make_random_state_dict("vits14", seed=3), path)
    return path


def test_init_add_infer_with_dinov2(checkpoint: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_mvtec_layout(make_category("pill", n_train=4, n_test_good=1, n_test_bad=1, seed=5, size=112), data, "pill")
    root = str(tmp_path / "registry")
    result = runner.invoke(
        app,
        ["init", "--root", root, "--backbone", "dinov2-vits14", "--weights", str(checkpoint),
         "--resize", "112", "--crop", "112", "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    space = json.loads(result.stdout)["feature_space"]
    assert space["backbone"] == "dinov2-vits14" and space["channels"] == [384] * 5
    train = str(data / "pill")
    result = runner.invoke(app, ["add-category", "pill", "--train", train, "--root", root, "--coreset-ratio", "0.2"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["infer", str(data / "pill" / "test"), "--root", root, "--json"])
    assert result.exit_code == 0, result.output
    records = json.loads(result.stdout)
    assert len(records) == 2 and all(r["category"] == "pill" and r["error"] is None for r in records)


def test_init_with_missing_weights_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    result = runner.invoke(app, ["init", "--root", str(tmp_path / "r"), "--backbone", "dinov2-vitb14"])
    assert result.exit_code == 1
    assert "dinov2_vitb14_pretrain.pth" in result.output and "Traceback" not in result.output
