"""`registry update`: new versions from the current one plus new good images (real SQLite, real zarr,
the embedded backbone on small synthetic images), image provenance, feedback from records files,
threshold carry-over, refits of versions without stored patches, and bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from typer.testing import CliRunner

from cli.main import app
from evaluation.synthetic import make_category, write_mvtec_layout
from registry import Registry
from registry.records import TRAIN_DISTANCES, TRAIN_PATCHES
from structcore.model import embed_images, fit_category
from tests.support_registry import SIZE, clone, db_rows, make_base, small_model, tree_hashes, write_data

runner = CliRunner()
Data = dict[str, tuple[list[Path], list[Path]]]


def invoke(*args: str):  # type: ignore[no-untyped-def]
    return runner.invoke(app, list(args))


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Data:
    return write_data(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="module")
def new_good(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four new good pill images (another seed) in a plain folder."""
    folder = write_mvtec_layout(make_category("pill", 4, 0, 0, 99, size=SIZE), tmp_path_factory.mktemp("new"), "pill")
    return folder / "train" / "good"


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory, data: Data) -> Path:
    return make_base(tmp_path_factory.mktemp("base") / "registry", data, ("pill",), keep_patches=True)


@pytest.fixture
def root(base: Path, tmp_path: Path) -> Path:
    return clone(base, tmp_path / "registry")


