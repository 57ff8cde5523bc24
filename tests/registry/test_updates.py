"""registry.updates at the API level: image records of older versions, sources, the model it writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from evaluation.synthetic import make_category, write_mvtec_layout
from registry import Registry, storage
from registry.errors import RegistryError
from registry.records import TRAIN_DISTANCES, TRAIN_IMAGE_INFO, TRAIN_PATCHES
from registry.updates import image_records, train_image_list, update_category
from structcore.model import CategoryModel, fit_category
from tests.support_registry import SIZE, make_base, small_model, write_data


def _new_pill_images(folder: Path, count: int, seed: int) -> list[Path]:
    """``count`` new good pill images (synthetic, seeded), written under ``folder``."""
    written = write_mvtec_layout(make_category("pill", count, 0, 0, seed, size=SIZE), folder, "pill")
    return sorted((written / "train" / "good").glob("*.png"))


def test_image_records_of_versions_without_hashes() -> None:
    assert image_records({}, ["a.png", "b.png"]) == [
        {"name": "a.png", "sha256": None, "source": "fit"},
        {"name": "b.png", "sha256": None, "source": "fit"},
    ]
    stored = [{"name": "a.png", "sha256": "0" * 64, "source": "update"}]
    assert image_records({TRAIN_IMAGE_INFO: stored}, ["a.png"]) == stored


def test_update_category_through_the_api(tmp_path: Path) -> None:
    data = write_data(tmp_path / "images")
    root = make_base(tmp_path / "registry", data, ("pill",), keep_patches=True)
    new = _new_pill_images(tmp_path / "new", 3, seed=42)
    stages: list[str] = []
    with Registry.open(root) as registry:
        with pytest.raises(ValueError, match="source"):
            update_category(registry, "pill", new, source="elsewhere")
        result = update_category(
            registry, "pill", [*new, new[0]], source="feedback", progress=lambda e: stages.append(e.stage)
        )
        assert result.mode == "update" and len(result.added) == 3 and result.duplicates == [str(new[0].resolve())]
        assert {"embed", "coreset", "prototypes", "calibration", "write", "done"} <= set(stages)
        info, records = train_image_list(registry, "pill")
        assert info.version == 2 and info.origin == "feedback:v1"
        assert [r["source"] for r in records] == ["fit"] * 6 + ["feedback"] * 3
        assert registry.version_info("pill").arrays[TRAIN_PATCHES]["shape"] == [9, 256, 512]
        for kind, array in TRAIN_DISTANCES.items():  # mixed calibration: both lists (k = 5), and the coreset's
            last = [] if kind == "coreset" else [5]
            assert registry.version_info("pill", 1).arrays[array]["shape"] == [6, 256, *last], kind
            assert registry.version_info("pill").arrays[array]["shape"] == [9, 256, *last], kind
        assert result.seconds["distances"] > 0 and result.distance_search == "merged"
        for version in (1, 2):  # chunks of 64 images: nothing to link from 6 old ones, all written
            assert (root / registry.version_info("pill", version).array_store / TRAIN_PATCHES / "c").is_dir()
        with pytest.raises(RegistryError, match="nothing to add"):
            update_category(registry, "pill", new)
        assert registry.verify().ok


def test_updated_model_keeps_the_bank_and_recomputes_the_rest() -> None:
    rng = np.random.default_rng(0)
    grid = (4, 4)
    old = rng.normal(size=(6, 16, 32)).astype(np.float32)
    new = rng.normal(0.5, 1.0, size=(3, 16, 32)).astype(np.float32)
    model = CategoryModel(coreset_ratio=0.25, n_prototypes=4, proxy_dim=None).fit(old, grid, 16)
    updated = model.updated(old.astype(np.float16), new)
    assert np.array_equal(updated.bank_[: len(model.bank_)], model.bank_)
    assert len(updated.bank_) == int(np.ceil(9 * 16 * 0.25))
    assert updated.n_train_images_ == 9 and updated.calibration_scores_["hybrid"].shape == (9,)
    assert len(model.bank_) == int(np.ceil(6 * 16 * 0.25))  # the parent is not modified
    with pytest.raises(ValueError, match="stored patches"):
        model.updated(old[:5], new)
    holdout = CategoryModel(coreset_ratio=0.25, n_prototypes=4, calibration="holdout").fit(old, grid, 16)
    with pytest.raises(ValueError, match="holdout"):
        holdout.updated(old, new)


def test_a_version_without_stored_distances_updates_and_keeps_them(tmp_path: Path) -> None:
    data = write_data(tmp_path / "images")
    train = data["pill"][0]
    notes: list[str] = []
    with Registry.init(tmp_path / "registry", resize=SIZE, crop=SIZE) as registry:
        model = fit_category(registry.extractor(), train[:4], small_model(), keep_patches=True)
        model.train_distances_ = None  # as stored by the first `--keep-patches` versions
        registry.add_fitted("pill", model, train_images=train[:4])
        assert not set(TRAIN_DISTANCES.values()) & set(registry.version_info("pill").arrays)
        result = update_category(registry, "pill", train[4:], notice=notes.append)
        assert result.mode == "update" and any("stores no train distances" in note for note in notes)
        assert set(TRAIN_DISTANCES.values()) <= set(registry.version_info("pill").arrays)
        notes.clear()
        extra = _new_pill_images(tmp_path / "new", 2, seed=7)
        assert update_category(registry, "pill", extra, notice=notes.append).mode == "update" and not notes
        assert registry.verify().ok


def test_an_update_links_the_old_images_patch_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The old images' patches are the parent's, unchanged: their whole chunks are hard links to the
    parent's files (not compressed and written again), and removing the parent keeps them readable."""
    monkeypatch.setattr(storage, "CHUNK_BYTES", 2 * 256 * 512 * 2)  # two images' float16 patches per chunk
    data = write_data(tmp_path / "images")
    root = make_base(tmp_path / "registry", data, ("pill",), keep_patches=True)
    new = _new_pill_images(tmp_path / "new", 3, seed=42)
    with Registry.open(root) as registry:
        update_category(registry, "pill", new)
        parent, child = (root / registry.version_info("pill", v).array_store / TRAIN_PATCHES for v in (1, 2))
        inode = {path.relative_to(parent): path.stat().st_ino for path in parent.rglob("c/**/*") if path.is_file()}
        shared = sorted(
            str(path.relative_to(child))
            for path in child.rglob("c/**/*")
            if path.is_file() and inode.get(path.relative_to(child)) == path.stat().st_ino
        )
        assert shared == ["c/0/0/0", "c/1/0/0", "c/2/0/0"]  # the 6 old images; the new 3 are written
        stored = registry._read_checked(registry.version_info("pill"), TRAIN_PATCHES)
        registry.remove("pill", 1)
        assert registry.verify().ok
        np.testing.assert_array_equal(registry._read_checked(registry.version_info("pill"), TRAIN_PATCHES), stored)
