"""Hostile exported folders: one-line refusals (runtime CLI exit 1), never a wrong score (issue 26).

Each case damages a copy of a good export: another format version, a missing array, an altered
array or graph (checksum), a graph whose input size disagrees with the manifest, a malformed
manifest, and images the graph cannot take.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from structcore_runtime import ExportError, load

from tests.support_runtime import exported, needs_onnxruntime, synthetic_test_images

pytestmark = needs_onnxruntime


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return exported(tmp_path_factory.mktemp("hostile"))


def _manifest(folder: Path) -> dict[str, object]:
    return json.loads((folder / "manifest.json").read_text())


def _write_manifest(folder: Path, manifest: dict[str, object]) -> None:
    (folder / "manifest.json").write_text(json.dumps(manifest))


def other_format_version(folder: Path) -> None:
    manifest = _manifest(folder)
    manifest["format_version"] = 2
    _write_manifest(folder, manifest)


def missing_bank(folder: Path) -> None:
    (folder / "categories" / "pill" / "bank.npy").unlink()


def altered_bank(folder: Path) -> None:
    path = folder / "categories" / "pill" / "bank.npy"
    bank = np.load(path)
    bank[0, 0] += 1.0  # a valid array, same shape: only the checksum can tell
    np.save(path, bank)


def altered_graph(folder: Path) -> None:
    path = folder / "model.onnx"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def input_size_disagrees(folder: Path) -> None:
    manifest = _manifest(folder)
    space, graph = manifest["feature_space"], manifest["graph"]
    assert isinstance(space, dict) and isinstance(graph, dict)
    space["crop"] = space["resize"] = 96
    graph["input_size"] = [3, 96, 96]
    _write_manifest(folder, manifest)


def manifest_size_inconsistent(folder: Path) -> None:
    manifest = _manifest(folder)
    graph = manifest["graph"]
    assert isinstance(graph, dict)
    graph["input_size"] = [3, 64, 64]
    _write_manifest(folder, manifest)


def malformed_manifest(folder: Path) -> None:
    (folder / "manifest.json").write_text("{not json")


def manifest_without_categories(folder: Path) -> None:
    manifest = _manifest(folder)
    del manifest["categories"]
    _write_manifest(folder, manifest)


def escaping_path(folder: Path) -> None:
    manifest = _manifest(folder)
    categories = manifest["categories"]
    assert isinstance(categories, list)
    categories[0]["arrays"]["bank"]["file"] = "../../etc/passwd"
    _write_manifest(folder, manifest)


CASES: dict[str, tuple[Callable[[Path], None], str]] = {
    "other format version": (other_format_version, "format version 2"),
    "missing array": (missing_bank, "missing"),
    "altered array": (altered_bank, "does not match its sha256"),
    "altered graph": (altered_graph, "does not match its sha256"),
    "graph input size disagrees": (input_size_disagrees, "the graph takes input"),
    "manifest input size inconsistent": (manifest_size_inconsistent, "disagrees"),
    "malformed manifest": (malformed_manifest, "not readable JSON"),
    "no categories": (manifest_without_categories, "has no 'categories'"),
    "path outside the folder": (escaping_path, "not a path inside the folder"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_hostile_folder_is_refused_with_one_line(good: dict[str, Path], tmp_path: Path, case: str) -> None:
    damage, expected = CASES[case]
    folder = shutil.copytree(good["onnx"], tmp_path / "export")
    damage(folder)
    with pytest.raises(ExportError, match=expected):
        load(folder, backend="onnxruntime")
    image = synthetic_test_images(good["images"])[0]
    out = tmp_path / "r.jsonl"
    completed = subprocess.run(
        [sys.executable, "-m", "structcore_runtime.cli", "infer", str(folder), str(image), "--out", str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert completed.returncode == 1
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], completed.stderr
    assert not out.exists()  # no record, so no score at all


def test_not_an_export(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match=r"no manifest\.json"):
        load(tmp_path)
    with pytest.raises(ExportError, match="not a folder"):
        load(tmp_path / "nowhere")


def test_images_the_graph_cannot_take(good: dict[str, Path], tmp_path: Path) -> None:
    detector = load(good["onnx"], backend="onnxruntime")
    with pytest.raises(ExportError, match="the graph takes input"):
        detector.embed(np.zeros((1, 3, 64, 64), dtype=np.float32))
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    image = synthetic_test_images(good["images"])[0]
    records = detector.predict([text, image, empty, tmp_path / "absent.png"])
    assert [record["error"] is None for record in records] == [False, True, False, False]
    for record in (records[0], records[2], records[3]):
        assert record["score_hybrid"] is None and record["anomalous"] is None and "\n" not in record["error"]


def test_graph_returning_non_finite_values_gives_no_score(good: dict[str, Path]) -> None:
    detector = load(good["onnx"], backend="onnxruntime")
    image = synthetic_test_images(good["images"])[0]

    class NanGraph:
        backend, precision, input_shape = "test", "f32", (None, 3, 128, 128)

        def run(self, images: np.ndarray) -> np.ndarray:
            return np.full((len(images), 256, 512), np.nan, dtype=np.float32)

    detector.session = NanGraph()  # type: ignore[assignment]
    (record,) = detector.predict([image])
    assert record["score_hybrid"] is None and "non-finite" in record["error"]
