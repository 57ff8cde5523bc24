"""The read-only catalogue (registry/catalogue.py): what it lists, and how it refuses what it cannot read."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from alembic import command
from typer.testing import CliRunner

from cli.main import app
from registry import (
    Catalogue,
    DatabaseDamagedError,
    NotARegistryError,
    Registry,
    RegistryError,
    SchemaOutdatedError,
    SchemaTooNewError,
    UnknownCategoryError,
)
from registry.catalogue import HEAD_REVISION, SCHEMA_REVISIONS
from registry.db import alembic_config, head_revision
from tests.support_registry import clone, random_registry


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``pill`` with versions 1 and 2 (current: 1 after set_current), ``screw`` with version 1."""
    root = random_registry(
        tmp_path_factory.mktemp("catalogue") / "registry", [("screw", None), ("pill", "round tablets"), ("pill", None)]
    )
    with Registry.open(root) as registry:
        registry.set_current("pill", 1)
    return root


def test_lists_categories_sorted_with_their_versions(fitted: Path) -> None:
    catalogue = Catalogue.open(fitted)
    listed = catalogue.categories()
    assert [c.name for c in listed] == ["pill", "screw"] == catalogue.names()
    pill = listed[0]
    assert pill.description == "round tablets"
    assert pill.current_version == 1
    assert [(v.version, v.is_current) for v in pill.versions] == [(1, True), (2, False)]
    assert pill.current is not None and pill.current.version == 1
    assert pill.current.bank_size > 0 and pill.current.thresholds["hybrid"] > 0
    assert catalogue.show("screw").current_version == 1


def test_registry_reads_through_the_catalogue(fitted: Path) -> None:
    with Registry.open(fitted, read_only=True) as registry:
        assert registry.categories() == Catalogue.open(fitted).categories()
        assert registry.version_info("pill", 2) == Catalogue.open(fitted).show("pill").versions[1]
        assert len(registry) == 2 and "screw" in registry and "bolt" not in registry


def test_unknown_category_names_the_known_ones(fitted: Path) -> None:
    with pytest.raises(UnknownCategoryError, match="pill, screw"):
        Catalogue.open(fitted).show("bolt")


def test_no_registry(tmp_path: Path) -> None:
    with pytest.raises(NotARegistryError, match="registry init"):
        Catalogue.open(tmp_path)


def test_schema_from_a_newer_library_is_refused(fitted: Path, tmp_path: Path) -> None:
    root = clone(fitted, tmp_path / "newer")
    with sqlite3.connect(root / "registry.sqlite") as connection:
        connection.execute("UPDATE alembic_version SET version_num = '9999'")
    with pytest.raises(SchemaTooNewError):
        Catalogue.open(root)


def test_older_schema_is_refused_and_cli_list_upgrades_it(fitted: Path, tmp_path: Path) -> None:
    root = clone(fitted, tmp_path / "older")
    command.downgrade(alembic_config(root / "registry.sqlite"), "0002")
    with pytest.raises(SchemaOutdatedError):
        Catalogue.open(root)
    result = CliRunner().invoke(app, ["list", "--root", str(root), "--json"])
    assert result.exit_code == 0, result.output
    assert [c["name"] for c in json.loads(result.stdout)] == ["pill", "screw"]
    assert Catalogue(root).schema_revision() == HEAD_REVISION


def test_damaged_row_is_a_clear_error(fitted: Path, tmp_path: Path) -> None:
    root = clone(fitted, tmp_path / "damaged")
    with sqlite3.connect(root / "registry.sqlite") as connection:
        connection.execute("UPDATE category_versions SET calibration = '{not json' WHERE version = 2")
    catalogue = Catalogue.open(root)
    with pytest.raises(DatabaseDamagedError, match=r"registry\.sqlite.*cannot be read \(JSONDecodeError"):
        catalogue.categories()
    assert catalogue.show("screw").current_version == 1  # the other category still reads
    result = CliRunner().invoke(app, ["list", "--root", str(root)])
    assert result.exit_code == 1
    assert "cannot be read" in result.stderr


def test_catalogue_knows_every_schema_revision() -> None:
    """The catalogue checks the schema without Alembic: its revision list must be Alembic's."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config())
    revisions = [revision.revision for revision in reversed(list(script.walk_revisions()))]
    assert tuple(revisions) == SCHEMA_REVISIONS
    assert head_revision() == HEAD_REVISION


def test_a_category_without_a_current_version_says_which_command_picks_one(tmp_path: Path) -> None:
    root = random_registry(tmp_path / "registry", [("pill", None)])
    connection = sqlite3.connect(root / "registry.sqlite")
    with connection:
        connection.execute("UPDATE categories SET current_version_id = NULL WHERE name = 'pill'")
    connection.close()
    with Registry.open(root) as registry, pytest.raises(RegistryError) as caught:
        registry.version_info("pill")
    assert "category 'pill' has no current version" in str(caught.value)
    assert "`registry set-current pill N`" in str(caught.value) and "`registry show pill`" in str(caught.value)
