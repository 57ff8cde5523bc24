"""Patch scores -> anomaly map (bilinear upsample to the crop, Gaussian blur), method.md step 6.

Both steps are linear and separable, so per axis they are one matrix: ``A = G @ U`` with ``U``
(out x in) the bilinear upsampling (PyTorch's ``align_corners=False`` rule) and ``G`` (out x out)
the Gaussian blur with scipy-``reflect`` borders. A map is then ``A_h @ S @ A_w.T``: two small
matmuls per image (~8.5 M multiply-adds for a 49x49 grid at 392 px) instead of an upsample, a
padded copy and two 33-tap convolutions over the full map. The matrices are built once per
(grid, size, sigma) in float64 and cached. They and the maps are computed in numpy by
:mod:`structcore_runtime.maps` (the one implementation, shared with the exported runtime);
:func:`benchmarks.bench.anomaly_maps_reference` keeps the direct computation (interpolate +
:func:`gaussian_blur`, torch); both agree to float32 rounding.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F
from structcore_runtime import maps as shared_maps

from structcore.settings import DEFAULT_SIGMA  # standard deviation of the blur, in pixels of the crop


def gaussian_kernel1d(sigma: float, truncate: float = 4.0) -> torch.Tensor:
    """Normalised 1-D Gaussian, radius ``int(truncate * sigma + 0.5)`` (33 taps for sigma 4)."""
    return _gaussian_kernel1d64(sigma, truncate).float()


def _gaussian_kernel1d64(sigma: float, truncate: float = 4.0) -> torch.Tensor:
    radius = int(truncate * sigma + 0.5)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    return kernel / kernel.sum()


def gaussian_blur(maps: torch.Tensor, sigma: float = DEFAULT_SIGMA) -> torch.Tensor:
    """Separable Gaussian blur of (B, H, W) maps with reflected borders (as scipy's ``reflect``)."""
    if sigma <= 0:
        return maps
    kernel = gaussian_kernel1d(sigma)
    radius = kernel.numel() // 2
    batch = maps.unsqueeze(1)
    # torch's 'reflect' padding does not repeat the edge pixel (scipy 'mirror'); scipy.ndimage's
    # default 'reflect' does. Pad by index to match scipy exactly, at any map size.
    batch = _symmetric_pad(batch, radius)
    batch = F.conv2d(batch, kernel.view(1, 1, 1, -1))
    batch = F.conv2d(batch, kernel.view(1, 1, -1, 1))
    return batch.squeeze(1)


def _reflect_indices(length: int, radius: int) -> torch.Tensor:
    """Indices of a scipy-'reflect' (edge-repeating) padding of ``radius`` on both sides."""
    positions = torch.arange(-radius, length + radius) % (2 * length)
    return torch.where(positions >= length, 2 * length - 1 - positions, positions)


def _symmetric_pad(batch: torch.Tensor, radius: int) -> torch.Tensor:
    height, width = batch.shape[-2:]
    batch = batch.index_select(-1, _reflect_indices(int(width), radius))
    return batch.index_select(-2, _reflect_indices(int(height), radius))


@functools.lru_cache(maxsize=32)
def map_operator(in_size: int, out_size: int, sigma: float) -> torch.Tensor:
    """(out_size, in_size) float32 matrix: bilinear upsampling followed by the Gaussian blur, one axis.

    The matrix of :func:`structcore_runtime.maps.map_operator` (the one implementation), as a tensor.
    """
    return torch.from_numpy(np.array(shared_maps.map_operator(in_size, out_size, sigma)))


def patch_score_grids(patch_scores: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Patch scores as a float32 (B, h, w) tensor; any other shape is refused with one clear message."""
    grids = torch.as_tensor(patch_scores, dtype=torch.float32)
    if grids.ndim != 3:
        msg = f"patch scores must be (B, h, w), got shape {tuple(grids.shape)}"
        raise ValueError(msg)
    return grids


def anomaly_maps(
    patch_scores: np.ndarray | torch.Tensor,
    output_size: int,
    sigma: float = DEFAULT_SIGMA,
) -> np.ndarray:
    """Patch-score grids (B, h, w) -> blurred anomaly maps (B, output_size, output_size) float32.

    :func:`structcore_runtime.maps.anomaly_maps`: the exported runtime computes the same maps.
    """
    if isinstance(patch_scores, torch.Tensor):
        patch_scores = patch_scores.detach().cpu().numpy()
    return shared_maps.anomaly_maps(patch_scores, output_size, sigma)


def content_map(patch_scores: np.ndarray, size: tuple[int, int], sigma: float = DEFAULT_SIGMA) -> np.ndarray:
    """A grid of patch scores (h, w) -> the blurred map (height, width) = ``size`` it covers, float32.

    The ``fit`` geometry's map: only the valid patches (the image's content, not the padding) are
    upsampled, onto the content's pixels, and blurred with reflected borders at the content's
    edges, so the padding never reaches the map. The same operators as :func:`anomaly_maps`, per axis.
    """
    grid = np.asarray(patch_scores, dtype=np.float32)
    if grid.ndim != 2:
        msg = f"patch scores must be (h, w), got shape {grid.shape}"
        raise ValueError(msg)
    rows = shared_maps.map_operator(int(grid.shape[0]), int(size[0]), float(sigma))
    columns = shared_maps.map_operator(int(grid.shape[1]), int(size[1]), float(sigma))
    with shared_maps.one_blas_thread():
        return np.ascontiguousarray(rows @ grid @ columns.T, dtype=np.float32)
