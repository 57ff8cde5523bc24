"""Array storage (registry.storage): checksums, zarr stores on disk, publishing, discarding, the file lock."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from registry import storage
from registry.storage import (
    LOCK_FILE,
    TMP_DIR,
    ArrayRecord,
    array_sha256,
    discard,
    new_tmp_path,
    publish,
    read_array,
    read_attributes,
    registry_lock,
    store_array_names,
    write_store,
)


@settings(max_examples=50, deadline=None)
@given(
    shape=st.tuples(st.integers(0, 5), st.integers(1, 4)),
    dtype=st.sampled_from(["<f2", ">f4", "<f8", ">i4", "<i8"]),
    seed=st.integers(0, 2**16),
)
def test_checksum_depends_on_content_not_layout(shape: tuple[int, int], dtype: str, seed: int) -> None:
    values = np.random.default_rng(seed).integers(-100, 100, size=shape).astype(dtype)
    swapped = values.astype(np.dtype(dtype).newbyteorder("S"))  # same numbers, other byte order
    fortran = np.asfortranarray(values)
    digest = array_sha256(values)
    assert array_sha256(swapped) == digest == array_sha256(fortran)
    assert ArrayRecord.of(values).dtype == np.dtype(dtype).newbyteorder("<").str
    if values.size:
        changed = values.copy()
        changed.flat[0] += 1
        assert array_sha256(changed) != digest
    assert array_sha256(values.reshape(-1)) != digest or values.ndim == 1


def _arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "bank": rng.normal(size=(50, 8)).astype(np.float16),
        "big_endian": np.arange(12, dtype=">f4").reshape(3, 4),
        "labels": np.arange(5, dtype=np.int64),
        "empty": np.zeros((0, 8), dtype=np.float32),
    }


def test_store_round_trip_on_disk(tmp_path: Path) -> None:
    arrays = _arrays()
    records = write_store(tmp_path / "s.zarr", arrays, {"category": "pill", "version": 3})
    assert store_array_names(tmp_path / "s.zarr") == sorted(arrays)
    for name, array in arrays.items():
        stored = read_array(tmp_path / "s.zarr", name)
        np.testing.assert_array_equal(stored, array)
        assert stored.dtype == array.dtype.newbyteorder("<")  # stored little-endian
        assert records[name] == ArrayRecord.of(array)
        assert array_sha256(stored) == records[name].sha256
    attributes = read_attributes(tmp_path / "s.zarr")
    assert attributes["category"] == "pill" and attributes["version"] == 3
    # the store keeps its own copy of the records, which verify compares with the database row
    assert attributes["arrays"] == {name: record.to_json() for name, record in records.items()}
    assert {name: ArrayRecord.from_json(data) for name, data in attributes["arrays"].items()} == records


def test_write_store_refuses_other_dtypes_and_existing_paths(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="dtype uint8"):
        write_store(tmp_path / "a.zarr", {"x": np.zeros(3, dtype=np.uint8)}, {})
    write_store(tmp_path / "b.zarr", {"x": np.zeros(3, dtype=np.float32)}, {})
    with pytest.raises(Exception, match="already contains data"):  # never over an existing store
        write_store(tmp_path / "b.zarr", {"x": np.ones(3, dtype=np.float32)}, {})
    np.testing.assert_array_equal(read_array(tmp_path / "b.zarr", "x"), np.zeros(3))


def test_write_store_marks_the_partial_checkpoint_after_the_first_array(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[str, list[str]]] = []

    def hook(stage: str) -> None:
        seen.append((stage, sorted(p.name for p in (tmp_path / "s.zarr").iterdir() if p.is_dir())))

    monkeypatch.setattr(storage, "checkpoint_hook", hook)
    write_store(tmp_path / "s.zarr", {"a": np.ones(2, np.float32), "b": np.ones(2, np.float32)}, {})
    assert seen == [("store-partial", ["a"])]


def test_missing_store_or_array_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no zarr store"):
        read_array(tmp_path / "nothing.zarr", "bank")
    write_store(tmp_path / "s.zarr", {"a": np.ones(2, np.float32)}, {})
    with pytest.raises(KeyError):
        read_array(tmp_path / "s.zarr", "bank")
    (tmp_path / "bad.zarr").mkdir()
    (tmp_path / "bad.zarr" / "zarr.json").write_text(json.dumps([1, 2]))
    with pytest.raises(ValueError, match="not a zarr group"):
        read_attributes(tmp_path / "bad.zarr")


def test_publish_moves_a_finished_store_and_never_overwrites(tmp_path: Path) -> None:
    tmp = new_tmp_path(tmp_path)
    assert tmp.parent == tmp_path / TMP_DIR and not tmp.exists() and tmp.suffix == ".zarr"
    assert new_tmp_path(tmp_path) != tmp
    write_store(tmp, {"a": np.arange(4, dtype=np.int32)}, {})
    final = tmp_path / "stores" / "pill" / "v1.zarr"
    publish(tmp, final)  # creates the category folder
    assert not tmp.exists()
    np.testing.assert_array_equal(read_array(final, "a"), np.arange(4))
    other = new_tmp_path(tmp_path)
    write_store(other, {"a": np.zeros(1, dtype=np.int32)}, {})
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        publish(other, final)
    np.testing.assert_array_equal(read_array(final, "a"), np.arange(4))


def test_discard_removes_stores_files_and_nothing_else(tmp_path: Path) -> None:
    store = tmp_path / "stores" / "pill" / "v1.zarr"
    write_store(store, {"a": np.ones(3, np.float32)}, {})
    keep = tmp_path / "stores" / "pill" / "v2.zarr"
    write_store(keep, {"a": np.ones(3, np.float32)}, {})
    discard(tmp_path, store)
    assert not store.exists() and keep.exists()
    assert list((tmp_path / TMP_DIR).iterdir()) == []  # moved into tmp/ first, then removed
    stray = tmp_path / TMP_DIR / "leftover.txt"
    stray.write_text("x")
    discard(tmp_path, stray)
    assert not stray.exists()
    discard(tmp_path, tmp_path / "never-existed")  # nothing to do


_HOLD = """
import sys, time
from pathlib import Path
from registry.storage import registry_lock
with registry_lock(Path(sys.argv[1]), exclusive=sys.argv[2] == "x"):
    print("held", flush=True)
    time.sleep(30)
