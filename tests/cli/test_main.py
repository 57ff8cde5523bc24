"""The `registry` command end to end: CliRunner in-process and the installed console script."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from cli.main import app
from cli.output import CSV_KEYS, RECORD_KEYS
from evaluation.synthetic import make_category, write_mvtec_layout

runner = CliRunner()
REGISTRY_SCRIPT = Path(sys.executable).with_name("registry")


def invoke(*args: str, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    return runner.invoke(app, list(args), env=env)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    for kind, seed in [("carpet", 1), ("pill", 2)]:
        category = make_category(kind, n_train=8, n_test_good=3, n_test_bad=3, seed=seed, size=128)
        write_mvtec_layout(category, root, kind)
    return root


@pytest.fixture(scope="module")
def fitted_registry(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("reg") / "registry"
    result = invoke("init", "--root", str(root), "--resize", "128", "--crop", "128")
    assert result.exit_code == 0, result.output
    for kind, knn_index, scoring in (("carpet", "flat", []), ("pill", "hnsw", ["--scoring", "paper"])):
        result = invoke(
            "add-category", kind, "--train", str(dataset / kind), "--root", str(root), "--coreset-ratio", "0.1",
            "--knn-index", knn_index, *scoring,
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        assert f"added {kind} version 1" in result.output
        assert f"scoring {'paper' if scoring else 'robust'}" in result.output
    return root


def test_list_and_show_json(fitted_registry: Path) -> None:
    listed = json.loads(invoke("list", "--root", str(fitted_registry), "--json").stdout)
    assert [item["name"] for item in listed] == ["carpet", "pill"]
    shown = json.loads(invoke("show", "pill", "--root", str(fitted_registry), "--json").stdout)
    assert shown["versions"][0]["thresholds"]["hybrid"] > 0
    from registry import Registry

    registry = Registry.open(fitted_registry)
    assert registry.load_category("pill").knn().index == "hnsw"  # --knn-index is stored with the category
    assert registry.load_category("carpet").knn().index == "flat"
    # --scoring is stored with the version (in its calibrator state) and shown
    assert registry.load_category("pill").calibrator_.scoring == "paper"
    assert registry.load_category("carpet").calibrator_.scoring == "robust"
    registry.close()
    assert shown["versions"][0]["scoring"] == shown["versions"][0]["calibration"]["scoring"] == "paper"
    carpet = json.loads(invoke("show", "carpet", "--root", str(fitted_registry), "--json").stdout)
    assert carpet["versions"][0]["scoring"] == "robust"
    text = invoke("show", "carpet", "--root", str(fitted_registry), env={"COLUMNS": "200"}).stdout
    assert "scoring" in text and "robust" in text


def test_version_without_scoring_scores_as_paper(fitted_registry: Path, dataset: Path, tmp_path: Path) -> None:
    """A version fitted before the scoring was stored (no key anywhere) is the paper's, scores unchanged."""
    import sqlite3

    legacy = tmp_path / "legacy"
    shutil.copytree(fitted_registry, legacy)
    with sqlite3.connect(legacy / "registry.sqlite") as connection:
        connection.execute(
            "UPDATE category_versions SET calibration = json_remove(calibration, '$.scoring'), "
            "metadata = json_remove(metadata, '$.calibrator.scoring')"
        )
    for attributes_file in legacy.glob("stores/*/*.zarr/zarr.json"):
        document = json.loads(attributes_file.read_text())
        document["attributes"]["metadata"]["calibrator"].pop("scoring", None)
        attributes_file.write_text(json.dumps(document))
    shown = json.loads(invoke("show", "pill", "--root", str(legacy), "--json").stdout)
    assert "scoring" not in shown["versions"][0]["calibration"] and shown["versions"][0]["scoring"] == "paper"
    images = str(dataset / "pill" / "test")
    before = json.loads(invoke("infer", images, "--root", str(fitted_registry), "--category", "pill", "--json").stdout)
    after = json.loads(invoke("infer", images, "--root", str(legacy), "--category", "pill", "--json").stdout)
    assert len(after) == 6
    assert [r["score_hybrid"] for r in after] == [r["score_hybrid"] for r in before]


