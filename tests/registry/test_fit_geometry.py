"""A registry with the ``fit`` input geometry, end to end: non-square images keep their aspect ratio,
records and regions come at each image's own size, and nothing that would squash them accepts it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from registry import BundleFeatureSpaceError, FeatureSpaceMismatchError, Registry, RegistryError
from registry.deploy import export_deployment
from registry.updates import update_category
from structcore.preprocess import load_image
from tests.support_registry import SIZE, landscape_copies, make_base, small_model, write_data

Data = dict[str, tuple[list[Path], list[Path]]]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Data:
    return write_data(tmp_path_factory.mktemp("fit-data"))


@pytest.fixture(scope="module")
def wide(data: Data, tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], list[Path]]:
    folder = tmp_path_factory.mktemp("wide")
    return landscape_copies(data["pill"][0], folder / "train"), landscape_copies(data["pill"][1], folder / "test")


@pytest.fixture(scope="module")
def fit_root(tmp_path_factory: pytest.TempPathFactory, wide: tuple[list[Path], list[Path]]) -> Path:
    root = tmp_path_factory.mktemp("fit") / "registry"
    with Registry.init(root, resize=SIZE, crop=SIZE, input_geometry="fit") as registry:
        registry.add_category("pill", wide[0], small_model())
    return root


def test_the_geometry_is_stored_and_shown(fit_root: Path) -> None:
    with Registry.open(fit_root, read_only=True) as registry:
        assert registry.feature_space.input_geometry == "fit"
        assert registry.feature_space_info()["input_geometry"] == "fit"
        assert registry.verify().ok
    with pytest.raises(ValueError, match=r"input_geometry must be one of squash, fit, tile"):
        Registry.init(fit_root.parent / "cropped", input_geometry="crop")


def test_records_and_regions_at_the_original_size(fit_root: Path, wide: tuple[list[Path], list[Path]]) -> None:
    with Registry.open(fit_root, read_only=True) as registry:
        detector = registry.detector()
        records = detector.predict(wide[1], "pill")
        in_memory = detector.predict([load_image(path) for path in wide[1]], "pill")
        routed = detector.predict(wide[1])
    assert [r["score_hybrid"] for r in records] == [r["score_hybrid"] for r in in_memory]
    assert all(r["category"] == "pill" and r["error"] is None for r in routed)
    width, height = SIZE, SIZE // 2
    for record in records:
        for region in record["regions"] or []:
            assert 0 <= region["x"] < width and 0 <= region["y"] < height
            assert region["x"] + region["w"] <= width and region["y"] + region["h"] <= height


def test_the_maps_cover_the_content_only(fit_root: Path, wide: tuple[list[Path], list[Path]]) -> None:
    shapes: list[tuple[tuple[int, ...], tuple[int, ...]]] = []
    full: list[tuple[int, ...]] = []
    with Registry.open(fit_root, read_only=True) as registry:
        registry.detector().predict(
            wide[1][:2],
            "pill",
            on_image=lambda record, image, anomaly_map, threshold: shapes.append((image.shape, anomaly_map.shape)),
            on_full_map=lambda record, full_map, threshold: full.append(full_map.shape),
        )
    assert shapes == [((3, SIZE // 2, SIZE), (SIZE // 2, SIZE))] * 2
    assert full == [(SIZE // 2, SIZE)] * 2  # (height, width) of the original images


def test_a_squash_bundle_is_refused_and_export_needs_squash(fit_root: Path, data: Data, tmp_path: Path) -> None:
    squash = make_base(tmp_path / "squash", data, ("grid",))
    with Registry.open(squash, read_only=True) as registry:
        bundle = registry.export(None, tmp_path / "squash.h5")
        assert registry.feature_space.input_geometry == "squash"
    target = tmp_path / "fit-copy"
    with Registry.init(target, resize=SIZE, crop=SIZE, input_geometry="fit") as registry:
        registry.add_category("tile", data["tile"][0], small_model())
        with pytest.raises(BundleFeatureSpaceError, match="input_geometry: fit vs squash"):
            registry.import_(bundle)
        assert registry.names() == ["tile"]
    with (
        Registry.open(fit_root, read_only=True) as registry,
        pytest.raises(RegistryError, match=r"fit input geometry .* only squashes images"),
    ):
        export_deployment(registry, ["pill"], tmp_path / "deploy", "onnx")


def test_a_fit_version_is_not_updated_incrementally(fit_root: Path) -> None:
    with Registry.open(fit_root, read_only=True) as registry:
        model = registry.load_category("pill")
    assert model.fitted_on_contents_
    empty = np.zeros((model.n_train_images_, model.grid_[0] * model.grid_[1], model.bank_.shape[1]), np.float32)
    with pytest.raises(ValueError, match="fit-geometry registry cannot be updated incrementally"):
        model.updated(empty, empty[:1])


def test_registry_update_refits_a_fit_version_with_a_note(wide: tuple[list[Path], list[Path]], tmp_path: Path) -> None:
    """A fit version with stored patches goes to the refit path (named in a note), not to a traceback."""
    root = tmp_path / "registry"
    with Registry.init(root, resize=SIZE, crop=SIZE, input_geometry="fit") as registry:
        registry.add_category("pill", wide[0][:-2], small_model(), keep_patches=True)
    new = tmp_path / "new"
    new.mkdir()
    for path in wide[0][-2:]:
        (new / path.name).write_bytes(path.read_bytes())
    notes: list[str] = []
    with Registry.open(root) as registry:
        result = update_category(registry, "pill", sorted(new.iterdir()), notice=notes.append)
    assert result.mode == "refit"
    assert any("refitted" in note and "fit input geometry" in note for note in notes), notes
    with Registry.open(root, read_only=True) as registry:
        assert registry.version_info("pill").n_train_images == len(wide[0])
        assert registry.load_category("pill").fitted_on_contents_


def test_a_fit_bundle_carries_its_geometry(fit_root: Path, wide: tuple[list[Path], list[Path]], tmp_path: Path) -> None:
    with Registry.open(fit_root, read_only=True) as registry:
        bundle = registry.export(None, tmp_path / "fit.h5")
        expected = [r["score_hybrid"] for r in registry.predict(wide[1], "pill")]
    with Registry.init(tmp_path / "empty", resize=SIZE, crop=SIZE) as target:  # squash, no categories: adopts
        target.import_(bundle)
        assert target.feature_space.input_geometry == "fit"
        assert [r["score_hybrid"] for r in target.predict(wide[1], "pill")] == expected


def test_strips_and_tiny_images_under_fit(fit_root: Path, tmp_path: Path) -> None:
    """A 5000 x 1 strip keeps one row of valid patches, a 3 x 3 image one patch: scored or refused, never a crash."""
    paths = []
    for name, size in (("strip.png", (5000, 1)), ("tall.png", (1, 700)), ("tiny.png", (3, 3))):
        Image.fromarray(np.full((size[1], size[0], 3), 128, dtype=np.uint8)).save(tmp_path / name)
        paths.append(tmp_path / name)
    with Registry.open(fit_root, read_only=True) as registry:
        records = registry.detector().predict(paths, "pill")
    for record, size in zip(records, ((5000, 1), (1, 700), (3, 3)), strict=True):
        if record["error"] is None:
            assert np.isfinite(record["score_hybrid"])  # type: ignore[arg-type]
            for region in record["regions"] or []:
                assert region["x"] + region["w"] <= size[0] and region["y"] + region["h"] <= size[1]


def test_a_model_fitted_for_another_geometry_is_refused(fit_root: Path, tmp_path: Path) -> None:
    with Registry.init(tmp_path / "fit", resize=64, crop=64, input_geometry="fit") as registry:
        grid = registry.extractor().grid_shape()
        vectors = np.random.default_rng(0).standard_normal((6, grid[0] * grid[1], registry.feature_space.dim))
        squashed = small_model().fit(vectors.astype(np.float32), grid, 64)
        with pytest.raises(FeatureSpaceMismatchError, match="input_geometry: fitted as squash vs fit"):
            registry.add_fitted("noise", squashed)
        contents = np.full((6, 2), 64)
        registry.add_fitted("noise", small_model().fit(vectors.astype(np.float32), grid, 64, contents=contents))
        assert registry.names() == ["noise"]
