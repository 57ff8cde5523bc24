"""Cost and quality of ``registry update`` against a full refit, through the CLI (issue 23).

For one MVTec-style category (``CATEGORY/train/good``, ``CATEGORY/test/<good|defect>``):

1. ``registry add-category`` on the first ``--initial`` train images (sorted by name);
2. for each ``--steps`` size k: ``registry update --add-good`` with the next k images (timed, with
   the update's own split: reading the stored patches, embedding the new images, the coreset
   continuation, the recomputation, the write), and ``registry add-category`` on the union in a
   fresh registry (timed: the full refit);
3. both versions score the test set (``registry infer --category``): image AUROC of the hybrid
   score and the false-reject rate on test-good at each version's threshold.

Or, with ``--sizes 10 50 200`` (instead of ``--initial`` / ``--steps``), one independent case per
size s: ``add-category --keep-patches`` on all but the last s train images, ``update`` with those
s, and ``add-category`` on all of them in a fresh registry (the refit), each case's update and
refit run back to back (interleaved, so they see the same load).

``--max-train N`` takes a seeded subset of N train images (then sorted by name) first.

Writes ``results.json`` and prints one table row per step. A measurement script, not a test:
numbers depend on the machine and its load (the load average is recorded beside each row).
``update_over_embed_plus_coreset`` is the update's own total over its embedding of the new images
plus its coreset continuation (the issue's target: at most 1.5).

    python benchmarks/update_cost.py /data/mvtec_ad/bottle --initial 150 --steps 59 --work /tmp/cost
    python benchmarks/update_cost.py /data/mtd/magnetic_tile --sizes 50 --max-train 400 --work /tmp/mtd
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REGISTRY = str(Path(sys.executable).with_name("registry"))
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


def images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def link_folder(paths: list[Path], folder: Path) -> Path:
    """A folder of symlinks to ``paths`` (the CLI takes folders)."""
    folder.mkdir(parents=True, exist_ok=True)
    for path in paths:
        (folder / path.name).symlink_to(path.resolve())
    return folder


def cli(*args: str) -> tuple[float, dict[str, Any] | list[Any] | None]:
    started = time.perf_counter()
    done = subprocess.run([REGISTRY, *args], capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"registry {' '.join(args)} failed ({done.returncode}): {done.stderr[-2000:]}")
    out = done.stdout.strip()
    try:
        return elapsed, json.loads(out) if out.startswith(("{", "[")) else None
    except json.JSONDecodeError:
        return elapsed, None


def auroc(good: np.ndarray, bad: np.ndarray) -> float:
    """Probability that a defective image scores above a good one (ties count half)."""
    if not len(good) or not len(bad):
        return float("nan")
    greater = (bad[:, None] > good[None, :]).sum() + 0.5 * (bad[:, None] == good[None, :]).sum()
    return float(greater / (len(good) * len(bad)))


def quality(root: Path, name: str, test_dir: Path, out: Path) -> dict[str, float]:
    cli("infer", str(test_dir), "--category", name, "--root", str(root), "--out", str(out))
    records = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    good = np.array([r["score_hybrid"] for r in records if Path(r["path"]).parent.name == "good"])
    bad = np.array([r["score_hybrid"] for r in records if Path(r["path"]).parent.name != "good"])
    threshold = float(records[0]["threshold"])
    return {
        "auroc": auroc(good, bad),
        "frr": float((good > threshold).mean()),
        "recall": float((bad > threshold).mean()),
        "threshold": threshold,
    }


def over_floor(phases: dict[str, float] | None) -> float:
    """The update's total over (embedding the new images + the coreset continuation), from its own split."""
    found = phases or {}
    return found.get("total", float("nan")) / (found.get("embed", float("nan")) + found.get("coreset", float("nan")))


