"""registry.deploy: a category exported as a torch-free folder (graph, arrays with checksums, manifest)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from registry import Registry, RegistryError
from registry.deploy import export_deployment
from tests.support_registry import make_base, write_data
from tests.support_runtime import needs_onnxruntime


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("deploy")
    return make_base(tmp / "registry", write_data(tmp / "data"), ("pill", "grid"))


@needs_onnxruntime
def test_every_file_of_the_manifest_is_there_with_its_checksum(root: Path, tmp_path: Path) -> None:
    with Registry.open(root, read_only=True) as registry:
        folder = export_deployment(registry, ["pill"], tmp_path / "export", "onnx")
        versions = {name: registry.version_info(name).version for name in ("pill",)}
    manifest = json.loads((folder / "manifest.json").read_text())
    assert [c["name"] for c in manifest["categories"]] == ["pill"]
    assert manifest["categories"][0]["version"] == versions["pill"]
    files = [entry for category in manifest["categories"] for entry in category["arrays"].values()]
    files += manifest["graph"]["files"]
    assert {Path(entry["file"]).name for entry in files} >= {"bank.npy", "prototypes.npy", "model.onnx"}
    for entry in files:
        assert hashlib.sha256((folder / entry["file"]).read_bytes()).hexdigest() == entry["sha256"], entry["file"]
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")], "a temporary folder was left behind"


def test_an_unknown_category_writes_nothing(root: Path, tmp_path: Path) -> None:
    with Registry.open(root, read_only=True) as registry, pytest.raises(RegistryError, match="unknown category"):
        export_deployment(registry, ["wood"], tmp_path / "export", "onnx")
    assert not (tmp_path / "export").exists()
