"""Update against refit on the same images (quality), and a drift experiment, in-process (issue 23).

Every image is embedded once (cached as float16 in ``--cache``), then ``CategoryModel.fit`` and
``CategoryModel.updated`` run on the arrays, exactly what ``registry add-category`` and
``registry update`` run after embedding. Old train images enter updates as float16, as the
registry stores them.

* ``quality``: fit on the first 25% of the train images (sorted by name), then update in steps of
  25%; at each step also refit on the same images. Image AUROC (hybrid) on the test subset and
  the FRR on its good images at each model's own threshold.
* ``drift``: fit on ``--fit`` images of the first half of the sorted train list (MTD: the first
  half holds other exposure series than the second), score ``--held`` images of the second half
  as a "new condition" (FRR), update with ``--add`` other images of the second half, score again.

    PYTHONPATH=. .venv/bin/python experiments/update/quality_drift.py quality ROOT --cache /tmp/c --out q.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from registry import Registry
from structcore.model import CategoryModel, embed_images

SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp"}


def listing(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in SUFFIXES)


def embedded(registry: Registry, paths: list[Path], cache: Path, tag: str) -> np.ndarray:
    file = cache / f"{tag}.npy"
    if file.exists():
        with file.open("rb") as handle:
            return np.lib.format.read_array(handle, allow_pickle=False)
    started = time.perf_counter()
    vectors = embed_images(registry.extractor(), paths).astype(np.float16)
    print(f"embedded {len(paths)} {tag} images in {time.perf_counter() - started:.1f} s", flush=True)
    cache.mkdir(parents=True, exist_ok=True)
    np.save(file, vectors)
    return vectors


def auroc(good: np.ndarray, bad: np.ndarray) -> float:
    greater = (bad[:, None] > good[None, :]).sum() + 0.5 * (bad[:, None] == good[None, :]).sum()
    return float(greater / (len(good) * len(bad)))


def evaluate(model: CategoryModel, good: np.ndarray, bad: np.ndarray) -> dict[str, float]:
    threshold = model.thresholds["hybrid"]
    g = np.concatenate(
        [model.predict(good[i : i + 16].astype(np.float32)).scores.hybrid for i in range(0, len(good), 16)]
    )
    b = np.concatenate(
        [model.predict(bad[i : i + 16].astype(np.float32)).scores.hybrid for i in range(0, len(bad), 16)]
    )
    return {
        "auroc": auroc(g, b),
        "frr": float((g > threshold).mean()),
        "recall": float((b > threshold).mean()),
        "threshold": threshold,
    }


def frr(model: CategoryModel, vectors: np.ndarray) -> float:
    scores = np.concatenate(
        [model.predict(vectors[i : i + 16].astype(np.float32)).scores.hybrid for i in range(0, len(vectors), 16)]
    )
    return float((scores > model.thresholds["hybrid"]).mean())


def test_sets(registry: Registry, root: Path, cache: Path, n_good: int, n_bad: int) -> tuple[np.ndarray, np.ndarray]:
    good = listing(root / "test" / "good")
    bad = sorted(p for d in (root / "test").iterdir() if d.is_dir() and d.name != "good" for p in listing(d))
    rng = np.random.default_rng(0)
    if n_good and n_good < len(good):
        good = [good[i] for i in sorted(rng.choice(len(good), n_good, replace=False))]
    if n_bad and n_bad < len(bad):
        bad = [bad[i] for i in sorted(rng.choice(len(bad), n_bad, replace=False))]
    return embedded(registry, good, cache, f"test_good_{len(good)}"), embedded(
        registry, bad, cache, f"test_bad_{len(bad)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["quality", "drift"])
    parser.add_argument("root", type=Path)
    parser.add_argument("--registry", type=Path, required=True, help="A registry (its feature space embeds).")
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--max-train", type=int, default=0, help="The first N train images (sorted by name).")
    parser.add_argument("--seeded-train", type=int, default=0, help="A seeded subset of N train images, sorted.")
    parser.add_argument("--test-good", type=int, default=0)
    parser.add_argument("--test-bad", type=int, default=0)
    parser.add_argument("--fit", type=int, default=100)
    parser.add_argument("--add", type=int, default=50)
    parser.add_argument("--held", type=int, default=50)
    parser.add_argument("--plot", type=Path, default=None)
    args = parser.parse_args()
    train = listing(args.root / "train" / "good")
    result: dict[str, Any] = {"root": str(args.root), "mode": args.mode}
    with Registry.open(args.registry, read_only=True) as registry:
        grid, crop = registry.extractor().grid_shape(), registry.extractor().geometry.crop
        good, bad = test_sets(registry, args.root, args.cache, args.test_good, args.test_bad)
        result["test"] = {"good": len(good), "bad": len(bad)}
        if args.mode == "quality":
            tag = f"train_{len(train)}"
            if args.max_train:
                train = train[: args.max_train]
                tag = f"train_{len(train)}"
            elif args.seeded_train and args.seeded_train < len(train):
                keep = np.random.default_rng(0).choice(len(train), args.seeded_train, replace=False)
                train = [train[i] for i in sorted(keep)]
                tag = f"train_seeded_{len(train)}"
            result["train"] = {"n": len(train), "subset": tag}
            vectors = embedded(registry, train, args.cache, tag)
            bounds = [round(len(train) * q / 4) for q in range(1, 5)]
            model = CategoryModel().fit(vectors[: bounds[0]].astype(np.float32), grid, crop)
            rows = [{"step": "25%", "n": bounds[0], "update": evaluate(model, good, bad), "refit": None}]
            for q, n in enumerate(bounds[1:], start=2):
                started = time.perf_counter()
                model = model.updated(
                    vectors[: rows[-1]["n"]],
                    vectors[rows[-1]["n"] : n].astype(np.float32),
                    old_distances=model.train_distances_,  # what registry update reads from the version
                )
                update_s = time.perf_counter() - started
                started = time.perf_counter()
                refit = CategoryModel().fit(vectors[:n].astype(np.float32), grid, crop)
                refit_s = time.perf_counter() - started
                row = {
                    "step": f"{25 * q}%",
                    "n": n,
                    "update": evaluate(model, good, bad),
                    "refit": evaluate(refit, good, bad),
                    "update_fit_s": update_s,
                    "update_parts_s": model.update_seconds_,
                    "refit_fit_s": refit_s,
                    "load": os.getloadavg(),
                    "bank": [len(model.bank_), len(refit.bank_)],
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
            result["steps"] = rows
        else:
            half = len(train) // 2
            first, second = train[:half], train[half:]
            rng = np.random.default_rng(0)
            fit = [first[i] for i in sorted(rng.choice(len(first), min(args.fit, len(first)), replace=False))]
            picks = rng.choice(len(second), min(args.add + args.held, len(second)), replace=False)
            add = [second[i] for i in sorted(picks[: args.add])]
            held = [second[i] for i in sorted(picks[args.add :])]
            fit_v = embedded(registry, fit, args.cache, f"drift_fit_{len(fit)}")
            add_v = embedded(registry, add, args.cache, f"drift_add_{len(add)}")
            held_v = embedded(registry, held, args.cache, f"drift_held_{len(held)}")
            model = CategoryModel().fit(fit_v.astype(np.float32), grid, crop)
            before = {"new_condition_frr": frr(model, held_v), **evaluate(model, good, bad)}
            started = time.perf_counter()
            updated = model.updated(fit_v, add_v.astype(np.float32), old_distances=model.train_distances_)
            update_s = time.perf_counter() - started
            after = {"new_condition_frr": frr(updated, held_v), **evaluate(updated, good, bad)}
            result.update(
                fit=[p.name for p in fit[:3]],
                first_half=f"{first[0].name} .. {first[-1].name}",
                second_half=f"{second[0].name} .. {second[-1].name}",
                n_fit=len(fit),
                n_add=len(add),
                n_held=len(held),
                before=before,
                after=after,
                update_fit_s=update_s,
            )
            print(json.dumps(result, indent=1), flush=True)
            if args.plot:
                import matplotlib

                matplotlib.use("Agg")
                import matplotlib.pyplot as plt

                fig, ax = plt.subplots(figsize=(5.5, 3.2))
                labels = ["new condition\n(held-out tiles)", "test good", "test defects\n(recall)"]
                b = [before["new_condition_frr"], before["frr"], before["recall"]]
                a = [after["new_condition_frr"], after["frr"], after["recall"]]
                x = np.arange(3)
                ax.bar(x - 0.2, b, 0.4, label=f"fitted on {len(fit)} (first half)")
                ax.bar(x + 0.2, a, 0.4, label=f"after update +{len(add)} (second half)")
                ax.set_xticks(x, labels)
                ax.set_ylabel("share above the threshold")
                ax.set_title("Drift: rejection rates before / after one update")
                ax.legend(fontsize=8)
                fig.tight_layout()
                fig.savefig(args.plot, dpi=120)
    args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