def test_add_category_refuses_unknown_scoring(dataset: Path, tmp_path: Path) -> None:
    result = invoke("add-category", "carpet", "--train", str(dataset / "carpet"), "--root", str(tmp_path / "r"),
                    "--scoring", "fancy")  # fmt: skip
    assert result.exit_code != 0
    assert "--scoring must be one of robust, paper" in result.output


def test_routed_infer_json(fitted_registry: Path, dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "results.csv"
    maps = tmp_path / "maps"
    result = invoke(
        "infer", str(dataset / "carpet" / "test"), str(dataset / "pill" / "test" / "good"),
        "--root", str(fitted_registry), "--json", "--out", str(out), "--maps", str(maps),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    records = json.loads(result.stdout)
    assert len(records) == 9
    for record in records:
        assert set(RECORD_KEYS) <= set(record)
        expected = "carpet" if "/carpet/" in record["path"] else "pill"
        assert record["category"] == expected
        assert record["error"] is None
    assert out.read_text().splitlines()[0].split(",") == list(CSV_KEYS)
    assert len(list(maps.glob("*.png"))) == 9


def test_bad_files_are_reported_and_skipped(fitted_registry: Path, dataset: Path, tmp_path: Path) -> None:
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    good = next((dataset / "pill" / "test" / "good").glob("*.png"))
    result = invoke("infer", str(good), str(bad), "--root", str(fitted_registry), "--json")
    assert result.exit_code == 1
    records = json.loads(result.stdout)
    assert records[0]["error"] is None and records[0]["category"] == "pill"
    assert "broken.png" in records[1]["error"]
    assert "Traceback" not in result.output


def test_clear_errors(fitted_registry: Path, tmp_path: Path) -> None:
    result = invoke("infer", "x.png", "--root", str(tmp_path / "nothing"))
    assert result.exit_code == 1 and "registry init" in result.output and "Traceback" not in result.output
    result = invoke("show", "screwdriver", "--root", str(fitted_registry))
    assert result.exit_code == 1 and "carpet" in result.output
    (tmp_path / "empty").mkdir()
    result = invoke("add-category", "x", "--train", str(tmp_path / "empty"), "--root", str(fitted_registry))
    assert result.exit_code == 1 and "holds no images" in result.output
    assert invoke("add-category", "x", "--root", str(fitted_registry)).exit_code == 2  # usage error
    result = invoke("add-category", "x", "--train", str(tmp_path), "--root", str(fitted_registry), "--knn-index", "ivf")
    assert result.exit_code == 1 and "--knn-index must be one of flat, hnsw" in result.output


def test_init_geometry(tmp_path: Path) -> None:
    root = tmp_path / "fit"
    result = invoke("init", "--root", str(root), "--resize", "128", "--crop", "128", "--geometry", "fit", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["feature_space"]["input_geometry"] == "fit"
    result = invoke("init", "--root", str(tmp_path / "tiled"), "--geometry", "tiles")
    assert result.exit_code == 1 and "--geometry must be one of squash, fit, tile, got 'tiles'" in result.output
    result = invoke("init", "--root", str(tmp_path / "tiled"), "--geometry", "tile", "--tile-overlap", "392")
    assert result.exit_code == 1 and "--tile-overlap must be an integer in [0, resize = 392)" in result.output
    result = invoke("init", "--root", str(tmp_path / "tiled"), "--geometry", "tile", "--crop", "300")
    assert result.exit_code == 1 and "--crop must be equal to resize (392) with --geometry tile" in result.output
    result = invoke(
        "init", "--root", str(tmp_path / "cropped"), "--resize", "448", "--crop", "392", "--geometry", "fit"
    )
    assert result.exit_code == 1 and "--crop must be equal to resize (448) with --geometry fit" in result.output
    assert not (tmp_path / "tiled").exists() and not (tmp_path / "cropped").exists()


def test_export_import_then_infer_subprocess(fitted_registry: Path, dataset: Path, tmp_path: Path) -> None:
    assert REGISTRY_SCRIPT.exists(), "the console script `registry` is not installed"
    env = {**os.environ, "STRUCTCORE_REGISTRY": str(tmp_path / "second")}
    bundle = tmp_path / "bundle.h5"

    def run(*args: str, root: Path | None = None) -> subprocess.CompletedProcess[str]:
        command = [str(REGISTRY_SCRIPT), *args] + (["--root", str(root)] if root else [])
        return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, check=False)

    exported = run("export", "carpet", "pill", "--out", str(bundle), root=fitted_registry)
    assert exported.returncode == 0, exported.stderr
    imported = run("import", str(bundle))  # root from $STRUCTCORE_REGISTRY; created from the bundle
    assert imported.returncode == 0, imported.stderr
    images = sorted((dataset / "pill" / "test").glob("*/*.png"))[:3]
    first = json.loads(run("infer", *map(str, images), "--json", root=fitted_registry).stdout)
    second = json.loads(run("infer", *map(str, images), "--json").stdout)
    for a, b in zip(first, second, strict=True):
        assert a["score_hybrid"] == b["score_hybrid"] and a["category"] == b["category"] == "pill"
    collision = run("import", str(bundle))
    assert collision.returncode == 1 and "--rename" in collision.stderr + collision.stdout


def test_infer_non_image_in_folder_is_ignored_but_named_file_fails(fitted_registry: Path, tmp_path: Path) -> None:
    folder = tmp_path / "inputs"
    folder.mkdir()
    Image.new("RGB", (64, 64), (90, 30, 30)).save(folder / "a.png")
    (folder / "notes.txt").write_text("hello")
    result = invoke("infer", str(folder), "--root", str(fitted_registry), "--json")
    assert result.exit_code == 0 and len(json.loads(result.stdout)) == 1
    shutil.copy(folder / "notes.txt", folder / "fake.jpg")
    result = invoke("infer", str(folder / "fake.jpg"), "--root", str(fitted_registry), "--json")
    assert result.exit_code == 1


def test_tile_registry_end_to_end(tmp_path: Path) -> None:
    """init --geometry tile, add a category of non-square images larger than a tile, infer with masks at their size."""
    category = make_category("carpet", n_train=6, n_test_good=1, n_test_bad=2, seed=4, size=200, height=120)
    write_mvtec_layout(category, tmp_path / "data", "carpet")
    root = tmp_path / "registry"
    result = invoke(
        "init", "--root", str(root), "--resize", "64", "--crop", "64", "--geometry", "tile",
        "--tile-max-side", "160", "--tile-overlap", "16",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "tile, max side 160, overlap 16" in " ".join(result.output.split())
    result = invoke("add-category", "carpet", "--train", str(tmp_path / "data" / "carpet"), "--root", str(root))
    assert result.exit_code == 0, result.output
    test = tmp_path / "data" / "carpet" / "test"
    masks = tmp_path / "masks"
    result = invoke("infer", str(test), "--root", str(root), "--json", "--masks", str(masks))
    assert result.exit_code == 0, result.output
    records = json.loads(result.stdout)
    assert len(records) == 3 and all(record["error"] is None for record in records)
    for record in records:
        with Image.open(record["mask"]) as mask:
            assert mask.size == (200, 120)  # the original size, not the capped 160 x 96 nor a tile
        for region in record["regions"]:
            assert region["x"] + region["w"] <= 200 and region["y"] + region["h"] <= 120
    result = invoke("export", "carpet", "--root", str(root), "--out", str(tmp_path / "deploy"), "--format", "onnx")
    assert result.exit_code == 1 and "tile input geometry" in result.output
