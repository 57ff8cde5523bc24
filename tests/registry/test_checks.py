"""The checks of ``registry verify`` and the clean-up of ``registry gc`` (registry.checks), on real registries."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import zarr
from sqlalchemy import Engine

from registry import Registry
from registry.checks import GC_KINDS, Problem, RegistryCheck, VerifyReport, row_differences, store_path
from registry.db import make_engine
from tests.support_registry import clone, make_base, write_data

Data = dict[str, tuple[list[Path], list[Path]]]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Data:
    return write_data(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory, data: Data) -> Path:
    """A registry holding category ``pill`` (never modified: tests work on copies)."""
    return make_base(tmp_path_factory.mktemp("base") / "registry", data)


def _check(root: Path) -> tuple[RegistryCheck, Engine]:
    engine = make_engine(root / "registry.sqlite")
    return RegistryCheck(root, engine), engine


def test_verify_finds_and_gc_removes_leftovers(base: Path, tmp_path: Path) -> None:
    root = clone(base, tmp_path / "reg")
    with Registry.open(root) as registry:
        info = registry.version_info("pill")
        orphan = root / "stores" / "pill" / "0000-orphan.zarr"
        shutil.copytree(root / info.store_path, orphan)
        (root / "tmp" / "half-written.zarr").mkdir(parents=True)
        (root / "stores" / "stray.txt").write_text("?")
        report = registry.verify()
        assert sorted(p.kind for p in report.problems) == ["orphan-store", "stray-file", "temp-file"]
        assert all(p.removable for p in report.problems)
        assert report.checked_versions == 1
        removed = registry.gc().removed
        assert sorted(removed) == ["stores/pill/0000-orphan.zarr", "stores/stray.txt", "tmp/half-written.zarr"]
        assert registry.verify().ok
        (root / "tmp" / "again").mkdir()
        repaired = registry.verify(repair=True)
        assert repaired.ok and repaired.repaired == ["tmp/again"]
        assert registry.load_category("pill") is not None


def test_a_clean_registry_verifies_without_the_registry_class(base: Path, tmp_path: Path) -> None:
    root = clone(base, tmp_path / "reg")
    check, engine = _check(root)
    try:
        report = check.verify()
        assert report.ok and report.problems == [] and report.checked_versions == 1 and report.repaired == []
        assert check.gc().removed == []
    finally:
        engine.dispose()


def test_changed_array_values_are_found_only_by_the_checksums(base: Path, tmp_path: Path) -> None:
    root = clone(base, tmp_path / "reg")
    with Registry.open(root, read_only=True) as registry:
        store = root / registry.version_info("pill").store_path
    bank = zarr.open_array(str(store / "bank"), mode="r+")
    values = np.asarray(bank[...])
    bank[...] = values[::-1]  # a valid store of the same shape and dtype, other content
    check, engine = _check(root)
    try:
        assert check.verify(checksums=False).ok
        problems = check.verify().problems
        assert [(p.kind, p.category, p.version) for p in problems] == [("checksum-mismatch", "pill", 1)]
        assert "bank" in problems[0].message and not problems[0].removable
        assert check.gc().removed == []  # gc never deletes a damaged version
    finally:
        engine.dispose()


def test_a_row_changed_behind_the_registry_is_a_row_mismatch(base: Path, tmp_path: Path) -> None:
    root = clone(base, tmp_path / "reg")
    with sqlite3.connect(root / "registry.sqlite") as connection:
        connection.execute("UPDATE category_versions SET route_threshold = route_threshold * 2")
    check, engine = _check(root)
    try:
        problems = check.verify().problems
        assert [p.kind for p in problems] == ["row-mismatch"]
        assert "route_threshold" in problems[0].message and problems[0].category == "pill"
    finally:
        engine.dispose()


def test_row_differences_compare_json_values() -> None:
    attributes = {"category": "pill", "uuid": "u-1", "origin": "fit", "arrays": {"bank": {"shape": [4, 8]}}}
    fields = {"category": "pill", "uuid": "u-1", "store_path": store_path("pill", "u-1"), "origin": "fit",
              "arrays": {"bank": {"shape": [4.0, 8]}}}  # fmt: skip
    assert row_differences(fields, attributes) == []  # 4 == 4.0
    assert row_differences({**fields, "uuid": "u-2"}, attributes) == ["uuid"]
    assert row_differences({**fields, "store_path": "stores/other/u-1.zarr"}, attributes) == ["store_path"]
    assert row_differences({**fields, "arrays": {"bank": {"shape": [4, 9]}}}, attributes) == ["arrays"]
    assert row_differences({**fields, "origin": True}, {**attributes, "origin": 1}) == ["origin"]  # bool is not 1
    assert row_differences({"category": "pill"}, {}) == []  # only what both sides hold


def test_row_differences_read_the_model_metadata() -> None:
    metadata = {"params": {"coreset_ratio": 0.05, "seed": 42, "calibration": "mixed"}, "route_threshold": 0.25,
                "calibrator": {"lambda": 0.1}, "n_train_images": 6, "fit_seconds": None}  # fmt: skip
    fields = {"coreset_ratio": 0.05, "seed": 42, "calibration_mode": "mixed", "route_threshold": 0.25,
              "calibration": {"lambda": 0.1}, "n_train_images": 6, "fit_seconds": None}  # fmt: skip
    assert row_differences(fields, {"metadata": metadata}) == []
    changed = {**fields, "route_threshold": 0.5, "seed": 7}
    assert sorted(row_differences(changed, {"metadata": metadata})) == ["route_threshold", "seed"]


def test_store_paths_and_removable_kinds() -> None:
    assert store_path("pill", "u-1") == "stores/pill/u-1.zarr"
    assert {"orphan-store", "temp-file", "stray-file"} == GC_KINDS
    assert Problem("temp-file", "x").removable and not Problem("checksum-mismatch", "x").removable
    report = VerifyReport()
    assert report.ok
    report.problems.append(Problem("orphan-store", "x"))
    assert not report.ok
