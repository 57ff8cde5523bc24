"""Array stores on disk: zarr v3 groups written atomically, sha256 checksums, the registry lock.

A store is written into ``<root>/tmp/<uuid>.zarr``, flushed to disk, then moved into place with
one ``os.replace`` of the directory (atomic on POSIX within one file system, which ``tmp/``
inside the registry guarantees). A store is deleted the other way round: first moved into
``tmp/``, then removed, so a half-deleted store is never found under ``stores/``.

Checksums are over the array's contents, not over the files: ``sha256(header + bytes)`` where
``header`` is ``{"dtype": "<f4", "shape": [M, D]}`` as compact JSON plus a newline and the
bytes are the array in C order and little-endian byte order (see :func:`array_sha256`). The same
checksum is used in the database and in bundles, so it is independent of zarr's chunking and
compression.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr

try:  # POSIX advisory locks; elsewhere the lock is a no-op (documented in docs/registry.md)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

#: Dtypes an array of the registry (or of a bundle) may have.
ALLOWED_DTYPES = frozenset(np.dtype(name) for name in ("float16", "float32", "float64", "int32", "int64"))
#: Target size of one zarr chunk, in bytes.
CHUNK_BYTES = 16 << 20

TMP_DIR = "tmp"
STORES_DIR = "stores"
LOCK_FILE = "registry.lock"

#: Test hook: called with the name of each crash-relevant point of a write (see :func:`checkpoint`).
checkpoint_hook: Callable[[str], None] | None = None


def checkpoint(stage: str) -> None:
    """Mark a point of a multi-step write (``"store-partial"``, ``"tmp-written"``, ``"renamed"``,
    ``"in-transaction"``, ``"committed"``, ...). Tests install :data:`checkpoint_hook` to kill the
    process there and check that the registry stays consistent."""
    if checkpoint_hook is not None:
        checkpoint_hook(stage)


# ----------------------------------------------------------------------------- checksums
def canonical(array: np.ndarray) -> np.ndarray:
    """C-ordered, little-endian (native-free) view or copy of ``array``."""
    array = np.asarray(array)
    if array.dtype.byteorder == ">" or (array.dtype.byteorder == "=" and not np.little_endian):
        array = array.astype(array.dtype.newbyteorder("<"))
    return np.ascontiguousarray(array)


def dtype_name(array: np.ndarray) -> str:
    """Little-endian dtype string of ``array`` (``"<f4"``, ``"<i8"``, ...)."""
    return np.asarray(array).dtype.newbyteorder("<").str


def array_sha256(array: np.ndarray) -> str:
    """sha256 of ``{"dtype": ..., "shape": [...]}\\n`` followed by the C-order little-endian bytes."""
    array = canonical(array)
    digest = hashlib.sha256()
    header = json.dumps({"dtype": array.dtype.str, "shape": list(array.shape)}, separators=(",", ":"))
    digest.update(header.encode() + b"\n")
    if array.size:
        digest.update(array.data)  # the C-contiguous buffer, without a copy
    return digest.hexdigest()


@dataclass(frozen=True)
class ArrayRecord:
    """Shape, dtype and checksum of one stored array (what the database keeps per array)."""

    shape: tuple[int, ...]
    dtype: str
    sha256: str

    @classmethod
    def of(cls, array: np.ndarray) -> ArrayRecord:
        """The record of an in-memory array."""
        return cls(shape=tuple(int(v) for v in array.shape), dtype=dtype_name(array), sha256=array_sha256(array))

    def to_json(self) -> dict[str, Any]:
        """JSON-compatible form."""
        return {"shape": list(self.shape), "dtype": self.dtype, "sha256": self.sha256}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ArrayRecord:
        """Inverse of :meth:`to_json`."""
        return cls(shape=tuple(int(v) for v in data["shape"]), dtype=str(data["dtype"]), sha256=str(data["sha256"]))


# --------------------------------------------------------------------------------- zarr I/O
def _chunks(shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    if not shape:
        return ()
    row_bytes = itemsize * int(np.prod(shape[1:], dtype=np.int64)) if len(shape) > 1 else itemsize
    rows = max(1, min(max(shape[0], 1), CHUNK_BYTES // max(row_bytes, 1)))
    return (rows, *[max(1, v) for v in shape[1:]])


def _link_leading_chunks(source: Path, target: Any, rows: int) -> int:
    """Hard-link ``source``'s chunk files that lie wholly in its first ``rows`` rows into ``target``'s folder.

    ``source`` is the same-named array in another store, ``target`` the array just created (same
    dtype, chunking and codecs, else nothing is linked). Returns the rows now covered by links (a
    whole number of chunks; 0 when the layouts differ or the file system refuses links, in which
    case nothing stays linked). Chunk files are never written in place (zarr writes each through a
    temporary file and a rename), so the two stores cannot change each other's files; removing one
    store leaves the other's links intact.
    """
    try:
        origin = zarr.open_array(str(source), mode="r", zarr_format=3)
    except Exception:  # no such array (or not one zarr can open): nothing to link, write it
        return 0
    layout = {key: value for key, value in target.metadata.to_dict().items() if key != "shape"}
    if {key: value for key, value in origin.metadata.to_dict().items() if key != "shape"} != layout:
        return 0
    chunk_rows = int(target.chunks[0])
    whole = min(rows, int(origin.shape[0]), int(target.shape[0])) // chunk_rows
    rest = (0,) * (len(target.shape) - 1)
    folder = Path(target.store.root) / target.path
    linked: list[Path] = []
    try:
        for index in range(whole):
            key = target.metadata.encode_chunk_key((index, *rest))
            chunk = source / key
            if not chunk.exists():  # a chunk of fill values is not stored: none to link either
                continue
            destination = folder / key
            destination.parent.mkdir(parents=True, exist_ok=True)
            os.link(chunk, destination)
            linked.append(destination)
    except OSError:
        for destination in linked:
            destination.unlink(missing_ok=True)
        return 0
    return whole * chunk_rows


def write_store(
    path: Path,
    arrays: Mapping[str, np.ndarray],
    attributes: Mapping[str, Any],
    shared: Mapping[str, ArrayRecord] | None = None,
    leading: Mapping[str, tuple[Path, int]] | None = None,
) -> dict[str, ArrayRecord]:
    """Write ``arrays`` as a new zarr v3 group at ``path`` and flush it to disk.

    Calls :func:`checkpoint` ``("store-partial")`` after the first array. Returns each array's
    record, computed from the in-memory arrays. ``shared``: the records of arrays that live in
    another store (a version sharing them writes no array of its own); they are recorded and
    returned as if written here. ``leading``: arrays whose first rows equal those of the
    same-named array in another store (``(that array's folder, rows)``): those rows' chunk files
    are hard-linked instead of compressed and written again (``registry update``'s train
    patches); the record is still computed from all of ``arrays``.
    """
    group = zarr.open_group(str(path), mode="w-", zarr_format=3)
    group.attrs.update(dict(attributes))
    records: dict[str, ArrayRecord] = {}
    for position, (name, array) in enumerate(arrays.items()):
        data = canonical(array)
        if data.dtype not in ALLOWED_DTYPES:
            msg = f"array {name!r} has dtype {data.dtype}; allowed: {sorted(str(d) for d in ALLOWED_DTYPES)}"
            raise ValueError(msg)
        target = group.create_array(
            name, shape=data.shape, dtype=data.dtype, chunks=_chunks(data.shape, data.dtype.itemsize)
        )
        same_rows = (leading or {}).get(name)
        linked = _link_leading_chunks(same_rows[0], target, same_rows[1]) if same_rows and data.size else 0
        if data.size and linked < len(data):
            target[linked:] = data[linked:]
        records[name] = ArrayRecord.of(data)
        if position == 0:
            checkpoint("store-partial")
    records.update(dict(shared or {}))
    # an independent copy of what the database row will record (verify compares the two)
    group.attrs["arrays"] = {name: record.to_json() for name, record in records.items()}
    fsync_tree(path)
    return records


def read_attributes(store: Path) -> dict[str, Any]:
    """The attributes of a store's group (its ``zarr.json``), read as plain JSON."""
    metadata = json.loads((store / "zarr.json").read_text(encoding="utf-8"))
    if not isinstance(metadata, dict) or not isinstance(metadata.get("attributes", {}), dict):
        msg = f"{store / 'zarr.json'} is not a zarr group's metadata"
        raise ValueError(msg)
    return dict(metadata.get("attributes", {}))


def read_array(store: Path, name: str) -> np.ndarray:
    """Read one array of a zarr store fully into memory (raises ``KeyError``/``OSError`` if absent)."""
    if not (store / "zarr.json").is_file():
        msg = f"no zarr store at {store}"
        raise FileNotFoundError(msg)
    group = zarr.open_group(str(store), mode="r", zarr_format=3)
    member = group[name]
    if not isinstance(member, zarr.Array):
        msg = f"{name} is not an array"
        raise KeyError(msg)
    return np.asarray(member[...])


def store_array_names(store: Path) -> list[str]:
    """Names of the arrays in a zarr store."""
    group = zarr.open_group(str(store), mode="r", zarr_format=3)
    return sorted(group.array_keys())


def fsync_tree(path: Path) -> None:
    """fsync every file and folder under ``path`` (so a rename after it publishes durable data)."""
    for folder, _dirs, files in os.walk(path):
        for name in files:
            fd = os.open(Path(folder) / name, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(folder))


def fsync_dir(path: Path) -> None:
    """fsync a directory entry table (best effort: not every platform can open folders)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


# -------------------------------------------------------------------------------- folders
def new_tmp_path(root: Path, suffix: str = ".zarr") -> Path:
    """A fresh, not yet existing path inside ``<root>/tmp``."""
    tmp = root / TMP_DIR
    tmp.mkdir(parents=True, exist_ok=True)
    return tmp / f"{uuid.uuid4()}{suffix}"


def publish(tmp_path: Path, final: Path, attempts: int = 5) -> None:
    """Move a finished temporary store to its final path (atomic rename of the folder).

    ``remove`` deletes a category's folder once it is empty, and it may do so between this
    function's ``mkdir`` and its rename (both hold the registry lock shared); the folder is
    then made again.
    """
    for attempt in range(attempts):
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists():
            msg = f"refusing to overwrite existing store {final}"
            raise FileExistsError(msg)
        try:
            tmp_path.replace(final)
            break
        except FileNotFoundError:
            if not tmp_path.exists() or attempt == attempts - 1:
                raise
    fsync_dir(final.parent)


def discard(root: Path, path: Path) -> None:
    """Delete a store or temporary folder: first move it into ``tmp/`` (atomic), then remove it."""
    if not path.exists():
        return
    if path.parent != root / TMP_DIR:
        doomed = new_tmp_path(root, suffix=".deleting")
        try:
            path.replace(doomed)
        except OSError:
            doomed = path
    else:
        doomed = path
    if doomed.is_dir():
        shutil.rmtree(doomed, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            doomed.unlink()


# ----------------------------------------------------------------------------------- lock
@contextlib.contextmanager
def registry_lock(root: Path, *, exclusive: bool) -> Iterator[None]:
    """The registry's advisory file lock (``flock`` on ``<root>/registry.lock``).

    Writers hold it shared from their first file in ``tmp/`` until their row is committed;
    ``gc`` / ``verify`` / schema upgrades hold it exclusively, so they never see (or delete) a
    store that a live writer is about to commit. The kernel drops the lock of a killed process.
    """
    if fcntl is None:  # pragma: no cover - Windows
        yield
        return
    try:
        fd = os.open(root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:  # read-only file system: nobody can write, nothing to exclude
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


__all__ = [
    "ALLOWED_DTYPES",
    "LOCK_FILE",
    "STORES_DIR",
    "TMP_DIR",
    "ArrayRecord",
    "array_sha256",
    "canonical",
    "checkpoint",
    "discard",
    "dtype_name",
    "fsync_tree",
    "new_tmp_path",
    "publish",
    "read_array",
    "read_attributes",
    "registry_lock",
    "store_array_names",
    "write_store",
]
