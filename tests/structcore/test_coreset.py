"""Greedy k-center coreset: determinism, start point, exactness and covering quality."""

from __future__ import annotations

import numpy as np
import pytest

from structcore.coreset import KCenterGreedy, covering_radius


def reference_kcenter(points: np.ndarray, count: int, start: int) -> list[int]:
    """Textbook farthest-point selection with a full distance recomputation each step."""
    selected = [start]
    for _ in range(count - 1):
        centers = points[selected]
        distances = ((points[:, None, :] - centers[None, :, :]) ** 2).sum(-1).min(axis=1)
        selected.append(int(np.argmax(distances)))
    return selected


def clustered(n_points: int, n_clusters: int, dim: int, seed: int) -> np.ndarray:
    generator = np.random.default_rng(seed)
    centers = generator.normal(0, 10, (n_clusters, dim))
    sizes = generator.multinomial(n_points, generator.dirichlet(np.ones(n_clusters) * 0.3))
    parts = [generator.normal(c, 0.5, (s, dim)) for c, s in zip(centers, sizes, strict=True)]
    return np.concatenate(parts).astype(np.float32)


def test_seeded_runs_identical() -> None:
    points = np.random.default_rng(0).normal(size=(3000, 64)).astype(np.float32)
    first = KCenterGreedy(ratio=0.02, seed=7).fit(points).indices_
    second = KCenterGreedy(ratio=0.02, seed=7).fit(points).indices_
    other = KCenterGreedy(ratio=0.02, seed=8).fit(points).indices_
    np.testing.assert_array_equal(first, second)
    assert not np.array_equal(first, other)
    assert len(first) == 60 and len(set(first.tolist())) == 60


def test_start_point_is_in_coreset() -> None:
    points = np.random.default_rng(1).normal(size=(500, 16)).astype(np.float32)
    selector = KCenterGreedy(n_select=10, seed=3).fit(points)
    assert selector.indices_[0] == int(np.random.default_rng(3).integers(500))


def test_exact_mode_matches_reference() -> None:
    points = np.random.default_rng(2).normal(size=(400, 8)).astype(np.float32)
    selector = KCenterGreedy(n_select=25, proxy_dim=None, seed=5).fit(points)
    assert selector.indices_.tolist() == reference_kcenter(points.astype(np.float64), 25, int(selector.indices_[0]))


def test_covering_radius_beats_random_subset() -> None:
    points = clustered(20000, 40, 32, seed=3)
    selector = KCenterGreedy(ratio=0.005, proxy_dim=None, seed=0).fit(points)
    greedy = covering_radius(points, points[selector.indices_])
    random_rows = np.random.default_rng(0).choice(len(points), len(selector.indices_), replace=False)
    random = covering_radius(points, points[random_rows])
    assert greedy * 2 <= random, (greedy, random)


def test_proxy_selection_covers_well() -> None:
    points = clustered(20000, 40, 256, seed=4)
    exact = KCenterGreedy(ratio=0.005, proxy_dim=None, seed=0).fit(points)
    proxy = KCenterGreedy(ratio=0.005, proxy_dim=128, seed=0).fit(points)
    exact_radius = covering_radius(points, points[exact.indices_])
    proxy_radius = covering_radius(points, points[proxy.indices_])
    assert proxy_radius <= 1.25 * exact_radius


def test_ratio_edges() -> None:
    points = np.zeros((10, 4), dtype=np.float32)
    assert len(KCenterGreedy(ratio=0.01).fit(points).indices_) == 1
    assert len(KCenterGreedy(ratio=1.0).fit(points).indices_) == 10


def test_batched_exact_matches_reference_over_many_batches() -> None:
    # 120 centers from 1,500 points: the candidate pool (4 x 64 + 1) is far smaller than the input,
    # so batches end early whenever a point outside the pool could be farther.
    points = clustered(1500, 12, 6, seed=9)
    selector = KCenterGreedy(n_select=120, proxy_dim=None, seed=2).fit(points)
    reference = reference_kcenter(points.astype(np.float64), 120, int(selector.indices_[0]))
    assert selector.indices_.tolist() == reference


def test_batched_exact_with_small_batches_equals_one_by_one() -> None:
    import torch

    from structcore.coreset import exact_greedy

    points = clustered(20000, 40, 32, seed=6)
    proxy = torch.from_numpy(points)
    norms = (proxy * proxy).sum(dim=1)
    one, one_radius, _ = exact_greedy(proxy, norms, 11, 300, batch=1)
    many, many_radius, _ = exact_greedy(proxy, norms, 11, 300, batch=64)
    # Same points in the same order, up to float rounding of near-equal distances.
    assert len(set(one.tolist()) & set(many.tolist())) >= 297
    assert abs(many_radius - one_radius) <= 1e-4 * one_radius


