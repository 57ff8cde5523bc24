"""A fitted category: coreset bank + routing prototypes + StructCore calibration, in one object.

``CategoryModel.fit`` takes the projected patch vectors of a category's train-good images
(n_images, P, D) and builds everything; :func:`fit_category` streams images through a
:class:`~structcore.features.FeatureExtractor` into that matrix (the only large allocation) first.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypedDict

import numpy as np
import torch

from structcore.anomaly_map import anomaly_maps, content_map
from structcore.coreset import KCenterGreedy
from structcore.features import FeatureExtractor, ImageSource, source_size
from structcore.knn import PatchKNN, pairs_within
from structcore.preprocess import valid_patch_grid, valid_patch_mask
from structcore.progress import Progress, ProgressCallback, quiet
from structcore.routing import (
    FAR_QUANTILE_STATISTICS,
    l2_normalize,
    leave_one_out_patch_distances,
    patch_statistic,
    patch_vectors_to_prototypes,
    route_distances,
    route_statistics,
    unknown_ratio,
)
from structcore.scoring import (
    DEFAULT_TOP_RATIO,
    ImageScores,
    StructCoreCalibrator,
    base_scores,
    structural_descriptor,
)
from structcore.settings import (
    CALIBRATION_MODES,
    DEFAULT_BANK_DTYPE,
    DEFAULT_CALIBRATION,
    DEFAULT_CORESET_METHOD,
    DEFAULT_CORESET_RATIO,
    DEFAULT_FAR_QUANTILE,
    DEFAULT_FAR_SHARE,
    DEFAULT_FRR,
    DEFAULT_HOLDOUT_RATIO,
    DEFAULT_INDEX,
    DEFAULT_K,
    DEFAULT_PROTOTYPES,
    DEFAULT_PROXY_DIM,
    DEFAULT_ROUTE_QUANTILE,
    DEFAULT_SCORING,
    DEFAULT_SEED,
    DEFAULT_SIGMA,
    DEFAULT_THRESHOLD_RULE,
    DEFAULT_UNKNOWN_MARGIN,
    DEFAULT_UNKNOWN_STATISTIC,
    FitSettings,
)
from structcore.tiles import stitch_map, tiled_valid_mask

#: Images scored per anomaly-map batch during calibration (bounds the memory of the maps).
_MAP_BATCH = 16
#: Patches sampled to estimate how many new bank vectors an update's merge would measure per patch.
_DENSITY_SAMPLE = 4096
#: New bank vectors per patch below its k-th distance beyond which an update searches every image
#: against the grown bank instead of merging. Measuring a pair costs about 4 us (two gathered rows),
#: a patch's full search 30-60 us: 1.1 per patch on MVTec bottle 150 + 59 and 0.5 on MTD 300 + 50
#: (merged), 73 on bottle 9 + 200 (merging took 149 s, the full search 17 s).
_DENSE_PAIRS = 8.0


def _float32_stack(parts: Sequence[np.ndarray]) -> np.ndarray:
    """``np.concatenate(parts)`` as float32, cast by torch (numpy's float16 cast is ~7x slower).

    On MTD's 711 stored images (1.7 M patches of float16) numpy's cast took about 10 s.
    """
    stacked = torch.empty((sum(len(part) for part in parts), *parts[0].shape[1:]), dtype=torch.float32)
    first = 0
    with torch.inference_mode():
        for part in parts:
            writable = np.require(part, requirements=["C", "W"])  # torch refuses read-only arrays
            stacked[first : first + len(part)].copy_(torch.from_numpy(writable))
            first += len(part)
    return stacked.numpy()


def _k_smallest_per_row(rows: np.ndarray, distances: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` smallest distances of each row that has pairs, from pairs sorted by row then distance.

    Returns (T, k) distances padded with ``inf`` and the rows (T,).
    """
    touched, first, counts = np.unique(rows, return_index=True, return_counts=True)
    rank = np.arange(len(rows)) - np.repeat(first, counts)
    keep = rank < k
    smallest = np.full((len(touched), k), np.inf, dtype=np.float32)
    smallest[np.repeat(np.arange(len(touched)), counts)[keep], rank[keep]] = distances[keep]
    return smallest, touched


class UnknownRule(TypedDict):
    """A fitted model's ``unknown`` settings, as :meth:`PrototypeRouter.add` takes them."""

    unknown_threshold: float | None
    unknown_statistic: str
    far_threshold: float | None


@dataclass(frozen=True)
class CategoryPrediction:
    """Per-image anomaly maps (B, H, W) and base / struct / hybrid scores.

    With ``contents`` (the ``fit`` and ``tile`` geometries) ``maps`` is a list: each image's map
    covers its content (height, width) only (``tile``: the whole tiled image).
    """

    maps: np.ndarray | list[np.ndarray]
    scores: ImageScores


class CategoryModel:
    """One product category: memory bank, routing prototypes and StructCore statistics.

    Args:
        coreset_ratio: share of the train patch vectors kept in the bank.
        k: neighbours averaged per patch score.
        calibration: ``"loo"``, ``"in-sample"``, ``"holdout"`` (method.md "Calibration bias") or
            ``"mixed"``: the StructCore statistics (mu, sigma, lambda) from the in-sample maps, the
            thresholds from the leave-one-out maps (docs/quality.md).
        holdout_ratio: share of train images kept out of the bank in ``"holdout"`` mode.
        n_prototypes: routing prototypes K.
        proxy_dim: dimension of the coreset's distance proxy (``None`` = exact).
        route_quantile: quantile of train route scores (and of the unknown statistic) behind the
            ``unknown`` thresholds.
        unknown_statistic: image statistic of patch-to-prototype distances behind ``unknown``
            (one of :data:`structcore.routing.UNKNOWN_STATISTICS`).
        unknown_margin: for ``mean``, ``median`` and ``low-mean-<N>``, the factor on their
            leave-one-out train quantile that gives the unknown threshold (docs/open-set.md).
        far_quantile: quantile of the leave-one-out train patch distances beyond which a patch
            counts as far from the category (``quantile-30`` and ``far-share``).
        far_share: ``far-share``: share of far patches beyond which an image is unknown.
        sigma: Gaussian blur of the anomaly map.
        bank_dtype: ``"float32"`` or ``"float16"`` storage of the bank.
        index: faiss index kind (``"flat"`` exact, ``"hnsw"`` approximate).
        seed: seeds the coreset, the prototypes and the holdout split.
        coreset_method: the coreset algorithm, ``"auto"`` (by problem size), ``"exact"`` or
            ``"approx"`` (see :mod:`structcore.coreset`); the benchmark forces each in turn.
        scoring: StructCore calibration, ``"robust"`` (default) or ``"paper"`` (see
            :mod:`structcore.scoring`); stored with the calibrator's state.
        threshold_rule: how the thresholds follow from the train-good scores (one of
            :data:`structcore.thresholds.THRESHOLD_RULES`; ``"quantile"`` is the 99.5% quantile of
            versions fitted before rules existed); stored with the calibrator's state.
        threshold_frr: target false-reject rate of the rule (not used by ``"quantile"``).

    Attributes:
        bank_: (M, D) memory bank.
        bank_image_ids_: (M,) train image index each bank vector came from.
        prototypes_: (K, D) L2-normalised routing prototypes.
        calibrator_: fitted :class:`StructCoreCalibrator`.
        route_threshold_: ``route_quantile`` of the leave-one-out train route scores (the
            ``unknown`` rule of registries fitted before ``unknown_threshold_`` existed).
        unknown_threshold_: threshold on ``unknown_statistic`` (``nan`` on a model loaded from
            such an older registry: then the route threshold decides).
        far_threshold_: far patch-distance threshold (``quantile-30``: also the unknown threshold;
            ``far-share``; ``nan`` for the other statistics).
        grid_: patch grid (h, w); map_size_: side of the anomaly map.
        n_train_images_: images used; calibration_scores_: train-good scores used for calibration.
        fit_seconds_: wall time of :meth:`fit`.
    """

    _knn: PatchKNN | None = None
    #: The train images' patch vectors (n, P, D) float16, kept by ``fit_category(keep_patches=True)``.
    train_patches_: np.ndarray | None = None
    #: The calibration images' squared distances (n, P, k) to their ``k`` nearest bank vectors, by
    #: kind: ``in_sample`` (plain search) and, in ``loo`` / ``mixed`` calibration, ``loo`` (past the
    #: image's own bank vectors). Set by :meth:`fit` and :meth:`updated`; what makes an update's
    #: kNN part incremental (:meth:`updated`), stored beside ``train_patches_``. Also ``coreset``
    #: (n, P): each patch's squared distance to its nearest bank vector in the coreset's proxy space
    #: (an upper bound where the traversal kept one, :attr:`KCenterGreedy.min_distances_`), what lets
    #: an update continue the bank over old patches without measuring them all.
    train_distances_: dict[str, np.ndarray] | None = None
    #: Old patches an update's coreset continuation measured (the others kept their stored bound).
    coreset_measured_rows_: int | None = None
    update_seconds_: dict[str, float] | None = None
    #: How an update found the k-nearest distances: ``merged`` (the stored ones merged with the new
    #: bank vectors', :meth:`_updated_distances`) or ``full`` (every image searched against the grown
    #: bank: nothing stored, or too many new vectors below the patches' k-th distances).
    update_search_: str | None = None
    #: Fitted with ``contents`` (the ``fit`` or ``tile`` geometry): its maps cover each image's content only.
    fitted_on_contents_: bool = False
    #: ``tile`` geometry: the least overlap of the tiles (pixels); ``None``: one square per image.
    tile_overlap_: int | None = None

    def __init__(
        self,
        coreset_ratio: float = DEFAULT_CORESET_RATIO,
        k: int = DEFAULT_K,
        calibration: str = DEFAULT_CALIBRATION,
        holdout_ratio: float = DEFAULT_HOLDOUT_RATIO,
        n_prototypes: int = DEFAULT_PROTOTYPES,
        proxy_dim: int | None = DEFAULT_PROXY_DIM,
        route_quantile: float = DEFAULT_ROUTE_QUANTILE,
        unknown_statistic: str = DEFAULT_UNKNOWN_STATISTIC,
        unknown_margin: float = DEFAULT_UNKNOWN_MARGIN,
        far_quantile: float = DEFAULT_FAR_QUANTILE,
        far_share: float = DEFAULT_FAR_SHARE,
        sigma: float = DEFAULT_SIGMA,
        bank_dtype: str = DEFAULT_BANK_DTYPE,
        index: str = DEFAULT_INDEX,
        seed: int = DEFAULT_SEED,
        coreset_method: str = DEFAULT_CORESET_METHOD,
        scoring: str = DEFAULT_SCORING,
        threshold_rule: str = DEFAULT_THRESHOLD_RULE,
        threshold_frr: float = DEFAULT_FRR,
    ):
        self.coreset_ratio = coreset_ratio
        self.k = k
        self.calibration = calibration
        self.holdout_ratio = holdout_ratio
        self.n_prototypes = n_prototypes
        self.proxy_dim = proxy_dim
        self.route_quantile = route_quantile
        self.unknown_statistic = unknown_statistic
        self.unknown_margin = unknown_margin
        self.far_quantile = far_quantile
        self.far_share = far_share
        self.sigma = sigma
        self.bank_dtype = bank_dtype
        self.index = index
        self.seed = seed
        self.coreset_method = coreset_method
        self.scoring = scoring
        self.threshold_rule = threshold_rule
        self.threshold_frr = threshold_frr

    # ------------------------------------------------------------------ fit
    def fit(
        self,
        patch_vectors: np.ndarray,
        grid: tuple[int, int],
        map_size: int,
        progress: ProgressCallback | None = None,
        contents: np.ndarray | None = None,
        tile_overlap: int | None = None,
    ) -> CategoryModel:
        """Fit from the projected patch vectors (n_images, P, D) of train-good images.

        Args:
            patch_vectors: (n_images, P, D) float32, P = grid[0] * grid[1].
            grid: patch grid (h, w).
            map_size: side of the anomaly maps (the crop size).
            progress: receives ``Progress(stage)`` as each stage (``coreset``, ``prototypes``,
                ``calibration``) starts.
            contents: ``fit`` geometry: (n_images, 2) the (height, width) of the square each image
                covers; only the patches whose centre lies in it
                (:func:`structcore.preprocess.valid_patch_mask`) are coreset candidates, routing
                prototypes and unknown statistics, and the calibration maps cover it alone.
                ``None``: every patch counts (``squash``).
            tile_overlap: ``tile`` geometry (with ``contents``: each tiled image's (height, width)):
                each image's rows are ``P / (h * w)`` slots of ``map_size`` tiles overlapping by at
                least this many pixels (:mod:`structcore.tiles`); its valid patches are those of
                its tiles' content, and its map is the tiles' maps stitched. The bank, the
                leave-one-out exclusion (the whole image's patches) and the thresholds are as for
                one square per image.
        """
        started = time.perf_counter()
        FitSettings.from_values(self.get_params()).validate()  # structcore.settings: one table, one error
        n_images, n_patches, dim = patch_vectors.shape
        tiled = tile_overlap is not None
        if (n_patches % (grid[0] * grid[1]) if tiled else n_patches != grid[0] * grid[1]) or n_patches == 0:
            msg = f"patch count {n_patches} does not match grid {grid}"
            raise ValueError(msg)
        if tiled and contents is None:
            msg = "the tile geometry needs each image's contents (its tiled height and width)"
            raise ValueError(msg)
        min_images = 3 if self.calibration == "holdout" else 2
        if n_images < min_images:
            msg = f"need at least {min_images} train images for {self.calibration!r} calibration, got {n_images}"
            raise ValueError(msg)
        self.grid_ = (int(grid[0]), int(grid[1]))
        self.map_size_ = int(map_size)
        self.tile_overlap_ = None if tile_overlap is None else int(tile_overlap)
        self.n_train_images_ = n_images
        notify = progress or quiet

        def report(stage: str) -> None:
            notify(Progress(stage))

        bank_images, calibration_images = self._split(n_images)
        flat = patch_vectors.reshape(n_images * n_patches, dim)
        image_of_row = np.repeat(np.arange(n_images, dtype=np.int32), n_patches)

        valid = self.valid_patches(contents, n_patches)
        report("coreset")
        if len(bank_images) == n_images and valid is None:
            candidate_rows: np.ndarray | None = None
            candidates = flat
        else:  # the bank images' patches (fit: their valid ones)
            kept = np.zeros(n_images, dtype=bool)
            kept[bank_images] = True
            kept_rows = np.repeat(kept, n_patches) if valid is None else np.repeat(kept, n_patches) & valid.ravel()
            candidate_rows = np.flatnonzero(kept_rows)
            candidates = flat[candidate_rows]
        selector = KCenterGreedy(
            ratio=self.coreset_ratio, proxy_dim=self.proxy_dim, seed=self.seed, method=self.coreset_method
        )
        selected = selector.fit(candidates).indices_
        rows = selected if candidate_rows is None else candidate_rows[selected]
        self.bank_ = flat[rows].astype(self.bank_dtype)
        self.bank_image_ids_ = image_of_row[rows]
        self.coreset_radius_ = selector.radius_
        self._fit_after_bank(patch_vectors, calibration_images, report, contents=contents)
        if self.train_distances_ is not None and candidate_rows is None:
            self.train_distances_["coreset"] = selector.min_distances_.reshape(n_images, n_patches)
        self.fit_seconds_ = time.perf_counter() - started
        return self

    def updated(
        self,
        old_patches: np.ndarray,
        new_patches: np.ndarray,
        progress: ProgressCallback | None = None,
        old_distances: dict[str, np.ndarray] | None = None,
    ) -> CategoryModel:
        """A new fitted model for this model's train images plus new ones (``registry update``).

        ``old_patches`` (n_old, P, D) are the stored patch vectors of this model's train images
        (in the order of ``bank_image_ids_``), ``new_patches`` (n_new, P, D) those of the new
        images. The bank is *continued*: its vectors stay and farthest-point greedy picks among all
        patches, old and new, starting from the current bank (:meth:`KCenterGreedy.extend`), until
        it holds ``coreset_ratio`` of all patches. The old patches enter with their stored distance
        to the bank (``old_distances["coreset"]``; searched once when absent) and are measured only
        when they could be the farthest, so the picks go to the new condition first and to old
        patches once the new ones are covered as densely. The routing prototypes, the unknown thresholds, the
        StructCore statistics and the leave-one-out thresholds are then recomputed for old and new
        images exactly as :meth:`fit` computes them. This model is not modified.

        ``old_distances`` (this model's ``train_distances_``, as stored): the old images' k-nearest
        bank distances; with them the old images are not searched again, only measured against the
        *new* bank vectors (:meth:`_updated_distances`, exact); without them every image is searched
        against the whole bank. The result is the same either way (up to float32 rounding).

        Raises:
            ValueError: holdout calibration (its split changes with the image count: refit), or
                patch arrays that do not match this model.
        """
        started = time.perf_counter()
        if self.calibration == "holdout":
            msg = "a holdout-calibrated version cannot be updated incrementally; refit it"
            raise ValueError(msg)
        if self.fitted_on_contents_:
            geometry = "fit" if self.tile_overlap_ is None else "tile"
            msg = f"a version of a {geometry}-geometry registry cannot be updated incrementally yet; refit it"
            raise ValueError(msg)
        n_old, n_new = int(old_patches.shape[0]), int(new_patches.shape[0])
        if n_old != self.n_train_images_:
            msg = f"the stored patches hold {n_old} images, the version {self.n_train_images_}"
            raise ValueError(msg)
        n_patches, dim = self.grid_[0] * self.grid_[1], int(self.bank_.shape[1])
        for label, array in (("stored", old_patches), ("new", new_patches)):
            if array.ndim != 3 or array.shape[1:] != (n_patches, dim):
                msg = f"the {label} patch vectors have shape {array.shape}, expected (n, {n_patches}, {dim})"
                raise ValueError(msg)
        notify = progress or quiet

        def report(stage: str) -> None:
            notify(Progress(stage))

        model = CategoryModel(**self.get_params())  # type: ignore[arg-type]
        model.grid_, model.map_size_ = self.grid_, self.map_size_
        model.n_train_images_ = n_old + n_new
        report("coreset")
        patch_vectors = _float32_stack([old_patches, new_patches])
        flat = patch_vectors.reshape((n_old + n_new) * n_patches, dim)
        target = math.ceil(len(flat) * self.coreset_ratio)
        wanted = max(0, min(target - len(self.bank_), len(flat)))
        selector = KCenterGreedy(proxy_dim=self.proxy_dim, seed=self.seed)
        old_bank = np.asarray(self.bank_, dtype=np.float32)
        old_bounds = (old_distances or {}).get("coreset")
        if old_bounds is None or old_bounds.shape != (n_old, n_patches):
            old_bounds = selector.distance_bounds(old_bank, flat[: n_old * n_patches])
        bounds = np.concatenate([np.ravel(old_bounds), np.full(n_new * n_patches, np.inf, np.float32)])
        selector.extend(old_bank, flat, wanted, bounds=bounds)
        picked = selector.indices_
        model.bank_ = np.concatenate([self.bank_, flat[picked].astype(self.bank_dtype)])
        new_ids = (picked // n_patches).astype(self.bank_image_ids_.dtype)
        model.bank_image_ids_ = np.concatenate([self.bank_image_ids_, new_ids])
        model.coreset_radius_ = float(selector.radius_)
        seconds = {"coreset": time.perf_counter() - started}
        model.coreset_measured_rows_ = selector.measured_rows_ - n_new * n_patches
        distances = None
        if old_distances is not None:
            report("calibration-distances")
            mark = time.perf_counter()
            distances = model._updated_distances(patch_vectors, n_old, len(self.bank_), old_distances)
            seconds["distances"] = time.perf_counter() - mark
        model.update_search_ = "full" if distances is None else "merged"
        model._fit_after_bank(patch_vectors, np.arange(n_old + n_new), report, distances, seconds)
        if model.train_distances_ is not None:
            model.train_distances_["coreset"] = selector.min_distances_.reshape(n_old + n_new, n_patches)
        model.fit_seconds_ = time.perf_counter() - started
        #: where :meth:`updated` spent its time (benchmarks/update_cost.py)
        model.update_seconds_ = seconds
        return model

    def _updated_distances(
        self, patch_vectors: np.ndarray, n_old: int, n_old_bank: int, old_distances: dict[str, np.ndarray]
    ) -> dict[str, np.ndarray] | None:
        """The k-nearest distances of all train images to this (continued) bank, from the old images' stored ones.

        The bank's first ``n_old_bank`` vectors are the parent's, unchanged; the vectors after them
        came from old or new images (``bank_image_ids_``). So:

        * an old image's new k nearest (in-sample, or past its own bank vectors: leave-one-out)
          are the k smallest of its stored k and its distances to the new vectors (leave-one-out:
          past the new vectors taken from it);
        * a new image's k nearest among the old vectors are one plain search (none of them came
          from it, so in-sample and leave-one-out agree there), merged in the same way with its
          distances to the new vectors (leave-one-out: those of other new images).

        Only the pairs of a patch and a new vector below the patch's k-th distance so far can
        change anything, and :func:`structcore.knn.pairs_within` finds exactly those (one screening
        product over all patches x the new vectors). The merge is exact: the result equals
        searching every image against the grown bank.

        Returns ``None`` when a sample of the patches has more than :data:`_DENSE_PAIRS` new
        vectors each below its k-th distance (many new images on a small old bank: measuring the
        pairs would cost more than searching every image against the grown bank, which the
        caller then does).
        """
        kinds = self.distance_kinds()
        missing = [kind for kind in kinds if kind not in old_distances]
        n_images, n_patches, dim = patch_vectors.shape
        expected = (n_old, n_patches, self.k)
        wrong = [kind for kind in kinds if kind in old_distances and old_distances[kind].shape != expected]
        if missing or wrong:
            msg = f"stored train distances {sorted(old_distances)} do not fit: need {list(kinds)} of shape {expected}"
            raise ValueError(msg)
        rows_old = n_old * n_patches
        merged = {kind: np.array(old_distances[kind], np.float32).reshape(rows_old, self.k) for kind in kinds}
        flat = patch_vectors.reshape(n_images * n_patches, dim)
        old_bank = np.asarray(self.bank_[:n_old_bank], dtype=np.float32)
        old_knn = PatchKNN(k=min(self.k, len(old_bank)), index=self.index).fit(old_bank)
        fresh = np.asarray(self.bank_[n_old_bank:], dtype=np.float32)
        limit_kind = "loo" if "loo" in merged else "in_sample"
        if len(fresh) and self._pairs_per_patch(flat, merged[limit_kind][:, -1], old_knn, fresh) > _DENSE_PAIRS:
            return None
        if n_images > n_old:  # the new images against the old bank (no own vectors there)
            new_rows = self._k_nearest_padded(old_knn, flat[rows_old:])
            merged = {kind: np.concatenate([values, new_rows]) for kind, values in merged.items()}
        if len(fresh):
            rows, columns, distances = pairs_within(flat, merged[limit_kind][:, -1], fresh)
            own = (rows // n_patches) == self.bank_image_ids_[n_old_bank + columns]
            for kind in kinds:
                keep = ~own if kind == "loo" else np.ones(len(rows), dtype=bool)
                near, touched = _k_smallest_per_row(rows[keep], distances[keep], self.k)
                both = np.concatenate([merged[kind][touched], near], axis=1)
                merged[kind][touched] = np.sort(both, axis=1)[:, : self.k]
        return {kind: values.reshape(n_images, n_patches, self.k) for kind, values in merged.items()}

    def _k_nearest_padded(self, knn: PatchKNN, queries: np.ndarray) -> np.ndarray:
        """Squared distances (n, k) of ``queries`` to their ``k`` nearest in ``knn``, padded with ``inf``."""
        found, _ = knn.search(queries)
        padded = np.full((len(found), self.k), np.inf, np.float32)
        padded[:, : found.shape[1]] = found
        return padded

    def _pairs_per_patch(self, flat: np.ndarray, old_limits: np.ndarray, old_knn: PatchKNN, fresh: np.ndarray) -> float:
        """The mean number of new bank vectors below a patch's k-th distance, on an even sample of the patches.

        ``old_limits`` are the old patches' k-th distances (the first rows of ``flat``); the new
        patches' come from ``old_knn`` (the old bank).
        """
        sample = np.unique(np.linspace(0, len(flat) - 1, min(len(flat), _DENSITY_SAMPLE)).astype(np.int64))
        is_old = sample < len(old_limits)
        limits = np.empty(len(sample), np.float32)
        limits[is_old] = old_limits[sample[is_old]]
        if not is_old.all():
            limits[~is_old] = self._k_nearest_padded(old_knn, flat[sample[~is_old]])[:, -1]
        return len(pairs_within(flat[sample], limits, fresh)[0]) / len(sample)

    def _fit_after_bank(
        self,
        patch_vectors: np.ndarray,
        calibration_images: np.ndarray,
        report: Callable[[str], None],
        distances: dict[str, np.ndarray] | None = None,
        seconds: dict[str, float] | None = None,
        contents: np.ndarray | None = None,
    ) -> None:
        """Prototypes, unknown thresholds and calibration, once ``bank_`` is set (:meth:`fit`, :meth:`updated`).

        ``distances``: the calibration images' k-nearest bank distances when already known
        (:meth:`_updated_distances`); otherwise they are searched here. ``seconds`` gets the time
        of each part. ``contents``: as in :meth:`fit` (only the valid patches count).
        """
        timings = {} if seconds is None else seconds
        mark = time.perf_counter()
        n_images, n_patches, dim = patch_vectors.shape
        flat = patch_vectors.reshape(n_images * n_patches, dim)
        image_of_row = np.repeat(np.arange(n_images, dtype=np.int32), n_patches)
        valid = self.valid_patches(contents, n_patches)
        self.fitted_on_contents_ = valid is not None
        report("prototypes")
        if valid is None:
            self.prototypes_, prototype_rows = patch_vectors_to_prototypes(flat, self.n_prototypes, seed=self.seed)
        else:
            valid_rows = np.flatnonzero(valid.ravel())
            self.prototypes_, picked = patch_vectors_to_prototypes(flat[valid_rows], self.n_prototypes, seed=self.seed)
            prototype_rows = valid_rows[picked]
        timings["prototypes"] = time.perf_counter() - mark
        mark = time.perf_counter()
        own_distances = leave_one_out_patch_distances(patch_vectors, self.prototypes_, image_of_row[prototype_rows])
        if valid is None:
            own_routes = own_distances.astype(np.float64).mean(axis=1)
        else:
            pairs = zip(own_distances, valid, strict=True)
            own_routes = np.asarray([row[keep].astype(np.float64).mean() for row, keep in pairs])
        self.route_threshold_ = float(np.quantile(own_routes, self.route_quantile))
        self._calibrate_unknown(own_distances, valid)
        del own_distances
        timings["prototype_distances"] = time.perf_counter() - mark

        report("calibration")
        self._knn = None
        if distances is None:
            mark = time.perf_counter()
            distances = self._calibration_distances(patch_vectors, calibration_images)
            timings["distances"] = timings.get("distances", 0.0) + time.perf_counter() - mark
        mark = time.perf_counter()
        self.train_distances_ = distances if self.calibration != "holdout" else None
        calibration_contents = None if contents is None else contents[calibration_images]
        calibrator = StructCoreCalibrator(
            scoring=self.scoring, threshold_rule=self.threshold_rule, frr=self.threshold_frr
        )
        if self.calibration in {"in-sample", "holdout"}:
            base, descriptors = self._map_statistics(distances["in_sample"].mean(axis=2), calibration_contents)
            self.calibrator_ = calibrator.fit_descriptors(base, descriptors)
        elif self.calibration == "loo":
            base, descriptors = self._map_statistics(distances["loo"].mean(axis=2), calibration_contents)
            self.calibrator_ = calibrator.fit_descriptors(base, descriptors)
        else:  # mixed: statistics from the in-sample maps, thresholds from the leave-one-out ones
            base, descriptors = self._map_statistics(distances["loo"].mean(axis=2), calibration_contents)
            self.calibrator_ = calibrator.fit_descriptors(
                *self._map_statistics(distances["in_sample"].mean(axis=2), calibration_contents)
            )
            self.calibrator_.fit_thresholds(base, descriptors)
        scores = self.calibrator_.score_descriptors(base, descriptors)
        self.calibration_scores_ = {"base": scores.base, "struct": scores.struct, "hybrid": scores.hybrid}
        timings["maps"] = time.perf_counter() - mark

    def _calibrate_unknown(self, own_distances: np.ndarray, valid: np.ndarray | None = None) -> None:
        """Unknown thresholds from the leave-one-out train patch distances (n_images, P) (``valid`` ones only)."""
        if valid is not None:
            self._calibrate_unknown_valid(own_distances, valid)
            return
        if self.unknown_statistic in FAR_QUANTILE_STATISTICS:
            # quantile-N: the image's N% patch-distance quantile over the far patch threshold.
            self.far_threshold_ = float(np.quantile(own_distances, self.far_quantile))
            self.unknown_threshold_ = self.far_threshold_
            return
        if self.unknown_statistic == "far-share":
            self.far_threshold_ = float(np.quantile(own_distances, self.far_quantile))
            self.unknown_threshold_ = float(self.far_share)
            return
        self.far_threshold_ = float("nan")
        own_statistic = patch_statistic(torch.from_numpy(own_distances.T), self.unknown_statistic).numpy()
        self.unknown_threshold_ = float(np.quantile(own_statistic, self.route_quantile)) * self.unknown_margin

    def _calibrate_unknown_valid(self, own_distances: np.ndarray, valid: np.ndarray) -> None:
        """:meth:`_calibrate_unknown` over each image's valid patches (``fit``)."""
        pooled = own_distances[valid]
        if self.unknown_statistic in FAR_QUANTILE_STATISTICS or self.unknown_statistic == "far-share":
            self.far_threshold_ = float(np.quantile(pooled, self.far_quantile))
            far_share = self.unknown_statistic == "far-share"
            self.unknown_threshold_ = float(self.far_share) if far_share else self.far_threshold_
            return
        self.far_threshold_ = float("nan")
        own_statistic = np.asarray(
            [
                float(patch_statistic(torch.from_numpy(row[keep][:, None]), self.unknown_statistic).numpy()[0])
                for row, keep in zip(own_distances, valid, strict=True)
            ]
        )
        self.unknown_threshold_ = float(np.quantile(own_statistic, self.route_quantile)) * self.unknown_margin

    def _split(self, n_images: int) -> tuple[np.ndarray, np.ndarray]:
        everything = np.arange(n_images)
        if self.calibration != "holdout":
            return everything, everything
        held = max(2, round(n_images * self.holdout_ratio))
        held = min(held, n_images - 1)
        order = np.random.default_rng(self.seed).permutation(n_images)
        return np.sort(order[held:]), np.sort(order[:held])

    def distance_kinds(self) -> tuple[str, ...]:
        """The k-nearest distance lists the calibration mode needs (``in_sample``, ``loo``)."""
        return ("in_sample", "loo") if self.calibration in {"loo", "mixed"} else ("in_sample",)

    def _calibration_distances(self, patch_vectors: np.ndarray, images: np.ndarray) -> dict[str, np.ndarray]:
        """Squared distances (n, P, k) of the ``images``' patches to their k nearest bank vectors.

        ``in_sample``: a plain search; ``loo`` (loo and mixed calibration): past the image's own
        bank vectors (leave-one-image-out), see :meth:`_leave_one_out_distances`.
        """
        knn = self.knn()
        n_patches = patch_vectors.shape[1]
        if not len(images):
            empty = np.empty((0, n_patches, self.k), np.float32)
            return {kind: empty.copy() for kind in self.distance_kinds()}
        if "loo" not in self.distance_kinds():
            return {"in_sample": np.stack([knn.search(patch_vectors[i])[0] for i in images]).astype(np.float32)}
        own_counts = np.bincount(self.bank_image_ids_, minlength=patch_vectors.shape[0])
        if knn.size_ - own_counts.max() < self.k:
            msg = "bank too small for leave-one-out calibration; raise the coreset ratio or add images"
            raise ValueError(msg)
        in_sample_rows, loo_rows = [], []
        for image in images:
            plain, loo = self._leave_one_out_distances(knn, patch_vectors[image], int(image), int(own_counts[image]))
            in_sample_rows.append(plain)
            loo_rows.append(loo)
        return {
            "in_sample": np.stack(in_sample_rows).astype(np.float32, copy=False),
            "loo": np.stack(loo_rows).astype(np.float32, copy=False),
        }

    def _leave_one_out_distances(
        self, knn: PatchKNN, queries: np.ndarray, image: int, own_count: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Squared distances (P, k) of each query to its ``k`` nearest bank vectors, in-sample and leave-one-out.

        Leave-one-out: nearest among bank vectors taken from other images. A plain k-search first:
        a query none of whose ``k`` neighbours came from ``image`` already has its answer (about
        89% of bottle's patches). Only the others are searched again past the image's
        ``own_count`` bank vectors, which costs ~3x a plain search per query.
        """
        plain, neighbours = knn.search(queries, self.k)
        plain = np.asarray(plain)
        distances = plain
        hit = (self.bank_image_ids_[neighbours] == image).any(axis=1)
        if own_count and hit.any():
            deeper, deeper_neighbours = knn.search(queries[hit], self.k + own_count)
            deeper = np.where(self.bank_image_ids_[deeper_neighbours] == image, np.inf, deeper)
            deeper.sort(axis=1)
            distances = np.array(plain, copy=True)
            distances[hit] = deeper[:, : self.k]
        return plain, distances

    def _map_statistics(
        self, patch_scores: np.ndarray, contents: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Base scores (n,) and descriptors (n, 3) of the maps of ``patch_scores`` (``contents``: fit's maps)."""
        if contents is not None:
            return _statistics_of(self._content_maps(patch_scores, contents), DEFAULT_TOP_RATIO)
        base, descriptors = [], []
        for start in range(0, len(patch_scores), _MAP_BATCH):
            maps = self._maps(patch_scores[start : start + _MAP_BATCH])
            base.append(base_scores(maps))
            descriptors.append(structural_descriptor(maps, DEFAULT_TOP_RATIO))
        return np.concatenate(base), np.concatenate(descriptors)

    # ------------------------------------------------------------- predict
    def knn(self) -> PatchKNN:
        """The kNN index over the bank (built on first use)."""
        if self._knn is None:
            self._knn = PatchKNN(k=self.k, index=self.index).fit(self.bank_)
        assert self._knn is not None
        return self._knn

    def _maps(self, patch_scores: np.ndarray) -> np.ndarray:
        grids = patch_scores.reshape(len(patch_scores), *self.grid_)
        return anomaly_maps(grids, self.map_size_, self.sigma)

    def valid_patches(self, contents: np.ndarray | None, n_patches: int) -> np.ndarray | None:
        """(B, n_patches) bool: the patches that count for images of ``contents`` (``None``: squash, all)."""
        if contents is None:
            return None
        if self.tile_overlap_ is not None:
            slots = n_patches // (self.grid_[0] * self.grid_[1])
            return tiled_valid_mask(contents, self.grid_, self.map_size_, self.tile_overlap_, slots)
        return valid_patch_mask(contents, self.grid_, self.map_size_)

    def _content_maps(self, patch_scores: np.ndarray, contents: np.ndarray) -> list[np.ndarray]:
        """``fit``: each image's map over its content (height, width), from its valid patches only.

        ``tile``: each image's tiles' maps stitched (:func:`structcore.tiles.stitch_map`).
        """
        if self.tile_overlap_ is not None:
            overlap = self.tile_overlap_
            pairs = zip(patch_scores, np.asarray(contents).reshape(-1, 2), strict=True)
            return [
                stitch_map(scores, (int(c[0]), int(c[1])), self.grid_, self.map_size_, overlap, self.sigma)
                for scores, c in pairs
            ]
        maps = []
        for scores, content in zip(patch_scores, np.asarray(contents).reshape(-1, 2), strict=True):
            size = (int(content[0]), int(content[1]))
            rows, columns = valid_patch_grid(size, self.grid_, self.map_size_)
            grid = np.asarray(scores).reshape(self.grid_)[:rows, :columns]
            maps.append(content_map(grid, size, self.sigma))
        return maps

    def patch_scores(self, patch_vectors: np.ndarray) -> np.ndarray:
        """Patch scores (B, P) of projected patch vectors (B, P, D)."""
        batch, n_patches, dim = patch_vectors.shape
        return self.knn().score(patch_vectors.reshape(batch * n_patches, dim)).reshape(batch, n_patches)

    def predict(self, patch_vectors: np.ndarray, contents: np.ndarray | None = None) -> CategoryPrediction:
        """Anomaly maps and image scores for projected patch vectors (B, P, D).

        ``contents`` (B, 2): ``fit`` geometry, each image's content (height, width); its map
        covers the content only, from the valid patches (the padding's patches are not in it),
        and the base score (max) and the descriptor see that map alone. ``tile`` (a model fitted
        with ``tile_overlap``): each tiled image's (height, width); its map is stitched from its tiles.
        """
        if contents is not None:
            content_maps = self._content_maps(self.patch_scores(patch_vectors), contents)
            base, descriptors = _statistics_of(content_maps, self.calibrator_.top_ratio)
            scores = self.calibrator_.score_descriptors(base, descriptors)
            return CategoryPrediction(maps=content_maps, scores=scores)
        maps = self._maps(self.patch_scores(patch_vectors))
        return CategoryPrediction(maps=maps, scores=self.calibrator_.score(maps))

    def route_score(self, patch_vectors: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
        """Route scores (B,) against this category's own prototypes (``valid`` (B, P): the patches that count)."""
        if valid is not None:
            return _per_image(self.route_score, patch_vectors, valid)
        owners = np.zeros(len(self.prototypes_), dtype=np.int64)
        return route_distances(patch_vectors, self.prototypes_, owners, 1)[:, 0]

    def unknown_rule(self) -> UnknownRule:
        """The ``unknown`` settings :meth:`PrototypeRouter.add` takes (``unknown_threshold`` ``None``: the old rule)."""
        return {
            "unknown_threshold": _finite_or_none(self.unknown_threshold_),
            "unknown_statistic": self.unknown_statistic,
            "far_threshold": _finite_or_none(self.far_threshold_),
        }

    def unknown_score(self, patch_vectors: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
        """Unknown scores (B,): the unknown statistic over its threshold (``> 1`` = unlike this category).

        A model without an unknown threshold (loaded from an older registry) uses its route score
        over its route threshold, the rule such registries were fitted with. ``valid`` (B, P):
        the patches that count (``fit``).
        """
        if valid is not None:
            return _per_image(self.unknown_score, patch_vectors, valid)
        owners = np.zeros(len(self.prototypes_), dtype=np.int64)
        if not math.isfinite(self.unknown_threshold_):
            return unknown_ratio(self.route_score(patch_vectors), self.route_threshold_)
        far = np.asarray([self.far_threshold_])
        found = route_statistics(patch_vectors, self.prototypes_, owners, 1, (self.unknown_statistic,), far)
        return unknown_ratio(found[self.unknown_statistic][:, 0], self.unknown_threshold_)

    # --------------------------------------------------------- persistence
    #: Names of the arrays returned by :meth:`to_arrays`.
    ARRAY_NAMES = (
        "bank",
        "bank_image_ids",
        "prototypes",
        "calibration_base",
        "calibration_struct",
        "calibration_hybrid",
    )

    def get_params(self) -> dict[str, object]:
        """Constructor settings (scikit-learn style)."""
        return {
            "coreset_ratio": self.coreset_ratio,
            "k": self.k,
            "calibration": self.calibration,
            "holdout_ratio": self.holdout_ratio,
            "n_prototypes": self.n_prototypes,
            "proxy_dim": self.proxy_dim,
            "route_quantile": self.route_quantile,
            "unknown_statistic": self.unknown_statistic,
            "unknown_margin": self.unknown_margin,
            "far_quantile": self.far_quantile,
            "far_share": self.far_share,
            "sigma": self.sigma,
            "bank_dtype": self.bank_dtype,
            "index": self.index,
            "seed": self.seed,
            "coreset_method": self.coreset_method,
            "scoring": self.scoring,
            "threshold_rule": self.threshold_rule,
            "threshold_frr": self.threshold_frr,
        }

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The fitted arrays, by name (see :attr:`ARRAY_NAMES`)."""
        return {
            "bank": self.bank_,
            "bank_image_ids": self.bank_image_ids_.astype(np.int32),
            "prototypes": self.prototypes_.astype(np.float32),
            "calibration_base": np.asarray(self.calibration_scores_["base"], dtype=np.float64),
            "calibration_struct": np.asarray(self.calibration_scores_["struct"], dtype=np.float64),
            "calibration_hybrid": np.asarray(self.calibration_scores_["hybrid"], dtype=np.float64),
        }

    def to_metadata(self) -> dict[str, object]:
        """The fitted scalars and settings as JSON-compatible data."""
        return {
            # The coreset algorithm is a fit-time switch (the benchmark's); stored versions keep the
            # settings they always had, so their metadata (and checksums) do not change. The scoring
            # is stored in the calibrator's state (states without it are the paper's), and so is the
            # threshold rule (states without it: the 99.5% quantile).
            "params": {key: value for key, value in self.get_params().items() if key not in _CALIBRATOR_PARAMS},
            "grid": list(self.grid_),
            "map_size": self.map_size_,
            "n_train_images": self.n_train_images_,
            "route_threshold": self.route_threshold_,
            "unknown_threshold": _finite_or_none(self.unknown_threshold_),
            "far_threshold": _finite_or_none(self.far_threshold_),
            "calibrator": self.calibrator_.get_state(),
            "coreset_radius": self.coreset_radius_,
            "fit_seconds": self.fit_seconds_,
            # only for fit-geometry versions: a squash version's metadata (and checksum) do not change
            **({"fitted_on_contents": True} if self.fitted_on_contents_ else {}),
            **({"tile_overlap": self.tile_overlap_} if self.tile_overlap_ is not None else {}),
        }

    @classmethod
    def from_parts(cls, arrays: dict[str, np.ndarray], metadata: dict[str, object]) -> CategoryModel:
        """Rebuild a fitted model from :meth:`to_arrays` and :meth:`to_metadata` output."""
        params = dict(metadata["params"])  # type: ignore[call-overload]
        model = cls(**params)
        model.bank_ = np.asarray(arrays["bank"])
        model.bank_image_ids_ = np.asarray(arrays["bank_image_ids"])
        model.prototypes_ = np.asarray(arrays["prototypes"], dtype=np.float32)
        model.calibration_scores_ = {
            kind: np.asarray(arrays[f"calibration_{kind}"]) for kind in ("base", "struct", "hybrid")
        }
        grid = list(metadata["grid"])  # type: ignore[call-overload]
        model.grid_ = (int(grid[0]), int(grid[1]))
        model.map_size_ = int(metadata["map_size"])  # type: ignore[call-overload]
        model.n_train_images_ = int(metadata["n_train_images"])  # type: ignore[call-overload]
        model.route_threshold_ = float(metadata["route_threshold"])  # type: ignore[arg-type]
        unknown_threshold = metadata.get("unknown_threshold")  # absent before revision 0003
        model.unknown_threshold_ = float("nan") if unknown_threshold is None else float(unknown_threshold)  # type: ignore[arg-type]
        far_threshold = metadata.get("far_threshold")
        model.far_threshold_ = float("nan") if far_threshold is None else float(far_threshold)  # type: ignore[arg-type]
        model.calibrator_ = StructCoreCalibrator.from_state(dict(metadata["calibrator"]))  # type: ignore[call-overload]
        model.scoring = model.calibrator_.scoring
        model.threshold_rule = model.calibrator_.threshold_rule
        model.threshold_frr = model.calibrator_.frr
        model.coreset_radius_ = float(metadata.get("coreset_radius", float("nan")))  # type: ignore[arg-type]
        model.fit_seconds_ = float(metadata.get("fit_seconds", float("nan")))  # type: ignore[arg-type]
        model.fitted_on_contents_ = bool(metadata.get("fitted_on_contents", False))
        tile_overlap = metadata.get("tile_overlap")
        model.tile_overlap_ = None if tile_overlap is None else int(tile_overlap)  # type: ignore[call-overload]
        model._knn = None
        return model

    @property
    def thresholds(self) -> dict[str, float]:
        """Decision thresholds (from the train-good scores by the threshold rule) for base / struct / hybrid."""
        return dict(self.calibrator_.thresholds_)

    @property
    def threshold_record(self) -> dict[str, object]:
        """How the thresholds were chosen (``calibration["threshold_rule"]`` of the stored version)."""
        return dict(self.calibrator_.threshold_rule_)


#: Settings stored in the calibrator's state rather than in ``params`` (or not stored: a fit-time switch).
_CALIBRATOR_PARAMS = frozenset({"coreset_method", "scoring", "threshold_rule", "threshold_frr"})


def _statistics_of(maps: list[np.ndarray], top_ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """Base scores (n,) and descriptors (n, 3) of maps of different shapes."""
    if not maps:
        return np.empty(0, dtype=np.float64), np.empty((0, 3), dtype=np.float64)
    base = np.concatenate([base_scores(one[None]) for one in maps])
    return base, np.concatenate([structural_descriptor(one[None], top_ratio) for one in maps])


def _per_image(score: Callable[[np.ndarray], np.ndarray], patch_vectors: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """``score`` of each image's valid patch vectors, one image at a time (their counts differ)."""
    found = [score(patch_vectors[i : i + 1, valid[i]]) for i in range(len(patch_vectors))]
    return np.concatenate(found) if found else np.empty(0, dtype=np.float64)


def _finite_or_none(value: float) -> float | None:
    """``value``, or ``None`` when it is not finite (JSON has no NaN)."""
    return float(value) if math.isfinite(value) else None


def embed_images(
    extractor: FeatureExtractor,
    sources: Sequence[ImageSource],
    progress: ProgressCallback | None = None,
    *,
    category: str = "",
) -> np.ndarray:
    """Stream ``sources`` through the extractor into one (n_images, P, D) float32 array.

    The output is allocated once; besides it, memory holds one batch of backbone activations.
    ``progress`` receives ``Progress("embed", done, total, category)`` after each batch.
    """
    return embed_images_sized(extractor, sources, progress, category=category)[0]


def embed_images_sized(
    extractor: FeatureExtractor,
    sources: Sequence[ImageSource],
    progress: ProgressCallback | None = None,
    *,
    category: str = "",
) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """:func:`embed_images`, and each image's original (width, height).

    ``tile``: every image's rows have the slots of the largest tile count among ``sources``.
    """
    grid = extractor.grid_shape()
    slots = extractor.tile_slots([source_size(source) for source in sources]) if extractor.geometry.tiles else 1
    output = np.empty((len(sources), slots * grid[0] * grid[1], extractor.dim), dtype=np.float32)
    sizes: list[tuple[int, int]] = []
    for start, batch, batch_sizes in extractor.iter_embeddings_sized(sources, slots=slots):
        output[start : start + len(batch)] = batch
        sizes.extend(batch_sizes)
        if progress is not None:
            progress(Progress("embed", start + len(batch), len(sources), category))
    return output, sizes


def fit_category(
    extractor: FeatureExtractor,
    sources: Sequence[ImageSource],
    model: CategoryModel | None = None,
    progress: ProgressCallback | None = None,
    *,
    category: str = "",
    keep_patches: bool = False,
) -> CategoryModel:
    """Embed train-good images and fit a new :class:`CategoryModel` on them: the one fit pipeline.

    ``keep_patches``: also keep the train images' patch vectors as float16 in ``train_patches_``
    (n_images, P, D), what :meth:`CategoryModel.updated` needs later (``registry update``).

    ``registry add-category``, the Ray tasks of ``add-categories`` and ``registry eval`` all fit
    through here. ``model`` gives the settings and is not modified (a clone is fitted).
    ``progress`` receives ``Progress("embed", done, total)`` per embedded batch, then
    ``Progress("fit")`` and the stages of :meth:`CategoryModel.fit`, each with ``category``.
    """
    fitted = CategoryModel(**(model or CategoryModel()).get_params())  # type: ignore[arg-type]
    notify = progress or quiet
    notify(Progress("embed", 0, len(sources), category))
    patch_vectors, sizes = embed_images_sized(extractor, sources, notify, category=category)
    geometry = extractor.geometry
    contents = extractor.contents(sizes) if geometry.masks_content else None
    notify(Progress("fit", category=category))

    def stage(event: Progress) -> None:
        notify(dataclasses.replace(event, category=category))

    fitted.fit(
        patch_vectors,
        extractor.grid_shape(),
        geometry.crop,
        progress=stage,
        contents=contents,
        tile_overlap=geometry.tile_overlap if geometry.tiles else None,
    )
    if keep_patches:
        fitted.train_patches_ = patch_vectors.astype(np.float16)
    return fitted


__all__ = [
    "CALIBRATION_MODES",
    "DEFAULT_CALIBRATION",
    "CategoryModel",
    "CategoryPrediction",
    "embed_images",
    "embed_images_sized",
    "fit_category",
    "l2_normalize",
]
