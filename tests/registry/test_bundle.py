"""Registry bundles: export -> import round trip, and every refusal with its own message."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from registry import (
    BundleChecksumError,
    BundleContentError,
    BundleError,
    BundleFeatureSpaceError,
    BundleFormatError,
    BundleNameCollisionError,
    Registry,
)
from registry.records import OPTIONAL_ARRAY_NAMES, TRAIN_PATCHES
from registry.storage import array_sha256
from tests.support_registry import SIZE, clone, make_base, scores, small_model, write_data

Data = dict[str, tuple[list[Path], list[Path]]]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Data:
    return write_data(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory, data: Data) -> Path:
    """A registry with ``pill`` and ``grid``, fitted with their train patches (``--keep-patches``)."""
    return make_base(tmp_path_factory.mktemp("source") / "registry", data, ("pill", "grid"), keep_patches=True)


@pytest.fixture(scope="module")
def bundle(source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    with Registry.open(source, read_only=True) as registry:
        return registry.export(None, tmp_path_factory.mktemp("bundle") / "bundle.h5")


def _tests(data: Data) -> list[Path]:
    return data["pill"][1] + data["grid"][1]


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for sub in ("stores", "tmp") for p in (root / sub).rglob("*"))


def test_round_trip_gives_bit_identical_scores(source: Path, bundle: Path, data: Data, tmp_path: Path) -> None:
    target = Registry.init_from_bundle(tmp_path / "target", bundle)
    with target, Registry.open(source, read_only=True) as original:
        assert (
            target.names() == []
            and target.feature_space_info()["projection_sha256"] == (original.feature_space_info()["projection_sha256"])
        )
        imported = target.import_(bundle)
        assert sorted((v.category, v.version, v.origin) for v in imported) == [
            ("grid", 1, "import:bundle.h5"),
            ("pill", 1, "import:bundle.h5"),
        ]
        assert scores(target.predict(_tests(data))) == scores(original.predict(_tests(data)))
        for name in ("pill", "grid"):
            assert scores(target.predict(data[name][1], name)) == scores(original.predict(data[name][1], name))
            # bundles carry every array but the optional ones (train patches and distances: an
            # imported version updates by refitting)
            shipped = {k: v for k, v in original.version_info(name).arrays.items() if k not in OPTIONAL_ARRAY_NAMES}
            assert target.version_info(name).arrays == shipped
            assert TRAIN_PATCHES in original.version_info(name).arrays
        assert target.verify().ok


def test_import_into_an_empty_registry_adopts_the_bundles_feature_space(
    bundle: Path, data: Data, tmp_path: Path
) -> None:
    with Registry.init(tmp_path / "empty", resize=SIZE, crop=SIZE, seed=7) as target:
        target.import_(bundle, rename={"grid": "grid-b"})
        assert target.names() == ["grid-b", "pill"]
        assert target.predict(data["grid"][1][:1])[0]["category"] == "grid-b"
        assert target.verify().ok


def test_refuses_a_registry_in_another_feature_space(bundle: Path, data: Data, tmp_path: Path) -> None:
    with Registry.init(tmp_path / "other", resize=SIZE, crop=SIZE, seed=7) as target:
        target.add_category("tile", data["tile"][0], small_model())
        before = _files(target.root)
        with pytest.raises(BundleFeatureSpaceError, match="projection matrix W differs"):
            target.import_(bundle)
        assert target.names() == ["tile"] and _files(target.root) == before


def test_name_collision_rename_and_replace(source: Path, bundle: Path, data: Data, tmp_path: Path) -> None:
    with Registry.init_from_bundle(tmp_path / "target", bundle) as target:
        target.import_(bundle)
        before = _files(target.root)
        with pytest.raises(BundleNameCollisionError, match=r"already has categories 'grid', 'pill'.*rename=") as caught:
            target.import_(bundle)
        assert "replace=True" in str(caught.value)
        assert _files(target.root) == before
        with pytest.raises(BundleError, match="does not hold"):
            target.import_(bundle, rename={"nope": "x"})
        with pytest.raises(BundleError, match="not a valid category name"):
            target.import_(bundle, rename={"pill": "../pill"})

        target.import_(bundle, rename={"pill": "pill-2", "grid": "grid-2"})
        assert target.names() == ["grid", "grid-2", "pill", "pill-2"]
        assert (
            scores(target.predict(data["pill"][1], "pill-2"))[0][2:]
            == scores(target.predict(data["pill"][1], "pill"))[0][2:]
        )

        replaced = target.import_(bundle, replace=True)
        assert sorted((v.category, v.version) for v in replaced) == [("grid", 2), ("pill", 2)]
        assert target.show("pill").current_version == 2
        assert target.verify().ok


# ------------------------------------------------------------------------- damaged bundles
def _copy(bundle: Path, tmp_path: Path, name: str) -> Path:
    target = tmp_path / f"{name}.h5"
    shutil.copy(bundle, target)
    return target


def _edit(bundle: Path, tmp_path: Path, name: str, edit: Callable[[h5py.File], None]) -> Path:
    target = _copy(bundle, tmp_path, name)
    with h5py.File(target, "r+") as handle:
        edit(handle)
    return target


def _manifest(handle: h5py.File) -> dict[str, Any]:
    return dict(json.loads(handle.attrs["manifest"]))


def _replace_array(handle: h5py.File, member: str, array: np.ndarray, fix_manifest: bool = True) -> None:
    group_name, name = member.rsplit("/", 1)
    group = handle[group_name]
    del group[name]
    group.create_dataset(name, data=array)
    if fix_manifest:
        manifest = _manifest(handle)
        entry = manifest["categories"][group_name.split("/")[-1]]["arrays"][name]
        entry.update(shape=list(array.shape), dtype=array.dtype.str, sha256=array_sha256(array))
        handle.attrs["manifest"] = json.dumps(manifest)


def _flip_byte(bundle: Path, tmp_path: Path) -> Path:
    target = _copy(bundle, tmp_path, "flipped")
    with h5py.File(target, "r") as handle:
        offset = handle["categories/pill/bank"].id.get_offset()
    with target.open("r+b") as raw:
        raw.seek(offset + 1001)
        byte = raw.read(1)
        raw.seek(offset + 1001)
        raw.write(bytes([byte[0] ^ 0x10]))
    return target


def _truncate(bundle: Path, tmp_path: Path) -> Path:
    target = tmp_path / "truncated.h5"
    target.write_bytes(bundle.read_bytes()[: bundle.stat().st_size // 2])
    return target


def _nan_bank(handle: h5py.File) -> None:
    bank = np.array(handle["categories/pill/bank"])
    bank[3, 5] = np.nan
    _replace_array(handle, "categories/pill/bank", bank)


def _string_dataset(handle: h5py.File) -> None:
    group = handle["categories/pill"]
    del group["calibration_base"]
    group.create_dataset("calibration_base", data=np.array(["a", "b"], dtype=object), dtype=h5py.string_dtype())


def _compound_dataset(handle: h5py.File) -> None:
    group = handle["categories/pill"]
    del group["calibration_base"]
    group.create_dataset("calibration_base", data=np.zeros(4, dtype=[("a", "<f4"), ("b", "<i4")]))


def _wrong_dimension(handle: h5py.File) -> None:
    prototypes = np.array(handle["categories/pill/prototypes"])[:, :-1]
    _replace_array(handle, "categories/pill/prototypes", np.ascontiguousarray(prototypes))


def _soft_link(handle: h5py.File) -> None:
    group = handle["categories/pill"]
    del group["bank"]
    group["bank"] = h5py.SoftLink("/categories/grid/bank")


def _unsafe_name(handle: h5py.File) -> None:
    handle.move("categories/pill", "categories/.. pill")
    manifest = _manifest(handle)
    manifest["categories"][".. pill"] = manifest["categories"].pop("pill")
    handle.attrs["manifest"] = json.dumps(manifest)


def _manifest_shape(handle: h5py.File) -> None:
    manifest = _manifest(handle)
    manifest["categories"]["pill"]["arrays"]["bank"]["shape"][0] += 1
    handle.attrs["manifest"] = json.dumps(manifest)


REFUSALS: dict[str, tuple[Callable[[Path, Path], Path], type[BundleError], str]] = {
    "flipped byte": (_flip_byte, BundleChecksumError, "/categories/pill/bank does not match its checksum"),
    "truncated": (_truncate, BundleFormatError, "is truncated or damaged"),
    "not hdf5": (lambda b, t: _write(t / "x.h5", b"hello"), BundleFormatError, "is not an HDF5 file"),
    "format version": (
        lambda b, t: _edit(b, t, "v4", lambda h: h.attrs.__setitem__("format_version", 4)),
        BundleFormatError,
        "has format version 4, this library reads versions 1, 2 and 3",
    ),
    "no manifest": (
        lambda b, t: _edit(b, t, "nomanifest", lambda h: h.attrs.__delitem__("manifest")),
        BundleFormatError,
        "has no manifest",
    ),
    "nan": (lambda b, t: _edit(b, t, "nan", _nan_bank), BundleContentError, "contains NaN or infinite values"),
    "string dtype": (
        lambda b, t: _edit(b, t, "string", _string_dataset),
        BundleContentError,
        "calibration_base has dtype object; only",
    ),
    "compound dtype": (
        lambda b, t: _edit(b, t, "compound", _compound_dataset),
        BundleContentError,
        "calibration_base has dtype",
    ),
    "unknown member": (
        lambda b, t: _edit(b, t, "extra", lambda h: h["categories/pill"].create_dataset("extra", data=[1.0])),
        BundleContentError,
        "unexpected members in /categories/pill: extra",
    ),
    "soft link": (lambda b, t: _edit(b, t, "link", _soft_link), BundleContentError, "is a SoftLink"),
    "wrong dimension": (lambda b, t: _edit(b, t, "dim", _wrong_dimension), BundleContentError, "of dimension"),
    "unsafe name": (lambda b, t: _edit(b, t, "name", _unsafe_name), BundleContentError, "unsafe name '.. pill'"),
    "manifest shape": (lambda b, t: _edit(b, t, "shape", _manifest_shape), BundleContentError, "the manifest says"),
}


def _write(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


@pytest.fixture(scope="module")
def target(bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty registry in the bundle's feature space (the import target of the refusals)."""
    root = tmp_path_factory.mktemp("refusals") / "registry"
    Registry.init_from_bundle(root, bundle).close()
    return root


