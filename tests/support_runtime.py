"""Helpers of the export / runtime tests: a small synthetic registry exported as onnx and openvino.

Holds no tests itself (``support_*``, so pytest does not collect it).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from registry import Registry
from registry.deploy import export_deployment
from tests.support_registry import make_base, write_data

KINDS = ("pill", "grid")
#: Relative tolerance of runtime (f32) scores against ``registry infer`` (issue 26).
RTOL = 1e-4

needs_onnxruntime = pytest.mark.skipif(
    importlib.util.find_spec("onnxruntime") is None or importlib.util.find_spec("onnx") is None,
    reason="onnx / onnxruntime not installed (pip install -e '.[deploy]')",
)
needs_openvino = pytest.mark.skipif(
    importlib.util.find_spec("openvino") is None, reason="openvino not installed (pip install -e '.[deploy]')"
)


def exported(tmp: Path, formats: tuple[str, ...] = ("onnx",)) -> dict[str, Path]:
    """A registry of two synthetic categories (128 px), its test images, and its export per format."""
    data = write_data(tmp / "data")
    root = make_base(tmp / "registry", data, KINDS)
    found: dict[str, Path] = {"registry": root, "images": tmp / "data"}
    with Registry.open(root) as registry:
        for export_format in formats:
            found[export_format] = export_deployment(registry, None, tmp / f"export-{export_format}", export_format)
    return found


def synthetic_test_images(images: Path) -> list[Path]:
    """Every test image of the synthetic categories (good and defective), sorted."""
    return sorted(path for kind in KINDS for path in (images / kind / "test").rglob("*.png"))


def assert_same_regions(found: object, expected: object) -> None:
    """Same regions (boxes and areas exactly; peak, mean and share within RTOL: the maps differ by float rounding)."""
    assert isinstance(found, list) and isinstance(expected, list)
    assert len(found) == len(expected), (found, expected)
    for mine, theirs in zip(found, expected, strict=True):
        assert {key: mine[key] for key in ("x", "y", "w", "h", "area")} == {
            key: theirs[key] for key in ("x", "y", "w", "h", "area")
        }
        for key in ("area_share", "peak", "mean"):
            assert mine[key] == pytest.approx(theirs[key], rel=RTOL), key
