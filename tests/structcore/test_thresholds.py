"""Threshold rules on hand-made score arrays with known quantiles (structcore/thresholds.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from registry.records import LEGACY_THRESHOLD_RULE
from structcore.scoring import StructCoreCalibrator
from structcore.thresholds import (
    DEFAULT_THRESHOLD_RULE,
    LEGACY_RULE,
    THRESHOLD_RULES,
    best_recall_at,
    check_frr,
    choose_threshold,
    conformal_rank,
    conformal_reaches,
    conformal_threshold,
    decision_metrics,
    f1_max_threshold,
    quantile_threshold,
    rates,
    tail_threshold,
    threshold_for_frr,
    train_outliers,
    wilson_interval,
)


def test_the_legacy_rule_is_numpy_s_99_5_percent_quantile() -> None:
    scores = np.arange(1, 201, dtype=float)  # 1..200
    assert quantile_threshold(scores) == pytest.approx(np.quantile(scores, 0.995)) == pytest.approx(199.005)
    assert choose_threshold(scores, "quantile").value == pytest.approx(199.005)
    assert LEGACY_RULE == LEGACY_THRESHOLD_RULE  # registry.records keeps its own copy (no numpy import)


@pytest.mark.parametrize(
    ("n", "frr", "rank"),
    [(99, 0.01, 99), (199, 0.01, 198), (999, 0.01, 990), (19, 0.05, 19), (80, 0.01, 80), (9, 0.5, 5)],
)
def test_conformal_rank_is_ceil_n_plus_1_times_1_minus_frr(n: int, frr: float, rank: int) -> None:
    assert conformal_rank(n, frr) == rank
    scores = np.random.default_rng(n).permutation(np.arange(1, n + 1, dtype=float))
    assert conformal_threshold(scores, frr) == rank  # the rank-th smallest of 1..n


def test_conformal_threshold_keeps_its_promise_on_exchangeable_scores() -> None:
    """P(new score > threshold) <= frr, averaged over many draws of n = 99 train scores."""
    rng = np.random.default_rng(0)
    exceed = [
        float((rng.standard_normal(2000) > conformal_threshold(rng.standard_normal(99), 0.05)).mean())
        for _ in range(300)
    ]
    assert np.mean(exceed) <= 0.05 + 0.005


def test_outliers_are_the_scores_far_above_the_bulk() -> None:
    bulk = np.linspace(1.0, 2.0, 101)  # median 1.5, normal-consistent IQR 0.5 / 1.349
    scores = np.concatenate([bulk, [9.0, 0.0, 4.0]])  # 0.0 is low: typical, not outlying
    assert train_outliers(scores).tolist() == [101, 103]
    assert train_outliers(np.ones(50)).size == 0  # ties: no scale, no outliers
    assert train_outliers(np.array([1.0, 2, 3, 100])).size == 0  # too few to tell


def test_robust_rules_leave_outliers_out_and_record_them() -> None:
    bulk = np.arange(1, 200, dtype=float)  # 1..199, no outlier
    scores = np.concatenate([bulk, [2000.0]])
    plain = choose_threshold(scores, "conformal", 0.01)
    robust = choose_threshold(scores, "robust-conformal", 0.01)
    assert plain.value == 199.0  # rank ceil(201 * 0.99) = 199 of 200
    assert robust.value == 198.0  # rank ceil(200 * 0.99) = 198 of the 199 kept
    assert robust.outliers == (199,)
    record = robust.to_record()
    assert record["rule"] == "robust-conformal" and record["frr"] == 0.01
    assert record["outliers"] == [{"index": 199, "score": 2000.0, "left_out": True}]


def test_robust_rules_leave_out_at_most_twice_frr_of_the_images() -> None:
    """Where many train images look outlying, they are the category's tail: only 2 x frr x n go."""
    bulk = np.linspace(1.0, 2.0, 190)
    scores = np.concatenate([bulk, np.linspace(10.0, 19.0, 10)])  # 10 outliers among 200
    choice = choose_threshold(scores, "robust-conformal", 0.01)
    assert len(choice.outliers) == 10 and choice.left_out == (196, 197, 198, 199)  # the 4 highest
    kept = np.delete(scores, [196, 197, 198, 199])
    assert choice.value == conformal_threshold(kept, 0.01)
    record = choice.to_record()
    assert sum(o["left_out"] for o in record["outliers"]) == 4 and record["n_kept"] == 196


def test_robust_conformal_extrapolates_where_no_order_statistic_reaches_the_frr() -> None:
    scores = np.arange(1, 81, dtype=float)  # 80 images: rank ceil(81 * 0.99) = 81 > 80
    assert not conformal_reaches(80, 0.01) and conformal_reaches(99, 0.01)
    choice = choose_threshold(scores, "robust-conformal", 0.01)
    assert choice.details["method"] == "tail model"
    assert choice.value == pytest.approx(tail_threshold(scores, 0.01)) and choice.value > 80.0
    assert conformal_threshold(scores, 0.01) == 80.0  # the plain rule takes the largest score
    bigger = choose_threshold(np.arange(1, 200, dtype=float), "robust-conformal", 0.01)
    assert bigger.details["method"] == "order statistic" and bigger.value == 198.0


