"""Writing evaluation results: ``results.json``, ``per_category.csv`` and ``report.md``."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from evaluation.open_set import open_set_markdown

__all__ = [
    "CSV_COLUMNS",
    "jsonable",
    "markdown_report",
    "write_csv",
    "write_json",
    "write_markdown",
    "write_records",
]

#: Metric columns of ``per_category.csv`` (after ``protocol``, ``step``, ``category``).
CSV_COLUMNS = (
    "n_test",
    "n_good",
    "n_anomalous",
    *(f"image_{m}_{k}" for m in ("auroc", "ap", "f1_max") for k in ("base", "struct", "hybrid")),
    "pixel_auroc",
    "pixel_ap",
    "pixel_f1_max",
    "aupro",
    *(f"frr_{k}" for k in ("base", "struct", "hybrid")),
    *(f"tpr_{k}" for k in ("base", "struct", "hybrid")),
    "recall_at_frr_1",
    "recall_at_frr_5",
    "best_recall_hybrid",
    "efficiency_hybrid",
    "routing_accuracy",
    "unknown_rate",
    "unknown_rate_good",
    "unknown_rate_anomalous",
    "fp_fixed",
    "fn_recovered",
    "fp_introduced",
    "fn_introduced",
)

#: Columns of ``per_category.csv`` at each image's own size and for regions (after :data:`CSV_COLUMNS`).
ORIGINAL_SIZE_COLUMNS = (
    "pixel_auroc_original",
    "pixel_ap_original",
    "pixel_f1_max_original",
    "aupro_original",
    "region_hit_rate",
    "false_regions_per_good",
)

_MAX_FINDINGS = 12


def jsonable(value: Any) -> Any:
    """``value`` with NumPy types, tuples and paths converted; ``nan``/``inf`` become ``None``."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        return jsonable(value.item())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    return value


def write_json(path: Path, results: Mapping[str, Any]) -> Path:
    """Write ``results`` as strict JSON (no NaN)."""
    path.write_text(json.dumps(jsonable(results), indent=2, allow_nan=False) + "\n")
    return path


def write_records(path: Path, records: Iterable[Mapping[str, Any]]) -> Path:
    """Write one JSON object per line (``records.jsonl``: every test image's record per view)."""
    with path.open("w") as handle:
        for record in records:
            handle.write(json.dumps(jsonable(dict(record)), allow_nan=False) + "\n")
    return path


def _csv_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if not math.isfinite(value) else f"{value:.10g}"
    return str(value)


def _rows(results: Mapping[str, Any]) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = []
    protocols: Mapping[str, Any] = results.get("protocols", {})

    def add(protocol: str, step: str, per: Mapping[str, Any], mean: Mapping[str, Any]) -> None:
        for category, metrics in [*per.items(), ("mean", mean)]:
            row = {"protocol": protocol, "step": step, "category": category}
            row.update({column: _csv_value(metrics.get(column)) for column in (*CSV_COLUMNS, *ORIGINAL_SIZE_COLUMNS)})
            rows.append(row)

    for protocol in ("separate", "muad"):
        if protocol in protocols:
            add(protocol, "", protocols[protocol]["per_category"], protocols[protocol]["mean"])
    if "continual" in protocols:
        for step in protocols["continual"]["steps"]:
            add("continual", str(step["step"]), step["per_category"], step["mean"])
    return rows


def write_csv(path: Path, results: Mapping[str, Any]) -> Path:
    """One row per protocol, (continual) step and category, plus a ``mean`` row per table."""
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(
            handle, fieldnames=["protocol", "step", "category", *CSV_COLUMNS, *ORIGINAL_SIZE_COLUMNS]
        )
        writer.writeheader()
        writer.writerows(_rows(results))
    return path


# ------------------------------------------------------------------------------------ markdown
def _pct(value: Any) -> str:
    if value is None or not isinstance(value, int | float) or not math.isfinite(value):
        return "-"
    return f"{100.0 * value:.1f}"


def _triple(metrics: Mapping[str, Any], metric: str) -> str:
    return " / ".join(_pct(metrics.get(f"{metric}_{kind}")) for kind in ("base", "struct", "hybrid"))


