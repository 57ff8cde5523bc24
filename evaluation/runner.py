"""``run_evaluation``: load a dataset, fit what is missing, run the protocols, write the outputs.

This is the function behind ``registry eval``; the CLI only parses options and prints progress.
"""

from __future__ import annotations

import importlib.metadata
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from evaluation.datasets import Dataset, load_dataset
from evaluation.manifest import DATASETS, check_dataset, continual_orders, load_manifest
from evaluation.open_set import evaluate_open_set
from evaluation.protocols import (
    PROTOCOLS,
    Collected,
    MapCache,
    Progress,
    ProgressCallback,
    collect,
    evaluate_continual,
    evaluate_muad,
    evaluate_separate,
    fit_missing,
    image_records,
    normalize_order,
)
from evaluation.report import jsonable, markdown_report, write_csv, write_json, write_markdown, write_records
from evaluation.store import CategoryStore, InMemoryStore, open_registry_store
from evaluation.updates import evaluate_updates
from registry.detector import load_backbone
from structcore.features import build_extractor, new_feature_space
from structcore.model import CategoryModel
from structcore.settings import (
    CONTINUAL_VARIANTS,
    DEFAULT_BACKBONE,
    DEFAULT_BATCH_SIZE,
    DEFAULT_CROP,
    DEFAULT_RESIZE,
    DEFAULT_UPDATE_STEPS,
    FeatureSpaceSettings,
    FitSettings,
)

__all__ = ["EvaluationResult", "library_versions", "run_evaluation"]

_VERSIONED = (
    "structcore-registry",
    "numpy",
    "scipy",
    "scikit-learn",
    "torch",
    "faiss-cpu",
    "faiss-gpu-cu12",
    "pillow",
    "matplotlib",
    "zarr",
    "sqlalchemy",
)


def library_versions() -> dict[str, str]:
    """Python, platform and the installed versions of the libraries that shape the figures."""
    versions = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in _VERSIONED:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


@dataclass
class EvaluationResult:
    """What :func:`run_evaluation` returns.

    Attributes:
        results: everything written to ``results.json`` (NaN as ``float('nan')`` here, ``null`` in the file).
        out: the output folder (``None`` when nothing was written).
        files: files written.
    """

    results: dict[str, Any]
    out: Path | None = None
    files: list[Path] = field(default_factory=list)

    def mean(self, protocol: str) -> dict[str, float]:
        """Mean figures of ``protocol`` (the final step's for ``continual``)."""
        part = self.results["protocols"][protocol]
        mean: dict[str, float] = part["final"]["mean"] if protocol == "continual" else part["mean"]
        return mean

    def per_category(self, protocol: str) -> dict[str, dict[str, Any]]:
        """Per-category figures of ``protocol`` (the final step's for ``continual``)."""
        part = self.results["protocols"][protocol]
        per: dict[str, dict[str, Any]] = (
            part["final"]["per_category"] if protocol == "continual" else part["per_category"]
        )
        return per

    def report(self) -> str:
        """The Markdown report."""
        return markdown_report(jsonable(self.results))


def _manifest_name(dataset: Dataset, requested: str | None) -> str | None:
    if requested is None:
        return None
    if requested != "auto":
        return "mvtec_ad" if requested in {"mvtec", "mvtec-ad"} else requested
    if dataset.layout == "visa":
        return "visa"
    if dataset.layout == "mvtec":
        # MVTec AD only when every category and every defect folder is one of the manifest's
        # (the synthetic data reuses MVTec category names with other defects).
        known = load_manifest("mvtec_ad")["categories"]
        for name, category in dataset.categories.items():
            if name not in known or not set(category.defects) <= set(known[name]["splits"]["test"]):
                return None
        return "mvtec_ad"
    return None


def _steps(
    order: Sequence[str | Sequence[str]] | str | None, dataset: Dataset, manifest: str | None, warnings: list[str]
) -> list[list[str]]:
    if isinstance(order, str):
        if manifest is None:
            msg = f"a named continual order ({order!r}) needs a benchmark dataset (mvtec_ad or visa)"
            raise ValueError(msg)
        orders = continual_orders(manifest)
        if order not in orders:
            msg = f"unknown continual order {order!r} for {manifest}; known: {', '.join(orders)}"
            raise ValueError(msg)
        steps = [[n for n in step if n in dataset.categories] for step in orders[order]]
        absent = [n for step in orders[order] for n in step if n not in dataset.categories]
        if absent:
            warnings.append(
                f"continual order {order!r}: categories absent from the data were skipped: {', '.join(absent)}"
            )
        steps = [step for step in steps if step]
        if not steps:
            msg = f"none of the categories of order {order!r} is in the data"
            raise ValueError(msg)
        return steps
    return normalize_order(order, dataset.names)


