"""kNN patch scores vs brute force; anomaly maps vs scipy's Gaussian filter."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from structcore.anomaly_map import anomaly_maps, gaussian_blur
from structcore.knn import PatchKNN


def test_flat_knn_equals_brute_force(rng: np.random.Generator) -> None:
    bank = rng.normal(size=(700, 64)).astype(np.float32)
    queries = rng.normal(size=(300, 64)).astype(np.float32)
    squared = ((queries[:, None, :].astype(np.float64) - bank[None].astype(np.float64)) ** 2).sum(-1)
    expected = np.sort(squared, axis=1)[:, :5].mean(axis=1)
    np.testing.assert_allclose(PatchKNN(k=5).fit(bank).score(queries), expected, rtol=1e-4, atol=1e-4)


def test_float16_bank_is_searched(rng: np.random.Generator) -> None:
    bank = rng.normal(size=(100, 16)).astype(np.float16)
    knn = PatchKNN(k=1).fit(bank)
    assert knn.score(bank.astype(np.float32)) == pytest.approx(np.zeros(100), abs=1e-6)


def test_hnsw_recall(rng: np.random.Generator) -> None:
    bank = rng.normal(size=(5000, 32)).astype(np.float32)
    queries = rng.normal(size=(500, 32)).astype(np.float32)
    _, exact = PatchKNN(k=5).fit(bank).search(queries)
    _, approx = PatchKNN(k=5, index="hnsw", hnsw_ef_search=128).fit(bank).search(queries)
    recall = np.mean([len(set(a) & set(e)) / 5 for a, e in zip(approx, exact, strict=True)])
    assert recall >= 0.95


def test_gaussian_blur_matches_scipy(rng: np.random.Generator) -> None:
    for shape in [(392, 392), (9, 13)]:
        data = rng.random((2, *shape)).astype(np.float32)
        ours = gaussian_blur(torch.from_numpy(data), 4.0).numpy()
        reference = np.stack([gaussian_filter(d.astype(np.float64), 4.0, mode="reflect", truncate=4.0) for d in data])
        np.testing.assert_allclose(ours, reference, atol=1e-5)


def test_anomaly_map_shape_and_constant() -> None:
    grids = np.full((3, 7, 7), 2.5, dtype=np.float32)
    maps = anomaly_maps(grids, 56)
    assert maps.shape == (3, 56, 56)
    np.testing.assert_allclose(maps, 2.5, rtol=1e-5)


def test_anomaly_map_peak_stays_at_defect() -> None:
    grid = np.zeros((1, 8, 8), dtype=np.float32)
    grid[0, 2, 5] = 1.0
    anomaly_map = anomaly_maps(grid, 64)[0]
    row, col = np.unravel_index(anomaly_map.argmax(), anomaly_map.shape)
    assert abs(row - 2.5 * 8) <= 2 and abs(col - 5.5 * 8) <= 2


def test_contention_check_ignores_own_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    import structcore.runtime as runtime

    monkeypatch.setattr(runtime, "available_cpus", lambda: 2)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    # Our own spinning workers are subtracted: nothing else runnable -> not contended.
    monkeypatch.setattr(runtime, "_own_running_threads", lambda: 3)
    monkeypatch.setattr(runtime.Path, "read_text", lambda self: "0.5 0.5 0.5 3/100 1")
    assert not runtime.cores_contended()
    assert runtime.small_op_threads() == 2
    # One thread of another process on the two cores we would use -> contended.
    monkeypatch.setattr(runtime, "_own_running_threads", lambda: 2)
    assert runtime.cores_contended()
    assert runtime.small_op_threads() == 1
