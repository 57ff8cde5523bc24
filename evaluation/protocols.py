"""Evaluation protocols: ``separate``, ``muad``, ``continual`` and ``open-set`` (method.md "Evaluation protocols").

All protocols share one pass over the test images (:func:`collect`): each test image is
embedded once, and its patch vectors are scored by the store's
:class:`~registry.detector.Detector` (:meth:`~registry.detector.Detector.score_vectors`, the
code ``registry infer`` runs after the backbone) once per view the requested protocols need. A
view is the Detector forced to the image's own category (``separate``), the Detector over every
evaluated category (``muad``), or the same Detector restricted to a subset of them
(:meth:`~registry.detector.Detector.restricted_to`: the categories seen after a ``continual``
step, or all but the one ``open-set`` leaves out). So every score, threshold, ``anomalous``,
``unknown`` and ``unknown_score`` in a report is the record ``registry infer`` gives for that
image with those categories registered; nothing is recomputed here. A memo per batch makes the
kNN search of one image against one category run once whatever the number of views. Records
are kept per image and view; anomaly maps go to a :class:`MapCache` (memory up to a budget, then
a temporary file), so patch vectors (P x 512 float32, about 5 MB per image at a 49 x 49 grid)
are never held beyond one batch.

* ``separate``: category known; each image scored against its own category.
* ``muad``: every category fitted into one store; each image routed among all evaluated
  categories (category unknown) and scored by the chosen one; per-category metrics, their plain
  mean, routing accuracy and the confusion matrix.
* ``continual``: categories added step by step in a given order; after each step every seen
  category is evaluated with routing among the categories seen so far (a category's router
  column does not depend on the others, so this equals re-running the test set on a registry
  holding the seen categories). Reports the step x category matrix, the final mean and the
  forgetting measure FM.
* ``open-set``: see :mod:`evaluation.open_set`.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from evaluation.datasets import CategoryData, Dataset
from evaluation.metrics import (
    image_metrics,
    pixel_metrics,
    pixel_metrics_at_sizes,
    recall_by_defect,
    region_scores,
)
from evaluation.store import CategoryStore, Scorer
from registry.detector import ImageScore, MapCallback, PredictionRecord
from structcore.preprocess import Preprocessing, displayed_size, load_mask, load_mask_at_size
from structcore.progress import Progress, ProgressCallback, quiet
from structcore.regions import map_at_original_size

__all__ = [
    "KINDS",
    "MATRIX_METRICS",
    "PROTOCOLS",
    "CategoryRun",
    "Collected",
    "MapCache",
    "Progress",
    "ProgressCallback",
    "category_metrics",
    "collect",
    "continual_view",
    "crossover_counts",
    "evaluate_continual",
    "evaluate_muad",
    "evaluate_separate",
    "fit_missing",
    "forgetting",
    "image_records",
    "mean_metrics",
    "normalize_order",
]

#: Protocol names.
PROTOCOLS = ("separate", "muad", "continual", "open-set")
#: Image score kinds, in the order of the score columns.
KINDS = ("base", "struct", "hybrid")
#: Metrics tracked in the continual step x category matrices.
MATRIX_METRICS = (
    "image_auroc_hybrid",
    "image_auroc_base",
    "image_auroc_struct",
    "image_ap_hybrid",
    "pixel_auroc",
    "pixel_ap",
    "aupro",
    "routing_accuracy",
)
_NAN = float("nan")


# ------------------------------------------------------------------------------------ map cache
class MapCache:
    """Anomaly maps by key, in memory up to ``memory_bytes``, then appended to a temporary file.

    Args:
        memory_bytes: bytes of maps held in memory before spilling to disk.
        directory: where the spill file goes (default: the system's temporary folder).
    """

    def __init__(self, memory_bytes: int = 1 << 30, directory: str | Path | None = None):
        self.memory_bytes = int(memory_bytes)
        self._directory = None if directory is None else Path(directory)
        self._memory: dict[tuple[Any, ...], np.ndarray] = {}
        self._disk: dict[tuple[Any, ...], tuple[int, tuple[int, ...]]] = {}
        self._held = 0
        self._file: Any = None
        self._path: Path | None = None
        self._offset = 0

    def __len__(self) -> int:
        return len(self._memory) + len(self._disk)

    def __contains__(self, key: object) -> bool:
        return key in self._memory or key in self._disk

    @property
    def spilled(self) -> int:
        """Maps written to disk."""
        return len(self._disk)

    def put(self, key: tuple[Any, ...], array: np.ndarray) -> None:
        """Store ``array`` (as float32) under ``key`` (replacing nothing: first write wins)."""
        if key in self:
            return
        data = np.ascontiguousarray(array, dtype=np.float32)
        if self._held + data.nbytes <= self.memory_bytes:
            self._memory[key] = data.copy()
            self._held += data.nbytes
            return
        if self._file is None:
            if self._directory is not None:
                self._directory.mkdir(parents=True, exist_ok=True)
            handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 - kept open for the cache's life
                prefix="eval-maps-", suffix=".f32", dir=self._directory, delete=False
            )
            self._file, self._path = handle, Path(handle.name)
        self._file.write(data.tobytes())
        self._disk[key] = (self._offset, data.shape)
        self._offset += data.nbytes

    def get(self, key: tuple[Any, ...]) -> np.ndarray:
        """The map stored under ``key``."""
        if key in self._memory:
            return self._memory[key]
        offset, shape = self._disk[key]
        self._file.flush()
        count = int(np.prod(shape))
        with self._path.open("rb") as handle:  # type: ignore[union-attr]
            handle.seek(offset)
            return np.fromfile(handle, dtype=np.float32, count=count).reshape(shape)

    def close(self) -> None:
        """Drop everything and delete the spill file."""
        self._memory.clear()
        self._disk.clear()
        self._held = 0
        if self._file is not None:
            self._file.close()
            if self._path is not None:
                self._path.unlink(missing_ok=True)
            self._file, self._path = None, None

    def __enter__(self) -> MapCache:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


# ------------------------------------------------------------------------------------ orders
def normalize_order(order: Sequence[str | Sequence[str]] | None, categories: Sequence[str]) -> list[list[str]]:
    """Continual steps from an order: names (one per step) or lists of names (one list per step).

    ``None`` gives the alphabetical order, one category per step.

    Raises:
        ValueError: unknown or repeated categories, or an empty step.
    """
    if order is None:
        return [[name] for name in sorted(categories)]
    steps = [[item] if isinstance(item, str) else list(item) for item in order]
    flat = [name for step in steps for name in step]
    if any(not step for step in steps):
        msg = "continual order has an empty step"
        raise ValueError(msg)
    repeated = sorted({name for name in flat if flat.count(name) > 1})
    if repeated:
        msg = f"continual order repeats {', '.join(repeated)}"
        raise ValueError(msg)
    unknown = [name for name in flat if name not in categories]
    if unknown:
        msg = f"continual order names categories not in the dataset: {', '.join(unknown)}"
        raise ValueError(msg)
    return steps


# ------------------------------------------------------------------------------------ fitting
def fit_missing(
    store: CategoryStore,
    dataset: Dataset,
    names: Sequence[str],
    progress: ProgressCallback = quiet,
    refit: bool = False,
) -> dict[str, dict[str, Any]]:
    """Fit every category of ``names`` the store does not hold yet, in order.

    Returns:
        Per category: ``{"reused": bool, "seconds": float, "n_train": int}``.
    """
    report: dict[str, dict[str, Any]] = {}
    for name in names:
        data = dataset.categories[name]
        if store.has(name) and not refit:
            progress(Progress("reuse", len(data.train), len(data.train), name))
            report[name] = {"reused": True, "seconds": 0.0, "n_train": len(data.train)}
            continue
        started = time.perf_counter()
        progress(Progress("fit", 0, len(data.train), name))

        def on_fit(event: Progress, name: str = name) -> None:
            if event.stage == "embed":  # the evaluation's "fit" stage counts the embedded train images
                progress(Progress("fit", event.done, event.total, name))

        store.add(name, list(data.train), on_fit)
        report[name] = {"reused": False, "seconds": time.perf_counter() - started, "n_train": len(data.train)}
    return report


# ------------------------------------------------------------------------------------ collect
#: The view of the ``separate`` protocol (each image forced to its own category) and of ``muad``.
SEPARATE = "separate"
MUAD = "muad"


def continual_view(step: int) -> str:
    """The view of continual step ``step``: routing among the categories seen after it."""
    return f"continual:{step}"


@dataclass
class CategoryRun:
    """Everything the single pass kept for one category's test images.

    Attributes:
        data: the category's files.
        records: view (:data:`SEPARATE`, :data:`MUAD`, :func:`continual_view`) -> one
            :class:`~registry.detector.PredictionRecord` per test image, as ``registry infer``
            gives it with that view's categories registered.
        scores: ``{own category: (n, 3)}`` base / struct / hybrid scores of the separate view.
        unknown_scores: left-out category -> (n,) ``unknown_score`` with it left out (``open-set``).
        unknown: left-out category -> (n,) ``unknown`` flags with it left out (``open-set``).
        timings: seconds spent embedding and scoring.
    """

    data: CategoryData
    records: dict[str, list[PredictionRecord]] = field(default_factory=dict)
    scores: dict[str, np.ndarray] = field(default_factory=dict)
    unknown_scores: dict[str, np.ndarray] = field(default_factory=dict)
    unknown: dict[str, np.ndarray] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class Collected:
    """Result of :func:`collect`: per-category runs, maps, models' thresholds and settings, versions."""

    names: list[str]
    runs: dict[str, CategoryRun]
    maps: MapCache
    thresholds: dict[str, dict[str, float]]
    calibration: dict[str, dict[str, np.ndarray]]
    params: dict[str, dict[str, Any]]
    geometry: Preprocessing
    steps: list[list[str]]
    versions: dict[str, int] = field(default_factory=dict)

    def threshold_matrix(self, models: Sequence[str]) -> np.ndarray:
        """(n, 3) thresholds of the given model per image."""
        return np.asarray([[self.thresholds[m][k] for k in KINDS] for m in models], dtype=np.float64)


def collect(
    dataset: Dataset,
    store: CategoryStore,
    names: Sequence[str],
    protocols: Iterable[str],
    steps: Sequence[Sequence[str]] | None = None,
    progress: ProgressCallback = quiet,
    maps: MapCache | None = None,
) -> Collected:
    """Embed every test image of ``names`` once; score it through the store's Detector in every view needed.

    Args:
        dataset: the dataset (its categories must be fitted in ``store``).
        store: the category store.
        names: evaluated categories (route targets are limited to these).
        protocols: protocols to prepare for (subset of :data:`PROTOCOLS`).
        steps: continual steps (only with ``continual``); default one category per step.
        progress: progress callback.
        maps: map cache (a fresh one in memory by default).
    """
    wanted = set(protocols)
    unknown = wanted - set(PROTOCOLS)
    if unknown:
        msg = f"unknown protocols: {', '.join(sorted(unknown))}; choose from {', '.join(PROTOCOLS)}"
        raise ValueError(msg)
    names = list(names)
    cont_steps = [list(s) for s in (steps or [[n] for n in names])]
    detector = store.detector(names)
    views: dict[str, Scorer] = {}
    if "muad" in wanted:
        views[MUAD] = detector
    step_of = {name: t for t, step in enumerate(cont_steps) for name in step}
    if "continual" in wanted:
        seen: list[str] = []
        for t, step in enumerate(cont_steps):
            seen.extend(step)
            views[continual_view(t)] = detector.restricted_to(list(seen))
    left_out: dict[str, Scorer] = {}
    if "open-set" in wanted and len(names) > 1:
        left_out = {name: detector.restricted_to([n for n in names if n != name]) for name in names}
    cache = maps if maps is not None else MapCache()
    extractor = detector.extractor
    runs: dict[str, CategoryRun] = {}
    for name in names:
        data = dataset.categories[name]
        n = len(data.test)
        paths = [str(path) for path in data.test]
        own_views = {
            view: scorer
            for view, scorer in views.items()
            if not view.startswith("continual:") or int(view.split(":")[1]) >= step_of.get(name, len(cont_steps))
        }
        run = CategoryRun(data=data, records={SEPARATE: [], **{view: [] for view in own_views}})
        timings = {"embed": 0.0, "score": 0.0}
        progress(Progress("test", 0, n, name))
        iterator = iter(extractor.iter_embeddings(list(data.test)))
        flags: dict[str, list[np.ndarray]] = {c: [] for c in left_out}
        ratios: dict[str, list[np.ndarray]] = {c: [] for c in left_out}
        while True:
            started = time.perf_counter()
            try:
                start, vectors = next(iterator)
            except StopIteration:
                break
            timings["embed"] += time.perf_counter() - started
            started = time.perf_counter()
            batch = paths[start : start + len(vectors)]
            memo: dict[tuple[str, str], ImageScore] = {}
            keep_map = _map_keeper(cache, name, start)
            sizes = [_own_size(path) for path in batch]  # regions at each image's own size, as infer
            # only when some are known: a Scorer written before sizes existed keeps working on vectors alone
            own: dict[str, Any] = {"sizes": sizes} if any(size is not None for size in sizes) else {}
            run.records[SEPARATE] += detector.score_vectors(vectors, batch, name, on_map=keep_map, memo=memo, **own)
            for view, scorer in own_views.items():
                run.records[view] += scorer.score_vectors(vectors, batch, on_map=keep_map, memo=memo, **own)
            for other, scorer in left_out.items():
                routing = scorer.route(vectors, **own)
                ratios[other].append(routing.unknown_scores)
                flags[other].append(routing.unknown)
            timings["score"] += time.perf_counter() - started
            progress(Progress("test", start + len(vectors), n, name))
        for view, records in run.records.items():
            failed = [r for r in records if r["error"] is not None]
            if failed:
                msg = f"{name}: {len(failed)} test images could not be scored ({view}): {failed[0]['error']}"
                raise RuntimeError(msg)
        separate = run.records[SEPARATE]
        run.scores[name] = np.asarray(
            [[r["score_base"], r["score_struct"], r["score_hybrid"]] for r in separate], dtype=np.float64
        ).reshape(n, 3)
        run.unknown_scores = {c: _joined(parts, n) for c, parts in ratios.items()}
        run.unknown = {c: _joined(parts, n).astype(bool) for c, parts in flags.items()}
        run.timings = timings
        runs[name] = run
    models = {name: detector.model(name) for name in names}
    return Collected(
        names=names,
        runs=runs,
        maps=cache,
        thresholds={name: {k: float(v) for k, v in models[name].thresholds.items()} for name in names},
        calibration={
            name: {k: np.asarray(v, dtype=np.float64) for k, v in models[name].calibration_scores_.items()}
            for name in names
        },
        params={name: dict(models[name].get_params()) if hasattr(models[name], "get_params") else {} for name in names},
        geometry=extractor.geometry,
        steps=cont_steps,
        versions=dict(detector.versions),
    )


def image_records(collected: Collected) -> Iterator[dict[str, Any]]:
    """Every test image's record in every view, as ``records.jsonl`` holds them (``view`` first).

    Views: ``separate``, ``muad``, ``continual:<step>`` (full :class:`~registry.detector.PredictionRecord`
    fields: what ``registry infer`` reports with that view's categories registered) and
    ``open-set:<left-out category>`` (``path``, ``unknown_score`` and ``unknown`` with that category
    left out of the registry).
    """
    for name in collected.names:
        run = collected.runs[name]
        for view, records in run.records.items():
            for record in records:
                yield {"view": view, "true_category": name, **record}
        for left_out, scores in run.unknown_scores.items():
            for path, score, flag in zip(run.data.test, scores, run.unknown[left_out], strict=True):
                yield {
                    "view": f"open-set:{left_out}",
                    "true_category": name,
                    "path": str(path),
                    "unknown_score": float(score),
                    "unknown": bool(flag),
                }


def _own_size(path: str | Path) -> tuple[int, int] | None:
    """The image's own (width, height) from its header; ``None`` when unreadable (regions then stay on the map)."""
    try:
        return displayed_size(path)
    except (OSError, ValueError, SyntaxError):
        return None


def _map_keeper(cache: MapCache, name: str, start: int) -> MapCallback:
    """Keeps each scored image's map under (its category, the scoring category, its test index)."""

    def keep(row: int, record: PredictionRecord, anomaly_map: np.ndarray, _threshold: float) -> None:
        cache.put((name, str(record["category"]), start + row), anomaly_map)

    return keep


def _joined(parts: list[np.ndarray], n: int) -> np.ndarray:
    return np.concatenate(parts) if parts else np.empty(n)


# ------------------------------------------------------------------------------------ metrics
def crossover_counts(
    labels: np.ndarray, base: np.ndarray, hybrid: np.ndarray, t_base: np.ndarray, t_hybrid: np.ndarray
) -> dict[str, int]:
    """Decisions that differ between the base and the hybrid score (paper's Figure 2).

    ``fp_fixed``: good images rejected by base, accepted by hybrid; ``fn_recovered``: anomalous
    images accepted by base, rejected by hybrid; ``fp_introduced`` / ``fn_introduced`` the reverse.
    """
    good = labels == 0
    base_reject = base > t_base
    hyb_reject = hybrid > t_hybrid
    return {
        "fp_fixed": int(np.count_nonzero(good & base_reject & ~hyb_reject)),
        "fn_recovered": int(np.count_nonzero(~good & ~base_reject & hyb_reject)),
        "fp_introduced": int(np.count_nonzero(good & ~base_reject & hyb_reject)),
        "fn_introduced": int(np.count_nonzero(~good & base_reject & ~hyb_reject)),
    }


def _rate(flags: np.ndarray) -> float:
    return float(np.mean(flags)) if flags.size else _NAN


def load_masks(data: CategoryData, geometry: Preprocessing) -> tuple[np.ndarray, np.ndarray]:
    """Masks of the test images after the preprocessing geometry, and which images are usable.

    Good images get an empty mask; anomalous images without a mask file are not usable for
    pixel metrics. Returns ``(masks (n_usable, crop, crop) bool, usable indices)``.
    """
    usable = [i for i, (label, mask) in enumerate(zip(data.labels, data.masks, strict=True)) if label == 0 or mask]
    out = np.zeros((len(usable), geometry.crop, geometry.crop), dtype=bool)
    for k, i in enumerate(usable):
        path = data.masks[i]
        if path is not None:
            out[k] = load_mask(path, geometry)
    return out, np.asarray(usable, dtype=np.int64)


def _content_pixel_metrics(
    collected: Collected, name: str, routed: Sequence[str], max_pixels: int | None
) -> dict[str, float]:
    """Pixel metrics at the model's scale for the ``fit`` geometry: each map with its mask on the image's content."""
    run = collected.runs[name]
    masks: list[np.ndarray] = []
    maps: list[np.ndarray] = []
    for i, (label, mask_path) in enumerate(zip(run.data.labels, run.data.masks, strict=True)):
        if label != 0 and not mask_path:
            continue
        model_map = np.asarray(collected.maps.get((name, routed[i], int(i))))
        maps.append(model_map)
        masks.append(load_mask(mask_path, collected.geometry) if mask_path else np.zeros(model_map.shape, dtype=bool))
    return dict(pixel_metrics_at_sizes(masks, maps, max_pixels=max_pixels))


def category_metrics(
    collected: Collected,
    name: str,
    view: str,
    pixel: bool = True,
    pixel_cache: dict[tuple[Any, ...], dict[str, float]] | None = None,
    max_pixels: int | None = None,
) -> dict[str, Any]:
    """All figures of one category from its test images' records in ``view``.

    Scores, the hybrid threshold, ``anomalous`` and ``unknown`` come from the records (the
    Detector's decisions); the base and struct thresholds (rates of those scores alone, not
    product decisions) from the scoring category's calibration.

    Args:
        collected: the single pass.
        name: the category.
        view: :data:`SEPARATE`, :data:`MUAD` or a :func:`continual_view`.
        pixel: compute pixel metrics (needs masks).
        pixel_cache: pixel metrics by ``(name, routed...)``, reused across continual steps.
        max_pixels: cap on pixels for pixel AUROC / AP / F1 (AUPRO stays exact).

    Returns:
        Flat dict: ``n_test``, ``n_good``, ``n_anomalous``; ``image_{auroc,ap,f1_max}_{kind}``;
        ``frr_{kind}`` (test-good rejected at the routed model's shipped threshold) and
        ``tpr_{kind}`` (anomalous rejected: the recall); ``recall_at_frr_1`` / ``recall_at_frr_5``
        (the best hybrid recall at 1% / 5% FRR), ``best_recall_hybrid`` (the best at the shipped
        FRR) and ``efficiency_hybrid`` (shipped recall / that best); ``pixel_{auroc,ap,f1_max}`` and ``aupro``;
        ``routing_accuracy`` and ``unknown_rate`` (also split into ``unknown_rate_good`` and
        ``unknown_rate_anomalous``); cross-over counts (``fp_fixed``, ...).
    """
    run = collected.runs[name]
    records = run.records[view]
    labels = np.asarray(run.data.labels, dtype=np.int64)
    n = len(labels)
    routed = [str(r["category"]) for r in records]
    scores = np.asarray([[r["score_base"], r["score_struct"], r["score_hybrid"]] for r in records], dtype=np.float64)
    scores = scores.reshape(n, 3)
    thresholds = collected.threshold_matrix(routed)
    thresholds[:, 2] = [float(r["threshold"]) for r in records]  # type: ignore[arg-type]
    anomalous = np.asarray([bool(r["anomalous"]) for r in records], dtype=bool)
    out: dict[str, Any] = {"n_test": n, "n_good": int(np.sum(labels == 0)), "n_anomalous": int(np.sum(labels == 1))}
    good = labels == 0
    for k, kind in enumerate(KINDS):
        for metric, value in image_metrics(labels, scores[:, k]).items():
            out[f"image_{metric}_{kind}"] = value
        rejected = anomalous if kind == "hybrid" else scores[:, k] > thresholds[:, k]
        out[f"frr_{kind}"] = _rate(rejected[good])
        out[f"tpr_{kind}"] = _rate(rejected[~good])
    out.update(_decision_metrics(scores[:, 2], good, out["frr_hybrid"], out["tpr_hybrid"]))
    out.update({"pixel_auroc": _NAN, "pixel_ap": _NAN, "pixel_f1_max": _NAN, "aupro": _NAN})
    out.update(dict.fromkeys(ORIGINAL_SIZE_METRICS, _NAN))
    for defect, recall in recall_by_defect(run.data.defects, anomalous).items():
        out[f"{DEFECT_RECALL_PREFIX}{defect}"] = recall  # flat numbers: means and comparisons work on them
    if pixel and run.data.has_masks:
        key = (name, *routed)
        cached = None if pixel_cache is None else pixel_cache.get(key)
        if cached is None:
            if collected.geometry.masks_content:  # each map (and mask) covers its image's content: sizes differ
                found = _content_pixel_metrics(collected, name, routed, max_pixels)
            else:
                masks, usable = load_masks(run.data, collected.geometry)
                maps = np.stack([collected.maps.get((name, routed[i], int(i))) for i in usable])
                found = pixel_metrics(masks, maps, max_pixels=max_pixels)
                del maps, masks
            cached = {f"pixel_{m}" if m != "aupro" else m: float(v) for m, v in found.items()}
            cached.update(original_size_metrics(collected, name, routed, max_pixels=max_pixels))
            if pixel_cache is not None:
                pixel_cache[key] = cached
        out.update(cached)
    routed_view = view != SEPARATE
    flags = np.asarray([bool(r["unknown"]) for r in records], dtype=bool)
    out["routing_accuracy"] = _rate(np.asarray([m == name for m in routed])) if routed_view else _NAN
    out["unknown_rate"] = _rate(flags) if routed_view else _NAN
    out["unknown_rate_good"] = _rate(flags[good]) if routed_view else _NAN
    out["unknown_rate_anomalous"] = _rate(flags[~good]) if routed_view else _NAN
    out.update(crossover_counts(labels, scores[:, 0], scores[:, 2], thresholds[:, 0], thresholds[:, 2]))
    return out


#: Prefix of the per-defect-type recall figures (``defect_recall:crack``: share of crack images flagged
#: ``anomalous`` at the shipped threshold).
DEFECT_RECALL_PREFIX = "defect_recall:"
#: The figures of :func:`original_size_metrics` (``nan`` where a category has no masks).
ORIGINAL_SIZE_METRICS = (
    "pixel_auroc_original",
    "pixel_ap_original",
    "pixel_f1_max_original",
    "aupro_original",
    "region_hit_rate",
    "false_regions_per_good",
)


def original_size_metrics(
    collected: Collected, name: str, routed: Sequence[str], max_pixels: int | None = None
) -> dict[str, float]:
    """Pixel metrics and region scores of ``name``'s test images at each image's own size.

    Each kept map is brought back to its image's size the way the Detector does for a record's
    ``regions`` (:func:`structcore.regions.map_at_original_size`); masks are read at that size.
    Predicted regions use the map threshold of the category that scored the image.
    """
    run = collected.runs[name]
    geometry = collected.geometry
    masks: list[np.ndarray] = []
    maps: list[np.ndarray] = []
    thresholds: list[float] = []
    labels: list[int] = []
    for i, (label, mask_path) in enumerate(zip(run.data.labels, run.data.masks, strict=True)):
        if label != 0 and not mask_path:
            continue
        labels.append(int(label))
        size = _own_size(run.data.test[i])
        if size is None:  # the image file is gone: no figure at its own size
            return {}
        model_map = collected.maps.get((name, routed[i], int(i)))
        maps.append(map_at_original_size(model_map, size, geometry.resize, geometry.crop))
        masks.append(load_mask_at_size(mask_path, size) if mask_path else np.zeros((size[1], size[0]), dtype=bool))
        thresholds.append(collected.thresholds[routed[i]]["base"])
    found = pixel_metrics_at_sizes(masks, maps, max_pixels=max_pixels)
    out = {f"pixel_{m}_original" if m != "aupro" else "aupro_original": float(v) for m, v in found.items()}
    regions = region_scores(masks, maps, thresholds, labels)
    out["region_hit_rate"] = regions["region_hit_rate"]
    out["false_regions_per_good"] = regions["false_regions_per_good"]
    return out


def routed_categories(collected: Collected, name: str, view: str) -> list[str]:
    """The category that scored each test image of ``name`` in ``view``."""
    return [str(r["category"]) for r in collected.runs[name].records[view]]


def _decision_metrics(hybrid: np.ndarray, good: np.ndarray, frr: float, recall: float) -> dict[str, float]:
    """What a line runs on, from the hybrid scores: recall at 1% and 5% FRR (the best any threshold
    reaches there), the best recall at the shipped FRR and the calibration efficiency (shipped
    recall / that best recall)."""
    from structcore.thresholds import best_recall_at

    good_scores, bad_scores = hybrid[good], hybrid[~good]
    if not good_scores.size or not bad_scores.size or not math.isfinite(frr):
        return dict.fromkeys(("recall_at_frr_1", "recall_at_frr_5", "best_recall_hybrid", "efficiency_hybrid"), _NAN)
    best = best_recall_at(good_scores, bad_scores, frr)
    return {
        "recall_at_frr_1": best_recall_at(good_scores, bad_scores, 0.01),
        "recall_at_frr_5": best_recall_at(good_scores, bad_scores, 0.05),
        "best_recall_hybrid": best,
        "efficiency_hybrid": recall / best if best > 0 else _NAN,
    }


def mean_metrics(per_category: dict[str, dict[str, Any]]) -> dict[str, float]:
    """Plain (unweighted) mean over categories of every numeric figure; ``nan`` entries are skipped."""
    keys: list[str] = []
    for metrics in per_category.values():
        keys.extend(k for k in metrics if k not in keys)
    out: dict[str, float] = {}
    for key in keys:
        values = np.asarray(
            [float(m[key]) for m in per_category.values() if isinstance(m.get(key), int | float)], dtype=np.float64
        )
        finite = values[np.isfinite(values)]
        out[key] = float(finite.mean()) if finite.size else _NAN
    return out


def evaluate_separate(
    collected: Collected,
    progress: ProgressCallback = quiet,
    pixel: bool = True,
    max_pixels: int | None = None,
    pixel_cache: dict[tuple[Any, ...], dict[str, float]] | None = None,
) -> dict[str, Any]:
    """Category known: every image scored against its own category."""
    per: dict[str, dict[str, Any]] = {}
    for i, name in enumerate(collected.names):
        per[name] = category_metrics(
            collected, name, SEPARATE, pixel=pixel, pixel_cache=pixel_cache, max_pixels=max_pixels
        )
        progress(Progress("metrics", i + 1, len(collected.names), name, "separate"))
    return {"per_category": per, "mean": mean_metrics(per)}


def evaluate_muad(
    collected: Collected,
    progress: ProgressCallback = quiet,
    pixel: bool = True,
    max_pixels: int | None = None,
    pixel_cache: dict[tuple[Any, ...], dict[str, float]] | None = None,
) -> dict[str, Any]:
    """Unified: each image routed among all evaluated categories, scored by the chosen one.

    Returns:
        ``per_category`` and ``mean`` metrics, plus ``routing``: overall ``accuracy`` (over
        images), ``mean_accuracy`` (over categories), ``unknown_rate`` and ``confusion``
        (``labels`` and ``matrix[true][routed]`` counts).
    """
    names = collected.names
    per: dict[str, dict[str, Any]] = {}
    confusion = np.zeros((len(names), len(names)), dtype=np.int64)
    unknown = 0
    total = 0
    for i, name in enumerate(names):
        per[name] = category_metrics(collected, name, MUAD, pixel=pixel, pixel_cache=pixel_cache, max_pixels=max_pixels)
        records = collected.runs[name].records[MUAD]
        for record in records:
            confusion[i, names.index(str(record["category"]))] += 1
        unknown += sum(bool(record["unknown"]) for record in records)
        total += len(records)
        progress(Progress("metrics", i + 1, len(names), name, "muad"))
    accuracy = float(np.trace(confusion) / confusion.sum()) if confusion.sum() else _NAN
    return {
        "per_category": per,
        "mean": mean_metrics(per),
        "routing": {
            "accuracy": accuracy,
            "mean_accuracy": mean_metrics(per)["routing_accuracy"],
            "unknown_rate": unknown / total if total else _NAN,
            "confusion": {"labels": list(names), "matrix": confusion.tolist()},
        },
    }


def forgetting(matrix: np.ndarray, added_at: Sequence[int]) -> float:
    """Forgetting measure FM (GCR's definition), for steps that may add several categories.

    FM = mean over the categories added before the final step of (best value from the step the
    category was added to the final step) - (value at the final step). Categories whose final
    value is ``nan`` are left out; ``nan`` when no term remains. With one category per step this
    equals :func:`evaluation.metrics.forgetting_measure`.

    Args:
        matrix: (steps, categories) values, ``nan`` before a category is added.
        added_at: step index at which each category (column) was added.
    """
    a = np.asarray(matrix, dtype=np.float64)
    last = a.shape[0] - 1
    terms = []
    for j, step in enumerate(added_at):
        if step >= last:
            continue
        column = a[step:, j]
        finite = column[np.isfinite(column)]
        if finite.size == 0 or not math.isfinite(a[last, j]):
            continue
        terms.append(float(finite.max() - a[last, j]))
    return float(np.mean(terms)) if terms else _NAN


def evaluate_continual(
    collected: Collected,
    progress: ProgressCallback = quiet,
    pixel: bool = True,
    max_pixels: int | None = None,
    pixel_cache: dict[tuple[Any, ...], dict[str, float]] | None = None,
    matrix_metrics: Sequence[str] = MATRIX_METRICS,
) -> dict[str, Any]:
    """Continual: after each step, every seen category evaluated with routing among the seen ones.

    Returns:
        ``steps`` (per step: ``added``, ``seen``, ``per_category``, ``mean``, ``routing_accuracy``
        over the seen images), ``matrix`` (per metric: ``(steps, categories)`` lists with
        ``None`` before a category is added; columns in order of addition), ``final``
        (per-category metrics and mean at the last step) and ``forgetting`` (FM per metric).
    """
    steps = collected.steps
    order = [name for step in steps for name in step]
    added_at = [t for t, step in enumerate(steps) for _ in step]
    cache = pixel_cache if pixel_cache is not None else {}
    matrices = {metric: np.full((len(steps), len(order)), np.nan) for metric in matrix_metrics}
    results: list[dict[str, Any]] = []
    seen: list[str] = []
    for t, step in enumerate(steps):
        seen.extend(step)
        per: dict[str, dict[str, Any]] = {}
        correct = total = 0
        for name in seen:
            view = continual_view(t)
            routed = routed_categories(collected, name, view)
            per[name] = category_metrics(collected, name, view, pixel=pixel, pixel_cache=cache, max_pixels=max_pixels)
            correct += sum(m == name for m in routed)
            total += len(routed)
            j = order.index(name)
            for metric in matrix_metrics:
                value = per[name].get(metric, _NAN)
                matrices[metric][t, j] = float(value) if isinstance(value, int | float) else _NAN
        results.append(
            {
                "step": t,
                "added": list(step),
                "seen": list(seen),
                "per_category": per,
                "mean": mean_metrics(per),
                "routing_accuracy": correct / total if total else _NAN,
            }
        )
        progress(Progress("metrics", t + 1, len(steps), ",".join(step), "continual"))
    final = results[-1]
    return {
        "order": [list(s) for s in steps],
        "columns": order,
        "steps": results,
        "matrix": {metric: values.tolist() for metric, values in matrices.items()},
        "final": {"per_category": final["per_category"], "mean": final["mean"]},
        "forgetting": {metric: forgetting(values, added_at) for metric, values in matrices.items()},
    }
