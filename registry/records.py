"""What the registry records about its categories, as plain data: names, versions, their fields.

Standard library only (no numpy, SQLAlchemy or zarr), so that commands which only read the
catalogue (``registry list``, ``show``) start fast. :mod:`registry.catalogue` reads these records
with :mod:`sqlite3`; :class:`registry.Registry` writes them.
"""

from __future__ import annotations

import functools
import importlib.metadata
import math
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from registry.errors import DatabaseDamagedError, InvalidNameError

if TYPE_CHECKING:
    import numpy as np

#: The database file inside a registry folder.
DB_FILE = "registry.sqlite"
#: Category names: safe as a single path component on every file system.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
#: Scoring of versions whose calibration does not record one (``structcore.scoring.LEGACY_SCORING``;
#: a test keeps them equal): they were fitted before the robust scoring existed.
LEGACY_SCORING = "paper"
#: Arrays stored per category version: ``structcore.model.CategoryModel.ARRAY_NAMES`` (a test keeps them equal).
ARRAY_NAMES: tuple[str, ...] = (
    "bank",
    "bank_image_ids",
    "prototypes",
    "calibration_base",
    "calibration_struct",
    "calibration_hybrid",
)


#: The optional array of a version: its train images' projected patch vectors (n, P, D) as
#: float16, what ``registry update`` continues from (versions fitted before it, imported ones and
#: in-memory fits lack it: an update then refits). Bundles do not carry it.
TRAIN_PATCHES = "train_patches"
#: Optional arrays stored beside ``train_patches``: each train image's squared distances (n, P, k)
#: float32 to its k nearest bank vectors, by kind (``structcore.model.CategoryModel.train_distances_``):
#: ``in_sample`` and, for loo / mixed calibration, ``loo``. With them an update does not search the
#: old images again (docs/registry.md "Keeping a category up to date"). ``coreset``: (n, P) float32,
#: each train patch's squared distance to its nearest bank vector in the coreset's proxy space (an
#: upper bound), with which an update continues the bank over the old patches too.
TRAIN_DISTANCES: dict[str, str] = {
    "in_sample": "train_distances_in_sample",
    "loo": "train_distances_loo",
    "coreset": "train_coreset_distances",
}
#: Optional arrays that older versions may hold and that are no longer written or read: each train
#: patch's nearest bank vector (n, P) int32, which the earlier anchored update search used.
RETIRED_ARRAY_NAMES: tuple[str, ...] = ("train_nearest_bank",)
OPTIONAL_ARRAY_NAMES: tuple[str, ...] = (TRAIN_PATCHES, *TRAIN_DISTANCES.values(), *RETIRED_ARRAY_NAMES)
#: Key of the model metadata listing the train images: ``[{"name", "sha256", "source"}]`` in the
#: order of ``bank_image_ids`` (source: ``fit``, ``update`` or ``feedback``).
TRAIN_IMAGE_INFO = "train_image_info"


#: The threshold rule of versions whose calibration records none (``structcore.thresholds.LEGACY_RULE``;
#: a test keeps them equal): the 99.5% quantile of the leave-one-out train-good scores.
LEGACY_THRESHOLD_RULE: dict[str, Any] = {"rule": "quantile", "quantile": 0.995, "source": "fit"}


def describe_threshold_rule(rule: dict[str, Any]) -> str:
    """``robust-conformal 1% FRR (fit)``, ``quantile 99.5% (fit)``, ``value (registry threshold)``, ..."""
    name = str(rule.get("rule", "quantile"))
    source = str(rule.get("source", "fit"))
    if name == "quantile":
        detail = f" {float(rule.get('quantile', 0.995)) * 100:g}%"
    elif isinstance(rule.get("frr"), int | float):
        detail = f" {float(rule['frr']) * 100:g}% FRR"
    else:
        detail = ""
    if source == "fit":
        where = "fit"
    elif source == "update":
        where = f"carried over by update from v{rule.get('parent_version', '?')}"
    else:
        where = f"registry threshold, from v{rule.get('parent_version', '?')}"
    return f"{name}{detail} ({where})"


