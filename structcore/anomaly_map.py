"""Patch scores -> anomaly map (bilinear upsample to the crop, Gaussian blur), method.md step 6.

Both steps are linear and separable, so per axis they are one matrix: ``A = G @ U`` with ``U``
(out x in) the bilinear upsampling (PyTorch's ``align_corners=False`` rule) and ``G`` (out x out)
the Gaussian blur with scipy-``reflect`` borders. A map is then ``A_h @ S @ A_w.T``: two small
matmuls per image (~8.5 M multiply-adds for a 49x49 grid at 392 px) instead of an upsample, a
padded copy and two 33-tap convolutions over the full map. The matrices are built once per
(grid, size, sigma) in float64 and cached. :func:`benchmarks.bench.anomaly_maps_reference` keeps the
direct computation (interpolate + :func:`gaussian_blur`); both agree to float32 rounding.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F

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


def _bilinear_matrix(in_size: int, out_size: int) -> torch.Tensor:
    """(out, in) float64 matrix of 1-D linear upsampling with ``align_corners=False`` (PyTorch's rule)."""
    scale = in_size / out_size
    source = ((torch.arange(out_size, dtype=torch.float64) + 0.5) * scale - 0.5).clamp_min(0.0)
    lower = source.floor().long().clamp_max(in_size - 1)
    upper = (lower + 1).clamp_max(in_size - 1)
    weight = source - lower
    matrix = torch.zeros(out_size, in_size, dtype=torch.float64)
    rows = torch.arange(out_size)
    matrix.index_put_((rows, lower), 1.0 - weight, accumulate=True)
    matrix.index_put_((rows, upper), weight, accumulate=True)
    return matrix


def _blur_matrix(size: int, sigma: float) -> torch.Tensor:
    """(size, size) float64 matrix of the 1-D Gaussian blur with scipy-'reflect' borders."""
    if sigma <= 0:
        return torch.eye(size, dtype=torch.float64)
    kernel = _gaussian_kernel1d64(sigma)
    radius = kernel.numel() // 2
    sources = _reflect_indices(size, radius)  # padded position -> source pixel
    matrix = torch.zeros(size, size, dtype=torch.float64)
    rows = torch.arange(size).repeat_interleave(kernel.numel())
    taps = torch.arange(kernel.numel()).repeat(size)
    columns = sources[rows + taps]
    matrix.index_put_((rows, columns), kernel[taps], accumulate=True)
    return matrix


@functools.lru_cache(maxsize=32)
def map_operator(in_size: int, out_size: int, sigma: float) -> torch.Tensor:
    """(out_size, in_size) float32 matrix: bilinear upsampling followed by the Gaussian blur, one axis."""
    return (_blur_matrix(out_size, sigma) @ _bilinear_matrix(in_size, out_size)).float()


def patch_score_grids(patch_scores: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Patch scores as a float32 (B, h, w) tensor; any other shape is refused with one clear message."""
    grids = torch.as_tensor(patch_scores, dtype=torch.float32)
    if grids.ndim != 3:
        msg = f"patch scores must be (B, h, w), got shape {tuple(grids.shape)}"
        raise ValueError(msg)
    return grids


@torch.inference_mode()
def anomaly_maps(
    patch_scores: np.ndarray | torch.Tensor,
    output_size: int,
    sigma: float = DEFAULT_SIGMA,
) -> np.ndarray:
    """Patch-score grids (B, h, w) -> blurred anomaly maps (B, output_size, output_size) float32."""
    grids = patch_score_grids(patch_scores)
    rows = map_operator(int(grids.shape[1]), int(output_size), float(sigma))
    columns = map_operator(int(grids.shape[2]), int(output_size), float(sigma))
    return torch.matmul(torch.matmul(rows, grids), columns.T).numpy()
