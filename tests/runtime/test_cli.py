"""``registry-runtime infer``: records as ``registry infer``'s JSONL, no torch imported, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cli.output import RECORD_KEYS
from registry import Registry
from tests.support_runtime import assert_same_regions, exported, needs_onnxruntime, synthetic_test_images

NO_TORCH = """
import json, sys
from structcore_runtime import load
detector = load(sys.argv[1], backend="onnxruntime")
records = detector.predict(sys.argv[2:])
print("RESULT=" + json.dumps({"torch": "torch" in sys.modules, "scored": sum(r["error"] is None for r in records)}))
"""


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return exported(tmp_path_factory.mktemp("runtime-cli"))


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "structcore_runtime.cli", *args], capture_output=True, text=True, check=False
    )


@needs_onnxruntime
def test_scoring_through_the_runtime_imports_no_torch(setup: dict[str, Path]) -> None:
    images = [str(path) for path in synthetic_test_images(setup["images"])[:3]]
    completed = subprocess.run(
        [sys.executable, "-c", NO_TORCH, str(setup["onnx"]), *images], capture_output=True, text=True, check=False
    )
    line = next(line for line in completed.stdout.splitlines() if line.startswith("RESULT="))
    assert json.loads(line.removeprefix("RESULT=")) == {"torch": False, "scored": 3}


@needs_onnxruntime
def test_infer_writes_the_records_of_registry_infer(setup: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "results.jsonl"
    folder = setup["images"] / "pill" / "test"
    completed = run_cli("infer", str(setup["onnx"]), str(folder), "--out", str(out), "--backend", "onnxruntime")
    assert completed.returncode == 0, completed.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    with Registry.open(setup["registry"]) as registry:
        expected = registry.detector().predict(synthetic_test_images(setup["images"]))
    by_path = {record["path"]: record for record in expected}
    assert len(records) == len(list(folder.rglob("*.png")))
    for record in records:
        theirs = by_path[record["path"]]
        # every field of `registry infer`, in its order (the JSONL adds `overlay`, null here)
        assert list(record) == list(RECORD_KEYS)
        assert set(record) == {*theirs, "overlay"}
        assert_same_regions(record["regions"], theirs["regions"])
        assert (record["category"], record["version"], record["anomalous"]) == (
            theirs["category"],
            theirs["version"],
            theirs["anomalous"],
        )
        assert record["score_hybrid"] == pytest.approx(theirs["score_hybrid"], rel=1e-4)


@needs_onnxruntime
def test_unreadable_image_is_one_line_and_exit_1(setup: dict[str, Path], tmp_path: Path) -> None:
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    good = synthetic_test_images(setup["images"])[0]
    out = tmp_path / "r.jsonl"
    completed = run_cli("infer", str(setup["onnx"]), str(good), str(bad), "--out", str(out))
    assert completed.returncode == 1
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert records[0]["error"] is None and records[0]["score_hybrid"] is not None
    assert records[1]["error"] and records[1]["score_hybrid"] is None and records[1]["anomalous"] is None
    assert "Traceback" not in completed.stderr
    assert any(line.startswith("failed: ") and "broken.png" in line for line in completed.stderr.splitlines())


@needs_onnxruntime
def test_registry_export_format_onnx_from_the_command_line(setup: dict[str, Path], tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from cli.main import app

    runner = CliRunner()
    root = str(setup["registry"])
    out = tmp_path / "line-pc" / "pill"
    result = runner.invoke(app, ["export", "pill", "--format", "onnx", "--out", str(out), "--root", root, "--parents"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert [category["name"] for category in manifest["categories"]] == ["pill"]
    again = runner.invoke(app, ["export", "pill", "--format", "onnx", "--out", str(out), "--root", root])
    assert again.exit_code == 1 and "is not an empty folder" in again.output
    wrong = runner.invoke(app, ["export", "pill", "--format", "tflite", "--out", str(tmp_path / "x"), "--root", root])
    assert wrong.exit_code == 1 and "--format must be h5, onnx or openvino" in wrong.output
    assert not list(out.parent.glob(".*.tmp"))  # no leftover of the temporary folder
