"""Anomaly maps: the Gaussian blur against scipy, shapes, constants and the position of a peak."""

from __future__ import annotations

import numpy as np
import torch
from scipy.ndimage import gaussian_filter

from structcore.anomaly_map import anomaly_maps, gaussian_blur


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
