"""The feature extractor as one ONNX graph: backbone + local pooling + per-layer L2 norm + concat + W.

Input ``images``: normalised images (B, 3, S, S) float32 (as :meth:`FeatureExtractor.embed` takes
them; B dynamic, S the feature space's crop). Output ``patch_vectors``: (B, H*W, D) float32,
equal to :meth:`FeatureExtractor.embed` to float rounding (the backbone's BatchNorm-folded fast
trunk when it has one, its reference forward otherwise). The memory banks are never put into the
graph (anomalib's exports did, and users met 74-288 GB allocations and changed scores: anchors
§1.3); they stay plain arrays next to it (:mod:`registry.deploy`).

:func:`convert_to_openvino` writes the same graph as OpenVINO IR with float32 weights
(``compress_to_fp16=False``: OpenVINO's default would round the weights to float16).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import uuid
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from structcore_runtime.export_format import GRAPH_INPUT, GRAPH_OUTPUT
from torch import nn

from structcore.features import FeatureExtractor

#: ONNX opset of exported graphs.
OPSET = 17


class FeatureGraph(nn.Module):
    """:meth:`FeatureExtractor.embed` as a module whose only dynamic dimension is the batch."""

    def __init__(self, extractor: FeatureExtractor):
        super().__init__()
        backbone = extractor.backbone
        trunk = getattr(backbone, "fast_trunk", None)
        self.trunk: nn.Module | None = None
        if callable(trunk) and extractor.fast:
            built = trunk()
            self.trunk = getattr(built, "_orig_mod", built)  # not the torch.compile wrapper
        self.backbone = backbone
        self.channels = tuple(int(c) for c in backbone.info.channels)
        self.local_pool = int(backbone.info.local_pool)
        self.grid = extractor.grid_shape()
        self.projection: torch.Tensor
        self.register_buffer("projection", torch.from_numpy(extractor.projection.copy()))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        maps = self.trunk(images) if self.trunk is not None else self.backbone.extract(images)
        height, width = self.grid
        output: torch.Tensor | None = None
        offset = 0
        for layer, channels in zip(maps, self.channels, strict=True):
            layer = layer.float()
            if self.local_pool > 1:
                layer = F.avg_pool2d(layer, kernel_size=self.local_pool, stride=1, padding=self.local_pool // 2)
            if tuple(layer.shape[-2:]) != (height, width):
                layer = F.interpolate(layer, size=(height, width), mode="bilinear", align_corners=False)
            rows = layer.permute(0, 2, 3, 1).reshape(-1, channels)
            rows = rows / torch.linalg.vector_norm(rows, dim=1, keepdim=True).clamp_min(1e-12)
            part = rows @ self.projection[offset : offset + channels]
            output = part if output is None else output + part
            offset += channels
        assert output is not None
        return output.reshape(-1, height * width, int(self.projection.shape[1]))


def export_onnx(extractor: FeatureExtractor, path: str | Path, batch: int = 2) -> Path:
    """Write the extractor's graph to ``path`` (``.onnx``, dynamic batch); returns the path."""
    path = Path(path)
    graph = FeatureGraph(extractor).eval()
    side = extractor.geometry.crop
    dummy = torch.zeros(batch, 3, side, side)
    with torch.no_grad(), warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            graph,
            (dummy,),
            str(path),
            input_names=[GRAPH_INPUT],
            output_names=[GRAPH_OUTPUT],
            dynamic_axes={GRAPH_INPUT: {0: "batch"}, GRAPH_OUTPUT: {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )
    return path


def convert_to_openvino(onnx_path: str | Path, xml_path: str | Path) -> tuple[Path, Path]:
    """Convert an exported ``.onnx`` graph to OpenVINO IR (``.xml`` + ``.bin``), weights kept in float32."""
    import openvino as ov

    xml_path = Path(xml_path)
    model = ov.convert_model(str(onnx_path))
    ov.save_model(model, str(xml_path), compress_to_fp16=False)
    return xml_path, xml_path.with_suffix(".bin")


#: Folder of the graphs that ``STRUCTCORE_BACKBONE_RUNTIME=onnx|openvino`` runs (default
#: ``$XDG_CACHE_HOME/structcore/graphs``, else ``~/.cache/structcore/graphs``).
GRAPH_CACHE_ENV = "STRUCTCORE_GRAPH_CACHE"


def graph_cache_dir() -> Path:
    """Where exported graphs of the registry's own extractor are kept (see :data:`GRAPH_CACHE_ENV`)."""
    configured = os.environ.get(GRAPH_CACHE_ENV)
    if configured:
        return Path(configured).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "structcore" / "graphs"


def cached_onnx(extractor: FeatureExtractor) -> Path:
    """The extractor's graph as an ``.onnx`` file, exported once per (weights, W, size, torch version)."""
    info = extractor.backbone.info
    facts = [info.name, info.weights_sha256, list(info.channels), info.local_pool, extractor.geometry.crop]
    facts += [extractor.fast, torch.__version__, OPSET]
    key = hashlib.sha256(json.dumps(facts).encode() + extractor.projection.tobytes()).hexdigest()[:20]
    folder = graph_cache_dir()
    path = folder / f"{info.name}-{extractor.geometry.crop}-{key}.onnx"
    if not path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            export_onnx(extractor, tmp)
            tmp.replace(path)
        finally:
            tmp.unlink(missing_ok=True)
    return path