def test_duplicates_are_never_selected_twice() -> None:
    points = np.repeat(np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32), 40, axis=0)
    selector = KCenterGreedy(n_select=60, proxy_dim=None, seed=0).fit(points)
    assert len(set(selector.indices_.tolist())) == 60
    assert selector.radius_ == 0.0


def test_approx_covers_like_exact() -> None:
    points = clustered(120_000, 60, 48, seed=8)
    exact = KCenterGreedy(ratio=0.01, proxy_dim=None, seed=1, method="exact").fit(points)
    approx = KCenterGreedy(ratio=0.01, proxy_dim=None, seed=1, method="approx").fit(points)
    assert approx.method_ == "approx" and exact.method_ == "exact"
    assert len(approx.indices_) == len(exact.indices_) == 1200
    assert approx.indices_[0] == exact.indices_[0]  # the seeded start point
    assert len(set(approx.indices_.tolist())) == 1200
    ratio = covering_radius(points, points[approx.indices_]) / covering_radius(points, points[exact.indices_])
    assert ratio <= 1.1, ratio


def test_auto_method_threshold() -> None:
    from structcore.coreset import APPROX_MIN_WORK

    small = KCenterGreedy(ratio=0.01)
    assert small.resolve_method(100_000) == "exact"  # 1,000 x 100k = 1e8
    assert small.resolve_method(501_809) == "exact"  # MVTec bottle at 1%: 2.5e9
    assert small.resolve_method(2_000_000) == "approx"  # 20,000 x 2M = 4e10
    assert APPROX_MIN_WORK <= 18_270 * 1_826_000  # 761 images of 2,401 patches at 1%


def test_routing_prototypes_are_greedy_over_normalised_rows() -> None:
    """Prototypes (scaled rows, no normalised copy) == textbook greedy on an explicit normalised copy."""
    from structcore.routing import patch_vectors_to_prototypes

    generator = np.random.default_rng(5)
    rows = generator.normal(size=(3000, 16)) * generator.uniform(0.2, 5.0, size=(3000, 1))
    prototypes, picked = patch_vectors_to_prototypes(rows.astype(np.float32), 40, seed=3)
    unit = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    assert picked.tolist() == reference_kcenter(unit, 40, int(picked[0]))
    np.testing.assert_allclose(prototypes, unit[picked], atol=1e-6)


def _textbook_extend(existing: np.ndarray, points: np.ndarray, n_select: int) -> list[int]:
    """One pick at a time: the point farthest from the existing centers and the picks so far."""
    distances = ((points[:, None, :] - existing[None, :, :]) ** 2).sum(axis=2).min(axis=1)
    picks: list[int] = []
    for _ in range(n_select):
        best = int(np.argmax(distances))
        picks.append(best)
        distances = np.minimum(distances, ((points - points[best]) ** 2).sum(axis=1))
        distances[picks] = -np.inf
    return picks


def test_extend_continues_the_greedy_from_existing_centers() -> None:
    rng = np.random.default_rng(3)
    old = rng.normal(size=(400, 16)).astype(np.float32)
    centers = old[KCenterGreedy(n_select=20, proxy_dim=None, seed=0).fit(old).indices_]
    new = np.concatenate([rng.normal(size=(300, 16)), rng.normal(8.0, 1.0, size=(100, 16))]).astype(np.float32)
    extended = KCenterGreedy(proxy_dim=None, seed=0).extend(centers, new, 150)
    assert extended.method_ == "extend" and len(extended.indices_) == 150
    assert extended.indices_.tolist() == _textbook_extend(centers, new, 150)
    # the new condition (shifted cluster) gets centers first, and the bank now covers the new points
    assert (extended.indices_[:3] >= 300).all()
    before = covering_radius(new, centers)
    after = covering_radius(new, np.concatenate([centers, new[extended.indices_]]))
    assert after < 0.7 * before
    assert extended.radius_ == pytest.approx(after, rel=1e-3)


