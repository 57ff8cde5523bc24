"""The ``registry`` command: a thin Typer layer over :mod:`registry` and :mod:`structcore`."""

from __future__ import annotations

import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cli.common import (
    CliState,
    InputError,
    console,
    err_console,
    expand_inputs,
    fail,
    print_json,
    progress_bar,
    resolve_root,
    train_images,
    user_errors,
)
from cli.options import (
    FEATURE_SPACE_DEFAULTS,
    FIT_DEFAULTS,
    BackboneOption,
    BackboneRuntimeOption,
    BatchSizeOption,
    CalibrationOption,
    CoresetRatioOption,
    CropOption,
    DimOption,
    FitSeedOption,
    GeometryOption,
    KnnIndexOption,
    MaxRegionsOption,
    ProjectionSeedOption,
    ResizeOption,
    ScoringOption,
    ThresholdFrrOption,
    ThresholdRuleOption,
    TileMaxSideOption,
    TileOverlapOption,
    WeightsOption,
    feature_space_settings,
    fit_settings,
    max_regions_setting,
    use_backbone_runtime,
)
from cli.output import (
    Column,
    fitted_table,
    geometry_label,
    overlay_names,
    records_table,
    save_mask,
    save_overlay,
    write_records,
)
from registry.catalogue import Catalogue
from registry.errors import SchemaOutdatedError
from structcore.settings import DEFAULT_MAX_REGIONS

if TYPE_CHECKING:
    from collections.abc import Callable

    import numpy as np

    from registry import Registry
    from registry.detector import PredictionRecord
    from structcore.progress import Progress

