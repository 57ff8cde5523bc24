"""The registry's exceptions: one base class, one subclass per thing that can go wrong.

Every message is one sentence that says what is wrong and what to do about it; the CLI prints
it as it is.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path


class RegistryError(Exception):
    """Base class of every error raised by :mod:`registry`."""


class NotARegistryError(RegistryError):
    """The folder holds no (complete) registry."""

    def __init__(self, root: str | Path, reason: str | None = None):
        self.root = str(root)
        what = f"no registry at {root}" if reason is None else f"no usable registry at {root} ({reason})"
        super().__init__(f"{what}; run `registry init --root {root}`")


class RegistryExistsError(RegistryError):
    """``init`` on a folder that already holds categories or unrelated files."""


class ReadOnlyError(RegistryError):
    """A write was attempted on a registry opened read-only."""

    def __init__(self, root: str | Path, action: str):
        super().__init__(f"cannot {action}: the registry at {root} was opened read-only; open it without read_only")


class InvalidNameError(RegistryError, ValueError):
    """A category name that is not safe as a file name."""

    def __init__(self, name: str):
        self.name = name
        super().__init__(
            f"invalid category name {name!r}; use 1-128 characters from A-Z a-z 0-9 . _ - "
            "starting with a letter or digit"
        )


class UnknownCategoryError(RegistryError, KeyError):
    """A category name that the registry does not hold; the message lists the known ones."""

    def __init__(self, name: str, known: Iterable[str]):
        self.name = name
        self.known = sorted(known)
        hint = "none (add one with `registry add-category NAME --train DIR`)"
        listing = ", ".join(self.known) if self.known else hint
        super().__init__(f"unknown category {name!r}; known categories: {listing}")

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class UnknownVersionError(RegistryError, KeyError):
    """A version number that the category does not have."""

    def __init__(self, name: str, version: int, known: Sequence[int]):
        self.name = name
        self.version = version
        listing = ", ".join(str(v) for v in known) or "none"
        super().__init__(f"category {name!r} has no version {version}; its versions are: {listing}")

    def __str__(self) -> str:
        return str(self.args[0])


class BackboneLoadError(RegistryError):
    """The registry's backbone cannot be built (missing or wrong weights file)."""


class FeatureSpaceMismatchError(RegistryError):
    """Two feature spaces (or a backbone and a feature space) differ; the message names how."""

    def __init__(self, what: str, differences: Sequence[str], hint: str):
        self.differences = list(differences)
        super().__init__(f"{what} does not match the registry's feature space ({'; '.join(differences)}); {hint}")


class IntegrityError(RegistryError):
    """A stored file is missing, unreadable or does not match its checksum."""

    def __init__(self, category: str, version: int, file: str | Path, problem: str):
        self.category = category
        self.version = version
        self.file = str(file)
        super().__init__(
            f"category {category!r} version {version}: {file} {problem}; "
            f"run `registry verify` and refit or re-import the category"
        )


class DatabaseDamagedError(IntegrityError):
    """``registry.sqlite`` cannot be read, or one of its rows is damaged (names the row where known)."""

    def __init__(self, database: str | Path, problem: str, category: str | None = None, version: int | None = None):
        self.category = category  # type: ignore[assignment]
        self.version = version  # type: ignore[assignment]
        self.file = str(database)
        self.problem = problem
        where = ""
        if category is not None:
            where = f"category {category!r}" + ("" if version is None else f" version {version}") + ": "
        RegistryError.__init__(
            self,
            f"{where}the registry database {database} {problem}; run `registry verify`, then restore the "
            "database from a backup, or remove the damaged category and refit or re-import it",
        )

    def for_row(self, category: str, version: int | None) -> DatabaseDamagedError:
        """The same problem, attributed to one category (version) when the caller knows it."""
        if self.category is not None:
            return self
        return DatabaseDamagedError(self.file, self.problem, category, version)


class DatabaseBusyError(RegistryError):
    """Another process kept the database locked for longer than the registry waits."""

    def __init__(self, database: str | Path, seconds: float):
        super().__init__(
            f"the registry database {database} stayed locked by another process for more than "
            f"{seconds:.0f} s; try again when the other command has finished"
        )


class SchemaOutdatedError(RegistryError):
    """The registry's database schema is older than this library's and may not be upgraded here."""

    def __init__(self, root: str | Path, current: str | None, head: str):
        self.root = str(root)
        self.current = current
        self.head = head
        super().__init__(
            f"the registry at {root} has database schema {current or 'none'} but this library needs {head}; "
            f"run `registry upgrade --root {root}`"
        )


class SchemaTooNewError(RegistryError):
    """The registry was written by a newer library version (unknown schema revision)."""

    def __init__(self, root: str | Path, current: str, head: str):
        super().__init__(
            f"the registry at {root} has database schema {current}, newer than this library's {head}; "
            "upgrade structcore-registry"
        )


class BundleError(RegistryError):
    """A bundle cannot be imported (base class of every import refusal)."""


class BundleFormatError(BundleError):
    """Not a bundle, truncated, an unsupported format version, or a bad manifest."""


class BundleContentError(BundleError):
    """A member has a forbidden dtype, a wrong shape, non-finite values or an unexpected name."""


class BundleChecksumError(BundleError):
    """An array does not match the checksum in the bundle's manifest."""


class BundleNameCollisionError(BundleError):
    """A bundled category has the name of a category already in the registry."""


class BundleFeatureSpaceError(BundleError, FeatureSpaceMismatchError):
    """The bundle was made in another feature space than the target registry's."""


__all__ = [
    "BackboneLoadError",
    "BundleChecksumError",
    "BundleContentError",
    "BundleError",
    "BundleFeatureSpaceError",
    "BundleFormatError",
    "BundleNameCollisionError",
    "DatabaseBusyError",
    "DatabaseDamagedError",
    "FeatureSpaceMismatchError",
    "IntegrityError",
    "InvalidNameError",
    "NotARegistryError",
    "ReadOnlyError",
    "RegistryError",
    "RegistryExistsError",
    "SchemaOutdatedError",
    "SchemaTooNewError",
    "UnknownCategoryError",
    "UnknownVersionError",
]
