"""The runtime's numpy maps, scores and routing statistics: what the registry computes too."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from structcore_runtime import maps, routing, scores

from benchmarks.bench import anomaly_maps_reference
from structcore import anomaly_map
from structcore.routing import PrototypeRouter
from structcore.scoring import StructCoreCalibrator


@pytest.mark.parametrize(("grid", "size"), [((49, 49), 392), ((16, 16), 128), ((7, 9), 50)])
def test_maps_equal_the_direct_computation(grid: tuple[int, int], size: int) -> None:
    patch_scores = np.random.default_rng(0).random((3, *grid)).astype(np.float32)
    found = maps.anomaly_maps(patch_scores, size)
    expected = anomaly_maps_reference(patch_scores, size)
    assert found.dtype == np.float32 and found.shape == (3, size, size)
    assert np.abs(found - expected).max() <= 1e-5 * np.abs(expected).max()
    np.testing.assert_array_equal(anomaly_map.anomaly_maps(torch.from_numpy(patch_scores), size), found)


def test_scores_are_the_calibrators() -> None:
    rng = np.random.default_rng(1)
    train = maps.anomaly_maps(rng.random((12, 16, 16)), 64)
    test = maps.anomaly_maps(rng.random((4, 16, 16)) * 1.5, 64)
    for scoring in ("robust", "paper"):
        calibrator = StructCoreCalibrator(scoring=scoring).fit(train)
        expected = calibrator.score(test)
        phi = scores.structural_descriptor(test)
        struct = scores.struct_distance(phi, calibrator.mu_, calibrator.sigma_, calibrator.eps, scoring != "paper")
        np.testing.assert_array_equal(struct, expected.struct)
        np.testing.assert_array_equal(scores.hybrid_scores(expected.base, struct, calibrator.lambda_), expected.hybrid)


def test_router_equals_the_registry_router() -> None:
    rng = np.random.default_rng(2)
    dim, names = 32, [f"c{i}" for i in range(10)]
    centers = routing.l2_normalize(rng.normal(size=(len(names), dim)))
    registry_router = PrototypeRouter(shortlist=3)
    rules = []
    for i, name in enumerate(names):
        prototypes = routing.l2_normalize(centers[i] + 0.3 * rng.normal(size=(16, dim)))
        statistic = ("quantile-30", "far-share", "mean")[i % 3]
        unknown = (0.4, 0.5, 0.6)[i % 3]
        far = 0.3 if statistic != "mean" else None
        registry_router.add(
            name, prototypes, 0.7, unknown_threshold=unknown, unknown_statistic=statistic, far_threshold=far
        )
        rules.append(routing.RouteRule(name, prototypes, 0.7, unknown, statistic, far))
    vectors = (centers[rng.integers(0, len(names), 5)][:, None, :] + 0.4 * rng.normal(size=(5, 20, dim))).astype(
        np.float32
    )
    expected = registry_router.route(vectors)
    found = routing.Router(rules, shortlist=3).route(vectors)
    assert found.categories == expected.categories
    np.testing.assert_allclose(found.route_scores, expected.route_scores, rtol=1e-5)
    assert expected.unknown_scores is not None
    np.testing.assert_allclose(found.unknown_scores, expected.unknown_scores, rtol=1e-5)