def sizes_run(args: argparse.Namespace, name: str, train: list[Path]) -> int:
    """``--sizes``: per size s, fit on all but the last s, update with them, refit on all (see the module doc)."""
    if max(args.sizes) >= len(train) - 1:
        raise SystemExit(f"--sizes {max(args.sizes)} leaves fewer than 2 of {len(train)} train images to fit on")
    if args.work.exists():
        shutil.rmtree(args.work)
    args.work.mkdir(parents=True)
    results: dict[str, Any] = {"category": str(args.category_root), "n_train": len(train), "cases": []}
    results["load_start"] = os.getloadavg()
    union = link_folder(train, args.work / "images" / "all")
    for size in args.sizes:
        case = args.work / f"add{size}"
        first = link_folder(train[: len(train) - size], case / "first")
        new = link_folder(train[len(train) - size :], case / "new")
        cli("init", "--root", str(case / "incremental"))
        initial_s, _ = cli(
            "add-category", name, "--train", str(first), "--root", str(case / "incremental"), "--keep-patches", "--json"
        )
        load_update = os.getloadavg()
        update_s, update = cli("update", name, "--add-good", str(new), "--root", str(case / "incremental"), "--json")
        assert isinstance(update, dict)
        row: dict[str, Any] = {
            "added": size,
            "fitted_on": len(train) - size,
            "initial_fit_s": initial_s,
            "update_s": update_s,
            "update_mode": update.get("mode"),
            "update_phases": update.get("seconds"),
            "update_over_embed_plus_coreset": over_floor(update.get("seconds")),
            "load_update": load_update,
        }
        if not args.no_refit:
            cli("init", "--root", str(case / "refit"))
            row["load_refit"] = os.getloadavg()
            refit_s, _ = cli("add-category", name, "--train", str(union), "--root", str(case / "refit"), "--json")
            row["refit_s"] = refit_s
            row["refit_over_update"] = refit_s / update_s
        results["cases"].append(row)
        print(json.dumps(row), flush=True)
        (args.work / "results.json").write_text(json.dumps(results, indent=2))
        shutil.rmtree(case / "incremental" / "stores", ignore_errors=True)  # GBs of train patches: keep the disk
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("category_root", type=Path)
    parser.add_argument("--initial", type=int, default=None)
    parser.add_argument("--steps", type=int, nargs="+", default=None)
    parser.add_argument("--sizes", type=int, nargs="+", default=None, help="Independent cases: update with the last s.")
    parser.add_argument("--max-train", type=int, default=None, help="Seeded subset of the train images.")
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--name", default=None)
    parser.add_argument("--no-quality", action="store_true", help="Skip scoring the test set.")
    parser.add_argument("--no-refit", action="store_true", help="Skip the full refits.")
    args = parser.parse_args(argv)
    name = args.name or args.category_root.name
    train = images_in(args.category_root / "train" / "good")
    if args.max_train and args.max_train < len(train):
        keep = np.random.default_rng(0).choice(len(train), args.max_train, replace=False)
        train = [train[i] for i in sorted(keep)]
    test_dir = args.category_root / "test"
    if args.sizes:
        return sizes_run(args, name, train)
    if args.initial is None or not args.steps:
        raise SystemExit("give --initial and --steps, or --sizes")
    if args.initial + sum(args.steps) > len(train):
        raise SystemExit(f"{args.initial} + {sum(args.steps)} > {len(train)} train images")
    if args.work.exists():
        shutil.rmtree(args.work)
    args.work.mkdir(parents=True)
    results: dict[str, Any] = {"category": str(args.category_root), "load_start": os.getloadavg(), "steps": []}
    inc = args.work / "incremental"
    cli("init", "--root", str(inc))
    first = link_folder(train[: args.initial], args.work / "images" / "step0")
    seconds, _ = cli("add-category", name, "--train", str(first), "--root", str(inc), "--keep-patches", "--json")
    results["initial_fit_seconds"] = seconds
    print(f"initial fit of {args.initial} images: {seconds:.1f} s", flush=True)
    used = args.initial
    for index, count in enumerate(args.steps, start=1):
        new = link_folder(train[used : used + count], args.work / "images" / f"step{index}")
        union = link_folder(train[: used + count], args.work / "images" / f"union{index}")
        used += count
        update_s, update = cli("update", name, "--add-good", str(new), "--root", str(inc), "--json")
        assert isinstance(update, dict)
        row: dict[str, Any] = {
            "added": count,
            "n_train": used,
            "update_s": update_s,
            "update_phases": update.get("seconds"),
            "bank": update.get("bank_size"),
            "load": os.getloadavg(),
        }
        if not args.no_refit:
            full = args.work / f"refit{index}"
            cli("init", "--root", str(full))
            refit_s, refit = cli("add-category", name, "--train", str(union), "--root", str(full), "--json")
            row["refit_s"] = refit_s
            row["ratio"] = refit_s / update_s
            row["refit_bank"] = (refit or {}).get("bank_size") if isinstance(refit, dict) else None
            if not args.no_quality:
                row["refit_quality"] = quality(full, name, test_dir, args.work / f"refit{index}.jsonl")
        if not args.no_quality:
            row["update_quality"] = quality(inc, name, test_dir, args.work / f"update{index}.jsonl")
        row["update_over_embed_plus_coreset"] = over_floor(row["update_phases"])
        results["steps"].append(row)
        print(json.dumps(row), flush=True)
        (args.work / "results.json").write_text(json.dumps(results, indent=2))
    store_bytes = sum(
        f.stat().st_size for f in (inc / "stores").rglob("*") if f.is_file() and "train_patches" in str(f)
    )
    results["train_patches_bytes_all_versions"] = store_bytes
    (args.work / "results.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
