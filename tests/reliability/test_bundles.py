"""Hostile bundles (issue 7): every one refused with its own message, before anything is written.

``tests/registry/test_bundle.py`` covers a flipped byte, truncation, a non-HDF5 file, the format
version, a missing manifest, NaN in an array, string and compound dtypes, an unknown member, a
soft link, a wrong dimension, an unsafe name and a manifest shape. This file adds the rest of
the issue's list: wrong shapes and dtypes, Inf, non-finite or absurd values in the JSON
metadata, huge declared sizes (sparse, resizable, over-compressed, lying manifest), extra
members and attributes, path-like names, external links / storage / virtual datasets, pickled
payloads, a file that crashes the HDF5 library itself, and random byte mutations (hypothesis).

For every refusal the target registry's files are byte-identical before and after, the CLI
exits 1 with one line and no traceback and creates no registry, and nothing is ever unpickled.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import re
import shutil
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from cli.main import app
from registry import BundleContentError, BundleError, BundleFormatError, Registry
from registry.bundle import read_bundle
from registry.storage import array_sha256
from tests.support_registry import tree_hashes
from tests.support_reliability import REPO, Data, make_registry, write_data

runner = CliRunner()
Edit = Callable[[h5py.File, Path], None]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("bundles")
    data: Data = write_data(folder / "images", ("pill", "grid", "tile"))
    source = make_registry(folder / "source", data, ("pill", "grid"))
    with Registry.open(source, read_only=True) as registry:
        bundle = registry.export(None, folder / "bundle.h5")
        small = registry.export(["pill"], folder / "small.h5")
    target = make_registry(folder / "target", data, ("tile",))  # same feature space, other category
    with Registry.open(target):  # settle the WAL files before hashing
        pass
    return {"folder": folder, "bundle": bundle, "small": small, "target": target}


@pytest.fixture(autouse=True)
def no_unpickling(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail loudly if anything unpickles while these tests run (forked validators inherit this)."""

    def forbidden(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("something tried to unpickle")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, forbidden)
    monkeypatch.setattr(np, "load", forbidden)


# ---------------------------------------------------------------------------- edit helpers
def _manifest(handle: h5py.File) -> dict[str, Any]:
    return dict(json.loads(handle.attrs["manifest"]))


def _set_manifest(handle: h5py.File, manifest: dict[str, Any]) -> None:
    handle.attrs["manifest"] = json.dumps(manifest, sort_keys=True, separators=(",", ":"))


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _record(change: Callable[[dict[str, Any]], None], name: str = "pill", text: str | None = None) -> Edit:
    """Rewrite a category's record (JSON may hold NaN: json.dumps writes it) and fix its checksum."""

    def edit(handle: h5py.File, _tmp: Path) -> None:
        group = handle[f"categories/{name}"]
        record = json.loads(group.attrs["record"])
        change(record)
        new = text if text is not None else json.dumps(record)
        group.attrs["record"] = new
        manifest = _manifest(handle)
        manifest["categories"][name]["record_sha256"] = _sha(new)
        _set_manifest(handle, manifest)

    return edit


def _description(change: Callable[[dict[str, Any]], None]) -> Edit:
    def edit(handle: h5py.File, _tmp: Path) -> None:
        description = json.loads(handle["feature_space"].attrs["description"])
        change(description)
        new = json.dumps(description)
        handle["feature_space"].attrs["description"] = new
        manifest = _manifest(handle)
        manifest["feature_space"]["description_sha256"] = _sha(new)
        _set_manifest(handle, manifest)

    return edit


def _array(member: str, make: Callable[[np.ndarray], np.ndarray], **options: Any) -> Edit:
    """Replace a dataset (manifest entry fixed to match, so only the content check can object)."""

    def edit(handle: h5py.File, _tmp: Path) -> None:
        old = np.asarray(handle[member])
        new = make(old)
        group_name, name = member.rsplit("/", 1)
        del handle[group_name][name]
        handle[group_name].create_dataset(name, data=new, **options)
        manifest = _manifest(handle)
        category = group_name.split("/")[-1]
        entry = manifest["categories"][category]["arrays"][name]
        entry.update(shape=list(new.shape), dtype=new.dtype.newbyteorder("<").str, sha256=array_sha256(new))
        _set_manifest(handle, manifest)

    return edit


