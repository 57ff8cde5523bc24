"""``registry threshold NAME``: set a category's operating point as a new version, without refitting.

One of ``--frr F`` (from the stored leave-one-out train-good scores), ``--value X`` or
``--from-labelled DIR`` (``good/`` and defect subfolders: the threshold that meets ``--frr`` on
its good images, or the F1-maximising one). The new version shares its parent's arrays and
records how its threshold was chosen; ``registry set-current NAME V`` goes back.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cli.common import InputError, console, images_in, print_json, progress_bar, resolve_root, user_errors

if TYPE_CHECKING:
    import numpy as np

    from registry import Registry


def _percent(value: float) -> str:
    return f"{value * 100:.1f}%"


def _interval(successes: int, total: int) -> tuple[float, float]:
    from structcore.thresholds import wilson_interval

    return wilson_interval(successes, total)


def _labelled(folder: Path, with_frr: bool) -> tuple[list[Path], list[Path]]:
    """Good images (``folder/good``) and defective ones (every other subfolder) of a labelled folder."""
    if not folder.is_dir():
        raise InputError(f"--from-labelled {folder}: no such folder")
    good_dir = folder / "good"
    good = images_in(good_dir) if good_dir.is_dir() else []
    bad = [
        path
        for sub in sorted(p for p in folder.iterdir() if p.is_dir() and p.name != "good")
        for path in images_in(sub)
    ]
    if not good:
        raise InputError(f"--from-labelled {folder}: no good images (expected them in {good_dir})")
    if not bad and not with_frr:
        raise InputError(
            f"--from-labelled {folder}: no defective images (subfolders other than good/); "
            "add some, or pass --frr to meet a false-reject rate on the good images alone"
        )
    return good, bad


def _score(registry: Registry, name: str, paths: list[Path]) -> np.ndarray:
    import numpy as np

    with progress_bar(transient=True) as progress:
        task = progress.add_task(f"scoring with {name}", total=len(paths), rate="", visible=len(paths) > 4)
        records = registry.detector([name]).predict(
            paths, name, progress=lambda event: progress.update(task, completed=event.done)
        )
    failed = [record for record in records if record["error"]]
    if failed:
        raise InputError(f"{len(failed)} labelled image(s) cannot be scored, e.g. {failed[0]['error']}")
    return np.asarray([record["score_hybrid"] for record in records], dtype=np.float64)


def threshold_command(
    name: Annotated[str, typer.Argument(help="Category name.")],
    frr: Annotated[
        float | None,
        typer.Option(
            help="Target false-reject rate in (0, 0.5]: from the stored train-good scores, "
            "or on --from-labelled's good images."
        ),
    ] = None,
    value: Annotated[float | None, typer.Option(help="Set this hybrid-score threshold.")] = None,
    from_labelled: Annotated[
        Path | None,
        typer.Option(help="Folder with good/ and defect subfolders: meet --frr on its good images, or maximise F1."),
    ] = None,
    rule: Annotated[
        str, typer.Option(help="With --frr alone: robust-conformal (default), robust-tail, conformal or tail.")
    ] = "robust-conformal",
    version_number: Annotated[
        int | None, typer.Option("--version", help="Derive from this version [default: the current one].")
    ] = None,
    root: Annotated[
        Path | None,
        typer.Option("--root", help="Registry folder [env: STRUCTCORE_REGISTRY; default: ./structcore-registry]."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of text.")] = False,
) -> None:
    """Set a category's decision threshold as a new version (shares the arrays; no refit).

    --frr F: the threshold that rejects about F of good parts, from the stored leave-one-out
    train-good scores; --value X: exactly X; --from-labelled DIR: from scored labelled images
    (meets --frr on its good images, else maximises F1), with recall and FRR and their 95%
    Wilson intervals. `registry set-current NAME V` rolls back.
    """
    loading = time.perf_counter()
    from registry import Registry  # imported before the clock starts: the work is timed, not the imports
    from structcore.thresholds import THRESHOLD_RULES, check_frr

    started = time.perf_counter()
    with user_errors():
        chosen = sum(option is not None for option in (value, from_labelled))
        if chosen > 1 or (value is not None and frr is not None):
            raise InputError("give one of --frr, --value or --from-labelled (--frr may go with --from-labelled)")
        if chosen == 0 and frr is None:
            raise InputError("give one of --frr, --value or --from-labelled")
        if frr is not None:
            try:
                check_frr(frr)
            except ValueError:
                raise InputError(f"--frr must lie in (0, 0.5], got {frr}") from None
        if rule not in THRESHOLD_RULES or rule == "quantile":
            choices = ", ".join(r for r in THRESHOLD_RULES if r != "quantile")
            raise InputError(f"--rule must be one of {choices}, got {rule!r}")
        labelled = _labelled(from_labelled, frr is not None) if from_labelled is not None else None
        registry = Registry.open(resolve_root(root))
        try:
            result = _apply(registry, name, frr, value, labelled, from_labelled, rule, version_number)
        finally:
            registry.close()
        result["seconds"] = time.perf_counter() - started
        result["import_seconds"] = started - loading
        if as_json:
            print_json(result)
        else:
            _print(result)


def _apply(
    registry: Registry,
    name: str,
    frr: float | None,
    value: float | None,
    labelled: tuple[list[Path], list[Path]] | None,
    folder: Path | None,
    rule: str,
    version: int | None,
) -> dict[str, Any]:
    import numpy as np

    from structcore.thresholds import choose_threshold, f1_max_threshold, rates, threshold_for_frr

    parent = registry.version_info(name, version)  # unknown category / version: one line, nothing written
    train = registry.train_scores(name, parent.version)
    record: dict[str, Any]
    measured: dict[str, Any] = {}
    if value is not None:
        if not np.isfinite(value):
            raise InputError(f"--value must be a finite number, got {value}")
        threshold = float(value)
        record = {"rule": "value"}
    elif labelled is None:
        assert frr is not None
        choice = choose_threshold(train, rule, frr)
        threshold = choice.value
        record = {k: v for k, v in choice.to_record().items() if k != "source"}
    else:
        good_paths, bad_paths = labelled
        good = _score(registry, name, good_paths)
        bad = _score(registry, name, bad_paths) if bad_paths else np.zeros(0)
        if frr is not None:
            threshold = threshold_for_frr(good, frr)
            record = {"rule": "labelled-frr", "frr": frr}
        else:
            threshold, f1 = f1_max_threshold(good, bad)
            record = {"rule": "labelled-f1", "f1": f1}
            measured["f1"] = f1
        good_frr, recall = rates(good, bad, threshold)
        rejected = int((good > threshold).sum())
        flagged = int((bad > threshold).sum())
        measured.update(
            n_good=len(good),
            n_defective=len(bad),
            frr=good_frr,
            frr_ci=_interval(rejected, len(good)),
            recall=recall if len(bad) else None,
            recall_ci=_interval(flagged, len(bad)) if len(bad) else None,
        )
        record.update(
            folder=str(folder),
            n_good=len(good),
            n_defective=len(bad),
            labelled_frr=good_frr,
            labelled_recall=recall if len(bad) else None,
        )
    train_rejected = int((train > threshold).sum())
    outliers = {int(o["index"]) for o in parent.threshold_rule.get("outliers", []) if o.get("left_out") is True}
    kept = np.delete(train, sorted(i for i in outliers if 0 <= i < len(train)))
    kept_rejected = int((kept > threshold).sum())
    info = registry.add_threshold_version(name, threshold, record, version=parent.version)
    return {
        "category": name,
        "version": info.version,
        "parent_version": parent.version,
        "threshold": threshold,
        "previous_threshold": parent.thresholds.get("hybrid"),
        "rule": info.threshold_rule,
        "train_frr": train_rejected / len(train),
        "train_frr_ci": _interval(train_rejected, len(train)),
        "n_train": len(train),
        "n_outliers": len(train) - len(kept),
        "train_frr_without_outliers": kept_rejected / len(kept) if len(kept) else None,
        "labelled": measured or None,
    }


def _print(result: dict[str, Any]) -> None:
    name = result["category"]
    console.print(
        f"{name}: version {result['version']} (from version {result['parent_version']}): hybrid threshold "
        f"{result['previous_threshold']:.4f} -> {result['threshold']:.4f} ({result['rule']['rule']})",
        highlight=False,
    )
    low, high = result["train_frr_ci"]
    line = (
        f"  train-good (leave-one-out, {result['n_train']} images): {_percent(result['train_frr'])} above it "
        f"(95% CI {_percent(low)}-{_percent(high)})"
    )
    if result["n_outliers"] and result["train_frr_without_outliers"] is not None:
        line += (
            f"; {_percent(result['train_frr_without_outliers'])} without the {result['n_outliers']} outlying ones "
            "left out at fit (`registry show`)"
        )
    console.print(line, highlight=False)
    labelled = result["labelled"]
    if labelled:
        low, high = labelled["frr_ci"]
        line = (
            f"  labelled: FRR {_percent(labelled['frr'])} of {labelled['n_good']} good "
            f"(95% CI {_percent(low)}-{_percent(high)})"
        )
        if labelled["recall"] is not None:
            low, high = labelled["recall_ci"]
            line += (
                f", recall {_percent(labelled['recall'])} of {labelled['n_defective']} defective "
                f"(95% CI {_percent(low)}-{_percent(high)})"
            )
        if "f1" in labelled:
            line += f", F1 {labelled['f1']:.3f}"
        console.print(line, highlight=False)
    console.print(
        f"  now current; `registry set-current {name} {result['parent_version']}` goes back "
        f"(took {result['seconds']:.2f} s, after {result['import_seconds']:.1f} s of imports)",
        highlight=False,
    )


def register(app: typer.Typer) -> None:
    """Add ``threshold`` to the main app."""
    app.command("threshold")(threshold_command)
