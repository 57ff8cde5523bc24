"""The ``update`` variant of the continual protocol (evaluation.updates): real backbone, a tiny synthetic category."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cli.evaluate import eval_command
from cli.main import app
from evaluation import InMemoryStore, load_mvtec, run_evaluation
from evaluation.synthetic import make_category, write_mvtec_layout
from evaluation.updates import evaluate_category_updates, step_bounds
from structcore.features import FeatureExtractor
from structcore.model import CategoryModel
from structcore.settings import DEFAULT_UPDATE_STEPS


def small_model() -> CategoryModel:
    return CategoryModel(coreset_ratio=0.05, n_prototypes=16)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("update-data")
    write_mvtec_layout(make_category("pill", 8, 2, 3, seed=3, size=128), root, "pill")
    return root


def test_step_bounds() -> None:
    assert step_bounds(8, 4) == [2, 4, 6, 8]
    assert step_bounds(209, 4) == [52, 104, 157, 209]
    assert step_bounds(5, 4) == [2, 3, 4, 5]  # every step adds at least one image
    with pytest.raises(ValueError, match="cannot be cut"):
        step_bounds(4, 4)


def test_updates_against_refit_on_a_synthetic_category(data_root: Path, small_extractor: FeatureExtractor) -> None:
    data = load_mvtec(data_root).categories["pill"]
    part = evaluate_category_updates(data, small_extractor, small_model(), steps=3)
    steps = part["steps"]
    assert [row["n_train"] for row in steps] == [3, 5, 8] and [row["mode"] for row in steps] == [
        "fit",
        "update",
        "update",
    ]
    assert "refit" not in steps[0]
    for row in steps[1:]:
        assert row["bank"] == row["refit"]["bank"]  # the continued bank has the refit's size
        for metrics in (row["update"], row["refit"]):
            assert 0.0 <= metrics["image_auroc_hybrid"] <= 1.0 and 0.0 <= metrics["frr"] <= 1.0
        assert row["delta"]["frr"] == pytest.approx(row["update"]["frr"] - row["refit"]["frr"])
    assert steps[-1]["update"]["image_auroc_hybrid"] > 0.5


def test_run_evaluation_continual_update_variant(
    data_root: Path, small_extractor: FeatureExtractor, tmp_path: Path
) -> None:
    store = InMemoryStore(small_extractor, model_factory=small_model)
    result = run_evaluation(
        data_root,
        out=tmp_path / "out",
        protocols=("continual",),
        store=store,
        model=small_model(),
        continual="update",
        update_steps=2,
        plots=False,
    )
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert set(results["protocols"]) == {"separate", "continual-update"}  # separate: the full fit on all images
    assert results["config"]["continual"] == "update" and results["config"]["update_steps"] == 2
    part = result.results["protocols"]["continual-update"]
    assert [row["n_train"] for row in part["per_category"]["pill"]["steps"]] == [4, 8]
    assert np.isfinite(part["max_abs_delta"]["frr"])
    assert "Continual (update variant)" in (tmp_path / "out" / "report.md").read_text()
    with pytest.raises(ValueError, match="continual variant"):
        run_evaluation(data_root, protocols=("continual",), store=store, continual="sideways")


def test_cli_continual_option() -> None:
    assert inspect.signature(eval_command).parameters["update_steps"].default == DEFAULT_UPDATE_STEPS
    result = CliRunner().invoke(app, ["eval", "/nonexistent", "--protocol", "continual", "--continual", "sideways"])
    assert result.exit_code == 1 and "--continual must be one of categories, update" in result.output


@pytest.mark.parametrize("geometry", ["fit", "tile"])
def test_update_variant_refuses_a_registry_that_is_not_squash(data_root: Path, tmp_path: Path, geometry: str) -> None:
    """fit and tile versions have no incremental update yet: refused before anything is fitted."""
    from registry import Registry

    Registry.init(tmp_path / "registry", resize=64, crop=64, input_geometry=geometry, tile_overlap=16).close()
    with pytest.raises(ValueError, match=f"incremental updates, which a registry with the {geometry} input"):
        run_evaluation(
            data_root, protocols=("continual",), continual="update", registry=tmp_path / "registry", dataset=None
        )
    with Registry.open(tmp_path / "registry", read_only=True) as registry:
        assert registry.names() == []
