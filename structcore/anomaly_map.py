"""Patch scores -> anomaly map (bilinear upsample to the crop, Gaussian blur), method.md step 6."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

#: Standard deviation of the Gaussian blur, in pixels of the crop.
DEFAULT_SIGMA = 4.0


def gaussian_kernel1d(sigma: float, truncate: float = 4.0) -> torch.Tensor:
    """Normalised 1-D Gaussian, radius ``int(truncate * sigma + 0.5)`` (33 taps for sigma 4)."""
    radius = int(truncate * sigma + 0.5)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    return (kernel / kernel.sum()).float()


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


@torch.inference_mode()
def anomaly_maps(
    patch_scores: np.ndarray | torch.Tensor,
    output_size: int,
    sigma: float = DEFAULT_SIGMA,
) -> np.ndarray:
    """Patch-score grids (B, h, w) -> blurred anomaly maps (B, output_size, output_size) float32."""
    grids = torch.as_tensor(patch_scores, dtype=torch.float32)
    if grids.ndim != 3:
        msg = f"patch scores must be (B, h, w), got shape {tuple(grids.shape)}"
        raise ValueError(msg)
    upsampled = F.interpolate(
        grids.unsqueeze(1), size=(output_size, output_size), mode="bilinear", align_corners=False
    ).squeeze(1)
    return gaussian_blur(upsampled, sigma).numpy()
