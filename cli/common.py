"""Shared plumbing of the ``registry`` command: root resolution, errors, progress, input expansion."""

from __future__ import annotations

import glob
import json
import os
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from registry.errors import RegistryError
from structcore.backbones import BackboneError
from structcore.image_files import IMAGE_SUFFIXES, ImageReadError

ROOT_ENV = "STRUCTCORE_REGISTRY"
DEFAULT_ROOT = Path("structcore-registry")

#: Tables and summaries go to stdout; progress and errors to stderr (so ``--json`` stays clean).
console = Console()
err_console = Console(stderr=True)


class CliState:
    """Options of the top-level callback."""

    debug: bool = False


def resolve_root(root: Path | None) -> Path:
    """``--root``, else ``$STRUCTCORE_REGISTRY``, else ``./structcore-registry``."""
    if root is not None:
        return root
    env = os.environ.get(ROOT_ENV)
    return Path(env) if env else DEFAULT_ROOT


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print ``error: message`` to stderr and return the exit to raise."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn the product's own errors into one clear line and exit code 1 (traceback with --debug)."""
    try:
        yield
    except typer.Exit:
        raise
    except (RegistryError, BackboneError, ImageReadError, InputError, ValueError) as error:
        if CliState.debug:
            traceback.print_exc()
        raise fail(str(error)) from None
    except OSError as error:  # disk full, permission denied, a folder where a file was expected, ...
        if CliState.debug:
            traceback.print_exc()
        raise fail(describe_os_error(error)) from None
    except KeyboardInterrupt:
        raise fail("interrupted", 130) from None


def describe_os_error(error: OSError) -> str:
    """One line for a file-system error: the path(s) and the cause, without errno jargon."""
    if error.errno is None and not error.filename:
        return str(error)  # raised by this project with its own message
    cause = error.strerror or str(error) or type(error).__name__
    names = [str(name) for name in (error.filename, error.filename2) if name is not None]
    return f"{' -> '.join(names)}: {cause}" if names else f"file-system error: {cause}"


class InputError(ValueError):
    """Bad command-line input: wrong folder layout, nothing matched, ..."""


def progress_bar(transient: bool = False) -> Progress:
    """A progress bar with count, rate and ETA, on stderr."""
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=err_console,
        transient=transient,
        disable=not err_console.is_terminal and "PYTEST_CURRENT_TEST" in os.environ,
    )


def is_image(path: Path) -> bool:
    """True for files with an image suffix."""
    return path.suffix.lower() in IMAGE_SUFFIXES


def images_in(folder: Path) -> list[Path]:
    """Image files under ``folder`` (recursive, sorted, symlink loops safe)."""
    found: list[Path] = []
    seen: set[Path] = set()
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        real = Path(dirpath).resolve()
        if real in seen:  # a symlink loop: do not walk the same folder twice
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames.sort()
        found.extend(Path(dirpath) / name for name in sorted(filenames) if is_image(Path(name)))
    return found


def expand_inputs(patterns: list[str]) -> list[Path]:
    """Files, folders (recursive) and globs -> a de-duplicated, ordered list of paths.

    Explicitly named files are kept whatever their suffix (a bad one is reported, not skipped);
    folders and globs contribute image files only.
    """
    paths: list[Path] = []
    for pattern in patterns:
        candidate = Path(pattern)
        if candidate.is_dir():
            paths.extend(images_in(candidate))
        elif candidate.exists() or candidate.is_symlink():
            paths.append(candidate)
        elif glob.has_magic(pattern):
            matches = sorted(Path(match) for match in glob.glob(pattern, recursive=True))  # noqa: PTH207
            paths.extend(match for match in matches if match.is_file() and is_image(match))
            for match in matches:
                if match.is_dir():
                    paths.extend(images_in(match))
        else:
            paths.append(candidate)  # reported as unreadable, one line
    return list(dict.fromkeys(paths))


def train_images(folder: Path) -> list[Path]:
    """Train-good images of ``folder``: a folder of images, or an MVTec / VisA category root."""
    if not folder.exists():
        msg = f"train folder {folder} does not exist"
        raise InputError(msg)
    if not folder.is_dir():
        msg = f"--train expects a folder, got the file {folder}"
        raise InputError(msg)
    for layout in (folder / "train" / "good", folder / "Data" / "Images" / "Normal"):
        if layout.is_dir():
            images = images_in(layout)
            if not images:
                msg = f"{layout} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})"
                raise InputError(msg)
            return images
    # a broken or looping symlink with an image name is listed (and then reported by name), as in
    # images_in(), rather than silently skipped
    direct = sorted(
        path
        for path in folder.iterdir()
        if is_image(path) and (path.is_file() or (path.is_symlink() and not path.is_dir()))
    )
    if direct:
        return direct
    if (folder / "train").is_dir() or (folder / "test").is_dir():
        msg = f"{folder} looks like an MVTec AD category but has no train/good folder with images"
        raise InputError(msg)
    msg = (
        f"{folder} holds no images; pass a folder of good images or a category root "
        "with the MVTec AD layout (CATEGORY/train/good/*.png)"
    )
    raise InputError(msg)


def print_json(data: object) -> None:
    """Write JSON to stdout (no colour, no wrapping)."""

    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    sys.stdout.flush()
