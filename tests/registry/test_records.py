"""What the registry records (registry.records): names, version rows, their JSON form; standard library only."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from registry import records
from registry.errors import DatabaseDamagedError, InvalidNameError
from registry.records import (
    ARRAY_NAMES,
    LEGACY_SCORING,
    CategoryInfo,
    PendingVersion,
    VersionInfo,
    finite_or_none,
    library_version,
    validate_name,
)
from structcore import scoring
from structcore.model import CategoryModel


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=0, max_size=140))
def test_accepted_names_are_single_safe_path_components(name: str) -> None:
    try:
        validate_name(name)
    except InvalidNameError:
        return
    assert "/" not in name and "\\" not in name and name not in {".", ".."} and not name.startswith(".")
    assert Path(name).name == name and len(name) <= 128


def test_stored_array_names_match_the_model() -> None:
    assert tuple(CategoryModel.ARRAY_NAMES) == ARRAY_NAMES


def test_records_know_the_scoring_of_old_versions() -> None:
    """The catalogue names the scoring of a version without numpy: its default must be the method's."""
    assert records.LEGACY_SCORING == scoring.LEGACY_SCORING


@pytest.mark.parametrize("name", ["bottle", "a", "Bottle_2.v-3", "0ring", "x" * 128])
def test_valid_names_pass_unchanged(name: str) -> None:
    assert validate_name(name) == name


@pytest.mark.parametrize("name", ["", "../x", "a/b", ".hidden", "-dash", "x" * 129, "sp ace", "tab\t", None, 3])
def test_invalid_names_are_refused(name: object) -> None:
    with pytest.raises(InvalidNameError):
        validate_name(name)


def test_finite_or_none_keeps_json_numbers_only() -> None:
    assert finite_or_none(None) is None
    assert finite_or_none(math.nan) is None and finite_or_none(-math.inf) is None
    assert finite_or_none(3) == 3.0 and isinstance(finite_or_none(3), float)
    assert finite_or_none("0.25") == 0.25


def _row(**changes: Any) -> SimpleNamespace:
    row = SimpleNamespace(
        version=2,
        uuid="u-1",
        store_path="stores/pill/u-1.zarr",
        created_at=datetime(2026, 12, 1, 8, 30),
        n_train_images=6,
        arrays={"bank": {"shape": [40, 512]}, "prototypes": {"shape": [16, 512]}},
        coreset_ratio=0.05,
        seed=42,
        calibration_mode="mixed",
        calibration={"thresholds": {"base": 1, "struct": 2.5, "hybrid": 3}, "scoring": "robust"},
        route_threshold=0.4,
        fit_seconds=1.5,
        library_version="0.1.0",
        origin=None,
        unknown_statistic="quantile-30",
        unknown_threshold=0.7,
        far_threshold=0.7,
    )
    for key, value in changes.items():
        setattr(row, key, value)
    return row


def test_version_info_from_a_row() -> None:
    info = VersionInfo.from_row(_row(), "pill", is_current=True)
    assert (info.category, info.version, info.bank_size, info.n_prototypes) == ("pill", 2, 40, 16)
    assert info.thresholds == {"base": 1.0, "struct": 2.5, "hybrid": 3.0}
    assert info.scoring == "robust" and info.origin == "fit"  # origin NULL: fitted before it was recorded
    fields = info.row_fields()
    assert fields["uuid"] == "u-1" and fields["arrays"] == _row().arrays and "version" not in fields
    data = json.loads(json.dumps(info.to_dict()))
    assert data["created_at"] == "2026-12-01T08:30:00Z" and data["thresholds"]["hybrid"] == 3.0
    assert data["scoring"] == "robust" and data["is_current"] is True


def test_versions_fitted_before_the_scoring_was_stored_use_the_legacy_one() -> None:
    info = VersionInfo.from_row(_row(calibration={"thresholds": {}}), "pill", is_current=False)
    assert info.scoring == LEGACY_SCORING == "paper" and info.thresholds == {}


@pytest.mark.parametrize("damage", [{"arrays": {}}, {"arrays": {"bank": {"shape": []}}}, {"calibration": "oops"}])
def test_a_damaged_row_names_category_and_version(damage: dict[str, Any]) -> None:
    with pytest.raises(DatabaseDamagedError, match=r"category 'pill' version 2: .*damaged row") as raised:
        VersionInfo.from_row(_row(**damage), "pill", is_current=True)
    assert (raised.value.category, raised.value.version) == ("pill", 2)


def test_category_info_current_and_json() -> None:
    old = VersionInfo.from_row(_row(version=1), "pill", is_current=False)
    new = VersionInfo.from_row(_row(), "pill", is_current=True)
    category = CategoryInfo("pill", "tablets", datetime(2026, 12, 1), 2, (old, new))
    assert category.current is new
    data = json.loads(json.dumps(category.to_dict()))
    assert [v["version"] for v in data["versions"]] == [1, 2] and data["current_version"] == 2
    assert CategoryInfo("x", None, datetime(2026, 12, 1), None, (old,)).current is None


def test_pending_versions_get_fresh_uuids() -> None:
    first = PendingVersion("pill", dict, {}, [], origin="fit")
    second = PendingVersion("pill", dict, {}, [], origin="fit")
    assert first.uuid != second.uuid and not first.must_be_new


def test_library_version_is_the_installed_distribution() -> None:
    import importlib.metadata

    assert library_version() == importlib.metadata.version("structcore-registry")


def test_importing_records_loads_no_heavy_library() -> None:
    code = "import sys, registry.records; print(sorted({'numpy', 'sqlalchemy', 'zarr'} & set(sys.modules)))"
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert found.returncode == 0, found.stderr
    assert found.stdout.strip() == "[]"
