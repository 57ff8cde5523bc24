"""``registry export --format onnx|openvino``: a folder that scores images without torch.

The folder (format of :mod:`structcore_runtime.export_format`) holds the feature graph (backbone,
local pooling, per-layer L2 norm, concatenation and W as one graph, :mod:`structcore.export_graph`),
each category's bank and prototypes as ``.npy`` arrays, and a ``manifest.json`` with the feature
space, the versions, the StructCore statistics, thresholds and unknown rules, and the sha256 of
every file. ``pip install ./runtime[onnx]`` (or ``[openvino]``) scores with it:
``registry-runtime infer EXPORT_DIR IMAGES... --out FILE.jsonl``.

The folder is written under a temporary name next to ``out`` and renamed at the end, so a
folder with a manifest is complete.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from structcore_runtime.export_format import (
    FORMAT_NAME,
    FORMAT_VERSION,
    GRAPH_INPUT,
    GRAPH_OUTPUT,
    array_entry,
    file_entry,
    write_manifest,
)

from registry.errors import RegistryError
from registry.models import utcnow
from registry.records import library_version

if TYPE_CHECKING:
    from registry.core import Registry

#: ``registry export --format``: the HDF5 bundle (default) or a deployable folder.
EXPORT_FORMATS = ("h5", "onnx", "openvino")
DEPLOY_FORMATS = ("onnx", "openvino")


def _category_entry(registry: Registry, folder: Path, name: str) -> dict[str, Any]:
    from structcore.routing import DEFAULT_UNKNOWN_STATISTIC

    stored = registry.read_version(name)  # checksum-verified arrays, no model built
    metadata = stored.metadata
    params = dict(metadata["params"])
    statistic = params.get("unknown_statistic")
    relative = f"categories/{name}"
    arrays = {
        array: array_entry(folder, f"{relative}/{array}.npy", stored.arrays[array]) for array in ("bank", "prototypes")
    }
    return {
        "name": name,
        "version": stored.info.version,
        "params": {
            "k": int(params["k"]),
            "sigma": float(params["sigma"]),
            "index": str(params.get("index", "flat")),
            "hnsw_m": 32,
            "hnsw_ef_search": 128,
            "bank_dtype": str(params.get("bank_dtype", "float32")),
        },
        "grid": list(metadata["grid"]),
        "map_size": int(metadata["map_size"]),
        "route_threshold": float(metadata["route_threshold"]),
        "unknown_threshold": metadata.get("unknown_threshold"),
        "unknown_statistic": str(statistic or DEFAULT_UNKNOWN_STATISTIC),
        "far_threshold": metadata.get("far_threshold"),
        "calibrator": metadata["calibrator"],
        "arrays": arrays,
    }


def export_deployment(
    registry: Registry, names: Sequence[str] | None, out: str | Path, export_format: str = "onnx"
) -> Path:
    """Write a deployable folder for the current versions of ``names`` (all when ``None``) at ``out``.

    Raises:
        RegistryError: an unknown format, no categories, ``out`` exists and is not an empty folder,
            or the graph cannot be exported (a missing ``onnx`` / ``openvino`` package).
    """
    if export_format not in DEPLOY_FORMATS:
        raise RegistryError(f"unknown export format {export_format!r}; choose one of {', '.join(DEPLOY_FORMATS)}")
    geometry = registry.feature_space.input_geometry
    if geometry != "squash":  # the exported runtime squashes every image: its scores would be wrong
        raise RegistryError(
            f"cannot export a registry with the {geometry} input geometry as --format {export_format}: "
            "the exported runtime only squashes images; export it as a bundle (the default format) instead"
        )
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise RegistryError(f"cannot export to {out}: it exists and is not an empty folder")
    wanted = list(dict.fromkeys(names if names is not None else registry.names()))
    if not wanted:
        raise RegistryError(f"nothing to export: the registry at {registry.root} has no categories")
    for package in ("onnx", *(["openvino"] if export_format == "openvino" else [])):
        try:
            __import__(package)
        except ImportError:
            raise RegistryError(
                f"--format {export_format} needs the {package} package: pip install -e '.[deploy]'"
            ) from None
    from structcore.export_graph import OPSET, convert_to_openvino, export_onnx
    from structcore.routing import DEFAULT_SHORTLIST

    space = registry.feature_space
    extractor = registry.extractor()
    tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.mkdir(parents=True)
    try:
        categories = [_category_entry(registry, tmp, name) for name in wanted]
        try:
            export_onnx(extractor, tmp / "model.onnx")
            if export_format == "openvino":
                convert_to_openvino(tmp / "model.onnx", tmp / "model.xml")
                (tmp / "model.onnx").unlink()
        except (RuntimeError, ValueError, TypeError, NotImplementedError) as error:  # torch / openvino refusals
            first = (str(error).strip().splitlines() or [type(error).__name__])[0]
            backbone = space.backbone
            problem = f"the {backbone} backbone cannot be exported as a {export_format} graph ({first})"
            raise RegistryError(problem) from error
        if export_format == "openvino":
            files = [file_entry(tmp, "model.xml"), file_entry(tmp, "model.bin")]
        else:
            files = [file_entry(tmp, "model.onnx")]
        info = registry.feature_space_info()
        import torch

        manifest: dict[str, Any] = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "library_version": library_version(),
            "torch_version": torch.__version__,
            "created_at": utcnow().isoformat() + "Z",
            "feature_space": {**space.describe(), "projection_sha256": info.get("projection_sha256")},
            "graph": {
                "format": export_format,
                "files": files,
                "input": GRAPH_INPUT,
                "output": GRAPH_OUTPUT,
                "input_size": [3, space.crop, space.crop],
                "batch": "dynamic",
                "grid": list(extractor.grid_shape()),
                "dim": space.dim,
                "opset": OPSET,
            },
            "shortlist": DEFAULT_SHORTLIST,
            "categories": categories,
        }
        write_manifest(tmp, manifest)
        if out.exists():
            out.rmdir()  # an empty folder, checked above
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


__all__ = ["DEPLOY_FORMATS", "EXPORT_FORMATS", "export_deployment"]
