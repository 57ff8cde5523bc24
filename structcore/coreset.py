"""Greedy k-center (farthest point) coreset selection, method.md "Memory bank"."""

from __future__ import annotations

import math

import numpy as np
import torch


class KCenterGreedy:
    """Greedy k-center selection in a seeded low-dimensional random projection ("proxy").

    Starts from one seeded random point (part of the coreset), then repeatedly adds the point
    farthest (squared L2 in the proxy space) from the current selection. Memory is O(N * proxy_dim)
    for the proxy matrix plus O(N) for the running minimum distances: no N x N matrix.

    Each iteration is one matrix-vector product over the proxy matrix (a single memory stream),
    using ``||x - c||^2 = ||x||^2 - 2 x.c + ||c||^2`` with precomputed norms.

    Args:
        ratio: share of the points to select (used when ``n_select`` is None).
        n_select: exact number of points to select (overrides ``ratio``).
        proxy_dim: dimension of the random projection used for distances; ``None`` or a value
            >= the input dimension means exact distances in the input space.
        seed: seeds the start point and the projection.

    Attributes:
        indices_: selected row indices, in selection order (``indices_[0]`` is the start point).
        radius_: covering radius in the proxy space (max over points of the distance to the
            nearest selected point), measured before the last point was added.
    """

    def __init__(
        self,
        ratio: float = 0.01,
        n_select: int | None = None,
        proxy_dim: int | None = 128,
        seed: int = 0,
    ):
        self.ratio = ratio
        self.n_select = n_select
        self.proxy_dim = proxy_dim
        self.seed = seed

    def _target_size(self, n_points: int) -> int:
        if self.n_select is not None:
            count = self.n_select
        else:
            if not 0.0 < self.ratio <= 1.0:
                msg = f"coreset ratio must be in (0, 1], got {self.ratio}"
                raise ValueError(msg)
            count = math.ceil(n_points * self.ratio)
        return max(1, min(int(count), n_points))

    def _proxy(self, points: np.ndarray) -> torch.Tensor:
        data = torch.from_numpy(np.ascontiguousarray(points, dtype=np.float32))
        if self.proxy_dim is None or self.proxy_dim >= points.shape[1]:
            return data
        generator = np.random.default_rng(self.seed)
        projection = generator.standard_normal((points.shape[1], self.proxy_dim)).astype(np.float32)
        projection /= np.sqrt(self.proxy_dim)
        return data @ torch.from_numpy(projection)

    def fit(self, points: np.ndarray) -> KCenterGreedy:
        """Select the coreset of ``points`` (N, D)."""
        if points.ndim != 2 or points.shape[0] == 0:
            msg = f"expected a non-empty (N, D) array, got shape {points.shape}"
            raise ValueError(msg)
        n_points = points.shape[0]
        target = self._target_size(n_points)
        proxy = self._proxy(points)
        norms = (proxy * proxy).sum(dim=1)
        start = int(np.random.default_rng(self.seed).integers(n_points))
        selected = np.empty(target, dtype=np.int64)
        selected[0] = start
        min_distances = torch.full((n_points,), float("inf"), dtype=torch.float32)
        scratch = torch.empty(n_points, dtype=torch.float32)
        radius = 0.0
        for step in range(target):
            center_index = int(selected[step])
            center = proxy[center_index]
            # scratch = ||x||^2 - 2 x.c  (then + ||c||^2)
            torch.addmv(norms, proxy, center, beta=1.0, alpha=-2.0, out=scratch)
            scratch.add_(float(norms[center_index]))
            torch.minimum(min_distances, scratch, out=min_distances)
            min_distances[center_index] = 0.0
            if step + 1 < target:
                farthest = int(torch.argmax(min_distances))
                radius = float(min_distances[farthest])
                selected[step + 1] = farthest
        if target == 1 or n_points == target:
            radius = float(min_distances.clamp_min(0).max())
        self.indices_ = selected
        self.radius_ = math.sqrt(max(radius, 0.0))
        return self


def covering_radius(points: np.ndarray, centers: np.ndarray, chunk: int = 8192) -> float:
    """Max over ``points`` of the Euclidean distance to the nearest row of ``centers``."""
    centers_t = torch.from_numpy(np.ascontiguousarray(centers, dtype=np.float32))
    worst = 0.0
    for start in range(0, points.shape[0], chunk):
        block = torch.from_numpy(np.ascontiguousarray(points[start : start + chunk], dtype=np.float32))
        nearest = torch.cdist(block, centers_t).min(dim=1).values
        worst = max(worst, float(nearest.max()))
    return worst