@functools.cache
def library_version() -> str:
    """Installed version of the ``structcore-registry`` distribution."""
    try:
        return importlib.metadata.version("structcore-registry")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - source checkout
        return "unknown"


def finite_or_none(value: object) -> float | None:
    """``value`` as a float, or ``None`` for ``None``, NaN and infinities (JSON has no such numbers)."""
    if value is None:
        return None
    number = float(value)  # type: ignore[arg-type]
    return number if math.isfinite(number) else None


def validate_name(name: object) -> str:
    """Return ``name`` if it is a safe category name, else raise :class:`InvalidNameError`."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise InvalidNameError(str(name))
    return name


@dataclass(frozen=True)
class VersionInfo:
    """One version of a category, as the database records it."""

    category: str
    version: int
    uuid: str
    is_current: bool
    store_path: str
    created_at: datetime
    n_train_images: int
    bank_size: int
    n_prototypes: int
    coreset_ratio: float
    seed: int
    calibration_mode: str
    calibration: dict[str, Any]
    route_threshold: float
    fit_seconds: float | None
    library_version: str
    origin: str
    arrays: dict[str, dict[str, Any]]
    #: ``unknown`` decision (revision 0003); ``None`` on versions fitted before it (see docs/open-set.md).
    unknown_statistic: str | None = None
    unknown_threshold: float | None = None
    far_threshold: float | None = None
    #: Store whose arrays this version shares (``registry threshold``; revision 0005), else ``None``.
    arrays_path: str | None = None

    @property
    def thresholds(self) -> dict[str, float]:
        """Decision thresholds (base / struct / hybrid)."""
        return {k: float(v) for k, v in dict(self.calibration.get("thresholds", {})).items()}

    @property
    def array_store(self) -> str:
        """The store holding this version's arrays (its own, or the one it shares), relative to the root."""
        return self.arrays_path or self.store_path

    @property
    def threshold_rule(self) -> dict[str, Any]:
        """How the thresholds were chosen (versions written before rules: the 99.5% quantile of train-good)."""
        rule = self.calibration.get("threshold_rule")
        return dict(rule) if isinstance(rule, dict) else dict(LEGACY_THRESHOLD_RULE)

    @property
    def threshold_summary(self) -> str:
        """One short phrase: how the hybrid threshold was chosen (``registry show``, the web page)."""
        return describe_threshold_rule(self.threshold_rule)

    @property
    def scoring(self) -> str:
        """StructCore scoring, ``robust`` or ``paper`` (versions fitted before it was stored: ``paper``)."""
        return str(self.calibration.get("scoring", LEGACY_SCORING))

    @classmethod
    def from_row(cls, row: Any, category: str, is_current: bool) -> VersionInfo:
        """Build from a ``category_versions`` row: an ORM row or any object with its columns as attributes.

        Raises:
            DatabaseDamagedError: the row's content is not what the registry writes.
        """
        try:
            return cls._from_row(row, category, is_current)
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as error:
            problem = f"has a damaged row ({type(error).__name__}: {error})"
            raise DatabaseDamagedError(DB_FILE, problem, category, getattr(row, "version", None)) from error

    @classmethod
    def _from_row(cls, row: Any, category: str, is_current: bool) -> VersionInfo:
        return cls(
            category=category,
            version=row.version,
            uuid=row.uuid,
            is_current=is_current,
            store_path=row.store_path,
            created_at=row.created_at,
            n_train_images=row.n_train_images,
            bank_size=int(row.arrays["bank"]["shape"][0]),
            n_prototypes=int(row.arrays["prototypes"]["shape"][0]),
            coreset_ratio=row.coreset_ratio,
            seed=row.seed,
            calibration_mode=row.calibration_mode,
            calibration=dict(row.calibration),
            route_threshold=row.route_threshold,
            fit_seconds=row.fit_seconds,
            library_version=row.library_version,
            origin=row.origin or "fit",
            arrays={k: dict(v) for k, v in row.arrays.items()},
            unknown_statistic=row.unknown_statistic,
            unknown_threshold=row.unknown_threshold,
            far_threshold=row.far_threshold,
            arrays_path=getattr(row, "arrays_path", None),
        )

    def row_fields(self) -> dict[str, Any]:
        """The fields that :func:`registry.checks.row_differences` compares with the store's attributes."""
        return {
            "category": self.category,
            "uuid": self.uuid,
            "store_path": self.store_path,
            "coreset_ratio": self.coreset_ratio,
            "seed": self.seed,
            "n_train_images": self.n_train_images,
            "calibration_mode": self.calibration_mode,
            "calibration": self.calibration,
            "route_threshold": self.route_threshold,
            "fit_seconds": self.fit_seconds,
            "origin": self.origin,
            "arrays": self.arrays,
            "unknown_statistic": self.unknown_statistic,
            "unknown_threshold": self.unknown_threshold,
            "far_threshold": self.far_threshold,
            "arrays_path": self.arrays_path,
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible form (for the CLI's ``--json``)."""
        data = dict(self.__dict__)
        data["created_at"] = self.created_at.isoformat() + "Z"
        data["thresholds"] = self.thresholds
        data["scoring"] = self.scoring
        data["threshold_rule"] = self.threshold_rule
        data["threshold_summary"] = self.threshold_summary
        return data


@dataclass(frozen=True)
class CategoryInfo:
    """A category with all its versions (oldest first)."""

    name: str
    description: str | None
    created_at: datetime
    current_version: int | None
    versions: tuple[VersionInfo, ...]

    @property
    def current(self) -> VersionInfo | None:
        """The current version."""
        return next((v for v in self.versions if v.is_current), None)

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible form."""
        return {
            "name": self.name,
            "description": self.description,
            "created_at": self.created_at.isoformat() + "Z",
            "current_version": self.current_version,
            "versions": [v.to_dict() for v in self.versions],
        }


@dataclass(frozen=True)
class StoredVersion:
    """One category version as stored: its record, model metadata, train image list and verified arrays."""

    info: VersionInfo
    metadata: dict[str, Any]
    train_images: list[Any]
    arrays: dict[str, np.ndarray]


@dataclass
class PendingVersion:
    """A category version about to be written (internal to the registry's write path)."""

    name: str
    arrays: Callable[[], dict[str, np.ndarray]]
    metadata: dict[str, Any]
    train_images: list[str]
    origin: str
    description: str | None = None
    #: Refuse (instead of adding a version) when the name exists at commit time.
    must_be_new: bool = False
    uuid: str = field(default_factory=lambda: str(uuid.uuid4()))
    #: A version sharing another's arrays (``registry threshold``): that store, relative to the
    #: root, and the records of its arrays; ``arrays`` then returns nothing.
    arrays_path: str | None = None
    shared_arrays: dict[str, Any] | None = None
    #: Arrays whose first rows equal the same array's in another version's store (``registry
    #: update``'s train patches): that store, relative to the root, and the rows. Their chunk
    #: files are hard-linked rather than written again (:func:`registry.storage.write_store`).
    leading_rows: dict[str, tuple[str, int]] | None = None


__all__ = [
    "ARRAY_NAMES",
    "DB_FILE",
    "NAME_PATTERN",
    "OPTIONAL_ARRAY_NAMES",
    "TRAIN_DISTANCES",
    "TRAIN_IMAGE_INFO",
    "TRAIN_PATCHES",
    "CategoryInfo",
    "PendingVersion",
    "StoredVersion",
    "VersionInfo",
    "finite_or_none",
    "library_version",
    "validate_name",
]
