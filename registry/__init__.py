"""StructCore registry: persistent, versioned storage of fitted categories around :mod:`structcore`.

A registry is a folder with a SQLite database (``registry.sqlite``) and zarr stores for the
arrays; see ``docs/registry.md``. The entry point is :class:`Registry`::

    from registry import Registry

    reg = Registry.init("my-registry")
    reg.add_category("screw", train_paths)
    records = reg.detector().predict(test_paths)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from registry.catalogue import Catalogue
from registry.errors import (
    BackboneLoadError,
    BundleChecksumError,
    BundleContentError,
    BundleError,
    BundleFeatureSpaceError,
    BundleFormatError,
    BundleNameCollisionError,
    DatabaseBusyError,
    DatabaseDamagedError,
    FeatureSpaceMismatchError,
    IntegrityError,
    InvalidNameError,
    NotARegistryError,
    ReadOnlyError,
    RegistryError,
    RegistryExistsError,
    SchemaOutdatedError,
    SchemaTooNewError,
    UnknownCategoryError,
    UnknownVersionError,
)
from registry.records import CategoryInfo, VersionInfo, library_version, validate_name

if TYPE_CHECKING:
    from registry.checks import GcReport, Problem, VerifyReport
    from registry.core import Registry
    from registry.detector import Detector, PredictionRecord

#: Names served from their modules on first use (PEP 562), so that importing a light part of the
#: package (``registry.errors``, ``registry.catalogue``) does not load SQLAlchemy, zarr and numpy:
#: ``registry list`` starts in a fraction of a second (see ``tests/cli/test_start.py``).
_ON_FIRST_USE = {
    "Detector": "registry.detector",
    "GcReport": "registry.checks",
    "Problem": "registry.checks",
    "Registry": "registry.core",
    "VerifyReport": "registry.checks",
    "PredictionRecord": "registry.detector",
}


def __getattr__(name: str) -> Any:
    module = _ON_FIRST_USE.get(name)
    if module is None:
        msg = f"module 'registry' has no attribute {name!r}"
        raise AttributeError(msg)
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "BackboneLoadError",
    "BundleChecksumError",
    "BundleContentError",
    "BundleError",
    "BundleFeatureSpaceError",
    "BundleFormatError",
    "BundleNameCollisionError",
    "Catalogue",
    "CategoryInfo",
    "DatabaseBusyError",
    "DatabaseDamagedError",
    "Detector",
    "FeatureSpaceMismatchError",
    "GcReport",
    "IntegrityError",
    "InvalidNameError",
    "NotARegistryError",
    "PredictionRecord",
    "Problem",
    "ReadOnlyError",
    "Registry",
    "RegistryError",
    "RegistryExistsError",
    "SchemaOutdatedError",
    "SchemaTooNewError",
    "UnknownCategoryError",
    "UnknownVersionError",
    "VerifyReport",
    "VersionInfo",
    "library_version",
    "validate_name",
]