def _params(key: str, value: Any) -> Edit:
    return _record(lambda r: r["model_metadata"]["params"].__setitem__(key, value))


def _calibrator(change: Callable[[dict[str, Any]], None]) -> Edit:
    return _record(lambda r: change(r["model_metadata"]["calibrator"]))


def _sparse(rows: int) -> Edit:
    """bank and bank_image_ids declared with ``rows`` rows in chunks that were never written."""

    def edit(handle: h5py.File, _tmp: Path) -> None:
        group = handle["categories/pill"]
        dim = group["bank"].shape[1]
        del group["bank"], group["bank_image_ids"]
        group.create_dataset("bank", shape=(rows, dim), dtype="<f4", chunks=(1024, dim), maxshape=(None, dim))
        group.create_dataset("bank_image_ids", shape=(rows,), dtype="<i4", chunks=(4096,), maxshape=(None,))
        manifest = _manifest(handle)
        manifest["categories"]["pill"]["arrays"]["bank"]["shape"] = [rows, dim]
        manifest["categories"]["pill"]["arrays"]["bank_image_ids"]["shape"] = [rows]
        _set_manifest(handle, manifest)

    return edit


def _over_compressed(handle: h5py.File, tmp: Path) -> None:
    """80 MB of zeros in 0.1 MB of gzip: a zip bomb (declared sizes consistent, checksums right)."""
    _array("categories/pill/bank", lambda b: np.zeros((40_000, b.shape[1]), np.float32), compression="gzip",
           chunks=(4096, 512))(handle, tmp)  # fmt: skip
    _array("categories/pill/bank_image_ids", lambda i: np.zeros(40_000, np.int32), compression="gzip")(handle, tmp)


def _manifest_size(handle: h5py.File, _tmp: Path) -> None:
    manifest = _manifest(handle)
    manifest["categories"]["pill"]["arrays"]["bank"]["shape"] = [10**12, 512]
    _set_manifest(handle, manifest)


def _resizable_huge(handle: h5py.File, _tmp: Path) -> None:
    group = handle["categories/pill"]
    del group["bank"]
    group.create_dataset("bank", shape=(10**12, 512), dtype="<f4", chunks=(1, 512), maxshape=(None, 512))


def _extra_attribute(handle: h5py.File, _tmp: Path) -> None:
    handle.attrs["payload"] = np.void(pickle.dumps({"x": 1}))


def _pickle_dataset(handle: h5py.File, _tmp: Path) -> None:
    group = handle["categories/pill"]
    del group["calibration_base"]
    payload = pickle.dumps(np.arange(3))
    group.create_dataset("calibration_base", data=np.frombuffer(payload, dtype=f"V{len(payload)}"))


def _vlen_bytes(handle: h5py.File, _tmp: Path) -> None:
    group = handle["categories/pill"]
    del group["calibration_base"]
    data = np.array([pickle.dumps(1), pickle.dumps(2)], dtype=object)
    group.create_dataset("calibration_base", data=data, dtype=h5py.vlen_dtype(bytes))


def _opaque_manifest(handle: h5py.File, _tmp: Path) -> None:
    handle.attrs["manifest"] = np.void(pickle.dumps(_manifest(handle)))


def _record_array(handle: h5py.File, _tmp: Path) -> None:
    handle["categories/pill"].attrs["record"] = np.array([b"{}", b"{}"])


def _invalid_utf8(handle: h5py.File, _tmp: Path) -> None:
    handle["categories/pill"].attrs["record"] = np.bytes_(b'{"model_metadata": "\xff\xfe"}')


def _external_link(handle: h5py.File, _tmp: Path) -> None:
    del handle["categories/pill/bank"]
    handle["categories/pill/bank"] = h5py.ExternalLink("/etc/passwd", "/x")


