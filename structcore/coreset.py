"""Greedy k-center (farthest point) coreset selection, method.md "Memory bank".

Both algorithms select in the same seeded proxy space (a random projection to ``proxy_dim``):

* ``exact``: farthest-point greedy. The textbook loop streams the whole proxy matrix once per
  center (a matrix-vector product), which is memory bound. Here the centers are found in
  *batches*: the ``4 x batch + 1`` points with the largest current distance are the candidates,
  the next centers are chosen among them one at a time (their distances to each new center are
  updated exactly), and a candidate is accepted only while its updated distance is at least the
  largest distance any non-candidate can have (the smallest candidate bound: distances only
  shrink). Each accepted point is therefore the true farthest point, as in the textbook loop,
  and all points are then updated against the batch in one blocked GEMM, which is compute bound.
  The selection equals the textbook one up to the order of float-equal distances; it costs
  ``N x n_select x proxy_dim`` multiply-adds done as GEMMs instead of ``n_select`` memory passes.
* ``approx`` (the paper's "approximate greedy", coarse to fine): the first
  ``COARSE_CENTER_SHARE`` of the centers are chosen by exact greedy on a seeded random sample
  (``COARSE_SAMPLE_SHARE`` of the points, at least ``COARSE_MIN_SAMPLE``); every point is then
  assigned to its nearest coarse center, and the remaining centers are chosen by exact greedy
  on all points, continuing from the coarse ones. Only the coarse phase is approximate; the
  final covering radius is that of a farthest-point traversal of all points.

``method="auto"`` uses ``approx`` when ``n_select x N`` exceeds :data:`APPROX_MIN_WORK` (see
``docs/performance.md`` for the measurements behind the threshold), else ``exact``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch

from structcore.runtime import small_op_threads, torch_threads
from structcore.settings import CORESET_METHODS

#: ``n_select x N`` above which ``method="auto"`` uses the approximate (coarse-to-fine) greedy.
#: Batched exact greedy costs ~2.3e-9 s per point-center on 2 idle cores (MVTec bottle at 1%,
#: 5,019 x 501,809 = 2.5e9, takes ~6 s), so 2e10 is ~45 s of selection: below it exact is cheap
#: enough; above it (e.g. 761 images at 1%: 18,270 x 1.83M = 3.3e10) the coarse phase saves
#: about 70% of the work (docs/performance.md).
APPROX_MIN_WORK = 2.0e10
#: Share of the points sampled for the coarse phase (at least :data:`COARSE_MIN_SAMPLE`).
COARSE_SAMPLE_SHARE = 0.1
COARSE_MIN_SAMPLE = 50_000
#: Share of the centers chosen in the coarse phase.
COARSE_CENTER_SHARE = 0.75
#: Below this many coarse centers the approximate method runs exact greedy.
COARSE_MIN_CENTERS = 256
#: Inverted lists probed when the points are assigned to the coarse centers.
COARSE_PROBES = 8
#: Centers accepted per batch of the exact greedy at most (the candidate pool is 4x this).
BATCH_CENTERS = 64
METHODS = CORESET_METHODS
#: Rows whose stored bound may exceed the pool's are measured this many at a time
#: (:meth:`KCenterGreedy.extend` with ``bounds``): fewer top-k rounds over all rows.
MEASURE_BLOCK = 8192


class Traversal(NamedTuple):
    """A farthest-point traversal: picked rows, squared covering radius, each row's squared distance."""

    #: selected row indices, in selection order
    selected: np.ndarray
    #: the largest min-distance before the last pick (see :func:`exact_greedy`)
    squared_radius: float
    #: (N,) every row's squared distance to its nearest pick (an upper bound after the coarse phase
    #: of ``approx``); ``-inf`` for the picked rows
    min_distances: torch.Tensor


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
        method_: the algorithm that ran (``"exact"``, ``"approx"`` or ``"extend"``).
        min_distances_: (N,) each point's squared proxy distance to its nearest selected point (0
            for the selected ones; an upper bound where the traversal kept one: the coarse phase
            of ``approx``, the rows :meth:`extend` did not measure). What a later :meth:`extend`
            takes as ``bounds``.
        measured_rows_: :meth:`extend` only: the rows whose distance it measured.
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

    def _projection(self, dim: int) -> torch.Tensor | None:
        """The seeded (dim, proxy_dim) random projection; ``None``: distances in the input space."""
        if self.proxy_dim is None or self.proxy_dim >= dim:
            return None
        generator = np.random.default_rng(self.seed)
        projection = generator.standard_normal((dim, self.proxy_dim)).astype(np.float32)
        projection /= np.sqrt(self.proxy_dim)
        return torch.from_numpy(projection)

    def _proxy(self, points: np.ndarray) -> torch.Tensor:
        return _project(points, self._projection(int(points.shape[1])))

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
            norms = squared_norms(proxy)
            start = int(np.random.default_rng(self.seed).integers(n_points))
            if method == "approx":
                traversal = _approx_greedy(proxy, norms, start, target, self.seed)
            else:
                traversal = exact_greedy(proxy, norms, start, target)
        self.indices_ = traversal.selected
        self.radius_ = math.sqrt(max(traversal.squared_radius, 0.0))
        self.min_distances_ = traversal.min_distances.clamp_min(0.0).numpy()
        self.method_ = method
        return self

    def extend(
        self, existing: np.ndarray, points: np.ndarray, n_select: int, bounds: np.ndarray | None = None
    ) -> KCenterGreedy:
        """Continue a coreset: pick ``n_select`` of ``points`` (N, D) by farthest-point greedy,
        starting from the centers ``existing`` (M, D) (``registry update``).

        Every point starts at its squared proxy distance to the nearest existing center, so the
        first pick is the point farthest from the current bank, and so on: the result is what the
        textbook greedy over ``existing + points`` would add after ``existing`` had it reached
        them (exactly so when ``existing`` was itself a greedy traversal).

        ``bounds`` (N,): where finite, an upper bound on the row's squared proxy distance to the
        nearest existing center (the ``min_distances_`` of the traversal that chose ``existing``,
        for the points it covered). Those rows are *settled*: they are projected and measured only
        when their bound reaches the candidate pool of a pick (distances only shrink, so a bound
        below the pool's cannot be the farthest point), which makes continuing a bank over all of
        a category's patches cost about what the rows near the covering radius cost. The picks are
        the same as with every row measured (up to the order of float-equal distances). Rows with
        ``bounds`` absent or not finite are measured against ``existing`` first.

        ``indices_`` index ``points``; ``radius_`` is the covering radius of ``points`` by
        ``existing`` plus the picks; ``min_distances_`` (N,) each row's squared distance to its
        nearest center after the picks (for settled rows never measured: their bound).
        """
        if points.ndim != 2 or existing.ndim != 2 or points.shape[1] != existing.shape[1]:
            msg = f"expected (N, D) and (M, D) arrays of one D, got {points.shape} and {existing.shape}"
            raise ValueError(msg)
        n_points = int(points.shape[0])
        if bounds is not None and bounds.shape != (n_points,):
            msg = f"expected one bound per point ({n_points},), got shape {bounds.shape}"
            raise ValueError(msg)
        target = max(0, min(int(n_select), n_points))
        with torch.inference_mode():
            projection = self._projection(int(points.shape[1]))
            min_distances = torch.full((n_points,), float("inf"), dtype=torch.float32)
            settled = np.zeros(n_points, dtype=bool) if bounds is None else np.isfinite(bounds)
            if settled.any():
                assert bounds is not None
                settled_rows = torch.from_numpy(np.flatnonzero(settled))
                min_distances[settled_rows] = torch.from_numpy(bounds[settled].astype(np.float32)).clamp_min_(0.0)
            measured = _MeasuredRows(points, projection)
            measured.add(torch.from_numpy(np.flatnonzero(~settled)))
            centers = _project(existing, projection)
            picks = [(centers, squared_norms(centers))] if len(existing) else []
            if picks:
                measured.update(min_distances, *picks[0])
            selected, radius = _lazy_farthest_points(measured, min_distances, target, BATCH_CENTERS, picks)
        self.indices_ = selected
        self.radius_ = math.sqrt(max(radius, 0.0))
        self.min_distances_ = min_distances.clamp_min(0.0).numpy()
        #: rows whose distance was measured (the others kept their bound)
        self.measured_rows_ = int(measured.is_measured.sum())
        self.method_ = "extend"
        return self

    def distance_bounds(self, existing: np.ndarray, points: np.ndarray) -> np.ndarray:
        """Upper bounds (N,) on each point's squared proxy distance to the nearest row of ``existing``.

        The distance to a *near* existing center found by a faiss inverted-file search (see
        :func:`_distance_to_nearby_center`): what :meth:`extend` takes as ``bounds`` when the
        traversal that chose ``existing`` left no distances (a bank stored before they were kept).
        """
        with torch.inference_mode():
            projection = self._projection(int(points.shape[1]))
            centers = _project(existing, projection)
            proxy = _project(points, projection)
            found = _distance_to_nearby_center(proxy, centers, self.seed)
        return found.clamp_min(0.0).numpy()


