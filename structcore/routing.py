"""Routing a test image to a category by per-category prototype banks (method.md "Routing").

Exact routing compares every patch with every prototype of every category: ``P x 64 C`` distances
per image, which grows linearly with the number of categories C (about 160 GFLOP per image at
C = 1000). :class:`PrototypeRouter` therefore shortlists first: the image's pooled embedding (the
mean of its L2-normalised patch vectors) is compared with each category's centroid (by default
the mean of its prototypes, computed when the category is added), and the exact route score is
computed for the ``shortlist`` nearest categories only. With C <= ``shortlist`` (or
``shortlist=None``) routing is exact, as before.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from structcore.coreset import exact_greedy
from structcore.runtime import small_op_threads, torch_threads

#: Prototypes per category.
DEFAULT_PROTOTYPES = 64
#: Quantile of a category's own train-good route scores above which an input is ``unknown``.
DEFAULT_ROUTE_QUANTILE = 0.995
#: Categories scored exactly per image after the centroid shortlist.
DEFAULT_SHORTLIST = 8


def l2_normalize(vectors: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows scaled to unit L2 norm (float32)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(norms, eps)


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
        selected, _ = exact_greedy(data, unit_squared, start, target, scale=inverse)
        picked = torch.from_numpy(selected)
        prototypes = (data[picked] * inverse[picked].unsqueeze(1)).numpy()
    return prototypes, selected


def leave_one_out_route_scores(
    patch_vectors: np.ndarray, prototypes: np.ndarray, prototype_images: np.ndarray
) -> np.ndarray:
    """Route score of each train image (n, P, D) against the prototypes not taken from it.

    A train image's own prototypes sit at distance 0 from some of its patches, so in-sample route
    scores are biased low and a threshold on them flags ordinary test images as ``unknown``.
    Images are processed one at a time (no normalised copy of the whole matrix).
    """
    n_images = patch_vectors.shape[0]
    owners = np.asarray(prototype_images)
    protos = torch.from_numpy(np.ascontiguousarray(prototypes, dtype=np.float32))
    proto_norms = (protos * protos).sum(dim=1)
    scores = np.empty(n_images)
    with torch.inference_mode():
        for image in range(n_images):
            keep = torch.from_numpy(np.flatnonzero(owners != image))
            block = torch.from_numpy(np.ascontiguousarray(patch_vectors[image], dtype=np.float32))
            norms = torch.linalg.vector_norm(block, dim=1, keepdim=True)
            inverse = 1.0 / norms.clamp_min(1e-12)
            kept = protos.index_select(0, keep)
            distances = (block @ kept.T).mul_(inverse).mul_(-2.0)
            distances.add_((norms * inverse).square_()).add_(proto_norms.index_select(0, keep))
            scores[image] = float(distances.amin(dim=1).clamp_min_(0.0).double().mean())
    return scores


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
    batch, patches, dim = patch_vectors.shape
    queries = torch.from_numpy(l2_normalize(patch_vectors.reshape(batch * patches, dim)))
    protos = torch.from_numpy(np.ascontiguousarray(prototypes, dtype=np.float32))
    owner_t = torch.from_numpy(np.asarray(owners, dtype=np.int64))
    query_norms = (queries * queries).sum(dim=1, keepdim=True)
    proto_norms = (protos * protos).sum(dim=1)
    scores = torch.empty(batch, n_owners, dtype=torch.float64)
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
        scores[image] = best.clamp_min_(0.0).double().mean(dim=0)
    return scores.numpy()


@dataclass(frozen=True)
class RouteResult:
    """Routing of a batch: chosen category per image, its score, all scores, unknown flags.

    ``all_scores`` (B, C) holds the exact route score of every category that was scored exactly
    for an image and ``+inf`` for the categories the shortlist left out; ``shortlist`` (B, S)
    gives the category indices scored exactly (``None`` when every category was).
    """

    categories: list[str]
    route_scores: np.ndarray
    all_scores: np.ndarray
    unknown: np.ndarray
    shortlist: np.ndarray | None = None


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
        thresholds_: per-category route-score threshold (``unknown`` above it).
    """

    def __init__(self, shortlist: int | None = DEFAULT_SHORTLIST) -> None:
        if shortlist is not None and shortlist < 1:
            msg = f"shortlist must be None or >= 1, got {shortlist}"
            raise ValueError(msg)
        self.shortlist = shortlist
        self.categories_: list[str] = []
        self.thresholds_: list[float] = []
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
    ) -> PrototypeRouter:
        """Register ``name`` with its prototypes (K, D), its unknown threshold and its shortlist centroid.

        ``centroid`` (D,) defaults to the mean of the prototypes; the mean pooled embedding of the
        category's train images is an alternative.
        """
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
        if not self.categories_:
            msg = "the router has no categories"
            raise ValueError(msg)
        prototypes, owners = self._stack()
        return route_distances(patch_vectors, prototypes, owners, len(self.categories_))

    def _nearest_centroids(self, pooled: torch.Tensor, size: int) -> torch.Tensor:
        centroids = self._pad()[2]
        distances = torch.cdist(pooled, centroids)
        return torch.topk(distances, size, dim=1, largest=False, sorted=True).indices

    def _shortlisted_scores(self, patch_vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exact route scores of the shortlisted categories (others +inf) and the shortlist."""
        assert self.shortlist is not None
        batch, patches, dim = patch_vectors.shape
        normalized = torch.from_numpy(l2_normalize(patch_vectors.reshape(batch * patches, dim)))
        normalized = normalized.view(batch, patches, dim)
        shortlist = self._nearest_centroids(normalized.mean(dim=1), self.shortlist)
        padded, proto_norms, _ = self._pad()
        width = padded.shape[1]
        scores = np.full((batch, len(self.categories_)), np.inf)
        for image in range(batch):
            chosen = shortlist[image]
            block = normalized[image]
            protos = padded[chosen].view(-1, dim)
            distances = torch.addmm(proto_norms[chosen].view(1, -1), block, protos.T, alpha=-2.0)
            distances.add_((block * block).sum(dim=1, keepdim=True))
            best = distances.view(patches, len(chosen), width).amin(dim=2).clamp_min_(0.0)
            scores[image, chosen.numpy()] = best.double().mean(dim=0).numpy()
        return scores, shortlist.numpy()

    def route(self, patch_vectors: np.ndarray) -> RouteResult:
        """Pick the nearest category per image and flag inputs beyond its route threshold."""
        if not self.categories_:
            msg = "the router has no categories"
            raise ValueError(msg)
        shortlist = None
        with torch_threads(small_op_threads()):
            if self.shortlist is None or self.shortlist >= len(self.categories_):
                all_scores = self.scores(patch_vectors)
            else:
                with torch.inference_mode():
                    all_scores, shortlist = self._shortlisted_scores(patch_vectors)
        best = all_scores.argmin(axis=1)
        best_scores = all_scores[np.arange(len(best)), best]
        thresholds = np.asarray(self.thresholds_)[best]
        return RouteResult(
            categories=[self.categories_[i] for i in best],
            route_scores=best_scores,
            all_scores=all_scores,
            unknown=best_scores > thresholds,
            shortlist=shortlist,
        )