def test_tail_rule_recovers_an_exponential_quantile() -> None:
    p = (np.arange(2000) + 0.5) / 2000
    scores = -np.log1p(-p)  # the exact quantiles of Exp(1)
    assert tail_threshold(scores, 0.01) == pytest.approx(math.log(100), rel=0.03)
    assert tail_threshold(scores, 0.001) == pytest.approx(math.log(1000), rel=0.03)  # beyond the largest score
    assert tail_threshold(scores, 0.3) == pytest.approx(np.quantile(scores, 0.7))


def test_robust_tail_fits_the_tail_of_the_bulk_without_the_outliers() -> None:
    from statistics import NormalDist

    bulk = np.array([NormalDist().inv_cdf((i + 0.5) / 2000) for i in range(2000)])  # N(0, 1) quantiles
    scores = np.concatenate([bulk, np.full(5, 20.0)])  # five outlying train images
    robust = choose_threshold(scores, "robust-tail", 0.01)
    assert robust.outliers == (2000, 2001, 2002, 2003, 2004)
    assert robust.value == pytest.approx(tail_threshold(bulk, 0.01))
    # an exponential tail is conservative on a normal one: above the true 2.326, not far
    assert 2.33 < robust.value < 2.7
    assert tail_threshold(scores, 0.01) > 3.0  # the plain tail model inherits the outliers


@pytest.mark.parametrize("bad", [0.0, -0.1, 0.51, 1.0, float("nan"), float("inf")])
def test_frr_must_lie_in_0_to_half(bad: float) -> None:
    with pytest.raises(ValueError, match=r"\(0, 0.5\]"):
        check_frr(bad)
    with pytest.raises(ValueError):
        choose_threshold(np.arange(10.0), "conformal", bad)
    assert check_frr(0.5) == 0.5


def test_every_rule_is_known_and_the_default_is_one() -> None:
    assert DEFAULT_THRESHOLD_RULE in THRESHOLD_RULES
    with pytest.raises(ValueError, match="unknown threshold rule"):
        choose_threshold(np.arange(10.0), "median")


def test_labelled_operating_points() -> None:
    good = np.arange(100, dtype=float)  # 0..99
    bad = np.array([50.0, 97.5, 98.5, 120.0])
    assert threshold_for_frr(good, 0.01) == 98.5  # only 99 lies above: 1% FRR (midway between 98 and 99)
    assert threshold_for_frr(good, 0.05) == 94.5
    assert threshold_for_frr(good[:10], 0.05) == 9.0  # no good score may lie above: the largest
    assert rates(good, bad, 98.0) == (0.01, 0.5)
    assert best_recall_at(good, bad, 0.0) == 0.25  # above 99: only 120
    assert best_recall_at(good, bad, 0.01) == 0.5
    threshold, f1 = f1_max_threshold(np.array([0.0, 1, 2, 3]), np.array([3.5, 4, 5]))
    assert threshold == 3.25 and f1 == pytest.approx(1.0)  # 3.5, 4, 5 flagged; no good one; midway
    threshold, f1 = f1_max_threshold(np.array([0.0, 1, 2, 3]), np.array([2.5, 4, 5]))
    assert threshold == 2.25 and f1 == pytest.approx(6 / 7)  # 2.5, 3, 4, 5 flagged: 3 of 3, one good
    metrics = decision_metrics(good, bad, 98.0)
    assert metrics["frr"] == 0.01 and metrics["recall"] == 0.5
    assert metrics["best_recall"] == 0.5 and metrics["efficiency"] == 1.0
    assert metrics["recall_at_frr_1"] == 0.5 and metrics["recall_at_frr_5"] == 0.75
    assert decision_metrics(good, bad, 110.0)["efficiency"] == 1.0  # 0% FRR: only 120 was reachable


def test_wilson_interval_known_values() -> None:
    low, high = wilson_interval(0, 10)
    assert low == 0.0 and high == pytest.approx(0.2775, abs=1e-4)
    low, high = wilson_interval(5, 10)
    assert (low, high) == (pytest.approx(0.2366, abs=1e-4), pytest.approx(0.7634, abs=1e-4))
    assert all(math.isnan(v) for v in wilson_interval(0, 0))


def test_calibrator_stores_its_rule_and_legacy_states_keep_the_quantile() -> None:
    rng = np.random.default_rng(3)
    base, phi = rng.random(120), rng.random((120, 3))
    fitted = StructCoreCalibrator(threshold_rule="robust-tail", frr=0.02).fit_descriptors(base, phi)
    state = fitted.get_state()
    assert state["threshold_rule"]["rule"] == "robust-tail" and state["threshold_rule"]["frr"] == 0.02
    hybrid = fitted.score_descriptors(base, phi).hybrid
    assert fitted.thresholds_["hybrid"] == pytest.approx(choose_threshold(hybrid, "robust-tail", 0.02).value)
    again = StructCoreCalibrator.from_state(state)
    assert again.threshold_rule == "robust-tail" and again.frr == 0.02
    legacy = StructCoreCalibrator().fit_descriptors(base, phi).get_state()
    assert legacy["thresholds"]["hybrid"] == pytest.approx(np.quantile(hybrid, 0.995))
    del legacy["threshold_rule"]  # a state written before rules existed
    assert StructCoreCalibrator.from_state(legacy).threshold_rule_ == LEGACY_RULE
