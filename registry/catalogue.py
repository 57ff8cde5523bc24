"""Read-only catalogue of a registry: its categories and their versions, as the database records them.

Reads ``registry.sqlite`` with the standard library's :mod:`sqlite3` and decodes the rows into
:mod:`registry.records`: no SQLAlchemy, Alembic, zarr or numpy, and no model code, so
``registry list`` and ``registry show`` start in a fraction of a second on any number of
categories. :class:`registry.Registry` reads its listings through the same class.

Each call reads in one transaction (a consistent snapshot, never blocked by a writer in WAL
mode). A schema other than this library's newest is refused with :class:`SchemaOutdatedError`
(open the folder with :meth:`registry.Registry.open`, which upgrades it) or
:class:`SchemaTooNewError`.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from registry.errors import (
    DatabaseBusyError,
    DatabaseDamagedError,
    NotARegistryError,
    RegistryError,
    SchemaOutdatedError,
    SchemaTooNewError,
    UnknownCategoryError,
)
from registry.records import DB_FILE, CategoryInfo, VersionInfo

#: The schema revisions of :mod:`migrations`, oldest first (a test keeps them equal to Alembic's).
SCHEMA_REVISIONS: tuple[str, ...] = ("0001", "0002", "0003", "0004", "0005", "0006", "0007", "0008", "0009")
#: The newest schema revision this library writes.
HEAD_REVISION = SCHEMA_REVISIONS[-1]
#: How long a read waits for a writer's lock, in seconds (reads in WAL mode rarely wait at all).
BUSY_TIMEOUT_S = 30.0

_VERSION_COLUMNS = (
    "category_id",
    "id",
    "version",
    "uuid",
    "store_path",
    "created_at",
    "n_train_images",
    "arrays",
    "coreset_ratio",
    "seed",
    "calibration_mode",
    "calibration",
    "route_threshold",
    "fit_seconds",
    "library_version",
    "origin",
    "unknown_statistic",
    "unknown_threshold",
    "far_threshold",
    "arrays_path",
)
_JSON_COLUMNS = frozenset({"arrays", "calibration"})
_DATE_COLUMNS = frozenset({"created_at"})


class Catalogue:
    """The categories of the registry at ``root``, read-only.

    Args:
        root: the registry folder.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.database = self.root / DB_FILE

    @classmethod
    def open(cls, root: str | Path) -> Catalogue:
        """The catalogue of ``root``, after checking that it is a registry at this library's schema.

        Raises:
            NotARegistryError: no (complete) registry at ``root``.
            SchemaOutdatedError: the schema is older (``Registry.open`` upgrades it).
            SchemaTooNewError: the registry was written by a newer library.
        """
        catalogue = cls(root)
        revision = catalogue.schema_revision()
        if revision is None:
            raise NotARegistryError(catalogue.root, "the database has no schema")
        if revision != HEAD_REVISION:
            if revision not in SCHEMA_REVISIONS:
                raise SchemaTooNewError(catalogue.root, revision, HEAD_REVISION)
            raise SchemaOutdatedError(catalogue.root, revision, HEAD_REVISION)
        return catalogue

    @contextmanager
    def _snapshot(self) -> Iterator[sqlite3.Connection]:
        """A connection inside one read transaction; SQLite errors become the registry's own."""
        if not self.database.is_file():
            raise NotARegistryError(self.root)
        try:
            uri = f"{self.database.resolve().as_uri()}?mode=rw"
            with closing(sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None)) as connection:
                connection.execute("BEGIN")
                try:
                    yield connection
                finally:
                    connection.execute("ROLLBACK")
        except RegistryError:
            raise
        except sqlite3.Error as error:
            message = str(error).lower()
            if "locked" in message or "busy" in message:
                raise DatabaseBusyError(self.database, BUSY_TIMEOUT_S) from error
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise DatabaseDamagedError(self.database, f"cannot be read ({type(error).__name__}: {reason})") from error
        except (json.JSONDecodeError, UnicodeError, ValueError, TypeError) as error:
            raise DatabaseDamagedError(self.database, f"cannot be read ({type(error).__name__}: {error})") from error

    def schema_revision(self) -> str | None:
        """The schema revision stamped in the database (``None``: no schema)."""
        with self._snapshot() as connection:
            found = connection.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'alembic_version'"
            ).fetchone()
            if found is None:
                return None
            row = connection.execute("SELECT version_num FROM alembic_version").fetchone()
        if row is None:
            return None
        if not isinstance(row[0], str):
            raise DatabaseDamagedError(self.database, f"has a damaged schema revision ({row[0]!r})")
        return row[0]

    def names(self) -> list[str]:
        """Category names, sorted."""
        with self._snapshot() as connection:
            return [str(name) for (name,) in connection.execute("SELECT name FROM categories ORDER BY name")]

    def categories(self) -> list[CategoryInfo]:
        """Every category with its versions (oldest first), sorted by name."""
        with self._snapshot() as connection:
            return self._infos(connection, None)

    def show(self, name: str) -> CategoryInfo:
        """One category with all its versions.

        Raises:
            UnknownCategoryError: no category ``name``.
        """
        with self._snapshot() as connection:
            found = self._infos(connection, name)
            if not found:
                known = [str(known_name) for (known_name,) in connection.execute("SELECT name FROM categories")]
                raise UnknownCategoryError(name, known)
            return found[0]

    def _infos(self, connection: sqlite3.Connection, name: str | None) -> list[CategoryInfo]:
        where = "" if name is None else " WHERE name = ?"
        parameters: tuple[str, ...] = () if name is None else (name,)
        categories = connection.execute(
            f"SELECT id, name, description, created_at, current_version_id FROM categories{where} ORDER BY name",
            parameters,
        ).fetchall()
        if not categories:
            return []
        select = f"SELECT {', '.join(_VERSION_COLUMNS)} FROM category_versions"
        if name is None:
            rows = connection.execute(f"{select} ORDER BY version").fetchall()
        else:
            own = (categories[0][0],)
            rows = connection.execute(f"{select} WHERE category_id = ? ORDER BY version", own).fetchall()
        by_category: dict[int, list[SimpleNamespace]] = {}
        for row in rows:
            by_category.setdefault(int(row[0]), []).append(_decode(row))
        infos = []
        for category_id, category_name, description, created_at, current_id in categories:
            versions = by_category.get(int(category_id), [])
            infos.append(
                CategoryInfo(
                    name=str(category_name),
                    description=description,
                    created_at=_datetime(created_at),
                    current_version=next((v.version for v in versions if v.id == current_id), None),
                    versions=tuple(VersionInfo.from_row(v, str(category_name), v.id == current_id) for v in versions),
                )
            )
        return infos


def _datetime(value: Any) -> datetime:
    """A naive UTC timestamp as SQLAlchemy stores it in SQLite (``YYYY-MM-DD HH:MM:SS.ffffff``)."""
    if not isinstance(value, str):
        msg = f"expected a timestamp, got {value!r}"
        raise ValueError(msg)
    return datetime.fromisoformat(value)


def _decode(row: tuple[Any, ...]) -> SimpleNamespace:
    """One ``category_versions`` row with its JSON and date columns decoded."""
    values = dict(zip(_VERSION_COLUMNS, row, strict=True))
    for column in _JSON_COLUMNS:
        values[column] = json.loads(values[column])
    for column in _DATE_COLUMNS:
        values[column] = _datetime(values[column])
    return SimpleNamespace(**values)


__all__ = ["HEAD_REVISION", "SCHEMA_REVISIONS", "Catalogue"]
