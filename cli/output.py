"""Human tables, machine-readable files and heat-map overlays for ``registry infer``."""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from PIL import Image, ImageDraw
from rich.table import Table

#: The keys of one machine-readable inference record, in order.
RECORD_KEYS = (
    "path",
    "category",
    "route_score",
    "unknown",
    "unknown_score",
    "score_base",
    "score_struct",
    "score_hybrid",
    "threshold",
    "anomalous",
    "error",
)


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def records_table(records: Sequence[Mapping[str, Any]]) -> Table:
    """One row per image: path, routed category, scores, threshold, decision."""
    table = Table(show_lines=False, header_style="bold")
    columns: tuple[str, ...] = ("path", "category", "route", "unknown", "unknown score")
    columns += ("base", "struct", "hybrid", "threshold", "decision")
    for column in columns:
        table.add_column(column, justify="left" if column in {"path", "category", "decision"} else "right")
    for record in records:
        if record.get("error"):
            table.add_row(str(record["path"]), *["-"] * (len(columns) - 2), f"[red]error[/]: {record['error']}")
            continue
        decision = "[bold red]anomalous[/]" if record["anomalous"] else "[green]ok[/]"
        table.add_row(
            str(record["path"]),
            str(record["category"]) + (" [yellow](unknown)[/]" if record["unknown"] else ""),
            _fmt(record["route_score"]),
            _fmt(record["unknown"]),
            _fmt(record.get("unknown_score"), 2),
            _fmt(record["score_base"]),
            _fmt(record["score_struct"]),
            _fmt(record["score_hybrid"]),
            _fmt(record["threshold"]),
            decision,
        )
    return table


def write_records(records: Sequence[Mapping[str, Any]], path: Path) -> None:
    """Write records as JSON lines (``.jsonl``/``.json``) or CSV (``.csv``), atomically."""
    suffix = path.suffix.lower()
    if suffix not in {".jsonl", ".json", ".csv"}:
        msg = f"--out must end in .jsonl, .json or .csv, got {path.name}"
        raise ValueError(msg)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    with temporary.open("w", newline="") as handle:
        if suffix == ".csv":
            writer = csv.DictWriter(handle, fieldnames=list(RECORD_KEYS), extrasaction="ignore")
            writer.writeheader()
            for record in records:
                writer.writerow({key: "" if record.get(key) is None else record.get(key) for key in RECORD_KEYS})
        elif suffix == ".json":
            json.dump(list(records), handle, indent=2)
        else:
            for record in records:
                handle.write(json.dumps(record) + "\n")
    temporary.replace(path)


def overlay(image: np.ndarray, anomaly_map: np.ndarray, label: str, anomalous: bool, vmax: float) -> Image.Image:
    """Heat map (jet, alpha 0.5) over the preprocessed image, with the decision in the corner.

    Args:
        image: (3, H, W) float in [0, 1] (the preprocessed crop the map belongs to).
        anomaly_map: (H, W) anomaly map.
        label: text for the corner (e.g. ``"anomalous 1.23 > 0.98"``).
        anomalous: colours the label red (True) or green.
        vmax: map value shown as the hottest colour (e.g. twice the threshold).
    """
    rgb = np.clip(image.transpose(1, 2, 0), 0, 1)
    normalised = np.clip(anomaly_map / max(vmax, 1e-12), 0, 1)
    heat = colormaps["jet"](normalised)[..., :3]
    blended = (0.5 * rgb + 0.5 * heat) * 255
    picture = Image.fromarray(blended.astype(np.uint8))
    draw = ImageDraw.Draw(picture)
    box = draw.textbbox((6, 6), label)
    draw.rectangle((box[0] - 4, box[1] - 4, box[2] + 4, box[3] + 4), fill=(0, 0, 0))
    draw.text((6, 6), label, fill=(255, 80, 80) if anomalous else (80, 255, 120))
    return picture
