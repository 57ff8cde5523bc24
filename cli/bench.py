"""``registry bench``: runs the checkout's benchmark (``benchmarks/bench.py``), which is not installed.

The benchmark is a performance lab (its own targets, real-data defaults, child processes) that
lives beside the packages in a source checkout. This command finds it (the repository of the
installed editable package first, else the current folder or one above it) and runs it in a
child process with the options given here; without a checkout it says how to get one (exit 1).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer

from cli.common import fail, user_errors
from cli.options import BackboneRuntimeOption, use_backbone_runtime
from structcore.settings import DEFAULT_BACKBONE

#: What ``registry bench`` says when no checkout holds ``benchmarks/bench.py``.
NO_CHECKOUT = (
    "the benchmark is not installed with the package: run `registry bench` inside a source checkout "
    "of StructCore Registry (git clone; it holds benchmarks/bench.py)"
)


def find_checkout(candidates: Sequence[Path] | None = None) -> Path | None:
    """The first folder of ``candidates`` that holds ``benchmarks/bench.py``, or ``None``.

    Default candidates: the repository of this (editable) package, the current folder and its parents.
    """
    if candidates is None:
        cwd = Path.cwd().resolve()
        candidates = [Path(__file__).resolve().parents[1], cwd, *cwd.parents]
    return next((root for root in candidates if (root / "benchmarks" / "bench.py").is_file()), None)


def bench_command(
    images: Annotated[
        str | None,
        typer.Option(
            help="MVTec-style category folder, or 'synthetic' [default: $STRUCTCORE_DATA bottle when present]."
        ),
    ] = None,
    backbone: Annotated[str, typer.Option(help="Backbone name.")] = DEFAULT_BACKBONE,
    weights: Annotated[Path | None, typer.Option(help="Weights file for backbones that need one.")] = None,
    batch_size: Annotated[int, typer.Option(help="Images per backbone call.")] = 8,
    ratios: Annotated[str, typer.Option(help="Comma-separated coreset ratios of the table rows.")] = "0.01,0.05,0.1",
    sections: Annotated[str | None, typer.Option(help="Comma-separated subset of sections to run.")] = None,
    threads: Annotated[int | None, typer.Option(help="torch / faiss threads.")] = None,
    quick: Annotated[bool, typer.Option("--quick", help="Few small images: a smoke test.")] = False,
    compile_model: Annotated[bool, typer.Option("--compile", help="Also measure torch.compile.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object with every figure.")] = False,
    backbone_runtime: BackboneRuntimeOption = None,
) -> None:
    """Measure extract / kNN / post per image, floors of kNN, coreset and extraction, routing scale, memory."""
    with user_errors():
        use_backbone_runtime(backbone_runtime)  # the child process inherits it; its output records it
    checkout = find_checkout()
    if checkout is None:
        raise fail(NO_CHECKOUT)
    argv = ["--backbone", backbone, "--batch-size", str(batch_size), "--ratios", ratios]
    if images is not None:
        argv += ["--images", images if images == "synthetic" else str(Path(images).expanduser().resolve())]
    if weights is not None:
        argv += ["--weights", str(weights.expanduser().resolve())]
    if sections is not None:
        argv += ["--sections", sections]
    if threads is not None:
        argv += ["--threads", str(threads)]
    argv += [flag for flag, on in (("--quick", quick), ("--compile", compile_model), ("--json", as_json)) if on]
    code = (
        f"import sys; sys.path.insert(0, {str(checkout)!r}); "
        "from benchmarks.bench import main; sys.exit(main(sys.argv[1:]))"
    )
    try:
        completed = subprocess.run([sys.executable, "-c", code, *argv], check=False)
    except KeyboardInterrupt:
        raise fail("interrupted", 130) from None
    if completed.returncode != 0:
        raise typer.Exit(completed.returncode)


def register(app: typer.Typer) -> None:
    """Add ``bench`` to the main app."""
    app.command("bench")(bench_command)
