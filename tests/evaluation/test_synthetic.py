"""Tests of the seeded synthetic inspection-data generator."""

from __future__ import annotations

import hashlib
import itertools
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from evaluation.synthetic import (
    CATEGORY_KINDS,
    DEFECT_TYPES,
    HIGH_RESOLUTION_SHAPE,
    MAX_DEFECT_FRACTION,
    MIN_DEFECT_FRACTION,
    SMALL_DEFECT_FRACTION,
    make_category,
    make_image,
    write_mvtec_layout,
)


def test_kinds_and_defects_are_declared() -> None:
    assert len(CATEGORY_KINDS) >= 5
    assert len(set(CATEGORY_KINDS)) == len(CATEGORY_KINDS)
    assert set(DEFECT_TYPES) == {"scratch", "spot", "missing", "crack"}


@pytest.mark.parametrize("kind", CATEGORY_KINDS)
def test_make_image_is_deterministic(kind: str) -> None:
    for defect in (None, "scratch", "missing"):
        a_img, a_mask = make_image(kind, 7, size=96, defect=defect)
        b_img, b_mask = make_image(kind, 7, size=96, defect=defect)
        assert a_img.tobytes() == b_img.tobytes()
        assert a_mask.tobytes() == b_mask.tobytes()
    other, _ = make_image(kind, 8, size=96)
    assert other.tobytes() != make_image(kind, 7, size=96)[0].tobytes()


@pytest.mark.parametrize(
    ("kind", "defect", "digest"),
    [
        ("carpet", None, "9226cbe0f0e875cf"),
        ("screw", "scratch", "0ad7cd34f35bb5df"),
        ("pill", "missing", "4817556cd648cb69"),
        ("tile", "crack", "041274d4d6d6c0a4"),
    ],
)
def test_square_images_are_pinned(kind: str, defect: str | None, digest: str) -> None:
    """Square images with default defect sizes stay byte-identical (stored results and tests rely on them)."""
    image, mask = make_image(kind, 11, size=64, defect=defect)
    assert hashlib.sha256(image.tobytes() + mask.tobytes()).hexdigest()[:16] == digest


def test_high_resolution_set_constants() -> None:
    assert HIGH_RESOLUTION_SHAPE == (1536, 2048)
    assert SMALL_DEFECT_FRACTION == (0.0005, 0.005)


@pytest.mark.parametrize(("kind", "defect"), list(itertools.product(CATEGORY_KINDS, DEFECT_TYPES)))
def test_non_square_images_with_small_defects(kind: str, defect: str) -> None:
    """A 4:3 frame (the high-resolution set's aspect at a quarter of its side) with 0.05-0.5% defects."""
    good, good_mask = make_image(kind, 1, size=512, height=384, defect_fraction=SMALL_DEFECT_FRACTION)
    image, mask = make_image(kind, 1, size=512, defect=defect, height=384, defect_fraction=SMALL_DEFECT_FRACTION)
    assert good.shape == image.shape == (384, 512, 3)
    assert mask.shape == (384, 512)
    assert not good_mask.any()
    assert SMALL_DEFECT_FRACTION[0] <= mask.mean() <= SMALL_DEFECT_FRACTION[1]
    changed = np.abs(image.astype(np.int16) - good.astype(np.int16)).max(axis=2)
    near = ndimage.binary_dilation(mask, structure=np.ones((3, 3)), iterations=1)
    assert changed[~near].max() == 0
    assert changed[mask].mean() > 10


def test_make_image_does_not_touch_global_rng() -> None:
    np.random.seed(123)
    before = np.random.get_state()[1].copy()  # type: ignore[index]
    make_image("pill", 0, size=64, defect="spot")
    assert np.array_equal(np.random.get_state()[1], before)  # type: ignore[index]


