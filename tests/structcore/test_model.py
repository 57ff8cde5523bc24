"""The category model (structcore.model) with the real embedded backbone on synthetic categories:
scores, calibration modes, round trip, and routing between fitted models."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from evaluation.synthetic import make_category
from structcore.anomaly_map import gaussian_blur
from structcore.model import CategoryModel, embed_images
from structcore.preprocess import valid_patch_mask
from structcore.routing import PrototypeRouter
from structcore.thresholds import choose_threshold
from structcore.tiles import stitch_map, tiled_valid_mask


@pytest.fixture(scope="module")
def synthetic_features(small_extractor):  # type: ignore[no-untyped-def]
    """Patch vectors of three synthetic categories (train and test) at 128 px."""
    features = {}
    for kind, seed in [("carpet", 1), ("pill", 2), ("wood", 3)]:
        category = make_category(kind, n_train=12, n_test_good=4, n_test_bad=4, seed=seed, size=128)
        features[kind] = (
            embed_images(small_extractor, category.train_images),
            embed_images(small_extractor, category.test_images),
            np.asarray(category.test_labels, dtype=bool),
        )
    return features


def test_category_model_scores_defects_higher(synthetic_features, small_extractor) -> None:  # type: ignore[no-untyped-def]
    train, test, labels = synthetic_features["carpet"]
    model = CategoryModel(coreset_ratio=0.1).fit(train, small_extractor.grid_shape(), 128)
    prediction = model.predict(test)
    assert prediction.maps.shape == (len(test), 128, 128)
    for kind in ("base", "hybrid"):
        scores = prediction.scores.by_kind(kind)
        assert scores[labels].mean() > scores[~labels].mean()


@pytest.mark.parametrize("mode", ["loo", "in-sample", "holdout", "mixed"])
def test_calibration_modes(synthetic_features, small_extractor, mode) -> None:  # type: ignore[no-untyped-def]
    train, _, _ = synthetic_features["pill"]
    model = CategoryModel(coreset_ratio=0.1, calibration=mode).fit(train, small_extractor.grid_shape(), 128)
    expected_count = 2 if mode == "holdout" else len(train)  # 20% of 12 rounds to 2
    assert model.calibrator_.n_samples_ == expected_count
    assert set(model.thresholds) == {"base", "struct", "hybrid"}
    if mode == "holdout":
        assert len(model.bank_image_ids_) and len(set(model.bank_image_ids_.tolist())) <= len(train) - 2


def test_loo_excludes_own_image(synthetic_features, small_extractor) -> None:  # type: ignore[no-untyped-def]
    train, _, _ = synthetic_features["wood"]
    grid = small_extractor.grid_shape()
    loo = CategoryModel(coreset_ratio=0.2, calibration="loo").fit(train, grid, 128)
    in_sample = CategoryModel(coreset_ratio=0.2, calibration="in-sample").fit(train, grid, 128)
    np.testing.assert_array_equal(loo.bank_, in_sample.bank_)
    # In-sample maps see their own bank vectors (distance 0): LOO base scores are never lower.
    assert np.all(loo.calibration_scores_["base"] >= in_sample.calibration_scores_["base"] - 1e-9)
    # Brute force for image 0: drop its own bank rows, kNN on the rest.
    others = loo.bank_[loo.bank_image_ids_ != 0].astype(np.float64)
    squared = ((train[0][:, None, :].astype(np.float64) - others[None]) ** 2).sum(-1)
    patch_scores = np.sort(squared, axis=1)[:, :5].mean(axis=1)
    from structcore.anomaly_map import anomaly_maps

    expected_base = anomaly_maps(patch_scores.reshape(1, *grid), 128).max()
    assert loo.calibration_scores_["base"][0] == pytest.approx(expected_base, rel=1e-4)


def test_mixed_takes_statistics_in_sample_and_thresholds_loo(synthetic_features, small_extractor) -> None:  # type: ignore[no-untyped-def]
    train, _, _ = synthetic_features["wood"]
    grid = small_extractor.grid_shape()
    fits = {
        mode: CategoryModel(coreset_ratio=0.2, calibration=mode).fit(train, grid, 128)
        for mode in ("loo", "in-sample", "mixed")
    }
    mixed, in_sample, loo = fits["mixed"].calibrator_, fits["in-sample"].calibrator_, fits["loo"].calibrator_
    np.testing.assert_allclose(mixed.mu_, in_sample.mu_)
    np.testing.assert_allclose(mixed.sigma_, in_sample.sigma_)
    assert mixed.lambda_ == pytest.approx(in_sample.lambda_)
    # thresholds and stored calibration scores: the loo maps, scored with the in-sample statistics
    np.testing.assert_allclose(fits["mixed"].calibration_scores_["base"], fits["loo"].calibration_scores_["base"])
    assert mixed.thresholds_["base"] == pytest.approx(loo.thresholds_["base"])
    hybrid = fits["mixed"].calibration_scores_["hybrid"]
    assert mixed.thresholds_["hybrid"] == pytest.approx(choose_threshold(hybrid).value)  # the default rule
    restored = CategoryModel.from_parts(fits["mixed"].to_arrays(), fits["mixed"].to_metadata())
    assert restored.calibration == "mixed" and restored.thresholds == fits["mixed"].thresholds


@pytest.mark.parametrize("scoring", ["robust", "paper"])
def test_scoring_is_stored_with_the_calibrator(synthetic_features, small_extractor, scoring) -> None:  # type: ignore[no-untyped-def]
    train, test, _ = synthetic_features["carpet"]
    model = CategoryModel(coreset_ratio=0.1, scoring=scoring).fit(train, small_extractor.grid_shape(), 128)
    assert model.calibrator_.scoring == scoring
    metadata = model.to_metadata()
    assert "scoring" not in metadata["params"]  # type: ignore[operator]
    assert metadata["calibrator"]["scoring"] == scoring  # type: ignore[index]
    restored = CategoryModel.from_parts(model.to_arrays(), metadata)
    assert restored.scoring == scoring and restored.get_params()["scoring"] == scoring
    np.testing.assert_array_equal(restored.predict(test).scores.hybrid, model.predict(test).scores.hybrid)


def test_model_round_trip(synthetic_features, small_extractor) -> None:  # type: ignore[no-untyped-def]
    train, test, _ = synthetic_features["carpet"]
    model = CategoryModel(coreset_ratio=0.1).fit(train, small_extractor.grid_shape(), 128)
    restored = CategoryModel.from_parts(model.to_arrays(), model.to_metadata())
    np.testing.assert_array_equal(restored.predict(test).scores.hybrid, model.predict(test).scores.hybrid)


def test_router_picks_category_and_flags_unknown(synthetic_features, small_extractor) -> None:  # type: ignore[no-untyped-def]
    router = PrototypeRouter()
    grid = small_extractor.grid_shape()
    for kind in ("carpet", "pill"):
        model = CategoryModel(coreset_ratio=0.1).fit(synthetic_features[kind][0], grid, 128)
        router.add(kind, model.prototypes_, model.route_threshold_)
    for kind in ("carpet", "pill"):
        test = synthetic_features[kind][1]
        result = router.route(test)
        assert result.categories == [kind] * len(test)
        assert result.all_scores.shape == (len(test), 2)
        good = ~synthetic_features[kind][2]
        assert not result.unknown[good].any()
    unseen = router.route(synthetic_features["wood"][1])
    assert unseen.unknown.all()


@pytest.mark.parametrize("mode", ["mixed", "loo", "in-sample"])
def test_incremental_update_equals_the_full_search_on_the_same_bank(synthetic_features, small_extractor, mode) -> None:  # type: ignore[no-untyped-def]
    """An update from the stored k-nearest distances (old patches x new bank vectors only, merged)
    gives the distances, statistics and thresholds of searching every image against the whole bank."""
    train = synthetic_features["pill"][0].astype(np.float16).astype(np.float32)  # as stored: float16
    old, new = train[:8], train[8:]
    grid, crop = small_extractor.grid_shape(), small_extractor.geometry.crop
    model = CategoryModel(coreset_ratio=0.1, calibration=mode, n_prototypes=8).fit(old, grid, crop)
    assert model.train_distances_ is not None
    assert set(model.train_distances_) == {*model.distance_kinds(), "coreset"}
    assert model.train_distances_["in_sample"].shape == (8, grid[0] * grid[1], model.k)
    assert model.train_distances_["coreset"].shape == (8, grid[0] * grid[1])
    incremental = model.updated(old, new, old_distances=model.train_distances_)
    full = model.updated(old, new)  # no stored distances: searched (the coreset's: bounds from a near center)
    assert (incremental.update_search_, full.update_search_) == ("merged", "full")
    assert np.array_equal(incremental.bank_, full.bank_) and len(full.bank_) > len(model.bank_)
    added_from = incremental.bank_image_ids_[len(model.bank_) :]
    assert (added_from < 8).any() and (added_from >= 8).any()  # the continuation picks old patches too
    assert incremental.train_distances_ is not None and full.train_distances_ is not None
    for kind in model.distance_kinds():
        assert incremental.train_distances_[kind].shape == (12, grid[0] * grid[1], model.k)
        np.testing.assert_allclose(
            incremental.train_distances_[kind], full.train_distances_[kind], rtol=1e-5, atol=1e-6
        )
    if mode != "in-sample":  # some old patches changed their neighbours: the merge did something
        assert not np.allclose(incremental.train_distances_["loo"][:8], model.train_distances_["loo"])
    for kind in ("base", "struct", "hybrid"):
        np.testing.assert_allclose(incremental.calibration_scores_[kind], full.calibration_scores_[kind], rtol=1e-5)
        assert incremental.thresholds[kind] == pytest.approx(full.thresholds[kind], rel=1e-5)
    for key in ("mu", "sigma"):
        np.testing.assert_allclose(
            incremental.calibrator_.get_state()[key], full.calibrator_.get_state()[key], rtol=1e-5
        )
    assert incremental.calibrator_.lambda_ == pytest.approx(full.calibrator_.lambda_, rel=1e-5)
    assert incremental.update_seconds_ is not None and "distances" in incremental.update_seconds_
    with pytest.raises(ValueError, match="stored train distances"):
        model.updated(old, new, old_distances={})


def test_update_with_many_new_images_on_few_old_ones_searches_the_grown_bank() -> None:
    """When most of the bank is new, merging would measure hundreds of pairs per patch: the update
    searches every image against the grown bank instead, with the same result as without stored distances."""
    rng = np.random.default_rng(5)
    old = rng.normal(size=(3, 64, 32)).astype(np.float32)
    new = rng.normal(size=(40, 64, 32)).astype(np.float32)
    model = CategoryModel(coreset_ratio=0.25, n_prototypes=4, proxy_dim=None).fit(old, (8, 8), 32)
    assert model.train_distances_ is not None
    dense = model.updated(old, new, old_distances=model.train_distances_)
    plain = model.updated(old, new)
    assert (dense.update_search_, plain.update_search_) == ("full", "full")
    assert dense.train_distances_ is not None and plain.train_distances_ is not None
    for kind in model.distance_kinds():
        np.testing.assert_array_equal(dense.train_distances_[kind], plain.train_distances_[kind])
    assert dense.thresholds == plain.thresholds


# ----------------------------------------------------------------------------- the fit geometry
def _fit_contents(count: int) -> np.ndarray:
    """Contents (height, width) in the 128 px square: landscape, portrait and square images."""
    shapes = [(64, 128), (128, 64), (128, 128), (96, 128), (128, 40)]
    return np.asarray([shapes[i % len(shapes)] for i in range(count)])


def _with_padding(vectors: np.ndarray, contents: np.ndarray, value: float) -> np.ndarray:
    """``vectors`` with every padding patch set to ``value``."""
    out = vectors.copy()
    out[~valid_patch_mask(contents, (16, 16), 128)] = value
    return out


def test_fit_padding_never_counts(synthetic_features, small_extractor) -> None:  # type: ignore[no-untyped-def]
    """Padding patches are not in the bank nor the prototypes, and the statistics ignore them."""
    train, _, _ = synthetic_features["carpet"]
    contents = _fit_contents(len(train))
    grid = small_extractor.grid_shape()
    fitted = [
        CategoryModel(coreset_ratio=0.2).fit(_with_padding(train, contents, value), grid, 128, contents=contents)
        for value in (1000.0, -3.0)
    ]
    first, second = fitted
    assert not np.any(first.bank_ == 1000.0)  # k-center greedy would pick the far marker first
    np.testing.assert_array_equal(first.bank_, second.bank_)
    np.testing.assert_array_equal(first.prototypes_, second.prototypes_)
    for kind in ("base", "struct", "hybrid"):
        np.testing.assert_array_equal(first.calibration_scores_[kind], second.calibration_scores_[kind])
    assert first.route_threshold_ == second.route_threshold_
    assert first.unknown_threshold_ == second.unknown_threshold_ and first.far_threshold_ == second.far_threshold_
    assert first.to_metadata()["fitted_on_contents"] is True
    assert "fitted_on_contents" not in CategoryModel(coreset_ratio=0.2).fit(train, grid, 128).to_metadata()


def test_fit_maps_against_a_reference_on_the_valid_region(synthetic_features, small_extractor) -> None:  # type: ignore[no-untyped-def]
    """A 2:1 image's map is the valid patches' scores upsampled and blurred onto its content alone."""
    train, test, _ = synthetic_features["carpet"]
    contents = _fit_contents(len(train))
    grid = small_extractor.grid_shape()
    model = CategoryModel(coreset_ratio=0.2).fit(train, grid, 128, contents=contents)
    test_contents = np.asarray([[64, 128]] * len(test))
    prediction = model.predict(_with_padding(test, test_contents, 50.0), test_contents)
    valid_scores = model.knn().score(test[:, : 8 * 16].reshape(-1, test.shape[2])).reshape(len(test), 8, 16)
    upsampled = F.interpolate(torch.from_numpy(valid_scores)[:, None], size=(64, 128), mode="bilinear")
    reference = gaussian_blur(upsampled[:, 0].float(), model.sigma).numpy()
    for found, expected in zip(prediction.maps, reference, strict=True):
        assert found.shape == (64, 128)
        np.testing.assert_allclose(found, expected, rtol=1e-4, atol=1e-5)
    expected_scores = model.calibrator_.score(reference)
    np.testing.assert_allclose(prediction.scores.base, expected_scores.base, rtol=1e-5)
    np.testing.assert_allclose(prediction.scores.hybrid, expected_scores.hybrid, rtol=1e-4, atol=1e-6)
    # routing sees the valid patches only: the padding's value does not move it
    valid = valid_patch_mask(test_contents, grid, 128)
    np.testing.assert_array_equal(
        model.unknown_score(_with_padding(test, test_contents, 50.0), valid),
        model.unknown_score(_with_padding(test, test_contents, -1.0), valid),
    )
    np.testing.assert_allclose(model.route_score(test, valid), model.route_score(test[:, : 8 * 16]), rtol=1e-12)


def test_fit_with_full_contents_matches_squash(synthetic_features, small_extractor) -> None:  # type: ignore[no-untyped-def]
    """Square images under fit: every patch valid, the same model and (up to rounding) the same maps."""
    train, test, _ = synthetic_features["pill"]
    grid = small_extractor.grid_shape()
    squash = CategoryModel(coreset_ratio=0.2).fit(train, grid, 128)
    full = np.full((len(train), 2), 128)
    fit = CategoryModel(coreset_ratio=0.2).fit(train, grid, 128, contents=full)
    np.testing.assert_array_equal(squash.bank_, fit.bank_)
    np.testing.assert_array_equal(squash.prototypes_, fit.prototypes_)
    np.testing.assert_allclose(squash.calibration_scores_["hybrid"], fit.calibration_scores_["hybrid"], rtol=1e-5)
    squashed = squash.predict(test)
    fitted = fit.predict(test, np.full((len(test), 2), 128))
    np.testing.assert_allclose(np.stack(fitted.maps), squashed.maps, rtol=1e-5, atol=1e-6)


def test_router_routes_each_image_on_its_valid_patches(synthetic_features, small_extractor) -> None:  # type: ignore[no-untyped-def]
    grid = small_extractor.grid_shape()
    router = PrototypeRouter()
    for kind in ("carpet", "pill", "wood"):
        train = synthetic_features[kind][0]
        router.add(kind, CategoryModel(coreset_ratio=0.1).fit(train, grid, 128).prototypes_)
    test = np.concatenate([synthetic_features[kind][1][:2] for kind in ("carpet", "pill", "wood")])
    contents = _fit_contents(len(test))
    valid = valid_patch_mask(contents, grid, 128)
    routed = router.route(_with_padding(test, contents, 9.0), valid)
    for i in range(len(test)):
        alone = router.route(test[i : i + 1, valid[i]])
        assert routed.categories[i] == alone.categories[0]
        np.testing.assert_array_equal(routed.all_scores[i], alone.all_scores[0])


# ----------------------------------------------------------------------------- the tile geometry
def _tiled(vectors: np.ndarray, slots: int) -> np.ndarray:
    """Squash images' patch vectors (n, P, D) regrouped as tiled images of ``slots`` tiles (n / slots, slots * P, D)."""
    count = len(vectors) // slots
    return vectors[: count * slots].reshape(count, slots * vectors.shape[1], vectors.shape[2]).copy()