def _default_store(
    backbone: str, resize: int, crop: int, model: CategoryModel | None, batch_size: int
) -> InMemoryStore:
    bb = load_backbone(backbone, None)
    space = new_feature_space(bb, resize=resize, crop=crop)
    params = (model or CategoryModel()).get_params()
    return InMemoryStore(
        build_extractor(space, bb, batch_size=batch_size),
        model_factory=lambda: CategoryModel(**params),  # type: ignore[arg-type]
        description={"feature_space": space.describe()},
    )


def _category_facts(collected: Collected, fits: dict[str, Any]) -> dict[str, Any]:
    facts: dict[str, Any] = {}
    for name in collected.names:
        data = collected.runs[name].data
        facts[name] = {
            "n_train": len(data.train),
            "n_test": len(data.test),
            "n_good": data.n_good,
            "n_anomalous": data.n_anomalous,
            "counts": data.counts(),
            "has_masks": data.has_masks,
            "fit": fits.get(name, {}),
            "thresholds": collected.thresholds[name],
            "model": collected.params[name],
            "timings": collected.runs[name].timings,
        }
    return facts


def run_evaluation(
    data: str | Path | Dataset,
    *,
    out: str | Path | None = None,
    protocols: Sequence[str] = ("separate", "muad"),
    store: CategoryStore | None = None,
    registry: str | Path | None = None,
    layout: str = "auto",
    categories: Sequence[str] | None = None,
    order: Sequence[str | Sequence[str]] | str | None = None,
    dataset: str | None = "auto",
    model: CategoryModel | None = None,
    backbone: str = DEFAULT_BACKBONE,
    resize: int = DEFAULT_RESIZE,
    crop: int = DEFAULT_CROP,
    batch_size: int = DEFAULT_BATCH_SIZE,
    refit: bool = False,
    max_train: int | None = None,
    max_test: int | None = None,
    seed: int = 0,
    pixel: bool = True,
    max_pixels: int | None = None,
    plots: bool = True,
    overlays_per_category: int = 4,
    map_memory_bytes: int = 1 << 30,
    check: bool = True,
    progress: ProgressCallback | None = None,
    continual: str = "categories",
    update_steps: int = DEFAULT_UPDATE_STEPS,
    update_refit: bool = True,
) -> EvaluationResult:
    """Evaluate StructCore on a dataset under one or more protocols and write the results.

    Args:
        data: dataset root (any layout of :mod:`evaluation.datasets`) or a loaded :class:`Dataset`.
        out: output folder for ``results.json``, ``per_category.csv``, ``report.md`` and plots
            (created; nothing is written when ``None``).
        protocols: any of ``"separate"``, ``"muad"``, ``"continual"``; they share one pass.
        store: where categories are fitted / found (see :mod:`evaluation.store`).
        registry: path of a registry to use (created if absent) when ``store`` is not given;
            with neither, categories are fitted in memory in a fresh feature space.
        layout: dataset layout (``"auto"``, ``"mvtec"``, ``"visa"``, ``"folder"``).
        categories: categories to evaluate (default: all of the dataset).
        order: continual order: a name from ``data_manifest/protocols.json`` (``"alphabetical"``,
            ``"10-5"``, ``"14-1"``, ``"8-4"``, ``"11-1"``, ...), or a list of categories (one per
            step) or of lists (several per step). Default: alphabetical, one per step. With an
            order, only its categories are evaluated.
        dataset: manifest to check the copy against (``"mvtec_ad"``, ``"visa"``), ``"auto"`` to
            guess from the layout and names, or ``None``.
        model: settings of newly fitted categories (an unfitted :class:`CategoryModel`).
        backbone, resize, crop: feature space of a new registry or of the in-memory store.
        batch_size: images per backbone call.
        refit: fit every category again even when the store holds it.
        max_train, max_test: seeded subsets per category (quick runs; figures are then not
            comparable with published ones, and the results say so).
        seed: seed of those subsets.
        pixel: compute pixel metrics (AUROC, AP, F1-max, AUPRO) where masks exist.
        max_pixels: cap on the pixels of pixel AUROC/AP/F1-max (AUPRO stays exact).
        plots: write plots (needs ``out``).
        overlays_per_category: test images per category in the overlay plots.
        map_memory_bytes: anomaly maps kept in memory before spilling to a temporary file.
        check: compare the copy with the dataset's manifest (counts, downscaling).
        progress: called with a :class:`Progress` for each fitted batch, test batch, metric step.
        continual: the ``continual`` protocol's variant (:data:`structcore.settings.CONTINUAL_VARIANTS`):
            ``"categories"`` added step by step, or ``"update"``: each category fitted on its first
            ``update_steps``-th of train images and grown by updates, scored after each step
            (:func:`evaluation.updates.evaluate_updates`, results under ``"continual-update"``).
            The update variant alone also reports ``separate`` (the full fit on all images).
        update_steps: steps of the update variant.
        update_refit: score a full refit on the same images beside each update.

    Returns:
        An :class:`EvaluationResult` (the figures and the files written).

    Raises:
        evaluation.datasets.DatasetLayoutError: the data folder has the wrong layout.
        ValueError: unknown protocols, categories or order.
        structcore.settings.InvalidSettingError: a model or feature-space setting outside its
            allowed values (a ``ValueError``; checked before any data is read).
    """
    started = time.perf_counter()
    report = progress or (lambda _event: None)
    FitSettings.from_values({**(model or CategoryModel()).get_params(), "batch_size": batch_size}).validate()
    FeatureSpaceSettings(backbone=backbone, resize=resize, crop=crop).validate()
    wanted = list(dict.fromkeys(protocols))
    unknown = [p for p in wanted if p not in PROTOCOLS]
    if unknown or not wanted:
        msg = f"unknown protocols: {', '.join(unknown) or 'none given'}; choose from {', '.join(PROTOCOLS)}"
        raise ValueError(msg)
    if continual not in CONTINUAL_VARIANTS:
        msg = f"unknown continual variant {continual!r}; choose from {', '.join(CONTINUAL_VARIANTS)}"
        raise ValueError(msg)
    update_variant = "continual" in wanted and continual == "update"
    if update_variant:
        wanted = [p for p in wanted if p != "continual"] or ["separate"]
    loaded = data if isinstance(data, Dataset) else load_dataset(data, layout, categories)
    if isinstance(data, Dataset):
        loaded = loaded.select(categories)
    warnings: list[str] = []
    manifest = _manifest_name(loaded, dataset)
    if manifest is not None and manifest not in DATASETS:
        msg = f"no manifest for dataset {manifest!r}; known: {', '.join(DATASETS)}"
        raise ValueError(msg)
    check_result: dict[str, Any] | None = None
    if check and manifest is not None and not loaded.root.is_dir():
        warnings.append(f"dataset check skipped: {loaded.root} is not a folder")
    elif check and manifest is not None:
        known = set(load_manifest(manifest)["categories"])
        checked = check_dataset(manifest, loaded.root, categories=[n for n in loaded.names if n in known])
        check_result = checked.to_dict()
        if checked.downscaled:
            warnings.append("downscaled images: figures are not comparable with published full-resolution ones")
    if max_train is not None or max_test is not None:
        loaded = Dataset(
            loaded.layout,
            loaded.root,
            {n: c.subset(max_test=max_test, max_train=max_train, seed=seed) for n, c in loaded.categories.items()},
        )
        warnings.append(f"subsampled run (max_train={max_train}, max_test={max_test}, seed={seed})")
    steps = _steps(order, loaded, manifest, warnings) if "continual" in wanted else None
    names = [n for step in steps for n in step] if steps is not None else loaded.names

    if store is None:
        store = (
            open_registry_store(
                registry, backbone=backbone, resize=resize, crop=crop, model=model, batch_size=batch_size
            )
            if registry is not None
            else _default_store(backbone, resize, crop, model, batch_size)
        )
    geometry = store.extractor().geometry.input_geometry
    if update_variant and geometry != "squash":  # CategoryModel.updated handles squash only
        msg = (
            f"--continual update measures incremental updates, which a registry with the {geometry} input "
            "geometry does not have yet (registry update refits it); use a squash registry"
        )
        raise ValueError(msg)
    fit_started = time.perf_counter()
    fits = fit_missing(store, loaded, names, report, refit=refit)
    fit_seconds = time.perf_counter() - fit_started

    out_dir = None if out is None else Path(out)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    cache = MapCache(map_memory_bytes, directory=None if out_dir is None else out_dir / ".maps")
    files: list[Path] = []
    try:
        test_started = time.perf_counter()
        collected = collect(loaded, store, names, wanted, steps, report, cache)
        test_seconds = time.perf_counter() - test_started
        metrics_started = time.perf_counter()
        results_by_protocol: dict[str, Any] = {}
        pixel_cache: dict[tuple[Any, ...], dict[str, float]] = {}
        if "separate" in wanted:
            results_by_protocol["separate"] = evaluate_separate(collected, report, pixel, max_pixels, pixel_cache)
        if "muad" in wanted:
            results_by_protocol["muad"] = evaluate_muad(collected, report, pixel, max_pixels, pixel_cache)
        if "continual" in wanted:
            results_by_protocol["continual"] = evaluate_continual(collected, report, pixel, max_pixels, pixel_cache)
        if "open-set" in wanted:
            results_by_protocol["open-set"] = evaluate_open_set(collected)
        if update_variant:
            results_by_protocol["continual-update"] = evaluate_updates(
                loaded, names, store.extractor(), model, update_steps, refit=update_refit, progress=report
            )
        metrics_seconds = time.perf_counter() - metrics_started
        n_test = sum(len(collected.runs[n].data.test) for n in names)
        per_stage = {
            stage: sum(collected.runs[n].timings.get(stage, 0.0) for n in names)
            for stage in ("embed", "score")  # score: routing and scoring in every view (Detector.score_vectors)
        }
        results: dict[str, Any] = {
            "created_at": datetime.now(UTC).isoformat(),
            "config": {
                "data": str(data.root if isinstance(data, Dataset) else data),
                "layout": loaded.layout,
                "dataset": manifest,
                "categories": names,
                "protocols": wanted,
                "continual": continual,
                "update_steps": update_steps if update_variant else None,
                "order": steps,
                "refit": refit,
                "max_train": max_train,
                "max_test": max_test,
                "seed": seed,
                "pixel": pixel,
                "max_pixels": max_pixels,
                "batch_size": batch_size,
                "geometry": {
                    "resize": collected.geometry.resize,
                    "crop": collected.geometry.crop,
                    "input_geometry": collected.geometry.input_geometry,
                },
            },
            "versions": library_versions(),
            "store": store.describe(),
            "dataset_check": check_result,
            "warnings": warnings,
            "categories": _category_facts(collected, fits),
            "protocols": results_by_protocol,
            "timings": {
                "fit_s": fit_seconds,
                "test_s": test_seconds,
                "metrics_s": metrics_seconds,
                "n_test_images": n_test,
                "ms_per_test_image": 1000.0 * test_seconds / max(n_test, 1),
                **{f"{stage}_ms_per_image": 1000.0 * s / max(n_test, 1) for stage, s in per_stage.items()},
                "maps_spilled_to_disk": cache.spilled,
            },
        }
        if out_dir is not None:
            if plots:
                from evaluation.plots import write_plots

                report(Progress("plots"))
                plotted = write_plots(collected, results, out_dir / "plots", overlays_per_category)
                results["plots"] = [str(p.relative_to(out_dir)) for p in plotted]
                files.extend(plotted)
            report(Progress("write"))
            results["timings"]["total_s"] = time.perf_counter() - started
            files.append(write_csv(out_dir / "per_category.csv", results))
            files.append(write_records(out_dir / "records.jsonl", image_records(collected)))
            files.append(write_markdown(out_dir / "report.md", results))
            files.append(write_json(out_dir / "results.json", results))
        else:
            results["timings"]["total_s"] = time.perf_counter() - started
    finally:
        cache.close()
        if out_dir is not None and (out_dir / ".maps").is_dir() and not any((out_dir / ".maps").iterdir()):
            (out_dir / ".maps").rmdir()
    report(Progress("done"))
    return EvaluationResult(results=results, out=out_dir, files=files)
