"""StructCore image scoring: structural descriptor, diagonal Mahalanobis calibration, hybrid score.

Method.md steps 7-11. All functions work on blurred anomaly maps (B, H, W); pixel maps are never
changed here.

Two scorings (:data:`SCORING_MODES`) share the descriptor and differ in the calibration:

- ``"paper"``: the paper's equations exactly: ``mu``/``sigma`` = mean/std of phi over train-good,
  a two-sided ``D_struct = ||(phi - mu) / (sigma + eps)||``, ``lambda = std(base) / (std(D_struct) + eps)``.
- ``"robust"`` (the default, docs/quality.md): ``mu`` = median and ``sigma`` = normal-consistent
  MAD of phi, floored at :data:`DEFAULT_SCALE_FLOOR` times ``|median|`` (a degenerate MAD cannot
  blow a dimension up); a one-sided distance, where only ``phi > mu`` counts (a defect only raises
  the map: a calmer map than usual is not anomalous); ``lambda`` = the ratio of the
  normal-consistent interquartile ranges of the train-good base scores and distances (the MAD of
  the one-sided distance collapses: see :func:`quartile_scale`). Where a robust scale is 0 up to
  rounding (below :data:`TIED_SHARE` of the std: more than half the values tie, or for the
  quartiles three quarters) the std stands in for it. The statistics no longer move
  with a few unusual train-good maps, and calm good maps no longer score as anomalous.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.stats import median_abs_deviation
from structcore_runtime.scores import DEFAULT_TOP_RATIO, EPS, base_scores, struct_distance, structural_descriptor

from structcore.settings import DEFAULT_SCORING, SCORING_MODES  # calibrations of the distance and lambda
from structcore.thresholds import LEGACY_RULE, ThresholdChoice, check_rule, choose_threshold, train_outliers

#: ``base_scores``, ``structural_descriptor`` and the distance itself are
#: :mod:`structcore_runtime.scores` (one implementation, shared with the exported runtime);
#: ``DEFAULT_TOP_RATIO`` (share of the map's pixels averaged by the top-k mean) and ``EPS`` too.
#: Quantile of train-good scores used as the decision threshold.
DEFAULT_QUANTILE = 0.995
#: Names of the descriptor's dimensions, in order.
DESCRIPTOR_NAMES = ("std", "topk_mean", "tv")
SCORE_KINDS = ("base", "struct", "hybrid")
#: Stored states without a ``scoring`` key were fitted with the paper's equations.
LEGACY_SCORING = "paper"
#: ``robust``: smallest scale of a descriptor dimension, as a share of its train-good median.
DEFAULT_SCALE_FLOOR = 0.01


def check_scoring(scoring: str) -> str:
    """``scoring`` when it is one of :data:`SCORING_MODES`; raises ``ValueError`` otherwise."""
    if scoring not in SCORING_MODES:
        msg = f"unknown scoring {scoring!r}; choose one of {', '.join(SCORING_MODES)}"
        raise ValueError(msg)
    return scoring


def robust_scale(values: np.ndarray, axis: int | None = None) -> np.ndarray:
    """Normal-consistent median absolute deviation (equals the std for normal data)."""
    return np.asarray(median_abs_deviation(np.asarray(values, dtype=np.float64), axis=axis, scale="normal"))


#: Interquartile range of a standard normal distribution.
_NORMAL_IQR = 1.3489795003921634


def quartile_scale(values: np.ndarray) -> float:
    """Normal-consistent interquartile range (equals the std for normal data).

    The scale of the one-sided distance: that distance is exactly 0 on the train-good maps whose
    descriptor lies below the median in every dimension, up to half of them, which makes its
    median (and so its MAD) collapse to 0; its upper quartile stays positive.
    """
    upper, lower = np.percentile(np.asarray(values, dtype=np.float64), [75.0, 25.0])
    return float((upper - lower) / _NORMAL_IQR)


#: A robust scale below this share of the std counts as 0: more than half (for the quartiles, three
#: quarters) of the values tie, up to floating-point rounding, which must not decide the scale.
TIED_SHARE = 1e-6


def _untied(robust: np.ndarray | float, std: np.ndarray | float) -> np.ndarray:
    """``robust`` where it measures a spread, else ``std`` (the values tie; see :data:`TIED_SHARE`).

    Relative to the std, so the choice is the same for ``c * values`` (scale equivariance).
    """
    robust, std = np.asarray(robust, dtype=np.float64), np.asarray(std, dtype=np.float64)
    return np.where(robust > TIED_SHARE * std, robust, std)


def _spread(values: np.ndarray) -> float:
    """:func:`quartile_scale`, or the std where the quartiles tie (few maps, most distances 0)."""
    return float(_untied(quartile_scale(values), float(np.std(values))))


@dataclass(frozen=True)
class ImageScores:
    """Per-image scores: max-pooled base, structural distance, and their hybrid."""

    base: np.ndarray
    struct: np.ndarray
    hybrid: np.ndarray

    def by_kind(self, kind: str) -> np.ndarray:
        """The scores of one kind: ``"base"``, ``"struct"`` or ``"hybrid"``."""
        return {"base": self.base, "struct": self.struct, "hybrid": self.hybrid}[kind]


class StructCoreCalibrator:
    """Fits the StructCore statistics on train-good maps and scores new maps.

    Args:
        top_ratio: share r of the top-k mean.
        quantile: quantile of train-good scores used as each threshold.
        eps: added to scales before dividing.
        scoring: ``"robust"`` (default) or ``"paper"`` (module docstring).
        scale_floor: ``robust``: floor of each descriptor scale, as a share of its ``|median|``.
        threshold_rule: how the thresholds follow from the train-good scores (one of
            :data:`structcore.thresholds.THRESHOLD_RULES`); ``"quantile"`` (this class's default)
            is the ``quantile`` of them, the rule of every version fitted before rules existed.
        frr: target false-reject rate of the ``conformal``, ``robust-conformal`` and ``tail`` rules.

    Attributes:
        mu_: (3,) location of phi over train-good maps (mean, or median for ``robust``).
        sigma_: (3,) scale of phi over train-good maps (population std, or floored MAD).
        lambda_: scale of train-good base scores over that of train-good distances (+ eps).
        thresholds_: the rule's threshold of train-good base / struct / hybrid scores.
        threshold_rule_: how they were chosen (JSON-compatible; stored as ``threshold_rule``).
        n_samples_: number of train-good maps used.
    """

    def __init__(
        self,
        top_ratio: float = DEFAULT_TOP_RATIO,
        quantile: float = DEFAULT_QUANTILE,
        eps: float = EPS,
        scoring: str = DEFAULT_SCORING,
        scale_floor: float = DEFAULT_SCALE_FLOOR,
        threshold_rule: str = "quantile",
        frr: float = 0.01,
    ):
        self.top_ratio = top_ratio
        self.quantile = quantile
        self.eps = eps
        self.scoring = scoring
        self.scale_floor = scale_floor
        self.threshold_rule = threshold_rule
        self.frr = frr

    def fit(self, maps: np.ndarray) -> StructCoreCalibrator:
        """Fit on train-good anomaly maps (B, H, W)."""
        return self.fit_descriptors(base_scores(maps), structural_descriptor(maps, self.top_ratio))

    def fit_descriptors(self, base: np.ndarray, descriptors: np.ndarray) -> StructCoreCalibrator:
        """Fit from precomputed base scores (B,) and descriptors (B, 3) of train-good maps."""
        check_scoring(self.scoring)
        if not (math.isfinite(self.scale_floor) and self.scale_floor >= 0):
            msg = f"scale_floor must be a finite number >= 0, got {self.scale_floor}"
            raise ValueError(msg)
        base = np.asarray(base, dtype=np.float64)
        descriptors = np.asarray(descriptors, dtype=np.float64)
        if base.ndim != 1 or descriptors.shape != (base.shape[0], 3) or base.shape[0] < 2:
            msg = f"need at least 2 train-good maps; got base {base.shape}, descriptors {descriptors.shape}"
            raise ValueError(msg)
        if self.scoring == "paper":
            self.mu_ = descriptors.mean(axis=0)
            self.sigma_ = descriptors.std(axis=0)
            struct = self.struct_distance(descriptors)
            self.lambda_ = float(base.std() / (struct.std() + self.eps))
        else:
            self.mu_ = np.median(descriptors, axis=0)
            sigma = np.maximum(robust_scale(descriptors, axis=0), self.scale_floor * np.abs(self.mu_))
            # median and MAD both 0 (most maps tie at 0): the floor is 0 too; the std still measures
            self.sigma_ = _untied(sigma, descriptors.std(axis=0))
            struct = self.struct_distance(descriptors)
            self.lambda_ = _spread(base) / (_spread(struct) + self.eps)
        self._set_thresholds(base, struct)
        return self

    def fit_thresholds(self, base: np.ndarray, descriptors: np.ndarray) -> StructCoreCalibrator:
        """Replace the thresholds by the quantiles of the scores of other train-good maps (B,), (B, 3).

        The statistics (mu, sigma, lambda) stay those of :meth:`fit_descriptors`; the ``mixed``
        calibration fits them on in-sample maps and the thresholds on leave-one-out maps.
        """
        base = np.asarray(base, dtype=np.float64)
        descriptors = np.asarray(descriptors, dtype=np.float64)
        if base.ndim != 1 or descriptors.shape != (base.shape[0], 3) or base.shape[0] < 2:
            msg = f"need at least 2 train-good maps; got base {base.shape}, descriptors {descriptors.shape}"
            raise ValueError(msg)
        self._set_thresholds(base, self.struct_distance(descriptors))
        return self

    def _set_thresholds(self, base: np.ndarray, struct: np.ndarray) -> None:
        hybrid = base + self.lambda_ * struct
        check_rule(self.threshold_rule)
        if self.threshold_rule == "quantile":
            self.thresholds_ = {
                "base": float(np.quantile(base, self.quantile)),
                "struct": float(np.quantile(struct, self.quantile)),
                "hybrid": float(np.quantile(hybrid, self.quantile)),
            }
            self.threshold_rule_ = {**LEGACY_RULE, "quantile": self.quantile, "n_scores": int(base.shape[0])}
        else:
            choices: dict[str, ThresholdChoice] = {
                kind: choose_threshold(scores, self.threshold_rule, self.frr)
                for kind, scores in (("base", base), ("struct", struct), ("hybrid", hybrid))
            }
            self.thresholds_ = {kind: choice.value for kind, choice in choices.items()}
            self.threshold_rule_ = choices["hybrid"].to_record()  # the decision's (hybrid) rule and outliers
        if "outliers" not in self.threshold_rule_:  # listed by `registry show` whatever the rule
            found = train_outliers(hybrid)
            self.threshold_rule_["outliers"] = [{"index": int(i), "score": float(hybrid[i])} for i in found]
        self.n_samples_ = int(base.shape[0])

    def struct_distance(self, descriptors: np.ndarray) -> np.ndarray:
        """Diagonal Mahalanobis distance ``||(phi - mu) / (sigma + eps)||_2`` per row.

        ``robust``: only the dimensions with ``phi > mu`` contribute (negative terms are zero).
        """
        return struct_distance(descriptors, self.mu_, self.sigma_, self.eps, one_sided=self.scoring != "paper")

    def score_descriptors(self, base: np.ndarray, descriptors: np.ndarray) -> ImageScores:
        """Scores from precomputed base scores and descriptors."""
        struct = self.struct_distance(descriptors)
        base = np.asarray(base, dtype=np.float64)
        return ImageScores(base=base, struct=struct, hybrid=base + self.lambda_ * struct)

    def score(self, maps: np.ndarray) -> ImageScores:
        """Base, struct and hybrid scores of anomaly maps (B, H, W)."""
        return self.score_descriptors(base_scores(maps), structural_descriptor(maps, self.top_ratio))

    def get_state(self) -> dict[str, object]:
        """Plain-data state (floats and lists) for storage."""
        state: dict[str, object] = {
            "mu": [float(v) for v in self.mu_],
            "sigma": [float(v) for v in self.sigma_],
            "lambda": self.lambda_,
            "thresholds": dict(self.thresholds_),
            "n_samples": self.n_samples_,
            "top_ratio": self.top_ratio,
            "quantile": self.quantile,
            "eps": self.eps,
            "scoring": self.scoring,
        }
        if self.scoring != "paper":
            state["scale_floor"] = self.scale_floor
        rule = getattr(self, "threshold_rule_", None)
        if rule is not None and rule != LEGACY_RULE:  # a legacy state keeps its keys (and checksums)
            state["threshold_rule"] = dict(rule)
        return state

    @classmethod
    def from_state(cls, state: dict[str, object]) -> StructCoreCalibrator:
        """Rebuild a fitted calibrator from :meth:`get_state` output.

        A state without ``scoring`` (written before the robust scoring existed) is ``"paper"``.
        """
        scoring = check_scoring(str(state.get("scoring", LEGACY_SCORING)))
        calibrator = cls(
            top_ratio=float(state["top_ratio"]),  # type: ignore[arg-type]
            quantile=float(state["quantile"]),  # type: ignore[arg-type]
            eps=float(state["eps"]),  # type: ignore[arg-type]
            scoring=scoring,
            scale_floor=float(state.get("scale_floor", DEFAULT_SCALE_FLOOR)),  # type: ignore[arg-type]
        )
        calibrator.mu_ = np.asarray(state["mu"], dtype=np.float64)
        calibrator.sigma_ = np.asarray(state["sigma"], dtype=np.float64)
        calibrator.lambda_ = float(state["lambda"])  # type: ignore[arg-type]
        calibrator.thresholds_ = {k: float(v) for k, v in dict(state["thresholds"]).items()}  # type: ignore[call-overload]
        calibrator.n_samples_ = int(state["n_samples"])  # type: ignore[call-overload]
        # absent on states written before threshold rules (schema revision 0005): the 99.5% quantile
        rule = state.get("threshold_rule")
        calibrator.threshold_rule_ = dict(rule) if isinstance(rule, dict) else dict(LEGACY_RULE)
        calibrator.threshold_rule = str(calibrator.threshold_rule_.get("rule", "quantile"))
        frr = calibrator.threshold_rule_.get("frr")
        calibrator.frr = float(frr) if isinstance(frr, int | float) else 0.01
        return calibrator
