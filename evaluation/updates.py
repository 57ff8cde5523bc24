"""The ``update`` variant of the continual protocol: one category that grows by ``registry update``.

``registry eval DATA --protocol continual --continual update`` (issue 23). Per category, the
train images (sorted by name) are cut into ``steps`` equal parts; the category is fitted on the
first part, then updated with each next part (:meth:`CategoryModel.updated` with the stored
k-nearest distances, what ``registry update`` runs after embedding the new images), and the
test set is scored after every step. With ``refit`` a full fit on the same images is scored
beside each update, so each step reports image AUROC (hybrid) and the FRR on test-good at the
model's own threshold for both, and their differences.

Every image is embedded once. Train patch vectors are rounded to float16 first, as the registry
stores them for updates, so an update and the refit beside it see the same vectors.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from evaluation.datasets import CategoryData, Dataset
from evaluation.metrics import image_metrics
from structcore.model import CategoryModel, embed_images
from structcore.progress import Progress, ProgressCallback, quiet
from structcore.settings import DEFAULT_UPDATE_STEPS

#: Images per predict call when scoring the test set.
_BATCH = 16


def step_bounds(n_images: int, steps: int) -> list[int]:
    """Train images used after each step: ``round(n * s / steps)`` for s = 1..steps (each step adds at least one)."""
    if steps < 1:
        msg = f"the update variant needs at least one step, got {steps}"
        raise ValueError(msg)
    if n_images < steps + 1:
        msg = f"{n_images} train images cannot be cut into {steps} update steps of at least one image (plus the fit)"
        raise ValueError(msg)
    bounds = [max(2, round(n_images * step / steps)) for step in range(1, steps + 1)]
    for index in range(1, len(bounds)):
        bounds[index] = max(bounds[index], bounds[index - 1] + 1)
    return bounds


def _test_metrics(model: CategoryModel, vectors: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Image AUROC (hybrid) and the false-reject / recall rates at the model's hybrid threshold."""
    scores = np.concatenate(
        [model.predict(vectors[start : start + _BATCH]).scores.hybrid for start in range(0, len(vectors), _BATCH)]
    )
    good = labels == 0
    threshold = float(model.thresholds["hybrid"])
    flagged = scores > threshold
    return {
        "image_auroc_hybrid": image_metrics(labels, scores)["auroc"],
        "frr": float(flagged[good].mean()) if good.any() else float("nan"),
        "recall": float(flagged[~good].mean()) if (~good).any() else float("nan"),
        "threshold": threshold,
    }


def evaluate_category_updates(
    data: CategoryData,
    extractor: Any,
    settings: CategoryModel | None = None,
    steps: int = DEFAULT_UPDATE_STEPS,
    *,
    refit: bool = True,
    progress: ProgressCallback = quiet,
) -> dict[str, Any]:
    """Fit on the first step's train images, update step by step, score the test set after each step.

    Returns:
        ``steps``: per step ``n_train``, ``added``, ``bank``, ``seconds`` (fit or update), ``update``
        (its test metrics) and, with ``refit``, ``refit`` (a full fit on the same images: its
        metrics, ``seconds``, ``bank``) and ``delta`` (update minus refit: AUROC, FRR).
    """
    params = (settings or CategoryModel()).get_params()
    bounds = step_bounds(len(data.train), steps)
    grid, crop = extractor.grid_shape(), extractor.geometry.crop
    progress(Progress("embed", 0, len(data.train) + len(data.test), data.name))
    train = embed_images(extractor, list(data.train)).astype(np.float16)
    test = embed_images(extractor, list(data.test))
    labels = np.asarray(data.labels)
    rows: list[dict[str, Any]] = []
    model: CategoryModel | None = None
    for index, n_train in enumerate(bounds):
        started = time.perf_counter()
        if model is None:
            model = CategoryModel(**params).fit(train[:n_train].astype(np.float32), grid, crop)  # type: ignore[arg-type]
        else:
            n_old = model.n_train_images_
            model = model.updated(
                train[:n_old], train[n_old:n_train].astype(np.float32), old_distances=model.train_distances_
            )
        row: dict[str, Any] = {
            "step": index,
            "n_train": n_train,
            "added": n_train - (bounds[index - 1] if index else 0),
            "mode": "fit" if index == 0 else "update",
            "seconds": time.perf_counter() - started,
            "bank": len(model.bank_),
            "update": _test_metrics(model, test, labels),
        }
        if refit and index:
            started = time.perf_counter()
            full = CategoryModel(**params).fit(train[:n_train].astype(np.float32), grid, crop)  # type: ignore[arg-type]
            row["refit"] = {
                **_test_metrics(full, test, labels),
                "seconds": time.perf_counter() - started,
                "bank": len(full.bank_),
            }
            row["delta"] = {
                key: row["update"][key] - row["refit"][key] for key in ("image_auroc_hybrid", "frr", "recall")
            }
        rows.append(row)
        progress(Progress("metrics", index + 1, len(bounds), data.name, "continual-update"))
    return {"n_train": len(data.train), "n_test": len(data.test), "steps": rows}


def evaluate_updates(
    dataset: Dataset,
    names: Sequence[str],
    extractor: Any,
    settings: CategoryModel | None = None,
    steps: int = DEFAULT_UPDATE_STEPS,
    *,
    refit: bool = True,
    progress: ProgressCallback = quiet,
) -> dict[str, Any]:
    """:func:`evaluate_category_updates` for each of ``names``, with the worst update-vs-refit gaps over all steps."""
    per_category = {
        name: evaluate_category_updates(
            dataset.categories[name], extractor, settings, steps, refit=refit, progress=progress
        )
        for name in names
    }
    compared = [row["delta"] for part in per_category.values() for row in part["steps"] if "delta" in row]
    worst = {
        "image_auroc_hybrid": max((abs(d["image_auroc_hybrid"]) for d in compared), default=float("nan")),
        "frr": max((abs(d["frr"]) for d in compared), default=float("nan")),
    }
    return {"variant": "update", "steps": steps, "refit": refit, "per_category": per_category, "max_abs_delta": worst}


__all__ = [
    "evaluate_category_updates",
    "evaluate_updates",
    "step_bounds",
]
