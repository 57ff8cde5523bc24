"""Dataset loaders (MVTec AD, VisA, plain folder), manifests and the copy check of evaluation."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from evaluation import (
    DatasetLayoutError,
    category_digest,
    check_dataset,
    continual_orders,
    detect_layout,
    load_dataset,
    load_folder,
    load_manifest,
    load_mvtec,
    load_visa,
)
from evaluation.manifest import MANIFEST_DIR
from evaluation.synthetic import make_category, write_mvtec_layout


def _png(path: Path, size: int = 8, value: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size), value, dtype=np.uint8)).save(path)
    return path


# ------------------------------------------------------------------------------------ MVTec
@pytest.fixture(scope="module")
def mvtec_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("mvtec")
    write_mvtec_layout(make_category("pill", 4, 2, 4, seed=0, size=32), root, "pill")
    write_mvtec_layout(make_category("tile", 3, 1, 2, seed=1, size=32), root, "tile")
    return root


def test_mvtec_layout(mvtec_root: Path) -> None:
    dataset = load_mvtec(mvtec_root)
    assert dataset.names == ["pill", "tile"] and dataset.layout == "mvtec"
    pill = dataset.categories["pill"]
    assert len(pill.train) == 4 and len(pill.test) == 6
    assert pill.n_good == 2 and pill.n_anomalous == 4
    assert list(pill.labels[:2]) == [0, 0] and all(d == "good" for d in pill.defects[:2])
    for label, mask, image in zip(pill.labels, pill.masks, pill.test, strict=True):
        if label == 0:
            assert mask is None
        else:
            assert mask is not None and mask.name == f"{image.stem}_mask.png" and mask.parent.name == image.parent.name
    assert pill.counts()["train"] == {"good": 4}
    assert sum(pill.counts()["test"].values()) == 6
    single = load_mvtec(mvtec_root / "tile")
    assert single.names == ["tile"]
    assert load_dataset(mvtec_root, categories=["tile"]).names == ["tile"]
    assert detect_layout(mvtec_root) == "mvtec"


def test_mvtec_layout_errors(tmp_path: Path, mvtec_root: Path) -> None:
    broken = tmp_path / "broken"
    _png(broken / "widget" / "test" / "good" / "000.png")
    with pytest.raises(DatasetLayoutError, match="has no train/good folder; expected the MVTec AD layout"):
        load_mvtec(broken)
    with pytest.raises(DatasetLayoutError, match="does not exist"):
        load_mvtec(tmp_path / "nowhere")
    with pytest.raises(DatasetLayoutError, match=r"categories not found .*: bottle; found: pill, tile"):
        load_mvtec(mvtec_root, ["bottle"])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetLayoutError, match="cannot tell the layout"):
        detect_layout(empty)
    no_test = tmp_path / "no_test" / "widget"
    _png(no_test / "train" / "good" / "000.png")
    with pytest.raises(DatasetLayoutError, match="has no test folder"):
        load_mvtec(no_test)


def test_subset_is_stratified(mvtec_root: Path) -> None:
    pill = load_mvtec(mvtec_root).categories["pill"]
    small = pill.subset(max_test=3, max_train=2, seed=1)
    assert len(small.train) == 2 and len(small.test) == 3
    assert small.n_good >= 1 and small.n_anomalous >= 1
    assert set(small.test) <= set(pill.test)


# ------------------------------------------------------------------------------------- VisA
def _write_visa(root: Path, objects: dict[str, tuple[int, int, int]], drop: int = 0) -> Path:
    """A VisA-like copy: objects -> (train normal, test normal, test anomaly)."""
    rows = []
    for name, (n_train, n_test, n_bad) in objects.items():
        for i in range(n_train + n_test):
            image = f"{name}/Data/Images/Normal/{i:04d}.JPG"
            _png(root / image)
            rows.append([name, "train" if i < n_train else "test", "normal", image, ""])
        for i in range(n_bad):
            image, mask = f"{name}/Data/Images/Anomaly/{i:03d}.JPG", f"{name}/Data/Masks/Anomaly/{i:03d}.png"
            _png(root / image)
            _png(root / mask, value=255)
            rows.append([name, "test", "anomaly", image, mask])
    (root / "split_csv").mkdir(parents=True, exist_ok=True)
    with (root / "split_csv" / "1cls.csv").open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\r\n")
        writer.writerow(["object", "split", "label", "image", "mask"])
        writer.writerows(rows)
    for row in rows[:drop]:
        (root / row[3]).unlink()
    return root


def test_visa_layout(tmp_path: Path) -> None:
    root = _write_visa(tmp_path / "visa", {"candle": (5, 2, 3), "pcb1": (4, 1, 2)})
    assert detect_layout(root) == "visa"
    dataset = load_dataset(root)
    assert dataset.layout == "visa" and dataset.names == ["candle", "pcb1"]
    candle = dataset.categories["candle"]
    assert len(candle.train) == 5 and candle.n_good == 2 and candle.n_anomalous == 3
    assert all(m is None for m in candle.masks[:2]) and all(m is not None for m in candle.masks[2:])
    assert set(candle.defects) == {"good", "anomaly"}
    assert load_visa(root, ["pcb1"]).names == ["pcb1"]


def test_visa_errors(tmp_path: Path) -> None:
    root = _write_visa(tmp_path / "partial", {"candle": (5, 2, 3)}, drop=2)
    with pytest.raises(DatasetLayoutError, match=r"2 files listed in 1cls\.csv are missing .* partial copy"):
        load_visa(root)
    assert len(load_visa(root, require_files=False).categories["candle"].train) == 3
    with pytest.raises(DatasetLayoutError, match=r"objects not in 1cls\.csv: fryum"):
        load_visa(root, ["fryum"], require_files=False)
    bad = tmp_path / "bad"
    (bad / "split_csv").mkdir(parents=True)
    (bad / "split_csv" / "1cls.csv").write_text("object,image\ncandle,x.JPG\n")
    with pytest.raises(DatasetLayoutError, match="expected VisA's object,split,label,image,mask"):
        load_visa(bad)
    with pytest.raises(DatasetLayoutError, match=r"split_csv/1cls\.csv"):
        load_visa(tmp_path / "partial" / "candle")


# ------------------------------------------------------------------------------ plain folder
def test_folder_layout(tmp_path: Path) -> None:
    part = tmp_path / "parts" / "gasket"
    for i in range(10):
        _png(part / "good" / f"g{i}.png")
    for i in range(3):
        _png(part / "scratch" / f"s{i}.png")
        _png(part / "masks" / "scratch" / f"s{i}_mask.png", value=255)
    _png(part / "dent" / "d0.png")  # no mask
    assert detect_layout(part) == "folder"
    dataset = load_folder(part)
    gasket = dataset.categories["gasket"]
    assert len(gasket.train) == 8 and gasket.n_good == 2 and gasket.n_anomalous == 4
    assert not set(gasket.train) & set(gasket.test)
    by_name = dict(zip([p.name for p in gasket.test], gasket.masks, strict=True))
    assert by_name["s1.png"] is not None and by_name["d0.png"] is None
    assert all(by_name[p.name] is None for p, label in zip(gasket.test, gasket.labels, strict=True) if label == 0)
    assert load_folder(part, seed=0).categories["gasket"].test == gasket.test  # seeded
    assert load_dataset(tmp_path / "parts").names == ["gasket"]
    # train/good given explicitly: good/ is all test-good.
    _png(part / "train" / "good" / "t0.png")
    _png(part / "train" / "good" / "t1.png")
    explicit = load_folder(part).categories["gasket"]
    assert len(explicit.train) == 2 and explicit.n_good == 10


def test_folder_layout_errors(tmp_path: Path) -> None:
    _png(tmp_path / "widget" / "scratch" / "0.png")
    with pytest.raises(DatasetLayoutError, match="has no good folder and no category folders with one"):
        load_folder(tmp_path)
    few = tmp_path / "few"
    _png(few / "good" / "0.png")
    with pytest.raises(DatasetLayoutError, match="holds 1 images; need at least 3"):
        load_folder(few)
    with pytest.raises(ValueError, match="unknown layout"):
        load_dataset(tmp_path, layout="coco")


# --------------------------------------------------------------------------------- manifests
def test_manifests_are_consistent() -> None:
    for name, n_categories in (("mvtec_ad", 15), ("visa", 12)):
        manifest = load_manifest(name)
        categories = manifest["categories"]
        assert len(categories) == n_categories
        train = sum(sum(c["splits"]["train"].values()) for c in categories.values())
        test = sum(sum(c["splits"]["test"].values()) for c in categories.values())
        assert (train, test) == (manifest["totals"]["train"], manifest["totals"]["test"])
        for category in categories.values():
            assert len(category["image_size"]) == 2 and "official" in category["checksums"]
            anomalous = {k: v for k, v in category["splits"]["test"].items() if k not in {"good", "normal"}}
            assert category["masks"] == anomalous
        orders = continual_orders(name)
        for steps in orders.values():
            assert sorted(n for step in steps for n in step) == sorted(categories)
    bottle = load_manifest("mvtec")["categories"]["bottle"]
    assert bottle["splits"] == {
        "train": {"good": 209},
        "test": {"good": 20, "broken_large": 20, "broken_small": 22, "contamination": 21},
    }
    assert bottle["image_size"] == [900, 900]
    assert [len(s) for s in continual_orders("mvtec_ad")["10-5"]] == [10, 5]
    assert [len(s) for s in continual_orders("mvtec_ad")["14-1"]] == [14, 1]
    assert [len(s) for s in continual_orders("visa")["8-4"]] == [8, 4]
    assert continual_orders("visa")["11-1"][1] == ["pipe_fryum"]
    assert json.loads((MANIFEST_DIR / "protocols.json").read_text())["mvtec_ad"]["alphabetical"][0] == ["bottle"]
    with pytest.raises(ValueError, match="no manifest for dataset 'coco'"):
        load_manifest("coco")


def _fake_mvtec_copy(root: Path, name: str, size: int, drop: int = 0) -> None:
    """Empty images in the official counts of ``name`` (``drop`` test-good images fewer)."""
    category = load_manifest("mvtec_ad")["categories"][name]
    template = _png(root / "_template.png", size=size)
    for split, defects in category["splits"].items():
        for defect, count in defects.items():
            count -= drop if (split, defect) == ("test", "good") else 0
            for i in range(count):
                target = root / name / split / defect / f"{i:03d}.png"
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(template, target)
                if defect != "good":
                    mask = root / name / "ground_truth" / defect / f"{i:03d}_mask.png"
                    mask.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(template, mask)
    template.unlink()


def test_check_finds_missing_extra_downscaled_and_mismatches(tmp_path: Path, mvtec_root: Path) -> None:
    root = tmp_path / "copy"
    _fake_mvtec_copy(root, "toothbrush", size=1024)
    _fake_mvtec_copy(root, "bottle", size=300, drop=2)
    shutil.copytree(mvtec_root / "pill", root / "widget")
    check = check_dataset("mvtec", root)
    assert check.present == ["bottle", "toothbrush"]
    assert len(check.missing) == 13 and "zipper" in check.missing
    assert check.extra == ["widget"]
    assert [m.describe() for m in check.mismatches] == ["bottle test/good: 18 images, expected 20"]
    assert [w.category for w in check.downscaled] == ["bottle"]
    assert check.partial and not check.complete and not check.official
    text = check.summary()
    assert "partial mvtec_ad copy" in text and "missing: cable" in text
    assert "bottle: images are 300x300, official 900x900" in text
    assert "extra categories not in the mvtec_ad manifest: widget" in text
    only = check_dataset("mvtec_ad", root, categories=["toothbrush"])
    assert only.complete and only.official and not only.partial and only.extra == []
    assert json.loads(json.dumps(only.to_dict()))["official"] is True


def test_check_visa_copy(tmp_path: Path) -> None:
    root = _write_visa(tmp_path / "visa", {"candle": (900, 100, 100), "pcb1": (3, 1, 1)}, drop=1)
    check = check_dataset("visa", root, check_sizes=False)
    assert check.layout == "visa" and check.present == ["candle", "pcb1"]
    found = {m.describe() for m in check.mismatches}
    assert "candle train/normal: 899 images, expected 900" in found
    assert "pcb1 test/anomaly: 1 images, expected 100" in found
    assert any("1 files listed" in p for p in check.problems)
    assert check.partial


def test_category_digest(tmp_path: Path, mvtec_root: Path) -> None:
    copy = shutil.copytree(mvtec_root / "tile", tmp_path / "tile")
    assert category_digest(copy) == category_digest(mvtec_root / "tile")
    (copy / ".DS_Store").write_text("ignored")
    assert category_digest(copy) == category_digest(mvtec_root / "tile")
    _png(copy / "train" / "good" / "000.png", size=32, value=7)
    assert category_digest(copy) != category_digest(mvtec_root / "tile")


def test_check_real_bottle_copy(mvtec_bottle: Path) -> None:
    check = check_dataset("mvtec_ad", mvtec_bottle.parent, categories=["bottle"], verify_checksums=True)
    assert check.complete and check.mismatches == []
    assert [w.found for w in check.downscaled] == [(448, 448)]
    assert check.checksums["bottle"].startswith("known copy: downscaled to 448 px")
    bottle = load_mvtec(mvtec_bottle).categories["bottle"]
    assert bottle.counts() == {
        "train": {"good": 209},
        "test": {"broken_large": 20, "broken_small": 22, "contamination": 21, "good": 20},
    }
    assert all((m is None) == (label == 0) for m, label in zip(bottle.masks, bottle.labels, strict=True))


def test_check_prepared_visa_layout(tmp_path: Path) -> None:
    root = tmp_path / "visa_pytorch"
    for split, label, count in (("train", "good", 900), ("test", "good", 100), ("test", "bad", 100)):
        for i in range(count):
            _png(root / "candle" / split / label / f"{i:03d}.png")
    for i in range(99):
        _png(root / "candle" / "ground_truth" / "bad" / f"{i:03d}.png", value=255)
    check = check_dataset("visa", root, categories=["candle"], check_sizes=False)
    assert check.present == ["candle"] and check.layout == "mvtec"
    assert [m.describe() for m in check.mismatches] == ["candle ground_truth/anomaly: 99 masks, expected 100"]


def test_manifest_guess(tmp_path: Path, mvtec_root: Path) -> None:
    from evaluation.runner import _manifest_name

    _fake_mvtec_copy(tmp_path, "toothbrush", size=16)
    assert _manifest_name(load_mvtec(tmp_path), "auto") == "mvtec_ad"
    assert _manifest_name(load_mvtec(mvtec_root), "auto") is None  # synthetic defects
    assert _manifest_name(load_mvtec(mvtec_root), "mvtec") == "mvtec_ad"
    assert _manifest_name(load_mvtec(mvtec_root), None) is None
