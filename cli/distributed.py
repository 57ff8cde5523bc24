"""``registry add-categories``: fit every category folder under a root, on Ray or one after another.

Registered on the main app by :func:`register`; Ray is imported only when ``--ray`` is given.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cli.common import (
    InputError,
    console,
    err_console,
    print_json,
    progress_bar,
    resolve_root,
    train_images,
    user_errors,
)
from cli.options import (
    FIT_DEFAULTS,
    BatchSizeOption,
    CalibrationOption,
    CoresetRatioOption,
    FitSeedOption,
    KnnIndexOption,
    ScoringOption,
    ThresholdFrrOption,
    ThresholdRuleOption,
    fit_settings,
)
from registry.records import NAME_PATTERN

if TYPE_CHECKING:
    from registry.distributed import FitReport
    from structcore.progress import Progress

#: Layouts that make a folder one category (then ``add-category`` is the command to use).
_CATEGORY_LAYOUTS = (Path("train") / "good", Path("Data") / "Images" / "Normal")


def discover_categories(train_root: Path) -> tuple[dict[str, list[Path]], list[str]]:
    """Category folders under ``train_root`` -> their train-good images, and the folders skipped (why).

    Each sub-folder (sorted, hidden ones ignored) is a category named after it: an MVTec AD
    (``<cat>/train/good``) or VisA (``<cat>/Data/Images/Normal``) category root, or a folder of
    images. A sub-folder without train images is skipped with a note.

    Raises:
        InputError: ``train_root`` is missing, is itself one category, holds no category, or
            a folder name is not a valid category name.
    """

    if not train_root.is_dir():
        raise InputError(f"--train-root {train_root} is not a folder")
    if any((train_root / layout).is_dir() for layout in _CATEGORY_LAYOUTS):
        raise InputError(
            f"{train_root} is one category (it has train images itself); "
            f"use `registry add-category NAME --train {train_root}`, or pass the folder above it"
        )
    categories: dict[str, list[Path]] = {}
    skipped: list[str] = []
    for folder in sorted(train_root.iterdir()):
        if not folder.is_dir() or folder.name.startswith("."):
            continue
        try:
            categories[folder.name] = train_images(folder)
        except InputError as error:
            skipped.append(f"{folder.name}: {error}")
    bad = [name for name in categories if not NAME_PATTERN.fullmatch(name)]
    if bad:
        raise InputError(
            f"folder name(s) {', '.join(repr(n) for n in bad)} are not valid category names "
            "(letters, digits, . _ -, starting with a letter or digit); rename them"
        )
    if not categories:
        detail = f" ({'; '.join(skipped[:3])})" if skipped else ""
        raise InputError(f"no category folders with train images under {train_root}{detail}")
    return categories, skipped


def _print_report(report: FitReport) -> None:
    from rich.table import Table

    table = Table(header_style="bold")
    for column in ("category", "status", "attempts", "images", "fit s", "version", "worker / error"):
        table.add_column(column, justify="right" if column in {"attempts", "images", "fit s", "version"} else "left")
    for result in report.categories:
        table.add_row(
            result.name,
            "[green]ok[/]" if result.ok else "[red]failed[/]",
            str(result.attempts),
            str(result.n_images),
            "-" if result.seconds is None else f"{result.seconds:.1f}",
            "-" if result.version is None else str(result.version),
            (result.worker or "") if result.ok else f"[red]{result.error}[/]",
        )
    console.print(table)


def add_categories(
    train_root: Annotated[
        Path,
        typer.Option(
            "--train-root", help="Folder with one sub-folder per category (MVTec/VisA roots or folders of images)."
        ),
    ],
    root: Annotated[
        Path | None,
        typer.Option("--root", help=r"Registry folder \[env: STRUCTCORE_REGISTRY; default: ./structcore-registry]."),
    ] = None,
    ray_address: Annotated[
        str | None,
        typer.Option(
            "--ray",
            help="Fit on Ray: 'local' (start Ray here), 'auto' (join this machine's cluster) or an address "
            "(host:6379, ray://host:10001). Without it, categories are fitted one after another in this process.",
        ),
    ] = None,
    coreset_ratio: CoresetRatioOption = FIT_DEFAULTS.coreset_ratio,
    calibration: CalibrationOption = FIT_DEFAULTS.calibration,
    scoring: ScoringOption = FIT_DEFAULTS.scoring,
    seed: FitSeedOption = FIT_DEFAULTS.seed,
    batch_size: BatchSizeOption = FIT_DEFAULTS.batch_size,
    knn_index: KnnIndexOption = FIT_DEFAULTS.index,
    threshold_rule: ThresholdRuleOption = FIT_DEFAULTS.threshold_rule,
    threshold_frr: ThresholdFrrOption = FIT_DEFAULTS.threshold_frr,
    threads: Annotated[int, typer.Option(help="Torch threads (and CPUs reserved) per Ray task.")] = 1,
    max_retries: Annotated[int, typer.Option(help="Resubmissions of a category whose Ray worker died.")] = 2,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of tables.")] = False,
) -> None:
    """Fit every category folder under --train-root and add each as a new version.

    With --ray each category is a Ray task, and this process alone writes the registry.

    A category whose worker dies is retried; a failed one is reported, the others are added.

    Exit code 1 when any category failed.
    """
    from registry.distributed import fit_categories

    with user_errors():
        settings = fit_settings(
            coreset_ratio=coreset_ratio,
            calibration=calibration,
            scoring=scoring,
            index=knn_index,
            seed=seed,
            threshold_rule=threshold_rule,
            threshold_frr=threshold_frr,
            batch_size=batch_size,
        )
        if threads < 1 or max_retries < 0:
            raise InputError("--threads must be positive and --max-retries not negative")
        categories, skipped = discover_categories(train_root)
        for note in skipped:
            err_console.print(f"[yellow]skipped[/] {note}", highlight=False, soft_wrap=True)
        params = settings.model_params()
        where = "in this process" if ray_address is None else f"on Ray ({ray_address})"
        started = time.perf_counter()
        with progress_bar() as progress:
            task = progress.add_task(
                f"fitting {len(categories)} {'category' if len(categories) == 1 else 'categories'} {where}",
                total=len(categories),
                rate="",
            )

            failures: set[str] = set()

            def on_event(event: Progress) -> None:
                if event.stage == "failed":
                    failures.add(event.category)
                failed = f", {len(failures)} failed" if failures else ""
                progress.update(
                    task,
                    completed=event.done,
                    rate=f"{event.images_per_second:.1f} img/s{failed}",
                )
                if event.stage == "started" and ray_address is None:
                    progress.update(task, description=f"fitting {event.category} ({event.done + 1}/{event.total})")
                elif event.stage == "retry":
                    progress.console.print(
                        f"[yellow]retrying[/] {event.category} (attempt {event.attempt + 1}): {event.message}",
                        highlight=False,
                        soft_wrap=True,
                    )
                elif event.stage == "failed":
                    progress.console.print(
                        f"[red]failed[/] {event.category}: {event.message}", highlight=False, soft_wrap=True
                    )

            report = fit_categories(
                resolve_root(root),
                categories,
                params,
                ray_address,
                max_retries=max_retries,
                on_event=on_event,
                batch_size=settings.batch_size,
                threads=threads,
            )
        elapsed = time.perf_counter() - started
        if as_json:
            print_json({**report.to_dict(), "skipped": skipped})
        else:
            _print_report(report)
            stored = sum(result.ok for result in report.categories)
            images = sum(result.n_images for result in report.categories if result.ok)
            console.print(
                f"added {stored} of {len(report.categories)} categories ({images} train images) {where} "
                f"in {elapsed:.1f} s"
            )
        if not report.ok:
            raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add the ``add-categories`` command to ``app``."""
    app.command("add-categories")(add_categories)


__all__ = ["add_categories", "discover_categories", "register"]
