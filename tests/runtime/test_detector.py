"""Export -> runtime round trip: the runtime's records equal ``registry infer``'s (f32, within 1e-4)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from structcore_runtime import load
from structcore_runtime.records import RECORD_FIELDS

from registry import Registry
from tests.support_runtime import (
    RTOL,
    assert_same_regions,
    exported,
    needs_onnxruntime,
    needs_openvino,
    synthetic_test_images,
)

SCORES = ("route_score", "unknown_score", "score_base", "score_struct", "score_hybrid", "threshold")
SAME = ("path", "category", "version", "unknown", "anomalous", "error")


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    formats = ("onnx", "openvino") if _has("openvino") else ("onnx",)
    return exported(tmp_path_factory.mktemp("roundtrip"), formats)


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


@pytest.fixture(scope="module")
def reference(setup: dict[str, Path]) -> list[dict[str, object]]:
    with Registry.open(setup["registry"]) as registry:
        return [dict(record) for record in registry.detector().predict(synthetic_test_images(setup["images"]))]


def assert_equal_records(found: list[dict[str, object]], expected: list[dict[str, object]]) -> float:
    """Same decisions and fields; scores within RTOL. Returns the largest relative difference."""
    assert len(found) == len(expected)
    worst = 0.0
    for mine, theirs in zip(found, expected, strict=True):
        assert set(RECORD_FIELDS) <= set(mine)
        for field in SAME:
            assert mine[field] == theirs[field], (field, mine, theirs)
        for field in SCORES:
            a, b = float(mine[field]), float(theirs[field])  # type: ignore[arg-type]
            assert a == pytest.approx(b, rel=RTOL, abs=1e-9), (field, mine["path"], a, b)
            worst = max(worst, abs(a - b) / max(abs(b), 1e-12))
        assert_same_regions(mine["regions"], theirs["regions"])
    return worst


@needs_onnxruntime
def test_onnx_export_scores_like_registry_infer(setup: dict[str, Path], reference: list[dict[str, object]]) -> None:
    detector = load(setup["onnx"], backend="onnxruntime")
    assert detector.versions == {"grid": 1, "pill": 1}
    records = detector.predict(synthetic_test_images(setup["images"]))
    assert_equal_records(records, reference)
    assert any(record["regions"] for record in records)
    assert any(record["anomalous"] for record in records) and not all(record["anomalous"] for record in records)


@needs_openvino
def test_openvino_export_scores_like_registry_infer(setup: dict[str, Path], reference: list[dict[str, object]]) -> None:
    detector = load(setup["openvino"], backend="openvino", precision="f32")
    assert_equal_records(detector.predict(synthetic_test_images(setup["images"]), batch_size=3), reference)


@needs_onnxruntime
def test_forced_category_matches(setup: dict[str, Path]) -> None:
    images = synthetic_test_images(setup["images"])[:4]
    with Registry.open(setup["registry"]) as registry:
        expected = [dict(record) for record in registry.detector(["grid"]).predict(images, "grid")]
    assert_equal_records(load(setup["onnx"], backend="onnxruntime").predict(images, "grid"), expected)


@needs_onnxruntime
def test_manifest_lists_everything(setup: dict[str, Path]) -> None:
    manifest = json.loads((setup["onnx"] / "manifest.json").read_text())
    assert manifest["format"] == "structcore-export" and manifest["format_version"] == 1
    assert manifest["graph"]["input_size"] == [3, 128, 128] and manifest["graph"]["batch"] == "dynamic"
    assert [c["name"] for c in manifest["categories"]] == ["grid", "pill"]
    for category in manifest["categories"]:
        assert set(category["arrays"]) == {"bank", "prototypes"}
        bank = np.load(setup["onnx"] / category["arrays"]["bank"]["file"])
        assert list(bank.shape) == category["arrays"]["bank"]["shape"]
        assert {"mu", "sigma", "lambda", "thresholds"} <= set(category["calibrator"])
        assert category["unknown_statistic"] and category["route_threshold"] > 0
