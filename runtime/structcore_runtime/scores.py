"""StructCore image scores of anomaly maps: base (max), descriptor phi, diagonal Mahalanobis, hybrid.

numpy only: the one implementation of the scores, used by ``structcore.scoring`` (which adds the
fitting of the statistics) and by the exported runtime. Method.md steps 7-11.
"""

from __future__ import annotations

import math

import numpy as np

#: Share of the map's pixels averaged by the top-k mean.
DEFAULT_TOP_RATIO = 0.01
#: Added to scales before dividing.
EPS = 1e-6


def base_scores(maps: np.ndarray) -> np.ndarray:
    """Max-pooled image scores (B,) of maps (B, H, W)."""
    return maps.reshape(maps.shape[0], -1).max(axis=1).astype(np.float64)


def structural_descriptor(maps: np.ndarray, top_ratio: float = DEFAULT_TOP_RATIO) -> np.ndarray:
    """phi(S) = [std(s), mean of the top ceil(H*W*r) values, TV(S)] per map; returns (B, 3) float64.

    ``std`` is the population standard deviation (ddof = 0). ``TV(S) = (1/(H*W)) * sum of
    |S[i+1,j] - S[i,j]| + |S[i,j+1] - S[i,j]|`` over the terms that stay inside the map.
    """
    if maps.ndim == 2:
        maps = maps[None]
    batch, height, width = maps.shape
    values = maps.reshape(batch, -1).astype(np.float64)
    count = max(1, math.ceil(height * width * top_ratio))
    top_values = np.partition(values, values.shape[1] - count, axis=1)[:, -count:]
    maps64 = values.reshape(batch, height, width)
    vertical = np.abs(np.diff(maps64, axis=1)).sum(axis=(1, 2))
    horizontal = np.abs(np.diff(maps64, axis=2)).sum(axis=(1, 2))
    return np.stack(
        [values.std(axis=1), top_values.mean(axis=1), (vertical + horizontal) / (height * width)],
        axis=1,
    )


def struct_distance(
    descriptors: np.ndarray, mu: np.ndarray, sigma: np.ndarray, eps: float = EPS, one_sided: bool = True
) -> np.ndarray:
    """Diagonal Mahalanobis distance ``||(phi - mu) / (sigma + eps)||_2`` per row.

    ``one_sided`` (the ``robust`` scoring): only the dimensions with ``phi > mu`` contribute.
    """
    standardized = (np.asarray(descriptors, dtype=np.float64) - mu) / (sigma + eps)
    if one_sided:
        standardized = np.maximum(standardized, 0.0)
    return np.sqrt((standardized**2).sum(axis=1))


def hybrid_scores(base: np.ndarray, struct: np.ndarray, lambda_: float) -> np.ndarray:
    """``S_hyb = S_base + lambda * D_struct``."""
    return np.asarray(base, dtype=np.float64) + lambda_ * np.asarray(struct, dtype=np.float64)
