"""Tests of evaluation.metrics against independent brute-force and closed-form computations."""

from __future__ import annotations

import math
from collections import deque
from itertools import pairwise

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

from evaluation.metrics import (
    aupro,
    continual_summary,
    forgetting_measure,
    image_metrics,
    pixel_metrics,
    pro_curve,
)

# ------------------------------------------------------------------------------------------
# Independent brute-force AUPRO (no scipy, no cumulative sums): flood-fill labelling, one
# threshold at a time, explicit per-region overlaps, explicit segment-by-segment integration.
# ------------------------------------------------------------------------------------------


def _regions_bfs(mask: np.ndarray, connectivity: int) -> list[list[tuple[int, int]]]:
    """Connected components of a 2-D boolean mask by breadth-first flood fill."""
    if connectivity == 8:
        steps = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]
    else:
        steps = [(-1, 0), (1, 0), (0, -1), (0, 1)]
    h, w = mask.shape
    seen = np.zeros_like(mask, dtype=bool)
    regions: list[list[tuple[int, int]]] = []
    for y in range(h):
        for x in range(w):
            if not mask[y, x] or seen[y, x]:
                continue
            seen[y, x] = True
            queue = deque([(y, x)])
            pixels = []
            while queue:
                cy, cx = queue.popleft()
                pixels.append((cy, cx))
                for dy, dx in steps:
                    ny, nx = cy + dy, cx + dx
                    if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not seen[ny, nx]:
                        seen[ny, nx] = True
                        queue.append((ny, nx))
            regions.append(pixels)
    return regions


def _brute_aupro(masks: np.ndarray, maps: np.ndarray, limit: float, connectivity: int = 8) -> float:
    regions: list[tuple[int, list[tuple[int, int]]]] = []  # (image index, pixels)
    for i in range(masks.shape[0]):
        regions.extend((i, r) for r in _regions_bfs(masks[i].astype(bool), connectivity))
    normal = ~masks.astype(bool)
    n_normal = normal.sum()
    points = [(0.0, 0.0)]
    for t in sorted(set(maps.ravel().tolist()), reverse=True):
        pred = maps >= t
        fpr = float((pred & normal).sum() / n_normal)
        overlaps = [sum(pred[i, y, x] for y, x in pix) / len(pix) for i, pix in regions]
        points.append((fpr, float(np.mean(overlaps))))
    points.append((1.0, 1.0))
    area = 0.0
    for (x0, y0), (x1, y1) in pairwise(points):
        if x1 <= limit:
            area += 0.5 * (y0 + y1) * (x1 - x0)
        elif x0 < limit:  # the segment crossing the limit: interpolate there
            y_lim = y0 + (y1 - y0) * (limit - x0) / (x1 - x0)
            area += 0.5 * (y0 + y_lim) * (limit - x0)
    return area / limit


def _random_case(seed: int, n: int = 4, size: int = 12) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, size, size), dtype=bool)
    for i in range(n - 1):  # the last image stays empty (normal pixels only)
        for _ in range(rng.integers(1, 4)):
            y, x = rng.integers(0, size - 3, 2)
            hh, ww = rng.integers(1, 4, 2)
            masks[i, y : y + hh, x : x + ww] = True
    # anomalous pixels score higher on average; quantised so that ties occur
    maps = np.round(rng.random((n, size, size)) + 0.5 * masks, 1).astype(np.float32)
    return masks, maps


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("limit", [0.3, 0.05, 1.0])
def test_aupro_matches_brute_force(seed: int, limit: float) -> None:
    masks, maps = _random_case(seed)
    assert masks[-1].sum() == 0
    assert aupro(masks, maps, fpr_limit=limit) == pytest.approx(_brute_aupro(masks, maps, limit), abs=1e-12)


def test_aupro_continuous_scores_float64() -> None:
    """Distinct float64 scores (no ties; the argsort path) also match."""
    rng = np.random.default_rng(11)
    masks, _ = _random_case(3, n=3, size=10)
    maps = rng.random(masks.shape) + 0.3 * masks
    assert aupro(masks, maps) == pytest.approx(_brute_aupro(masks, maps, 0.3), abs=1e-12)


def test_aupro_eight_connectivity_merges_diagonal_neighbours() -> None:
    # two 2x2 blocks touching at one corner: one region with 8-connectivity, two with 4
    mask = np.zeros((1, 8, 8), dtype=bool)
    mask[0, 1:3, 1:3] = True
    mask[0, 3:5, 3:5] = True
    assert len(_regions_bfs(mask[0], 8)) == 1
    assert len(_regions_bfs(mask[0], 4)) == 2
    # a small extra region elsewhere, so region sizes matter
    mask[0, 6, 6] = True
    maps = np.zeros((1, 8, 8), dtype=np.float32)
    maps[0, 1:3, 1:3] = 0.9  # the first block is found early, the second one late
    maps[0, 3:5, 3:5] = 0.2
    maps[0, 6, 6] = 0.3
    maps[0, 0, 7] = 0.7  # a few false positives in between
    maps[0, 7, 0] = 0.4
    got = aupro(mask, maps, fpr_limit=1.0)
    want8 = _brute_aupro(mask, maps, 1.0, connectivity=8)
    want4 = _brute_aupro(mask, maps, 1.0, connectivity=4)
    assert got == pytest.approx(want8, abs=1e-12)
    assert abs(want8 - want4) > 1e-3