def update_json(root: Path, *args: str) -> dict[str, Any]:
    result = invoke("update", *args, "--root", str(root), "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def assert_untouched(root: Path, base: Path) -> None:
    assert db_rows(root, "pill") == db_rows(base, "pill")
    assert tree_hashes(root / "stores") == tree_hashes(base / "stores")


def test_update_continues_the_bank_and_records_the_images(root: Path, data: Data, new_good: Path) -> None:
    with Registry.open(root) as registry:
        parent = registry.load_category("pill")
        assert TRAIN_PATCHES in registry.version_info("pill").arrays
    result = update_json(root, "pill", "--add-good", str(new_good))
    assert result["mode"] == "update" and result["version"] == 2 and result["parent_version"] == 1
    assert len(result["added"]) == 4 and result["n_train_images"] == 10
    with Registry.open(root) as registry:
        model = registry.load_category("pill")
        assert registry.verify().ok
        patches = registry._read_checked(registry.version_info("pill"), TRAIN_PATCHES)
    # the old bank is kept as it was; the continuation picks among old and new patches, new first
    assert np.array_equal(model.bank_[: len(parent.bank_)], parent.bank_)
    assert len(model.bank_) == int(np.ceil(10 * 256 * parent.coreset_ratio))
    added_from = model.bank_image_ids_[len(parent.bank_) :]
    assert set(added_from) <= set(range(10)) and (added_from >= 6).any()
    assert patches.shape == (10, 256, 512) and patches.dtype == np.float16
    for kind in ("base", "struct", "hybrid"):
        assert model.calibration_scores_[kind].shape == (10,)
        assert np.isfinite(model.calibration_scores_[kind]).all()
    shown = invoke("show", "pill", "--images", "--root", str(root), "--json")
    assert shown.exit_code == 0, shown.output
    images = json.loads(shown.stdout)["images"]
    assert [item["source"] for item in images] == ["fit"] * 6 + ["update"] * 4
    assert all(len(item["sha256"]) == 64 for item in images)
    assert [Path(item["name"]).name for item in images[6:]] == sorted(p.name for p in new_good.glob("*.png"))
    text = invoke("show", "pill", "--images", "--root", str(root))
    assert text.exit_code == 0 and "update" in text.stdout
    # a second update with the same images adds nothing: one line, exit 1, version 2 stays
    again = invoke("update", "pill", "--add-good", str(new_good), "--root", str(root))
    assert again.exit_code == 1 and "nothing to add" in again.output
    with Registry.open(root) as registry:
        assert registry.current_version("pill") == 2


def test_update_scores_like_a_refit_on_the_same_images(root: Path, data: Data, new_good: Path) -> None:
    update_json(root, "pill", "--add-good", str(new_good))
    images = [*data["pill"][0], *sorted(new_good.glob("*.png"))]
    with Registry.open(root) as registry:
        updated = registry.load_category("pill")
        refit = fit_category(registry.extractor(), images, small_model())
        tests = embed_images(registry.extractor(), data["pill"][1])
    ours = updated.predict(tests).scores.hybrid
    theirs = refit.predict(tests).scores.hybrid
    # 10 tiny images: the banks differ (continued vs fitted at once), the ranking agrees; the
    # real-data comparison is benchmarks/update_cost.py's (docs/registry.md)
    assert np.corrcoef(ours, theirs)[0, 1] > 0.9
    assert np.isfinite(list(updated.thresholds.values())).all()


def test_threshold_operating_point_is_carried_as_an_frr_target(root: Path, new_good: Path) -> None:
    with Registry.open(root) as registry:
        train = registry.train_scores("pill")
    value = float(np.sort(train)[-2]) + 1e-9  # one of six train scores above it
    assert invoke("threshold", "pill", "--value", str(value), "--root", str(root)).exit_code == 0
    result = update_json(root, "pill", "--add-good", str(new_good))
    rule = result["calibration"]["threshold_rule"]
    assert rule["source"] == "update" and rule["rule"] == "value"
    assert rule["carried_frr"] == pytest.approx(1 / 6)
    with Registry.open(root) as registry:
        scores = registry.train_scores("pill")
    assert (scores > result["thresholds"]["hybrid"]).sum() == int(np.floor(len(scores) / 6))


def test_feedback_from_a_records_file(root: Path, data: Data, tmp_path: Path) -> None:
    records = tmp_path / "r.jsonl"
    tests = data["pill"][1]
    result = invoke("infer", *map(str, tests), "--category", "pill", "--out", str(records), "--root", str(root))
    assert result.exit_code == 0, result.output
    good = [p for p in tests if p.parent.name == "good"]
    paths = tmp_path / "good.txt"
    paths.write_text("".join(f"{p}\n" for p in good))
    out = update_json(root, "pill", "--from-records", str(records), "--paths-file", str(paths))
    assert out["mode"] == "update" and len(out["added"]) == len(good)
    shown = json.loads(invoke("show", "pill", "--images", "--root", str(root), "--json").stdout)
    assert [item["source"] for item in shown["images"]][-len(good) :] == ["feedback"] * len(good)


def test_records_file_that_does_not_name_the_paths(root: Path, base: Path, data: Data, tmp_path: Path) -> None:
    records = tmp_path / "r.jsonl"
    records.write_text(json.dumps({"path": str(data["pill"][1][0])}) + "\n")
    paths = tmp_path / "good.txt"
    paths.write_text(f"{data['pill'][1][1]}\n")
    result = invoke("update", "pill", "--from-records", str(records), "--paths-file", str(paths), "--root", str(root))
    assert result.exit_code == 1
    assert "not in the records file" in result.output and len(result.output.strip().splitlines()) == 1
    assert_untouched(root, base)


def test_bad_input_leaves_the_current_version(root: Path, base: Path, new_good: Path, tmp_path: Path) -> None:
    unknown = invoke("update", "nosuch", "--add-good", str(new_good), "--root", str(root))
    assert unknown.exit_code == 1 and "nosuch" in unknown.output
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "a.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    unreadable = invoke("update", "pill", "--add-good", str(broken), "--root", str(root), "--skip-bad")
    assert unreadable.exit_code == 1 and "none of the" in unreadable.output
    empty = tmp_path / "empty"
    empty.mkdir()
    nothing = invoke("update", "pill", "--add-good", str(empty), "--root", str(root))
    assert nothing.exit_code == 1
    both = invoke("update", "pill", "--root", str(root))
    assert both.exit_code == 1 and "--add-good" in both.output
    assert_untouched(root, base)


@pytest.mark.parametrize("damaged", [TRAIN_PATCHES, TRAIN_DISTANCES["loo"]])
def test_damaged_stored_patches(root: Path, base: Path, new_good: Path, damaged: str) -> None:
    with Registry.open(root) as registry:
        store = root / registry.version_info("pill").store_path
    array = zarr.open_array(str(store / damaged), mode="r+")
    array[0, 0, 0] = array[0, 0, 0] + 1
    before = tree_hashes(root / "stores")
    result = invoke("update", "pill", "--add-good", str(new_good), "--root", str(root))
    assert result.exit_code == 1 and "checksum" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert db_rows(root, "pill") == db_rows(base, "pill")
    assert tree_hashes(root / "stores") == before


def test_a_version_without_stored_patches_is_refitted_with_a_message(
    tmp_path: Path, data: Data, new_good: Path
) -> None:
    root = tmp_path / "old"
    with Registry.init(root, resize=SIZE, crop=SIZE) as registry:
        model = fit_category(registry.extractor(), data["pill"][0], small_model())  # no patches kept
        registry.add_fitted("pill", model, train_images=data["pill"][0])
        assert TRAIN_PATCHES not in registry.version_info("pill").arrays
    result = invoke("update", "pill", "--add-good", str(new_good), "--root", str(root))
    assert result.exit_code == 0, result.output
    assert "refitted" in result.output and "no stored patch vectors" in result.output
    with Registry.open(root) as registry:
        info = registry.version_info("pill")
        assert info.n_train_images == 10 and TRAIN_PATCHES in info.arrays
    # in-memory fits list no files: one line, exit 1
    root2 = tmp_path / "memory"
    with Registry.init(root2, resize=SIZE, crop=SIZE) as registry:
        registry.add_fitted("pill", model)
    failed = invoke("update", "pill", "--add-good", str(new_good), "--root", str(root2))
    assert failed.exit_code == 1 and "add-category" in failed.output


def test_add_category_stores_train_patches_only_when_asked(tmp_path: Path, data: Data, new_good: Path) -> None:
    root = tmp_path / "registry"
    assert invoke("init", "--root", str(root), "--resize", str(SIZE), "--crop", str(SIZE)).exit_code == 0
    train = str(data["pill"][0][0].parent)
    plain = invoke("add-category", "pill", "--train", train, "--root", str(root), "--coreset-ratio", "0.1")
    kept = invoke(
        "add-category", "grid", "--train", train, "--root", str(root), "--coreset-ratio", "0.1", "--keep-patches"
    )
    assert plain.exit_code == 0 and kept.exit_code == 0, plain.output + kept.output
    with Registry.open(root) as registry:
        assert TRAIN_PATCHES not in registry.version_info("pill").arrays  # the default: no 2.3 MB per image
        assert TRAIN_PATCHES in registry.version_info("grid").arrays
    updated = invoke("update", "grid", "--add-good", str(new_good), "--root", str(root))
    assert updated.exit_code == 0 and "refitted" not in updated.output, updated.output
