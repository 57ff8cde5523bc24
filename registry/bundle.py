"""Export / import of categories as one self-contained HDF5 bundle.

Layout (format version 1)::

    /                      attrs: format, format_version, library_version, created_at, manifest
    /feature_space         attrs: description (JSON of FeatureSpace.describe())
    /feature_space/projection                  W (in_dim, D)
    /categories/<name>     attrs: record (JSON: model metadata and version facts)
    /categories/<name>/<array>                 bank, bank_image_ids, prototypes, calibration_*

``manifest`` is JSON: the format and version, and for the feature space and every category the
shape, dtype and sha256 (:func:`registry.storage.array_sha256`) of each array plus the sha256
of each JSON attribute. Datasets are stored contiguous and uncompressed, little-endian.

Import reads nothing but plain numeric datasets and string attributes (h5py never unpickles)
and checks everything before the first byte is written to the registry; the categories are
then committed together in one database transaction.
"""

from __future__ import annotations

import faulthandler
import hashlib
import json
import math
import os
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np

from registry.errors import (
    BundleChecksumError,
    BundleContentError,
    BundleError,
    BundleFeatureSpaceError,
    BundleFormatError,
    BundleNameCollisionError,
    RegistryError,
)
from registry.models import utcnow
from registry.records import ARRAY_NAMES, NAME_PATTERN, PendingVersion, StoredVersion, library_version
from registry.storage import ALLOWED_DTYPES, array_sha256, canonical, dtype_name
from structcore.feature_space import DESCRIPTION_DEFAULTS, TILE_FIELDS, FeatureSpace
from structcore.settings import (
    BANK_DTYPES,
    FIT_PARAMETERS,
    MAX_IMAGE_SIDE,
    OPERATING_POINT_RULES,
    FeatureSpaceSettings,
    check_parameters,
)

if TYPE_CHECKING:
    from structcore.model import CategoryModel

FORMAT = "structcore-registry-bundle"
#: Version 2: categories may hold robust scoring, ``mixed`` calibration and the ``quantile-30``
#: unknown rule, which a version-1 reader would misread. Version 3: categories may record the rule
#: their thresholds were chosen by (``calibrator["threshold_rule"]``: a train-good rule, or a
#: threshold set by ``registry threshold``; schema revision 0005). This library reads all three.
FORMAT_VERSION = 3
READABLE_FORMAT_VERSIONS = (1, 2, 3)
#: Largest array a bundle may declare, in bytes.
MAX_ARRAY_BYTES = 16 << 30
#: Largest JSON attribute, in characters.
MAX_JSON_CHARS = 64 << 20
#: Most categories in one bundle.
MAX_CATEGORIES = 10_000
#: A compressed dataset may declare at most this many times its stored bytes (and always 64 MiB):
#: a bound on the memory a small file can make the import allocate (a "zip bomb").
MAX_COMPRESSION_RATIO = 64
MIN_DECLARED_BYTES_LIMIT = 64 << 20

ROOT_ATTRS = frozenset({"format", "format_version", "library_version", "created_at", "manifest"})
FLOAT_ARRAYS = frozenset({"bank", "prototypes", "calibration_base", "calibration_struct", "calibration_hybrid"})


def _json_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _dumps(data: object) -> str:
    return json.dumps(data, sort_keys=True, allow_nan=False, separators=(",", ":"))


# -------------------------------------------------------------------------------- export
def export_bundle(
    space: FeatureSpace, names: Sequence[str], read_version: Callable[[str], StoredVersion], path: Path
) -> Path:
    """Write ``space`` and the version ``read_version(name)`` gives for each of ``names`` to ``path``.

    ``read_version`` returns verified arrays and metadata (:meth:`Registry.read_version
    <registry.core.Registry.read_version>`: the current version). The file is written next to
    ``path`` under a temporary name and renamed at the end.
    """
    names = list(dict.fromkeys(names))
    if not names:
        raise RegistryError("nothing to export: no category names were given")
    if Path(path).is_dir():  # found before the bundle is written, not at the final rename
        raise RegistryError(f"cannot export to {path}: it is an existing folder; give a file name")
    description = _dumps(space.describe())
    projection = canonical(space.projection)
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "feature_space": {
            "description_sha256": _json_sha256(description),
            "arrays": {"projection": _array_entry(projection)},
        },
        "categories": {},
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with h5py.File(tmp, "w", track_order=True) as handle:
            handle.attrs["format"] = FORMAT
            handle.attrs["format_version"] = FORMAT_VERSION
            handle.attrs["library_version"] = library_version()
            handle.attrs["created_at"] = utcnow().isoformat() + "Z"
            fs_group = handle.create_group("feature_space")
            fs_group.attrs["description"] = description
            fs_group.create_dataset("projection", data=projection)
            categories = handle.create_group("categories", track_order=True)
            for name in names:
                stored = read_version(name)  # reads with checksum verification, builds no model
                arrays = {array: canonical(value) for array, value in stored.arrays.items()}
                record = _dumps(_version_record(stored))
                group = categories.create_group(name)
                group.attrs["record"] = record
                entries = {}
                for array in ARRAY_NAMES:
                    group.create_dataset(array, data=arrays[array])
                    entries[array] = _array_entry(arrays[array])
                manifest["categories"][name] = {"record_sha256": _json_sha256(record), "arrays": entries}
            handle.attrs["manifest"] = _dumps(manifest)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _array_entry(array: np.ndarray) -> dict[str, Any]:
    return {"shape": [int(v) for v in array.shape], "dtype": dtype_name(array), "sha256": array_sha256(array)}


