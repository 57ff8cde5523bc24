"""Routing a test image to a category by per-category prototype banks (method.md "Routing").

Exact routing compares every patch with every prototype of every category: ``P x 64 C`` distances
per image, which grows linearly with the number of categories C (about 160 GFLOP per image at
C = 1000). :class:`PrototypeRouter` therefore shortlists first: the image's pooled embedding (the
mean of its L2-normalised patch vectors) is compared with each category's centroid (by default
the mean of its prototypes, computed when the category is added), and the exact route score is
computed for the ``shortlist`` nearest categories only. With C <= ``shortlist`` (or
``shortlist=None``) routing is exact, as before.

Unknown products (docs/open-set.md): the route score (a mean over patches) also rises when a
small part of an image of a registered product is defective, so a threshold on it flags defects
as ``unknown``. The ``unknown`` decision therefore uses a robust low quantile of the same
patch-to-prototype distances (:data:`DEFAULT_UNKNOWN_STATISTIC`, ``quantile-30``): the distance
below which the image's nearest 30% of patches lie, over the category's *far threshold* (the 90%
quantile of its own train-good patch distances, leave-one-out). The ratio exceeds 1 when more
than 70% of the image's patches (up to the interpolation between two) are farther from every
prototype of the category than 90% of its own train patches: a defect, even a large one, leaves
more than 30% of the image close;
an unregistered product moves nearly every patch. An image's ``unknown_score`` is the smallest
ratio over the categories. Versions fitted with the earlier ``far-share`` rule (share of far
patches over 0.5) keep it (their statistic and thresholds are stored per version).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from structcore_runtime import routing as shared_routing

from structcore.coreset import exact_greedy
from structcore.runtime import small_op_threads, torch_threads
from structcore.settings import (  # declared once, with the other settings
    DEFAULT_PROTOTYPES,
    DEFAULT_UNKNOWN_STATISTIC,
    UNKNOWN_STATISTICS,
)

#: Categories scored exactly per image after the centroid shortlist.
DEFAULT_SHORTLIST = 8
#: Image statistics of patch-to-prototype distances an ``unknown`` threshold can be put on
#: (``UNKNOWN_STATISTICS``, declared with the other settings in :mod:`structcore.settings`):
#: ``quantile-<N>`` (the N% quantile of the patches' distances, over the category's far patch
#: threshold), ``far-share`` (share of patches beyond the far threshold, over a share threshold),
#: ``mean`` (the route score), ``median``, ``low-mean-<N>`` (mean of the lowest N% of the
#: patches' distances); the last three over a margin times their leave-one-out train quantile.
#: ``DEFAULT_UNKNOWN_STATISTIC`` decides ``unknown`` (docs/open-set.md has the measurements);
#: ``DEFAULT_FAR_QUANTILE`` of the leave-one-out train-good patch distances makes a patch "far";
#: ``DEFAULT_FAR_SHARE``: ``far-share`` (the rule of versions fitted before ``quantile-30``)
#: share of far patches above which an image is unlike the category; ``DEFAULT_UNKNOWN_MARGIN``:
#: other statistics' threshold = this factor x the ``route_quantile`` of the leave-one-out
#: train-good statistic (train-good statistics spread by a few percent only).
#: Statistics whose threshold is the category's far patch threshold itself.
FAR_QUANTILE_STATISTICS = ("quantile-30",)


def check_unknown_statistic(statistic: str) -> str:
    """``statistic`` if it is one of :data:`UNKNOWN_STATISTICS`, else a ``ValueError``."""
    if statistic not in UNKNOWN_STATISTICS:
        msg = f"unknown statistic {statistic!r}; choose one of {', '.join(UNKNOWN_STATISTICS)}"
        raise ValueError(msg)
    return statistic


def patch_statistic(distances: torch.Tensor, statistic: str, far: torch.Tensor | None = None) -> torch.Tensor:
    """Image statistic over patches (dim 0) of patch distances (P, S): one float64 value per column.

    ``far`` (S,) gives each column's patch threshold for ``far-share`` (``nan``: share 0).
    Computed by :func:`structcore_runtime.routing.patch_statistic` (the one implementation,
    shared with the exported runtime).
    """
    check_unknown_statistic(statistic)
    found = shared_routing.patch_statistic(
        distances.detach().cpu().numpy(), statistic, None if far is None else far.detach().cpu().numpy()
    )
    return torch.from_numpy(np.asarray(found, dtype=np.float64))


#: ``unknown_ratio`` (statistic over threshold, 0 where the threshold is infinite) and ``l2_normalize``
#: are :mod:`structcore_runtime.routing`'s.
unknown_ratio = shared_routing.unknown_ratio
l2_normalize = shared_routing.l2_normalize


#: Patch rows per block of :func:`leave_one_out_patch_distances` (64 MB of float32 vectors at D = 512).
_LOO_BLOCK_ROWS = 32768


def patch_vectors_to_prototypes(
    patch_vectors: np.ndarray, count: int = DEFAULT_PROTOTYPES, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Prototypes (K, D) and the row index (K,) each was taken from.

    Greedy k-center over the L2-normalised rows (start: a seeded random row), computed without a
    normalised copy of the matrix: ``||x/|x| - c||^2 = |x/|x||^2 - 2 (x.c)/|x| + |c|^2``, by the
    batched exact greedy of :func:`structcore.coreset.exact_greedy` (a few GEMM passes over the
    raw rows instead of one pass per prototype).
    """
    rows = np.ascontiguousarray(patch_vectors, dtype=np.float32)
    n_rows = rows.shape[0]
    if rows.ndim != 2 or n_rows == 0:
        msg = f"expected a non-empty (N, D) array, got shape {patch_vectors.shape}"
        raise ValueError(msg)
    target = max(1, min(int(count), n_rows))
    with torch.inference_mode():
        data = torch.from_numpy(rows)
        norms = torch.linalg.vector_norm(data, dim=1)
        inverse = 1.0 / norms.clamp_min(1e-12)
        unit_squared = (norms * inverse).square_()  # 1, or 0 for all-zero rows
        start = int(np.random.default_rng(seed).integers(n_rows))
        selected = exact_greedy(data, unit_squared, start, target, scale=inverse).selected
        picked = torch.from_numpy(selected)
        prototypes = (data[picked] * inverse[picked].unsqueeze(1)).numpy()
    return prototypes, selected


