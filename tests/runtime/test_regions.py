"""The runtime's 8-connected labelling equals scipy.ndimage.label (the registry's regions use it)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from structcore_runtime.regions import DEFAULT_MAX_REGIONS, label_8connected, label_boxes

from structcore import settings

EIGHT = np.ones((3, 3), dtype=bool)


def _spiral(size: int) -> np.ndarray:
    mask = np.zeros((size, size), dtype=bool)
    top, left, bottom, right = 0, 0, size - 1, size - 1
    while top <= bottom and left <= right:
        mask[top, left : right + 1] = True
        mask[top : bottom + 1, right] = True
        if bottom - top >= 2:
            mask[bottom, left : right + 1] = True
        if right - left >= 2:
            mask[top + 2 : bottom + 1, left] = True
        top, left, bottom, right = top + 2, left + 2, bottom - 2, right - 2
    return mask


def _masks() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    masks = [rng.random((h, w)) < p for h, w in ((1, 1), (1, 17), (19, 1), (37, 53), (64, 64)) for p in (0.1, 0.5, 0.9)]
    checker = (np.add.outer(np.arange(40), np.arange(33)) % 2).astype(bool)
    stripes = np.zeros((30, 30), dtype=bool)
    stripes[:, ::2] = True
    single = np.zeros((9, 9), dtype=bool)
    single[4, 4] = True
    corners = np.zeros((7, 8), dtype=bool)
    corners[[0, 0, -1, -1], [0, -1, 0, -1]] = True
    staircase = np.eye(25, dtype=bool) | np.eye(25, k=3, dtype=bool)[:, ::-1]
    masks += [checker, ~checker, stripes, stripes.T, single, corners, staircase, _spiral(41), ~_spiral(40)]
    masks += [np.ones((12, 7), dtype=bool), np.zeros((12, 7), dtype=bool)]
    return masks


@pytest.mark.parametrize("mask", _masks(), ids=lambda m: f"{m.shape[0]}x{m.shape[1]}-{int(m.sum())}")
def test_labels_equal_scipy(mask: np.ndarray) -> None:
    expected, expected_count = ndimage.label(mask, structure=EIGHT)
    labels, count = label_8connected(mask)
    assert count == expected_count
    assert labels.dtype == np.int32
    np.testing.assert_array_equal(labels, expected)
    boxes = ndimage.find_objects(expected)
    tops, lefts, bottoms, rights = label_boxes(labels, count)
    assert [(b[0].start, b[1].start, b[0].stop, b[1].stop) for b in boxes] == list(
        zip(tops.tolist(), lefts.tolist(), bottoms.tolist(), rights.tolist(), strict=True)
    )


def test_a_mask_must_be_two_dimensional() -> None:
    with pytest.raises(ValueError, match=r"a mask must be \(H, W\)"):
        label_8connected(np.zeros(5, dtype=bool))


def test_default_max_regions_is_the_settings_tables() -> None:
    assert DEFAULT_MAX_REGIONS == settings.DEFAULT_MAX_REGIONS