def _version_record(stored: StoredVersion) -> dict[str, Any]:
    info = stored.info
    return {
        "model_metadata": _plain(stored.metadata),
        "source_version": info.version,
        "source_uuid": info.uuid,
        "created_at": info.created_at.isoformat() + "Z",
        "library_version": info.library_version,
        "origin": info.origin,
    }


def _plain(value: Any) -> Any:
    """JSON-safe copy: non-finite floats (e.g. a NaN coreset radius) become None."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _restore_metadata(metadata: Any) -> dict[str, Any]:
    """Inverse of :func:`_plain` for the optional scalars (None -> absent -> NaN default)."""
    restored = dict(metadata)
    for key in ("coreset_radius", "fit_seconds"):
        if restored.get(key, 0.0) is None:
            del restored[key]
    return restored


# -------------------------------------------------------------------------------- import
@dataclass
class _BundledCategory:
    name: str
    record: dict[str, Any]
    entries: dict[str, dict[str, Any]]


@dataclass
class ValidatedBundle:
    """What a bundle holds, after every check passed (arrays are re-read when written)."""

    path: Path
    space: FeatureSpace
    categories: list[_BundledCategory]
    #: (device, inode, size, mtime) of the file that was validated.
    identity: tuple[int, ...] = ()


def _refuse(cls: type[BundleError], path: Path, problem: str, hint: str = "export it again") -> BundleError:
    return cls(f"bundle {path} {problem}; {hint}")


def _check_link(group: h5py.Group, name: str, path: Path) -> None:
    link = group.get(name, getlink=True)
    if not isinstance(link, h5py.HardLink):
        raise _refuse(
            BundleContentError, path, f"member {group.name}/{name} is a {type(link).__name__}, not stored data"
        )


def _members(group: h5py.Group, expected: set[str] | None, path: Path) -> list[str]:
    names = list(group.keys())
    for name in names:
        _check_link(group, name, path)
    if expected is not None:
        unknown = sorted(set(names) - expected)
        missing = sorted(expected - set(names))
        if unknown:
            raise _refuse(BundleContentError, path, f"has unexpected members in {group.name}: {', '.join(unknown)}")
        if missing:
            raise _refuse(BundleContentError, path, f"lacks members in {group.name}: {', '.join(missing)}")
    return names


def _string_attr(obj: h5py.HLObject, key: str, path: Path) -> str:
    if key not in obj.attrs:
        raise _refuse(BundleFormatError, path, f"has no {key!r} attribute on {obj.name}")
    value = obj.attrs[key]
    try:
        if isinstance(value, bytes):
            value = value.decode("utf-8", errors="strict")
        if isinstance(value, str):
            value.encode("utf-8")  # h5py keeps undecodable bytes as surrogates: refuse them here
    except UnicodeError as error:
        raise _refuse(BundleFormatError, path, f"attribute {key!r} on {obj.name} is not UTF-8 text") from error
    if not isinstance(value, str):
        raise _refuse(BundleFormatError, path, f"attribute {key!r} on {obj.name} is not text")
    if len(value) > MAX_JSON_CHARS:
        raise _refuse(BundleFormatError, path, f"attribute {key!r} on {obj.name} is too large")
    return value


def _no_constant(token: str) -> float:
    raise ValueError(f"{token} is not a finite number")


def _finite_float(token: str) -> float:
    value = float(token)
    if not math.isfinite(value):
        raise ValueError(f"{token} is not a finite number")
    return value


def _loads(text: str) -> Any:
    """``json.loads`` that refuses NaN, Infinity and numbers that overflow to infinity."""
    return json.loads(text, parse_constant=_no_constant, parse_float=_finite_float)


def _json_attr(obj: h5py.HLObject, key: str, path: Path) -> Any:
    try:
        return _loads(_string_attr(obj, key, path))
    except ValueError as error:  # JSONDecodeError, non-finite numbers, oversized integers
        raise _refuse(
            BundleFormatError, path, f"attribute {key!r} on {obj.name} is not valid JSON ({error})"
        ) from error


def _check_dataset(dataset: h5py.Dataset, entry: Any, ndim: int, path: Path) -> None:
    """Structure checks of one dataset, before any of its data is read."""
    where = dataset.name
    if not isinstance(entry, dict) or not {"shape", "dtype", "sha256"} <= set(entry):
        raise _refuse(BundleFormatError, path, f"has no manifest entry for {where}")
    dtype = dataset.dtype
    if (
        dtype.fields is not None
        or dtype.subdtype is not None
        or h5py.check_vlen_dtype(dtype) is not None
        or h5py.check_string_dtype(dtype) is not None
        or dtype.newbyteorder("=") not in {d.newbyteorder("=") for d in ALLOWED_DTYPES}
    ):
        allowed = ", ".join(sorted(str(d) for d in ALLOWED_DTYPES))
        raise _refuse(BundleContentError, path, f"dataset {where} has dtype {dtype}; only {allowed} are accepted")
    if dataset.is_virtual or dataset.external:
        raise _refuse(BundleContentError, path, f"dataset {where} refers to data outside the bundle")
    if dataset.compression not in (None, "gzip", "lzf") or dataset.scaleoffset is not None:
        raise _refuse(BundleContentError, path, f"dataset {where} uses an unsupported filter ({dataset.compression})")
    shape = tuple(int(v) for v in dataset.shape)
    if len(shape) != ndim or any(v < 1 for v in shape):
        raise _refuse(
            BundleContentError, path, f"dataset {where} has shape {list(shape)}, expected {ndim} non-empty axes"
        )
    declared = math.prod(shape) * dtype.itemsize
    if declared > MAX_ARRAY_BYTES:
        raise _refuse(
            BundleContentError, path, f"dataset {where} declares {list(shape)} ({dtype}), beyond the size limit"
        )
    _check_storage(dataset, declared, path)
    if [int(v) for v in entry["shape"]] != list(shape) or str(entry["dtype"]) != dtype.newbyteorder("<").str:
        raise _refuse(
            BundleContentError,
            path,
            f"dataset {where} has shape {list(shape)} {dtype.newbyteorder('<').str} but the manifest says "
            f"{entry['shape']} {entry['dtype']}",
        )


def _check_storage(dataset: h5py.Dataset, declared: int, path: Path) -> None:
    """Refuse a dataset whose declared size its stored bytes do not back (before reading it).

    Reading allocates the declared size, so a tiny file declaring a huge sparse, unwritten or
    over-compressed dataset would otherwise make the import allocate gigabytes.
    """
    where = dataset.name
    stored = int(dataset.id.get_storage_size())
    file_size = path.stat().st_size
    if stored > file_size:
        raise _refuse(
            BundleFormatError, path, f"dataset {where} claims {stored} stored bytes, more than the file holds"
        )
    if dataset.chunks is None:  # contiguous or compact: exactly the declared bytes
        if stored != declared:
            problem = f"dataset {where} declares {declared} bytes but stores {stored}"
            raise _refuse(BundleContentError, path, problem)
        return
    expected_chunks = math.prod(math.ceil(s / c) for s, c in zip(dataset.shape, dataset.chunks, strict=True))
    if int(dataset.id.get_num_chunks()) != expected_chunks:
        raise _refuse(BundleContentError, path, f"dataset {where} has chunks that were never written")
    if dataset.compression is None:
        backed = stored >= declared
    else:
        backed = declared <= max(MIN_DECLARED_BYTES_LIMIT, MAX_COMPRESSION_RATIO * stored)
    if not backed:
        problem = f"dataset {where} declares {declared} bytes but stores only {stored}"
        raise _refuse(BundleContentError, path, problem)


def _read_verified(dataset: h5py.Dataset, entry: dict[str, Any], path: Path) -> np.ndarray:
    """Read a (structure-checked) dataset and check its checksum and finiteness."""
    try:
        data = canonical(dataset[()])
    except OSError as error:
        raise _refuse(BundleFormatError, path, f"dataset {dataset.name} cannot be read ({error})") from error
    if array_sha256(data) != entry["sha256"]:
        raise _refuse(
            BundleChecksumError, path, f"dataset {dataset.name} does not match its checksum (the file is damaged)"
        )
    if data.dtype.kind == "f" and not np.isfinite(data).all():
        raise _refuse(BundleContentError, path, f"dataset {dataset.name} contains NaN or infinite values")
    return data


def _validate_space(handle: h5py.File, manifest: dict[str, Any], path: Path) -> FeatureSpace:
    group = handle["feature_space"]
    if not isinstance(group, h5py.Group):
        raise _refuse(BundleContentError, path, "member /feature_space is not a group")
    _members(group, {"projection"}, path)
    _only_attrs(group, {"description"}, path)
    text = _string_attr(group, "description", path)
    fs_manifest = manifest.get("feature_space")
    if not isinstance(fs_manifest, dict) or fs_manifest.get("description_sha256") != _json_sha256(text):
        raise _refuse(BundleChecksumError, path, "feature-space description does not match its checksum")
    try:
        description = _loads(text)
    except ValueError as error:
        raise _refuse(BundleFormatError, path, f"feature-space description is not JSON ({error})") from error
    _check_description(description, path)
    dataset = group["projection"]
    if not isinstance(dataset, h5py.Dataset):
        raise _refuse(BundleContentError, path, "member /feature_space/projection is not a dataset")
    entry = dict(fs_manifest.get("arrays", {})).get("projection")
    _check_dataset(dataset, entry, 2, path)
    assert isinstance(entry, dict)
    try:
        channels = [int(c) for c in description["channels"]]
        dim = int(description["dim"])
        crop, resize = int(description["crop"]), int(description["resize"])
    except (KeyError, TypeError, ValueError) as error:
        raise _refuse(BundleFormatError, path, f"feature-space description is incomplete ({error})") from error
    if tuple(dataset.shape) != (sum(channels), dim) or not 0 < crop <= resize:
        raise _refuse(
            BundleContentError,
            path,
            f"projection has shape {list(dataset.shape)} but the description needs {[sum(channels), dim]}",
        )
    projection = _read_verified(dataset, entry, path)
    try:
        return FeatureSpace.from_description(description, projection.astype(np.float32))
    except (KeyError, TypeError, ValueError) as error:
        raise _refuse(BundleFormatError, path, f"feature-space description is invalid ({error})") from error


def _is_int(value: object, low: int, high: int | None = None) -> bool:
    return bool(
        isinstance(value, int | np.integer)
        and not isinstance(value, bool)
        and low <= value
        and (high is None or value <= high)
    )


def _is_number(value: object, low: float, high: float, *, open_low: bool = False) -> bool:
    if not isinstance(value, int | float | np.number) or isinstance(value, bool):
        return False
    number = float(value)
    return math.isfinite(number) and (low < number if open_low else low <= number) and number <= high


def _check_description(description: Any, path: Path) -> None:
    """The feature-space description holds sane, finite values (before any of it is used)."""
    if not isinstance(description, dict):
        raise _refuse(BundleFormatError, path, "feature-space description is not a JSON object")
    problems = []
    resize, crop, dim = description.get("resize"), description.get("crop"), description.get("dim")
    geometry = description.get("input_geometry", DESCRIPTION_DEFAULTS["input_geometry"])  # absent before 0007
    # the settings `registry init` accepts (structcore.settings), checked by the same table
    tiles = {name: description[name] for name in TILE_FIELDS if description.get(name) is not None}
    settings = FeatureSpaceSettings(resize=resize, crop=crop, dim=dim, input_geometry=geometry, **tiles)  # type: ignore[arg-type]
    refused = {problem.parameter for problem in settings.problems()}
    if refused & {"resize", "crop"}:
        problems.append(
            f"resize/crop {resize}/{crop} (1 <= crop <= resize <= {MAX_IMAGE_SIDE}; fit, tile: crop = resize)"
        )
    if "input_geometry" in refused:
        problems.append(f"input_geometry {geometry!r}")
    problems.extend(f"{name} {description.get(name)!r}" for name in TILE_FIELDS if name in refused)
    if geometry == "tile" and any(description.get(name) is None for name in TILE_FIELDS):
        problems.append("tile settings missing (tile_max_side, tile_overlap)")
    if "dim" in refused:
        problems.append(f"dim {dim!r}")
    if not _is_int(description.get("local_pool"), 1, 64):
        problems.append(f"local_pool {description.get('local_pool')!r}")
    for key, low, open_low in (("mean", -1e6, False), ("std", 0.0, True)):
        values = description.get(key)
        if (
            not isinstance(values, list)
            or len(values) != 3
            or not all(_is_number(v, low, 1e6, open_low=open_low) for v in values)
        ):
            problems.append(f"{key} {values!r}")
    channels, layers = description.get("channels"), description.get("layers")
    if (
        not isinstance(channels, list)
        or not channels
        or not all(_is_int(c, 1, 1 << 16) for c in channels)
        or not isinstance(layers, list)
        or len(layers) != len(channels)
        or not all(isinstance(layer, str) for layer in layers)
    ):
        problems.append(f"layers {layers!r} / channels {channels!r}")
    for key in ("backbone", "weights_sha256"):
        if not isinstance(description.get(key), str):
            problems.append(f"{key} {description.get(key)!r}")
    if problems:
        raise _refuse(BundleContentError, path, f"feature-space description has invalid values: {'; '.join(problems)}")


def _check_settings(
    name: str, model: CategoryModel, arrays: Mapping[str, np.ndarray], space: FeatureSpace, path: Path
) -> None:
    """The settings and fitted scalars of a category are values the library itself produces.

    A hostile record could otherwise set a blur sigma of 1e5 (a multi-terabyte kernel), a top
    ratio that makes every score fail, or thresholds that hide every defect.
    """
    bank = arrays["bank"]
    # every setting against the table the library fits with (structcore.settings) ...
    params = model.get_params()
    if params["threshold_rule"] in OPERATING_POINT_RULES:  # a `registry threshold` version: no fit rule to check
        del params["threshold_rule"]
    problems = [
        f"{problem.parameter} {problem.value!r} ({problem.allowed})"
        for problem in check_parameters(FIT_PARAMETERS, params)
    ]
    # ... and what the table cannot know: the bank and the feature space
    if _is_int(model.k, 1) and model.k > bank.shape[0]:
        problems.append(f"k {model.k!r} (1..{bank.shape[0]})")
    if model.bank_dtype in BANK_DTYPES and np.dtype(model.bank_dtype) != bank.dtype:
        problems.append(f"bank_dtype {model.bank_dtype!r} for a {bank.dtype} bank")
    if _is_number(model.sigma, 0.0, math.inf) and model.sigma > space.crop:
        problems.append(f"sigma {model.sigma!r} (0..{space.crop})")
    grid = model.grid_
    if not all(_is_int(v, 1, space.crop) for v in grid):
        problems.append(f"grid {list(grid)}")
    calibrator = model.calibrator_
    n_calibration = len(arrays["calibration_base"])
    if not (
        calibrator.mu_.shape == (3,)
        and calibrator.sigma_.shape == (3,)
        and np.isfinite(calibrator.mu_).all()
        and np.isfinite(calibrator.sigma_).all()
        and (calibrator.sigma_ >= 0).all()
        and _is_number(calibrator.lambda_, 0.0, 1e300)
        and _is_number(calibrator.top_ratio, 0.0, 1.0, open_low=True)
        and _is_number(calibrator.quantile, 0.0, 1.0, open_low=True)
        and _is_number(calibrator.eps, 0.0, 1.0, open_low=True)
        and set(calibrator.thresholds_) == {"base", "struct", "hybrid"}
        and all(math.isfinite(v) for v in calibrator.thresholds_.values())
        and calibrator.n_samples_ == n_calibration
    ):
        problems.append("calibrator state (mu, sigma, lambda, thresholds, top ratio, quantile, eps, n_samples)")
    if problems:
        raise _refuse(BundleContentError, path, f"category {name!r} has invalid settings: {'; '.join(problems)}")


def _only_attrs(obj: h5py.HLObject, allowed: set[str] | frozenset[str], path: Path) -> None:
    unknown = sorted(set(obj.attrs.keys()) - set(allowed))
    if unknown:
        raise _refuse(BundleContentError, path, f"has unexpected attributes on {obj.name}: {', '.join(unknown)}")


def _validate_category(
    group: h5py.Group, name: str, entry: Any, space: FeatureSpace, path: Path, *, keep: bool
) -> tuple[_BundledCategory, dict[str, np.ndarray] | None]:
    """Check one category fully; returns it, and its arrays when ``keep``."""
    if not isinstance(entry, dict) or not isinstance(entry.get("arrays"), dict):
        raise _refuse(BundleFormatError, path, f"manifest has no entry for category {name!r}")
    _members(group, set(ARRAY_NAMES), path)
    _only_attrs(group, {"record"}, path)
    text = _string_attr(group, "record", path)
    if entry.get("record_sha256") != _json_sha256(text):
        raise _refuse(BundleChecksumError, path, f"record of category {name!r} does not match its checksum")
    try:
        record = _loads(text)
        metadata = _restore_metadata(record["model_metadata"])
        record["model_metadata"] = metadata
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise _refuse(BundleFormatError, path, f"record of category {name!r} is invalid ({error})") from error
    entries = {array: entry["arrays"].get(array) for array in ARRAY_NAMES}
    datasets: dict[str, h5py.Dataset] = {}
    for array in ARRAY_NAMES:
        dataset = group[array]
        if not isinstance(dataset, h5py.Dataset):
            raise _refuse(BundleContentError, path, f"member {group.name}/{array} is not a dataset")
        ndim = 2 if array in {"bank", "prototypes"} else 1
        _check_dataset(dataset, entries[array], ndim, path)
        expected_kind = "f" if array in FLOAT_ARRAYS else "i"
        if dataset.dtype.kind != expected_kind:
            raise _refuse(
                BundleContentError, path, f"dataset {dataset.name} has dtype {dataset.dtype}, not {expected_kind}"
            )
        datasets[array] = dataset
    bank_rows, bank_dim = datasets["bank"].shape
    n_protos, proto_dim = datasets["prototypes"].shape
    n_calibration = {datasets[a].shape[0] for a in ARRAY_NAMES if a.startswith("calibration_")}
    if bank_dim != space.dim or proto_dim != space.dim:
        problem = f"category {name!r} has vectors of dimension {bank_dim}/{proto_dim}, the feature space {space.dim}"
        raise _refuse(BundleContentError, path, problem)
    if datasets["bank_image_ids"].shape != (bank_rows,) or len(n_calibration) != 1 or min(n_calibration) < 2:
        raise _refuse(BundleContentError, path, f"category {name!r} has inconsistent array shapes")
    arrays = {array: _read_verified(datasets[array], entries[array], path) for array in ARRAY_NAMES}
    from structcore.model import CategoryModel  # model code: only validation needs it

    try:
        n_train = int(metadata["n_train_images"])
        map_size = int(metadata["map_size"])
        model = CategoryModel.from_parts(arrays, metadata)
    except (KeyError, TypeError, ValueError) as error:
        raise _refuse(BundleFormatError, path, f"metadata of category {name!r} is invalid ({error})") from error
    ids = arrays["bank_image_ids"]
    if ids.min() < 0 or ids.max() >= n_train:
        raise _refuse(BundleContentError, path, f"category {name!r} has bank image ids outside 0..{n_train - 1}")
    if map_size != space.crop or n_protos < 1:  # the settings themselves: _check_settings
        raise _refuse(BundleContentError, path, f"category {name!r} has settings that do not fit its feature space")
    if not np.isfinite(model.route_threshold_) and model.route_threshold_ != float("inf"):
        raise _refuse(BundleContentError, path, f"category {name!r} has an invalid route threshold")
    _check_settings(name, model, arrays, space, path)
    bundled = _BundledCategory(name=name, record=record, entries={a: dict(e) for a, e in entries.items() if e})
    return bundled, arrays if keep else None


def read_bundle(path: Path, *, isolate: bool = True) -> ValidatedBundle:
    """Open and fully validate a bundle (format, members, dtypes, shapes, checksums, values).

    With ``isolate`` (the default) the whole validation first runs in a forked child process:
    a damaged file can crash the HDF5 C library itself (a segmentation fault, not an
    exception), and that must refuse the bundle, not kill the command. Only a bundle the child
    validated is then read here, and the import checks that the file is still the same one.
    """
    path = Path(path)
    if not path.is_file():
        raise BundleFormatError(f"no bundle file at {path}; check the path")
    if path.stat().st_size == 0 or not h5py.is_hdf5(str(path)):
        raise _refuse(BundleFormatError, path, "is not an HDF5 file", "pass a file written by `registry export`")
    identity = _identity(path)
    if isolate:
        _validate_in_child(path)
    bundle = _read_checked(path)
    if _identity(path) != identity:
        raise _refuse(BundleFormatError, path, "changed while it was being validated", "import it again")
    bundle.identity = identity
    return bundle


def _identity(path: Path) -> tuple[int, ...]:
    info = path.stat()
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)


#: The bundle errors a validating child may report, by class name.
_CHILD_ERRORS: dict[str, type[BundleError]] = {
    cls.__name__: cls
    for cls in (BundleError, BundleFormatError, BundleContentError, BundleChecksumError, BundleFeatureSpaceError)
}


def _validate_in_child(path: Path) -> None:
    """Run :func:`read_bundle` in a forked child; re-raise its refusal, refuse a crash."""
    if not hasattr(os, "fork"):  # pragma: no cover - platforms without fork validate in-process
        return
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: validate, report one JSON line, never return
        status = 0
        try:
            os.close(reader)
            faulthandler.disable()
            report: dict[str, object]
            try:
                read_bundle(path, isolate=False)
                report = {"ok": True}
            except BundleError as error:
                report = {"ok": False, "error": type(error).__name__, "message": str(error)}
            except BaseException as error:
                report = {"ok": False, "error": "BundleFormatError", "message": f"{type(error).__name__}: {error}"}
            os.write(writer, json.dumps(report).encode("utf-8", "backslashreplace"))
        except BaseException:
            status = 1
        finally:
            os._exit(status)
    os.close(writer)
    chunks = []
    with os.fdopen(reader, "rb") as stream:
        chunks.append(stream.read())
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        problem = f"is damaged: reading it crashed the HDF5 library (signal {os.WTERMSIG(status)})"
        raise _refuse(BundleFormatError, path, problem)
    try:
        report = json.loads(b"".join(chunks).decode("utf-8"))
    except ValueError:
        report = {"ok": False, "error": "BundleFormatError", "message": "could not be validated"}
    if not report.get("ok"):
        cls = _CHILD_ERRORS.get(str(report.get("error")), BundleFormatError)
        message = str(report.get("message"))
        if cls is BundleFeatureSpaceError or not message.startswith(f"bundle {path}"):
            raise _refuse(BundleFormatError, path, f"is damaged ({message})")
        raise cls(message)


def _read_checked(path: Path) -> ValidatedBundle:
    try:
        handle = h5py.File(path, "r")
    except OSError as error:
        raise _refuse(BundleFormatError, path, f"is truncated or damaged ({error})") from error
    try:
        with handle:
            return _validate(handle, path)
    except BundleError:
        raise
    except (OSError, KeyError, RuntimeError, ValueError, TypeError, IndexError, OverflowError) as error:
        # low-level HDF5 read failures of a damaged file (UnicodeError is a ValueError)
        problem = f"is truncated or damaged ({type(error).__name__}: {error})"
        raise _refuse(BundleFormatError, path, problem) from error


def _validate(handle: h5py.File, path: Path) -> ValidatedBundle:
    fmt = handle.attrs.get("format")
    if isinstance(fmt, bytes):
        fmt = fmt.decode("utf-8", "replace")
    if fmt != FORMAT:
        raise _refuse(
            BundleFormatError, path, "is not a structcore registry bundle", "pass a file written by `registry export`"
        )
    version = handle.attrs.get("format_version")
    if not isinstance(version, int | np.integer) or int(version) not in READABLE_FORMAT_VERSIONS:
        readable = ", ".join(str(v) for v in READABLE_FORMAT_VERSIONS[:-1]) + f" and {READABLE_FORMAT_VERSIONS[-1]}"
        raise _refuse(
            BundleFormatError,
            path,
            f"has format version {version}, this library reads versions {readable}",
            "upgrade structcore-registry or export the bundle with a matching version",
        )
    _only_attrs(handle, ROOT_ATTRS, path)
    if "manifest" not in handle.attrs:
        raise _refuse(BundleFormatError, path, "has no manifest")
    manifest = _json_attr(handle, "manifest", path)
    if (
        not isinstance(manifest, dict)
        or manifest.get("format") != FORMAT
        or not isinstance(manifest.get("categories"), dict)
    ):
        raise _refuse(BundleFormatError, path, "has an invalid manifest")
    _members(handle, {"feature_space", "categories"}, path)
    space = _validate_space(handle, manifest, path)
    group = handle["categories"]
    if not isinstance(group, h5py.Group):
        raise _refuse(BundleContentError, path, "member /categories is not a group")
    names = _members(group, None, path)
    if len(names) > MAX_CATEGORIES:
        raise _refuse(BundleContentError, path, f"holds {len(names)} categories, more than {MAX_CATEGORIES}")
    for name in names:
        if not NAME_PATTERN.fullmatch(name):
            raise _refuse(BundleContentError, path, f"has a category with an unsafe name {name!r}")
    declared = set(manifest["categories"])
    if declared != set(names):
        problem = f"manifest lists categories {sorted(declared)} but the file holds {sorted(names)}"
        raise _refuse(BundleFormatError, path, problem)
    categories = []
    for name in names:
        member = group[name]
        if not isinstance(member, h5py.Group):
            raise _refuse(BundleContentError, path, f"member /categories/{name} is not a group")
        bundled, _ = _validate_category(member, name, manifest["categories"][name], space, path, keep=False)
        categories.append(bundled)
    grids = sorted({tuple(c.record["model_metadata"]["grid"]) for c in categories})
    if len(grids) > 1:
        raise _refuse(BundleContentError, path, f"has categories with different patch grids {grids}")
    return ValidatedBundle(path=path, space=space, categories=categories)


def _targets(bundle: ValidatedBundle, rename: Mapping[str, str] | None) -> dict[str, str]:
    names = [c.name for c in bundle.categories]
    rename = dict(rename or {})
    unknown = sorted(set(rename) - set(names))
    if unknown:
        raise BundleError(
            f"rename names {', '.join(unknown)}, which the bundle {bundle.path} does not hold; "
            f"it holds {', '.join(names)}"
        )
    targets = {name: rename.get(name, name) for name in names}
    for target in targets.values():
        if not NAME_PATTERN.fullmatch(target):
            raise BundleError(f"cannot rename to {target!r}: not a valid category name; use A-Z a-z 0-9 . _ -")
    if len(set(targets.values())) != len(targets):
        raise BundleError("rename maps two bundled categories to the same name; give each its own name")
    return targets


@dataclass(frozen=True)
class ImportPlan:
    """What importing a validated bundle writes: the new versions, and whether the registry takes its feature space."""

    pending: list[PendingVersion]
    adopt_feature_space: bool


def plan_import(
    bundle: ValidatedBundle,
    *,
    space: FeatureSpace,
    empty: bool,
    grid: tuple[int, ...] | None,
    existing: Sequence[str],
    rename: Mapping[str, str] | None = None,
    replace: bool = False,
) -> ImportPlan:
    """Check a validated bundle against a registry (its feature space ``space``, whether it is
    ``empty``, its patch ``grid`` and ``existing`` names) and plan the versions to commit.

    Raises:
        BundleError: (a subclass naming the problem) when the bundle is refused.
    """
    path = bundle.path
    targets = _targets(bundle, rename)
    differences = space.differences(bundle.space)
    if differences and not empty:
        raise BundleFeatureSpaceError(
            f"bundle {path}",
            differences,
            "import it into a registry made in the same feature space, or a new folder",
        )
    known_grid = None if differences else grid
    for bundled in bundle.categories:
        bundled_grid = tuple(int(v) for v in bundled.record["model_metadata"]["grid"])
        if known_grid is not None and bundled_grid != known_grid:
            raise _refuse(
                BundleContentError,
                path,
                f"category {bundled.name!r} has patch grid {list(bundled_grid)}, "
                f"the registry's categories {list(known_grid)}",
                "import it into a registry made in the same feature space",
            )
    collisions = sorted(t for t in targets.values() if t in set(existing))
    if collisions and not replace:
        listing = ", ".join(repr(c) for c in collisions)
        raise BundleNameCollisionError(
            f"the registry already has categor{'y' if len(collisions) == 1 else 'ies'} {listing}; "
            "import with rename={OLD: NEW} (`--rename OLD=NEW`) or replace=True (`--replace`)"
        )
    pending = [
        PendingVersion(
            name=targets[bundled.name],
            arrays=_reader(bundle, bundled.name),
            metadata=dict(bundled.record["model_metadata"]),
            train_images=[],
            origin=f"import:{bundle.path.name}",
            must_be_new=not replace,
        )
        for bundled in bundle.categories
    ]
    return ImportPlan(pending, adopt_feature_space=bool(differences))


def _reader(bundle: ValidatedBundle, name: str) -> Any:
    """Re-read (and re-check) one category's arrays when its store is written.

    The file must still be the one that was validated (a different file could crash HDF5).
    """
    path, space = bundle.path, bundle.space

    def read() -> dict[str, np.ndarray]:
        if _identity(path) != bundle.identity:
            raise _refuse(BundleFormatError, path, "changed while it was being imported", "import it again")
        try:
            with h5py.File(path, "r") as handle:
                manifest = _loads(_string_attr(handle, "manifest", path))
                group = handle["categories"][name]
                _, arrays = _validate_category(group, name, manifest["categories"][name], space, path, keep=True)
        except BundleError:
            raise
        except (OSError, KeyError, RuntimeError, ValueError, TypeError, IndexError) as error:
            raise _refuse(
                BundleFormatError, path, f"is truncated or damaged ({type(error).__name__}: {error})"
            ) from error
        assert arrays is not None
        return arrays

    return read


__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "READABLE_FORMAT_VERSIONS",
    "ImportPlan",
    "ValidatedBundle",
    "export_bundle",
    "plan_import",
    "read_bundle",
]
