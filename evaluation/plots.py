"""Evaluation plots (matplotlib, Agg backend; nothing is shown on screen).

* ``scatter_base_hybrid.png``: base vs hybrid score per test image, one panel per category, with
  the 99.5% train-good thresholds as lines and the cross-over regions shaded (paper's Figure 2).
* ``histograms.png``: base / struct / hybrid score histograms of test-good, test-anomalous and
  the train-good calibration scores, with the thresholds.
* ``roc.png``: image ROC curves of the three scores per category.
* ``overlays/<category>.png``: a few test images with their mask and anomaly map.
* ``continual_heatmap.png``: the continual step x category matrix (image AUROC, hybrid).
* ``routing_confusion.png``: the MUAD routing confusion matrix.

:func:`render_overlay` draws one scored image (the pictures of ``registry infer --maps`` and
``registry demo --maps``); it returns a PIL image so that a server can send it as PNG.

Scatter, histograms, ROC and overlays use each image scored by its own category (the figures
of the ``separate`` protocol).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from PIL import Image
from sklearn.metrics import auc, roc_curve

from evaluation.open_set import plot_open_set
from evaluation.protocols import KINDS, Collected, crossover_counts
from structcore.preprocess import load_image, load_mask, preprocess_image

__all__ = [
    "OVERLAY_CMAP",
    "plot_continual_heatmap",
    "plot_histograms",
    "plot_overlays",
    "plot_roc",
    "plot_routing_confusion",
    "plot_scatter",
    "render_overlay",
    "write_plots",
]

_GOOD_COLOR = "#2c7fb8"
_BAD_COLOR = "#d95f0e"
_TRAIN_COLOR = "#7f7f7f"
#: Colour map of the anomaly-map overlays.
OVERLAY_CMAP = "turbo"


def _grid(n: int, max_cols: int = 4, size: float = 3.6) -> tuple[Figure, list[Any]]:
    cols = max(1, min(max_cols, n))
    rows = max(1, math.ceil(n / cols))
    figure, axes = plt.subplots(rows, cols, figsize=(size * cols, size * rows), squeeze=False)
    flat = list(axes.ravel())
    for axis in flat[n:]:
        axis.axis("off")
    return figure, flat


def _save(figure: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _own(collected: Collected, name: str) -> np.ndarray:
    return collected.runs[name].scores[name]


def plot_scatter(collected: Collected, path: Path) -> Path:
    """Base vs hybrid scores with thresholds and shaded cross-over regions, one panel per category."""
    figure, axes = _grid(len(collected.names))
    for axis, name in zip(axes, collected.names, strict=False):
        scores = _own(collected, name)
        labels = np.asarray(collected.runs[name].data.labels)
        base, hybrid = scores[:, 0], scores[:, 2]
        t_base, t_hyb = collected.thresholds[name]["base"], collected.thresholds[name]["hybrid"]
        x_lo, x_hi = float(min(base.min(), t_base)), float(max(base.max(), t_base))
        y_lo, y_hi = float(min(hybrid.min(), t_hyb)), float(max(hybrid.max(), t_hyb))
        pad_x, pad_y = 0.05 * (x_hi - x_lo or 1.0), 0.05 * (y_hi - y_lo or 1.0)
        x_lo, x_hi, y_lo, y_hi = x_lo - pad_x, x_hi + pad_x, y_lo - pad_y, y_hi + pad_y
        # Base rejects, hybrid accepts (base FP fixed / FN introduced) and the reverse.
        axis.fill_between([t_base, x_hi], y_lo, t_hyb, color="#a1d99b", alpha=0.35, lw=0, label="base FP fixed")
        axis.fill_between([x_lo, t_base], t_hyb, y_hi, color="#fdae6b", alpha=0.35, lw=0, label="base FN recovered")
        axis.scatter(base[labels == 0], hybrid[labels == 0], s=12, c=_GOOD_COLOR, label="normal (GT)")
        axis.scatter(base[labels == 1], hybrid[labels == 1], s=12, c=_BAD_COLOR, marker="^", label="anomaly (GT)")
        axis.axvline(t_base, color="k", lw=1, ls="--")
        axis.axhline(t_hyb, color="k", lw=1, ls=":")
        counts = crossover_counts(labels, base, hybrid, np.full(len(base), t_base), np.full(len(base), t_hyb))
        axis.text(
            0.02,
            0.98,
            f"T_base={t_base:.3f}  T_hyb={t_hyb:.3f}\nFP fixed {counts['fp_fixed']}, "
            f"FN recovered {counts['fn_recovered']}\nFP added {counts['fp_introduced']}, "
            f"FN added {counts['fn_introduced']}",
            transform=axis.transAxes,
            va="top",
            fontsize=7,
        )
        axis.set_xlim(x_lo, x_hi)
        axis.set_ylim(y_lo, y_hi)
        axis.set_title(name, fontsize=9)
        axis.set_xlabel("base score (max of map)", fontsize=8)
        axis.set_ylabel("hybrid score (base + λ·D_struct)", fontsize=8)
    axes[0].legend(fontsize=6, loc="best")
    figure.suptitle("Base vs hybrid image scores; shaded: decisions StructCore changes", fontsize=10)
    return _save(figure, path)


def plot_histograms(collected: Collected, path: Path) -> Path:
    """Score histograms (test-good, test-anomalous, train-good calibration) per category and kind."""
    rows = len(collected.names)
    figure, axes = plt.subplots(rows, 3, figsize=(11, 2.6 * rows), squeeze=False)
    for r, name in enumerate(collected.names):
        scores = _own(collected, name)
        labels = np.asarray(collected.runs[name].data.labels)
        for k, kind in enumerate(KINDS):
            axis = axes[r, k]
            values = scores[:, k]
            train = collected.calibration.get(name, {}).get(kind, np.empty(0))
            everything = np.concatenate([values, train])
            bins = np.linspace(float(everything.min()), float(everything.max()) + 1e-12, 30)
            axis.hist(train, bins=bins, color=_TRAIN_COLOR, alpha=0.5, density=True, label="train-good (calib.)")
            axis.hist(values[labels == 0], bins=bins, color=_GOOD_COLOR, alpha=0.6, density=True, label="test good")
            axis.hist(values[labels == 1], bins=bins, color=_BAD_COLOR, alpha=0.6, density=True, label="test anomalous")
            axis.axvline(collected.thresholds[name][kind], color="k", lw=1, ls="--", label="shipped threshold")
            axis.set_title(f"{name}: {kind}", fontsize=9)
            axis.tick_params(labelsize=7)
    axes[0, 0].legend(fontsize=6)
    return _save(figure, path)


def plot_score_distribution(collected: Collected, name: str, path: Path) -> Path:
    """One category's hybrid-score distribution (train-good leave-one-out, test good, test defective) with
    its shipped threshold, and the test-good FRR and defect recall at it in the title."""
    scores = _own(collected, name)[:, KINDS.index("hybrid")]
    labels = np.asarray(collected.runs[name].data.labels)
    train = collected.calibration.get(name, {}).get("hybrid", np.empty(0))
    threshold = float(collected.thresholds[name]["hybrid"])
    figure, axis = plt.subplots(figsize=(6.4, 3.2))
    everything = np.concatenate([scores, train, [threshold]])
    bins = np.linspace(float(everything.min()), float(everything.max()) + 1e-12, 50).tolist()
    axis.hist(
        train, bins=bins, color=_TRAIN_COLOR, alpha=0.5, density=True, label=f"train good, leave-one-out ({len(train)})"
    )
    good, bad = scores[labels == 0], scores[labels == 1]
    axis.hist(good, bins=bins, color=_GOOD_COLOR, alpha=0.6, density=True, label=f"test good ({len(good)})")
    axis.hist(bad, bins=bins, color=_BAD_COLOR, alpha=0.6, density=True, label=f"test defective ({len(bad)})")
    axis.axvline(threshold, color="k", lw=1.2, ls="--", label=f"threshold {threshold:.3f}")
    frr = float((good > threshold).mean()) if good.size else float("nan")
    recall = float((bad > threshold).mean()) if bad.size else float("nan")
    axis.set_title(
        f"{name}: hybrid score; FRR {100 * frr:.1f}%, recall {100 * recall:.1f}% at the threshold", fontsize=9
    )
    axis.set_xlabel("hybrid score", fontsize=8)
    axis.tick_params(labelsize=7)
    axis.legend(fontsize=6)
    return _save(figure, path)


def plot_roc(collected: Collected, path: Path) -> Path:
    """Image ROC curves of base / struct / hybrid, one panel per category."""
    figure, axes = _grid(len(collected.names), size=3.2)
    colors = {"base": "#1b9e77", "struct": "#7570b3", "hybrid": "#d95f02"}
    for axis, name in zip(axes, collected.names, strict=False):
        scores = _own(collected, name)
        labels = np.asarray(collected.runs[name].data.labels)
        if labels.min() == labels.max():
            axis.text(0.5, 0.5, "one class only", ha="center")
            axis.set_title(name, fontsize=9)
            continue
        for k, kind in enumerate(KINDS):
            fpr, tpr, _ = roc_curve(labels, scores[:, k])
            area = float(auc(fpr, tpr))
            axis.plot(fpr, tpr, color=colors[kind], lw=1.2, label=f"{kind} {100 * area:.1f}")
        axis.plot([0, 1], [0, 1], color="0.7", lw=0.8, ls=":")
        axis.set_title(name, fontsize=9)
        axis.set_xlabel("FPR", fontsize=8)
        axis.set_ylabel("TPR", fontsize=8)
        axis.legend(fontsize=7, loc="lower right")
    return _save(figure, path)


def _pick_examples(labels: np.ndarray, hybrid: np.ndarray, count: int) -> list[int]:
    """Most and least anomalous-looking anomalies and goods: the informative cases first."""
    bad = np.flatnonzero(labels == 1)
    good = np.flatnonzero(labels == 0)
    ordered: list[int] = []
    pools = [
        bad[np.argsort(-hybrid[bad])],  # confident detections
        good[np.argsort(-hybrid[good])],  # worst good
        bad[np.argsort(hybrid[bad])],  # hardest anomalies
        good[np.argsort(hybrid[good])],  # cleanest good
    ]
    position = 0
    while len(ordered) < min(count, len(labels)) and any(position < len(p) for p in pools):
        for pool in pools:
            if position < len(pool) and int(pool[position]) not in ordered and len(ordered) < count:
                ordered.append(int(pool[position]))
        position += 1
    return ordered


def plot_overlays(collected: Collected, name: str, path: Path, count: int = 4) -> Path:
    """A few test images of ``name``: image, mask, and anomaly map over the image."""
    run = collected.runs[name]
    labels = np.asarray(run.data.labels)
    scores = _own(collected, name)
    picks = _pick_examples(labels, scores[:, 2], count)
    geometry = collected.geometry
    figure, axes = plt.subplots(len(picks), 3, figsize=(8, 2.7 * len(picks)), squeeze=False)
    maps = [collected.maps.get((name, name, i)) for i in picks]
    low = min(float(m.min()) for m in maps)
    high = max(float(m.max()) for m in maps)
    for row, (i, anomaly_map) in enumerate(zip(picks, maps, strict=True)):
        image = preprocess_image(load_image(run.data.test[i]), geometry).transpose(1, 2, 0)
        image = image[: anomaly_map.shape[0], : anomaly_map.shape[1]]  # fit: the map covers the content
        mask_path = run.data.masks[i]
        mask = load_mask(mask_path, geometry) if mask_path is not None else np.zeros(image.shape[:2], dtype=bool)
        axes[row, 0].imshow(image)
        axes[row, 0].set_title(
            f"{run.data.defects[i]} {Path(run.data.test[i]).name}\nhybrid {scores[i, 2]:.3f} "
            f"(thr {collected.thresholds[name]['hybrid']:.3f})",
            fontsize=7,
        )
        axes[row, 1].imshow(mask, cmap="gray", vmin=0, vmax=1)
        caption = "ground-truth mask" if mask_path is not None else "good (no defect)" if labels[i] == 0 else "no mask"
        axes[row, 1].set_title(caption, fontsize=7)
        axes[row, 2].imshow(image)
        axes[row, 2].imshow(anomaly_map, cmap="jet", alpha=0.5, vmin=low, vmax=high)
        axes[row, 2].contour(mask, levels=[0.5], colors="white", linewidths=0.8)
        axes[row, 2].set_title(f"anomaly map (max {anomaly_map.max():.3f})", fontsize=7)
        for axis in axes[row]:
            axis.axis("off")
    figure.suptitle(name, fontsize=10)
    return _save(figure, path)


def plot_continual_heatmap(
    matrix: Sequence[Sequence[float | None]], columns: Sequence[str], path: Path, title: str
) -> Path:
    """Step x category heat-map of a continual metric (values in %)."""
    values = np.asarray([[np.nan if v is None else float(v) for v in row] for row in matrix], dtype=np.float64)
    figure, axis = plt.subplots(figsize=(max(5.5, 1.5 + 0.65 * len(columns)), max(2.8, 1.4 + 0.45 * len(values))))
    masked = np.ma.masked_invalid(100.0 * values)
    finite = values[np.isfinite(values)]
    low = min(100.0 * float(finite.min()) if finite.size else 0.0, 99.0)
    image = axis.imshow(masked, cmap="viridis", vmin=low, vmax=100.0, aspect="auto")
    for (t, j), value in np.ndenumerate(values):
        if math.isfinite(value):
            bright = (100.0 * value - low) / (100.0 - low) > 0.6
            axis.text(j, t, f"{100 * value:.1f}", ha="center", va="center", fontsize=6, color="k" if bright else "w")
    axis.set_xticks(range(len(columns)), columns, rotation=60, ha="right", fontsize=7)
    axis.set_yticks(range(len(values)), [str(t) for t in range(len(values))], fontsize=7)
    axis.set_xlabel("category (in order of addition)", fontsize=8)
    axis.set_ylabel("step", fontsize=8)
    axis.set_title(title, fontsize=9)
    figure.colorbar(image, ax=axis, fraction=0.04)
    return _save(figure, path)


def plot_routing_confusion(labels: Sequence[str], matrix: Sequence[Sequence[int]], path: Path) -> Path:
    """Routing confusion matrix (rows: true category; columns: routed to), row-normalised colours."""
    counts = np.asarray(matrix, dtype=np.float64)
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1.0)
    figure, axis = plt.subplots(figsize=(1.5 + 0.5 * len(labels), 1.2 + 0.45 * len(labels)))
    image = axis.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    for (i, j), value in np.ndenumerate(counts):
        if value:
            axis.text(j, i, str(int(value)), ha="center", va="center", fontsize=6)
    axis.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=7)
    axis.set_yticks(range(len(labels)), labels, fontsize=7)
    axis.set_xlabel("routed to", fontsize=8)
    axis.set_ylabel("true category", fontsize=8)
    figure.colorbar(image, ax=axis, fraction=0.04)
    return _save(figure, path)


def write_plots(
    collected: Collected,
    results: dict[str, Any],
    out: Path,
    overlays_per_category: int = 4,
) -> list[Path]:
    """Write every plot that applies to ``results`` under ``out``; returns the files written."""
    written = [
        plot_scatter(collected, out / "scatter_base_hybrid.png"),
        plot_histograms(collected, out / "histograms.png"),
        plot_roc(collected, out / "roc.png"),
    ]
    for name in collected.names:
        written.append(plot_score_distribution(collected, name, out / "distributions" / f"{name}.png"))
    if overlays_per_category > 0:
        for name in collected.names:
            written.append(plot_overlays(collected, name, out / "overlays" / f"{name}.png", overlays_per_category))
    protocols = results.get("protocols", {})
    if "continual" in protocols:
        part = protocols["continual"]
        written.append(
            plot_continual_heatmap(
                part["matrix"]["image_auroc_hybrid"],
                part["columns"],
                out / "continual_heatmap.png",
                "Continual: image AUROC (hybrid) after each step, %",
            )
        )
    if "muad" in protocols:
        confusion = protocols["muad"]["routing"]["confusion"]
        written.append(plot_routing_confusion(confusion["labels"], confusion["matrix"], out / "routing_confusion.png"))
    if "open-set" in protocols:
        written.append(plot_open_set(protocols["open-set"], out / "open_set.png"))
    return written


def overlay_title(record: Mapping[str, Any]) -> str:
    """The corner text of an overlay: category, decision, hybrid score against its threshold."""
    decision = "ANOMALOUS" if record["anomalous"] else "ok"
    relation = ">" if record["anomalous"] else "<="
    unknown = " (unknown product?)" if record.get("unknown") else ""
    return (
        f"{record['category']}{unknown}: {decision}\n"
        f"hybrid {float(record['score_hybrid']):.3f} {relation} {float(record['threshold'] or 0.0):.3f}"
    )


def render_overlay(
    image: np.ndarray,
    anomaly_map: np.ndarray,
    *,
    threshold: float,
    title: str,
    anomalous: bool,
    vmax: float | None = None,
    dpi: int = 100,
    boxes: Sequence[tuple[float, float, float, float]] = (),
) -> Image.Image:
    """One scored image: the part, its anomaly map laid over it, a colour bar with the threshold.

    The map is translucent where it is low and opaque where it is high (alpha grows with the
    score from half the threshold to ``vmax``), so a good part shows as the plain photo and a
    defect as a coloured spot; the threshold is drawn on the colour bar and as a contour.

    Args:
        image: (3, H, W) float in [0, 1], the preprocessed crop the map belongs to (grey images
            are drawn in grey).
        anomaly_map: (H, W) anomaly map of that crop.
        threshold: the map value marked on the colour bar and as a contour (a category's base
            threshold: the 99.5% quantile of the train-good map maxima).
        title: text for the top-left corner (category, decision, scores).
        anomalous: colours the corner text red (True) or green.
        vmax: map value of the top colour [default: twice ``threshold``].
        dpi: resolution of the picture (at 100, a 392 px crop gives a picture about 500 px wide).
        boxes: defect regions to outline, (x, y, w, h) in the map's pixels, numbered 1, 2, ... in
            order (:func:`structcore.regions.boxes_on_model_map` moves a record's regions there).

    Returns:
        An RGB PIL image.
    """
    rgb = np.clip(np.asarray(image, dtype=np.float32).transpose(1, 2, 0), 0.0, 1.0)
    values = np.asarray(anomaly_map, dtype=np.float32)
    threshold = float(threshold)
    top = float(vmax) if vmax is not None and vmax > threshold else 2.0 * max(threshold, 1e-12)
    low = 0.5 * threshold if threshold > 0 else 0.0
    height, width = values.shape
    scale = max(1.0, 320.0 / max(width, 1))  # small crops are drawn larger, so the text fits
    shown_w, shown_h = width * scale, height * scale
    fig_w, fig_h = shown_w + 110.0, shown_h + 16.0  # pixels: margins and the colour bar on the right
    figure = Figure(figsize=(fig_w / dpi, fig_h / dpi), dpi=dpi)
    FigureCanvasAgg(figure)
    axis = figure.add_axes((8 / fig_w, 8 / fig_h, shown_w / fig_w, shown_h / fig_h))
    bar_axis = figure.add_axes(((shown_w + 22) / fig_w, 8 / fig_h, 14 / fig_w, shown_h / fig_h))
    grey = bool(np.allclose(rgb[..., 0], rgb[..., 1], atol=2e-3) and np.allclose(rgb[..., 0], rgb[..., 2], atol=2e-3))
    if grey:
        axis.imshow(rgb[..., 0], cmap="gray", vmin=0.0, vmax=1.0, interpolation="bilinear")
    else:
        axis.imshow(rgb, interpolation="bilinear")
    alpha = np.clip((values - low) / max(top - low, 1e-12), 0.0, 1.0) * 0.8
    heat = axis.imshow(values, cmap=OVERLAY_CMAP, vmin=low, vmax=top, alpha=alpha, interpolation="bilinear")
    if values.max() > threshold > values.min():
        axis.contour(values, levels=[threshold], colors="white", linewidths=0.8)
    axis.set_axis_off()
    colorbar = figure.colorbar(heat, cax=bar_axis)
    if colorbar.solids is not None:
        colorbar.solids.set_alpha(1.0)
    colorbar.ax.axhline(threshold, color="black", linewidth=2.5)
    colorbar.ax.axhline(threshold, color="white", linewidth=1.2)
    colorbar.set_ticks([low, threshold, top], labels=[f"{low:.3g}", f"thr {threshold:.3g}", f"{top:.3g}"])
    colorbar.ax.tick_params(labelsize=7)
    for number, (box_x, box_y, box_w, box_h) in enumerate(boxes, start=1):
        axis.add_patch(
            Rectangle((box_x - 0.5, box_y - 0.5), box_w, box_h, fill=False, edgecolor="#00e5ff", linewidth=1.4)
        )
        axis.text(
            box_x, box_y + box_h + 1, str(number), fontsize=7, va="top", ha="left", color="black",
            bbox={"facecolor": "#00e5ff", "alpha": 0.9, "edgecolor": "none", "pad": 1}, clip_on=True,
        )  # fmt: skip
    axis.text(
        6, 6, title, fontsize=8, va="top", ha="left", family="monospace",
        color="#ff5a50" if anomalous else "#50ff78",
        bbox={"facecolor": "black", "alpha": 0.75, "edgecolor": "none", "pad": 3}, clip_on=True,
    )  # fmt: skip
    canvas = figure.canvas
    assert isinstance(canvas, FigureCanvasAgg)
    canvas.draw()
    picture = Image.fromarray(np.asarray(canvas.buffer_rgba())[..., :3].copy())
    return picture