def _external_storage(handle: h5py.File, tmp: Path) -> None:
    bank = np.asarray(handle["categories/pill/bank"])
    raw = tmp / "outside.bin"
    raw.write_bytes(bank.tobytes())
    del handle["categories/pill/bank"]
    handle["categories/pill"].create_dataset(
        "bank", shape=bank.shape, dtype=bank.dtype, external=[(str(raw.resolve()), 0, bank.nbytes)]
    )


def _virtual(handle: h5py.File, tmp: Path) -> None:
    bank = np.asarray(handle["categories/pill/bank"])
    other = tmp / "other.h5"
    with h5py.File(other, "w") as side:
        side.create_dataset("bank", data=bank)
    layout = h5py.VirtualLayout(shape=bank.shape, dtype=bank.dtype)
    layout[...] = h5py.VirtualSource(str(other.resolve()), "bank", shape=bank.shape)
    del handle["categories/pill/bank"]
    handle["categories/pill"].create_virtual_dataset("bank", layout)


def _renamed(new: str) -> Edit:
    def edit(handle: h5py.File, _tmp: Path) -> None:
        handle.move("categories/pill", f"categories/{new}")
        manifest = _manifest(handle)
        manifest["categories"][new] = manifest["categories"].pop("pill")
        _set_manifest(handle, manifest)

    return edit


def _hdf5_crash(handle: h5py.File, _tmp: Path) -> None:
    """Nothing here: :func:`_crash_bytes` edits the raw bytes (a vlen string type with bad flags)."""


def _crash_bytes(path: Path) -> None:
    data = bytearray(path.read_bytes())
    found = [m.start() for m in re.finditer(re.escape(b"record\x00\x00\x19\x01"), bytes(data))]
    assert found, "no vlen-string attribute message found"
    for start in found:
        data[start + 9] = 105  # the bit field of the attribute's datatype message
    path.write_bytes(bytes(data))


def _one_calibration_score(handle: h5py.File, tmp: Path) -> None:
    for kind in ("base", "struct", "hybrid"):
        _array(f"categories/pill/calibration_{kind}", lambda c: c[:1])(handle, tmp)


def _other_grid(handle: h5py.File, _tmp: Path) -> None:
    _record(lambda r: r["model_metadata"].__setitem__("grid", [4, 16]))(handle, _tmp)


