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


def test_calibrator_hand_computed() -> None:
    # Three train maps: flat 1, flat 3, and a flat 2 with one spike -> known phi rows.
    maps = np.stack([np.full((10, 10), 1.0), np.full((10, 10), 3.0), np.full((10, 10), 2.0)])
    maps[2, 5, 5] = 6.0
    phi = structural_descriptor(maps)
    base = np.array([1.0, 3.0, 6.0])
    calibrator = StructCoreCalibrator().fit(maps)
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