@pytest.mark.parametrize("case", list(REFUSALS))
def test_damaged_bundles_are_refused_before_anything_is_written(
    case: str, bundle: Path, target: Path, tmp_path: Path
) -> None:
    make, error, message = REFUSALS[case]
    damaged = make(bundle, tmp_path)
    with Registry.open(target) as registry:
        with pytest.raises(error) as caught:
            registry.import_(damaged)
        assert message in str(caught.value)
        assert str(damaged) in str(caught.value)
        assert registry.names() == [] and _files(target) == []
    with pytest.raises(error):  # a new registry is not even created from it
        Registry.init_from_bundle(tmp_path / "new", damaged)
    assert not (tmp_path / "new").exists()


def test_a_format_version_1_bundle_still_imports(bundle: Path, target: Path, tmp_path: Path) -> None:
    """Bundles written before format 2 (paper scoring, loo, far-share) are read as they are."""
    old = _edit(bundle, tmp_path, "v1", lambda h: h.attrs.__setitem__("format_version", 1))
    root = clone(target, tmp_path / "registry")
    with Registry.open(root) as registry:
        assert sorted(info.category for info in registry.import_(old)) == ["grid", "pill"]


def test_every_refusal_message_is_distinct() -> None:
    messages = [message for _make, _error, message in REFUSALS.values()]
    assert len(set(messages)) == len(messages)