# name -> (edit, error class, part of the message)
CASES: dict[str, tuple[Edit, type[BundleError], str]] = {
    "inf in an array": (
        _array("categories/pill/bank", lambda b: np.where(np.arange(b.size).reshape(b.shape) == 7, np.inf, b)),
        BundleContentError, "contains NaN or infinite values"),
    "float64 bank": (_array("categories/pill/bank", lambda b: b.astype(np.float64)), BundleContentError, "bank_dtype"),
    "int8 bank": (_array("categories/pill/bank", lambda b: b.astype(np.int8)), BundleContentError, "has dtype int8"),
    "bool calibration": (_array("categories/pill/calibration_base", lambda c: c > 1), BundleContentError,
                         "has dtype bool"),
    "1-d prototypes": (_array("categories/pill/prototypes", lambda p: p.ravel()), BundleContentError,
                       "expected 2 non-empty axes"),
    "short image ids": (_array("categories/pill/bank_image_ids", lambda i: i[:-1]), BundleContentError,
                        "inconsistent array shapes"),
    "one calibration score": (_one_calibration_score, BundleContentError, "inconsistent array shapes"),
    "image ids out of range": (_array("categories/pill/bank_image_ids", lambda i: i + 1000), BundleContentError,
                               "bank image ids outside"),
    "NaN threshold": (_calibrator(lambda c: c["thresholds"].__setitem__("hybrid", float("nan"))),
                      BundleFormatError, "NaN is not a finite number"),
    "overflowing number": (_record(lambda r: None, text='{"model_metadata": {"route_threshold": 1e999}}'),
                           BundleFormatError, "1e999 is not a finite number"),
    "huge integer": (_record(lambda r: None, text='{"model_metadata": {"seed": ' + "9" * 5000 + "}}"),
                     BundleFormatError, "record of category 'pill' is invalid"),
    "NaN normalisation": (_description(lambda d: d.__setitem__("std", [float("nan")] * 3)), BundleFormatError,
                          "feature-space description is not JSON"),
    "zero std": (_description(lambda d: d.__setitem__("std", [0.0, 0.0, 0.0])), BundleContentError, "std [0.0"),
    "huge image side": (_description(lambda d: d.update(resize=60_000, crop=60_000)), BundleContentError,
                        "resize/crop 60000/60000"),
    "blur sigma 1e5": (_params("sigma", 1e5), BundleContentError, "sigma 100000.0"),
    "k = 0": (_params("k", 0), BundleContentError, "k 0"),
    "unknown index": (_params("index", "os.system"), BundleContentError, "index 'os.system'"),
    "unknown parameter": (_params("__class__", "x"), BundleFormatError, "metadata of category 'pill' is invalid"),
    "top ratio 5": (_calibrator(lambda c: c.__setitem__("top_ratio", 5.0)), BundleContentError, "calibrator state"),
    "missing threshold": (_calibrator(lambda c: c["thresholds"].pop("hybrid")), BundleContentError,
                          "calibrator state"),
    "negative lambda": (_calibrator(lambda c: c.__setitem__("lambda", -1.0)), BundleContentError, "calibrator state"),
    "patch grid": (_other_grid, BundleContentError, "patch grid"),
    "10^12 rows (resizable)": (_resizable_huge, BundleContentError, "beyond the size limit"),
    "sparse 500k rows": (_sparse(500_000), BundleContentError, "chunks that were never written"),
    "zip bomb": (_over_compressed, BundleContentError, "but stores only"),
    "manifest lies about size": (_manifest_size, BundleContentError, "the manifest says"),
    "extra root dataset": (lambda h, t: h.create_dataset("payload", data=[1.0]) and None, BundleContentError,
                           "unexpected members in /: payload"),
    "extra group in a category": (lambda h, t: h["categories/pill"].create_group("more") and None,
                                  BundleContentError, "unexpected members in /categories/pill: more"),
    "extra attribute (pickle)": (_extra_attribute, BundleContentError, "unexpected attributes on /: payload"),
    "pickle in an opaque dataset": (_pickle_dataset, BundleContentError, "calibration_base has dtype |V"),
    "pickles in vlen bytes": (_vlen_bytes, BundleContentError, "calibration_base has dtype object"),
    "manifest as opaque pickle": (_opaque_manifest, BundleFormatError, "'manifest' on / is not text"),
    "record as a string array": (_record_array, BundleFormatError, "'record' on /categories/pill is not text"),
    "invalid UTF-8": (_invalid_utf8, BundleFormatError, "is not UTF-8 text"),
    "external link": (_external_link, BundleContentError, "is a ExternalLink"),
    "external storage": (_external_storage, BundleContentError, "refers to data outside the bundle"),
    "virtual dataset": (_virtual, BundleContentError, "refers to data outside the bundle"),
    "name '..'": (_renamed(".."), BundleContentError, "unsafe name '..'"),
    "name '.hidden'": (_renamed(".hidden"), BundleContentError, "unsafe name '.hidden'"),
    "name with a backslash": (_renamed("a\\b"), BundleContentError, "unsafe name 'a\\\\b'"),
    "HDF5 library crash": (_hdf5_crash, BundleFormatError, "crashed the HDF5 library"),
}  # fmt: skip


def _make(world: dict[str, Any], case: str, tmp_path: Path) -> Path:
    edit = CASES[case][0]
    hostile = tmp_path / "hostile.h5"
    shutil.copy(world["bundle"], hostile)
    with h5py.File(hostile, "r+") as handle:
        edit(handle, tmp_path)
    if edit is _hdf5_crash:
        _crash_bytes(hostile)
    return hostile