def test_aupro_linear_pro_curve_closed_form() -> None:
    """A map whose PRO curve is the diagonal PRO = FPR gives AUPRO(L) = L / 2.

    One 10x20 image: columns 0-9 are one anomalous region (100 pixels), columns 10-19 are normal
    (100 pixels). The score of column j is ``j mod 10``, so anomalous column j and normal column
    j + 10 tie. At the k-th distinct threshold (k = 1..10, descending) exactly k anomalous columns
    and k normal columns are above it: FPR = PRO = k / 10. The curve is the straight line
    y = x from (0, 0) to (1, 1), so the area up to L is L^2 / 2 and, divided by L, AUPRO = L / 2:
    1/6 for L = 1/3 (between the curve points 3/10 and 4/10: the linear interpolation at the limit
    is exact on a straight line), 0.15 for L = 0.3 (a curve point), 0.5 for L = 1.
    """
    mask = np.zeros((1, 10, 20), dtype=bool)
    mask[0, :, :10] = True
    maps = np.tile(np.arange(20) % 10, (10, 1))[None].astype(np.float32)
    curve = pro_curve(mask, maps)
    assert curve is not None
    fprs, pros = curve
    np.testing.assert_allclose(fprs, pros)
    assert aupro(mask, maps, fpr_limit=1 / 3) == pytest.approx(1 / 6, abs=1e-12)
    assert aupro(mask, maps, fpr_limit=0.3) == pytest.approx(0.15, abs=1e-12)
    assert aupro(mask, maps, fpr_limit=1.0) == pytest.approx(0.5, abs=1e-12)


def test_aupro_perfect_and_inverted_maps() -> None:
    masks, _ = _random_case(1)
    assert aupro(masks, masks.astype(np.float32)) == pytest.approx(1.0)
    # every anomalous pixel below every normal pixel: PRO stays 0 until FPR = 1
    assert aupro(masks, (~masks).astype(np.float32)) == pytest.approx(0.0)


def test_aupro_no_region_is_nan_and_empty_images_only_add_fpr() -> None:
    rng = np.random.default_rng(0)
    empty = np.zeros((2, 6, 6), dtype=bool)
    assert math.isnan(aupro(empty, rng.random((2, 6, 6))))
    assert pro_curve(empty, rng.random((2, 6, 6))) is None
    # appending an all-normal image whose scores are all below everything else changes nothing
    masks, maps = _random_case(2)
    extra_mask = np.zeros((1, *masks.shape[1:]), dtype=bool)
    extra_map = np.full((1, *masks.shape[1:]), -1.0, dtype=np.float32)
    base = aupro(masks, maps, fpr_limit=0.3)
    more = aupro(np.concatenate([masks, extra_mask]), np.concatenate([maps, extra_map]), fpr_limit=0.3)
    # the extra normal pixels only rescale FPR (more normal pixels), never PRO
    assert more != base
    assert more == pytest.approx(
        _brute_aupro(np.concatenate([masks, extra_mask]), np.concatenate([maps, extra_map]), 0.3), abs=1e-12
    )


def test_aupro_negative_and_signed_zero_scores() -> None:
    masks, maps = _random_case(4)
    shifted = (maps - 0.7).astype(np.float32)
    shifted[0, 0, 0] = -0.0
    shifted[0, 0, 1] = 0.0
    assert aupro(masks, shifted) == pytest.approx(_brute_aupro(masks, shifted, 0.3), abs=1e-12)


def test_aupro_invalid_inputs() -> None:
    masks, maps = _random_case(0)
    with pytest.raises(ValueError):
        aupro(masks, maps[:, :-1])
    with pytest.raises(ValueError):
        aupro(masks, maps, fpr_limit=0.0)
    bad = maps.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError):
        aupro(masks, bad)


def test_aupro_speed_smoke() -> None:
    """16 images of 392x392 (a sixth of an MVTec test set): well under the time limit."""
    import time

    rng = np.random.default_rng(0)
    masks = np.zeros((16, 392, 392), dtype=bool)
    masks[::2, 100:140, 200:260] = True
    maps = (rng.random(masks.shape, dtype=np.float32) + 0.2 * masks).astype(np.float32)
    t0 = time.perf_counter()
    value = aupro(masks, maps)
    assert time.perf_counter() - t0 < 5.0
    assert 0.0 < value < 1.0


# ------------------------------------------------------------------------------------------
# Image and pixel metrics
# ------------------------------------------------------------------------------------------


