"""``registry demo``: synthetic product types -> fresh registry -> routed inference -> a table."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from rich.progress import TaskID
from rich.table import Table

from cli.common import console, err_console, images_in, print_json, progress_bar
from cli.paths import check_output_folder
from evaluation.metrics import image_metrics
from evaluation.synthetic import CATEGORY_KINDS, write_dataset
from structcore.progress import Progress

if TYPE_CHECKING:
    from registry.detector import PredictionRecord

DEMO_TRAIN_IMAGES = 16
DEMO_TEST_GOOD = 6
DEMO_TEST_BAD = 6


def run_demo(
    root: Path | None,
    workdir: Path | None,
    n_categories: int,
    maps: Path | None,
    as_json: bool,
    keep: Path | None = None,
    parents: bool = False,
) -> dict[str, Any]:
    """Build the synthetic dataset, fit every category, score every test image routed, report.

    With ``keep``, the data (``keep/data``), the registry (``keep/registry``) and the overlays
    (``keep/overlays``, unless ``maps`` says otherwise) stay there; otherwise everything not
    placed with ``root`` / ``workdir`` / ``maps`` is written to a temporary folder and removed.
    """
    from registry import Registry

    if not 2 <= n_categories <= len(CATEGORY_KINDS):
        msg = f"--categories must be between 2 and {len(CATEGORY_KINDS)}, got {n_categories}"
        raise ValueError(msg)
    if keep is not None:
        check_output_folder(keep, "--keep", parents=parents, empty=True)
        workdir = workdir or keep / "data"
        root = root or keep / "registry"
        maps = maps or keep / "overlays"
    if maps is not None:
        check_output_folder(maps, "--maps", parents=parents)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="structcore-demo-") as temporary:
        data_root = workdir or Path(temporary) / "data"
        registry_root = root or Path(temporary) / "registry"
        kinds = CATEGORY_KINDS[:n_categories]
        note = "" if workdir else " (temporary: removed at the end; --keep DIR keeps it)"
        err_console.print(
            f"writing synthetic dataset ({', '.join(kinds)}) to {data_root}{note}", highlight=False, soft_wrap=True
        )
        folders = write_dataset(
            data_root,
            kinds=kinds,
            n_train=DEMO_TRAIN_IMAGES,
            n_test_good=DEMO_TEST_GOOD,
            n_test_bad=DEMO_TEST_BAD,
            seed=0,
        )
        registry = Registry.init(registry_root)
        with progress_bar() as progress:
            for name, folder in folders.items():
                train = images_in(folder / "train" / "good")
                task = progress.add_task(f"fitting {name}", total=len(train), rate="")

                def on_progress(event: Progress, task: TaskID = task) -> None:
                    if event.stage == "embed":
                        progress.update(task, completed=event.done)

                registry.add_category(name, train, progress=on_progress)
        tests: list[Path] = []
        truth: list[str] = []
        labels: list[bool] = []
        for name, folder in folders.items():
            for path in images_in(folder / "test"):
                tests.append(path)
                truth.append(name)
                labels.append(path.parent.name != "good")
        on_image = None
        written: list[Path] = []
        if maps is not None:
            from cli.output import overlay_names, save_overlay

            targets = overlay_names(tests, maps)  # pill_test_crack_000.png, ...

            def on_image(
                record: PredictionRecord, image: np.ndarray, anomaly_map: np.ndarray, map_threshold: float
            ) -> None:
                written.append(save_overlay(record, image, anomaly_map, map_threshold, targets[record["path"]]))

        with progress_bar(transient=True) as progress:
            task = progress.add_task("routed inference", total=len(tests), rate="")
            records = registry.detector().predict(
                tests, progress=lambda event: progress.update(task, completed=event.done), on_image=on_image
            )
        summary = _summarise(records, truth, np.asarray(labels))
        summary["seconds"] = time.perf_counter() - started
        summary["registry"] = str(registry_root) if root else None
        summary["data"] = str(data_root) if workdir else None
        summary["overlays"] = str(maps) if maps is not None else None
        summary["kept"] = str(keep) if keep is not None else None
        registry.close()
    if as_json:
        print_json(summary)
    else:
        _print_summary(summary)
        _print_kept(summary, len(written))
    return summary


def _print_kept(summary: dict[str, Any], n_overlays: int) -> None:
    """Where the demo left its data, registry and overlays (or that it left nothing)."""
    kept = [
        (summary["data"], "synthetic images (train/good, test/<defect>)"),
        (summary["registry"], f"the registry: `registry list --root {summary['registry']}`"),
        (summary["overlays"], f"{n_overlays} overlay PNGs"),
    ]
    lines = [f"  {where}: {what}" for where, what in kept if where]
    if not lines:
        console.print("nothing kept (temporary folder removed); `registry demo --keep DIR` keeps it all")
        return
    console.print("kept:" if summary["kept"] is None else f"kept in {summary['kept']}:")
    for line in lines:
        console.print(line, highlight=False, soft_wrap=True)


def _summarise(records: list[PredictionRecord], truth: list[str], labels: np.ndarray) -> dict[str, Any]:
    rows = []
    for name in dict.fromkeys(truth):
        rows_of = [i for i, t in enumerate(truth) if t == name]
        routed = [records[i]["category"] for i in rows_of]
        base = np.array([records[i]["score_base"] for i in rows_of])
        hybrid = np.array([records[i]["score_hybrid"] for i in rows_of])
        decided = np.array([bool(records[i]["anomalous"]) for i in rows_of])
        category_labels = labels[rows_of]
        good = category_labels == 0
        rows.append(
            {
                "category": name,
                "test_images": len(rows_of),
                "routing_accuracy": float(np.mean([r == name for r in routed])),
                "auroc_base": image_metrics(category_labels, base)["auroc"],
                "auroc_hybrid": image_metrics(category_labels, hybrid)["auroc"],
                "decision_accuracy": float(np.mean(decided == category_labels)),
                "frr": float(np.mean(decided[good])) if good.any() else float("nan"),
                "recall": float(np.mean(decided[~good])) if (~good).any() else float("nan"),
            }
        )
    means = {
        key: float(np.nanmean([row[key] for row in rows]))
        for key in ("routing_accuracy", "auroc_base", "auroc_hybrid", "decision_accuracy", "frr", "recall")
    }
    return {"categories": rows, "mean": means}


def _print_summary(summary: dict[str, Any]) -> None:
    table = Table(title="StructCore demo: routed inference, category unknown", header_style="bold")
    for column in (
        "category", "test images", "routing acc", "I-AUROC base", "I-AUROC hybrid", "decision acc", "FRR", "recall",
    ):  # fmt: skip
        table.add_column(column, justify="left" if column == "category" else "right")
    for row in summary["categories"]:
        table.add_row(
            row["category"],
            str(row["test_images"]),
            f"{row['routing_accuracy']:.3f}",
            f"{row['auroc_base']:.3f}",
            f"{row['auroc_hybrid']:.3f}",
            f"{row['decision_accuracy']:.3f}",
            f"{row['frr']:.3f}",
            f"{row['recall']:.3f}",
        )
    mean = summary["mean"]
    table.add_row(
        "[bold]mean[/]",
        "",
        f"{mean['routing_accuracy']:.3f}",
        f"{mean['auroc_base']:.3f}",
        f"{mean['auroc_hybrid']:.3f}",
        f"{mean['decision_accuracy']:.3f}",
        f"{mean['frr']:.3f}",
        f"{mean['recall']:.3f}",
    )
    console.print(table)
    console.print(f"done in {summary['seconds']:.0f} s")
