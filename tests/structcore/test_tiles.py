"""The tile geometry: tile plans, cutting, valid patches and stitched maps against hand computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage

from structcore.preprocess import tiled_size
from structcore.tiles import cut_tiles, stitch_map, tile_boxes, tile_count, tile_starts, tiled_valid_mask


def test_tile_starts_cover_the_axis_with_at_least_the_overlap() -> None:
    assert tile_starts(300, 392, 64).tolist() == [0]  # shorter than one tile: one, padded
    assert tile_starts(392, 392, 64).tolist() == [0]
    assert tile_starts(1024, 392, 64).tolist() == [0, 316, 632]
    for extent in (393, 700, 1536, 2048, 4000):
        starts = tile_starts(extent, 392, 64)
        assert starts[0] == 0 and starts[-1] + 392 == extent
        assert (np.diff(starts) <= 392 - 64).all()  # neighbours overlap by >= 64 px
        assert len(starts) == math.ceil((extent - 64) / (392 - 64))  # no more tiles than the overlap needs
    with pytest.raises(ValueError, match="overlap"):
        tile_starts(1000, 392, 392)


def test_tiled_size_caps_the_long_side_and_never_upscales() -> None:
    assert tiled_size((2048, 1536), 1024) == (768, 1024)
    assert tiled_size((300, 200), 1024) == (200, 300)
    assert tiled_size((5000, 1), 1000) == (1, 1000)


def test_cut_tiles_two_by_two_and_padding() -> None:
    image = np.arange(2 * 6 * 6, dtype=np.float32).reshape(2, 6, 6)
    tiles = cut_tiles(image, tile=4, overlap=2)
    assert tile_boxes((6, 6), 4, 2).tolist() == [[0, 0, 4, 4], [0, 2, 4, 4], [2, 0, 4, 4], [2, 2, 4, 4]]
    assert tiles.shape == (4, 2, 4, 4)
    np.testing.assert_array_equal(tiles[1], image[:, 0:4, 2:6])
    np.testing.assert_array_equal(tiles[2], image[:, 2:6, 0:4])
    small = cut_tiles(image[:, :3, :], tile=4, overlap=2, fill=-1.0)  # 3 rows: one tile row, padded
    assert small.shape == (2, 2, 4, 4)
    np.testing.assert_array_equal(small[0, :, :3, :], image[:, :3, 0:4])
    assert (small[:, :, 3, :] == -1.0).all()


def test_valid_mask_marks_each_tiles_content_and_no_empty_slot() -> None:
    grid = (4, 4)  # a 16 px tile: 4 px per patch
    mask = tiled_valid_mask(np.array([[10, 40], [16, 16]]), grid, tile=16, overlap=4, slots=3)
    assert mask.shape == (2, 3 * 16)
    first = mask[0].reshape(3, 4, 4)
    # 10 of 16 rows are content: the patch rows centred at 2 and 6 px are valid (10 is not inside)
    assert first[:, :2, :].all() and not first[:, 2:, :].any()
    assert tile_count((10, 40), 16, 4) == 3
    assert mask[1].reshape(3, 4, 4)[0].all() and not mask[1].reshape(3, 4, 4)[1:].any()
    with pytest.raises(ValueError, match="slots"):
        tiled_valid_mask(np.array([[10, 40]]), grid, tile=16, overlap=4, slots=2)


def test_stitched_map_of_constant_tiles_is_the_hand_blend() -> None:
    # a 6 x 6 image, 4 px tiles overlapping by 2: four tiles, each constant (tile t scores t + 1)
    grid = (2, 2)
    scores = np.repeat(np.arange(1.0, 5.0), 4).astype(np.float32)  # (slots * h * w,)
    stitched = stitch_map(scores, (6, 6), grid, tile=4, overlap=2, sigma=0.0)
    expected = np.array(
        [
            [1.0, 1.0, 1.5, 1.5, 2.0, 2.0],
            [1.0, 1.0, 1.5, 1.5, 2.0, 2.0],
            [2.0, 2.0, 2.5, 2.5, 3.0, 3.0],
            [2.0, 2.0, 2.5, 2.5, 3.0, 3.0],
            [3.0, 3.0, 3.5, 3.5, 4.0, 4.0],
            [3.0, 3.0, 3.5, 3.5, 4.0, 4.0],
        ]
    )
    np.testing.assert_allclose(stitched, expected, rtol=0, atol=1e-6)


def test_stitched_map_matches_a_direct_computation() -> None:
    # a 10 x 13 image, 8 px tiles (4 x 4 patch grid), overlap 3, blur sigma 1.5
    rng = np.random.default_rng(0)
    grid, tile, overlap, sigma = (4, 4), 8, 3, 1.5
    content = (10, 13)
    boxes = tile_boxes(content, tile, overlap)
    scores = rng.random((len(boxes) + 1, *grid)).astype(np.float32)  # one spare (empty) slot
    total = np.zeros(content)
    count = np.zeros(content)
    for grid_scores, (top, left, rows, columns) in zip(scores, boxes, strict=False):
        upsampled = F.interpolate(
            torch.from_numpy(grid_scores)[None, None].double(), size=(tile, tile), mode="bilinear", align_corners=False
        )[0, 0].numpy()
        total[top : top + rows, left : left + columns] += upsampled[:rows, :columns]
        count[top : top + rows, left : left + columns] += 1
    reference = ndimage.gaussian_filter(total / count, sigma, mode="reflect")
    stitched = stitch_map(scores.reshape(-1), content, grid, tile, overlap, sigma)
    assert stitched.shape == content and stitched.dtype == np.float32
    np.testing.assert_allclose(stitched, reference, rtol=0, atol=1e-5)


def test_stitched_map_of_an_image_smaller_than_a_tile_uses_its_valid_patches_only() -> None:
    grid, tile = (4, 4), 8  # 2 px patches: a 5 px tall image holds the patch rows centred at 1 and 3 px
    scores = np.zeros((1, *grid), dtype=np.float32)
    scores[0, 3, :] = 100.0  # the padding's patch row must not reach the map
    stitched = stitch_map(scores.reshape(-1), (5, 8), grid, tile, 2, sigma=0.0)
    assert stitched.shape == (5, 8)
    assert stitched.max() == 0.0
