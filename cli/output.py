"""Human tables, machine-readable files and heat-map overlays for ``registry infer``."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console, JustifyMethod
from rich.measure import Measurement
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
    "overlay",
)


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


@dataclass(frozen=True)
class Column:
    """A column of a terminal table; ``drop`` > 0 columns are left out (highest first) when it is too wide."""

    header: str
    justify: JustifyMethod = "left"
    drop: int = 0
    no_wrap: bool = True


def fitted_table(
    columns: Sequence[Column],
    rows: Sequence[Sequence[str]],
    console: Console,
    *,
    caption: str | None = None,
    box_style: box.Box = box.SIMPLE_HEAD,
) -> Table:
    """A table of ``rows`` that fits ``console.width``: optional columns are dropped until it fits.

    Columns with ``drop == 0`` are always kept (they fold rather than being cut to "...").
    """
    keep = list(range(len(columns)))
    fold_width = max(16, console.width * 2 // 5)  # a long path folds rather than pushing columns out
    while True:
        table = Table(header_style="bold", box=box_style, caption=caption, caption_justify="left", pad_edge=False)
        for index in keep:
            column = columns[index]
            table.add_column(
                column.header,
                justify=column.justify,
                no_wrap=column.no_wrap,
                overflow="fold",
                max_width=None if column.no_wrap else fold_width,
            )
        for row in rows:
            table.add_row(*(row[index] for index in keep))
        width = Measurement.get(console, console.options.update_width(100_000), table).maximum
        optional = [index for index in keep if columns[index].drop > 0]
        if width <= console.width or not optional:
            return table
        keep.remove(max(optional, key=lambda index: (columns[index].drop, index)))


def common_folder(paths: Sequence[str | Path]) -> Path | None:
    """The deepest folder holding every path (``None`` for no paths or paths on different roots)."""
    folders = [str(Path(path).absolute().parent) for path in paths]
    if not folders:
        return None
    try:
        return Path(os.path.commonpath(folders))
    except ValueError:  # relative and absolute mixed, or different drives
        return None


def short_path(path: str | Path, folder: Path | None) -> str:
    """``path`` relative to ``folder`` when it lies inside it, else as given."""
    if folder is None:
        return str(path)
    try:
        return str(Path(path).absolute().relative_to(folder))
    except ValueError:
        return str(path)


def records_table(records: Sequence[Mapping[str, Any]], console: Console) -> Table:
    """One row per image: path (relative to the inputs' common folder), category, scores, decision.

    Fits the console: on a narrow terminal the route / base / struct scores are left out (all
    fields stay in ``--json`` and ``--out``).
    """
    scored = [str(record["path"]) for record in records if not record.get("error")]
    folder = common_folder(scored or [str(record["path"]) for record in records])
    columns = [
        Column("path", no_wrap=False),
        Column("category", no_wrap=False),
        Column("route", "right", drop=2),
        Column("base", "right", drop=3),
        Column("struct", "right", drop=3),
        Column("hybrid", "right"),
        Column("threshold", "right", drop=1),
        Column("decision"),
    ]
    rows = []
    for record in records:
        path = short_path(str(record["path"]), folder)
        if record.get("error"):
            rows.append([path, "-", "-", "-", "-", "-", "-", "[red]error[/]"])
            continue
        rows.append(
            [
                path,
                str(record["category"]) + (" [yellow](unknown)[/]" if record["unknown"] else ""),
                _fmt(record["route_score"]),
                _fmt(record["score_base"]),
                _fmt(record["score_struct"]),
                _fmt(record["score_hybrid"]),
                _fmt(record["threshold"]),
                "[bold red]anomalous[/]" if record["anomalous"] else "[green]ok[/]",
            ]
        )
    caption = f"paths relative to {folder}; every field: --json or --out" if folder is not None else None
    return fitted_table(columns, rows, console, caption=caption)


def write_records(records: Sequence[Mapping[str, Any]], path: Path) -> None:
    """Write records as JSON lines (``.jsonl``/``.json``) or CSV (``.csv``), atomically.

    The folder must exist (``registry infer`` checks ``--out`` before it scores anything).
    """
    suffix = path.suffix.lower()
    if suffix not in {".jsonl", ".json", ".csv"}:
        msg = f"--out must end in .jsonl, .json or .csv, got {path.name}"
        raise ValueError(msg)
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


def overlay_names(sources: Sequence[str | Path], folder: Path) -> dict[str, Path]:
    """A unique, readable overlay file in ``folder`` for each source (keyed by ``str(source)``).

    The name is the source's path relative to the sources' common folder with ``/`` turned into
    ``_`` (``test/broken_large/000.png`` -> ``broken_large_000.png``), so the defect folder of
    each picture stays visible; a name that is still taken gets ``_2``, ``_3``, ...
    """
    common = common_folder(sources)
    names: dict[str, Path] = {}
    used: set[str] = set()
    stems = [Path(source).with_suffix("") for source in sources]
    for source, stem in zip(sources, stems, strict=True):
        relative = Path(short_path(stem, common)) if common is not None else Path(stem.name)
        parts = [part for part in relative.parts if part not in {"", ".", "..", "/"}]
        if len(parts) == 1 and common is not None and common.name:
            parts = [common.name, *parts]
        base = "_".join(parts) or "image"
        if stems.count(stem) > 1:  # 000.png and 000.jpg in one folder
            base = f"{base}_{Path(source).suffix.lstrip('.')}"
        name, counter = base, 1
        while name in used:
            counter += 1
            name = f"{base}_{counter}"
        used.add(name)
        names[str(source)] = folder / f"{name}.png"
    return names


def overlay_title(record: Mapping[str, Any]) -> str:
    """The corner text of an overlay: category, decision, hybrid score against its threshold."""
    decision = "ANOMALOUS" if record["anomalous"] else "ok"
    relation = ">" if record["anomalous"] else "<="
    unknown = " (unknown product?)" if record.get("unknown") else ""
    return (
        f"{record['category']}{unknown}: {decision}\n"
        f"hybrid {float(record['score_hybrid']):.3f} {relation} {float(record['threshold'] or 0.0):.3f}"
    )


def save_overlay(record: Mapping[str, Any], image: Any, anomaly_map: Any, map_threshold: float, path: Path) -> Path:
    """Render the overlay of one scored image (see ``render_overlay``) and save it as PNG."""
    from evaluation.plots import render_overlay

    picture = render_overlay(
        image, anomaly_map, threshold=map_threshold, title=overlay_title(record), anomalous=bool(record["anomalous"])
    )
    picture.save(path)
    return path
