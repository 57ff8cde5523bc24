"""A registry with the ``tile`` input geometry, end to end: images at their own resolution cut into
tiles, records and regions at each image's own size, and nothing that would squash them accepts it."""

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
#: 64 px tiles over 128 x 64 px images: three tiles (at 0, 32 and 64 px) per image.
TILE = 64
TILES = {"input_geometry": "tile", "tile_max_side": 256, "tile_overlap": 16}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Data:
    return write_data(tmp_path_factory.mktemp("tile-data"))


@pytest.fixture(scope="module")
def wide(data: Data, tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], list[Path]]:
    folder = tmp_path_factory.mktemp("wide")
    return landscape_copies(data["pill"][0], folder / "train"), landscape_copies(data["pill"][1], folder / "test")


@pytest.fixture(scope="module")
def tile_root(tmp_path_factory: pytest.TempPathFactory, wide: tuple[list[Path], list[Path]]) -> Path:
    root = tmp_path_factory.mktemp("tile") / "registry"
    with Registry.init(root, resize=TILE, crop=TILE, **TILES) as registry:  # type: ignore[arg-type]
        registry.add_category("pill", wide[0], small_model())
    return root


def test_the_geometry_is_stored_and_shown(tile_root: Path) -> None:
    with Registry.open(tile_root, read_only=True) as registry:
        space = registry.feature_space
        assert (space.input_geometry, space.tile_max_side, space.tile_overlap) == ("tile", 256, 16)
        info = registry.feature_space_info()
        assert (info["input_geometry"], info["tile_max_side"], info["tile_overlap"]) == ("tile", 256, 16)
        assert registry.verify().ok
        model = registry.load_category("pill")
    assert model.tile_overlap_ == 16 and model.fitted_on_contents_


def test_records_regions_and_maps_at_the_original_size(tile_root: Path, wide: tuple[list[Path], list[Path]]) -> None:
    shapes: list[tuple[tuple[int, ...], tuple[int, ...]]] = []
    full: list[tuple[int, ...]] = []
    with Registry.open(tile_root, read_only=True) as registry:
        detector = registry.detector()
        records = detector.predict(
            wide[1],
            "pill",
            on_image=lambda record, image, anomaly_map, threshold: shapes.append((image.shape, anomaly_map.shape)),
            on_full_map=lambda record, full_map, threshold: full.append(full_map.shape),
        )
        in_memory = detector.predict([load_image(path) for path in wide[1]], "pill")
        routed = detector.predict(wide[1])
    assert [r["score_hybrid"] for r in records] == [r["score_hybrid"] for r in in_memory]
    assert all(r["category"] == "pill" and r["error"] is None for r in routed)
    width, height = SIZE, SIZE // 2
    assert shapes == [((3, height, width), (height, width))] * len(wide[1])  # the whole image, no square
    assert full == [(height, width)] * len(wide[1])
    for record in records:
        for region in record["regions"] or []:
            assert region["x"] + region["w"] <= width and region["y"] + region["h"] <= height


def test_strips_and_tiny_images_under_tile(tile_root: Path, tmp_path: Path) -> None:
    """A 2000 x 1 strip (capped to 256 x 1: one padded row of tiles), a 3 x 3 image: scored or refused."""
    sizes = ((2000, 1), (1, 700), (3, 3), (300, 90))
    paths = []
    for index, size in enumerate(sizes):
        Image.fromarray(np.full((size[1], size[0], 3), 128, dtype=np.uint8)).save(tmp_path / f"{index}.png")
        paths.append(tmp_path / f"{index}.png")
    with Registry.open(tile_root, read_only=True) as registry:
        records = registry.detector().predict(paths, "pill")
    for record, size in zip(records, sizes, strict=True):
        assert record["error"] is None and np.isfinite(record["score_hybrid"])  # type: ignore[arg-type]
        for region in record["regions"] or []:
            assert region["x"] + region["w"] <= size[0] and region["y"] + region["h"] <= size[1]


def test_export_update_and_bundles(
    tile_root: Path, data: Data, wide: tuple[list[Path], list[Path]], tmp_path: Path
) -> None:
    with Registry.open(tile_root, read_only=True) as registry:
        with pytest.raises(RegistryError, match=r"tile input geometry .* only squashes images"):
            export_deployment(registry, ["pill"], tmp_path / "deploy", "onnx")
        bundle = registry.export(None, tmp_path / "tile.h5")
        expected = [r["score_hybrid"] for r in registry.predict(wide[1], "pill")]
    with Registry.init(tmp_path / "empty", resize=TILE, crop=TILE) as target:  # squash, no categories: adopts
        target.import_(bundle)
        assert target.feature_space.input_geometry == "tile" and target.feature_space.tile_overlap == 16
        assert [r["score_hybrid"] for r in target.predict(wide[1], "pill")] == expected
    squash = make_base(tmp_path / "squash", data, ("grid",))
    with Registry.open(squash, read_only=True) as registry:
        squash_bundle = registry.export(None, tmp_path / "squash.h5")
    with Registry.init(tmp_path / "other", resize=TILE, crop=TILE, **TILES) as registry:  # type: ignore[arg-type]
        registry.add_category("pill", wide[0][:4], small_model())
        with pytest.raises(BundleFeatureSpaceError, match="input_geometry: tile vs squash"):
            registry.import_(squash_bundle)
        assert registry.names() == ["pill"]


def test_registry_update_refits_a_tile_version_with_a_note(wide: tuple[list[Path], list[Path]], tmp_path: Path) -> None:
    root = tmp_path / "registry"
    with Registry.init(root, resize=TILE, crop=TILE, **TILES) as registry:  # type: ignore[arg-type]
        registry.add_category("pill", wide[0][:-2], small_model(), keep_patches=True)
    new = tmp_path / "new"
    new.mkdir()
    for path in wide[0][-2:]:
        (new / path.name).write_bytes(path.read_bytes())
    notes: list[str] = []
    with Registry.open(root) as registry:
        result = update_category(registry, "pill", sorted(new.iterdir()), notice=notes.append)
    assert result.mode == "refit"
    assert any("refitted" in note and "tile input geometry" in note for note in notes), notes


def test_a_model_fitted_for_another_geometry_is_refused(tmp_path: Path) -> None:
    with Registry.init(tmp_path / "tile", resize=TILE, crop=TILE, **TILES) as registry:  # type: ignore[arg-type]
        grid = registry.extractor().grid_shape()
        vectors = np.random.default_rng(0).standard_normal((6, 2 * grid[0] * grid[1], registry.feature_space.dim))
        contents = np.tile([TILE, TILE + 16], (6, 1))  # two tiles each
        fitted = small_model().fit(
            vectors.astype(np.float32)[:, : grid[0] * grid[1]], grid, TILE, contents=contents[:, :1].repeat(2, 1)
        )
        with pytest.raises(FeatureSpaceMismatchError, match="input_geometry: fitted as fit vs tile"):
            registry.add_fitted("noise", fitted)
        wrong_overlap = small_model().fit(vectors.astype(np.float32), grid, TILE, contents=contents, tile_overlap=8)
        with pytest.raises(FeatureSpaceMismatchError, match="fitted as tile vs tile"):
            registry.add_fitted("noise", wrong_overlap)
        registry.add_fitted(
            "noise", small_model().fit(vectors.astype(np.float32), grid, TILE, contents=contents, tile_overlap=16)
        )
        assert registry.names() == ["noise"]
