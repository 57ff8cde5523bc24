"""StructCore descriptor, D_struct, lambda_auto and thresholds against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from structcore.scoring import StructCoreCalibrator, base_scores, structural_descriptor


def test_flat_map_descriptor() -> None:
    flat = np.full((1, 10, 10), 3.0)
    phi = structural_descriptor(flat)
    assert phi.tolist() == [[0.0, 3.0, 0.0]]
    assert base_scores(flat).tolist() == [3.0]


def test_single_spike_descriptor() -> None:
    height = width = 20
    value = 5.0
    spike = np.zeros((1, height, width))
    spike[0, 7, 11] = value  # interior pixel: 4 neighbours differ by `value`
    n = height * width
    count = math.ceil(n * 0.01)  # 4 pixels in the top-1%
    expected = [value * math.sqrt((1 / n) * (1 - 1 / n)), value / count, 4 * value / n]
    np.testing.assert_allclose(structural_descriptor(spike)[0], expected, rtol=1e-12)


def test_corner_spike_drops_edge_terms() -> None:
    spike = np.zeros((1, 10, 10))
    spike[0, 0, 0] = 1.0  # only 2 in-map neighbours
    assert structural_descriptor(spike)[0, 2] == pytest.approx(2 / 100)


def test_checkerboard_descriptor() -> None:
    height, width = 8, 12
    board = (np.add.outer(np.arange(height), np.arange(width)) % 2).astype(float)[None]
    tv = ((height - 1) * width + height * (width - 1)) / (height * width)
    np.testing.assert_allclose(structural_descriptor(board)[0], [0.5, 1.0, tv], rtol=1e-12)


def test_top_ratio_rounds_up_to_at_least_one() -> None:
    ramp = np.arange(50, dtype=float).reshape(1, 5, 10)
    assert structural_descriptor(ramp, top_ratio=0.01)[0, 1] == 49.0  # ceil(0.5) = 1 value
    assert structural_descriptor(ramp, top_ratio=0.1)[0, 1] == pytest.approx(np.mean([45, 46, 47, 48, 49]))


def test_paper_calibrator_hand_computed() -> None:
    # Three train maps: flat 1, flat 3, and a flat 2 with one spike -> known phi rows.
    maps = np.stack([np.full((10, 10), 1.0), np.full((10, 10), 3.0), np.full((10, 10), 2.0)])
    maps[2, 5, 5] = 6.0
    phi = structural_descriptor(maps)
    base = np.array([1.0, 3.0, 6.0])
    calibrator = StructCoreCalibrator(scoring="paper").fit(maps)
    np.testing.assert_allclose(calibrator.mu_, phi.mean(axis=0))
    np.testing.assert_allclose(calibrator.sigma_, phi.std(axis=0))
    distances = np.sqrt((((phi - phi.mean(0)) / (phi.std(0) + 1e-6)) ** 2).sum(1))
    np.testing.assert_allclose(calibrator.struct_distance(phi), distances)
    expected_lambda = base.std() / (distances.std() + 1e-6)
    assert calibrator.lambda_ == pytest.approx(expected_lambda)
    scores = calibrator.score(maps)
    np.testing.assert_allclose(scores.hybrid, base + expected_lambda * distances)
    assert calibrator.thresholds_["base"] == pytest.approx(np.quantile(base, 0.995))
    assert calibrator.thresholds_["hybrid"] == pytest.approx(np.quantile(scores.hybrid, 0.995))


def test_calibrator_state_round_trip() -> None:
    maps = np.random.default_rng(1).random((6, 16, 16))
    calibrator = StructCoreCalibrator().fit(maps)
    restored = StructCoreCalibrator.from_state(calibrator.get_state())
    np.testing.assert_array_equal(restored.score(maps).hybrid, calibrator.score(maps).hybrid)


def test_calibrator_needs_two_maps() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        StructCoreCalibrator().fit(np.zeros((1, 4, 4)))


map_strategy = arrays(
    np.float64,
    st.tuples(st.integers(2, 12), st.integers(2, 12)),
    elements=st.floats(0, 100, allow_nan=False, allow_subnormal=False),
)


@settings(max_examples=60, deadline=None)
@given(map_strategy)
def test_descriptor_is_flip_invariant(anomaly_map: np.ndarray) -> None:
    phi = structural_descriptor(anomaly_map[None])
    np.testing.assert_allclose(structural_descriptor(anomaly_map[None, ::-1, :]), phi, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(structural_descriptor(anomaly_map[None, :, ::-1]), phi, rtol=1e-9, atol=1e-9)
    assert np.isfinite(phi).all()


@settings(max_examples=40, deadline=None)
@given(st.floats(0, 10), st.integers(3, 10))
def test_constant_maps_never_nan(value: float, size: int) -> None:
    calibrator = StructCoreCalibrator().fit(np.full((4, size, size), value))
    scores = calibrator.score(np.full((2, size, size), value))
    assert np.isfinite(scores.hybrid).all() and np.isfinite(scores.struct).all()


@settings(max_examples=40, deadline=None)
@given(map_strategy, st.floats(1, 50))
def test_top_mean_monotone_in_added_spike(anomaly_map: np.ndarray, spike: float) -> None:
    before = structural_descriptor(anomaly_map[None])[0]
    raised = anomaly_map.copy()
    raised[0, 0] += spike
    after = structural_descriptor(raised[None])[0]
    assert after[1] >= before[1] - 1e-9
    assert base_scores(raised[None])[0] >= base_scores(anomaly_map[None])[0]


# ----------------------------------------------------------------------------- robust scoring
# Five hand-made train descriptors (std, top-k mean, TV); the last row is an outlier, the third
# dimension is constant but for it (its MAD is 0, so the floor applies).
ROBUST_PHI = np.array(
    [
        [1.0, 10.0, 0.5],
        [2.0, 30.0, 0.5],
        [3.0, 20.0, 0.5],
        [4.0, 50.0, 0.5],
        [100.0, 40.0, 0.9],
    ]
)
ROBUST_BASE = np.array([1.0, 1.2, 1.1, 1.3, 2.0])
NORMAL_MAD = 1.482602218505602  # 1 / Phi^-1(3/4)
NORMAL_IQR = 1.3489795003921634  # Phi^-1(3/4) - Phi^-1(1/4)


def test_robust_is_the_default_and_init_stores_settings_only() -> None:
    calibrator = StructCoreCalibrator()
    assert calibrator.scoring == "robust"
    assert calibrator.scale_floor == 0.01
    assert not hasattr(calibrator, "mu_")
    assert StructCoreCalibrator(scoring="nonsense").scoring == "nonsense"  # checked by fit, not __init__


def test_robust_location_scale_and_floor_by_hand() -> None:
    calibrator = StructCoreCalibrator(eps=0.0).fit_descriptors(ROBUST_BASE, ROBUST_PHI)
    # medians 3, 30, 0.5; median absolute deviations 1, 10, 0 -> the third is floored at 1% of 0.5
    np.testing.assert_allclose(calibrator.mu_, [3.0, 30.0, 0.5])
    np.testing.assert_allclose(calibrator.sigma_, [NORMAL_MAD, 10 * NORMAL_MAD, 0.005], rtol=1e-12)


def test_robust_distance_is_one_sided_by_hand() -> None:
    calibrator = StructCoreCalibrator(eps=0.0).fit_descriptors(ROBUST_BASE, ROBUST_PHI)
    z3 = [1 / NORMAL_MAD, 20 / (10 * NORMAL_MAD), 0.0]  # row 4: above the median in two dimensions
    z5 = [97 / NORMAL_MAD, 10 / (10 * NORMAL_MAD), 0.4 / 0.005]
    expected = [0.0, 0.0, 0.0, math.hypot(*z3), math.sqrt(sum(v * v for v in z5))]
    np.testing.assert_allclose(calibrator.struct_distance(ROBUST_PHI), expected, rtol=1e-12)
    # a calmer-than-usual map (every dimension below the median) is not structurally anomalous
    assert calibrator.struct_distance(np.array([[0.0, 0.0, 0.0]]))[0] == 0.0
    paper = StructCoreCalibrator(scoring="paper").fit_descriptors(ROBUST_BASE, ROBUST_PHI)
    assert paper.struct_distance(np.array([[0.0, 0.0, 0.0]]))[0] > 1.0


def test_robust_lambda_is_a_quartile_ratio_by_hand() -> None:
    calibrator = StructCoreCalibrator(eps=0.0).fit_descriptors(ROBUST_BASE, ROBUST_PHI)
    # train distances [0, 0, 0, d4, d5]: their median and MAD are 0, their quartiles 0 and d4
    d4 = math.hypot(1 / NORMAL_MAD, 2 / NORMAL_MAD)
    assert d4 == pytest.approx(math.sqrt(5) / NORMAL_MAD)
    base_iqr = (1.3 - 1.1) / NORMAL_IQR
    assert calibrator.lambda_ == pytest.approx(base_iqr / (d4 / NORMAL_IQR), rel=1e-12)
    assert calibrator.lambda_ == pytest.approx(0.2 / d4, rel=1e-12)
    struct = calibrator.struct_distance(ROBUST_PHI)
    hybrid = ROBUST_BASE + calibrator.lambda_ * struct
    np.testing.assert_allclose(calibrator.score_descriptors(ROBUST_BASE, ROBUST_PHI).hybrid, hybrid)
    assert calibrator.thresholds_["struct"] == pytest.approx(np.quantile(struct, 0.995))
    assert calibrator.thresholds_["hybrid"] == pytest.approx(np.quantile(hybrid, 0.995))


def test_robust_ignores_one_outlier_that_moves_the_paper() -> None:
    phi = np.random.default_rng(3).normal([1.0, 2.0, 0.1], [0.1, 0.2, 0.01], size=(200, 3))
    base = np.random.default_rng(4).normal(1.0, 0.1, 200)
    spoiled = phi.copy()
    spoiled[0] = [50.0, 100.0, 5.0]
    for scoring, moved in (("robust", False), ("paper", True)):
        clean = StructCoreCalibrator(scoring=scoring).fit_descriptors(base, phi)
        dirty = StructCoreCalibrator(scoring=scoring).fit_descriptors(base, spoiled)
        ratio = dirty.sigma_ / clean.sigma_
        assert bool((ratio > 2).all()) is moved, (scoring, ratio)


def test_robust_scale_floor_bounds_a_degenerate_dimension() -> None:
    phi = np.tile([1.0, 2.0, 0.1], (10, 1))
    phi[:3, 0] = [1.1, 1.2, 1.3]  # dimension 0 varies on 3 of 10 maps: MAD 0
    calibrator = StructCoreCalibrator().fit_descriptors(np.linspace(1, 2, 10), phi)
    np.testing.assert_allclose(calibrator.sigma_, [0.01, 0.02, 0.001])
    assert calibrator.struct_distance(np.array([[1.3, 2.0, 0.1]]))[0] == pytest.approx(0.3 / (0.01 + 1e-6))
    with pytest.raises(ValueError, match="scale_floor"):
        StructCoreCalibrator(scale_floor=-1.0).fit_descriptors(np.linspace(1, 2, 10), phi)


def test_robust_falls_back_to_the_std_where_median_and_mad_are_zero() -> None:
    # four of five maps have phi = 0 in every dimension: median 0, MAD 0, so the floor is 0 too
    phi = np.zeros((5, 3))
    phi[4] = [3.0, 6.0, 0.3]
    base = np.array([1.0, 2.0, 4.0, 3.0, 5.0])
    calibrator = StructCoreCalibrator(eps=0.0).fit_descriptors(base, phi)
    np.testing.assert_allclose(calibrator.sigma_, phi.std(axis=0))  # 0.4 times the row-4 values
    assert calibrator.sigma_[0] == pytest.approx(1.2)
    struct = calibrator.struct_distance(phi)
    np.testing.assert_allclose(struct, [0.0, 0.0, 0.0, 0.0, math.sqrt(3) * 3.0 / 1.2])
    # the distances' quartiles tie at 0 (four of five): lambda uses their std (0.4 * d) instead
    base_spread = (4.0 - 2.0) / NORMAL_IQR
    assert calibrator.lambda_ == pytest.approx(base_spread / (0.4 * struct[4]))
    scaled = StructCoreCalibrator(eps=0.0).fit_descriptors(2 * base, 2 * phi)
    np.testing.assert_allclose(scaled.struct_distance(2 * phi), struct)
    assert scaled.lambda_ == pytest.approx(2 * calibrator.lambda_)


def test_robust_fallback_is_not_decided_by_rounding() -> None:
    """Ties up to rounding count as ties: c * maps gives the same distances (found by hypothesis).

    Two of three maps are constant; scaled by 8.0625 their std is ~1e-15 instead of exactly 0, and
    a fallback on ``MAD > 0`` used that as the scale (distance 703,594 instead of 8.04).
    """
    maps = np.full((3, 3, 3), 3.72231652)
    maps[0, 0, 0] = 4.0
    plain = StructCoreCalibrator().fit(maps)
    scaled = StructCoreCalibrator().fit(8.0625 * maps)
    np.testing.assert_allclose(scaled.score(8.0625 * maps).struct, plain.score(maps).struct, rtol=1e-3)
    np.testing.assert_allclose(scaled.sigma_, 8.0625 * plain.sigma_, rtol=1e-6)


def test_unknown_scoring_is_refused_by_fit() -> None:
    with pytest.raises(ValueError, match="unknown scoring 'nonsense'"):
        StructCoreCalibrator(scoring="nonsense").fit_descriptors(ROBUST_BASE, ROBUST_PHI)


@pytest.mark.parametrize("scoring", ["robust", "paper"])
def test_scoring_state_round_trip(scoring: str) -> None:
    maps = np.random.default_rng(1).random((6, 16, 16))
    calibrator = StructCoreCalibrator(scoring=scoring).fit(maps)
    state = calibrator.get_state()
    assert state["scoring"] == scoring
    restored = StructCoreCalibrator.from_state(state)
    assert restored.scoring == scoring
    np.testing.assert_array_equal(restored.score(maps).hybrid, calibrator.score(maps).hybrid)


def test_state_without_scoring_loads_as_paper() -> None:
    maps = np.random.default_rng(2).random((6, 16, 16))
    paper = StructCoreCalibrator(scoring="paper").fit(maps)
    old_state = {key: value for key, value in paper.get_state().items() if key != "scoring"}
    restored = StructCoreCalibrator.from_state(old_state)
    assert restored.scoring == "paper"
    calm = np.zeros((1, 16, 16))  # the two-sided distance of the paper scores a calm map high
    np.testing.assert_array_equal(restored.score(calm).struct, paper.score(calm).struct)
    assert restored.score(calm).struct[0] > 0
