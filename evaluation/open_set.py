"""``open-set`` protocol: each category in turn left out of the router, its images presented as unknown.

For left-out category ``c`` the evaluation's Detector is restricted to every other evaluated
category (:meth:`registry.detector.Detector.restricted_to`: no refit, the same versions), and each
test image's ``unknown_score`` and ``unknown`` are what that Detector's routing gives, the values
``registry infer`` reports on a registry without ``c`` (collected by
:func:`evaluation.protocols.collect`). Positives: every test image of ``c`` (good and defective);
negatives: every test image of the kept categories.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.metrics import roc_auc_score

if TYPE_CHECKING:
    from evaluation.protocols import Collected

_NAN = float("nan")
#: Figures per left-out category (and their plain mean over categories).
OPEN_SET_KEYS = (
    "unknown_auroc",
    "flagged_left_out",
    "flagged_registered_good",
    "flagged_registered_defective",
    "n_left_out",
    "n_registered",
)


def _rate(flags: np.ndarray) -> float:
    return float(np.mean(flags)) if flags.size else _NAN


def evaluate_open_set(collected: Collected) -> dict[str, Any]:
    """Unknown detection with each evaluated category left out in turn.

    Returns:
        ``per_category`` (the left-out category -> :data:`OPEN_SET_KEYS`) and their ``mean``.

    Raises:
        ValueError: fewer than two categories, or runs collected without unknown ratios.
    """
    names = collected.names
    if len(names) < 2:
        msg = "the open-set protocol needs at least two categories (one left out, one registered)"
        raise ValueError(msg)
    labels: dict[str, np.ndarray] = {}
    for name in names:
        run = collected.runs[name]
        if set(run.unknown_scores) != set(names):
            msg = f"category {name!r} was collected without unknown ratios; collect with 'open-set' among the protocols"
            raise ValueError(msg)
        labels[name] = np.asarray(run.data.labels, dtype=np.int64)
    per: dict[str, dict[str, Any]] = {}
    for left_out in names:
        runs = collected.runs
        positive = runs[left_out].unknown_scores[left_out]
        positive_flags = runs[left_out].unknown[left_out]
        others = [n for n in names if n != left_out]
        negative = np.concatenate([runs[n].unknown_scores[left_out] for n in others])
        negative_flags = np.concatenate([runs[n].unknown[left_out] for n in others])
        negative_labels = np.concatenate([labels[n] for n in others])
        truth = np.r_[np.ones(len(positive)), np.zeros(len(negative))]
        both = np.r_[positive, negative]
        per[left_out] = {
            "unknown_auroc": float(roc_auc_score(truth, both)) if len(positive) and len(negative) else _NAN,
            "flagged_left_out": _rate(positive_flags),
            "flagged_registered_good": _rate(negative_flags[negative_labels == 0]),
            "flagged_registered_defective": _rate(negative_flags[negative_labels != 0]),
            "n_left_out": len(positive),
            "n_registered": len(negative),
        }
    mean: dict[str, float] = {}
    for key in OPEN_SET_KEYS:
        values = np.asarray([float(per[n][key]) for n in names], dtype=np.float64)
        finite = values[np.isfinite(values)]
        mean[key] = float(finite.mean()) if finite.size else _NAN
    return {"per_category": per, "mean": mean}


def _pct(value: Any) -> str:
    return "-" if value is None or not np.isfinite(float(value)) else f"{100.0 * float(value):.1f}"


def open_set_markdown(part: Mapping[str, Any]) -> list[str]:
    """report.md section of the open-set protocol (percentages)."""
    lines = [
        "## Open set (each category left out of the router in turn)",
        "",
        "Unknown-detection AUROC: left-out images' `unknown_score` against the registered categories' test images'. "
        "Flagged: `unknown_score > 1` (the shipped threshold).",
        "",
        "| left out | unknown AUROC | flagged left-out | flagged registered good | flagged registered defective "
        "| n left-out | n registered |",
        "|---|---|---|---|---|---|---|",
    ]
    rows = [*part["per_category"].items(), ("**mean**", part["mean"])]
    for name, m in rows:
        cells = [name, *(_pct(m.get(k)) for k in OPEN_SET_KEYS[:4])]
        cells += [f"{float(m.get(k) or 0):.0f}" if name != "**mean**" else "" for k in OPEN_SET_KEYS[4:]]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def plot_open_set(part: Mapping[str, Any], path: Path) -> Path:
    """Bar chart per left-out category: unknown AUROC and the three flagged shares."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(part["per_category"])
    keys = OPEN_SET_KEYS[:4]
    width = 0.8 / len(keys)
    figure, axis = plt.subplots(figsize=(3.5 + 0.9 * len(names), 3.2))
    x = np.arange(len(names))
    for k, key in enumerate(keys):
        values = [float(part["per_category"][n].get(key) or 0.0) for n in names]
        axis.bar(x + (k - (len(keys) - 1) / 2) * width, values, width, label=key.replace("_", " "))
    axis.set_xticks(x, names, rotation=30, ha="right", fontsize=8)
    axis.set_ylim(0.0, 1.05)
    axis.set_ylabel("AUROC / share", fontsize=8)
    axis.set_title("Open set: each category left out", fontsize=9)
    axis.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
