"""Decision thresholds from score arrays: train-good rules, operating points, decision metrics.

Arrays in, numbers out (NumPy only). A category's threshold is chosen from its leave-one-out
train-good hybrid scores (no test image and no label is ever used); ``registry threshold``
moves it afterwards to a stated false-reject rate (FRR), a value, or a labelled folder's
operating point. See ``docs/calibration.md`` ("Thresholds") for the evidence behind the default.

Rules (:data:`THRESHOLD_RULES`):

- ``quantile``: the 99.5% quantile of the train-good scores (linear interpolation): the rule of
  every version fitted before this module, kept selectable.
- ``conformal``: the split-conformal quantile at FRR ``alpha``: the ``ceil((n + 1)(1 - alpha))``-th
  smallest of the ``n`` scores. For a good image exchangeable with the train-good ones,
  ``P(score > threshold) <= alpha`` (the ``n + 1`` correction); when ``(n + 1)(1 - alpha) > n``
  no order statistic guarantees it and the largest score is used.
- ``robust-conformal`` (the default): the ``conformal`` threshold over the train-good images
  that are not outlying among their own category (:func:`train_outliers`: above the median by
  more than :data:`OUTLIER_CUTOFF` normal-consistent interquartile ranges). A few unusual train
  images (over-exposed or marked tiles, a fibre on a bottle rim: defects hiding in train-good)
  otherwise set the top order statistics alone. At most ``OUTLIER_SHARE x alpha x n`` of them
  (the highest) are left out: where more images than that look outlying, they are the category's
  own tail rather than a few odd images. The outliers are stored with the version and listed by
  ``registry show``. Where fewer than ``1 / alpha - 1`` images are kept (no order
  statistic reaches ``alpha``: 80 images at 1%), the ``tail`` model of the kept scores
  extrapolates instead of taking the largest one.
- ``robust-tail``: the ``tail`` model of the kept scores whatever their number.
- ``tail``: an exponential model of the upper tail (the excesses over the 80% quantile), read at
  ``alpha``: smooth where the order statistics are sparse, but it inherits outliers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# the rules, the default rule and FRR and the FRR bound are declared with the other settings
from structcore.settings import DEFAULT_FRR, DEFAULT_THRESHOLD_RULE, MAX_FRR, THRESHOLD_RULES

#: Quantile of the ``quantile`` rule (the threshold of every version fitted before rules existed).
LEGACY_QUANTILE = 0.995
#: A train image scoring above ``median + OUTLIER_CUTOFF * IQR / 1.349`` is outlying in its category.
OUTLIER_CUTOFF = 3.5
#: The robust rules leave out at most ``floor(OUTLIER_SHARE * frr * n)`` outlying train images.
OUTLIER_SHARE = 2.0
#: ``tail``: share of the scores whose excesses the exponential tail is fitted to.
TAIL_SHARE = 0.2
#: Normal-consistent interquartile range (IQR of a standard normal).
_NORMAL_IQR = 1.3489795003921634
#: The stored rule of versions written before rules existed (their thresholds keep their meaning).
LEGACY_RULE: dict[str, Any] = {"rule": "quantile", "quantile": LEGACY_QUANTILE, "source": "fit"}


def check_frr(frr: float) -> float:
    """``frr`` as a float when it lies in (0, :data:`MAX_FRR`]; raises ``ValueError`` otherwise."""
    value = float(frr)
    if not (math.isfinite(value) and 0.0 < value <= MAX_FRR):
        msg = f"the false-reject rate must lie in (0, {MAX_FRR}], got {frr}"
        raise ValueError(msg)
    return value


def check_rule(rule: str) -> str:
    """``rule`` when it is one of :data:`THRESHOLD_RULES`; raises ``ValueError`` otherwise."""
    if rule not in THRESHOLD_RULES:
        msg = f"unknown threshold rule {rule!r}; choose one of {', '.join(THRESHOLD_RULES)}"
        raise ValueError(msg)
    return rule


def _scores(values: Sequence[float] | np.ndarray) -> np.ndarray:
    scores = np.asarray(values, dtype=np.float64).ravel()
    if scores.size == 0 or not np.isfinite(scores).all():
        msg = f"need at least one finite score, got {scores.size} values"
        raise ValueError(msg)
    return scores


def quantile_threshold(scores: Sequence[float] | np.ndarray, quantile: float = LEGACY_QUANTILE) -> float:
    """The ``quantile`` of the scores, linearly interpolated (``numpy.quantile``): the legacy rule."""
    return float(np.quantile(_scores(scores), quantile))


def conformal_rank(n: int, frr: float) -> int:
    """1-based rank ``ceil((n + 1)(1 - frr))`` of the split-conformal threshold, capped at ``n``."""
    return max(1, min(n, _uncapped_rank(n, frr)))


def _uncapped_rank(n: int, frr: float) -> int:
    check_frr(frr)
    # rounded first: (n + 1) * (1 - frr) is often an integer up to floating-point error
    return math.ceil(round((n + 1) * (1.0 - frr), 9))


def conformal_reaches(n: int, frr: float) -> bool:
    """True when an order statistic of ``n`` scores guarantees ``frr`` (``(n + 1)(1 - frr) <= n``)."""
    return _uncapped_rank(n, frr) <= n


def conformal_threshold(scores: Sequence[float] | np.ndarray, frr: float = DEFAULT_FRR) -> float:
    """Split-conformal threshold at ``frr``: the :func:`conformal_rank`-th smallest score."""
    values = np.sort(_scores(scores))
    return float(values[conformal_rank(len(values), frr) - 1])


def robust_scale(scores: np.ndarray) -> float:
    """Normal-consistent interquartile range (the std for normal data; 0 when the quartiles tie)."""
    upper, lower = np.percentile(scores, [75.0, 25.0])
    return float((upper - lower) / _NORMAL_IQR)


def train_outliers(scores: Sequence[float] | np.ndarray, cutoff: float = OUTLIER_CUTOFF) -> np.ndarray:
    """Indices (ascending) of the scores above ``median + cutoff * robust_scale``: outlying train images.

    Only high scores count (a train image scoring lower than usual is typical, not anomalous).
    Fewer than 8 scores, or a scale of 0 (ties), give no outliers.
    """
    values = _scores(scores)
    if len(values) < 8:
        return np.zeros(0, dtype=np.int64)
    scale = robust_scale(values)
    if not scale > 0:
        return np.zeros(0, dtype=np.int64)
    limit = float(np.median(values)) + cutoff * scale
    return np.flatnonzero(values > limit).astype(np.int64)


def tail_threshold(scores: Sequence[float] | np.ndarray, frr: float = DEFAULT_FRR, share: float = TAIL_SHARE) -> float:
    """Exponential upper-tail model: ``u + mean excess * ln(share / frr)`` with ``u`` the ``1 - share`` quantile.

    At ``frr >= share`` it is the plain ``1 - frr`` quantile.
    """
    check_frr(frr)
    values = _scores(scores)
    if frr >= share:
        return float(np.quantile(values, 1.0 - frr))
    start = float(np.quantile(values, 1.0 - share))
    excess = values[values > start] - start
    mean_excess = float(excess.mean()) if excess.size else 0.0
    return start + mean_excess * math.log(share / frr)


@dataclass(frozen=True)
class ThresholdChoice:
    """A threshold and how it was chosen (stored with the version as ``calibration["threshold_rule"]``)."""

    value: float
    rule: str
    frr: float | None = None
    n_scores: int = 0
    #: Train images left out as outlying (indices into the train-good scores) and their scores.
    outliers: tuple[int, ...] = ()
    outlier_scores: tuple[float, ...] = ()
    #: Of the outliers, those left out of the threshold (at most ``OUTLIER_SHARE * frr * n``).
    left_out: tuple[int, ...] = ()
    details: dict[str, Any] = field(default_factory=dict)

    def to_record(self) -> dict[str, Any]:
        """JSON-compatible record."""
        record: dict[str, Any] = {"rule": self.rule, "source": "fit", "n_scores": self.n_scores}
        if self.frr is not None:
            record["frr"] = self.frr
        if self.rule == "quantile":
            record["quantile"] = LEGACY_QUANTILE
        if self.rule.startswith("robust-"):
            record["outlier_cutoff"] = OUTLIER_CUTOFF
            record["outlier_share"] = OUTLIER_SHARE
            record["outliers"] = [
                {"index": int(i), "score": float(s), "left_out": int(i) in self.left_out}
                for i, s in zip(self.outliers, self.outlier_scores, strict=True)
            ]
        record.update(self.details)
        return record


def choose_threshold(
    scores: Sequence[float] | np.ndarray, rule: str = DEFAULT_THRESHOLD_RULE, frr: float = DEFAULT_FRR
) -> ThresholdChoice:
    """The threshold of ``rule`` on train-good scores (``frr`` is ignored by ``quantile``)."""
    check_rule(rule)
    values = _scores(scores)
    if rule == "quantile":
        return ThresholdChoice(quantile_threshold(values), rule, None, len(values))
    check_frr(frr)
    if rule == "conformal":
        return ThresholdChoice(conformal_threshold(values, frr), rule, frr, len(values))
    if rule == "tail":
        return ThresholdChoice(tail_threshold(values, frr), rule, frr, len(values))
    outliers = train_outliers(values)
    most = math.floor(round(OUTLIER_SHARE * frr * len(values), 9))
    left_out = np.sort(outliers[np.argsort(-values[outliers], kind="stable")[:most]])
    kept = np.delete(values, left_out)
    order_statistic = rule == "robust-conformal" and conformal_reaches(len(kept), frr)
    value = conformal_threshold(kept, frr) if order_statistic else tail_threshold(kept, frr)
    return ThresholdChoice(
        value,
        rule,
        frr,
        len(values),
        tuple(int(i) for i in outliers),
        tuple(float(values[i]) for i in outliers),
        tuple(int(i) for i in left_out),
        {"method": "order statistic" if order_statistic else "tail model", "n_kept": len(kept)},
    )


# ------------------------------------------------------------------------ labelled operating points
def rates(good: np.ndarray, bad: np.ndarray, threshold: float) -> tuple[float, float]:
    """(FRR of ``good``, recall of ``bad``) of the decision ``score > threshold``."""
    good = np.asarray(good, dtype=np.float64)
    bad = np.asarray(bad, dtype=np.float64)
    frr = float((good > threshold).mean()) if good.size else float("nan")
    recall = float((bad > threshold).mean()) if bad.size else float("nan")
    return frr, recall


def threshold_for_frr(good: Sequence[float] | np.ndarray, frr: float) -> float:
    """A threshold above which exactly ``floor(frr * n)`` of the ``n`` good scores lie (fewer on ties).

    Midway between the ``(floor(frr * n) + 1)``-th largest good score (the lowest threshold with
    that FRR: the most recall) and the next larger one, so that a good part scoring a little above
    the labelled ones is not rejected at once; the largest score when no good one may lie above.
    """
    check_frr(frr)
    values = np.sort(_scores(good))[::-1]
    allowed = min(math.floor(round(frr * len(values), 9)), len(values) - 1)
    lowest = float(values[allowed])
    return (lowest + float(values[allowed - 1])) / 2.0 if allowed > 0 else lowest


def best_recall_at(good: np.ndarray, bad: np.ndarray, frr: float) -> float:
    """Highest recall of ``bad`` over every threshold whose FRR on ``good`` is at most ``frr`` (``frr`` may be 0)."""
    values = np.sort(np.asarray(good, dtype=np.float64))[::-1]
    allowed = math.floor(round(frr * len(values), 9))
    threshold = float(values[min(allowed, len(values) - 1)])
    return rates(values, bad, threshold)[1]


def f1_max_threshold(good: np.ndarray, bad: np.ndarray) -> tuple[float, float]:
    """(threshold, F1) maximising F1 of ``score > threshold`` with the defects as positives.

    Of the thresholds with the best F1, the one midway between the highest score it lets pass and
    the lowest it flags.
    """
    good = np.asarray(good, dtype=np.float64)
    bad = np.asarray(bad, dtype=np.float64)
    if not bad.size:
        msg = "F1 needs at least one defective score"
        raise ValueError(msg)
    scores = np.concatenate([good, bad])
    # every distinct score as "just below" the next flagged one: candidates are the scores minus
    # nothing (score > threshold flags strictly higher ones), plus one below the lowest score
    candidates = np.unique(np.concatenate([scores, [scores.min() - 1.0]]))
    order = np.argsort(-scores, kind="stable")
    sorted_scores = scores[order]
    positive = np.concatenate([np.zeros(len(good), bool), np.ones(len(bad), bool)])[order]
    best = (float(candidates[0]), -1.0, float(candidates[0]))
    for position, threshold in enumerate(candidates):
        flagged = sorted_scores > threshold
        true_positive = int((flagged & positive).sum())
        flagged_count = int(flagged.sum())
        if not flagged_count:
            continue
        f1 = 2.0 * true_positive / (flagged_count + len(bad))
        if f1 > best[1] + 1e-12:
            # midway to the lowest flagged score: the same decisions on these images, a margin both ways
            best = (float(threshold), f1, float(candidates[position + 1]))
    return (best[0] + best[2]) / 2.0, max(best[1], 0.0)


def wilson_interval(successes: int, total: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (``(nan, nan)`` for ``total == 0``)."""
    if total <= 0:
        return float("nan"), float("nan")
    from statistics import NormalDist

    z = NormalDist().inv_cdf(0.5 + confidence / 2.0)
    p = successes / total
    denominator = 1.0 + z * z / total
    centre = (p + z * z / (2.0 * total)) / denominator
    half = z * math.sqrt(p * (1.0 - p) / total + z * z / (4.0 * total * total)) / denominator
    low = 0.0 if successes <= 0 else max(0.0, centre - half)
    high = 1.0 if successes >= total else min(1.0, centre + half)
    return low, high