@pytest.mark.parametrize("case", list(CASES))
def test_hostile_bundle_is_refused_before_anything_is_written(case: str, world: dict[str, Any], tmp_path: Path) -> None:
    _edit, error, message = CASES[case]
    hostile = _make(world, case, tmp_path)
    target: Path = world["target"]
    before = tree_hashes(target)
    with Registry.open(target) as registry:
        with pytest.raises(error) as caught:
            registry.import_(hostile)
        assert message in str(caught.value)
        assert str(hostile) in str(caught.value)
        assert registry.names() == ["tile"]
    assert tree_hashes(target) == before
    # the CLI: one line, exit 1, no traceback, and no registry made from it
    root = tmp_path / "new-registry"
    result = runner.invoke(app, ["import", str(hostile), "--root", str(root)])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and result.output.startswith("error: ")
    assert message in " ".join(result.output.split()) or message.split()[0] in result.output
    assert not root.exists()


def test_a_sparse_dataset_is_refused_without_allocating_it(world: dict[str, Any], tmp_path: Path) -> None:
    """500 000 x 512 float32 = 1 GB declared in a 0.5 MB file: refused before any of it is read."""
    hostile = _make(world, "sparse 500k rows", tmp_path)
    assert hostile.stat().st_size < 2 << 20
    tracemalloc.start()
    try:
        with pytest.raises(BundleContentError):
            read_bundle(hostile, isolate=False)
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20, f"peak {peak / 2**20:.0f} MiB while refusing"


def test_nothing_in_the_code_base_unpickles() -> None:
    """Every torch.load reads weights only; no pickle / np.load(allow_pickle) anywhere."""
    offenders = []
    for path in sorted(REPO.glob("*/**/*.py")):
        if ".venv" in path.parts or "tests" in path.parts:
            continue
        text = path.read_text(encoding="utf-8")
        for number, line in enumerate(text.splitlines(), 1):
            code = line.split("#", 1)[0]
            if "torch.load(" in code and "weights_only=True" not in code:
                offenders.append(f"{path}:{number}: {line.strip()}")
            if re.search(
                r"\bpickle\.(loads?|Unpickler)\b|allow_pickle\s*=\s*True|\bnp\.load\(|\bjoblib\.load|\bdill\.", code
            ):
                offenders.append(f"{path}:{number}: {line.strip()}")
    assert offenders == []


# ------------------------------------------------------------------------------- fuzzing
@pytest.fixture(scope="module")
def fuzz_base(world: dict[str, Any]) -> dict[str, Any]:
    """The one-category bundle's bytes, the offsets outside array data, and what it validates to."""
    path: Path = world["small"]
    data = path.read_bytes()
    data_ranges = []
    with h5py.File(path, "r") as handle:

        def visit(_name: str, item: object) -> None:
            if isinstance(item, h5py.Dataset):
                data_ranges.append((item.id.get_offset(), item.id.get_offset() + item.id.get_storage_size()))

        handle.visititems(visit)
    metadata = [i for i in range(len(data)) if not any(a <= i < b for a, b in data_ranges)]
    original = read_bundle(path)
    return {"data": data, "metadata": metadata, "records": [c.record for c in original.categories],
            "description": original.space.describe(), "projection": original.space.projection}  # fmt: skip


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    mutations=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.booleans(), st.integers(0, 255)),
                       min_size=1, max_size=8),
    truncate=st.one_of(st.none(), st.floats(0.05, 1.0)),
)  # fmt: skip
def test_mutated_bundles_fail_only_with_bundle_errors(
    fuzz_base: dict[str, Any], tmp_path: Path, mutations: list[tuple[float, bool, int]], truncate: float | None
) -> None:
    data = bytearray(fuzz_base["data"])
    metadata = fuzz_base["metadata"]
    for where, in_metadata, value in mutations:
        position = metadata[int(where * len(metadata))] if in_metadata else int(where * len(data))
        data[position] = value
    if truncate is not None:
        data = data[: int(len(data) * truncate)]
    path = tmp_path / "mutated.h5"
    path.write_bytes(bytes(data))
    try:
        bundle = read_bundle(path)
    except BundleError as error:
        assert str(path) in str(error)
        return
    # accepted: the mutation hit bytes nothing reads (padding, free space); the content is unchanged
    assert [c.record for c in bundle.categories] == fuzz_base["records"]
    assert bundle.space.describe() == fuzz_base["description"]
    np.testing.assert_array_equal(bundle.space.projection, fuzz_base["projection"])
