"""The registry's exceptions (registry.errors): one base class, one sentence each with what to do."""

from __future__ import annotations

import inspect
import pickle

import pytest

import registry.errors as errors
from registry.errors import (
    BundleError,
    BundleFeatureSpaceError,
    BundleFormatError,
    DatabaseBusyError,
    DatabaseDamagedError,
    FeatureSpaceMismatchError,
    IntegrityError,
    InvalidNameError,
    NotARegistryError,
    ReadOnlyError,
    RegistryError,
    SchemaOutdatedError,
    SchemaTooNewError,
    UnknownCategoryError,
    UnknownVersionError,
)


def test_every_exported_error_is_a_registry_error() -> None:
    exported = [getattr(errors, name) for name in errors.__all__]
    assert all(inspect.isclass(cls) and issubclass(cls, RegistryError) for cls in exported)
    defined = {
        name for name, value in vars(errors).items() if inspect.isclass(value) and value.__module__ == errors.__name__
    }
    assert defined == set(errors.__all__)


def test_lookup_errors_are_also_key_errors_with_a_plain_message() -> None:
    unknown = UnknownCategoryError("bottel", ["cable", "bottle"])
    assert isinstance(unknown, KeyError) and unknown.known == ["bottle", "cable"]
    assert str(unknown) == "unknown category 'bottel'; known categories: bottle, cable"  # not KeyError's repr
    empty = UnknownCategoryError("x", [])
    assert "`registry add-category NAME --train DIR`" in str(empty)
    version = UnknownVersionError("bottle", 4, [1, 2])
    assert isinstance(version, KeyError)
    assert str(version) == "category 'bottle' has no version 4; its versions are: 1, 2"
    with pytest.raises(KeyError):
        raise version


def test_invalid_name_is_a_value_error_naming_the_rule() -> None:
    error = InvalidNameError("../x")
    assert isinstance(error, ValueError) and error.name == "../x"
    assert "'../x'" in str(error) and "1-128 characters" in str(error)


@pytest.mark.parametrize(
    ("error", "says"),
    [
        (NotARegistryError("/r"), "run `registry init --root /r`"),
        (NotARegistryError("/r", "initialisation did not finish"), "no usable registry at /r (initialisation"),
        (ReadOnlyError("/r", "remove pill"), "cannot remove pill: the registry at /r was opened read-only"),
        (IntegrityError("pill", 2, "stores/pill/x.zarr", "is missing"), "run `registry verify`"),
        (DatabaseBusyError("/r/registry.sqlite", 30.4), "for more than 30 s; try again"),
        (SchemaOutdatedError("/r", "0001", "0004"), "run `registry upgrade --root /r`"),
        (SchemaTooNewError("/r", "0009", "0004"), "upgrade structcore-registry"),
        (FeatureSpaceMismatchError("the bundle", ["crop: 392 vs 256"], "use another registry"), "(crop: 392 vs 256)"),
    ],
)
def test_messages_are_one_sentence_that_says_what_to_do(error: RegistryError, says: str) -> None:
    message = str(error)
    assert says in message
    assert "\n" not in message


def test_integrity_errors_name_category_version_and_file() -> None:
    error = IntegrityError("pill", 2, "stores/pill/x.zarr", "does not match its checksum")
    assert (error.category, error.version, error.file) == ("pill", 2, "stores/pill/x.zarr")
    assert str(error).startswith("category 'pill' version 2: stores/pill/x.zarr does not match its checksum")


def test_database_damage_is_attributed_to_a_row_once() -> None:
    error = DatabaseDamagedError("/r/registry.sqlite", "cannot be read (malformed)")
    assert isinstance(error, IntegrityError) and error.category is None
    assert str(error).startswith("the registry database /r/registry.sqlite cannot be read (malformed);")
    row = error.for_row("pill", 3)
    assert (row.category, row.version, row.file, row.problem) == ("pill", 3, error.file, error.problem)
    assert str(row).startswith("category 'pill' version 3: the registry database")
    assert row.for_row("other", 1) is row  # already attributed


def test_bundle_feature_space_error_is_both_kinds() -> None:
    error = BundleFeatureSpaceError("the bundle", ["dim: 512 vs 256"], "import it into a new registry")
    assert isinstance(error, BundleError) and isinstance(error, FeatureSpaceMismatchError)
    assert error.differences == ["dim: 512 vs 256"]


def test_plain_errors_survive_pickling() -> None:
    """Errors built from their message alone come back from a worker process unchanged."""
    for error in (RegistryError("x"), BundleError("bad bundle"), BundleFormatError("not a bundle")):
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is type(error) and str(copy) == str(error)


@pytest.mark.xfail(strict=True, reason="errors with their own __init__ pickle their message as the first argument")
def test_errors_with_arguments_survive_pickling() -> None:
    """Known gap (found by this test): ``InvalidNameError("a/b")`` unpickles as the name being the message."""
    error = InvalidNameError("a/b")
    assert str(pickle.loads(pickle.dumps(error))) == str(error)
