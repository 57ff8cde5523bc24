"""Evaluation metrics: image-level, pixel-level, AUPRO and the continual forgetting measure.

All functions take plain NumPy arrays and return plain Python floats (in dicts where there are
several). Ill-defined metrics (a single class present, no anomalous region at all) are reported
as ``nan`` rather than raising, so that a per-category table can still be built and averaged with
``np.nanmean`` by the caller.

Pixel metrics (AUROC, AP, F1-max) and AUPRO share one global descending sort of all pixel scores,
which is the dominant cost (an MVTec test set at 392x392 holds 15-60 million pixels).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import ndimage
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

__all__ = [
    "aupro",
    "continual_summary",
    "forgetting_measure",
    "image_metrics",
    "pixel_metrics",
    "pixel_metrics_at_sizes",
    "pro_curve",
    "recall_by_defect",
    "region_scores",
]

_NAN = float("nan")


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _f1_max(precision: NDArray[np.floating[Any]], recall: NDArray[np.floating[Any]]) -> float:
    """Maximum of ``2PR / (P + R)`` over a precision-recall curve (0 where ``P + R == 0``)."""
    denom = precision + recall
    f1 = np.divide(2.0 * precision * recall, denom, out=np.zeros_like(denom, dtype=np.float64), where=denom > 0)
    return float(f1.max()) if f1.size else _NAN


def _as_maps(masks: ArrayLike, maps: ArrayLike) -> tuple[NDArray[np.bool_], NDArray[np.floating[Any]]]:
    """Validate and convert masks/maps to (N, H, W) bool and float arrays."""
    m = np.asarray(masks)
    s = np.asarray(maps)
    if m.ndim == 2:
        m = m[None]
    if s.ndim == 2:
        s = s[None]
    if m.ndim != 3 or s.ndim != 3:
        raise ValueError(f"masks and maps must be (N, H, W) arrays, got {m.shape} and {s.shape}")
    if m.shape != s.shape:
        raise ValueError(f"masks and maps differ in shape: {m.shape} vs {s.shape}")
    m_bool = m.astype(bool, copy=False) if m.dtype == np.bool_ else m > 0
    if not np.issubdtype(s.dtype, np.floating):
        s = s.astype(np.float64)
    if not np.all(np.isfinite(s)):
        raise ValueError("anomaly maps contain non-finite values")
    return m_bool, s


def _orderable_desc_key(scores: NDArray[np.float32]) -> NDArray[np.uint64]:
    """uint64 keys whose ascending order is the descending order of float32 scores.

    The IEEE-754 bit pattern is mapped to an unsigned integer with the same order as the float
    (flip all bits of negatives, set the sign bit of non-negatives), then inverted so that an
    ascending integer sort gives descending scores. ``-0.0`` is folded onto ``+0.0`` first.
    """
    s = scores + np.float32(0.0)  # -0.0 -> +0.0 (and a fresh array)
    bits = s.view(np.uint32)
    neg = (bits >> np.uint32(31)).astype(bool)
    key = np.where(neg, bits, ~bits & np.uint32(0x7FFFFFFF))  # == ~(orderable key)
    return key.astype(np.uint64)


def _sort_desc_with_payload(
    scores: NDArray[np.floating[Any]], payload: NDArray[np.integer[Any]]
) -> tuple[NDArray[np.intp], NDArray[np.int64]]:
    """Sort pixels by descending score, carrying a small non-negative integer payload along.

    Args:
        scores: flat finite scores.
        payload: flat integers in [0, 2**32) (region ids: 0 = normal pixel).

    Returns:
        ``(run_end, payload_sorted)``: the index in sorted order of the last element of each
        run of equal scores (one per distinct threshold, descending), and the payload in sorted
        order (order among tied scores is arbitrary).

    Float32 scores (or float64 scores that are exactly float32 values) take a fast path: the
    order-preserving score bits and the payload are packed into one uint64 and sorted with a plain
    ``np.sort``, which is several times faster than ``argsort`` plus gathers. Other scores fall
    back to ``argsort``.
    """
    s32: NDArray[np.float32] | None = None
    if scores.dtype == np.float32:
        s32 = scores
    elif scores.dtype.itemsize > 4:
        cand = scores.astype(np.float32)
        if np.array_equal(cand, scores):
            s32 = cand
    else:
        s32 = scores.astype(np.float32)
    if s32 is not None:
        packed = _orderable_desc_key(s32)
        packed <<= np.uint64(32)
        packed |= payload.astype(np.uint64)
        packed.sort()
        hi = packed >> np.uint64(32)
        keep = np.empty(hi.shape[0], dtype=bool)
        if hi.shape[0]:
            np.not_equal(hi[1:], hi[:-1], out=keep[:-1])
            keep[-1] = True
        del hi
        packed &= np.uint64(0xFFFFFFFF)
        return np.flatnonzero(keep), packed.astype(np.int64)
    order = np.argsort(scores)[::-1]
    return _last_of_runs(scores[order]), payload[order].astype(np.int64)


def _last_of_runs(sorted_scores: NDArray[np.floating[Any]]) -> NDArray[np.intp]:
    """Index of the last element of each run of equal values in a sorted array."""
    keep = np.empty(sorted_scores.shape[0], dtype=bool)
    if sorted_scores.shape[0]:
        np.not_equal(sorted_scores[1:], sorted_scores[:-1], out=keep[:-1])
        keep[-1] = True
    return np.flatnonzero(keep)


def _cumulative_count(flags: NDArray[np.bool_]) -> NDArray[np.int64]:
    """Running count of True values (``np.cumsum(flags, dtype=int64)``, several times faster)."""
    counts = flags.astype(np.int64)
    np.cumsum(counts, out=counts)
    return counts


def _curve_metrics(run_end: NDArray[np.intp], positive_sorted: NDArray[np.bool_]) -> dict[str, float]:
    """AUROC, AP and F1-max from labels sorted by descending score.

    Reproduces scikit-learn's ``roc_auc_score`` (trapezoidal ROC area),
    ``average_precision_score`` (step-wise sum ``sum_n (R_n - R_{n-1}) P_n``) and the F1 maximum
    over ``precision_recall_curve``, evaluated at every distinct threshold.

    Args:
        run_end: index (in sorted order) of the last element of each run of tied scores.
        positive_sorted: labels in descending-score order.
    """
    if run_end.size == 0:
        return {"auroc": _NAN, "ap": _NAN, "f1_max": _NAN}
    tps = _cumulative_count(positive_sorted)[run_end].astype(np.float64)
    fps = (run_end + 1).astype(np.float64) - tps
    n_pos, n_neg = tps[-1], fps[-1]
    if n_pos == 0 or n_neg == 0:
        return {"auroc": _NAN, "ap": _NAN, "f1_max": _NAN}
    tpr = np.concatenate(([0.0], tps / n_pos))
    fpr = np.concatenate(([0.0], fps / n_neg))
    auroc = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1])) / 2.0)
    precision = tps / (tps + fps)
    recall = tps / n_pos
    ap = float(np.sum(np.diff(np.concatenate(([0.0], recall))) * precision))
    return {"auroc": auroc, "ap": ap, "f1_max": _f1_max(precision, recall)}


def _integrate_limited(x: NDArray[np.float64], y: NDArray[np.float64], x_max: float) -> float:
    """Trapezoidal area under ``y(x)`` for ``x <= x_max`` (MVTec reference ``trapezoid``).

    ``x`` must be non-decreasing. When ``x_max`` is not a point of ``x``, ``y`` is interpolated
    linearly at ``x_max`` between its neighbours and the partial trapezoid is added.
    """
    correction = 0.0
    if not np.any(x == x_max):
        ins = int(np.searchsorted(x, x_max, side="right"))
        if not 0 < ins < x.shape[0]:
            raise ValueError("integration limit outside the curve's x range")
        x0, x1, y0, y1 = x[ins - 1], x[ins], y[ins - 1], y[ins]
        y_interp = y0 + (y1 - y0) * (x_max - x0) / (x1 - x0)
        correction = 0.5 * (y_interp + y0) * (x_max - x0)
    keep = x <= x_max
    xk, yk = x[keep], y[keep]
    return float(np.sum(0.5 * (yk[1:] + yk[:-1]) * np.diff(xk)) + correction)


def _label_regions(masks: NDArray[np.bool_]) -> tuple[NDArray[np.int32], NDArray[np.float64]]:
    """Global region ids per pixel (0 = normal) and ``1 / region size`` per id (0 for id 0).

    Regions are the connected components of each image's mask with 8-connectivity; all images
    are labelled in one call with a 3-D structure that connects nothing across images.
    """
    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[1] = True  # 3x3 ones within one image: 8-connectivity, nothing across images
    labeled, n_regions = ndimage.label(masks, structure=structure)
    sizes = np.bincount(labeled.ravel(), minlength=n_regions + 1).astype(np.float64)
    inv = np.zeros(n_regions + 1, dtype=np.float64)
    inv[1:] = 1.0 / sizes[1:]
    return labeled, inv


def _pro_curve_sorted(
    run_end: NDArray[np.intp], region_sorted: NDArray[np.int64], inv_size: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.float64]] | None:
    """PRO curve from region ids in descending-score order; ``None`` if it is undefined."""
    n_regions = inv_size.shape[0] - 1
    normal = region_sorted == 0
    fp_cum = _cumulative_count(normal)[run_end]
    n_normal = int(fp_cum[-1]) if fp_cum.size else 0
    if n_regions == 0 or n_normal == 0:
        return None
    weights = inv_size[region_sorted]
    np.cumsum(weights, out=weights)
    pro_cum = weights[run_end]
    fprs = np.clip(fp_cum / n_normal, 0.0, 1.0)
    pros = np.clip(pro_cum / n_regions, 0.0, 1.0)
    return np.concatenate(([0.0], fprs, [1.0])), np.concatenate(([0.0], pros, [1.0]))


def _check_limit(fpr_limit: float) -> None:
    if not 0.0 < fpr_limit <= 1.0:
        raise ValueError(f"fpr_limit must be in (0, 1], got {fpr_limit}")


def _aupro_from_curve(curve: tuple[NDArray[np.float64], NDArray[np.float64]] | None, fpr_limit: float) -> float:
    if curve is None:
        return _NAN
    fprs, pros = curve
    return _integrate_limited(fprs, pros, fpr_limit) / fpr_limit


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def image_metrics(labels: ArrayLike, scores: ArrayLike) -> dict[str, float]:
    """Image-level AUROC, average precision and F1-max.

    Args:
        labels: (N,) ground truth, 1/True = anomalous, 0/False = good.
        scores: (N,) anomaly scores, higher = more anomalous.

    Returns:
        ``{"auroc", "ap", "f1_max"}`` as floats; all ``nan`` when only one class is present
        (or the input is empty).

    Raises:
        ValueError: if the shapes differ or scores are not finite.
    """
    y = np.asarray(labels).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"labels and scores differ in length: {y.shape} vs {s.shape}")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores contain non-finite values")
    y_bool = y > 0
    n_pos = int(np.count_nonzero(y_bool))
    if n_pos == 0 or n_pos == y_bool.size:
        return {"auroc": _NAN, "ap": _NAN, "f1_max": _NAN}
    precision, recall, _ = precision_recall_curve(y_bool, s)
    return {
        "auroc": float(roc_auc_score(y_bool, s)),
        "ap": float(average_precision_score(y_bool, s)),
        "f1_max": _f1_max(precision, recall),
    }


def pro_curve(masks: ArrayLike, maps: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]] | None:
    """The full PRO curve (FPR, mean per-region overlap) as in the MVTec AD reference.

    Args:
        masks: (N, H, W) or (H, W) ground-truth masks (bool or 0/1).
        maps: anomaly maps of the same shape.

    Returns:
        ``(fprs, pros)``, both starting with 0 and ending with 1, one point per distinct score
        (thresholds in descending order), or ``None`` when there is no anomalous region or no
        normal pixel.
    """
    m, s = _as_maps(masks, maps)
    labeled, inv_size = _label_regions(m)
    run_end, region_sorted = _sort_desc_with_payload(s.ravel(), labeled.ravel())
    return _pro_curve_sorted(run_end, region_sorted, inv_size)


def aupro(masks: ArrayLike, maps: ArrayLike, fpr_limit: float = 0.3) -> float:
    """Normalised area under the PRO curve up to ``fpr_limit`` (exact MVTec AD reference).

    Regions are the connected components (8-connectivity) of each image's mask. All pixel scores
    of all images are sorted once in descending order; at each distinct threshold t
    (pixels with score >= t are positive) the FPR is the fraction of all normal pixels above t
    and the PRO the mean over all regions of all images of the fraction of the region above t.
    The curve, with (0, 0) prepended and (1, 1) appended, is integrated with the trapezoid rule
    up to ``fpr_limit`` (interpolating linearly at the limit) and divided by ``fpr_limit``.

    Args:
        masks: (N, H, W) or (H, W) ground-truth masks (bool or 0/1). Images with empty masks
            contribute normal pixels only.
        maps: anomaly maps of the same shape, higher = more anomalous.
        fpr_limit: upper FPR integration limit in (0, 1].

    Returns:
        AUPRO in [0, 1]; ``nan`` if there is no anomalous region (or no normal pixel).

    Raises:
        ValueError: on mismatched shapes, non-finite scores or an invalid ``fpr_limit``.
    """
    _check_limit(fpr_limit)
    return _aupro_from_curve(pro_curve(masks, maps), fpr_limit)


def pixel_metrics(
    masks: ArrayLike,
    maps: ArrayLike,
    pro_fpr_limit: float = 0.3,
    max_pixels: int | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """Pixel-level AUROC, AP, F1-max and AUPRO.

    AUROC, AP and F1-max are computed over all pixels of all images together, exactly as
    scikit-learn would (one sort, shared with AUPRO). With ``max_pixels`` set and smaller than
    the pixel count, those three are computed on a seeded uniform random subset of pixels
    (without replacement) instead; AUPRO is always exact.

    Args:
        masks: (N, H, W) or (H, W) ground-truth masks (bool or 0/1).
        maps: anomaly maps of the same shape, higher = more anomalous.
        pro_fpr_limit: FPR integration limit of AUPRO.
        max_pixels: optional cap on the pixels used for AUROC/AP/F1-max.
        seed: seed of the pixel subsample.

    Returns:
        ``{"auroc", "ap", "f1_max", "aupro"}``; ``nan`` where undefined (no anomalous or no normal
        pixel; no region for AUPRO).
    """
    _check_limit(pro_fpr_limit)
    m, s = _as_maps(masks, maps)
    labeled, inv_size = _label_regions(m)
    flat, regions = s.ravel(), labeled.ravel()
    return _metrics_of_pixels(flat, regions, inv_size, pro_fpr_limit, max_pixels, seed)


def forgetting_measure(matrix: ArrayLike) -> float:
    """Forgetting measure of a continual run.

    ``matrix[step, j]`` is the metric of category ``j`` evaluated after step ``step``; it is
    ``nan`` before the category was added (category ``j`` is added at step ``j``). With T
    categories, FM = mean over the first T - 1 categories of (best value since the category was
    added, the final step included) - (value at the final step). Categories whose final or best
    value is ``nan`` are left out of the mean.

    Args:
        matrix: (steps, T) array.

    Returns:
        FM (>= 0 up to the values given); ``nan`` if fewer than two categories or no finite
        term.

    Raises:
        ValueError: if the matrix is not 2-D.
    """
    a = np.asarray(matrix, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"matrix must be 2-D (steps, categories), got shape {a.shape}")
    n_cat = a.shape[1]
    if n_cat < 2 or a.shape[0] == 0:
        return _NAN
    terms: list[float] = []
    for j in range(n_cat - 1):
        col = a[:, j]
        finite = np.isfinite(col)
        final = col[-1]
        if not finite.any() or not math.isfinite(final):
            continue
        terms.append(float(col[finite].max() - final))
    return float(np.mean(terms)) if terms else _NAN


def continual_summary(matrix: ArrayLike) -> dict[str, float]:
    """Final mean and forgetting measure of a continual run.

    Args:
        matrix: (steps, T) array as for :func:`forgetting_measure`.

    Returns:
        ``{"final_mean": mean of the finite values of the last step, "fm": forgetting_measure}``
        (``final_mean`` is ``nan`` if the last step holds no finite value).
    """
    a = np.asarray(matrix, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"matrix must be 2-D (steps, categories), got shape {a.shape}")
    last = a[-1] if a.shape[0] else np.empty(0)
    finite = last[np.isfinite(last)]
    final_mean = float(finite.mean()) if finite.size else _NAN
    return {"final_mean": final_mean, "fm": forgetting_measure(a)}


# --------------------------------------------------------------------------------------------
# At each image's own size, and regions (issue 25)
# --------------------------------------------------------------------------------------------
_EIGHT = np.ones((3, 3), dtype=bool)


def _metrics_of_pixels(
    flat: NDArray[np.floating[Any]],
    regions: NDArray[np.integer[Any]],
    inv_size: NDArray[np.float64],
    pro_fpr_limit: float,
    max_pixels: int | None,
    seed: int,
) -> dict[str, float]:
    """AUROC, AP, F1-max (on a seeded pixel subset past ``max_pixels``) and exact AUPRO of flat
    scores with their region labels (0: normal pixel) and each region's inverse size."""
    run_end, region_sorted = _sort_desc_with_payload(flat, regions)
    aupro_value = _aupro_from_curve(_pro_curve_sorted(run_end, region_sorted, inv_size), pro_fpr_limit)
    if max_pixels is not None and max_pixels < flat.size:
        if max_pixels < 1:
            raise ValueError(f"max_pixels must be positive, got {max_pixels}")
        del run_end, region_sorted
        pick = np.sort(np.random.default_rng(seed).choice(flat.size, size=max_pixels, replace=False))
        run_end, region_sorted = _sort_desc_with_payload(flat[pick], regions[pick])
    result = _curve_metrics(run_end, region_sorted != 0)
    result["aupro"] = aupro_value
    return result


