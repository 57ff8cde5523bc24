"""``registry update NAME``: add good images to a category without refitting it from scratch.

``--add-good DIR`` (a folder of good images), or ``--from-records r.jsonl --paths-file good.txt``
(the images a person marked good among those ``registry infer --out r.jsonl`` scored: every path
of the paths file must appear in the records file). A new version becomes current;
``registry set-current NAME V`` goes back. See ``registry.updates``.
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from cli.common import InputError, console, err_console, print_json, progress_bar, train_images, user_errors
from cli.options import FIT_DEFAULTS, BatchSizeOption

RootOption = Annotated[
    Path | None,
    typer.Option("--root", help=r"Registry folder \[env: STRUCTCORE_REGISTRY; default: ./structcore-registry]."),
]


def read_record_paths(path: Path) -> list[str]:
    """The ``path`` of every record of a ``registry infer --out`` file (.jsonl, .json or .csv)."""
    if not path.is_file():
        raise InputError(f"records file {path} does not exist")
    suffix = path.suffix.lower()
    try:
        text = path.read_text(encoding="utf-8")
        if suffix == ".csv":
            rows: list[Any] = list(csv.DictReader(text.splitlines()))
        elif suffix == ".json":
            loaded = json.loads(text)
            rows = loaded.get("records", []) if isinstance(loaded, dict) else loaded
        else:
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    except (UnicodeDecodeError, json.JSONDecodeError, csv.Error) as error:
        raise InputError(f"records file {path} cannot be read as {suffix or 'jsonl'} records: {error}") from None
    if not isinstance(rows, list) or not all(isinstance(row, dict) and row.get("path") for row in rows):
        raise InputError(f"records file {path} holds records without a path (write it with `registry infer --out`)")
    return [str(row["path"]) for row in rows]


def marked_good(records: Path, paths_file: Path) -> list[Path]:
    """The paths of ``paths_file`` (one per line), each checked to appear in ``records``."""
    known = read_record_paths(records)
    by_resolved = {str(Path(p).resolve()): p for p in known}
    if not paths_file.is_file():
        raise InputError(f"paths file {paths_file} does not exist")
    wanted = [line.strip() for line in paths_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not wanted:
        raise InputError(f"paths file {paths_file} names no image")
    known_set = set(known)
    missing = [p for p in wanted if p not in known_set and str(Path(p).resolve()) not in by_resolved]
    if missing:
        raise InputError(
            f"{len(missing)} of the {len(wanted)} paths in {paths_file} are not in the records file {records} "
            f"(first: {missing[0]}); mark images from the records the run wrote"
        )
    return [Path(by_resolved.get(str(Path(p).resolve()), p)) if p not in known_set else Path(p) for p in wanted]


def update_command(
    name: Annotated[str, typer.Argument(help="Category to update.")],
    add_good: Annotated[
        Path | None, typer.Option("--add-good", help="Folder of new good images (or an MVTec-style category root).")
    ] = None,
    from_records: Annotated[
        Path | None, typer.Option("--from-records", help="Records file written by `registry infer --out`.")
    ] = None,
    paths_file: Annotated[
        Path | None,
        typer.Option("--paths-file", help="With --from-records: the paths marked good, one per line."),
    ] = None,
    skip_bad: Annotated[
        bool, typer.Option("--skip-bad", help="Update without new images that cannot be read (each one is listed).")
    ] = False,
    root: RootOption = None,
    batch_size: BatchSizeOption = FIT_DEFAULTS.batch_size,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """Add good images to a category: a new current version, without re-embedding the old images.

    The bank is continued from the current one, and the statistics and thresholds are recomputed
    for old and new images (the threshold rule of the version; an operating point set with
    `registry threshold` is kept as an FRR target). Versions without stored patch vectors are
    refitted (the command says so).
    """
    from cli.main import _checked_train_images, _open
    from registry.updates import update_category

    with user_errors():
        if (add_good is None) == (from_records is None):
            raise InputError("give one of --add-good DIR or --from-records FILE --paths-file FILE")
        if (from_records is None) != (paths_file is None):
            raise InputError("--from-records and --paths-file go together")
        if add_good is not None:
            images = train_images(add_good)
            source = "update"
        else:
            assert from_records is not None and paths_file is not None
            images = marked_good(from_records, paths_file)
            source = "feedback"
        registry = _open(root)
        registry.version_info(name)  # unknown category: one line before any image is read
        images, skipped = _checked_train_images(images, skip_bad)
        started = time.perf_counter()
        with progress_bar() as progress:
            task = progress.add_task(f"updating {name}", total=len(images), rate="")

            def on_progress(event: Any) -> None:
                if event.stage == "embed":
                    progress.update(task, completed=event.done, total=event.total)
                elif event.stage != "done":
                    progress.update(task, description=f"{name}: {event.stage}")

            def on_notice(text: str) -> None:
                err_console.print(f"[yellow]note[/]: {text}", highlight=False, soft_wrap=True)

            result = update_category(
                registry,
                name,
                images,
                source=source,
                progress=on_progress,
                notice=on_notice,
                batch_size=batch_size,
            )
        elapsed = time.perf_counter() - started
        if as_json:
            print_json({**result.to_dict(), "elapsed_seconds": elapsed, "skipped": skipped})
            return
        info, parent = result.info, result.parent
        how = "incremental update" if result.mode == "update" else "refit"
        console.print(
            f"updated [bold]{name}[/]: version {info.version} from version {parent.version} ({how}): "
            f"{parent.n_train_images} + {len(result.added)} = {info.n_train_images} train images, bank "
            f"{parent.bank_size} -> {info.bank_size}; hybrid threshold {parent.thresholds['hybrid']:.4f} -> "
            f"{info.thresholds['hybrid']:.4f} ({info.threshold_summary}); took {elapsed:.1f} s",
            highlight=False,
        )
        if result.duplicates:
            console.print(
                f"  {len(result.duplicates)} already in version {parent.version} (same content), not added again",
                highlight=False,
            )
        if result.threshold_note:
            console.print(f"  {result.threshold_note}", highlight=False)
        console.print(f"  now current; `registry set-current {name} {parent.version}` goes back", highlight=False)


def images_command(name: str, root: Path | None, as_json: bool, version: int | None = None) -> None:
    """``registry show NAME --images``: the train images of a version, their hash and source."""
    from cli.main import _open
    from registry.updates import train_image_list

    with user_errors():
        registry = _open(root)
        info, records = train_image_list(registry, name, version)
        if as_json:
            print_json({"category": name, "version": info.version, "images": records})
            return
        console.print(f"[bold]{name}[/] version {info.version}: {len(records)} train images", highlight=False)
        for item in records:
            digest = str(item.get("sha256") or "-")[:12]
            console.print(f"  {item.get('source', 'fit'):8} {digest:12}  {item.get('name')}", highlight=False)


def register(app: typer.Typer) -> None:
    """Add ``update`` to the main app."""
    app.command("update")(update_command)


__all__ = ["images_command", "marked_good", "read_record_paths", "register", "update_command"]
