"""StructCore registry: persistent, versioned storage of fitted categories around :mod:`structcore`.

A registry is a folder with a SQLite database (``registry.sqlite``) and zarr stores for the
arrays; see ``docs/registry.md``. The entry point is :class:`Registry`::

    from registry import Registry

    reg = Registry.init("my-registry")
    reg.add_category("screw", train_paths)
    records = reg.predict(test_paths)
"""

from registry.core import (
    BackboneLoadError,
    CategoryInfo,
    GcReport,
    Problem,
    Registry,
    VerifyReport,
    VersionInfo,
    library_version,
    validate_name,
)
from registry.errors import (
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
from registry.inference import PredictionRecord, predict

__all__ = [
    "BackboneLoadError",
    "BundleChecksumError",
    "BundleContentError",
    "BundleError",
    "BundleFeatureSpaceError",
    "BundleFormatError",
    "BundleNameCollisionError",
    "CategoryInfo",
    "DatabaseBusyError",
    "DatabaseDamagedError",
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
    "predict",
    "validate_name",
]