app = typer.Typer(
    name="registry",
    help="StructCore Registry: one anomaly detector for many product categories.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

RootOption = Annotated[
    Path | None,
    typer.Option("--root", help=r"Registry folder \[env: STRUCTCORE_REGISTRY; default: ./structcore-registry]."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of tables.")]
ParentsOption = Annotated[bool, typer.Option("--parents", help="Create missing parent folders of the output paths.")]


def _package_version() -> str:
    try:
        return version("structcore-registry")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "unknown"


def _version_callback(value: bool) -> None:
    if value:
        console.print(f"registry {_package_version()}")
        raise typer.Exit()


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
    show_version: Annotated[
        bool, typer.Option("--version", callback=_version_callback, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    CliState.debug = debug


def _count(number: int, noun: str, plural: str | None = None) -> str:
    """``1 image``, ``2 images``; ``1 category``, ``2 categories``."""
    return f"{number} {noun if number == 1 else plural or noun + 's'}"


def _catalogue(root: Path | None) -> Catalogue:
    """The read-only catalogue (fast: no model, no SQLAlchemy); an older schema is upgraded first."""
    folder = resolve_root(root)
    try:
        return Catalogue.open(folder)
    except SchemaOutdatedError:
        _open(folder).close()  # Registry.open upgrades the schema, as every other command does
        return Catalogue.open(folder)


def _open(root: Path | None, weights: Path | None = None) -> Registry:
    from registry import Registry as RegistryClass

    return RegistryClass.open(resolve_root(root), weights=weights)


# ----------------------------------------------------------------------------- init
@app.command()
def init(
    root: RootOption = None,
    backbone: BackboneOption = FEATURE_SPACE_DEFAULTS.backbone,
    weights: WeightsOption = None,
    resize: ResizeOption = FEATURE_SPACE_DEFAULTS.resize,
    crop: CropOption = FEATURE_SPACE_DEFAULTS.crop,
    geometry: GeometryOption = FEATURE_SPACE_DEFAULTS.input_geometry,
    tile_max_side: TileMaxSideOption = FEATURE_SPACE_DEFAULTS.tile_max_side,
    tile_overlap: TileOverlapOption = FEATURE_SPACE_DEFAULTS.tile_overlap,
    dim: DimOption = FEATURE_SPACE_DEFAULTS.dim,
    seed: ProjectionSeedOption = FEATURE_SPACE_DEFAULTS.seed,
    as_json: JsonOption = False,
) -> None:
    """Create a registry with a fixed feature space (backbone, geometry, projection W)."""
    from registry import Registry

    with user_errors():
        settings = feature_space_settings(
            backbone=backbone,
            weights=weights,
            resize=resize,
            crop=crop,
            input_geometry=geometry,
            tile_max_side=tile_max_side,
            tile_overlap=tile_overlap,
            dim=dim,
            seed=seed,
        )
        registry = Registry.init(resolve_root(root), **settings.to_dict())
        info = registry.feature_space_info()
        if as_json:
            print_json({"root": str(registry.root), "feature_space": info})
            return
        console.print(f"initialised registry at [bold]{registry.root}[/]")
        console.print(
            f"  backbone {info['backbone']} (weights sha256 {str(info['weights_sha256'])[:12]}), "
            f"layers {info['layers']}, {info['resize']}->{info['crop']} px ({geometry_label(info)}), D={info['dim']}"
        )


# ----------------------------------------------------------------------------- add-category
@app.command("add-category")
def add_category(
    name: Annotated[str, typer.Argument(help="Category name (letters, digits, . _ -).")],
    train: Annotated[Path, typer.Option("--train", help="Folder of good images, or an MVTec/VisA category root.")],
    root: RootOption = None,
    coreset_ratio: CoresetRatioOption = FIT_DEFAULTS.coreset_ratio,
    calibration: CalibrationOption = FIT_DEFAULTS.calibration,
    scoring: ScoringOption = FIT_DEFAULTS.scoring,
    seed: FitSeedOption = FIT_DEFAULTS.seed,
    batch_size: BatchSizeOption = FIT_DEFAULTS.batch_size,
    description: Annotated[str | None, typer.Option(help="Free text stored with the category.")] = None,
    knn_index: KnnIndexOption = FIT_DEFAULTS.index,
    skip_bad: Annotated[
        bool,
        typer.Option("--skip-bad", help="Fit without train images that cannot be read (each one is listed)."),
    ] = False,
    threshold_rule: ThresholdRuleOption = FIT_DEFAULTS.threshold_rule,
    threshold_frr: ThresholdFrrOption = FIT_DEFAULTS.threshold_frr,
    keep_patches: Annotated[
        bool,
        typer.Option(
            "--keep-patches",
            help="Also store the train images' patch vectors (float16, about 2.3 MB per image at 392 px) so "
            "`registry update` grows the category without embedding them again (else its first update refits).",
        ),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Fit a category from good images and append it (other categories are not touched).

    Every train image is checked before any is embedded; unreadable ones are listed together
    (exit 1), or left out and listed with --skip-bad.
    """
    from structcore.model import CategoryModel

    with user_errors():
        settings = fit_settings(
            coreset_ratio=coreset_ratio,
            calibration=calibration,
            scoring=scoring,
            index=knn_index,
            seed=seed,
            batch_size=batch_size,
            threshold_rule=threshold_rule,
            threshold_frr=threshold_frr,
        )
        registry = _open(root)
        images = train_images(train)
        images, skipped = _checked_train_images(images, skip_bad)
        model = CategoryModel(**settings.model_params())
        started = time.perf_counter()
        with progress_bar() as progress:
            task = progress.add_task(f"embedding {name}", total=len(images), rate="")

            def on_progress(event: Progress) -> None:
                if event.stage == "embed":
                    elapsed = time.perf_counter() - started
                    rate = f"{event.done / max(elapsed, 1e-9):.1f} img/s"
                    progress.update(task, completed=event.done, rate=rate)
                elif event.stage != "done":
                    progress.update(task, description=f"{name}: {event.stage}")

            info = registry.add_category(
                name,
                images,
                model,
                on_progress,
                batch_size=settings.batch_size,
                description=description,
                keep_patches=keep_patches,
            )
        elapsed = time.perf_counter() - started
        if as_json:
            print_json({**info.to_dict(), "elapsed_seconds": elapsed, "skipped": skipped})
            return
        thresholds = info.thresholds
        console.print(
            f"added [bold]{name}[/] version {info.version}: {info.n_train_images} train images"
            f"{f' ({len(skipped)} skipped)' if skipped else ''}, "
            f"bank {info.bank_size} x {registry.feature_space.dim}, {info.n_prototypes} prototypes, "
            f"calibration {info.calibration_mode}, scoring {info.scoring}"
        )
        console.print(
            f"  thresholds ({info.threshold_summary}): base {thresholds['base']:.4f}, struct "
            f"{thresholds['struct']:.4f}, hybrid {thresholds['hybrid']:.4f}; lambda "
            f"{float(info.calibration['lambda']):.4f}; took {elapsed:.1f} s",
            highlight=False,
        )
        _print_outliers(info.threshold_rule)


def _checked_train_images(images: list[Path], skip_bad: bool) -> tuple[list[Path], list[dict[str, str]]]:
    """``images`` without the unreadable ones (``--skip-bad``), and those left out with the reason.

    Without ``skip_bad`` every unreadable image is listed on stderr, one line each, and the
    command stops (exit 1) before anything is embedded.
    """
    from structcore.image_files import ImageReadError
    from structcore.preprocess import check_image_file

    bad: list[ImageReadError] = []
    with progress_bar(transient=True) as progress:
        task = progress.add_task("checking train images", total=len(images), rate="", visible=len(images) > 50)
        for done, path in enumerate(images, start=1):
            try:
                check_image_file(path)
            except ImageReadError as problem:
                bad.append(problem)
            progress.update(task, completed=done)
    if not bad:
        return images, []
    label = "skipped" if skip_bad else "bad train image"
    for item in bad:
        err_console.print(f"[yellow]{label}[/]: {item}", highlight=False, soft_wrap=True)
    if not skip_bad:
        raise fail(
            f"{len(bad)} of {_count(len(images), 'train image')} cannot be read (listed above); fix or remove "
            "them, or pass --skip-bad to fit without them"
        )
    bad_paths = {item.path for item in bad}
    kept = [path for path in images if str(path) not in bad_paths]
    if not kept:
        raise InputError(f"none of the {_count(len(images), 'train image')} can be read")
    err_console.print(f"fitting on {len(kept)} of {len(images)} train images ({len(bad)} skipped)", highlight=False)
    return kept, [{"path": item.path, "reason": item.reason} for item in bad]


# ----------------------------------------------------------------------------- list / show / remove
@app.command("list")
def list_categories(root: RootOption = None, as_json: JsonOption = False) -> None:
    """List the categories with their current version."""
    with user_errors():
        catalogue = _catalogue(root)
        categories = catalogue.categories()
        if as_json:
            print_json([category.to_dict() for category in categories])
            return
        if not categories:
            console.print(f"no categories in {catalogue.root}; add one with `registry add-category NAME --train DIR`")
            return
        columns = [
            Column("category", no_wrap=False),
            Column("current", "right"),
            Column("versions", "right", drop=2),
            Column("images", "right"),
            Column("bank", "right"),
            Column("calibration", drop=1),
            Column("threshold", "right"),
        ]
        rows = []
        for category in categories:
            current = category.current
            rows.append(
                [
                    category.name,
                    str(category.current_version),
                    str(len(category.versions)),
                    str(current.n_train_images if current else "-"),
                    str(current.bank_size if current else "-"),
                    current.calibration_mode if current else "-",
                    f"{current.thresholds['hybrid']:.4f}" if current else "-",
                ]
            )
        console.print(fitted_table(columns, rows, console))
        console.print(
            f"{_count(len(categories), 'category', 'categories')}; "
            "threshold: the hybrid score above which an image is anomalous",
            highlight=False,
        )


@app.command()
def show(
    name: Annotated[str, typer.Argument(help="Category name.")],
    root: RootOption = None,
    as_json: JsonOption = False,
    images: Annotated[
        bool, typer.Option("--images", help="List the train images of a version: name, content hash, source.")
    ] = False,
    version: Annotated[
        int | None, typer.Option("--version", help="With --images: this version (default current).")
    ] = None,
) -> None:
    """Versions, sizes, calibration and thresholds of one category (--images: its train images)."""
    if images:
        from cli.update import images_command

        images_command(name, root, as_json, version)
        return
    with user_errors():
        category = _catalogue(root).show(name)
        if as_json:
            print_json(category.to_dict())
            return
        console.print(f"[bold]{category.name}[/]" + (f": {category.description}" if category.description else ""))
        columns = [
            Column("version", "right"),
            Column("current"),
            Column("created"),
            Column("images", "right"),
            Column("bank", "right"),
            Column("ratio", "right", drop=2),
            Column("mode", drop=1),
            Column("scoring", drop=1),
            Column("lambda", "right", drop=3),
            Column("threshold", "right"),
            Column("threshold rule", drop=2, no_wrap=False),
            Column("base / struct thr.", "right", drop=4),
        ]
        rows = []
        for item in category.versions:
            thresholds = item.thresholds
            rows.append(
                [
                    str(item.version),
                    "*" if item.is_current else "",
                    item.created_at.strftime("%Y-%m-%d %H:%M"),
                    str(item.n_train_images),
                    str(item.bank_size),
                    f"{item.coreset_ratio:g}",
                    item.calibration_mode,
                    item.scoring,
                    f"{float(item.calibration['lambda']):.4f}",
                    f"{thresholds['hybrid']:.4f}",
                    item.threshold_summary,
                    f"{thresholds['base']:.3f} / {thresholds['struct']:.3f}",
                ]
            )
        console.print(fitted_table(columns, rows, console))
        current = next((item for item in category.versions if item.is_current), None)
        if current is not None:
            thresholds = current.thresholds
            console.print(
                f"current version {current.version}: thresholds base {thresholds['base']:.4f}, struct "
                f"{thresholds['struct']:.4f}, hybrid {thresholds['hybrid']:.4f}; lambda "
                f"{float(current.calibration['lambda']):.4f} ({current.scoring} scoring); "
                f"created {current.created_at:%Y-%m-%d %H:%M:%S}; threshold rule: {current.threshold_summary}",
                highlight=False,
            )
            _print_outliers(current.threshold_rule)


def _print_outliers(rule: dict[str, object]) -> None:
    """The train images the threshold rule found outlying among their own category (``registry show``)."""
    outliers = rule.get("outliers")
    if not isinstance(outliers, list) or not outliers:
        return
    console.print(
        f"{_count(len(outliers), 'train image')} look anomalous among this category's own train images "
        "(leave-one-out score far above the median; check them for defects; * = left out of the threshold):",
        highlight=False,
    )
    for outlier in sorted(outliers, key=lambda o: -float(o.get("score", 0.0)))[:20]:
        mark = "*" if outlier.get("left_out") is True else " "
        console.print(
            f" {mark}{float(outlier.get('score', 0.0)):.4f}  {outlier.get('path', outlier.get('index'))}",
            highlight=False,
        )
    if len(outliers) > 20:
        console.print(f"  ... and {len(outliers) - 20} more (`registry show --json`)", highlight=False)


@app.command()
def remove(
    name: Annotated[str, typer.Argument(help="Category name.")],
    root: RootOption = None,
    version_number: Annotated[int | None, typer.Option("--version", help="Remove only this version.")] = None,
) -> None:
    """Remove a category (all versions) or one version of it."""
    with user_errors():
        removed = _open(root).remove(name, version_number)
        console.print(f"removed {name} version(s) {', '.join(str(v.version) for v in removed)}")


@app.command("set-current")
def set_current(
    name: Annotated[str, typer.Argument(help="Category name.")],
    version_number: Annotated[int, typer.Argument(help="Version to make current.")],
    root: RootOption = None,
) -> None:
    """Make an older (or newer) version of a category the one used for inference."""
    with user_errors():
        info = _open(root).set_current(name, version_number)
        console.print(f"{name}: current version is now {info.version}")


# ----------------------------------------------------------------------------- verify / gc / upgrade
@app.command()
def verify(
    root: RootOption = None,
    repair: Annotated[bool, typer.Option("--repair", help="Remove orphan stores and temporary files.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Check the database and every stored array (checksums); exit 1 when something is wrong."""
    with user_errors():
        report = _open(root).verify(repair=repair)
        if as_json:
            print_json(
                {
                    "ok": report.ok,
                    "checked_versions": report.checked_versions,
                    "repaired": report.repaired,
                    "problems": [problem.__dict__ for problem in report.problems],
                }
            )
        else:
            for removed in report.repaired:
                console.print(f"removed {removed}")
            for problem in report.problems:
                hint = " (removed by --repair)" if problem.removable else ""
                console.print(f"[red]{problem.kind}[/]: {problem.message}{hint}")
            state = "[green]ok[/]" if report.ok else "[red]problems found[/]"
            console.print(f"{state}: {report.checked_versions} category versions checked")
        if not report.ok:
            raise typer.Exit(1)


@app.command()
def gc(root: RootOption = None) -> None:
    """Remove orphan stores and leftovers of interrupted writes."""
    with user_errors():
        report = _open(root).gc()
        for removed in report.removed:
            console.print(f"removed {removed}")
        console.print(f"{len(report.removed)} leftovers removed")


@app.command()
def upgrade(root: RootOption = None) -> None:
    """Upgrade a registry made by an older version of this tool to the current schema."""
    from registry import Registry

    with user_errors():
        before, after = Registry.upgrade(resolve_root(root))
        console.print(f"schema {before or 'none'} -> {after}")


# ----------------------------------------------------------------------------- infer
@app.command()
def infer(
    paths: Annotated[list[str], typer.Argument(help="Image files, folders (recursive) or globs.")],
    root: RootOption = None,
    category: Annotated[str | None, typer.Option(help="Score against this category instead of routing.")] = None,
    as_json: JsonOption = False,
    out: Annotated[
        Path | None, typer.Option(help="Also write results to a .jsonl, .json or .csv file (its folder must exist).")
    ] = None,
    maps: Annotated[
        Path | None,
        typer.Option(help="Write an overlay PNG per image into this folder (created; its parent must exist)."),
    ] = None,
    masks: Annotated[
        Path | None,
        typer.Option(
            help="Write a binary PNG mask per image (its own size; 255 above the category's map threshold) "
            "into this folder, named like the overlays (created; its parent must exist)."
        ),
    ] = None,
    max_regions: MaxRegionsOption = DEFAULT_MAX_REGIONS,
    parents: ParentsOption = False,
    batch_size: BatchSizeOption = FIT_DEFAULTS.batch_size,
    backbone_runtime: BackboneRuntimeOption = None,
    ray: Annotated[
        str | None,
        typer.Option("--ray", help="Run on Ray: a cluster address, 'auto' or 'local' (needs the ray extra)."),
    ] = None,
) -> None:
    """Score images: routed to their category (unknown to the caller) by default.

    Exit code 1 when any input could not be read (the others are still scored).
    """
    from cli.paths import check_output_file, check_output_folder

    with user_errors():
        batch_size = fit_settings(batch_size=batch_size).batch_size
        max_regions = max_regions_setting(max_regions)
        use_backbone_runtime(backbone_runtime)
        if ray is not None and (maps is not None or masks is not None):
            option = "--maps" if maps is not None else "--masks"
            raise InputError(
                f"{option} is not available with --ray: the Ray workers send back records, not anomaly maps; "
                "run without --ray to write overlays or masks"
            )
        if out is not None:
            check_output_file(out, "--out", parents=parents, suffixes=(".jsonl", ".json", ".csv"))
        if maps is not None:
            check_output_folder(maps, "--maps", parents=parents)
        if masks is not None:
            check_output_folder(masks, "--masks", parents=parents)
        registry = _open(root)
        sources = expand_inputs(paths)
        if not sources:
            raise InputError(f"no images found in {' '.join(paths)}")
        overlay_files = overlay_names(sources, maps) if maps is not None else {}
        mask_files = overlay_names(sources, masks) if masks is not None else {}
        written: dict[str, str] = {}
        masked: dict[str, str] = {}
        sizes: dict[str, tuple[int, int]] = {}
        on_image = None
        if maps is not None:
            from structcore.regions import boxes_on_model_map

            def on_image(
                record: PredictionRecord, image: np.ndarray, anomaly_map: np.ndarray, map_threshold: float
            ) -> None:
                target = overlay_files[record["path"]]
                size, geometry = sizes.get(record["path"]), detector.extractor.geometry
                regions = record["regions"] or []
                shape = (int(anomaly_map.shape[0]), int(anomaly_map.shape[1])) if geometry.masks_content else None
                boxes = boxes_on_model_map(regions, size, geometry.resize, geometry.crop, shape) if size else []
                written[record["path"]] = str(save_overlay(record, image, anomaly_map, map_threshold, target, boxes))

        def on_full_map(record: PredictionRecord, full_map: np.ndarray, map_threshold: float) -> None:
            sizes[record["path"]] = (int(full_map.shape[1]), int(full_map.shape[0]))
            if masks is not None:
                masked[record["path"]] = str(save_mask(full_map, map_threshold, mask_files[record["path"]]))

        started = time.perf_counter()
        with progress_bar(transient=True) as progress:
            task = progress.add_task("scoring", total=len(sources), rate="", visible=len(sources) > 4)

            def on_progress(event: Progress) -> None:
                elapsed = time.perf_counter() - started
                progress.update(task, completed=event.done, rate=f"{event.done / max(elapsed, 1e-9):.1f} img/s")

            if ray is None:
                detector = registry.detector(None if category is None else [category]).with_max_regions(max_regions)
                predicted = detector.predict(
                    sources,
                    category,
                    batch_size=batch_size,
                    progress=on_progress,
                    on_image=on_image,
                    on_full_map=on_full_map if (maps is not None or masks is not None) else None,
                )
            else:
                predicted = _infer_on_ray(registry.root, sources, category, ray, batch_size, on_progress, max_regions)
        records = [{**record, "overlay": written.get(record["path"])} for record in predicted]
        if masks is not None:
            records = [{**record, "mask": masked.get(str(record["path"]))} for record in records]
        if out is not None:
            write_records(records, out)
        failed = [record for record in records if record["error"]]
        if as_json:
            print_json(records)
        else:
            console.print(records_table(records, console))
        anomalous = sum(bool(record["anomalous"]) for record in records)
        unknown = sum(bool(record["unknown"]) for record in records)
        elapsed = time.perf_counter() - started
        err_console.print(
            f"{_count(len(records), 'image')} in {elapsed:.1f} s: {anomalous} anomalous, {unknown} unknown, "
            f"{len(failed)} failed"
            + (f"; overlays in {maps}" if maps is not None else "")
            + (f"; masks in {masks}" if masks is not None else "")
            + (f"; results in {out}" if out is not None else ""),
            highlight=False,
            soft_wrap=True,
        )
        if unknown:
            err_console.print(
                f"{unknown} of {len(records)} images look like no registered product (unknown_score > 1); "
                "if they show a new product, register it with `registry add-category NAME --train DIR`",
                highlight=False,
            )
        for record in failed:
            err_console.print(f"[red]failed[/]: {record['error']}", highlight=False, soft_wrap=True)
        if failed:
            raise typer.Exit(1)


def _infer_on_ray(
    root: Path,
    sources: list[Path],
    category: str | None,
    address: str,
    batch_size: int,
    progress: Callable[[Progress], None],
    max_regions: int,
) -> list[PredictionRecord]:
    """``registry infer --ray``: the records of :func:`registry.distributed.distributed_infer`, in input order."""
    from registry.distributed import distributed_infer

    return distributed_infer(
        root, sources, category, address, None, batch_size=batch_size, progress=progress, max_regions=max_regions
    )


# ----------------------------------------------------------------------------- export / import
@app.command()
def export(
    names: Annotated[list[str], typer.Argument(help="Categories to export.")],
    out: Annotated[
        Path,
        typer.Option("--out", help="Bundle file to write (.h5), or the folder to create for --format onnx|openvino."),
    ],
    root: RootOption = None,
    parents: ParentsOption = False,
    export_format: Annotated[
        str,
        typer.Option(
            "--format",
            help="h5: one checked bundle for `registry import` (default); onnx / openvino: a folder that "
            "`registry-runtime infer` scores without torch (pip install ./runtime[onnx] or [openvino]).",
        ),
    ] = "h5",
) -> None:
    """Write categories (current versions) and the feature space to one checked HDF5 bundle or a deployable folder."""
    from cli.paths import check_output_file

    with user_errors():
        if export_format not in ("h5", "onnx", "openvino"):
            raise InputError(f"--format must be h5, onnx or openvino, got {export_format!r}")
        if export_format != "h5":
            from registry.deploy import export_deployment

            if parents:
                out.parent.mkdir(parents=True, exist_ok=True)
            elif not out.parent.is_dir():
                raise InputError(f"--out {out}: its parent folder does not exist (add --parents to create it)")
            folder = export_deployment(_open(root), names, out, export_format)
            size = sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())
            console.print(
                f"exported {', '.join(names)} to {folder}/ ({export_format}, {size / 1e6:.1f} MB); "
                f"score with: registry-runtime infer {folder} IMAGES... --out results.jsonl"
            )
            return
        check_output_file(out, "--out", parents=parents)
        path = _open(root).export(names, out)
        console.print(f"exported {', '.join(names)} to {path} ({path.stat().st_size / 1e6:.1f} MB)")


@app.command("import")
def import_bundle(
    bundle: Annotated[Path, typer.Argument(help="Bundle file written by `registry export`.")],
    root: RootOption = None,
    rename: Annotated[list[str] | None, typer.Option(help="OLD=NEW: import a category under another name.")] = None,
    replace: Annotated[bool, typer.Option(help="Import over existing categories (as a new version).")] = False,
) -> None:
    """Import a bundle: every array is checked before anything is written."""
    from registry import Registry
    from registry.errors import NotARegistryError

    with user_errors():
        mapping: dict[str, str] = {}
        for item in rename or []:
            old, sep, new = item.partition("=")
            if not sep or not old or not new:
                raise InputError(f"--rename expects OLD=NEW, got {item!r}")
            mapping[old] = new
        target = resolve_root(root)
        try:
            registry = Registry.open(target)
        except NotARegistryError:
            registry = Registry.init_from_bundle(target, bundle)
        imported = registry.import_(bundle, rename=mapping, replace=replace)
        for info in imported:
            console.print(f"imported {info.category} as version {info.version} (bank {info.bank_size})")


# ----------------------------------------------------------------------------- demo
@app.command()
def demo(
    root: Annotated[
        Path | None, typer.Option("--root", help="Registry folder for the demo [default: a temporary folder].")
    ] = None,
    workdir: Annotated[Path | None, typer.Option(help="Where to write the synthetic dataset [default: temp].")] = None,
    categories: Annotated[int, typer.Option(help="Number of synthetic product types (2-6).")] = 5,
    maps: Annotated[Path | None, typer.Option(help="Write overlays of the test images into this folder.")] = None,
    keep: Annotated[
        Path | None,
        typer.Option(help="Keep everything in this new (or empty) folder: data/, registry/, overlays/."),
    ] = None,
    parents: ParentsOption = False,
    as_json: JsonOption = False,
) -> None:
    """Fit synthetic product categories into a fresh registry and run routed inference on their tests."""
    from cli.demo import run_demo

    with user_errors():
        run_demo(
            root=root,
            workdir=workdir,
            n_categories=categories,
            maps=maps,
            as_json=as_json,
            keep=keep,
            parents=parents,
        )


def _register_extensions() -> None:
    """Commands that live in their own modules (evaluation, distributed fitting)."""
    from cli.bench import register as register_bench
    from cli.evaluate import register as register_evaluation
    from cli.serve import register as register_serve
    from cli.threshold import register as register_threshold
    from cli.update import register as register_update

    register_evaluation(app)
    register_bench(app)
    register_serve(app)
    register_threshold(app)
    register_update(app)
    try:
        from cli.distributed import register
    except ImportError:  # pragma: no cover - module not present in this build
        return
    register(app)


_register_extensions()


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