def test_image_metrics_hand_computed() -> None:
    # descending scores: 0.8 (pos), 0.4 (neg), 0.35 (pos), 0.1 (neg)
    # ROC: pairs (pos, neg) ranked correctly: (0.8, 0.4), (0.8, 0.1), (0.35, 0.1) -> 3/4
    # PR points: k=1 P=1 R=1/2; k=2 P=1/2 R=1/2; k=3 P=2/3 R=1; k=4 P=1/2 R=1
    # AP = 1/2 * 1 + 0 * 1/2 + 1/2 * 2/3 + 0 = 5/6
    # F1: k=1 2/3; k=2 1/2; k=3 2*(2/3)/(5/3) = 4/5; k=4 2/3 -> max 4/5
    m = image_metrics([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    assert m["auroc"] == pytest.approx(0.75)
    assert m["ap"] == pytest.approx(5 / 6)
    assert m["f1_max"] == pytest.approx(0.8)


def test_image_metrics_perfect_and_ties() -> None:
    m = image_metrics(np.array([False, True, False, True]), np.array([0.0, 1.0, 0.2, 3.0]))
    assert m == {"auroc": 1.0, "ap": 1.0, "f1_max": 1.0}
    # all scores tied: AUROC 1/2, AP = prevalence, F1 = 2 * (1/2) * 1 / (3/2) = 2/3
    m = image_metrics([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5])
    assert m["auroc"] == pytest.approx(0.5)
    assert m["ap"] == pytest.approx(0.5)
    assert m["f1_max"] == pytest.approx(2 / 3)


def test_image_metrics_single_class_is_nan() -> None:
    for labels in ([0, 0, 0], [1, 1, 1], []):
        m = image_metrics(labels, np.arange(len(labels), dtype=float))
        assert set(m) == {"auroc", "ap", "f1_max"}
        assert all(math.isnan(v) for v in m.values())


def _sklearn_pixel(masks: np.ndarray, maps: np.ndarray) -> dict[str, float]:
    y, s = masks.ravel().astype(bool), maps.ravel()
    p, r, _ = precision_recall_curve(y, s)
    f1 = np.where(p + r > 0, 2 * p * r / np.maximum(p + r, 1e-300), 0.0)
    return {"auroc": roc_auc_score(y, s), "ap": average_precision_score(y, s), "f1_max": f1.max()}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pixel_metrics_match_sklearn(dtype: type) -> None:
    rng = np.random.default_rng(5)
    masks, _ = _random_case(7, n=5, size=24)
    maps: np.ndarray = (rng.random(masks.shape) + 0.4 * masks).astype(dtype)
    maps[0, :4, :4] = 0.5  # ties across labels
    got = pixel_metrics(masks, maps)
    want = _sklearn_pixel(masks, maps)
    for key in ("auroc", "ap", "f1_max"):
        assert got[key] == pytest.approx(want[key], abs=1e-12), key
    assert got["aupro"] == pytest.approx(aupro(masks, maps), abs=1e-15)


def test_pixel_metrics_subsample_is_deterministic_and_close() -> None:
    rng = np.random.default_rng(9)
    masks = np.zeros((6, 64, 64), dtype=bool)
    masks[:4, 10:30, 20:40] = True
    maps = (rng.random(masks.shape) + 0.5 * masks).astype(np.float32)
    exact = pixel_metrics(masks, maps)
    a = pixel_metrics(masks, maps, max_pixels=5000, seed=1)
    b = pixel_metrics(masks, maps, max_pixels=5000, seed=1)
    c = pixel_metrics(masks, maps, max_pixels=5000, seed=2)
    assert a == b
    assert a != c
    assert a["aupro"] == exact["aupro"]  # AUPRO is always exact
    assert a["auroc"] == pytest.approx(exact["auroc"], abs=0.03)
    # max_pixels at least the pixel count: exact
    assert pixel_metrics(masks, maps, max_pixels=masks.size) == exact


def test_pixel_metrics_no_anomalous_pixels_is_nan() -> None:
    m = pixel_metrics(np.zeros((2, 5, 5)), np.random.default_rng(0).random((2, 5, 5)))
    assert all(math.isnan(v) for v in m.values())


# ------------------------------------------------------------------------------------------
# Continual protocol
# ------------------------------------------------------------------------------------------


def test_forgetting_measure_toy_matrix() -> None:
    nan = float("nan")
    matrix = np.array(
        [
            [0.90, nan, nan],
            [0.80, 0.95, nan],
            [0.70, 0.85, 0.60],
        ]
    )
    # category 0: best 0.90, final 0.70 -> 0.20; category 1: best 0.95, final 0.85 -> 0.10;
    # the last category is not counted. FM = (0.20 + 0.10) / 2 = 0.15
    assert forgetting_measure(matrix) == pytest.approx(0.15)
    summary = continual_summary(matrix)
    assert summary["final_mean"] == pytest.approx((0.70 + 0.85 + 0.60) / 3)
    assert summary["fm"] == pytest.approx(0.15)


def test_forgetting_measure_includes_final_step_and_edge_cases() -> None:
    nan = float("nan")
    # improving scores: the best is the final value itself -> no forgetting
    assert forgetting_measure([[0.5, nan], [0.9, 0.7]]) == pytest.approx(0.0)
    # a single category: FM undefined
    assert math.isnan(forgetting_measure([[0.8]]))
    with pytest.raises(ValueError):
        forgetting_measure([0.1, 0.2])
