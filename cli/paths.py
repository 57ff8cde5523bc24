"""Output paths of the ``registry`` command, checked before any work starts.

Every check raises :class:`OutputPathError` with one line that names the path and the cause. No
folder is created unless the caller asks (``parents=True``, the ``--parents`` option): a typo in
a path should not leave a new tree of folders behind.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from cli.common import InputError


class OutputPathError(InputError):
    """An output path that cannot be written (names the path and the cause)."""


def _first_non_folder(path: Path) -> Path | None:
    """The nearest existing ancestor of ``path`` that is not a folder (``None`` when there is none)."""
    for ancestor in [path, *path.parents]:
        if ancestor.exists():
            return None if ancestor.is_dir() else ancestor
    return None


def _probe_writable(folder: Path, target: Path, option: str) -> None:
    """Create and remove a small file in ``folder``: the only reliable test (root, /proc, read-only mounts)."""
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".structcore-probe-"):
            pass
    except OSError as error:
        cause = error.strerror or type(error).__name__
        if error.errno in {errno.EACCES, errno.EPERM}:
            cause = "permission denied"
        elif error.errno == errno.EROFS:
            cause = "read-only file system"
        elif error.errno == errno.ENOENT:
            cause = f"the file system does not accept new files there ({error.strerror})"
        msg = f"{option} {target}: cannot write in {folder}: {cause}"
        raise OutputPathError(msg) from None


def _ensure_parent(path: Path, option: str, parents: bool) -> Path:
    """The parent folder of ``path``: must exist (or is created with ``parents``) and be writable."""
    parent = path.parent if str(path.parent) else Path()
    blocker = _first_non_folder(parent)
    if blocker is not None:
        msg = f"{option} {path}: {blocker} is a file, not a folder"
        raise OutputPathError(msg)
    if not parent.exists():
        if not parents:
            msg = f"{option} {path}: the folder {parent} does not exist (create it first, or pass --parents)"
            raise OutputPathError(msg)
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            msg = f"{option} {path}: cannot create the folder {parent}: {error.strerror}"
            raise OutputPathError(msg) from None
    _probe_writable(parent, path, option)
    return parent


def check_output_file(
    path: Path, option: str = "--out", *, parents: bool = False, suffixes: tuple[str, ...] = ()
) -> Path:
    """Check that ``path`` can be written as a file; returns it.

    Args:
        path: the file to write (it may exist: it is replaced).
        option: the option name shown in the message.
        parents: create missing parent folders instead of refusing.
        suffixes: allowed suffixes (lower case, with the dot); empty: any.

    Raises:
        OutputPathError: the path is a folder, a parent is a file, a parent folder is missing
            (without ``parents``), or the folder does not accept new files.
    """
    if path.is_dir():
        example = path / (f"results{suffixes[0]}" if suffixes else "bundle.h5")
        msg = f"{option} {path} is an existing folder; give a file name (e.g. {example})"
        raise OutputPathError(msg)
    if suffixes and path.suffix.lower() not in suffixes:
        msg = f"{option} {path}: the file name must end in {', '.join(suffixes)}"
        raise OutputPathError(msg)
    _ensure_parent(path, option, parents)
    if path.exists() and not os.access(path, os.W_OK):
        msg = f"{option} {path}: the file exists and is not writable (permission denied)"
        raise OutputPathError(msg)
    return path


def check_output_folder(path: Path, option: str, *, parents: bool = False, empty: bool = False) -> Path:
    """Check that ``path`` can be used as an output folder and create it (the folder itself only).

    Args:
        path: the folder to write into (created when absent; its parent must exist unless ``parents``).
        option: the option name shown in the message.
        parents: create missing parent folders too.
        empty: refuse an existing folder that holds files.

    Raises:
        OutputPathError: the path is a file, a parent is a file or missing, the folder is not
            empty (with ``empty``), or it does not accept new files.
    """
    if path.exists() and not path.is_dir():
        msg = f"{option} {path} is a file, not a folder"
        raise OutputPathError(msg)
    if path.is_dir():
        if empty and any(path.iterdir()):
            msg = f"{option} {path} is not empty; give a new or empty folder"
            raise OutputPathError(msg)
        _probe_writable(path, path, option)
        return path
    _ensure_parent(path, option, parents)
    try:
        path.mkdir()
    except OSError as error:
        msg = f"{option} {path}: cannot create the folder: {error.strerror}"
        raise OutputPathError(msg) from None
    return path
