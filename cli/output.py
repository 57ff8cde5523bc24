"""Human tables, machine-readable files and heat-map overlays for ``registry infer``."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console, JustifyMethod
from rich.text import Text
from structcore_runtime.records import RECORD_FIELDS

#: The keys of one machine-readable inference record, in order (the runtime's records have the same).
RECORD_KEYS = RECORD_FIELDS
#: CSV columns: the record's keys with ``regions`` as its count and its largest region (JSON).
CSV_KEYS = (*RECORD_KEYS[:-1], "regions_count", "largest_region")


#: Space between two table columns.
TABLE_GAP = "   "


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


def _cell(value: str) -> Text:
    """A cell's text: rich markup (``[red]error[/]``) is parsed only where a cell may hold some."""
    return Text.from_markup(value) if "[" in value else Text(value)


def _fold(text: Text, width: int) -> list[Text]:
    """``text`` cut into lines of at most ``width`` cells (a long path folds rather than being cut)."""
    if text.cell_len <= width:
        return [text]
    return list(text.divide(range(width, len(text), width)))


def fitted_table(
    columns: Sequence[Column],
    rows: Sequence[Sequence[str]],
    console: Console,
    *,
    caption: str | None = None,
) -> Text:
    """A table of ``rows`` (cells may hold rich markup) that fits ``console.width``.

    Optional columns (``drop > 0``, highest first) are left out until the table fits; the
    others fold rather than being cut to "...". Rendered as plain lines with a bold header and
    a rule under it, in time linear in the number of cells: a rich ``Table`` measures every
    cell several times, which takes most of a second for ``registry list`` on 1,000 categories.
    """
    cells = [[_cell(value) for value in row] for row in rows]
    natural = [
        max([len(column.header), *(row[index].cell_len for row in cells)]) for index, column in enumerate(columns)
    ]
    fold_width = max(16, console.width * 2 // 5)

    def widths(keep: Sequence[int]) -> list[int]:
        return [natural[i] if columns[i].no_wrap else min(natural[i], fold_width) for i in keep]

    def total(column_widths: Sequence[int]) -> int:
        return sum(column_widths) + len(TABLE_GAP) * (len(column_widths) - 1) + 2

    keep = list(range(len(columns)))
    while total(widths(keep)) > console.width:
        optional = [index for index in keep if columns[index].drop > 0]
        if not optional:
            break
        keep.remove(max(optional, key=lambda index: (columns[index].drop, index)))
    column_widths = widths(keep)
    excess = total(column_widths) - console.width
    for position, index in enumerate(keep):  # still too wide: narrow the folding columns
        if excess <= 0:
            break
        if not columns[index].no_wrap:
            cut = min(excess, column_widths[position] - 8)
            if cut > 0:
                column_widths[position] -= cut
                excess -= cut
    justify = [columns[index].justify for index in keep]

    def line(pieces: Sequence[Text]) -> Text:
        padded = []
        for piece, width, side in zip(pieces, column_widths, justify, strict=True):
            space = " " * max(0, width - piece.cell_len)
            padded.append(Text(space) + piece if side == "right" else piece + space)
        return Text(" ") + Text(TABLE_GAP).join(padded) + Text(" ")

    header = line([Text(columns[index].header) for index in keep])
    header.stylize("bold")
    width = total(column_widths)
    edge = Text(" " * width)  # the blank top and bottom edges of rich's SIMPLE_HEAD box, kept for readers
    lines = [edge, header, Text(" " + "\u2500" * (width - 2) + " ")]
    for row in cells:
        folded = [_fold(row[index], width) for index, width in zip(keep, column_widths, strict=True)]
        for k in range(max(len(parts) for parts in folded)):
            lines.append(line([parts[k] if k < len(parts) else Text("") for parts in folded]))
    lines.append(edge)
    if caption:
        lines.append(Text(caption))
    table = Text("\n").join(lines)
    table.no_wrap = True
    return table


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


def records_table(records: Sequence[Mapping[str, Any]], console: Console) -> Text:
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
            writer = csv.DictWriter(handle, fieldnames=list(CSV_KEYS), extrasaction="ignore")
            writer.writeheader()
            for record in records:
                writer.writerow(csv_row(record))
        elif suffix == ".json":
            json.dump(list(records), handle, indent=2)
        else:
            for record in records:
                handle.write(json.dumps(record) + "\n")
    temporary.replace(path)


def csv_row(record: Mapping[str, Any]) -> dict[str, Any]:
    """One CSV row: the scalar fields, the number of regions and the largest one as compact JSON."""
    row = {key: "" if record.get(key) is None else record.get(key) for key in RECORD_KEYS[:-1]}
    regions = record.get("regions")
    row["regions_count"] = "" if regions is None else len(regions)
    row["largest_region"] = json.dumps(regions[0], separators=(",", ":")) if regions else ""
    return row


def save_mask(full_map: Any, map_threshold: float, path: Path) -> Path:
    """Save the binary mask (0 / 255, the image's own size) of the map's pixels above ``map_threshold`` as PNG."""
    import numpy as np
    from PIL import Image

    from structcore.regions import region_mask

    Image.fromarray(region_mask(full_map, map_threshold).astype(np.uint8) * 255, mode="L").save(path)
    return path


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


def save_overlay(
    record: Mapping[str, Any],
    image: Any,
    anomaly_map: Any,
    map_threshold: float,
    path: Path,
    boxes: Sequence[tuple[float, float, float, float]] = (),
) -> Path:
    """Render the overlay of one scored image (see ``render_overlay``), its regions outlined, and save it as PNG."""
    from evaluation.plots import overlay_title, render_overlay  # matplotlib: only when overlays are drawn

    picture = render_overlay(
        image,
        anomaly_map,
        threshold=map_threshold,
        title=overlay_title(record),
        anomalous=bool(record["anomalous"]),
        boxes=boxes,
    )
    picture.save(path)
    return path


def geometry_label(info: Mapping[str, object]) -> str:
    """The input geometry of a feature-space description: ``squash``, ``fit``, ``tile, max side 2048, overlap 64``."""
    geometry = str(info.get("input_geometry", "squash"))
    if geometry != "tile":
        return geometry
    return f"tile, max side {info.get('tile_max_side')}, overlap {info.get('tile_overlap')}"
