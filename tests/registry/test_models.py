"""The ORM models (registry.models) against the migrations, and rows written and read through them."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError as SqlIntegrityError
from sqlalchemy.orm import Session

from registry.db import alembic_config, make_engine
from registry.models import Base, CategoryRow, CategoryVersionRow


def test_orm_models_match_the_migrations(tmp_path: Path) -> None:
    database = tmp_path / "registry.sqlite"
    command.upgrade(alembic_config(database), "head")
    engine = make_engine(database)
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    engine.dispose()
    assert differences == []


@pytest.fixture
def session(tmp_path: Path):  # type: ignore[no-untyped-def]
    database = tmp_path / "registry.sqlite"
    command.upgrade(alembic_config(database), "head")
    engine = make_engine(database)
    with Session(engine) as session:
        yield session
    engine.dispose()


def _version(category_id: int, version: int, uuid: str) -> CategoryVersionRow:
    return CategoryVersionRow(
        category_id=category_id,
        version=version,
        uuid=uuid,
        store_path=f"stores/pill/{uuid}.zarr",
        arrays={"bank": {"shape": [4, 8], "dtype": "<f2", "sha256": "0" * 64}},
        coreset_ratio=0.05,
        seed=42,
        n_train_images=6,
        calibration_mode="mixed",
        calibration={"thresholds": {"hybrid": 1.5}},
        route_threshold=0.3,
        model_metadata={"k": 5},
        train_images=["a.png"],
        library_version="0.1.0",
    )


def test_rows_round_trip_with_json_columns_and_defaults(session: Session) -> None:
    category = CategoryRow(name="pill")
    session.add(category)
    session.flush()
    row = _version(category.id, 1, "u-1")
    session.add(row)
    session.flush()
    category.current_version_id = row.id
    session.commit()
    session.expunge_all()
    stored = session.scalars(select(CategoryVersionRow)).one()
    assert stored.arrays["bank"]["shape"] == [4, 8] and stored.model_metadata == {"k": 5}
    assert stored.train_images == ["a.png"] and stored.origin is None and stored.created_at is not None
    loaded = session.scalars(select(CategoryRow)).one()
    assert loaded.current_version_id == stored.id and loaded.last_version == 0 and loaded.description is None


def test_constraints_of_the_schema(session: Session) -> None:
    category = CategoryRow(name="pill")
    session.add(category)
    session.flush()
    session.add(_version(category.id, 1, "u-1"))
    session.commit()
    session.add(_version(category.id, 1, "u-2"))  # the same version number twice
    with pytest.raises(SqlIntegrityError, match="UNIQUE"):
        session.commit()
    session.rollback()
    session.add(CategoryRow(name="pill"))  # the same name twice
    with pytest.raises(SqlIntegrityError, match="UNIQUE"):
        session.commit()
    session.rollback()
    session.add(_version(999, 1, "u-3"))  # no such category (foreign keys are on)
    with pytest.raises(SqlIntegrityError, match="FOREIGN KEY"):
        session.commit()


def test_deleting_a_category_deletes_its_versions(session: Session) -> None:
    category = CategoryRow(name="pill")
    session.add(category)
    session.flush()
    session.add_all([_version(category.id, 1, "u-1"), _version(category.id, 2, "u-2")])
    session.commit()
    session.execute(CategoryRow.__table__.delete())
    session.commit()
    assert session.scalars(select(CategoryVersionRow)).all() == []