def test_extend_over_settled_rows_measures_only_the_far_ones_and_picks_the_textbook_points(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Old points with bounds (their fit's, or looser ones) are picked too, as the textbook greedy picks them."""
    import structcore.coreset

    monkeypatch.setattr(structcore.coreset, "MEASURE_BLOCK", 64)  # measure a few rows at a time
    rng = np.random.default_rng(7)
    old = np.concatenate([rng.normal(size=(600, 16)), rng.normal(0.0, 3.0, size=(60, 16))]).astype(np.float32)
    fitted = KCenterGreedy(n_select=30, proxy_dim=None, seed=0).fit(old)
    centers = old[fitted.indices_]
    exact = ((old[:, None, :] - centers[None, :, :]) ** 2).sum(axis=2).min(axis=1)
    np.testing.assert_allclose(fitted.min_distances_, exact, rtol=1e-4, atol=1e-4)
    new = np.concatenate([rng.normal(size=(300, 16)), rng.normal(8.0, 1.0, size=(100, 16))]).astype(np.float32)
    points = np.concatenate([old, new])
    expected = _textbook_extend(centers, points, 120)
    assert min(expected) < len(old) < max(expected)  # both old and new points are picked
    for looseness in (1.0, 1.5):
        bounds = np.concatenate([fitted.min_distances_ * looseness, np.full(len(new), np.inf, np.float32)])
        extended = KCenterGreedy(proxy_dim=None, seed=0).extend(centers, points, 120, bounds=bounds)
        assert extended.indices_.tolist() == expected
        assert len(new) < extended.measured_rows_ < len(points)  # some old rows kept their bound
        after = np.concatenate([centers, points[extended.indices_]])
        true = ((points[:, None, :] - after[None, :, :]) ** 2).sum(axis=2).min(axis=1)
        assert (extended.min_distances_ >= true - 1e-3).all()  # upper bounds everywhere
    with pytest.raises(ValueError, match="one bound per point"):
        KCenterGreedy(proxy_dim=None).extend(centers, points, 3, bounds=bounds[:5])


def test_extend_over_settled_rows_with_tied_bounds_covers_as_the_textbook(monkeypatch: pytest.MonkeyPatch) -> None:
    """Identical old patches (a uniform background) share one bound: ties at the pool's edge, few measured at a time."""
    import structcore.coreset

    monkeypatch.setattr(structcore.coreset, "MEASURE_BLOCK", 8)
    rng = np.random.default_rng(9)
    old = np.concatenate([np.ones((300, 8)), rng.normal(size=(100, 8))]).astype(np.float32)
    centers = rng.normal(size=(5, 8)).astype(np.float32) + 4.0
    exact = ((old[:, None, :] - centers[None, :, :]) ** 2).sum(axis=2).min(axis=1)
    points = np.concatenate([old, rng.normal(size=(50, 8)).astype(np.float32)])
    bounds = np.concatenate([exact, np.full(50, np.inf)]).astype(np.float32)
    extended = KCenterGreedy(proxy_dim=None).extend(centers, points, 40, bounds=bounds)
    assert len(extended.indices_) == len(set(extended.indices_.tolist())) == 40
    after = np.concatenate([centers, points[extended.indices_]])
    expected = covering_radius(points, np.concatenate([centers, points[_textbook_extend(centers, points, 40)]]))
    assert covering_radius(points, after) == pytest.approx(expected, rel=1e-5)


def test_distance_bounds_are_upper_bounds_to_the_nearest_center() -> None:
    rng = np.random.default_rng(8)
    centers = rng.normal(size=(400, 64)).astype(np.float32)
    points = rng.normal(size=(2000, 64)).astype(np.float32)
    selector = KCenterGreedy(proxy_dim=16, seed=2)
    bounds = selector.distance_bounds(centers, points)
    proxy_points, proxy_centers = selector._proxy(points).numpy(), selector._proxy(centers).numpy()
    nearest = ((proxy_points[:, None, :] - proxy_centers[None, :, :]) ** 2).sum(axis=2).min(axis=1)
    assert bounds.shape == (2000,) and (bounds >= nearest - 1e-3).all()
    assert np.mean(bounds <= nearest + 1e-3) > 0.5  # a near center is usually the nearest


def test_extend_edges() -> None:
    rng = np.random.default_rng(4)
    centers = rng.normal(size=(5, 8)).astype(np.float32)
    new = rng.normal(size=(30, 8)).astype(np.float32)
    assert len(KCenterGreedy(proxy_dim=None).extend(centers, new, 0).indices_) == 0
    assert sorted(KCenterGreedy(proxy_dim=None).extend(centers, new, 99).indices_.tolist()) == list(range(30))
    with pytest.raises(ValueError, match="one D"):
        KCenterGreedy().extend(centers, new[:, :4], 3)
