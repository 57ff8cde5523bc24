"""StructCore runtime: score images with a folder exported by ``registry export --format onnx|openvino``.

No torch: numpy, Pillow, faiss and ONNX Runtime or OpenVINO. The maps (:mod:`.maps`), scores
(:mod:`.scores`), kNN (:mod:`.knn`) and routing statistics (:mod:`.routing`) are the one
implementation the main ``structcore`` package uses too. ``load(folder)`` returns an
:class:`~structcore_runtime.detector.ExportedDetector` (imported on first use, so that importing
this package or its numpy modules loads neither faiss nor a graph runtime).
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in {"load", "ExportedDetector", "ExportError"}:
        from structcore_runtime import detector

        return getattr(detector, name)
    raise AttributeError(name)


__all__ = ["ExportError", "ExportedDetector", "__version__", "load"]
