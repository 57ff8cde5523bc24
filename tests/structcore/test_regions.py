"""structcore.regions: the map back at the image's own size, connected areas above the threshold."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from structcore.regions import (
    boxes_on_model_map,
    find_regions,
    map_at_original_size,
    region_mask,
    regions_at_original_size,
)


def _reference_resize(values: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize with pixel centres aligned (the convention PIL uses when enlarging)."""
    tensor = torch.from_numpy(values.astype(np.float64))[None, None]
    return F.interpolate(tensor, size=(height, width), mode="bilinear", align_corners=False)[0, 0].numpy()


def test_two_blobs_largest_first_with_their_boxes_and_values() -> None:
    values = np.zeros((20, 30), dtype=np.float32)
    values[2:5, 3:9] = 2.0  # 3 x 6 = 18 px
    values[3, 4] = 5.0
    values[10:18, 20:25] = 1.5  # 8 x 5 = 40 px
    regions = find_regions(values, 1.0)
    assert [r["area"] for r in regions] == [40, 18]
    big, small = regions
    assert (big["x"], big["y"], big["w"], big["h"]) == (20, 10, 5, 8)
    assert (small["x"], small["y"], small["w"], small["h"]) == (3, 2, 6, 3)
    assert big["area_share"] == pytest.approx(40 / 600)
    assert small["peak"] == pytest.approx(5.0)
    assert small["mean"] == pytest.approx((17 * 2.0 + 5.0) / 18)
    assert big["peak"] == big["mean"] == pytest.approx(1.5)
    assert find_regions(values, 1.0, max_regions=1) == [big]
    assert find_regions(values, 1.0, max_regions=0) == []


def test_threshold_is_strict_nan_is_never_above_and_empty_gives_no_region() -> None:
    values = np.full((5, 5), 1.0, dtype=np.float32)
    assert find_regions(values, 1.0) == []
    values[0, 0] = np.nan
    values[4, 4] = 1.5
    (region,) = find_regions(values, 1.0)
    assert (region["x"], region["y"], region["area"]) == (4, 4, 1)
    assert not region_mask(values, 1.0)[0, 0]


def test_diagonal_neighbours_are_one_region() -> None:
    values = np.eye(6, dtype=np.float32)  # a thin diagonal scratch
    (region,) = find_regions(values, 0.5)
    assert (region["x"], region["y"], region["w"], region["h"], region["area"]) == (0, 0, 6, 6, 6)


def test_regions_match_a_brute_force_labelling() -> None:
    rng = np.random.default_rng(3)
    values = rng.random((40, 50)).astype(np.float32)
    mask = values > 0.8
    regions = find_regions(values, 0.8, max_regions=10_000)
    assert sum(r["area"] for r in regions) == int(mask.sum())
    # reference: flood fill (test-only) of 8-connected components
    seen = np.zeros_like(mask)
    areas = []
    for start in zip(*np.nonzero(mask), strict=True):
        if seen[start]:
            continue
        stack, area = [start], 0
        seen[start] = True
        while stack:
            row, col = stack.pop()
            area += 1
            for dr in (-1, 0, 1):
                for dc in (-1, 0, 1):
                    r, c = row + dr, col + dc
                    if 0 <= r < 40 and 0 <= c < 50 and mask[r, c] and not seen[r, c]:
                        seen[r, c] = True
                        stack.append((r, c))
        areas.append(area)
    assert sorted((r["area"] for r in regions), reverse=True) == sorted(areas, reverse=True)
    assert [r["area"] for r in regions] == sorted((r["area"] for r in regions), reverse=True)


@pytest.mark.parametrize(("width", "height"), [(40, 40), (90, 30), (7, 120), (1, 50), (50, 1), (3, 2)])
def test_squash_map_at_original_size_matches_a_reference_resize(width: int, height: int) -> None:
    values = np.random.default_rng(width * height).random((16, 16)).astype(np.float32)
    full = map_at_original_size(values, (width, height), resize=16, crop=16)
    assert full.shape == (height, width) and full.dtype == np.float32
    if width >= 16 and height >= 16:  # enlarging: PIL's bilinear is the half-pixel interpolation
        np.testing.assert_allclose(full, _reference_resize(values, height, width), atol=1e-5)
    else:  # shrinking: PIL averages (antialias); values stay within the map's range
        assert values.min() - 1e-6 <= full.min() and full.max() <= values.max() + 1e-6


def test_cropped_geometry_puts_the_map_back_in_the_resized_square() -> None:
    values = np.ones((12, 12), dtype=np.float32)
    full = map_at_original_size(values, (32, 32), resize=16, crop=12)
    # the crop covers resized pixels 2..13: original pixels 4..27 (x2); outside the model saw nothing
    assert full[16, 16] == pytest.approx(1.0)
    assert full[0, 0] == pytest.approx(0.0) and full[31, 31] == pytest.approx(0.0)
    assert full[16, 0] == pytest.approx(0.0)


def test_identity_when_the_image_has_the_model_size() -> None:
    values = np.random.default_rng(0).random((24, 24)).astype(np.float32)
    np.testing.assert_array_equal(map_at_original_size(values, (24, 24)), values)


def test_boxes_on_model_map_undo_the_squash() -> None:
    region = {"x": 100, "y": 50, "w": 200, "h": 100, "area": 1, "area_share": 0.0, "peak": 1.0, "mean": 1.0}
    (box,) = boxes_on_model_map([region], (800, 400), 392)  # type: ignore[list-item]
    assert box == pytest.approx((49.0, 49.0, 98.0, 98.0))


def test_bad_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="must be"):
        find_regions(np.zeros((2, 2, 2)), 0.0)
    with pytest.raises(ValueError, match="positive"):
        map_at_original_size(np.zeros((4, 4)), (0, 5))
    with pytest.raises(ValueError, match="max_regions"):
        find_regions(np.zeros((2, 2)), 0.0, max_regions=-1)


@pytest.mark.parametrize(
    ("width", "height", "resize", "crop"),
    [(2048, 1536, 64, 64), (900, 900, 64, 64), (448, 166, 64, 64), (30, 20, 64, 64), (64, 64, 64, 64),
     (300, 200, 64, 48), (1, 500, 64, 64)],
)  # fmt: skip
def test_windowed_regions_equal_those_of_the_whole_map(width: int, height: int, resize: int, crop: int) -> None:
    rng = np.random.default_rng(width + height)
    model_map = rng.random((crop, crop)).astype(np.float32) * 0.5
    yy, xx = np.ogrid[:crop, :crop]
    for cy, cx, spread in ((5, 7, 6.0), (crop - 10, crop // 2, 20.0), (crop // 2, crop - 3, 3.0)):
        model_map += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / spread).astype(np.float32)
    whole = find_regions(map_at_original_size(model_map, (width, height), resize, crop), 0.8, 50)
    windowed = regions_at_original_size(model_map, 0.8, (width, height), resize, crop, 50)
    assert len(windowed) == len(whole)
    for mine, reference in zip(windowed, whole, strict=True):
        assert {k: mine[k] for k in "xywh"} == {k: reference[k] for k in "xywh"}  # type: ignore[literal-required]
        assert mine["area"] == reference["area"]
        assert mine["peak"] == pytest.approx(reference["peak"], rel=1e-5)
        assert mine["mean"] == pytest.approx(reference["mean"], rel=1e-5)
        assert mine["area_share"] == pytest.approx(reference["area_share"])


def test_nothing_above_the_threshold_costs_no_resampling() -> None:
    assert regions_at_original_size(np.zeros((8, 8), dtype=np.float32), 0.5, (100_000, 100_000)) == []
