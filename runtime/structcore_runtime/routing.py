"""Routing and the ``unknown`` score from patch-to-prototype distances (method.md "Routing"), numpy.

The image statistics and the unknown ratio are the one implementation used by ``structcore.routing``
too (whose torch GEMMs are a fast path giving the same distances to float32 rounding); the
:class:`Router` here is the runtime's: exact routing among the shortlisted categories (the
``shortlist`` categories whose prototype centroid is nearest to the image's pooled embedding).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from structcore_runtime.maps import one_blas_thread

#: Categories scored exactly per image after the centroid shortlist (``structcore.routing``'s default).
DEFAULT_SHORTLIST = 8


def check_statistic(statistic: str) -> str:
    """``statistic`` when computed here: ``mean``, ``median``, ``far-share``, ``quantile-N``, ``low-mean-N``."""
    if statistic in {"mean", "median", "far-share"}:
        return statistic
    for prefix in ("quantile-", "low-mean-"):
        number = statistic.removeprefix(prefix)
        if statistic.startswith(prefix) and number.isdigit() and 0 < int(number) <= 100:
            return statistic
    msg = f"unknown statistic {statistic!r}"
    raise ValueError(msg)


def l2_normalize(vectors: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows scaled to unit L2 norm (float32)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(norms, eps)


def patch_statistic(distances: np.ndarray, statistic: str, far: np.ndarray | None = None) -> np.ndarray:
    """Image statistic over patches (axis 0) of patch distances (P, S): one float64 value per column.

    ``far`` (S,) gives each column's patch threshold for ``far-share`` (``nan``: share 0).
    """
    distances = np.asarray(distances)
    if statistic == "far-share":
        if far is None:
            msg = "far-share needs the patch thresholds"
            raise ValueError(msg)
        return (distances > np.asarray(far, dtype=distances.dtype)).astype(np.float64).mean(axis=0)
    if statistic == "mean":
        return distances.astype(np.float64).mean(axis=0)
    if statistic == "median":
        return np.quantile(distances.astype(np.float64), 0.5, axis=0)
    check_statistic(statistic)
    if statistic.startswith("quantile-"):
        return np.quantile(distances.astype(np.float64), int(statistic.removeprefix("quantile-")) / 100, axis=0)
    keep = max(1, round(distances.shape[0] * int(statistic.removeprefix("low-mean-")) / 100))
    lowest = np.partition(distances, keep - 1, axis=0)[:keep]
    return lowest.astype(np.float64).mean(axis=0)


def unknown_ratio(statistic: np.ndarray, threshold: np.ndarray | float) -> np.ndarray:
    """``statistic / threshold`` (``> 1`` = beyond the threshold); 0 where the threshold is infinite."""
    limit = np.maximum(np.asarray(threshold, dtype=np.float64), 1e-12)
    return np.where(np.isinf(limit), 0.0, np.asarray(statistic, dtype=np.float64) / limit)


def nearest_prototype_distances(normalized: np.ndarray, prototypes: np.ndarray) -> np.ndarray:
    """(P, K) squared distances of L2-normalised patch vectors (P, D) to prototypes (K, D), float32, >= 0."""
    protos = np.asarray(prototypes, dtype=np.float32)
    distances = normalized @ protos.T
    distances *= -2.0
    distances += (protos * protos).sum(axis=1)[None, :]
    distances += (normalized * normalized).sum(axis=1, keepdims=True)
    return np.maximum(distances, 0.0, out=distances)


@dataclass(frozen=True)
class RouteRule:
    """One category of the router: its prototypes and its ``unknown`` rule."""

    name: str
    prototypes: np.ndarray
    route_threshold: float
    unknown_threshold: float | None
    unknown_statistic: str
    far_threshold: float | None


@dataclass(frozen=True)
class Routed:
    """Chosen category, route score and unknown score per image."""

    categories: list[str]
    route_scores: np.ndarray
    unknown_scores: np.ndarray


class Router:
    """Routes patch vectors to the category whose prototypes are nearest (mean min squared distance)."""

    def __init__(self, rules: list[RouteRule], shortlist: int | None = DEFAULT_SHORTLIST):
        if not rules:
            raise ValueError("the router has no categories")
        self.rules = rules
        self.shortlist = shortlist
        for rule in rules:
            check_statistic(rule.unknown_statistic)
        self._centroids = np.stack([np.asarray(rule.prototypes, dtype=np.float32).mean(axis=0) for rule in rules])

    def _statistics(self, rule: RouteRule, best: np.ndarray) -> tuple[float, float]:
        """(route score, unknown ratio) of one image against one category from its (P,) min distances."""
        column = best[:, None]
        route = float(patch_statistic(column, "mean")[0])
        if rule.unknown_threshold is None or not np.isfinite(rule.unknown_threshold):
            return route, float(unknown_ratio(np.asarray(route), rule.route_threshold))
        far = None if rule.far_threshold is None else np.asarray([rule.far_threshold], dtype=np.float32)
        value = patch_statistic(column, rule.unknown_statistic, far)[0]
        return route, float(unknown_ratio(value, rule.unknown_threshold))

    def score(self, patch_vectors: np.ndarray, only: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Route scores and unknown ratios (B, C) (``inf`` for categories left out by the shortlist or ``only``)."""
        batch, patches, dim = patch_vectors.shape
        normalized = l2_normalize(patch_vectors.reshape(batch * patches, dim)).reshape(batch, patches, dim)
        count = len(self.rules)
        scores = np.full((batch, count), np.inf)
        ratios = np.full((batch, count), np.inf)
        with one_blas_thread():
            self._score_into(normalized, scores, ratios, only)
        return scores, ratios

    def _score_into(self, normalized: np.ndarray, scores: np.ndarray, ratios: np.ndarray, only: int | None) -> None:
        count = len(self.rules)
        for image in range(len(normalized)):
            if only is not None:
                chosen = [only]
            elif self.shortlist is None or self.shortlist >= count:
                chosen = list(range(count))
            else:
                pooled = normalized[image].mean(axis=0)
                gaps = np.linalg.norm(self._centroids - pooled[None, :], axis=1)
                chosen = [int(i) for i in np.argsort(gaps, kind="stable")[: self.shortlist]]
            for column in chosen:
                rule = self.rules[column]
                best = nearest_prototype_distances(normalized[image], rule.prototypes).min(axis=1)
                scores[image, column], ratios[image, column] = self._statistics(rule, best)

    def route(self, patch_vectors: np.ndarray) -> Routed:
        """The nearest category per image, its route score, and the smallest unknown ratio."""
        scores, ratios = self.score(patch_vectors)
        best = scores.argmin(axis=1)
        return Routed(
            categories=[self.rules[i].name for i in best],
            route_scores=scores[np.arange(len(best)), best],
            unknown_scores=ratios.min(axis=1),
        )

    def forced(self, patch_vectors: np.ndarray, name: str) -> Routed:
        """Route and unknown scores of every image against the category ``name`` alone."""
        column = [rule.name for rule in self.rules].index(name)
        scores, ratios = self.score(patch_vectors, only=column)
        return Routed([name] * len(patch_vectors), scores[:, column], ratios[:, column])
