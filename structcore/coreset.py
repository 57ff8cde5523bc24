"""Greedy k-center (farthest point) coreset selection, method.md "Memory bank".

Two algorithms select from the same seeded proxy space (a random projection to ``proxy_dim``):

* ``exact``: textbook farthest-point greedy. Each iteration is one matrix-vector product over
  the proxy matrix (``||x - c||^2 = ||x||^2 - 2 x.c + ||c||^2`` with precomputed norms) plus a
  running minimum, i.e. one stream of the proxy matrix from memory: its cost is
  ``iterations x N x proxy_dim`` and grows as ``ratio x N^2``.
* ``approx`` (the paper's "approximate greedy", coarse to fine): the first ``coarse`` centers are
  chosen by exact greedy on a seeded random sample (10% of the points, at least 50k), then every
  point is assigned to its nearest coarse center (one blocked GEMM), and the remaining centers
  are chosen exactly as the farthest point of the full set. The fine phase keeps each point's
  nearest center and each center's cluster radius and skips, by the triangle inequality, every
  cluster that the new center cannot improve (``||a - c|| >= 2 r_a``), so late iterations touch
  a few percent of the points instead of all of them. Only the coarse phase is approximate; the
  final covering radius is that of a farthest-point traversal of all points.

``method="auto"`` uses ``approx`` when ``n_select x N`` exceeds :data:`APPROX_MIN_WORK` (see
``docs/performance.md`` for the measurements behind the threshold), else ``exact``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import numpy as np
import torch

from structcore.features import small_op_threads

#: ``n_select x N`` above which ``method="auto"`` uses the approximate (coarse-to-fine) greedy.
#: Exact greedy streams the 128-dim proxy once per center: ~2.8e-8 s per point-center on 2 idle
#: cores (13.9 ms per pass over 501,809 points), so 1e9 is ~28 s; below it exact costs seconds
#: and approximation buys little. MVTec bottle at 1% (5,019 x 501,809 = 2.5e9) is above:
#: exact 70 s, approx 18 s, covering radius +0.6% (docs/performance.md).
APPROX_MIN_WORK = 1.0e9
#: Share of the points sampled for the coarse phase (at least :data:`COARSE_MIN_SAMPLE`).
COARSE_SAMPLE_SHARE = 0.1
COARSE_MIN_SAMPLE = 50_000
#: Centers chosen in the coarse phase: a share of the target, at most :data:`COARSE_MAX_CENTERS`.
COARSE_CENTER_SHARE = 0.2
COARSE_MAX_CENTERS = 1000
METHODS = ("auto", "exact", "approx")
#: Relative / absolute slack of the pruning test (covers float32 rounding of the distances).
_PRUNE_RELATIVE = 1e-3
_PRUNE_ABSOLUTE = 1e-6


class KCenterGreedy:
    """Greedy k-center selection in a seeded low-dimensional random projection ("proxy").

    Starts from one seeded random point (part of the coreset), then repeatedly adds the point
    farthest (squared L2 in the proxy space) from the current selection. Memory is O(N * proxy_dim)
    for the proxy matrix plus O(N) for the running minimum distances: no N x N matrix.

    Args:
        ratio: share of the points to select (used when ``n_select`` is None).
        n_select: exact number of points to select (overrides ``ratio``).
        proxy_dim: dimension of the random projection used for distances; ``None`` or a value
            >= the input dimension means exact distances in the input space.
        seed: seeds the start point, the projection and the coarse sample.
        method: ``"exact"``, ``"approx"`` (coarse to fine) or ``"auto"`` (see the module doc).

    Attributes:
        indices_: selected row indices, in selection order (``indices_[0]`` is the start point).
        radius_: covering radius in the proxy space (max over points of the distance to the
            nearest selected point), measured before the last point was added.
        method_: the algorithm that ran (``"exact"`` or ``"approx"``).
    """

    def __init__(
        self,
        ratio: float = 0.01,
        n_select: int | None = None,
        proxy_dim: int | None = 128,
        seed: int = 0,
        method: str = "auto",
    ):
        self.ratio = ratio
        self.n_select = n_select
        self.proxy_dim = proxy_dim
        self.seed = seed
        self.method = method

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

    def resolve_method(self, n_points: int) -> str:
        """The algorithm ``fit`` runs for ``n_points`` points."""
        if self.method not in METHODS:
            msg = f"unknown coreset method {self.method!r}; choose one of {METHODS}"
            raise ValueError(msg)
        if self.method != "auto":
            return self.method
        return "approx" if float(self._target_size(n_points)) * n_points > APPROX_MIN_WORK else "exact"

    def fit(self, points: np.ndarray) -> KCenterGreedy:
        """Select the coreset of ``points`` (N, D)."""
        if points.ndim != 2 or points.shape[0] == 0:
            msg = f"expected a non-empty (N, D) array, got shape {points.shape}"
            raise ValueError(msg)
        n_points = points.shape[0]
        target = self._target_size(n_points)
        method = self.resolve_method(n_points)
        with torch.inference_mode():
            proxy = self._proxy(points)
            norms = (proxy * proxy).sum(dim=1)
            start = int(np.random.default_rng(self.seed).integers(n_points))
            if method == "approx":
                selected, radius = _approx_greedy(proxy, norms, start, target, self.seed)
            else:
                selected, radius = exact_greedy(proxy, norms, start, target)
        self.indices_ = selected
        self.radius_ = math.sqrt(max(radius, 0.0))
        self.method_ = method
        return self


def exact_greedy(proxy: torch.Tensor, norms: torch.Tensor, start: int, target: int) -> tuple[np.ndarray, float]:
    """Farthest-point greedy over all rows of ``proxy``; returns (indices, squared radius).

    The squared radius is the largest min-distance before the last point was added (after it,
    when every point is selected or only one is asked for). Runs single-threaded when other
    processes are busy on the cores (:func:`structcore.features.small_op_threads`).
    """
    with _torch_threads(small_op_threads()):
        return _exact_loop(proxy, norms, start, target)


def _exact_loop(proxy: torch.Tensor, norms: torch.Tensor, start: int, target: int) -> tuple[np.ndarray, float]:
    n_points = int(proxy.shape[0])
    selected = np.empty(target, dtype=np.int64)
    selected[0] = start
    min_distances = torch.full((n_points,), float("inf"), dtype=torch.float32)
    scratch = torch.empty(n_points, dtype=torch.float32)
    radius = 0.0
    for step in range(target):
        center_index = int(selected[step])
        # scratch = ||x||^2 - 2 x.c  (then + ||c||^2)
        torch.addmv(norms, proxy, proxy[center_index], beta=1.0, alpha=-2.0, out=scratch)
        scratch.add_(float(norms[center_index]))
        torch.minimum(min_distances, scratch, out=min_distances)
        min_distances[center_index] = 0.0
        if step + 1 < target:
            farthest = int(torch.argmax(min_distances))
            radius = float(min_distances[farthest])
            selected[step + 1] = farthest
    if target == 1 or n_points == target:
        radius = float(min_distances.clamp_min(0).max())
    return selected, radius


def _approx_greedy(
    proxy: torch.Tensor, norms: torch.Tensor, start: int, target: int, seed: int
) -> tuple[np.ndarray, float]:
    """Coarse (greedy on a sample) to fine (pruned farthest point on all points); see the module doc."""
    n_points = int(proxy.shape[0])
    sample_size = min(n_points, max(COARSE_MIN_SAMPLE, math.ceil(n_points * COARSE_SAMPLE_SHARE)))
    coarse = min(target, COARSE_MAX_CENTERS, max(1, math.ceil(target * COARSE_CENTER_SHARE)))
    if sample_size >= n_points or coarse >= target:
        return exact_greedy(proxy, norms, start, target)
    rng = np.random.default_rng([seed, 1])
    sample = np.sort(rng.choice(n_points, size=sample_size, replace=False))
    if not np.any(sample == start):  # the seeded start point always belongs to the coreset
        sample[0] = start
        sample.sort()
    sample_t = torch.from_numpy(sample)
    sample_start = int(np.searchsorted(sample, start))
    picked, _ = exact_greedy(proxy[sample_t], norms[sample_t], sample_start, coarse)
    centers = sample[picked]
    return _pruned_greedy(proxy, norms, centers, target)


def _assign(proxy: torch.Tensor, norms: torch.Tensor, centers: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Squared distance of every row to its nearest center and that center's position (blocked GEMM)."""
    n_points = int(proxy.shape[0])
    center_t = torch.from_numpy(centers)
    center_rows = proxy[center_t]
    center_norms = norms[center_t]
    min_distances = torch.empty(n_points, dtype=torch.float32)
    assignment = torch.empty(n_points, dtype=torch.int64)
    block = max(1024, (1 << 24) // max(1, len(centers)))
    for first in range(0, n_points, block):
        rows = slice(first, first + block)
        distances = torch.addmm(center_norms.unsqueeze(0), proxy[rows], center_rows.T, alpha=-2.0)
        distances.add_(norms[rows].unsqueeze(1))
        torch.min(distances, dim=1, out=(min_distances[rows], assignment[rows]))
    min_distances[center_t] = 0.0
    assignment[center_t] = torch.arange(len(centers))
    return min_distances, assignment


def _pruned_greedy(
    proxy: torch.Tensor, norms: torch.Tensor, initial: np.ndarray, target: int
) -> tuple[np.ndarray, float]:
    """Farthest-point greedy over all rows, continuing from the centers ``initial``.

    Keeps for every point its nearest center (``assignment``) and squared distance, and for every
    center the largest squared distance of its points (``radius``), so the farthest point is found
    from the center with the largest radius. A new center ``c`` can only take a point ``x`` from its
    center ``a`` when ``||a - c|| < 2 ||x - a||`` (triangle inequality): only the points of centers
    with ``||a - c|| < 2 radius_a`` are looked at, and only those with ``4 d(x, a) > ||a - c||^2``
    are measured. Members of each center are found through a point list sorted by center,
    rebuilt when enough points have moved (moved points are listed separately meanwhile), so an
    iteration costs O(points near c + centers), not O(N). The loop runs single-threaded: its
    ops are small, and on shared cores every OpenMP barrier of a small op can wait a whole
    scheduler slice for a descheduled thread.
    """
    count = len(initial)
    selected = np.empty(target, dtype=np.int64)
    selected[:count] = initial
    min_distances, assignment = _assign(proxy, norms, initial)
    with _torch_threads(1):
        return _pruned_loop(proxy, norms, initial, target, selected, min_distances, assignment)


def _pruned_loop(
    proxy: torch.Tensor,
    norms: torch.Tensor,
    initial: np.ndarray,
    target: int,
    selected: np.ndarray,
    min_distances: torch.Tensor,
    assignment: torch.Tensor,
) -> tuple[np.ndarray, float]:
    n_points, dim = int(proxy.shape[0]), int(proxy.shape[1])
    count = len(initial)
    center_rows = torch.empty(target, dim, dtype=torch.float32)
    center_rows[:count] = proxy[torch.from_numpy(initial)]
    center_norms = torch.empty(target, dtype=torch.float32)
    center_norms[:count] = norms[torch.from_numpy(initial)]
    radius_sq = torch.full((target,), float("-inf"), dtype=torch.float32)
    radius_sq.scatter_reduce_(0, assignment, min_distances, reduce="amax")
    center_distances = torch.empty(target, dtype=torch.float32)
    scale = 4.0 * (1.0 + _PRUNE_RELATIVE)
    point_scale = 4.0 * (1.0 + _PRUNE_RELATIVE)
    # Points sorted by center (as of the last rebuild) and the points moved since.
    capacity = max(4096, n_points // 64)
    moved = torch.empty(capacity, dtype=torch.int64)
    n_moved = 0
    order, starts, counts = _members(assignment, target)
    radius = float(min_distances.max())
    for step in range(count, target):
        owner = int(torch.argmax(radius_sq[:step]))
        listed = order[int(starts[owner]) : int(starts[owner] + counts[owner])]
        pool = torch.cat([listed, moved[:n_moved]]) if n_moved else listed
        pool = pool[assignment.index_select(0, pool) == owner]
        farthest = int(pool[torch.argmax(min_distances.index_select(0, pool))])
        radius = float(min_distances[farthest])
        selected[step] = farthest
        center = proxy[farthest]
        center_norm = float(norms[farthest])
        center_rows[step] = center
        center_norms[step] = center_norm
        near = center_distances[:step]
        torch.addmv(center_norms[:step], center_rows[:step], center, alpha=-2.0, out=near)
        near.add_(center_norm)
        candidate = near < radius_sq[:step] * scale + _PRUNE_ABSOLUTE
        chosen = torch.nonzero(candidate).view(-1)
        touched = _ranges(order, starts.index_select(0, chosen), counts.index_select(0, chosen))
        if n_moved:
            touched = torch.cat([touched, moved[:n_moved]])
        current = min_distances.index_select(0, touched)
        owners = assignment.index_select(0, touched)
        # Only points with 4 d(x, a) > ||a - c||^2 can move to c.
        movable = torch.nonzero(current * point_scale + _PRUNE_ABSOLUTE > near.index_select(0, owners)).view(-1)
        points = touched.index_select(0, movable)
        distances = torch.addmv(norms.index_select(0, points), proxy.index_select(0, points), center, alpha=-2.0)
        distances.add_(center_norm)
        better = distances < current.index_select(0, movable)
        improved = movable[better]
        current.index_copy_(0, improved, distances[better])
        owners.index_fill_(0, improved, step)
        min_distances.index_copy_(0, touched, current)
        assignment.index_copy_(0, touched, owners)
        min_distances[farthest] = 0.0
        assignment[farthest] = step
        # Exact radii of the re-measured centers: all their points are in ``touched``.
        radius_sq.index_fill_(0, chosen, float("-inf"))
        radius_sq[step] = float("-inf")
        radius_sq.scatter_reduce_(0, owners, current, reduce="amax")
        radius_sq[step] = max(float(radius_sq[step]), 0.0)
        arrived = torch.cat([touched.index_select(0, improved), torch.tensor([farthest])])
        if n_moved + len(arrived) > capacity:
            order, starts, counts = _members(assignment, target)
            n_moved = 0
        else:
            moved[n_moved : n_moved + len(arrived)] = arrived
            n_moved += len(arrived)
    if n_points == target:
        radius = float(min_distances.clamp_min(0).max())
    return selected, radius


def _members(assignment: torch.Tensor, centers: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Point indices sorted by center, and each center's first position and count in that list."""
    order = torch.argsort(assignment, stable=True)
    counts = torch.bincount(assignment, minlength=centers)
    starts = torch.cumsum(counts, 0) - counts
    return order, starts, counts


def _ranges(order: torch.Tensor, starts: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """``order[s : s + c]`` for every (s, c), concatenated."""
    total = int(counts.sum())
    if total == 0:
        return order[:0]
    offsets = torch.cumsum(counts, 0) - counts
    positions = torch.arange(total) + torch.repeat_interleave(starts - offsets, counts)
    return order.index_select(0, positions)


@contextlib.contextmanager
def _torch_threads(threads: int) -> Iterator[None]:
    saved = torch.get_num_threads()
    if threads == saved:
        yield
        return
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def covering_radius(points: np.ndarray, centers: np.ndarray, chunk: int = 8192) -> float:
    """Max over ``points`` of the Euclidean distance to the nearest row of ``centers``."""
    centers_t = torch.from_numpy(np.ascontiguousarray(centers, dtype=np.float32))
    center_norms = (centers_t * centers_t).sum(dim=1)
    worst = 0.0
    with torch.inference_mode():
        for start in range(0, points.shape[0], chunk):
            block = torch.from_numpy(np.ascontiguousarray(points[start : start + chunk], dtype=np.float32))
            squared = torch.addmm(center_norms.unsqueeze(0), block, centers_t.T, alpha=-2.0)
            squared.add_((block * block).sum(dim=1, keepdim=True))
            worst = max(worst, float(squared.min(dim=1).values.clamp_min(0).max()))
    return math.sqrt(worst)
