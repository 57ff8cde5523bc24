"""The exported folder: its manifest, its arrays and their checksums (format version 1).

```
EXPORT_DIR/
  manifest.json            format, format_version, library versions, feature space, graph, categories
  model.onnx               (--format onnx)  or  model.xml + model.bin (--format openvino)
  categories/NAME/bank.npy, prototypes.npy
```

The graph takes normalised images (B, 3, S, S) float32 (``(x - mean) / std`` of pixels in [0, 1],
S = the feature space's crop) and returns projected patch vectors (B, P, D): the backbone, the
local pooling, the per-layer L2 normalisation, the concatenation and the projection W in one
graph. Every file is listed in the manifest with its sha256; :func:`read_manifest` and
:func:`load_array` refuse anything that differs, with one line.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

FORMAT_NAME = "structcore-export"
#: Bumped when a reader of the previous version would misread a folder.
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
GRAPH_INPUT = "images"
GRAPH_OUTPUT = "patch_vectors"


class ExportError(Exception):
    """An exported folder that cannot be used (one line: the folder or file, and why)."""


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_entry(folder: Path, relative: str) -> dict[str, Any]:
    """The manifest entry of a file written into ``folder``: its relative path and sha256."""
    return {"file": relative, "sha256": sha256_file(folder / relative)}


def array_entry(folder: Path, relative: str, array: np.ndarray) -> dict[str, Any]:
    """Write ``array`` as ``.npy`` at ``folder/relative`` and return its manifest entry."""
    target = folder / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    np.save(target, np.ascontiguousarray(array), allow_pickle=False)
    return {**file_entry(folder, relative), "shape": [int(v) for v in array.shape], "dtype": str(array.dtype)}


def check_file(folder: Path, entry: dict[str, Any]) -> Path:
    """The path of a listed file after checking that it exists and matches its sha256."""
    relative = str(entry.get("file", ""))
    path = folder / relative
    if not relative or Path(relative).is_absolute() or ".." in Path(relative).parts:
        raise ExportError(f"{folder / MANIFEST}: file entry {relative!r} is not a path inside the folder")
    if not path.is_file():
        raise ExportError(f"{path}: missing (listed in {MANIFEST})")
    if sha256_file(path) != entry.get("sha256"):
        raise ExportError(f"{path}: does not match its sha256 in {MANIFEST} (altered or damaged)")
    return path


def load_array(folder: Path, entry: dict[str, Any]) -> np.ndarray:
    """A listed ``.npy`` array, checked (sha256, shape, dtype)."""
    path = check_file(folder, entry)
    try:  # the .npy reader with pickles refused (an object array is an error, never unpickled)
        with path.open("rb") as handle:
            array = np.lib.format.read_array(handle, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise ExportError(f"{path}: not a readable .npy array ({error})") from error
    if list(array.shape) != list(entry.get("shape", [])) or str(array.dtype) != entry.get("dtype"):
        raise ExportError(f"{path}: shape {list(array.shape)} {array.dtype} differs from {MANIFEST}")
    return array


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """The manifest of an exported folder, after checking its format and format version."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not folder.is_dir():
        raise ExportError(f"{folder}: not a folder (pass the folder written by `registry export --format ...`)")
    if not path.is_file():
        raise ExportError(f"{folder}: no {MANIFEST} (not a folder written by `registry export --format ...`)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ExportError(f"{path}: not readable JSON ({error})") from error
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise ExportError(f"{path}: not a StructCore export manifest")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise ExportError(
            f"{folder}: export format version {version}, this runtime reads version {FORMAT_VERSION}; "
            "export again with the registry that matches this runtime, or install the matching runtime"
        )
    for key in ("feature_space", "graph", "categories"):
        if key not in manifest:
            raise ExportError(f"{path}: has no {key!r}")
    if not manifest["categories"]:
        raise ExportError(f"{path}: holds no categories")
    return manifest


def write_manifest(folder: Path, manifest: dict[str, Any]) -> Path:
    """Write ``manifest.json`` (last: a folder without it is incomplete)."""
    path = folder / MANIFEST
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path