"""


def _try_lock(root: Path, exclusive: bool) -> bool:
    """Whether this process can take the lock now (non-blocking flock on its own descriptor)."""
    fd = os.open(root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True


@pytest.mark.parametrize("mode", ["shared", "exclusive"])
def test_lock_held_by_another_process(tmp_path: Path, mode: str) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(tmp_path), "x" if mode == "exclusive" else "s"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "held"
        assert _try_lock(tmp_path, exclusive=True) is False  # a writer or gc blocks gc
        assert _try_lock(tmp_path, exclusive=False) is (mode == "shared")  # writers share
    finally:
        child.kill()
        child.wait()
    assert _try_lock(tmp_path, exclusive=True)  # the kernel dropped the killed holder's lock


def test_lock_is_released_after_the_block(tmp_path: Path) -> None:
    with registry_lock(tmp_path, exclusive=True):
        assert (tmp_path / LOCK_FILE).exists()
    assert _try_lock(tmp_path, exclusive=True)


def _chunk_files(store: Path, name: str) -> dict[str, os.stat_result]:
    folder = store / name
    return {str(path.relative_to(folder)): path.stat() for path in folder.rglob("c/**/*") if path.is_file()}


def test_leading_rows_are_hard_linked_not_rewritten(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``leading``: whole chunks within the equal first rows are links to the other store's files;
    the rest is written; contents and records are those of the full array."""
    monkeypatch.setattr(storage, "CHUNK_BYTES", 4 * 8 * 2)  # 4 rows of 8 float16 per chunk
    rng = np.random.default_rng(1)
    first = rng.normal(size=(10, 8)).astype(np.float16)
    write_store(tmp_path / "a.zarr", {"patches": first}, {})
    grown = np.concatenate([first, rng.normal(size=(7, 8)).astype(np.float16)])
    leading = {"patches": (tmp_path / "a.zarr" / "patches", len(first))}
    records = write_store(tmp_path / "b.zarr", {"patches": grown, "other": grown[:3]}, {}, leading=leading)
    old, new = _chunk_files(tmp_path / "a.zarr", "patches"), _chunk_files(tmp_path / "b.zarr", "patches")
    linked = sorted(key for key in new if key in old and new[key].st_ino == old[key].st_ino)
    assert linked == ["c/0/0", "c/1/0"]  # rows 0-7; chunk 2 holds old row 8-9 and new rows: rewritten
    assert len(new) == 5 and new["c/2/0"].st_ino != old["c/2/0"].st_ino
    np.testing.assert_array_equal(read_array(tmp_path / "b.zarr", "patches"), grown)
    assert records["patches"] == ArrayRecord.of(grown)
    discard(tmp_path, tmp_path / "a.zarr")  # the other store's removal leaves the links' contents
    np.testing.assert_array_equal(read_array(tmp_path / "b.zarr", "patches"), grown)
    # another layout (dtype) links nothing and still writes everything
    write_store(tmp_path / "c.zarr", {"patches": grown}, {})
    leading = {"patches": (tmp_path / "c.zarr" / "patches", len(grown))}
    write_store(tmp_path / "d.zarr", {"patches": grown.astype(np.float32)}, {}, leading=leading)
    np.testing.assert_array_equal(read_array(tmp_path / "d.zarr", "patches"), grown.astype(np.float32))
    inodes = {stat.st_ino for stat in _chunk_files(tmp_path / "c.zarr", "patches").values()}
    assert not inodes & {stat.st_ino for stat in _chunk_files(tmp_path / "d.zarr", "patches").values()}