def leave_one_out_patch_distances(
    patch_vectors: np.ndarray, prototypes: np.ndarray, prototype_images: np.ndarray
) -> np.ndarray:
    """Squared distance (n, P) of each train patch to the nearest prototype not taken from its image.

    A train image's own prototypes sit at distance 0 from some of its patches, so in-sample route
    scores are biased low and a threshold on them flags ordinary test images as ``unknown``.
    Images go through in blocks of about :data:`_LOO_BLOCK_ROWS` patches: one product with all
    prototypes per block, each image's own prototypes masked out (no normalised copy of the whole
    matrix, and no per-image loop of small products).

    Raises:
        ValueError: an image owns every prototype (no other image's prototype to measure against).
    """
    n_images, n_patches = patch_vectors.shape[:2]
    owners = torch.from_numpy(np.asarray(prototype_images, dtype=np.int64))
    if n_images and bool((owners == owners[0]).all()):
        msg = f"every prototype comes from image {int(owners[0])}: leave-one-out distances need two images' prototypes"
        raise ValueError(msg)
    protos = torch.from_numpy(np.ascontiguousarray(prototypes, dtype=np.float32))
    proto_norms = (protos * protos).sum(dim=1)
    out = np.empty((n_images, n_patches), dtype=np.float32)
    images_per_block = max(1, _LOO_BLOCK_ROWS // max(n_patches, 1))
    with torch.inference_mode():
        for first in range(0, n_images, images_per_block):
            last = min(first + images_per_block, n_images)
            block = torch.from_numpy(
                np.ascontiguousarray(patch_vectors[first:last], dtype=np.float32).reshape(-1, protos.shape[1])
            )
            norms = torch.linalg.vector_norm(block, dim=1, keepdim=True)
            inverse = 1.0 / norms.clamp_min(1e-12)
            distances = (block @ protos.T).mul_(inverse).mul_(-2.0)
            distances.add_((norms * inverse).square_()).add_(proto_norms)
            own = owners.unsqueeze(0) == torch.arange(first, last).unsqueeze(1)  # (images, K)
            distances = distances.view(last - first, n_patches, -1).masked_fill_(own.unsqueeze(1), float("inf"))
            out[first:last] = distances.amin(dim=2).clamp_min_(0.0).numpy()
    return out


def route_distances(patch_vectors: np.ndarray, prototypes: np.ndarray, owners: np.ndarray, n_owners: int) -> np.ndarray:
    """Mean over patches of the min squared distance to each owner's prototypes.

    Args:
        patch_vectors: (B, P, D) projected patch vectors (normalised here).
        prototypes: (T, D) L2-normalised prototypes of all owners, stacked.
        owners: (T,) owner index of each prototype row.
        n_owners: number of owners (categories).

    Returns:
        (B, n_owners) route scores; lower means closer.
    """
    return route_statistics(patch_vectors, prototypes, owners, n_owners, ("mean",))["mean"]


def route_statistics(
    patch_vectors: np.ndarray,
    prototypes: np.ndarray,
    owners: np.ndarray,
    n_owners: int,
    statistics: tuple[str, ...] = ("mean",),
    far: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Image statistics (B, n_owners) of the min squared patch distance to each owner's prototypes.

    Same arguments as :func:`route_distances`; ``statistics`` names the statistics computed
    (``"mean"`` is the route score), all from one pass over the distances; ``far`` (n_owners,)
    holds each owner's patch threshold for ``far-share``.
    """
    for statistic in statistics:
        check_unknown_statistic(statistic)
    batch, patches, dim = patch_vectors.shape
    queries = torch.from_numpy(l2_normalize(patch_vectors.reshape(batch * patches, dim)))
    protos = torch.from_numpy(np.ascontiguousarray(prototypes, dtype=np.float32))
    owner_t = torch.from_numpy(np.asarray(owners, dtype=np.int64))
    query_norms = (queries * queries).sum(dim=1, keepdim=True)
    proto_norms = (protos * protos).sum(dim=1)
    scores = {statistic: torch.empty(batch, n_owners, dtype=torch.float64) for statistic in statistics}
    far_t = None if far is None else torch.from_numpy(np.asarray(far, dtype=np.float32).reshape(n_owners))
    # Process one image at a time, chunking the prototypes, so memory stays bounded for
    # registries with many categories.
    chunk_rows = 16384
    for image in range(batch):
        block = queries[image * patches : (image + 1) * patches]
        block_norms = query_norms[image * patches : (image + 1) * patches]
        best = torch.full((patches, n_owners), float("inf"))
        for start in range(0, protos.shape[0], chunk_rows):
            part = protos[start : start + chunk_rows]
            distances = block_norms + proto_norms[start : start + chunk_rows] - 2.0 * (block @ part.T)
            index = owner_t[start : start + chunk_rows].expand(patches, -1)
            best = best.scatter_reduce(1, index, distances, reduce="amin", include_self=True)
        best.clamp_min_(0.0)
        for statistic, table in scores.items():
            table[image] = patch_statistic(best, statistic, far_t)
    return {statistic: table.numpy() for statistic, table in scores.items()}


@dataclass(frozen=True)
class RouteResult:
    """Routing of a batch: chosen category per image, its score, all scores, unknown flags.

    ``all_scores`` (B, C) holds the exact route score of every category that was scored exactly
    for an image and ``+inf`` for the categories the shortlist left out; ``shortlist`` (B, S)
    gives the category indices scored exactly (``None`` when every category was).
    ``unknown_scores`` (B,) is the smallest per-category unknown ratio (:meth:`PrototypeRouter.score_all`;
    higher = less like any category) and ``unknown`` is ``unknown_scores > 1``.
    """

    categories: list[str]
    route_scores: np.ndarray
    all_scores: np.ndarray
    unknown: np.ndarray
    shortlist: np.ndarray | None = None
    unknown_scores: np.ndarray | None = None


def _joined(parts: list[RouteResult]) -> RouteResult:
    """One :class:`RouteResult` of the images of ``parts``, in order."""
    shortlists = [part.shortlist for part in parts]
    unknown_scores = [part.unknown_scores for part in parts]
    return RouteResult(
        categories=[name for part in parts for name in part.categories],
        route_scores=np.concatenate([part.route_scores for part in parts]),
        all_scores=np.concatenate([part.all_scores for part in parts]),
        unknown=np.concatenate([part.unknown for part in parts]),
        shortlist=None if any(s is None for s in shortlists) else np.concatenate(shortlists),  # type: ignore[arg-type]
        unknown_scores=None if any(u is None for u in unknown_scores) else np.concatenate(unknown_scores),  # type: ignore[arg-type]
    )


class PrototypeRouter:
    """Routes inputs to the category whose prototype bank is nearest (argmin of mean min distance).

    Categories are added one at a time (:meth:`add`); adding one never changes another's
    prototypes or threshold.

    Args:
        shortlist: categories scored exactly per image, chosen by the distance of the image's
            pooled embedding to each category's centroid; ``None`` (or at least as many as there
            are categories) scores every category exactly.

    Attributes:
        categories_: category names, in insertion order.
        thresholds_: per-category route-score threshold (the ``unknown`` rule of categories
            without an unknown threshold: fitted before it existed).
        unknown_thresholds_: per-category threshold on ``unknown_statistics_`` (``nan``: none).
        unknown_statistics_: per-category image statistic of the ``unknown`` decision.
        far_thresholds_: per-category patch threshold of ``far-share`` (``nan`` for others).
    """

    def __init__(self, shortlist: int | None = DEFAULT_SHORTLIST) -> None:
        if shortlist is not None and shortlist < 1:
            msg = f"shortlist must be None or >= 1, got {shortlist}"
            raise ValueError(msg)
        self.shortlist = shortlist
        self.categories_: list[str] = []
        self.thresholds_: list[float] = []
        self.unknown_thresholds_: list[float] = []
        self.unknown_statistics_: list[str] = []
        self.far_thresholds_: list[float] = []
        self._blocks: list[np.ndarray] = []
        self._centroids: list[np.ndarray] = []
        self._stacked: tuple[np.ndarray, np.ndarray] | None = None
        self._padded: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def add(
        self,
        name: str,
        prototypes: np.ndarray,
        threshold: float = float("inf"),
        centroid: np.ndarray | None = None,
        unknown_threshold: float | None = None,
        unknown_statistic: str = DEFAULT_UNKNOWN_STATISTIC,
        far_threshold: float | None = None,
    ) -> PrototypeRouter:
        """Register ``name`` with its prototypes (K, D), its thresholds and its shortlist centroid.

        ``centroid`` (D,) defaults to the mean of the prototypes; the mean pooled embedding of the
        category's train images is an alternative. ``unknown_threshold`` is the threshold on
        ``unknown_statistic``; ``None`` (a category fitted before it existed) falls back to the
        route score over ``threshold``. ``far_threshold`` is the patch threshold of ``far-share``.
        """
        check_unknown_statistic(unknown_statistic)
        if unknown_statistic == "far-share" and unknown_threshold is not None and far_threshold is None:
            msg = f"category {name!r}: far-share needs its patch threshold"
            raise ValueError(msg)
        if name in self.categories_:
            msg = f"category {name!r} is already in the router"
            raise ValueError(msg)
        if self._blocks and prototypes.shape[1] != self._blocks[0].shape[1]:
            msg = f"prototypes of {name!r} have dimension {prototypes.shape[1]}, router has {self._blocks[0].shape[1]}"
            raise ValueError(msg)
        block = np.ascontiguousarray(prototypes, dtype=np.float32)
        center = block.mean(axis=0) if centroid is None else np.asarray(centroid, dtype=np.float32).reshape(-1)
        if center.shape != (block.shape[1],):
            msg = f"centroid of {name!r} has shape {center.shape}, expected ({block.shape[1]},)"
            raise ValueError(msg)
        self.categories_.append(name)
        self.thresholds_.append(float(threshold))
        self.unknown_thresholds_.append(float("nan") if unknown_threshold is None else float(unknown_threshold))
        self.unknown_statistics_.append(unknown_statistic)
        self.far_thresholds_.append(float("nan") if far_threshold is None else float(far_threshold))
        self._blocks.append(block)
        self._centroids.append(center)
        self._stacked = None
        self._padded = None
        return self

    def _stack(self) -> tuple[np.ndarray, np.ndarray]:
        if self._stacked is None:
            owners = np.concatenate([np.full(len(block), i) for i, block in enumerate(self._blocks)])
            self._stacked = (np.concatenate(self._blocks), owners)
        return self._stacked

    def _pad(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Prototypes as (C, K_max, D), their squared norms (C, K_max) (+inf on padding), centroids (C, D)."""
        if self._padded is None:
            width = max(len(block) for block in self._blocks)
            dim = self._blocks[0].shape[1]
            padded = torch.zeros(len(self._blocks), width, dim)
            norms = torch.full((len(self._blocks), width), float("inf"))
            for index, block in enumerate(self._blocks):
                rows = torch.from_numpy(block)
                padded[index, : len(block)] = rows
                norms[index, : len(block)] = (rows * rows).sum(dim=1)
            centroids = torch.from_numpy(np.stack(self._centroids))
            self._padded = (padded, norms, centroids)
        return self._padded

    def scores(self, patch_vectors: np.ndarray) -> np.ndarray:
        """Exact route scores (B, C) of projected patch vectors (B, P, D) against every category."""
        return self.score_all(patch_vectors)[0]

    def score_all(self, patch_vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exact route scores (B, C) and unknown ratios (B, C) against every category.

        A category's unknown ratio is its unknown statistic over its unknown threshold (or, for a
        category without one, its route score over its route threshold): ``> 1`` = unlike it.
        """
        if not self.categories_:
            msg = "the router has no categories"
            raise ValueError(msg)
        prototypes, owners = self._stack()
        far = np.asarray(self.far_thresholds_)
        found = route_statistics(patch_vectors, prototypes, owners, len(self.categories_), self._statistics(), far)
        columns = np.arange(len(self.categories_))
        return found["mean"], self._unknown_ratios(found, np.broadcast_to(columns, found["mean"].shape))

    def _statistics(self) -> tuple[str, ...]:
        """Statistics to compute: the route score and every category's unknown statistic."""
        return tuple(dict.fromkeys(["mean", *self.unknown_statistics_]))

    def _unknown_ratios(self, found: dict[str, np.ndarray], columns: np.ndarray) -> np.ndarray:
        """Unknown ratios (B, S) from statistics (B, S) of the categories ``columns`` (B, S)."""
        ratios = np.empty(columns.shape, dtype=np.float64)
        limits = np.asarray(self.unknown_thresholds_, dtype=np.float64)
        legacy = np.asarray(self.thresholds_, dtype=np.float64)
        kinds = np.asarray(self.unknown_statistics_)
        for statistic in dict.fromkeys(self.unknown_statistics_):
            picked = (kinds[columns] == statistic) & np.isfinite(limits[columns])
            ratios[picked] = unknown_ratio(found[statistic][picked], limits[columns][picked])
        fallback = ~np.isfinite(limits[columns])
        ratios[fallback] = unknown_ratio(found["mean"][fallback], legacy[columns][fallback])
        return ratios

    def _nearest_centroids(self, pooled: torch.Tensor, size: int) -> torch.Tensor:
        centroids = self._pad()[2]
        distances = torch.cdist(pooled, centroids)
        return torch.topk(distances, size, dim=1, largest=False, sorted=True).indices

    def _shortlisted_scores(self, patch_vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Exact route scores and unknown ratios of the shortlisted categories (others +inf), and the shortlist."""
        assert self.shortlist is not None
        batch, patches, dim = patch_vectors.shape
        normalized = torch.from_numpy(l2_normalize(patch_vectors.reshape(batch * patches, dim)))
        normalized = normalized.view(batch, patches, dim)
        shortlist = self._nearest_centroids(normalized.mean(dim=1), self.shortlist)
        padded, proto_norms, _ = self._pad()
        width = padded.shape[1]
        scores = np.full((batch, len(self.categories_)), np.inf)
        ratios = np.full((batch, len(self.categories_)), np.inf)
        statistics = self._statistics()
        far = torch.tensor(self.far_thresholds_, dtype=torch.float32)
        for image in range(batch):
            chosen = shortlist[image]
            block = normalized[image]
            protos = padded[chosen].view(-1, dim)
            distances = torch.addmm(proto_norms[chosen].view(1, -1), block, protos.T, alpha=-2.0)
            distances.add_((block * block).sum(dim=1, keepdim=True))
            best = distances.view(patches, len(chosen), width).amin(dim=2).clamp_min_(0.0)
            found = {statistic: patch_statistic(best, statistic, far[chosen]).numpy()[None] for statistic in statistics}
            columns = chosen.numpy()
            scores[image, columns] = found["mean"][0]
            ratios[image, columns] = self._unknown_ratios(found, columns[None])[0]
        return scores, ratios, shortlist.numpy()

    def route(self, patch_vectors: np.ndarray, valid: np.ndarray | None = None) -> RouteResult:
        """Pick the nearest category per image and flag inputs beyond its route threshold.

        ``valid`` (B, P) bool: the patches that count per image (``fit``: not the padding); each
        image is then routed on its valid patches alone.
        """
        if not self.categories_:
            msg = "the router has no categories"
            raise ValueError(msg)
        if valid is not None and len(patch_vectors):
            return _joined([self.route(patch_vectors[i : i + 1, valid[i]]) for i in range(len(patch_vectors))])
        shortlist = None
        with torch_threads(small_op_threads()):
            if self.shortlist is None or self.shortlist >= len(self.categories_):
                all_scores, ratios = self.score_all(patch_vectors)
            else:
                with torch.inference_mode():
                    all_scores, ratios, shortlist = self._shortlisted_scores(patch_vectors)
        best = all_scores.argmin(axis=1)
        best_scores = all_scores[np.arange(len(best)), best]
        unknown_scores = ratios.min(axis=1)
        return RouteResult(
            categories=[self.categories_[i] for i in best],
            route_scores=best_scores,
            all_scores=all_scores,
            unknown=unknown_scores > 1.0,
            shortlist=shortlist,
            unknown_scores=unknown_scores,
        )
