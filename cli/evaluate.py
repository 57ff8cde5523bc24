"""``registry eval`` and ``registry data check``: thin wrappers over :mod:`evaluation`."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import TaskID

from cli.common import InputError, console, err_console, print_json, progress_bar, resolve_root, user_errors
from cli.options import (
    FIT_DEFAULTS,
    BackboneRuntimeOption,
    BatchSizeOption,
    CalibrationOption,
    CoresetRatioOption,
    FitSeedOption,
    KnnIndexOption,
    ScoringOption,
    ThresholdFrrOption,
    ThresholdRuleOption,
    fit_settings,
    use_backbone_runtime,
)
from structcore.settings import CONTINUAL_VARIANTS, DEFAULT_UPDATE_STEPS

if TYPE_CHECKING:
    from evaluation.protocols import Progress

data_app = typer.Typer(help="Dataset copies: compare with the official manifests.", no_args_is_help=True)


def eval_command(
    data: Annotated[Path, typer.Argument(help="Dataset root (MVTec AD, VisA or plain folder layout).")],
    protocol: Annotated[
        list[str] | None, typer.Option("--protocol", help="separate, muad, continual or open-set (repeatable).")
    ] = None,
    root: Annotated[
        Path | None,
        typer.Option("--root", help=r"Registry to fit into / reuse (created if absent) \[env: STRUCTCORE_REGISTRY]."),
    ] = None,
    in_memory: Annotated[
        bool, typer.Option("--in-memory", help="Fit into a throwaway in-memory store instead of a registry.")
    ] = False,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Output folder: results.json, per_category.csv, report.md, plots (created; its parent must exist)."
        ),
    ] = None,
    parents: Annotated[bool, typer.Option("--parents", help="Create missing parent folders of --out.")] = False,
    categories: Annotated[str | None, typer.Option(help="Comma-separated subset of categories.")] = None,
    order: Annotated[
        str | None, typer.Option(help="Continual order: alphabetical, 10-5, 14-1, ... or a comma-separated list.")
    ] = None,
    continual: Annotated[
        str,
        typer.Option(
            "--continual",
            help="Variant of --protocol continual: categories (added step by step) or update (each category "
            "fitted on its first part of train images and grown by `registry update`, scored after each step "
            "beside a full refit on the same images).",
        ),
    ] = "categories",
    update_steps: Annotated[
        int, typer.Option("--update-steps", min=1, help="Steps of --continual update (4: 25% of train images each).")
    ] = DEFAULT_UPDATE_STEPS,
    dataset: Annotated[str, typer.Option(help="Manifest to check the copy against: auto, mvtec_ad, visa, none.")] = (
        "auto"
    ),
    layout: Annotated[str, typer.Option(help="auto, mvtec, visa or folder.")] = "auto",
    coreset_ratio: CoresetRatioOption = FIT_DEFAULTS.coreset_ratio,
    calibration: CalibrationOption = FIT_DEFAULTS.calibration,
    scoring: ScoringOption = FIT_DEFAULTS.scoring,
    seed: FitSeedOption = FIT_DEFAULTS.seed,
    knn_index: KnnIndexOption = FIT_DEFAULTS.index,
    threshold_rule: ThresholdRuleOption = FIT_DEFAULTS.threshold_rule,
    threshold_frr: ThresholdFrrOption = FIT_DEFAULTS.threshold_frr,
    refit: Annotated[bool, typer.Option(help="Fit again even when the registry holds a category.")] = False,
    max_train: Annotated[int | None, typer.Option(help="Seeded subset of train images (quick runs).")] = None,
    max_test: Annotated[int | None, typer.Option(help="Seeded subset of test images (quick runs).")] = None,
    batch_size: BatchSizeOption = FIT_DEFAULTS.batch_size,
    no_plots: Annotated[bool, typer.Option("--no-plots", help="Skip the plots.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print results.json to stdout.")] = False,
    backbone_runtime: BackboneRuntimeOption = None,
) -> None:
    """Evaluate under the separate / MUAD / continual / open-set protocols with the paper's metrics.

    The fit options (--coreset-ratio, --calibration, --scoring, --seed, --knn-index) apply to the
    categories this run fits: those the registry does not hold yet, or all of them with --refit.
    """
    from cli.paths import check_output_folder
    from evaluation.protocols import PROTOCOLS
    from evaluation.report import jsonable
    from evaluation.runner import run_evaluation
    from structcore.model import CategoryModel

    with user_errors():
        use_backbone_runtime(backbone_runtime)
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
        if out is not None:
            check_output_folder(out, "--out", parents=parents)
        if continual not in CONTINUAL_VARIANTS:
            raise InputError(f"--continual must be one of {', '.join(CONTINUAL_VARIANTS)}, got {continual}")
        protocols = protocol or ["separate", "muad"]
        unknown = [p for p in protocols if p not in PROTOCOLS]
        if unknown:
            raise InputError(f"--protocol must be one of {', '.join(PROTOCOLS)}, got {', '.join(unknown)}")
        subset = [c.strip() for c in categories.split(",") if c.strip()] if categories else None
        continual_order: str | list[str] | None = order
        if order and "," in order:
            continual_order = [c.strip() for c in order.split(",") if c.strip()]
        registry_root = None if in_memory else resolve_root(root)
        started = time.perf_counter()
        with progress_bar() as progress:
            tasks: dict[str, TaskID] = {}

            def on_progress(event: Progress) -> None:
                if event.stage not in {"fit", "test", "reuse"} or not event.total:
                    return
                key = f"{event.stage}:{event.category}"
                label = {"fit": "fitting", "test": "testing", "reuse": "reusing"}[event.stage]
                if key not in tasks:
                    tasks[key] = progress.add_task(f"{label} {event.category}", total=event.total, rate="")
                elapsed = time.perf_counter() - started
                progress.update(tasks[key], completed=event.done, rate=f"{elapsed:.0f} s")

            result = run_evaluation(
                data,
                out=out,
                protocols=protocols,
                registry=registry_root,
                layout=layout,
                categories=subset,
                order=continual_order,
                dataset=None if dataset == "none" else dataset,
                model=CategoryModel(**settings.model_params()),
                batch_size=settings.batch_size,
                refit=refit,
                max_train=max_train,
                max_test=max_test,
                plots=not no_plots,
                progress=on_progress,
                continual=continual,
                update_steps=update_steps,
            )
        if as_json:
            print_json(jsonable(result.results))
            return
        # raw: the report is markdown (tables), which a terminal-width re-wrap would break
        sys.stdout.write(result.report().rstrip("\n") + "\n")
        sys.stdout.flush()
        if result.out is not None:
            err_console.print(f"wrote {len(result.files)} files to {result.out}")


@data_app.command("check")
def data_check(
    root: Annotated[Path, typer.Option("--root", help="Root folder of your copy of the dataset.")],
    dataset: Annotated[str, typer.Option("--dataset", help="mvtec (mvtec_ad) or visa.")] = "mvtec",
    categories: Annotated[str | None, typer.Option(help="Comma-separated categories to check.")] = None,
    checksums: Annotated[bool, typer.Option(help="Also hash every file (slow).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Compare a dataset copy with the manifest: missing / extra files, counts, downscaled images."""
    from evaluation.manifest import check_dataset

    with user_errors():
        subset = [c.strip() for c in categories.split(",") if c.strip()] if categories else None
        report = check_dataset(dataset, root, categories=subset, verify_checksums=checksums)
        if as_json:
            print_json(report.to_dict())
        else:
            console.print(report.summary(), highlight=False)
        if not report.complete:
            raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add ``eval`` and ``data`` to the main app."""
    app.command("eval")(eval_command)
    app.add_typer(data_app, name="data")
