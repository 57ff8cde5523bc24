"""Anomaly maps: the Gaussian blur against scipy, shapes, constants and the position of a peak."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter

from structcore.anomaly_map import anomaly_maps, content_map, gaussian_blur


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


def test_content_map_equals_upsampling_and_blurring_the_valid_grid_alone() -> None:
    """The fit geometry's map: the valid patch grid upsampled onto the content and blurred there."""
    grid = np.random.default_rng(3).random((8, 16)).astype(np.float32)  # a 2:1 content's valid patches
    found = content_map(grid, (64, 128), sigma=4.0)
    upsampled = F.interpolate(torch.from_numpy(grid)[None, None], size=(64, 128), mode="bilinear", align_corners=False)
    reference = gaussian_blur(upsampled[:, 0], sigma=4.0)[0].numpy()
    assert found.shape == (64, 128) and found.dtype == np.float32
    np.testing.assert_allclose(found, reference, rtol=1e-5, atol=1e-6)
