"""Patch scores -> anomaly map (bilinear upsample to the crop, Gaussian blur), method.md step 6.

numpy only: the one implementation of the maps, used by ``structcore`` (``structcore.anomaly_map``)
and by the exported runtime alike.

Both steps are linear and separable, so per axis they are one matrix: ``A = G @ U`` with ``U``
(out x in) the bilinear upsampling (PyTorch's ``align_corners=False`` rule) and ``G`` (out x out)
the Gaussian blur with scipy-``reflect`` borders (the edge pixel repeated). A map is then
``A_h @ S @ A_w.T``: two small matmuls per image instead of an upsample, a padded copy and two
33-tap convolutions over the full map. The matrices are built once per (grid, size, sigma) in
float64, rounded to float32 and cached.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any

import numpy as np

#: Standard deviation of the blur, in pixels of the crop (method.md step 6).
DEFAULT_SIGMA = 4.0


def gaussian_kernel1d64(sigma: float, truncate: float = 4.0) -> np.ndarray:
    """Normalised 1-D Gaussian (float64), radius ``int(truncate * sigma + 0.5)`` (33 taps for sigma 4)."""
    radius = int(truncate * sigma + 0.5)
    offsets = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-0.5 * (offsets / sigma) ** 2)
    return kernel / kernel.sum()


def reflect_indices(length: int, radius: int) -> np.ndarray:
    """Indices of a scipy-'reflect' (edge-repeating) padding of ``radius`` on both sides."""
    positions = np.arange(-radius, length + radius) % (2 * length)
    return np.where(positions >= length, 2 * length - 1 - positions, positions)


def bilinear_matrix(in_size: int, out_size: int) -> np.ndarray:
    """(out, in) float64 matrix of 1-D linear upsampling with ``align_corners=False`` (PyTorch's rule)."""
    scale = in_size / out_size
    source = np.maximum((np.arange(out_size, dtype=np.float64) + 0.5) * scale - 0.5, 0.0)
    lower = np.minimum(np.floor(source).astype(np.int64), in_size - 1)
    upper = np.minimum(lower + 1, in_size - 1)
    weight = source - lower
    matrix = np.zeros((out_size, in_size), dtype=np.float64)
    rows = np.arange(out_size)
    np.add.at(matrix, (rows, lower), 1.0 - weight)
    np.add.at(matrix, (rows, upper), weight)
    return matrix


def blur_matrix(size: int, sigma: float) -> np.ndarray:
    """(size, size) float64 matrix of the 1-D Gaussian blur with scipy-'reflect' borders."""
    if sigma <= 0:
        return np.eye(size, dtype=np.float64)
    kernel = gaussian_kernel1d64(sigma)
    taps_count = kernel.size
    radius = taps_count // 2
    sources = reflect_indices(size, radius)  # padded position -> source pixel
    rows = np.repeat(np.arange(size), taps_count)
    taps = np.tile(np.arange(taps_count), size)
    columns = sources[rows + taps]
    matrix = np.zeros((size, size), dtype=np.float64)
    np.add.at(matrix, (rows, columns), kernel[taps])
    return matrix


@functools.lru_cache(maxsize=32)
def map_operator(in_size: int, out_size: int, sigma: float) -> np.ndarray:
    """(out_size, in_size) float32 matrix: bilinear upsampling followed by the Gaussian blur, one axis."""
    operator = (blur_matrix(out_size, sigma) @ bilinear_matrix(in_size, out_size)).astype(np.float32)
    operator.setflags(write=False)
    return operator


def patch_score_grids(patch_scores: np.ndarray) -> np.ndarray:
    """Patch scores as a float32 (B, h, w) array; any other shape is refused with one clear message."""
    grids = np.asarray(patch_scores, dtype=np.float32)
    if grids.ndim != 3:
        msg = f"patch scores must be (B, h, w), got shape {tuple(grids.shape)}"
        raise ValueError(msg)
    return grids


@functools.lru_cache(maxsize=1)
def _blas_controller() -> Any:
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # pragma: no cover - a dependency; without it BLAS keeps its own threads
        return None
    return ThreadpoolController()


def one_blas_thread() -> contextlib.AbstractContextManager[Any]:
    """Run the block with BLAS on one thread.

    The map's matmuls are small (49 x 49 grids): OpenBLAS's threads only wait at their barriers
    there, and on cores that other processes share they wait long (measured on 2 shared vCPUs at
    load ~12: 80 ms per image with 2 threads against 0.7 ms with 1; torch's matmul took 12 ms).
    """
    controller = _blas_controller()
    return contextlib.nullcontext() if controller is None else controller.limit(limits=1, user_api="blas")


def anomaly_maps(patch_scores: np.ndarray, output_size: int, sigma: float = DEFAULT_SIGMA) -> np.ndarray:
    """Patch-score grids (B, h, w) -> blurred anomaly maps (B, output_size, output_size) float32."""
    grids = patch_score_grids(patch_scores)
    rows = map_operator(int(grids.shape[1]), int(output_size), float(sigma))
    columns = map_operator(int(grids.shape[2]), int(output_size), float(sigma))
    with one_blas_thread():
        return np.ascontiguousarray(np.matmul(np.matmul(rows, grids), columns.T), dtype=np.float32)