def _sized_pairs(
    masks: Sequence[ArrayLike], maps: Sequence[ArrayLike]
) -> list[tuple[NDArray[np.bool_], NDArray[np.floating[Any]]]]:
    if len(masks) != len(maps):
        raise ValueError(f"{len(masks)} masks for {len(maps)} maps")
    pairs = []
    for mask, values in zip(masks, maps, strict=True):
        m, s = _as_maps(mask, values)
        pairs.append((m[0], s[0]))
    return pairs


def pixel_metrics_at_sizes(
    masks: Sequence[ArrayLike],
    maps: Sequence[ArrayLike],
    pro_fpr_limit: float = 0.3,
    max_pixels: int | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """:func:`pixel_metrics` over images of different sizes (each mask with its own map).

    Every pixel of every image counts once (a large image weighs more, as at its own size it
    holds more pixels); regions for AUPRO are each mask's 8-connected components.

    Args:
        masks: per image an (H_i, W_i) ground-truth mask (bool or 0/1).
        maps: per image an (H_i, W_i) anomaly map, higher = more anomalous.
        pro_fpr_limit, max_pixels, seed: as in :func:`pixel_metrics`.

    Returns:
        ``{"auroc", "ap", "f1_max", "aupro"}`` (``nan`` where undefined).
    """
    _check_limit(pro_fpr_limit)
    pairs = _sized_pairs(masks, maps)
    if not pairs:
        return {"auroc": _NAN, "ap": _NAN, "f1_max": _NAN, "aupro": _NAN}
    labels_parts, offset = [], 0
    for mask, _ in pairs:
        labeled, count = ndimage.label(mask, structure=_EIGHT)
        labels_parts.append(np.where(labeled > 0, labeled + offset, 0).astype(np.int64).ravel())
        offset += int(count)
    regions = np.concatenate(labels_parts)
    flat = np.concatenate([values.astype(np.float32, copy=False).ravel() for _, values in pairs])
    sizes = np.bincount(regions, minlength=offset + 1).astype(np.float64)
    inv_size = np.zeros(offset + 1, dtype=np.float64)
    inv_size[1:] = 1.0 / np.maximum(sizes[1:], 1.0)
    return _metrics_of_pixels(flat, regions, inv_size, pro_fpr_limit, max_pixels, seed)


def region_scores(
    masks: Sequence[ArrayLike],
    maps: Sequence[ArrayLike],
    thresholds: Sequence[float],
    labels: Sequence[int] | None = None,
) -> dict[str, float]:
    """Region-level detection: ground-truth regions hit by a predicted region, predicted regions on good images.

    A predicted region is an 8-connected area of a map above its image's threshold (the
    category's map threshold: what ``regions`` in a record holds, uncapped); a ground-truth
    region is hit when at least one of its pixels lies in a predicted region. ``labels`` (0 good,
    1 defective; ``None``: an empty mask means good) keeps a defective image whose mask is empty
    (MTD has five such ``uneven`` images) out of the good images: it has no region to hit, and its
    predicted regions are not false ones.

    Returns:
        ``region_hit_rate`` (hit ground-truth regions / all of them; ``nan`` without any),
        ``gt_regions``, ``false_regions_per_good`` (predicted regions per image with an empty
        mask; ``nan`` without such images) and ``good_images``.
    """
    pairs = _sized_pairs(masks, maps)
    if len(thresholds) != len(pairs):
        raise ValueError(f"{len(thresholds)} thresholds for {len(pairs)} images")
    if labels is not None and len(labels) != len(pairs):
        raise ValueError(f"{len(labels)} labels for {len(pairs)} images")
    defective = [bool(label) for label in labels] if labels is not None else [False] * len(pairs)
    gt_regions = hit = good_images = good_regions = 0
    for (mask, values), threshold, known_bad in zip(pairs, thresholds, defective, strict=True):
        predicted = values > threshold
        if mask.any():
            labeled, count = ndimage.label(mask, structure=_EIGHT)
            gt_regions += int(count)
            hit += int(np.unique(labeled[predicted & (labeled > 0)]).size)
        elif known_bad:
            continue
        else:
            good_images += 1
            good_regions += int(ndimage.label(predicted, structure=_EIGHT)[1])
    return {
        "region_hit_rate": hit / gt_regions if gt_regions else _NAN,
        "gt_regions": float(gt_regions),
        "false_regions_per_good": good_regions / good_images if good_images else _NAN,
        "good_images": float(good_images),
    }


def recall_by_defect(defects: Sequence[str], flagged: ArrayLike) -> dict[str, float]:
    """Share of the images of each defect type flagged (``anomalous`` at the shipped threshold).

    ``good`` is left out (its share is the false-rejection rate); defect types in name order.
    """
    flags = np.asarray(flagged, dtype=bool).ravel()
    if len(defects) != flags.size:
        raise ValueError(f"{len(defects)} defect names for {flags.size} decisions")
    names = sorted({d for d in defects if d != "good"})
    kinds = np.asarray(defects, dtype=object)
    return {name: float(flags[kinds == name].mean()) for name in names}
