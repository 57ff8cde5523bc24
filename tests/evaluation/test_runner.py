"""run_evaluation end to end: real embedded backbone, tiny synthetic categories, every output file."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from evaluation import InMemoryStore, Progress, RegistryStore, load_mvtec, run_evaluation
from evaluation.synthetic import make_category, write_mvtec_layout
from registry import Registry
from structcore.features import FeatureExtractor
from structcore.model import CategoryModel

KINDS = ("carpet", "pill")


def small_model() -> CategoryModel:
    return CategoryModel(coreset_ratio=0.05, n_prototypes=16)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("eval-data")
    for seed, kind in enumerate(KINDS):
        write_mvtec_layout(make_category(kind, 6, 2, 3, seed=seed, size=128), root, kind)
    return root


def test_run_all_protocols_in_memory(data_root: Path, small_extractor: FeatureExtractor, tmp_path: Path) -> None:
    events: list[Progress] = []
    store = InMemoryStore(small_extractor, model_factory=small_model)
    result = run_evaluation(
        data_root,
        out=tmp_path / "out",
        protocols=("separate", "muad", "continual"),
        store=store,
        order=["pill", "carpet"],
        overlays_per_category=2,
        progress=events.append,
    )
    out = tmp_path / "out"
    results = json.loads((out / "results.json").read_text())  # strict JSON: NaN would be null
    assert results["config"]["categories"] == ["pill", "carpet"]
    assert results["config"]["dataset"] is None  # synthetic defects: not taken for MVTec AD
    assert set(results["protocols"]) == {"separate", "muad", "continual"}
    muad = results["protocols"]["muad"]
    assert muad["routing"]["accuracy"] == 1.0
    assert muad["routing"]["confusion"] == {"labels": ["pill", "carpet"], "matrix": [[5, 0], [0, 5]]}
    for name in KINDS:
        metrics = muad["per_category"][name]
        assert metrics["n_test"] == 5 and metrics["n_anomalous"] == 3
        for key in ("image_auroc_base", "image_auroc_struct", "image_auroc_hybrid", "pixel_auroc", "aupro"):
            assert 0.0 <= metrics[key] <= 1.0
        assert metrics["pixel_auroc"] > 0.8
        # With perfect routing, MUAD equals the separate (oracle) protocol.
        oracle = results["protocols"]["separate"]["per_category"][name]
        routing_keys = {"routing_accuracy", "unknown_rate", "unknown_rate_good", "unknown_rate_anomalous"}
        assert {k: v for k, v in metrics.items() if k not in routing_keys} == pytest.approx(
            {k: v for k, v in oracle.items() if k not in routing_keys}
        )
        assert metrics["routing_accuracy"] == 1.0 and oracle["routing_accuracy"] is None
    continual = results["protocols"]["continual"]
    assert continual["order"] == [["pill"], ["carpet"]]
    assert continual["matrix"]["image_auroc_hybrid"][0][1] is None
    assert continual["forgetting"]["image_auroc_hybrid"] == 0.0
    assert results["categories"]["pill"]["fit"]["reused"] is False
    assert results["categories"]["pill"]["model"]["coreset_ratio"] == 0.05
    assert {"numpy", "torch", "python"} <= set(results["versions"])
    assert results["timings"]["n_test_images"] == 10 and results["timings"]["total_s"] > 0

    with (out / "per_category.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    # separate + muad: 2 categories + mean each; continual: step 0 (1 + mean), step 1 (2 + mean).
    assert len(rows) == 3 + 3 + 2 + 3
    assert {r["protocol"] for r in rows} == {"separate", "muad", "continual"}
    assert float(rows[0]["image_auroc_hybrid"]) == pytest.approx(
        results["protocols"]["separate"]["per_category"]["pill"]["image_auroc_hybrid"]
    )
    report = (out / "report.md").read_text()
    for heading in ("## Separate", "## MUAD", "## Continual", "| **mean** |", "Forgetting FM"):
        assert heading in report
    assert "[" not in report  # safe to print through rich's markup
    for plot in results["plots"]:
        assert (out / plot).stat().st_size > 1000
    assert {Path(p).name for p in results["plots"]} >= {
        "scatter_base_hybrid.png",
        "histograms.png",
        "roc.png",
        "pill.png",
        "carpet.png",
        "continual_heatmap.png",
        "routing_confusion.png",
    }
    assert not (out / ".maps").exists()
    # Progress: every test image reported, categories in order, a final "done".
    tests = [e for e in events if e.stage == "test" and e.done == e.total]
    assert [e.category for e in tests] == ["pill", "carpet"]
    assert events[-1].stage == "done"
    assert result.mean("continual")["image_auroc_hybrid"] == pytest.approx(
        continual["final"]["mean"]["image_auroc_hybrid"]
    )


def test_run_with_registry_reuses_fits(data_root: Path, tmp_path: Path) -> None:
    registry = Registry.init(tmp_path / "reg", resize=128, crop=128)
    registry.add_category("pill", sorted((data_root / "pill" / "train" / "good").glob("*.png")), small_model())
    store = RegistryStore(registry, model=small_model())
    first = run_evaluation(data_root, protocols=("muad",), store=store, plots=False)
    assert first.out is None and first.files == []
    facts = first.results["categories"]
    assert facts["pill"]["fit"]["reused"] is True and facts["carpet"]["fit"]["reused"] is False
    assert sorted(registry.names()) == ["carpet", "pill"]
    second = run_evaluation(data_root, protocols=("muad",), registry=tmp_path / "reg", plots=False, pixel=False)
    assert all(f["fit"]["reused"] for f in second.results["categories"].values())
    assert second.results["store"]["kind"] == "registry"
    for name in KINDS:
        a = first.per_category("muad")[name]
        b = second.per_category("muad")[name]
        assert a["image_auroc_hybrid"] == b["image_auroc_hybrid"]
        assert np.isnan(b["pixel_auroc"])
    assert first.results["protocols"]["muad"]["routing"]["accuracy"] == 1.0
    registry.close()


def test_run_rejects_bad_arguments(data_root: Path, small_extractor: FeatureExtractor) -> None:
    store = InMemoryStore(small_extractor, model_factory=small_model)
    with pytest.raises(ValueError, match="unknown protocols: oracle"):
        run_evaluation(data_root, protocols=("oracle",), store=store)
    with pytest.raises(ValueError, match="named continual order"):
        run_evaluation(data_root, protocols=("continual",), order="10-5", store=store)
    dataset = load_mvtec(data_root)
    with pytest.raises(ValueError, match="not in the dataset: bottle"):
        run_evaluation(dataset, protocols=("continual",), order=["bottle"], store=store)
