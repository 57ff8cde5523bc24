"""Routing a test image to a category by per-category prototype banks (method.md "Routing")."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from structcore.coreset import KCenterGreedy

#: Prototypes per category.
DEFAULT_PROTOTYPES = 64
#: Quantile of a category's own train-good route scores above which an input is ``unknown``.
DEFAULT_ROUTE_QUANTILE = 0.995


def l2_normalize(vectors: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows scaled to unit L2 norm (float32)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(norms, eps)


def select_prototypes(patch_vectors: np.ndarray, count: int = DEFAULT_PROTOTYPES, seed: int = 0) -> np.ndarray:
    """Greedy k-center over L2-normalised patch vectors (N, D); returns (min(count, N), D) float32."""
    return patch_vectors_to_prototypes(patch_vectors, count, seed)[0]


def patch_vectors_to_prototypes(
    patch_vectors: np.ndarray, count: int = DEFAULT_PROTOTYPES, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Prototypes (K, D) and the row index (K,) each was taken from."""
    normalized = l2_normalize(patch_vectors)
    selector = KCenterGreedy(n_select=count, proxy_dim=None, seed=seed).fit(normalized)
    return normalized[selector.indices_], selector.indices_


def leave_one_out_route_scores(
    patch_vectors: np.ndarray, prototypes: np.ndarray, prototype_images: np.ndarray
) -> np.ndarray:
    """Route score of each train image (n, P, D) against the prototypes not taken from it.

    A train image's own prototypes sit at distance 0 from some of its patches, so in-sample route
    scores are biased low and a threshold on them flags ordinary test images as ``unknown``.
    """
    n_images = patch_vectors.shape[0]
    owners = np.arange(len(prototypes))
    per_prototype = route_distances_per_prototype(patch_vectors, prototypes)  # (n, P, K)
    scores = np.empty(n_images)
    for image in range(n_images):
        keep = owners[prototype_images != image]
        scores[image] = per_prototype[image][:, keep].min(axis=1).mean()
    return scores


def route_distances_per_prototype(patch_vectors: np.ndarray, prototypes: np.ndarray) -> np.ndarray:
    """Squared distances (B, P, K) of L2-normalised patch vectors to each prototype."""
    batch, patches, dim = patch_vectors.shape
    queries = torch.from_numpy(l2_normalize(patch_vectors.reshape(batch * patches, dim)))
    protos = torch.from_numpy(np.ascontiguousarray(prototypes, dtype=np.float32))
    distances = torch.cdist(queries, protos).pow_(2)
    return distances.reshape(batch, patches, -1).numpy()


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
    """Routing of a batch: chosen category per image, its score, all scores, unknown flags."""

    categories: list[str]
    route_scores: np.ndarray
    all_scores: np.ndarray
    unknown: np.ndarray


class PrototypeRouter:
    """Routes inputs to the category whose prototype bank is nearest (argmin of mean min distance).

    Categories are added one at a time (:meth:`add`); adding one never changes another's
    prototypes or threshold.

    Attributes:
        categories_: category names, in insertion order.
        thresholds_: per-category route-score threshold (``unknown`` above it).
    """

    def __init__(self) -> None:
        self.categories_: list[str] = []
        self.thresholds_: list[float] = []
        self._blocks: list[np.ndarray] = []
        self._stacked: tuple[np.ndarray, np.ndarray] | None = None

    def add(self, name: str, prototypes: np.ndarray, threshold: float = float("inf")) -> PrototypeRouter:
        """Register ``name`` with its prototypes (K, D) and its unknown threshold."""
        if name in self.categories_:
            msg = f"category {name!r} is already in the router"
            raise ValueError(msg)
        if self._blocks and prototypes.shape[1] != self._blocks[0].shape[1]:
            msg = f"prototypes of {name!r} have dimension {prototypes.shape[1]}, router has {self._blocks[0].shape[1]}"
            raise ValueError(msg)
        self.categories_.append(name)
        self.thresholds_.append(float(threshold))
        self._blocks.append(np.ascontiguousarray(prototypes, dtype=np.float32))
        self._stacked = None
        return self

    def _stack(self) -> tuple[np.ndarray, np.ndarray]:
        if self._stacked is None:
            owners = np.concatenate([np.full(len(block), i) for i, block in enumerate(self._blocks)])
            self._stacked = (np.concatenate(self._blocks), owners)
        return self._stacked

    def scores(self, patch_vectors: np.ndarray) -> np.ndarray:
        """Route scores (B, C) of projected patch vectors (B, P, D)."""
        if not self.categories_:
            msg = "the router has no categories"
            raise ValueError(msg)
        prototypes, owners = self._stack()
        return route_distances(patch_vectors, prototypes, owners, len(self.categories_))

    def route(self, patch_vectors: np.ndarray) -> RouteResult:
        """Pick the nearest category per image and flag inputs beyond its route threshold."""
        all_scores = self.scores(patch_vectors)
        best = all_scores.argmin(axis=1)
        best_scores = all_scores[np.arange(len(best)), best]
        thresholds = np.asarray(self.thresholds_)[best]
        return RouteResult(
            categories=[self.categories_[i] for i in best],
            route_scores=best_scores,
            all_scores=all_scores,
            unknown=best_scores > thresholds,
        )