def decision_metrics(good: np.ndarray, bad: np.ndarray, threshold: float) -> dict[str, float]:
    """FRR and recall at ``threshold``, recall at 1% and 5% FRR, F1-max and the calibration efficiency.

    ``efficiency`` = recall at ``threshold`` / the best recall any threshold reaches at (at most)
    the same FRR on these good images.
    """
    good = np.asarray(good, dtype=np.float64)
    bad = np.asarray(bad, dtype=np.float64)
    nan = float("nan")
    if not good.size or not bad.size:
        frr, recall = rates(good, bad, threshold)
        return {
            "frr": frr,
            "recall": recall,
            "recall_at_frr_1": nan,
            "recall_at_frr_5": nan,
            "f1_max": nan,
            "best_recall": nan,
            "efficiency": nan,
        }
    frr, recall = rates(good, bad, threshold)
    best = best_recall_at(good, bad, frr)
    return {
        "frr": frr,
        "recall": recall,
        "recall_at_frr_1": best_recall_at(good, bad, 0.01),
        "recall_at_frr_5": best_recall_at(good, bad, 0.05),
        "f1_max": f1_max_threshold(good, bad)[1],
        "best_recall": best,
        "efficiency": recall / best if best > 0 else nan,
    }


__all__ = [
    "DEFAULT_FRR",
    "DEFAULT_THRESHOLD_RULE",
    "LEGACY_QUANTILE",
    "LEGACY_RULE",
    "MAX_FRR",
    "OUTLIER_CUTOFF",
    "OUTLIER_SHARE",
    "THRESHOLD_RULES",
    "ThresholdChoice",
    "best_recall_at",
    "check_frr",
    "check_rule",
    "choose_threshold",
    "conformal_rank",
    "conformal_reaches",
    "conformal_threshold",
    "decision_metrics",
    "f1_max_threshold",
    "quantile_threshold",
    "rates",
    "tail_threshold",
    "threshold_for_frr",
    "train_outliers",
    "wilson_interval",
]