@pytest.mark.parametrize(("kind", "defect"), list(itertools.product(CATEGORY_KINDS, DEFECT_TYPES)))
def test_defect_masks_area_and_visibility(kind: str, defect: str) -> None:
    for seed in range(3):
        good, good_mask = make_image(kind, seed, size=128)
        img, mask = make_image(kind, seed, size=128, defect=defect)
        assert good.shape == img.shape == (128, 128, 3)
        assert good.dtype == img.dtype == np.uint8
        assert mask.shape == (128, 128)
        assert mask.dtype == np.bool_
        assert not good_mask.any()
        assert mask.any()
        assert MIN_DEFECT_FRACTION <= mask.mean() <= MAX_DEFECT_FRACTION
        diff = np.abs(img.astype(np.int16) - good.astype(np.int16)).max(axis=2)
        # the defect is drawn into the good image: nothing changes away from it...
        near = ndimage.binary_dilation(mask, structure=np.ones((3, 3)), iterations=1)
        assert diff[~near].max() == 0
        # ...and it is clearly visible where the mask says
        assert diff[mask].mean() > 10


def test_good_images_vary_but_only_slightly() -> None:
    for kind in CATEGORY_KINDS:
        a = make_image(kind, 1, size=96)[0].astype(np.float64)
        b = make_image(kind, 2, size=96)[0].astype(np.float64)
        assert not np.array_equal(a, b)
        # same product: mean colours within a modest range of each other
        assert np.abs(a.mean(axis=(0, 1)) - b.mean(axis=(0, 1))).max() < 40


def _features(img: np.ndarray) -> np.ndarray:
    """Mean/std colour and the share of spectral energy in four radial frequency bands."""
    x = img.astype(np.float64) / 255.0
    gray = x.mean(axis=2)
    power = np.abs(np.fft.fftshift(np.fft.fft2(gray - gray.mean()))) ** 2
    h, w = gray.shape
    yy, xx = np.mgrid[:h, :w]
    r = np.hypot(yy - h / 2, xx - w / 2) / (h / 2)
    bands = [power[(r >= lo) & (r < hi)].sum() for lo, hi in ((0, 0.05), (0.05, 0.15), (0.15, 0.35), (0.35, 1.5))]
    spectrum = np.log(np.asarray(bands) / power.sum() + 1e-9) / 10.0
    return np.concatenate([x.mean(axis=(0, 1)), x.std(axis=(0, 1)), spectrum])


def test_kinds_look_different() -> None:
    size = 96
    train = {k: np.stack([_features(make_image(k, s, size)[0]) for s in range(4)]) for k in CATEGORY_KINDS}
    centroids = {k: f.mean(axis=0) for k, f in train.items()}
    # every pair of kinds differs clearly in colour statistics and/or spectrum
    for a, b in itertools.combinations(CATEGORY_KINDS, 2):
        assert np.linalg.norm(centroids[a] - centroids[b]) > 0.2, (a, b)
    # at least most pairs differ already in mean colour
    colour_gaps = [
        np.abs(centroids[a][:3] - centroids[b][:3]).max() for a, b in itertools.combinations(CATEGORY_KINDS, 2)
    ]
    assert np.mean(np.asarray(colour_gaps) > 0.05) > 0.8
    # a nearest-centroid classifier on these crude features recognises held-out images
    for kind in CATEGORY_KINDS:
        for seed in (100, 101):
            f = _features(make_image(kind, seed, size)[0])
            pred = min(CATEGORY_KINDS, key=lambda k: float(np.linalg.norm(f - centroids[k])))
            assert pred == kind


