"""Routing (structcore.routing) and the ``unknown`` statistic on hand-made arrays: known answers, no backbone.

Shipped rule (docs/open-set.md): an image is unlike a category when its 30% patch-distance
quantile exceeds the category's far threshold (the 90% quantile of its leave-one-out train patch
distances), i.e. when more than 70% of its patches are far from every prototype.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from evaluation.store import InMemoryStore
from structcore.model import CategoryModel
from structcore.routing import (
    DEFAULT_UNKNOWN_STATISTIC,
    PrototypeRouter,
    check_unknown_statistic,
    l2_normalize,
    leave_one_out_patch_distances,
    patch_statistic,
    route_statistics,
)

DIM = 8


def _image(near: int, far: int) -> np.ndarray:
    """(1, near + far, DIM): ``near`` patches on prototype e0, ``far`` patches on e7 (no prototype)."""
    rows = [np.eye(DIM, dtype=np.float32)[0]] * near + [np.eye(DIM, dtype=np.float32)[7]] * far
    return np.stack(rows)[None]


def _router(
    threshold: float = 0.5, statistic: str = DEFAULT_UNKNOWN_STATISTIC, shortlist: int | None = None
) -> PrototypeRouter:
    router = PrototypeRouter(shortlist=shortlist)
    prototypes = np.eye(DIM, dtype=np.float32)[:4]  # e0..e3; e7 is at squared distance 2 from all
    router.add("known", prototypes, threshold=1.0, unknown_threshold=threshold, unknown_statistic=statistic,
               far_threshold=threshold)  # fmt: skip
    return router


def test_default_statistic_is_the_30_percent_quantile() -> None:
    assert DEFAULT_UNKNOWN_STATISTIC == "quantile-30"
    assert check_unknown_statistic("quantile-30") == "quantile-30"
    distances = torch.tensor([[0.0, 5.0], [1.0, 5.0], [2.0, 5.0], [3.0, 5.0], [4.0, 5.0]])
    np.testing.assert_allclose(patch_statistic(distances, "quantile-30").numpy(), [1.2, 5.0])
    with pytest.raises(ValueError, match="unknown statistic"):
        check_unknown_statistic("quantile-31")


def test_quantile_rule_equals_a_share_of_far_patches_above_seventy_percent() -> None:
    rng = np.random.default_rng(0)
    distances = torch.from_numpy(rng.uniform(0.0, 1.0, size=(100, 50)))
    threshold = 0.55
    quantile = patch_statistic(distances, "quantile-30").numpy()
    share = patch_statistic(distances, "far-share", torch.full((50,), threshold)).numpy()
    away = np.abs(share - 0.7) > 0.011  # away from the tie at exactly 70 of 100 patches
    assert away.sum() > 30
    np.testing.assert_array_equal((quantile > threshold)[away], (share > 0.7)[away])


def test_local_defect_stays_known_and_new_product_is_flagged() -> None:
    router = _router(threshold=0.5)
    defect = router.route(_image(near=60, far=40))  # 40% of the image unlike the category
    assert defect.categories == ["known"]
    assert defect.unknown_scores is not None
    assert defect.unknown_scores[0] == pytest.approx(0.0, abs=1e-6)  # 30% quantile: a near patch
    assert not defect.unknown[0]
    new_product = router.route(_image(near=20, far=80))  # 80% of the patches far from every prototype
    assert new_product.unknown_scores is not None
    assert new_product.unknown_scores[0] == pytest.approx(2.0 / 0.5, rel=1e-5)  # squared distance 2 over 0.5
    assert new_product.unknown[0]


def test_shortlisted_routing_gives_the_exact_unknown_scores() -> None:
    exact = _router(shortlist=None)
    short = _router(shortlist=1)
    extra = np.eye(DIM, dtype=np.float32)[4:6]
    for router in (exact, short):
        router.add("other", extra, threshold=1.0, unknown_threshold=0.5, far_threshold=0.5)
    images = np.concatenate([_image(60, 40), _image(20, 80), _image(100, 0)])
    full, listed = exact.route(images), short.route(images)
    assert listed.shortlist is not None
    assert full.unknown_scores is not None and listed.unknown_scores is not None
    np.testing.assert_allclose(listed.unknown_scores, full.unknown_scores, rtol=1e-5, atol=1e-6)
    assert full.unknown.tolist() == listed.unknown.tolist() == [False, True, False]


def test_router_keeps_each_versions_own_rule() -> None:
    """A far-share version (fitted before quantile-30) and a pre-0003 version keep their rules."""
    router = PrototypeRouter(shortlist=None)
    prototypes = np.eye(DIM, dtype=np.float32)[:4]
    router.add("new", prototypes, threshold=1.0, unknown_threshold=0.5, far_threshold=0.5)
    router.add("share", prototypes, threshold=1.0, unknown_threshold=0.5, unknown_statistic="far-share",
               far_threshold=0.5)  # fmt: skip
    router.add("legacy", prototypes, threshold=0.8)  # no unknown threshold: route score over 0.8
    _, ratios = router.score_all(_image(near=40, far=60))
    # 60% of the patches far: quantile-30 of (40 x 0, 60 x 2) = 0 (known); the far-share version
    # flags it (share 0.6 / 0.5), so does the pre-0003 rule (mean 1.2 / 0.8)
    np.testing.assert_allclose(ratios[0], [0.0, 1.2, 1.5], rtol=1e-5, atol=1e-6)


def _fitted(statistic: str = DEFAULT_UNKNOWN_STATISTIC) -> CategoryModel:
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(6, 16, DIM)).astype(np.float32)
    model = CategoryModel(coreset_ratio=0.5, n_prototypes=8, unknown_statistic=statistic, proxy_dim=None)
    return model.fit(vectors, (4, 4), 16)


def test_model_calibrates_far_threshold_leave_one_out_and_round_trips() -> None:
    model = _fitted()
    assert model.unknown_statistic == "quantile-30"
    assert np.isfinite(model.far_threshold_) and model.unknown_threshold_ == model.far_threshold_
    restored = CategoryModel.from_parts(model.to_arrays(), model.to_metadata())
    assert restored.unknown_rule() == model.unknown_rule()
    probe = np.random.default_rng(9).normal(size=(3, 16, DIM)).astype(np.float32)
    np.testing.assert_allclose(restored.unknown_score(probe), model.unknown_score(probe))
    found = route_statistics(probe, model.prototypes_, np.zeros(len(model.prototypes_), dtype=np.int64), 1,
                             ("quantile-30",))  # fmt: skip
    np.testing.assert_allclose(model.unknown_score(probe), found["quantile-30"][:, 0] / model.far_threshold_)


def test_model_far_share_version_keeps_its_rule() -> None:
    model = _fitted("far-share")
    assert model.unknown_threshold_ == 0.5
    restored = CategoryModel.from_parts(model.to_arrays(), model.to_metadata())
    assert restored.unknown_rule() == {
        "unknown_threshold": 0.5,
        "unknown_statistic": "far-share",
        "far_threshold": model.far_threshold_,
    }


def test_in_memory_store_router_uses_each_models_unknown_rule() -> None:
    """Regression: the in-memory store (``registry eval --in-memory``) once dropped the unknown
    thresholds, so its open-set figures measured the pre-0003 route-score rule."""
    store = InMemoryStore(extractor=None)  # type: ignore[arg-type]
    store.put("a", _fitted())
    store.put("b", _fitted("far-share"))
    router = store.detector().router
    assert router.unknown_statistics_ == ["quantile-30", "far-share"]
    assert router.unknown_thresholds_ == [store.load("a").unknown_threshold_, 0.5]
    assert np.isfinite(router.far_thresholds_).all()


def test_router_shortlist_matches_exact_routing() -> None:
    rng = np.random.default_rng(5)
    dim = 32
    centers = l2_normalize(rng.normal(size=(40, dim)).astype(np.float32))
    exact, shortlisted = PrototypeRouter(shortlist=None), PrototypeRouter(shortlist=4)
    for index, center in enumerate(centers):
        prototypes = l2_normalize(center + 0.2 * rng.normal(size=(16, dim)).astype(np.float32))
        exact.add(f"c{index}", prototypes, threshold=1.0)
        shortlisted.add(f"c{index}", prototypes, threshold=1.0)
    truth = rng.integers(40, size=12)
    images = np.stack([centers[t] + 0.2 * rng.normal(size=(50, dim)) for t in truth]).astype(np.float32)
    full, short = exact.route(images), shortlisted.route(images)
    assert full.categories == short.categories == [f"c{t}" for t in truth]
    assert short.shortlist is not None and short.shortlist.shape == (12, 4)
    assert np.isinf(short.all_scores).sum(axis=1).tolist() == [36] * 12
    chosen = np.isfinite(short.all_scores)
    np.testing.assert_allclose(short.all_scores[chosen], full.all_scores[chosen], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(short.route_scores, full.route_scores, rtol=1e-4, atol=1e-6)
    # With no more categories than the shortlist, routing is exact (no +inf).
    small = PrototypeRouter(shortlist=8)
    small.add("a", centers[:4])
    assert small.route(images[:2]).shortlist is None


def test_router_rejects_duplicates_and_empty() -> None:
    router = PrototypeRouter()
    with pytest.raises(ValueError, match="no categories"):
        router.scores(np.zeros((1, 4, 8), dtype=np.float32))
    router.add("a", np.eye(8, dtype=np.float32))
    with pytest.raises(ValueError, match="already"):
        router.add("a", np.eye(8, dtype=np.float32))


@pytest.mark.parametrize("block_rows", [7, 32768])
def test_leave_one_out_patch_distances_against_a_per_image_reference(
    monkeypatch: pytest.MonkeyPatch, block_rows: int
) -> None:
    """Blocks of images (one product, own prototypes masked) give each patch's squared distance to the
    nearest prototype of another image, as a per-image numpy computation does; block edges do not matter."""
    monkeypatch.setattr("structcore.routing._LOO_BLOCK_ROWS", block_rows)
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(9, 5, DIM)).astype(np.float32)
    prototypes = l2_normalize(rng.normal(size=(6, DIM)).astype(np.float32))
    owners = np.array([0, 0, 2, 5, 8, 8])
    found = leave_one_out_patch_distances(vectors, prototypes, owners)
    unit = vectors / np.linalg.norm(vectors, axis=2, keepdims=True)
    for image in range(len(vectors)):
        others = prototypes[owners != image]
        expected = ((unit[image][:, None, :] - others[None, :, :]) ** 2).sum(axis=2).min(axis=1)
        np.testing.assert_allclose(found[image], expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="every prototype comes from image 4"):
        leave_one_out_patch_distances(vectors, prototypes, np.full(6, 4))
