"""Compare threshold rules on stored scores: leave-one-out train-good scores vs test scores.

Reads a registry fitted with ``registry add-category`` and, per category, a ``registry infer
TEST --category NAME --out NAME.jsonl`` file (test images under ``good/`` and defect folders).
No refit: every rule works on the stored leave-one-out train-good hybrid scores only; the test
scores only measure the result. Prints the distributions (quantiles), the train images that set
the 99.5% quantile, and per rule the threshold, test-good FRR, recall, the best recall any
threshold reaches at that FRR and the efficiency; ``--plot PNG`` writes the histograms of every category.

Usage: ``python experiments/thresholds/threshold_study.py --root REG --scores DIR [--json OUT] [--plot DIR]``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from registry import Registry
from structcore.thresholds import (
    DEFAULT_THRESHOLD_RULE,
    THRESHOLD_RULES,
    choose_threshold,
    decision_metrics,
    quantile_threshold,
    train_outliers,
)

QUANTILES = (0.5, 0.9, 0.95, 0.99, 0.995, 1.0)


def load_test(path: Path) -> tuple[np.ndarray, np.ndarray, float]:
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    good = np.array([r["score_hybrid"] for r in records if Path(r["path"]).parent.name == "good"])
    bad = np.array([r["score_hybrid"] for r in records if Path(r["path"]).parent.name != "good"])
    return good, bad, float(records[0]["threshold"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--scores", type=Path, required=True)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--plot", type=Path, default=None, help="write all categories' histograms to this PNG")
    parser.add_argument("--frr", type=float, default=0.01)
    args = parser.parse_args()
    results: dict[str, Any] = {}
    panels: list[tuple[str, np.ndarray, np.ndarray, np.ndarray, dict]] = []
    with Registry.open(args.root, read_only=True) as registry:
        for name in registry.names():
            scores_file = args.scores / f"{name}.jsonl"
            if not scores_file.is_file():
                continue
            stored = registry.read_version(name)
            train = np.asarray(stored.arrays["calibration_hybrid"], dtype=np.float64)
            paths = [Path(p).name for p in stored.train_images]
            good, bad, shipped = load_test(scores_file)
            q995 = quantile_threshold(train)
            top = np.argsort(train)[::-1][:4]
            print(f"\n== {name}: {len(train)} train (loo), {len(good)} test good, {len(bad)} defective")
            print("  quantile     " + " ".join(f"{q:>7g}" for q in QUANTILES))
            print("  train loo    " + " ".join(f"{np.quantile(train, q):7.3f}" for q in QUANTILES))
            print("  test good    " + " ".join(f"{np.quantile(good, q):7.3f}" for q in QUANTILES))
            print("  test defect  " + " ".join(f"{np.quantile(bad, q):7.3f}" for q in QUANTILES))
            print(
                f"  99.5% quantile {q995:.3f} (shipped {shipped:.3f}) lies between "
                + ", ".join(f"{paths[i]} {train[i]:.3f}" for i in top)
            )
            outliers = train_outliers(train)
            print(f"  outlying train images: {', '.join(f'{paths[i]} {train[i]:.3f}' for i in outliers) or 'none'}")
            rows = {}
            for rule in THRESHOLD_RULES:
                choice = choose_threshold(train, rule, args.frr)
                metrics = decision_metrics(good, bad, choice.value)
                rows[rule] = {"threshold": choice.value, **metrics}
                ok = metrics["frr"] <= args.frr + 1e-9 and metrics["efficiency"] >= 0.95
                print(
                    f"  {rule:17s} thr {choice.value:7.3f}  FRR {metrics['frr']:6.3f}  recall {metrics['recall']:.3f}"
                    f"  best {metrics['best_recall']:.3f}  eff {metrics['efficiency']:.3f}  "
                    f"{'meets' if ok else 'MISSES'} the target"
                )
            results[name] = {
                "n_train": len(train),
                "n_good": len(good),
                "n_bad": len(bad),
                "train_quantiles": {str(q): float(np.quantile(train, q)) for q in QUANTILES},
                "good_quantiles": {str(q): float(np.quantile(good, q)) for q in QUANTILES},
                "nominal_frr_of_quantile": 1 - 0.995,
                "top_train": [{"image": paths[i], "score": float(train[i])} for i in top],
                "outliers": [{"image": paths[i], "score": float(train[i])} for i in outliers],
                "rules": rows,
            }
            panels.append((name, train, good, bad, rows))
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2))
    if args.plot is not None:
        plot(panels, args.plot)
    print_markdown(results, args.frr)


def print_markdown(results: dict[str, Any], frr: float) -> None:
    """The old rule against the default, one row per category, and how many categories each rule meets."""
    print(
        "\n| category | train / test good / defective | threshold old -> new | test-good FRR old / new "
        "| recall old / new | best recall at the new FRR | efficiency old / new |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, found in results.items():
        old, new = found["rules"]["quantile"], found["rules"][DEFAULT_THRESHOLD_RULE]
        print(
            f"| {name} | {found['n_train']} / {found['n_good']} / {found['n_bad']} "
            f"| {old['threshold']:.3f} -> {new['threshold']:.3f} | {100 * old['frr']:.1f}% / {100 * new['frr']:.1f}% "
            f"| {old['recall']:.3f} / {new['recall']:.3f} | {new['best_recall']:.3f} "
            f"| {old['efficiency']:.3f} / {new['efficiency']:.3f} |"
        )
    print("\n| rule | categories meeting FRR <= 1% and efficiency >= 0.95 | mean recall | mean efficiency |")
    print("|---|---|---|---|")
    for rule in THRESHOLD_RULES:
        rows = [found["rules"][rule] for found in results.values()]
        met = sum(r["frr"] <= frr + 1e-9 and r["efficiency"] >= 0.95 for r in rows)
        print(
            f"| {rule} | {met} of {len(rows)} | {np.mean([r['recall'] for r in rows]):.3f} "
            f"| {np.nanmean([r['efficiency'] for r in rows]):.3f} |"
        )


def plot(panels: list[tuple[str, np.ndarray, np.ndarray, np.ndarray, dict]], path: Path) -> None:
    """One panel per category: train-good (leave-one-out), test good and test defective hybrid
    scores, with the old (99.5% quantile) and the default threshold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = 2
    rows_n = (len(panels) + columns - 1) // columns
    figure, axes = plt.subplots(rows_n, columns, figsize=(11, 2.9 * rows_n), squeeze=False)
    for axis in axes.ravel()[len(panels) :]:
        axis.set_visible(False)
    for axis, (name, train, good, bad, rows) in zip(axes.ravel(), panels, strict=False):
        top = max(float(np.quantile(bad, 0.9)), rows["quantile"]["threshold"] * 1.15, float(good.max()) * 1.1)
        bins = np.linspace(min(train.min(), good.min()), top, 70).tolist()
        axis.hist(
            train, bins=bins, density=True, alpha=0.5, color="0.5", label=f"train good, leave-one-out ({len(train)})"
        )
        axis.hist(good, bins=bins, density=True, alpha=0.55, color="tab:blue", label=f"test good ({len(good)})")
        axis.hist(
            bad, bins=bins, density=True, histtype="step", color="tab:orange", label=f"test defective ({len(bad)})"
        )
        for rule, colour in (("quantile", "tab:red"), (DEFAULT_THRESHOLD_RULE, "tab:green")):
            found = rows[rule]
            axis.axvline(
                found["threshold"],
                color=colour,
                linestyle="--",
                label=f"{rule} {found['threshold']:.3f}: FRR {100 * found['frr']:.0f}%, recall {found['recall']:.2f}",
            )
        axis.set_title(name, fontsize=9)
        axis.tick_params(labelsize=7)
        axis.legend(fontsize=6)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=80)
    plt.close(figure)


if __name__ == "__main__":
    main()
