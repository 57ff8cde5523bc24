"""Exports beyond the flat-index EfficientNet default: HNSW-index categories and a DINOv2 registry."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from structcore_runtime import load

from evaluation.synthetic import make_category, write_mvtec_layout
from registry import Registry
from registry.deploy import export_deployment
from structcore.model import CategoryModel
from tests.runtime.test_detector import assert_equal_records
from tests.support_dinov2 import make_random_state_dict
from tests.support_runtime import needs_onnxruntime


def _images(folder: Path, part: str) -> list[Path]:
    return sorted((folder / part).rglob("*.png"))


@needs_onnxruntime
def test_hnsw_category_runs_in_the_runtime(tmp_path: Path) -> None:
    folder = write_mvtec_layout(make_category("pill", 6, 2, 3, seed=1, size=96), tmp_path / "data", "pill")
    with Registry.init(tmp_path / "registry", resize=96, crop=96) as registry:
        registry.add_category("pill", _images(folder, "train"), CategoryModel(coreset_ratio=0.1, index="hnsw"))
        expected = [dict(r) for r in registry.detector().predict(_images(folder, "test"))]
        out = export_deployment(registry, None, tmp_path / "export", "onnx")
    detector = load(out, backend="onnxruntime")
    assert detector.categories["pill"].search.engine == "faiss"  # HNSW is searched as fitted
    assert_equal_records(detector.predict(_images(folder, "test")), expected)


@needs_onnxruntime
def test_dinov2_registry_runs_in_the_runtime(tmp_path: Path) -> None:
    weights = tmp_path / "dinov2_vits14_pretrain.pth"
    torch.save(make_random_state_dict("vits14", seed=3), weights)
    folder = write_mvtec_layout(make_category("pill", 4, 1, 2, seed=5, size=112), tmp_path / "data", "pill")
    with Registry.init(tmp_path / "registry", backbone="dinov2-vits14", weights=weights, resize=112, crop=112) as reg:
        reg.add_category("pill", _images(folder, "train"), CategoryModel(coreset_ratio=0.2, n_prototypes=4))
        expected = [dict(r) for r in reg.detector().predict(_images(folder, "test"))]
        out = export_deployment(reg, None, tmp_path / "export", "onnx")
    assert_equal_records(load(out, backend="onnxruntime").predict(_images(folder, "test")), expected)


pytestmark = pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