def _project(points: np.ndarray, projection: torch.Tensor | None) -> torch.Tensor:
    """``points`` (N, D) as float32 in the proxy space (``projection`` None: as they are)."""
    data = torch.from_numpy(np.ascontiguousarray(points, dtype=np.float32))
    return data if projection is None else data @ projection


class _MeasuredRows:
    """The rows of a lazy traversal whose distance to the centers is kept exact, as proxy blocks."""

    def __init__(self, points: np.ndarray, projection: torch.Tensor | None):
        self._points = points
        self._projection = projection
        self.is_measured = torch.zeros(int(points.shape[0]), dtype=torch.bool)
        self._blocks: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def proxy_of(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Proxy vectors and their squared norms of ``rows`` (indices into the points)."""
        index = rows.numpy()
        proxy = _project(self._points if len(index) == len(self._points) else self._points[index], self._projection)
        return proxy, squared_norms(proxy)

    def add(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Start measuring ``rows``; returns their proxy vectors and squared norms."""
        proxy, norms = self.proxy_of(rows)
        self._blocks.append((rows, proxy, norms))
        self.is_measured[rows] = True
        return proxy, norms

    def update(self, min_distances: torch.Tensor, centers: torch.Tensor, center_norms: torch.Tensor) -> None:
        """``min_distances[rows] = min(itself, squared distances to centers)`` for every measured row."""
        for rows, proxy, norms in self._blocks:
            values = min_distances[rows]
            _update_from(proxy, norms, values, centers, center_norms)
            min_distances[rows] = values


def _lazy_farthest_points(
    measured: _MeasuredRows,
    min_distances: torch.Tensor,
    target: int,
    batch: int,
    picks: list[tuple[torch.Tensor, torch.Tensor]],
) -> tuple[np.ndarray, float]:
    """Farthest-point greedy where unmeasured rows hold upper bounds (:meth:`KCenterGreedy.extend`).

    ``picks`` holds the centers so far as (proxy rows, squared norms) blocks (the existing ones);
    the measured rows' ``min_distances`` are exact against them. Before each batch, unmeasured rows
    that reach the candidate pool are measured against all centers so far until the pool holds
    measured rows only; the pool is then worked through as in :func:`_farthest_points`. Rows
    outside the pool are bounded by its smallest value whether measured or not, so every pick is
    the true farthest row. Returns (picks, squared radius as :func:`_farthest_points` defines it).
    """
    n_points = int(min_distances.shape[0])
    selected = np.empty(target, dtype=np.int64)
    radius = _max_or_zero(min_distances)
    count = 0
    while count < target:
        wanted = min(batch, target - count)
        while True:
            bounds, candidates, limit = _candidate_pool(min_distances, n_points - count, wanted)
            if bool(measured.is_measured[candidates].all()):
                break
            wide = min(n_points - count, max(len(candidates), MEASURE_BLOCK))
            top = torch.topk(min_distances, wide, sorted=False).indices
            # the pool's own rows too: with ties at its edge the wider top-k may hold other rows
            rows = torch.cat([candidates, top]).unique()
            rows = rows[~measured.is_measured[rows]]
            proxy, norms = measured.add(rows)
            values = min_distances[rows]
            for centers, center_norms in picks:
                _update_from(proxy, norms, values, centers, center_norms)
            min_distances[rows] = values
        rows_proxy, row_norms = measured.proxy_of(candidates)
        accepted, radius = _pick_from_pool(rows_proxy, row_norms, bounds.clone(), limit, wanted, radius)
        positions = torch.tensor(accepted)
        chosen = candidates[positions]
        selected[count : count + len(accepted)] = chosen.numpy()
        count += len(accepted)
        picks.append((rows_proxy[positions], row_norms[positions]))
        measured.update(min_distances, *picks[-1])
        min_distances.index_fill_(0, chosen, float("-inf"))
    if target and (target == 1 or n_points == target):
        radius = _max_or_zero(min_distances)
    return selected, radius


def squared_norms(rows: torch.Tensor, chunk: int = 1 << 16) -> torch.Tensor:
    """``(rows * rows).sum(dim=1)`` without a temporary as large as ``rows``."""
    norms = torch.empty(int(rows.shape[0]), dtype=rows.dtype)
    for first in range(0, int(rows.shape[0]), chunk):
        block = rows[first : first + chunk]
        torch.sum(block * block, dim=1, out=norms[first : first + chunk])
    return norms


def exact_greedy(
    proxy: torch.Tensor,
    norms: torch.Tensor,
    start: int,
    target: int,
    batch: int = BATCH_CENTERS,
    scale: torch.Tensor | None = None,
) -> Traversal:
    """Farthest-point greedy over all rows of ``proxy`` from ``start`` (see :class:`Traversal`).

    ``norms`` are the rows' squared norms. With ``scale`` (N,), the points are
    ``scale[i] * proxy[i]`` (e.g. L2-normalised rows without a normalised copy of the matrix) and
    ``norms`` must be the squared norms of those scaled points. The squared radius is the largest
    min-distance before the last point was added (after it, when every point is selected or only
    one is asked for).
    """
    selected = np.empty(target, dtype=np.int64)
    selected[0] = start
    if scale is None:
        min_distances = torch.addmv(norms, proxy, proxy[start], alpha=-2.0).add_(float(norms[start]))
    else:
        min_distances = torch.full((int(proxy.shape[0]),), float("inf"), dtype=torch.float32)
        _update(proxy, norms, min_distances, torch.tensor([start]), _block_rows(1), scale)
    return _farthest_points(proxy, norms, selected, 1, min_distances, batch, scale)


def _block_rows(centers: int) -> int:
    """Rows per GEMM block of :func:`_update` (a block's distance matrix stays near 16 MB)."""
    return max(1024, (1 << 22) // max(1, centers))


def _farthest_points(
    proxy: torch.Tensor,
    norms: torch.Tensor,
    selected: np.ndarray,
    count: int,
    min_distances: torch.Tensor,
    batch: int,
    scale: torch.Tensor | None = None,
) -> Traversal:
    """Fill ``selected[count:]`` by exact farthest-point greedy (see the module doc).

    ``min_distances`` holds every row's squared distance to its nearest center in
    ``selected[:count]``; it is updated in place. Selected rows are kept at ``-inf`` so that
    they are never picked again, even among duplicates.
    """
    n_points, target = int(proxy.shape[0]), len(selected)
    min_distances[torch.from_numpy(selected[:count])] = float("-inf")
    radius = float(min_distances.max()) if count < n_points else 0.0
    block = _block_rows(batch)
    while count < target:
        wanted = min(batch, target - count)
        bounds, candidates, limit = _candidate_pool(min_distances, n_points - count, wanted)
        rows = proxy.index_select(0, candidates)
        if scale is not None:
            rows.mul_(scale.index_select(0, candidates).unsqueeze(1))
        row_norms = norms.index_select(0, candidates)
        accepted, radius = _pick_from_pool(rows, row_norms, bounds.clone(), limit, wanted, radius)
        chosen = candidates[torch.tensor(accepted)]
        selected[count : count + len(accepted)] = chosen.numpy()
        count += len(accepted)
        _update(proxy, norms, min_distances, chosen, block, scale)
        min_distances.index_fill_(0, chosen, float("-inf"))
    if target == 1 or n_points == target:
        radius = _max_or_zero(min_distances)
    return Traversal(selected, radius, min_distances)


def _candidate_pool(
    min_distances: torch.Tensor, unselected: int, wanted: int
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """The ``4 x wanted`` rows with the largest distance (descending) and the bound on all others.

    The bound is the next row's distance (``-inf`` when the pool holds every unselected row).
    """
    pool = min(unselected, 4 * wanted + 1)
    bounds, candidates = torch.topk(min_distances, pool, sorted=True)
    if pool < unselected:  # the last one only bounds everything outside the pool
        return bounds[:-1], candidates[:-1], float(bounds[-1])
    return bounds, candidates, float("-inf")


def _pick_from_pool(
    rows: torch.Tensor, row_norms: torch.Tensor, current: torch.Tensor, limit: float, wanted: int, radius: float
) -> tuple[list[int], float]:
    """Accept up to ``wanted`` pool rows one at a time, while the farthest is at least ``limit``.

    ``current`` holds the pool rows' squared distances to the centers so far (updated in place
    with each accepted row). Returns the accepted positions and the last accepted distance
    (``radius`` when none: the first is always accepted).
    """
    accepted: list[int] = []
    with torch_threads(small_op_threads()):
        while len(accepted) < wanted:
            position = int(torch.argmax(current))
            best = float(current[position])
            if accepted and best < limit:  # a point outside the pool may be farther
                break
            accepted.append(position)
            radius = best
            distances = torch.addmv(row_norms, rows, rows[position], alpha=-2.0).add_(float(row_norms[position]))
            torch.minimum(current, distances, out=current)
            current[position] = float("-inf")
    return accepted, radius


def _update(
    proxy: torch.Tensor,
    norms: torch.Tensor,
    min_distances: torch.Tensor,
    centers: torch.Tensor,
    block: int,
    scale: torch.Tensor | None = None,
) -> None:
    """``min_distances = min(min_distances, squared distances to the points `centers`)`` (blocked GEMM)."""
    center_rows = proxy.index_select(0, centers)
    if scale is not None:
        center_rows.mul_(scale.index_select(0, centers).unsqueeze(1))
    center_norms = norms.index_select(0, centers).unsqueeze(0)
    for first in range(0, int(proxy.shape[0]), block):
        rows = slice(first, first + block)
        if scale is None:
            distances = torch.addmm(center_norms, proxy[rows], center_rows.T, alpha=-2.0)
        else:
            distances = torch.mm(proxy[rows], center_rows.T).mul_(scale[rows].unsqueeze(1) * -2.0)
            distances.add_(center_norms)
        distances.add_(norms[rows].unsqueeze(1))
        torch.minimum(min_distances[rows], distances.amin(dim=1), out=min_distances[rows])


def _update_from(
    proxy: torch.Tensor,
    norms: torch.Tensor,
    min_distances: torch.Tensor,
    centers: torch.Tensor,
    center_norms: torch.Tensor,
) -> None:
    """``min_distances = min(min_distances, squared distances to the rows of centers)`` (not rows of ``proxy``)."""
    block = _block_rows(int(centers.shape[0]))
    for first in range(0, int(proxy.shape[0]), block):
        rows = slice(first, first + block)
        distances = torch.addmm(center_norms.unsqueeze(0), proxy[rows], centers.T, alpha=-2.0)
        distances.add_(norms[rows].unsqueeze(1))
        torch.minimum(min_distances[rows], distances.amin(dim=1), out=min_distances[rows])


def _max_or_zero(min_distances: torch.Tensor) -> float:
    finite = min_distances[torch.isfinite(min_distances)]
    return float(finite.clamp_min(0).max()) if len(finite) else 0.0


def _approx_greedy(proxy: torch.Tensor, norms: torch.Tensor, start: int, target: int, seed: int) -> Traversal:
    """Coarse (greedy on a sample) to fine (farthest point on all points); see the module doc."""
    n_points = int(proxy.shape[0])
    sample_size = min(n_points, max(COARSE_MIN_SAMPLE, math.ceil(n_points * COARSE_SAMPLE_SHARE)))
    coarse = min(target, max(1, math.floor(target * COARSE_CENTER_SHARE)))
    if sample_size >= n_points or coarse >= target or coarse < COARSE_MIN_CENTERS or coarse >= sample_size:
        return exact_greedy(proxy, norms, start, target)
    rng = np.random.default_rng([seed, 1])
    sample = np.sort(rng.choice(n_points, size=sample_size, replace=False))
    if not np.any(sample == start):  # the seeded start point always belongs to the coreset
        sample[0] = start
        sample.sort()
    sample_t = torch.from_numpy(sample)
    sample_start = int(np.searchsorted(sample, start))
    picked = exact_greedy(proxy[sample_t], norms[sample_t], sample_start, coarse).selected
    selected = np.empty(target, dtype=np.int64)
    selected[:coarse] = sample[picked]
    min_distances = _distance_to_nearby_center(proxy, proxy[torch.from_numpy(selected[:coarse])], seed)
    return _farthest_points(proxy, norms, selected, coarse, min_distances, BATCH_CENTERS)


def _distance_to_nearby_center(proxy: torch.Tensor, centers: torch.Tensor, seed: int) -> torch.Tensor:
    """Squared distance of every row to a near (not always the nearest) row of ``centers``.

    A faiss inverted-file index (``sqrt(#centers)`` lists, :data:`COARSE_PROBES` probed) finds it
    in a fraction of the exact cost. The result is the true distance to a real center, so it is
    never below the distance to the nearest one: the fine phase then works on upper bounds, which
    can only make it spend a center where one was not needed, never leave a point uncovered.
    """
    import faiss

    dim = int(proxy.shape[1])
    lists = max(1, int(math.sqrt(len(centers))))
    quantizer = faiss.IndexFlatL2(dim)
    index = faiss.IndexIVFFlat(quantizer, dim, lists)
    index.cp.seed = seed
    center_array = np.ascontiguousarray(centers.numpy())
    index.train(center_array)
    index.add(center_array)
    index.nprobe = min(lists, COARSE_PROBES)
    distances, _ = index.search(np.ascontiguousarray(proxy.numpy()), 1)
    return torch.from_numpy(np.ascontiguousarray(distances[:, 0]))


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