def test_make_category_structure_and_determinism() -> None:
    cat = make_category("tile", n_train=3, n_test_good=2, n_test_bad=5, seed=4, size=64)
    assert cat.kind == "tile"
    assert cat.size == 64
    assert cat.train_images.shape == (3, 64, 64, 3)
    assert cat.test_images.shape == (7, 64, 64, 3)
    assert cat.test_masks.shape == (7, 64, 64)
    assert cat.test_labels.tolist() == [0, 0, 1, 1, 1, 1, 1]
    assert cat.test_defects[:2] == ["good", "good"]
    assert set(cat.test_defects[2:]) == set(DEFECT_TYPES)  # 5 defective images cycle all 4 types
    assert not cat.test_masks[:2].any()
    assert all(m.any() for m in cat.test_masks[2:])
    # all images distinct
    flat = [img.tobytes() for img in [*cat.train_images, *cat.test_images]]
    assert len(set(flat)) == len(flat)
    again = make_category("tile", n_train=3, n_test_good=2, n_test_bad=5, seed=4, size=64)
    assert np.array_equal(again.train_images, cat.train_images)
    assert np.array_equal(again.test_images, cat.test_images)
    assert np.array_equal(again.test_masks, cat.test_masks)
    assert again.test_defects == cat.test_defects
    other = make_category("tile", n_train=3, n_test_good=2, n_test_bad=5, seed=5, size=64)
    assert not np.array_equal(other.train_images, cat.train_images)


def test_write_mvtec_layout(tmp_path: Path) -> None:
    cat = make_category("pill", n_train=2, n_test_good=2, n_test_bad=6, seed=1, size=64)
    base = write_mvtec_layout(cat, tmp_path, "mypill")
    assert base == tmp_path / "mypill"
    files = sorted(p.relative_to(base).as_posix() for p in base.rglob("*") if p.is_file())
    expected = ["train/good/000.png", "train/good/001.png", "test/good/000.png", "test/good/001.png"]
    bad_names = cat.test_defects[2:]
    for defect in sorted(set(bad_names)):
        for i in range(bad_names.count(defect)):
            expected += [f"test/{defect}/{i:03d}.png", f"ground_truth/{defect}/{i:03d}_mask.png"]
    assert files == sorted(expected)
    assert not (base / "ground_truth" / "good").exists()

    with Image.open(base / "train" / "good" / "001.png") as im:
        assert im.mode == "RGB"
        assert np.array_equal(np.asarray(im), cat.train_images[1])
    # the first defective image of its type, read back with its mask
    first_bad = 2
    defect = cat.test_defects[first_bad]
    with Image.open(base / "test" / defect / "000.png") as im:
        assert np.array_equal(np.asarray(im), cat.test_images[first_bad])
    with Image.open(base / "ground_truth" / defect / "000_mask.png") as im:
        assert im.mode == "L"
        mask = np.asarray(im)
    assert set(np.unique(mask).tolist()) == {0, 255}
    assert np.array_equal(mask == 255, cat.test_masks[first_bad])


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError):
        make_image("banana", 0)
    with pytest.raises(ValueError):
        make_image("pill", 0, defect="dent")
    with pytest.raises(ValueError):
        make_image("pill", -1)
    with pytest.raises(ValueError):
        make_image("pill", 0, size=8)
    with pytest.raises(ValueError):
        make_category("pill", -1, 1, 1, seed=0)
    with pytest.raises(ValueError):
        make_image("pill", 0, size=64, height=16)
    for fraction in ((0.0, 0.01), (0.02, 0.01), (0.1, 1.0)):
        with pytest.raises(ValueError, match="defect_fraction"):
            make_image("pill", 0, size=64, defect="spot", defect_fraction=fraction)


def test_non_square_category_written_in_mvtec_layout(tmp_path: Path) -> None:
    category = make_category("tile", 2, 1, 2, seed=4, size=160, height=96, defect_fraction=SMALL_DEFECT_FRACTION)
    assert category.shape == (96, 160)
    assert category.size == 160
    assert category.train_images.shape == (2, 96, 160, 3)
    assert category.test_masks.shape == (3, 96, 160)
    base = write_mvtec_layout(category, tmp_path, "tile_hr")
    with Image.open(base / "train" / "good" / "000.png") as written:
        assert written.size == (160, 96)
    masks = sorted((base / "ground_truth").rglob("*_mask.png"))
    assert len(masks) == 2
    with Image.open(masks[0]) as mask:
        assert mask.size == (160, 96)
