"""Checking a registry folder: the database, every store and array, and the leftovers of crashed writers.

:meth:`registry.Registry.verify` and :meth:`registry.Registry.gc` run :class:`RegistryCheck`;
:func:`row_differences` is also what loading a category compares (a damaged row or store is
found on first use, not only by ``registry verify``).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select, text

from registry import storage
from registry.catalogue import Catalogue
from registry.db import ROW_DECODE_ERRORS, read_session
from registry.errors import NotARegistryError, RegistryError
from registry.models import CategoryVersionRow, FeatureSpaceRow
from registry.records import ARRAY_NAMES, DB_FILE, OPTIONAL_ARRAY_NAMES, finite_or_none
from registry.storage import STORES_DIR, TMP_DIR, ArrayRecord, array_sha256, registry_lock
from structcore.feature_space import DESCRIPTION_DEFAULTS


@dataclass(frozen=True)
class Problem:
    """One finding of :meth:`Registry.verify`.

    ``kind`` is one of ``sqlite-integrity``, ``foreign-key``, ``damaged-row``, ``row-mismatch``
    (a row and its store's attributes disagree), ``feature-space``, ``missing-store``,
    ``misplaced-store``, ``bad-array``, ``checksum-mismatch``, ``bad-current-version``,
    ``orphan-store``, ``temp-file`` and ``stray-file``; the last three are removed by
    :meth:`Registry.gc`.
    """

    kind: str
    message: str
    path: str | None = None
    category: str | None = None
    version: int | None = None

    @property
    def removable(self) -> bool:
        """True for leftovers that :meth:`Registry.gc` deletes."""
        return self.kind in GC_KINDS


GC_KINDS = frozenset({"orphan-store", "temp-file", "stray-file"})
#: What reading a damaged database may raise (the registry's own errors included).
_READ_ERRORS: tuple[type[BaseException], ...] = (RegistryError, *ROW_DECODE_ERRORS)


@dataclass
class VerifyReport:
    """Result of :meth:`Registry.verify`: problems found (after repair, if asked) and what was removed."""

    problems: list[Problem] = field(default_factory=list)
    checked_versions: int = 0
    repaired: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing is wrong."""
        return not self.problems


@dataclass(frozen=True)
class GcReport:
    """Paths (relative to the registry root) that :meth:`Registry.gc` removed."""

    removed: list[str]


def feature_space_row(engine: Engine, root: Path) -> FeatureSpaceRow:
    """The registry's one feature-space row.

    Raises:
        NotARegistryError: the row is missing (initialisation did not finish).
    """
    with read_session(engine) as session:
        row = session.get(FeatureSpaceRow, 1)
    if row is None:
        raise NotARegistryError(root, "initialisation did not finish")
    return row


class RegistryCheck:
    """The checks of ``registry verify`` and the clean-up of ``registry gc`` on the folder ``root``.

    Args:
        root: the registry folder.
        engine: an engine on its database.
    """

    def __init__(self, root: Path, engine: Engine):
        self.root = root
        self.engine = engine

    def verify(self, repair: bool = False, checksums: bool = True) -> VerifyReport:
        """Check the database and every store; with ``repair`` also remove leftovers (as :meth:`gc`).

        Always re-reads and re-hashes every array (``checksums=False`` checks shapes only).
        Holds the registry lock exclusively, so writers pause their final step meanwhile.
        """
        with registry_lock(self.root, exclusive=True):
            report = VerifyReport()
            report.problems.extend(self._check_database())
            report.problems.extend(self._check_feature_space(checksums))
            version_problems, checked = self._check_versions(checksums)
            report.problems.extend(version_problems)
            report.checked_versions = checked
            if not any(p.kind in {"damaged-row", "sqlite-integrity"} for p in report.problems):
                report.problems.extend(self._check_readable())
            leftovers = self._find_leftovers()
            if repair:
                report.repaired = self._remove([p for p in leftovers if p.removable])
                report.problems.extend(p for p in leftovers if not p.removable)
            else:
                report.problems.extend(leftovers)
        return report

    def gc(self) -> GcReport:
        """Remove orphan stores (no database row), temporary folders and stray files."""
        with registry_lock(self.root, exclusive=True):
            return GcReport(removed=self._remove([p for p in self._find_leftovers() if p.removable]))

    def _remove(self, leftovers: Sequence[Problem]) -> list[str]:
        removed = []
        for problem in leftovers:
            assert problem.path is not None
            storage.discard(self.root, self.root / problem.path)
            removed.append(problem.path)
        stores = self.root / STORES_DIR
        if stores.is_dir():
            for folder in stores.iterdir():
                if folder.is_dir() and not any(folder.iterdir()):
                    folder.rmdir()
        tmp = self.root / TMP_DIR
        for leftover in tmp.iterdir() if tmp.is_dir() else ():
            storage.discard(self.root, leftover)
        return removed

    def _check_database(self) -> list[Problem]:
        problems = []
        try:
            with self.engine.connect() as connection:
                result = [r[0] for r in connection.execute(text("PRAGMA integrity_check")).fetchall()]
                if result != ["ok"]:
                    message = "; ".join(str(r) for r in result[:5])
                    problems.append(Problem("sqlite-integrity", f"sqlite integrity_check: {message}", DB_FILE))
                for table, rowid, parent, _key in connection.execute(text("PRAGMA foreign_key_check")).fetchall():
                    message = f"row {rowid} of {table} points to a missing row of {parent}"
                    problems.append(Problem("foreign-key", message, DB_FILE))
                connection.rollback()
        except ROW_DECODE_ERRORS as error:
            message = f"{DB_FILE} cannot be checked ({type(error).__name__}: {str(error).splitlines()[0]})"
            return [Problem("sqlite-integrity", message, DB_FILE)]
        try:
            with self.engine.connect() as connection:
                rows = connection.execute(
                    text(
                        "SELECT CAST(c.name AS BLOB), c.current_version_id, v.category_id = c.id, c.last_version, "
                        "(SELECT MAX(w.version) FROM category_versions w WHERE w.category_id = c.id) "
                        "FROM categories c LEFT JOIN category_versions v ON v.id = c.current_version_id"
                    )
                ).fetchall()
                connection.rollback()
        except ROW_DECODE_ERRORS as error:
            message = f"the categories of {DB_FILE} cannot be read ({type(error).__name__}: {error})"
            return [*problems, Problem("sqlite-integrity", message, DB_FILE)]
        for raw_name, current, owned, last_version, newest in rows:
            name = _decode_name(raw_name)
            if current is None or not owned:
                message = f"category {name!r} has no valid current version"
                problems.append(Problem("bad-current-version", message, DB_FILE, name))
            if newest is not None and (not isinstance(last_version, int) or last_version < newest):
                message = (
                    f"category {name!r} records {last_version} as its last version number but has version {newest}"
                )
                problems.append(Problem("damaged-row", message, DB_FILE, name))
        return problems

    def _check_feature_space(self, checksums: bool) -> list[Problem]:
        try:
            row = feature_space_row(self.engine, self.root)
            store = self.root / row.projection_path
        except _READ_ERRORS as error:
            return [Problem("feature-space", f"the feature-space row of {DB_FILE} cannot be read ({error})", DB_FILE)]
        try:
            projection = storage.read_array(store, "projection")
        except Exception as error:
            return [Problem("feature-space", f"{row.projection_path} cannot be read ({error})", row.projection_path)]
        expected = (sum(int(c) for c in row.channels), row.dim)
        if projection.shape != expected:
            message = f"{row.projection_path} has shape {list(projection.shape)}, expected {list(expected)}"
            return [Problem("feature-space", message, row.projection_path)]
        if checksums and array_sha256(projection) != row.projection_sha256:
            return [Problem("feature-space", f"{row.projection_path} does not match its checksum", row.projection_path)]
        differences = feature_space_differences(row, store)
        if differences:
            message = (
                f"{row.projection_path}/zarr.json and the feature-space row of {DB_FILE} disagree on "
                f"{', '.join(differences)} (one of the two is damaged)"
            )
            return [Problem("feature-space", message, row.projection_path)]
        return []

    def _check_readable(self) -> list[Problem]:
        """What the other checks do not read: every column as the registry's own queries read it."""
        problems = []
        try:
            with self.engine.connect() as connection:
                rows = connection.execute(
                    text(
                        "SELECT CAST(c.name AS BLOB), NULL, CAST(c.created_at AS BLOB), CAST(c.description AS BLOB) "
                        "FROM categories c UNION ALL "
                        "SELECT CAST(c.name AS BLOB), v.version, CAST(v.created_at AS BLOB), "
                        "CAST(v.library_version AS BLOB) "
                        "FROM category_versions v JOIN categories c ON c.id = v.category_id"
                    )
                ).fetchall()
                connection.rollback()
        except ROW_DECODE_ERRORS as error:
            return [Problem("sqlite-integrity", f"{DB_FILE} cannot be read ({type(error).__name__}: {error})", DB_FILE)]
        for raw_name, version, created_at, text_value in rows:
            name = _decode_name(raw_name)
            try:
                datetime.fromisoformat(bytes(created_at).decode("utf-8"))
                if text_value is not None:
                    bytes(text_value).decode("utf-8")
            except (ValueError, TypeError) as error:
                where = f"category {name!r}" + ("" if version is None else f" version {version}")
                message = f"{where}: its row in {DB_FILE} is damaged ({type(error).__name__}: {error})"
                problems.append(Problem("damaged-row", message, DB_FILE, name, version))
        if not problems:
            try:
                Catalogue(self.root).categories()
                feature_space_row(self.engine, self.root)
            except RegistryError as error:
                problems.append(Problem("sqlite-integrity", str(error), DB_FILE))
        return problems

    def _version_rows(self) -> tuple[list[dict[str, Any]], list[Problem]]:
        """Every version row, decoded one by one (a damaged row is a problem, not an exception)."""
        columns = (
            "uuid", "store_path", "arrays", "metadata", "calibration_mode", "calibration",
            "train_images", "origin", "unknown_statistic", "arrays_path",
        )  # fmt: skip
        select_text = ", ".join(f"CAST(v.{column} AS BLOB)" for column in columns)
        query = text(
            "SELECT CAST(c.name AS BLOB), v.version, v.coreset_ratio, v.seed, v.n_train_images, "
            f"v.route_threshold, v.fit_seconds, v.unknown_threshold, v.far_threshold, {select_text} "
            "FROM category_versions v JOIN categories c ON c.id = v.category_id ORDER BY v.id"
        )
        rows: list[dict[str, Any]] = []
        problems: list[Problem] = []
        try:
            with self.engine.connect() as connection:
                fetched = connection.execute(query).fetchall()
                connection.rollback()
        except ROW_DECODE_ERRORS as error:
            message = f"the category versions of {DB_FILE} cannot be read ({type(error).__name__}: {error})"
            return [], [Problem("sqlite-integrity", message, DB_FILE)]
        for raw_name, version, coreset_ratio, seed, n_train, route_threshold, fit_seconds, *rest in fetched:
            unknown_threshold, far_threshold, *raw = rest
            name = _decode_name(raw_name)
            try:
                texts = {
                    column: None if value is None else bytes(value).decode("utf-8")
                    for column, value in zip(columns, raw, strict=True)
                }
                decoded = {
                    column: json.loads(_not_null(texts[column], column))
                    for column in ("arrays", "metadata", "calibration", "train_images")
                }
                fields = {
                    "category": name,
                    "version": version,
                    "uuid": texts["uuid"],
                    "store_path": texts["store_path"],
                    "coreset_ratio": coreset_ratio,
                    "seed": seed,
                    "n_train_images": n_train,
                    "calibration_mode": texts["calibration_mode"],
                    "route_threshold": route_threshold,
                    "fit_seconds": fit_seconds,
                    "origin": texts["origin"] or "fit",
                    "unknown_statistic": texts["unknown_statistic"],
                    "arrays_path": texts["arrays_path"],
                    "unknown_threshold": unknown_threshold,
                    "far_threshold": far_threshold,
                    **decoded,
                }
                _check_arrays_field(fields["arrays"])
                if not isinstance(fields["store_path"], str) or not isinstance(version, int):
                    raise TypeError("store path or version is not what the registry writes")
                shared = fields["arrays_path"]
                if shared is not None and not re.fullmatch(rf"{STORES_DIR}/[^/]+/[^/]+\.zarr", shared):
                    raise ValueError(f"arrays path {shared!r} is not a store of the registry")
            except (ValueError, TypeError, KeyError) as error:
                reason = f"{type(error).__name__}: {error}"
                message = f"category {name!r} version {version}: its row in {DB_FILE} is damaged ({reason})"
                problems.append(
                    Problem("damaged-row", message, DB_FILE, name, version if isinstance(version, int) else None)
                )
                continue
            rows.append(fields)
        return rows, problems

    def _check_versions(self, checksums: bool) -> tuple[list[Problem], int]:
        rows, problems = self._version_rows()
        checked = len(rows) + len(problems)
        for fields in rows:
            name, version, store_path = fields["category"], fields["version"], fields["store_path"]
            store = self.root / store_path
            if not (store / "zarr.json").is_file():
                message = f"category {name!r} version {version}: store {store_path} is missing"
                problems.append(Problem("missing-store", message, store_path, name, version))
                continue
            try:
                attributes = storage.read_attributes(store)
            except (OSError, ValueError) as error:
                message = f"category {name!r} version {version}: {store_path}/zarr.json cannot be read ({error})"
                problems.append(Problem("bad-array", message, f"{store_path}/zarr.json", name, version))
                attributes = None
            if attributes is not None:
                differences = row_differences({k: v for k, v in fields.items() if k != "version"}, attributes)
                if differences:
                    message = (
                        f"category {name!r} version {version}: its row in {DB_FILE} and {store_path}/zarr.json "
                        f"disagree on {', '.join(differences)} (one of the two is damaged)"
                    )
                    problems.append(Problem("row-mismatch", message, f"{store_path}/zarr.json", name, version))
            array_store = fields["arrays_path"] or store_path  # a threshold version shares another's arrays
            if array_store != store_path and not (self.root / array_store / "zarr.json").is_file():
                message = (
                    f"category {name!r} version {version}: store {array_store}, whose arrays it shares, is missing"
                )
                problems.append(Problem("missing-store", message, array_store, name, version))
                continue
            store = self.root / array_store
            for array, raw in fields["arrays"].items():
                record = ArrayRecord.from_json(raw)
                where = f"{array_store}/{array}"
                try:
                    data = storage.read_array(store, array)
                except Exception as error:
                    message = f"category {name!r} version {version}: {where} cannot be read ({error})"
                    problems.append(Problem("bad-array", message, where, name, version))
                    continue
                if (tuple(data.shape), storage.dtype_name(data)) != (record.shape, record.dtype):
                    message = (
                        f"category {name!r} version {version}: {where} has shape "
                        f"{list(data.shape)} {storage.dtype_name(data)}, expected {list(record.shape)} {record.dtype}"
                    )
                    problems.append(Problem("bad-array", message, where, name, version))
                elif checksums and array_sha256(data) != record.sha256:
                    message = f"category {name!r} version {version}: {where} does not match its checksum"
                    problems.append(Problem("checksum-mismatch", message, where, name, version))
        return problems, checked

    def _find_leftovers(self) -> list[Problem]:
        """Orphan stores, temporary folders and stray files (call with the exclusive lock held).

        Nothing is called a leftover when the database cannot say what it refers to, and a
        store whose uuid a row still records (its row's path is damaged) is never an orphan.
        """
        try:
            with read_session(self.engine) as session:
                referenced = set(session.scalars(select(CategoryVersionRow.store_path)))
                # a store whose arrays a threshold version shares is in use while that version exists
                referenced |= {p for p in session.scalars(select(CategoryVersionRow.arrays_path)) if p}
                uuids = set(session.scalars(select(CategoryVersionRow.uuid)))
                projection_path = session.scalars(select(FeatureSpaceRow.projection_path)).one_or_none()
        except RegistryError as error:
            return [Problem("sqlite-integrity", f"leftovers were not looked for: {error}", DB_FILE)]
        problems = []
        for entry in sorted(self.root.iterdir()):
            name = entry.name
            if name.startswith("feature_space") and name.endswith(".zarr") and name != projection_path:
                problems.append(Problem("orphan-store", f"{name} is an unused feature-space store", name))
        tmp = self.root / TMP_DIR
        for entry in sorted(tmp.iterdir()) if tmp.is_dir() else []:
            relative = f"{TMP_DIR}/{entry.name}"
            problems.append(Problem("temp-file", f"{relative} is left over from an interrupted write", relative))
        stores = self.root / STORES_DIR
        for folder in sorted(stores.iterdir()) if stores.is_dir() else []:
            if not folder.is_dir():
                relative = f"{STORES_DIR}/{folder.name}"
                problems.append(Problem("stray-file", f"{relative} does not belong in {STORES_DIR}/", relative))
                continue
            for entry in sorted(folder.iterdir()):
                relative = f"{STORES_DIR}/{folder.name}/{entry.name}"
                if relative in referenced:
                    continue
                if entry.is_dir() and entry.name.endswith(".zarr") and entry.name[: -len(".zarr")] in uuids:
                    message = f"{relative} is the store of a category version whose row records another path"
                    problems.append(Problem("misplaced-store", message, relative, folder.name))
                elif entry.is_dir() and entry.name.endswith(".zarr"):
                    message = f"{relative} is a store that no category version refers to"
                    problems.append(Problem("orphan-store", message, relative, folder.name))
                else:
                    problems.append(Problem("stray-file", f"{relative} does not belong in {STORES_DIR}/", relative))
        return problems


def _same(a: object, b: object) -> bool:
    """Equality of JSON-like values, numbers compared as floats (NaN equals NaN)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return float(a) == float(b) or (math.isnan(float(a)) and math.isnan(float(b)))
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return set(a) == set(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def row_differences(fields: Mapping[str, Any], attributes: Mapping[str, Any]) -> list[str]:
    """Fields on which a version row and the attributes of its store disagree.

    A store's attributes are written with its arrays, before the row is committed, so they are
    an independent copy of what the row must say: a row changed by a damaged database (a
    flipped byte in a threshold, say) no longer matches them. Only the fields present on both
    sides are compared (stores of older versions record fewer).
    """
    found = []
    if "category" in attributes and not _same(fields.get("category"), attributes["category"]):
        found.append("category")
    if "uuid" in attributes and not _same(fields.get("uuid"), attributes["uuid"]):
        found.append("uuid")
    if (
        "store_path" in fields
        and isinstance(attributes.get("category"), str)
        and isinstance(attributes.get("uuid"), str)
        and fields["store_path"] != store_path(attributes["category"], attributes["uuid"])
    ):
        found.append("store_path")
    metadata = attributes.get("metadata")
    if isinstance(metadata, Mapping):
        params = metadata.get("params")
        params = params if isinstance(params, Mapping) else {}
        expected = {
            "metadata": metadata,
            "coreset_ratio": params.get("coreset_ratio"),
            "seed": params.get("seed"),
            "calibration_mode": params.get("calibration"),
            "calibration": metadata.get("calibrator"),
            "route_threshold": metadata.get("route_threshold"),
            "n_train_images": metadata.get("n_train_images"),
        }
        for key in ("unknown_threshold", "far_threshold"):  # recorded since revision 0003
            if key in metadata:
                expected[key] = metadata[key]
        if "unknown_threshold" in metadata and fields.get("unknown_statistic") is not None:
            expected["unknown_statistic"] = params.get("unknown_statistic")
        fit_seconds = metadata.get("fit_seconds")
        if fit_seconds is None or isinstance(fit_seconds, int | float):
            expected["fit_seconds"] = finite_or_none(fit_seconds)
        found.extend(key for key, value in expected.items() if key in fields and not _same(fields[key], value))
    for key in ("origin", "train_images", "arrays"):
        if key in attributes and key in fields and not _same(fields[key], attributes[key]):
            found.append(key)
    # stores written before revision 0005, and every fitted store, hold no arrays_path: NULL
    if "arrays_path" in fields and not _same(fields["arrays_path"], attributes.get("arrays_path")):
        found.append("arrays_path")
    return found


def feature_space_differences(row: FeatureSpaceRow, store: Path) -> list[str]:
    """Fields on which the feature-space row and the attributes of W's store disagree."""
    try:
        recorded = storage.read_attributes(store).get("feature_space")
    except (OSError, ValueError) as error:
        return [f"zarr.json (cannot be read: {error})"]
    if not isinstance(recorded, Mapping):
        return []  # a store without the description: nothing to compare
    described = row.description()
    return [key for key in described if not _same(described[key], recorded.get(key, DESCRIPTION_DEFAULTS.get(key)))]


def _not_null(value: str | None, column: str) -> str:
    if value is None:
        msg = f"column {column} is NULL"
        raise ValueError(msg)
    return value


def _decode_name(raw: object) -> str:
    """A category name read as bytes (a damaged one is shown with its bad bytes escaped)."""
    if isinstance(raw, bytes | bytearray | memoryview):
        return bytes(raw).decode("utf-8", "backslashreplace")
    return str(raw)


def _check_arrays_field(arrays: object) -> None:
    """Raise ``ValueError`` unless ``arrays`` is the ``arrays`` column the registry writes."""
    if not isinstance(arrays, dict) or not set(ARRAY_NAMES) <= set(arrays) <= {*ARRAY_NAMES, *OPTIONAL_ARRAY_NAMES}:
        msg = f"arrays lists {sorted(arrays) if isinstance(arrays, dict) else type(arrays).__name__}"
        raise ValueError(msg)
    for name, record in arrays.items():
        if (
            not isinstance(record, dict)
            or not isinstance(record.get("shape"), list)
            or not all(isinstance(v, int) and v >= 0 for v in record["shape"])
            or not isinstance(record.get("dtype"), str)
            or not isinstance(record.get("sha256"), str)
            or not re.fullmatch(r"[0-9a-f]{64}", record["sha256"])
        ):
            msg = f"the record of array {name!r} is not a shape, dtype and sha256"
            raise ValueError(msg)


def store_path(name: str, version_uuid: str) -> str:
    """Where the store of a category version lives, relative to the registry root."""
    return f"{STORES_DIR}/{name}/{version_uuid}.zarr"


__all__ = [
    "GC_KINDS",
    "GcReport",
    "Problem",
    "RegistryCheck",
    "VerifyReport",
    "feature_space_differences",
    "feature_space_row",
    "row_differences",
    "store_path",
]