def test_tile_model_bank_leave_one_out_and_stitched_maps(synthetic_features, small_extractor) -> None:  # type: ignore[no-untyped-def]
    """Tiled images: padding never counts, leave-one-out leaves out the whole image, maps are the tiles stitched."""
    train, test, _ = synthetic_features["carpet"]
    grid = small_extractor.grid_shape()
    patches = grid[0] * grid[1]
    tiled = _tiled(train, 2)  # 6 images of two 128 px tiles: 128 x 200 px (tiles at 0 and 72)
    contents = np.asarray([[128, 200]] * 5 + [[100, 128]])  # the last: one tile, part padding, one empty slot
    valid = tiled_valid_mask(contents, grid, 128, 56, 2)
    assert valid[:5].all() and not valid[5, patches:].any() and not valid[5, :patches].all()
    tiled[~valid] = 1000.0
    model = CategoryModel(coreset_ratio=0.2).fit(tiled, grid, 128, contents=contents, tile_overlap=56)
    assert not np.any(model.bank_ == 1000.0)
    assert model.bank_image_ids_.max() < len(tiled)  # ids of images, not of tiles
    # leave-one-out: the nearest bank vectors of image 0's patches come from the other images only
    others = model.bank_[model.bank_image_ids_ != 0].astype(np.float32)
    queries = tiled[0, :patches]
    brute = ((queries[:, None, :] - others[None, :, :]) ** 2).sum(axis=2)
    brute.sort(axis=1)
    assert model.train_distances_ is not None
    np.testing.assert_allclose(model.train_distances_["loo"][0, :patches], brute[:, : model.k], rtol=1e-3, atol=1e-3)
    # predict: the stitched map of each image's patch scores; the scores are the calibrator's on it
    test_tiled = _tiled(test, 2)
    test_contents = np.asarray([[128, 200]] * len(test_tiled))
    prediction = model.predict(test_tiled, test_contents)
    scores = model.patch_scores(test_tiled)
    for found, row in zip(prediction.maps, scores, strict=True):
        assert found.shape == (128, 200)
        np.testing.assert_allclose(found, stitch_map(row, (128, 200), grid, 128, 56, model.sigma), rtol=1e-6)
    expected = model.calibrator_.score(np.stack(prediction.maps))
    np.testing.assert_allclose(prediction.scores.hybrid, expected.hybrid, rtol=1e-5, atol=1e-6)
    # stored and read back as a tiled model; incremental updates refuse it
    again = CategoryModel.from_parts(model.to_arrays(), model.to_metadata())
    assert again.tile_overlap_ == 56 and model.to_metadata()["tile_overlap"] == 56
    np.testing.assert_allclose(np.stack(again.predict(test_tiled, test_contents).maps), np.stack(prediction.maps))
    with pytest.raises(ValueError, match="tile-geometry"):
        model.updated(tiled.astype(np.float16), tiled[:1])
