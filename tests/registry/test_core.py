"""Registry: create/open, versions, isolation between categories, inference, integrity, migrations."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import zarr
from alembic import command

from registry import (
    DatabaseDamagedError,
    IntegrityError,
    InvalidNameError,
    NotARegistryError,
    ReadOnlyError,
    Registry,
    RegistryExistsError,
    SchemaOutdatedError,
    UnknownCategoryError,
    UnknownVersionError,
)
from registry.db import alembic_config, current_revision, head_revision, make_engine
from structcore.progress import Progress
from tests.support_registry import SIZE, clone, db_rows, make_base, scores, small_model, tree_hashes, write_data

Data = dict[str, tuple[list[Path], list[Path]]]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Data:
    return write_data(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory, data: Data) -> Path:
    """A registry holding category ``pill`` (never modified: tests work on copies)."""
    return make_base(tmp_path_factory.mktemp("base") / "registry", data)


# ------------------------------------------------------------------------- create / open
def test_open_refuses_a_folder_without_registry(tmp_path: Path) -> None:
    with pytest.raises(NotARegistryError) as caught:
        Registry.open(tmp_path / "nothing")
    message = str(caught.value)
    assert f"no registry at {tmp_path / 'nothing'}" in message
    assert f"run `registry init --root {tmp_path / 'nothing'}`" in message


def test_init_refuses_populated_registry_and_foreign_folder(base: Path, tmp_path: Path) -> None:
    with pytest.raises(RegistryExistsError, match="already exists"):
        Registry.init(base, resize=SIZE, crop=SIZE)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("hello")
    with pytest.raises(RegistryExistsError, match="not empty"):
        Registry.init(foreign)


def test_init_of_empty_registry_is_idempotent_or_replaces_feature_space(tmp_path: Path) -> None:
    root = tmp_path / "reg"
    with Registry.init(root, resize=SIZE, crop=SIZE) as first:
        sha = first.feature_space_info()["projection_sha256"]
    with Registry.init(root, resize=SIZE, crop=SIZE) as again:
        assert again.feature_space_info()["projection_sha256"] == sha
    with Registry.init(root, resize=SIZE, crop=SIZE, seed=7) as other:
        info = other.feature_space_info()
        assert info["projection_sha256"] != sha
        assert info["projection_path"] != "feature_space.zarr"
        assert other.verify().ok
        assert not (root / "feature_space.zarr").exists()  # the old W store was removed


@pytest.mark.parametrize("name", ["", "../x", "a/b", ".hidden", "x" * 129, "sp ace", "-dash"])
def test_invalid_names_are_refused_before_any_work(base: Path, tmp_path: Path, name: str) -> None:
    with Registry.open(clone(base, tmp_path / "reg")) as registry, pytest.raises(InvalidNameError):
        registry.add_category(name, [])


# ------------------------------------------------------------------------- isolation
def test_adding_b_leaves_a_bytes_row_and_scores_unchanged(base: Path, tmp_path: Path, data: Data) -> None:
    root = clone(base, tmp_path / "reg")
    tests = data["pill"][1]
    with Registry.open(root) as registry:
        a_store = root / registry.version_info("pill").store_path
        before_files = tree_hashes(a_store)
        before_rows = db_rows(root, "pill")
        before_scores = scores(registry.predict(tests, "pill"))
        before_routed = scores(registry.predict(tests))
        before_w = tree_hashes(root / registry.feature_space_info()["projection_path"])

        events: list[Progress] = []
        info = registry.add_category("grid", data["grid"][0], small_model(), events.append, batch_size=4)
        assert (info.category, info.version, info.is_current) == ("grid", 1, True)
        stages = list(dict.fromkeys(event.stage for event in events))
        assert stages == ["embed", "fit", "coreset", "prototypes", "calibration", "write", "done"]
        assert [(e.done, e.total) for e in events if e.stage == "embed"] == [(0, 6), (4, 6), (6, 6)]
        assert {event.category for event in events} == {"grid"}

        assert tree_hashes(a_store) == before_files
        assert db_rows(root, "pill") == before_rows
        assert tree_hashes(root / registry.feature_space_info()["projection_path"]) == before_w
        assert scores(registry.predict(tests, "pill")) == before_scores
        routed = registry.predict(tests)
        assert [r["category"] for r in routed] == ["pill"] * len(tests)
        assert scores(routed) == before_routed  # A's scores do not depend on B being there
        assert registry.verify().ok

    # and in a fresh process state (a new Registry object, loading from disk)
    with Registry.open(root) as reopened:
        assert scores(reopened.predict(tests, "pill")) == before_scores


def test_refit_versions_set_current_and_remove(base: Path, tmp_path: Path, data: Data) -> None:
    root = clone(base, tmp_path / "reg")
    with Registry.open(root, cache_size=1) as registry:
        v1_bank = registry.load_category("pill").bank_.copy()
        refit = registry.add_category("pill", data["pill"][0][:4], small_model(), description="fewer images")
        assert (refit.version, refit.n_train_images) == (2, 4)
        shown = registry.show("pill")
        assert shown.current_version == 2 and [v.version for v in shown.versions] == [1, 2]
        assert shown.description == "fewer images"
        assert registry.load_category("pill").bank_.shape != v1_bank.shape

        registry.set_current("pill", 1)
        assert np.array_equal(registry.load_category("pill").bank_, v1_bank)
        assert registry.categories()[0].current_version == 1

        with pytest.raises(UnknownVersionError, match="versions are: 1, 2"):
            registry.set_current("pill", 9)
        with pytest.raises(UnknownCategoryError, match="known categories: pill"):
            registry.load_category("nope")

        removed = registry.remove("pill", 1)  # the current one: version 2 becomes current
        assert [v.version for v in removed] == [1]
        assert registry.show("pill").current_version == 2
        assert not (root / removed[0].store_path).exists()
        third = registry.add_category("pill", data["pill"][0], small_model())
        assert third.version == 3  # numbers are not reused

        registry.remove("pill")
        assert registry.names() == []
        assert not (root / "stores" / "pill").exists()
        assert registry.verify().ok


def test_predict_reports_unreadable_images_and_scores_the_rest(base: Path, tmp_path: Path, data: Data) -> None:
    broken = tmp_path / "broken.png"
    broken.write_text("not an image")
    missing = tmp_path / "missing.png"
    good = data["pill"][1][:2]
    seen: list[tuple[str, tuple[int, ...], tuple[int, ...], float]] = []
    with Registry.open(base, read_only=True) as registry:
        records = registry.predict(
            [good[0], broken, missing, good[1]],
            on_image=lambda record, image, amap, level: seen.append((record["path"], image.shape, amap.shape, level)),
        )
        assert [r["error"] is None for r in records] == [True, False, False, True]
        assert str(broken) in str(records[1]["error"]) and str(missing) in str(records[2]["error"])
        assert records[1]["score_hybrid"] is None
        for record in (records[0], records[3]):
            assert (
                record["category"] == "pill"
                and record["threshold"] == registry.version_info("pill").thresholds["hybrid"]
            )
            assert record["anomalous"] == (record["score_hybrid"] > record["threshold"])
        base_threshold = registry.version_info("pill").thresholds["base"]  # the scoring version's map scale
        assert seen == [(str(p), (3, SIZE, SIZE), (SIZE, SIZE), base_threshold) for p in good]
        # the good images score exactly as they do without the broken ones in the batch
        alone = registry.predict(good)
        assert scores([records[0], records[3]]) == scores(alone)


def test_read_only_registry_refuses_writes(base: Path) -> None:
    with Registry.open(base, read_only=True) as registry:
        with pytest.raises(ReadOnlyError, match="read-only"):
            registry.remove("pill")
        with pytest.raises(ReadOnlyError):
            registry.gc()


def test_detector_keeps_its_models_bounded_and_its_versions_pinned(base: Path, tmp_path: Path, data: Data) -> None:
    root = clone(base, tmp_path / "reg")
    with Registry.open(root, cache_size=1) as registry:
        registry.add_category("grid", data["grid"][0], small_model())
        detector = registry.detector()
        assert dict(detector.versions) == {"grid": 1, "pill": 1}
        assert detector.router.categories_ == ["grid", "pill"]
        first = detector.model("pill")
        assert detector.model("pill") is first
        detector.model("grid")
        assert detector.model("pill") is not first  # evicted by grid (cache of one)
        registry.add_category("grid", data["grid"][0], small_model())
        assert dict(detector.versions) == {"grid": 1, "pill": 1}  # a snapshot: the refit is not seen
        assert dict(registry.detector().versions) == {"grid": 2, "pill": 1}
        assert dict(registry.detector(["pill"]).versions) == {"pill": 1}
        with pytest.raises(UnknownCategoryError):
            registry.detector(["nope"])


# ------------------------------------------------------------------------- integrity
def test_corrupted_array_raises_integrity_error_naming_category_version_file(base: Path, tmp_path: Path) -> None:
    root = clone(base, tmp_path / "reg")
    with Registry.open(root) as registry:
        info = registry.version_info("pill")
    bank = zarr.open_array(str(root / info.store_path / "bank"), mode="r+")
    bank[0, 0] = bank[0, 0] + 1.0
    with Registry.open(root) as registry:
        with pytest.raises(IntegrityError) as caught:
            registry.load_category("pill")
        message = str(caught.value)
        assert "'pill' version 1" in message and f"{info.store_path}/bank" in message and "checksum" in message
        report = registry.verify()
        assert [p.kind for p in report.problems] == ["checksum-mismatch"]
    shutil.rmtree(root / info.store_path)
    with Registry.open(root) as registry:
        with pytest.raises(IntegrityError, match="cannot be read"):
            registry.load_category("pill")
        assert [p.kind for p in registry.verify().problems] == ["missing-store"]


def test_dangling_current_version_names_the_database(base: Path, tmp_path: Path) -> None:
    root = clone(base, tmp_path / "reg")
    with sqlite3.connect(root / "registry.sqlite") as connection:  # foreign keys off: a damaged pointer
        connection.execute("UPDATE categories SET current_version_id = 9999 WHERE name = 'pill'")
    with Registry.open(root) as registry:
        with pytest.raises(DatabaseDamagedError) as caught:
            registry.load_category("pill")
        message = str(caught.value)
        assert "category 'pill'" in message and "registry.sqlite" in message and "9999" in message
        assert "registry verify" in message and "version -1" not in message
        assert "bad-current-version" in [p.kind for p in registry.verify().problems]


_COLUMNS_0001 = {
    "feature_space": "id, backbone, weights_sha256, weights_path, layers, channels, mean, std, local_pool, resize, "
    "crop, dim, projection_seed, projection_path, projection_sha256, library_version, created_at",
    "categories": "id, name, current_version_id, last_version, created_at",
    "category_versions": "id, category_id, version, uuid, store_path, arrays, coreset_ratio, seed, n_train_images, "
    "calibration_mode, calibration, route_threshold, metadata, train_images, fit_seconds, library_version, created_at",
}


def test_registry_at_first_revision_is_upgraded_on_open(base: Path, tmp_path: Path, data: Data) -> None:
    root = clone(base, tmp_path / "old")
    for suffix in ("", "-wal", "-shm"):
        (root / f"registry.sqlite{suffix}").unlink(missing_ok=True)
    database = root / "registry.sqlite"
    command.upgrade(alembic_config(database), "0001")  # an empty database at the first revision
    connection = sqlite3.connect(database)
    connection.execute("ATTACH DATABASE ? AS source", (str(base / "registry.sqlite"),))
    with connection:
        for table, columns in _COLUMNS_0001.items():
            connection.execute(f"INSERT INTO {table} ({columns}) SELECT {columns} FROM source.{table}")
    connection.execute("DETACH DATABASE source")
    connection.close()
    engine = make_engine(database)
    assert current_revision(engine) == "0001"
    engine.dispose()

    with pytest.raises(SchemaOutdatedError, match=r"run `registry upgrade --root"):
        Registry.open(root, read_only=True)
    with Registry.open(root) as registry:
        assert registry.schema_revision() == head_revision()
        assert registry.names() == ["pill"]
        shown = registry.show("pill")
        assert shown.description is None and shown.current.origin == "fit"
        assert registry.feature_space.input_geometry == "squash"  # revision 0007 reads old registries as squash
        upgraded = scores(registry.predict(data["pill"][1], "pill"))
        assert registry.verify().ok
    with Registry.open(base, read_only=True) as original:
        assert upgraded == scores(original.predict(data["pill"][1], "pill"))

    # down to 0001 and up again through the `registry upgrade` entry point
    command.downgrade(alembic_config(database), "0001")
    assert Registry.upgrade(root) == ("0001", head_revision())
    with Registry.open(root) as registry:
        assert registry.names() == ["pill"]


def test_interrupted_init_is_not_a_registry_and_can_be_redone(tmp_path: Path) -> None:
    root = tmp_path / "reg"
    Registry.init(root, resize=SIZE, crop=SIZE).close()
    connection = sqlite3.connect(root / "registry.sqlite")
    with connection:
        connection.execute("DELETE FROM feature_space")  # as if killed before the feature space was committed
    connection.close()
    with pytest.raises(NotARegistryError, match="initialisation did not finish"):
        Registry.open(root)
    with Registry.init(root, resize=SIZE, crop=SIZE) as registry:
        assert registry.verify(repair=True).ok
