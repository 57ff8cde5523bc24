"""``STRUCTCORE_BACKBONE_RUNTIME=onnx|openvino``: the registry's own extractor runs the exported graph."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from structcore.features import FeatureExtractor
from structcore.settings import backbone_runtime
from tests.support_runtime import needs_onnxruntime, needs_openvino


def test_setting_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRUCTCORE_BACKBONE_RUNTIME", "OpenVINO")
    assert backbone_runtime() == "openvino"
    assert backbone_runtime("torch") == "torch"  # the option wins over the variable
    monkeypatch.setenv("STRUCTCORE_BACKBONE_RUNTIME", "tensorrt")
    with pytest.raises(ValueError, match=r"STRUCTCORE_BACKBONE_RUNTIME must be one of auto, torch, onnx, openvino"):
        backbone_runtime()
    with pytest.raises(ValueError, match=r"--backbone-runtime must be one of"):
        backbone_runtime("tensorrt")


def test_auto_picks_openvino_then_onnxruntime_then_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STRUCTCORE_BACKBONE_RUNTIME", raising=False)
    installed = {"openvino", "onnxruntime", "onnx"}
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object() if name in installed else None)
    assert backbone_runtime() == backbone_runtime("auto") == "openvino"
    installed.discard("openvino")
    assert backbone_runtime() == "onnx"
    installed.discard("onnx")  # the graph cannot be exported
    assert backbone_runtime() == "torch"


RUNTIMES = [pytest.param("onnx", marks=needs_onnxruntime), pytest.param("openvino", marks=needs_openvino)]


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_graph_extractor_equals_torch(
    runtime: str, small_extractor: FeatureExtractor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STRUCTCORE_GRAPH_CACHE", str(tmp_path / "graphs"))
    backbone, projection, geometry = small_extractor.backbone, small_extractor.projection, small_extractor.geometry
    graph = FeatureExtractor(backbone, projection, geometry, runtime=runtime)
    images = torch.rand(3, 3, geometry.crop, geometry.crop) * 2 - 1
    expected = small_extractor.embed(images).numpy()
    found = graph.embed(images).numpy()
    assert found.shape == expected.shape
    assert np.abs(found - expected).max() <= 1e-4 * np.abs(expected).max()
    assert len(list((tmp_path / "graphs").glob("*.onnx"))) == 1  # exported once, then reused
    again = FeatureExtractor(backbone, projection, geometry, runtime=runtime)
    np.testing.assert_array_equal(again.embed(images).numpy(), found)
    assert len(list((tmp_path / "graphs").iterdir())) == 1
