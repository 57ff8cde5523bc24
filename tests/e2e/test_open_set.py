"""Open-set ``unknown`` with known answers: real embedded backbone, real registry, synthetic categories.

carpet and pill are registered; tile is left out. Tile's images must come back ``unknown`` (more
than 70% of their patches far from every registered prototype set), a registered category's
defective images must not (a defect, even a large one, changes a smaller share of the patches).
"""

from __future__ import annotations

import csv
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from cli.main import app
from cli.output import RECORD_KEYS
from evaluation import InMemoryStore, run_evaluation
from evaluation.synthetic import make_category, write_mvtec_layout
from structcore.features import FeatureExtractor
from structcore.model import CategoryModel

runner = CliRunner()
REGISTERED = ("carpet", "pill")
LEFT_OUT = "tile"


def invoke(*args: str) -> Result:
    return runner.invoke(app, list(args))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("open-set-data")
    for seed, kind in enumerate((*REGISTERED, LEFT_OUT)):
        write_mvtec_layout(make_category(kind, n_train=8, n_test_good=3, n_test_bad=3, seed=seed, size=128), root, kind)
    return root


@pytest.fixture(scope="module")
def registry_root(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("open-set-reg") / "registry"
    result = invoke("init", "--root", str(root), "--resize", "128", "--crop", "128")
    assert result.exit_code == 0, result.output
    for kind in REGISTERED:
        result = invoke(
            "add-category", kind, "--train", str(dataset / kind), "--root", str(root), "--coreset-ratio", "0.1"
        )
        assert result.exit_code == 0, result.output
    return root


def infer_json(root: Path, *folders: Path, out: Path | None = None) -> list[dict[str, Any]]:
    extra = ("--out", str(out)) if out is not None else ()
    result = invoke("infer", *(str(f) for f in folders), "--root", str(root), "--json", *extra)
    assert result.exit_code == 0, result.output
    records: list[dict[str, Any]] = json.loads(result.stdout)
    return records


def test_left_out_category_is_flagged_unknown(registry_root: Path, dataset: Path) -> None:
    records = infer_json(registry_root, dataset / LEFT_OUT / "test")
    assert len(records) == 6
    for record in records:
        assert record["unknown"] is True, record
        assert record["unknown_score"] > 1.0


def test_defective_registered_images_stay_known(registry_root: Path, dataset: Path) -> None:
    records = infer_json(registry_root, *(dataset / kind / "test" for kind in REGISTERED))
    left_out = infer_json(registry_root, dataset / LEFT_OUT / "test")
    assert len(records) == 12
    lowest_left_out = min(r["unknown_score"] for r in left_out)
    for record in records:
        assert record["category"] in record["path"]
        assert record["unknown_score"] < lowest_left_out  # every registered image ranks below the left-out ones
        # Good images and every defect stay known, carpet's "missing" patch included (it covers
        # about half of a 16x16 patch grid at 128 px, which the earlier far-share rule could flag).
        assert record["unknown"] is False, record
        assert record["unknown_score"] <= 1.0
    defective = [r for r in records if "/good/" not in r["path"]]
    assert len(defective) == 6


def test_unknown_score_in_json_and_csv(registry_root: Path, dataset: Path, tmp_path: Path) -> None:
    assert "unknown_score" in RECORD_KEYS
    out = tmp_path / "records.csv"
    records = infer_json(
        registry_root, dataset / LEFT_OUT / "test" / "good", dataset / "pill" / "test" / "good", out=out
    )
    with out.open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(records) == 6
    by_path = {r["path"]: r for r in records}
    for row in rows:
        assert float(row["unknown_score"]) == pytest.approx(by_path[row["path"]]["unknown_score"], rel=1e-5)
        assert (float(row["unknown_score"]) > 1.0) == (LEFT_OUT in row["path"])


def test_legacy_version_without_unknown_threshold_still_infers(
    registry_root: Path, dataset: Path, tmp_path: Path
) -> None:
    """A version fitted before revision 0003 (its new columns null) keeps the old route-threshold rule."""
    import shutil

    legacy = tmp_path / "legacy"
    shutil.copytree(registry_root, legacy)
    # Revision 0002 knew neither the new columns nor the metadata keys behind them (row and store agree).
    with sqlite3.connect(legacy / "registry.sqlite") as connection:
        connection.execute(
            "UPDATE category_versions SET unknown_statistic = NULL, unknown_threshold = NULL, far_threshold = NULL, "
            "metadata = json_remove(metadata, '$.unknown_threshold', '$.far_threshold')"
        )
    for attributes_file in legacy.glob("stores/*/*.zarr/zarr.json"):
        document = json.loads(attributes_file.read_text())
        for key in ("unknown_threshold", "far_threshold"):
            document["attributes"]["metadata"].pop(key, None)
        attributes_file.write_text(json.dumps(document))
    records = infer_json(legacy, dataset / "pill" / "test" / "good")
    assert len(records) == 3
    for record in records:
        assert record["error"] is None and record["category"] == "pill"
        assert isinstance(record["unknown"], bool)
    records = infer_json(legacy, dataset / LEFT_OUT / "test")
    assert all(r["error"] is None for r in records) and len(records) == 6


def test_open_set_protocol_on_three_synthetic_categories(
    dataset: Path, small_extractor: FeatureExtractor, tmp_path: Path
) -> None:
    store = InMemoryStore(small_extractor, model_factory=lambda: CategoryModel(coreset_ratio=0.1, n_prototypes=16))
    out = tmp_path / "out"
    run_evaluation(dataset, out=out, protocols=("open-set",), store=store, overlays_per_category=0, pixel=False)
    results = json.loads((out / "results.json").read_text())
    part = results["protocols"]["open-set"]
    assert set(part["per_category"]) == {*REGISTERED, LEFT_OUT}
    for name, figures in part["per_category"].items():
        assert figures["n_left_out"] == 6 and figures["n_registered"] == 12, name
        assert figures["unknown_auroc"] == 1.0, name  # every left-out image ranks above every registered one
        assert figures["flagged_left_out"] == 1.0, name
        assert figures["flagged_registered_good"] == 0.0, name
        assert figures["flagged_registered_defective"] == 0.0, name  # a defect is not a new product
    assert part["mean"]["unknown_auroc"] == 1.0
    report = (out / "report.md").read_text()
    assert "## Open set" in report and "| **mean** |" in report
    assert (out / "plots" / "open_set.png").is_file()
    assert "open_set.png" in " ".join(results["plots"])