def _table(per: Mapping[str, Mapping[str, Any]], mean: Mapping[str, Any], routing: bool) -> list[str]:
    header = [
        "Category",
        "I-AUROC B / S / H",
        "I-AP B / S / H",
        "I-F1 B / S / H",
        "P-AUROC",
        "P-AP",
        "P-F1",
        "AUPRO",
        "FRR B / H",
        "Recall H",
        "Recall @1% / 5% FRR",
        "Efficiency",
    ]
    if routing:
        header.append("Routing")
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for name, metrics in [*per.items(), ("**mean**", mean)]:
        cells = [
            name,
            _triple(metrics, "image_auroc"),
            _triple(metrics, "image_ap"),
            _triple(metrics, "image_f1_max"),
            _pct(metrics.get("pixel_auroc")),
            _pct(metrics.get("pixel_ap")),
            _pct(metrics.get("pixel_f1_max")),
            _pct(metrics.get("aupro")),
            f"{_pct(metrics.get('frr_base'))} / {_pct(metrics.get('frr_hybrid'))}",
            _pct(metrics.get("tpr_hybrid")),
            f"{_pct(metrics.get('recall_at_frr_1'))} / {_pct(metrics.get('recall_at_frr_5'))}",
            _pct(metrics.get("efficiency_hybrid")),
        ]
        if routing:
            cells.append(_pct(metrics.get("routing_accuracy")))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def original_size_markdown(protocols: Mapping[str, Any]) -> list[str]:
    """The section on figures at each image's own size: pixel metrics, regions, recall per defect type."""
    lines: list[str] = []
    for protocol in ("separate", "muad"):
        part = protocols.get(protocol)
        if not part:
            continue
        per, mean = part["per_category"], part["mean"]
        if not lines:
            lines += [
                "## At each image's own size",
                "",
                "Pixel metrics with the maps brought back to each image's original size and the masks read at "
                "that size (not at the model's square); regions: share of ground-truth regions touched by a "
                "predicted region (the map above the category's map threshold), predicted regions per good "
                "image; recall per defect type: share flagged anomalous at the shipped threshold. Values in %.",
            ]
        header = ["Category", "P-AUROC", "P-AP", "AUPRO", "GT regions hit", "Regions / good image", "Recall by defect"]
        lines += ["", f"{protocol}:", ""]
        lines += ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        for name, metrics in [*per.items(), ("**mean**", mean)]:
            per_defect = ", ".join(
                f"{key.removeprefix('defect_recall:')} {_pct(value)}"
                for key, value in metrics.items()
                if key.startswith("defect_recall:")
            )
            false_regions = metrics.get("false_regions_per_good")
            cells = [
                name,
                _pct(metrics.get("pixel_auroc_original")),
                _pct(metrics.get("pixel_ap_original")),
                _pct(metrics.get("aupro_original")),
                _pct(metrics.get("region_hit_rate")),
                f"{false_regions:.2f}" if isinstance(false_regions, float) and math.isfinite(false_regions) else "-",
                per_defect or "-",
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def _matrix_table(matrix: Sequence[Sequence[Any]], columns: Sequence[str], steps: Sequence[Any]) -> list[str]:
    header = ["Step", *columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for t, row in enumerate(matrix):
        added = ", ".join(steps[t]["added"]) if t < len(steps) else ""
        label = f"{t} (+{added})" if len(added) <= 24 else f"{t} (+{len(steps[t]['added'])})"
        lines.append("| " + " | ".join([label, *(_pct(v) for v in row)]) + " |")
    return lines


def _categories(count: int) -> str:
    return f"{count} {'category' if count == 1 else 'categories'}"


def markdown_report(results: Mapping[str, Any]) -> str:
    """The paper-style report: setup, dataset check, one table per protocol (values in %).

    The text holds no square brackets, so it prints unchanged through rich's markup parser.
    """
    config = results.get("config", {})
    lines = ["# StructCore evaluation", ""]
    lines.append(
        f"Dataset: `{config.get('data')}` (layout {config.get('layout')}, "
        f"{_categories(len(results.get('categories', {})))}). Store: {results.get('store', {}).get('kind', '?')}. "
        f"Protocols: {', '.join(config.get('protocols', []))}."
    )
    store = results.get("store", {})
    space = store.get("feature_space") or store
    if space:
        lines.append(
            f"Feature space: backbone {space.get('backbone', '?')}, resize {space.get('resize', '?')}, "
            f"crop {space.get('crop', '?')}."
        )
    lines.append("")
    lines.append(
        "Image metrics are given for the Base (max of the map), Struct (D_struct) and Hybrid scores; "
        "pixel metrics once. FRR: share of test-good images rejected at each category's shipped "
        "threshold (chosen from train-good images only; its rule is in `registry show`); Recall H: share "
        "of defective images flagged there by the hybrid score; Recall @1% / 5% FRR: the best hybrid "
        "recall any threshold reaches at that test-good FRR; Efficiency: Recall H / the best recall at "
        "the shipped FRR. Means are plain means over categories. All values in %."
    )
    check = results.get("dataset_check")
    if check and check.get("findings"):
        lines += ["", "## Dataset check", ""]
        findings = list(check["findings"])
        lines += [f"- {finding}" for finding in findings[:_MAX_FINDINGS]]
        if len(findings) > _MAX_FINDINGS:
            lines.append(f"- ... and {len(findings) - _MAX_FINDINGS} more (see results.json, dataset_check)")
    warnings = results.get("warnings") or []
    if warnings:
        lines += ["", "## Warnings", ""]
        lines += [f"- {w}" for w in warnings]
    protocols = results.get("protocols", {})
    if "separate" in protocols:
        part = protocols["separate"]
        lines += ["", "## Separate (category known)", ""]
        lines += _table(part["per_category"], part["mean"], routing=False)
    if "muad" in protocols:
        part = protocols["muad"]
        routing = part["routing"]
        mean = part["mean"]
        lines += ["", "## MUAD (unified, routed, category unknown)", ""]
        lines += _table(part["per_category"], part["mean"], routing=True)
        lines += [
            "",
            f"Routing accuracy {_pct(routing['accuracy'])} % over images "
            f"({_pct(routing['mean_accuracy'])} % mean over categories); "
            f"flagged unknown: {_pct(routing['unknown_rate'])} % of images "
            f"({_pct(mean.get('unknown_rate_good'))} % of good, {_pct(mean.get('unknown_rate_anomalous'))} % of "
            "anomalous ones, mean over categories).",
        ]
        labels = routing["confusion"]["labels"]
        if len(labels) <= 20:
            lines += ["", "Routing confusion (rows: true category, columns: routed to):", ""]
            header = ["true \\ routed", *labels]
            lines += ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
            for name, row in zip(labels, routing["confusion"]["matrix"], strict=True):
                lines.append("| " + " | ".join([name, *(str(v) for v in row)]) + " |")
    if "continual" in protocols:
        part = protocols["continual"]
        steps = part["steps"]
        lines += ["", "## Continual", ""]
        lines.append("Order: " + " -> ".join("(" + ", ".join(step) + ")" for step in part["order"]))
        lines += ["", "Image AUROC (Hybrid) after each step (rows) per category (columns):", ""]
        lines += _matrix_table(part["matrix"]["image_auroc_hybrid"], part["columns"], steps)
        fm = part["forgetting"]
        final = part["final"]["mean"]
        lines += [
            "",
            f"Final mean: I-AUROC Base / Struct / Hybrid {_triple(final, 'image_auroc')}, "
            f"P-AP {_pct(final.get('pixel_ap'))}, AUPRO {_pct(final.get('aupro'))}, "
            f"routing {_pct(final.get('routing_accuracy'))}.",
            f"Forgetting FM: I-AUROC Hybrid {_pct(fm.get('image_auroc_hybrid'))}, "
            f"Base {_pct(fm.get('image_auroc_base'))}, P-AP {_pct(fm.get('pixel_ap'))}, "
            f"routing {_pct(fm.get('routing_accuracy'))} (percentage points).",
            "",
            "Final step, per category:",
            "",
        ]
        lines += _table(part["final"]["per_category"], final, routing=True)
    if "continual-update" in protocols:
        lines += ["", *update_markdown(protocols["continual-update"])]
    original = original_size_markdown(protocols)
    if original:
        lines += ["", *original]
    if "open-set" in protocols:
        lines += ["", *open_set_markdown(protocols["open-set"])]
    timings = results.get("timings", {})
    if timings:
        lines += ["", "## Timings", ""]
        lines.append(
            f"Total {timings.get('total_s', float('nan')):.1f} s; fit {timings.get('fit_s', 0.0):.1f} s; "
            f"test pass {timings.get('test_s', 0.0):.1f} s "
            f"({timings.get('ms_per_test_image', float('nan')):.1f} ms per test image: embed "
            f"{timings.get('embed_ms_per_image', float('nan')):.1f}, route + score "
            f"{timings.get('score_ms_per_image', float('nan')):.1f}); metrics {timings.get('metrics_s', 0.0):.1f} s."
        )
    plots = results.get("plots") or []
    if plots:
        lines += ["", "## Plots", ""]
        lines += [f"- `{p}`" for p in plots]
    return "\n".join(lines) + "\n"


def update_markdown(part: Mapping[str, Any]) -> list[str]:
    """The ``continual --continual update`` section: per category and step, update against refit."""
    lines = [
        "## Continual (update variant)",
        "",
        f"Each category fitted on the first 1/{part['steps']} of its train images (sorted by name), then grown by "
        "`registry update` one part at a time; after each step the test set is scored"
        + (", beside a full refit on the same images." if part.get("refit") else "."),
        "",
        "| category | step | train images | I-AUROC update | I-AUROC refit | FRR update % | FRR refit % | "
        "update s | refit s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, category in part["per_category"].items():
        for row in category["steps"]:
            refit = row.get("refit") or {}
            lines.append(
                f"| {name} | {row['step']} ({row['mode']}) | {row['n_train']} | "
                f"{_pct(row['update'].get('image_auroc_hybrid'))} | {_pct(refit.get('image_auroc_hybrid'))} | "
                f"{_pct(row['update'].get('frr'))} | {_pct(refit.get('frr'))} | {row['seconds']:.1f} | "
                + (f"{refit['seconds']:.1f} |" if "seconds" in refit else " |")
            )
    worst = part.get("max_abs_delta", {})
    lines += [
        "",
        f"Largest gap update vs refit over all steps: I-AUROC {_pct(worst.get('image_auroc_hybrid'))} points, "
        f"FRR {_pct(worst.get('frr'))} points.",
    ]
    return lines


def write_markdown(path: Path, results: Mapping[str, Any]) -> Path:
    """Write :func:`markdown_report` of ``results`` (made JSON-safe first) to ``path``."""
    path.write_text(markdown_report(jsonable(results)))
    return path
