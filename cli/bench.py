"""``registry bench``: a Table-4-style speed / memory breakdown with floor ratios (evaluation.bench)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.common import console, err_console, print_json, user_errors


def bench_command(
    images: Annotated[
        str | None,
        typer.Option(help="MVTec-style category folder, or 'synthetic' [default: ../shared bottle when present]."),
    ] = None,
    backbone: Annotated[str, typer.Option(help="Backbone name.")] = "efficientnet-lite2",
    weights: Annotated[Path | None, typer.Option(help="Weights file for backbones that need one.")] = None,
    batch_size: Annotated[int, typer.Option(help="Images per backbone call.")] = 8,
    ratios: Annotated[str, typer.Option(help="Comma-separated coreset ratios of the table rows.")] = "0.01,0.05,0.1",
    sections: Annotated[str | None, typer.Option(help="Comma-separated subset of sections to run.")] = None,
    threads: Annotated[int | None, typer.Option(help="torch / faiss threads.")] = None,
    quick: Annotated[bool, typer.Option("--quick", help="Few small images: a smoke test.")] = False,
    compile_model: Annotated[bool, typer.Option("--compile", help="Also measure torch.compile.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object with every figure.")] = False,
) -> None:
    """Measure extract / kNN / post per image, floors of kNN, coreset and extraction, routing scale, memory."""
    from benchmarks.bench import format_bench, run_bench

    with user_errors():
        result = run_bench(
            images,
            backbone=backbone,
            weights=weights,
            batch_size=batch_size,
            ratios=[float(r) for r in ratios.split(",") if r.strip()],
            quick=quick,
            threads=threads,
            sections=[s.strip() for s in sections.split(",") if s.strip()] if sections else None,
            compile=compile_model,
            progress=lambda message: err_console.print(f"[dim]{message}[/]", highlight=False),
        )
        if as_json:
            print_json(result)
        else:
            console.print(format_bench(result), highlight=False, markup=False)


def register(app: typer.Typer) -> None:
    """Add ``bench`` to the main app."""
    app.command("bench")(bench_command)
