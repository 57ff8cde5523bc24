"""``registry bench``: the paper's Table 4 on this machine, plus each stage against its floor.

Part of a source checkout, not of the installed package: ``registry bench`` runs :func:`main`
(``python -m benchmarks.bench --help`` from the checkout does the same).

:func:`run_bench` measures, for one backbone, batch size and image set (default: MVTec AD
bottle of the real data, found as the tests find it: ``$STRUCTCORE_DATA/mvtec_ad/bottle``,
default ``<checkout>/../shared/data``, when present; else seeded synthetic images):

* the table: per coreset ratio (1%, 5%, 10%), ms per image of extract (backbone + projection),
  kNN (patch scores) and post (anomaly maps + StructCore scores), their total, images/s and
  the peak RSS of the process while scoring;
* ``knn``: the kNN search of one image's patches against the 1% bank over one float32 torch
  matmul of the same shape (the floor), for each exact engine, and the approximate HNSW index
  (recall@5, speed-up, AUROC change);
* ``coreset``: greedy k-center time over ``iterations x`` the time to stream the proxy matrix once,
  exact and approximate (coarse to fine), their covering radii and AUROC; the "common way"
  (50k x 512, 1%, ~270-dim sparse random projection, one torch distance pass per iteration) on
  the same input;
* ``extract``: achieved GFLOP/s of the backbone (FLOPs counted once with ``FlopCounterMode``)
  over the GFLOP/s of a large float32 matmul; reference vs fast path;
* ``routing``: routed inference time per image with 2, 20, 200 and 1000 categories (shortlist
  and exact), and routing accuracy on real categories with and without the shortlist;
* ``loading``: cold and warm ``Registry.load_category`` of the 1% category;
* ``memory``: peak RSS of ``add_category`` (in a subprocess) over the size of the projected
  patch matrix, beyond the RSS after the model is loaded.

Every ratio is measured in the same run as its reference, interleaved, as medians: other
processes share this machine. ``quick=True`` uses a few images and smaller inputs (a smoke test).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from structcore_runtime.graph import GraphSession
from structcore_runtime.knn import BankSearch, openvino_bf16_available
from torch.utils.flop_counter import FlopCounterMode

import structcore.coreset as coreset_module
from evaluation.datasets import load_mvtec
from evaluation.metrics import image_metrics, pixel_metrics
from evaluation.synthetic import CATEGORY_KINDS, make_category
from registry.core import Registry, forget_verified_checksums
from structcore.anomaly_map import DEFAULT_SIGMA, anomaly_maps, gaussian_blur, patch_score_grids
from structcore.backbones.base import Backbone, create_backbone
from structcore.backbones.efficientnet import EfficientNetLite2
from structcore.coreset import KCenterGreedy, covering_radius
from structcore.export_graph import cached_onnx
from structcore.features import FeatureExtractor, build_extractor, new_feature_space
from structcore.knn import PatchKNN, bf16_matmul_supported
from structcore.model import CategoryModel, embed_images
from structcore.preprocess import load_mask, preprocess_mask
from structcore.routing import PrototypeRouter, l2_normalize, patch_vectors_to_prototypes
from structcore.runtime import set_num_threads
from structcore.settings import DEFAULT_BACKBONE, backbone_runtime

#: Sections of the bench (all run by default; ``large_fit`` only when asked).
SECTIONS = ("table", "knn", "coreset", "extract", "routing", "loading", "memory")
OPTIONAL_SECTIONS = ("large_fit", "start", "deploy", "tile")
#: Categories of the registry ``registry list`` is timed on (section ``start``).
START_CATEGORIES = 1000
#: Heavy libraries a model-free command must not import.
HEAVY_MODULES = ("torch", "sklearn", "scipy", "faiss", "ray")
DEFAULT_RATIOS = (0.01, 0.05, 0.10)
#: HNSW settings of the approximate-index comparison (graph degree; search breadths swept).
HNSW_M = 32
HNSW_EF_SEARCH = (64, 128, 256)
#: Category counts of the routing scale test.
ROUTE_COUNTS = (2, 20, 200, 1000)
#: The checkout holding this file (its ``benchmarks/`` is not installed; child processes import it from here).
CHECKOUT = Path(__file__).resolve().parents[1]
#: Real data root, as the tests find it (tests/conftest.py): ``$STRUCTCORE_DATA``, else ``<checkout>/../shared/data``.
DATA_ENV = "STRUCTCORE_DATA"
#: Banks above this many point-center distances (``n_select x N``) are drawn as seeded random
#: subsets of the right size in the table (kNN time depends on the bank size, not its content);
#: the 1% bank is always the real coreset.
TABLE_CORESET_MAX_WORK = 4.0e9

Progress = Callable[[str], None]


# ----------------------------------------------------------------------------- measurement
def median_times(functions: dict[str, Callable[[], object]], repeats: int, warmup: int = 1) -> dict[str, float]:
    """Median seconds of each function, run round-robin (interleaved) ``repeats`` times."""
    for _ in range(warmup):
        for function in functions.values():
            function()
    samples: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            started = time.perf_counter()
            function()
            samples[name].append(time.perf_counter() - started)
    return {name: float(np.median(values)) for name, values in samples.items()}


def _status_kb(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return float(line.split()[1])
    except OSError:  # pragma: no cover - not Linux
        return None
    return None


def rss_mb() -> float | None:
    """Current resident set size (MB), from ``/proc/self/status``."""
    value = _status_kb("VmRSS")
    return None if value is None else value / 1024


def peak_rss_mb() -> float | None:
    """Peak resident set size (MB) since start or since :func:`reset_peak_rss`."""
    value = _status_kb("VmHWM")
    if value is None:  # pragma: no cover - not Linux
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return value / 1024


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter of this process (Linux ``clear_refs`` 5)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


# ------------------------------------------------------------------------------------- data
@dataclass
class _Images:
    """The bench's image set: sources (paths or arrays), test labels and masks."""

    name: str
    train: list[Any]
    test: list[Any]
    labels: np.ndarray
    masks: list[Any]  # mask path, boolean array, or None per test image
    synthetic: bool


def _mvtec(folder: Path, quick: bool, seed: int) -> _Images:
    data = load_mvtec(folder).categories[folder.name]  # test images: good first, then defects by name
    train: list[Any] = list(data.train)
    test: list[Any] = list(data.test)
    labels: list[int] = [int(label) for label in data.labels]
    masks: list[Any] = list(data.masks)
    if quick:
        rng = np.random.default_rng(seed)
        train = [train[i] for i in sorted(rng.choice(len(train), min(len(train), 12), replace=False))]
        good = [i for i, label in enumerate(labels) if label == 0][:3]
        bad = [i for i, label in enumerate(labels) if label == 1][:5]
        keep = good + bad
        test, labels, masks = [test[i] for i in keep], [labels[i] for i in keep], [masks[i] for i in keep]
    return _Images(folder.name, train, test, np.asarray(labels), masks, synthetic=False)


def _synthetic(quick: bool, seed: int, kind: str = "pill") -> _Images:
    n_train, n_good, n_bad = (8, 2, 2) if quick else (60, 10, 20)
    category = make_category(kind, n_train=n_train, n_test_good=n_good, n_test_bad=n_bad, seed=seed, size=256)
    return _Images(
        f"synthetic-{kind}",
        list(category.train_images),
        list(category.test_images),
        np.asarray(category.test_labels),
        list(category.test_masks),
        synthetic=True,
    )


def default_images() -> Path:
    """MVTec AD bottle of the real data: ``$STRUCTCORE_DATA/mvtec_ad/bottle``.

    ``$STRUCTCORE_DATA`` defaults to ``<checkout>/../shared/data``, as in ``tests/conftest.py``.
    """
    configured = os.environ.get(DATA_ENV)
    root = Path(configured).expanduser() if configured else CHECKOUT.parent / "shared" / "data"
    return root / "mvtec_ad" / "bottle"


def _load_images(images: str | Path | None, quick: bool, seed: int) -> _Images:
    if images is None:
        images = default_images() if (default_images() / "train" / "good").is_dir() else "synthetic"
    if str(images) == "synthetic":
        return _synthetic(quick, seed)
    folder = Path(images)
    if (folder / "train" / "good").is_dir():
        return _mvtec(folder, quick, seed)
    msg = f"{folder} is not an MVTec-style category folder (train/good, test/<defect>); or pass 'synthetic'"
    raise ValueError(msg)


def _mask_array(mask: Any, extractor: FeatureExtractor) -> np.ndarray:
    crop = extractor.geometry.crop
    if mask is None:
        return np.zeros((crop, crop), dtype=bool)
    if isinstance(mask, str | Path):
        return load_mask(mask, extractor.geometry)
    return preprocess_mask(np.asarray(mask), extractor.geometry)


def _batches(count: int, size: int) -> Iterator[slice]:
    for start in range(0, count, size):
        yield slice(start, min(count, start + size))


# ------------------------------------------------------------------------------ the bench
def run_bench(
    images: str | Path | None = None,
    *,
    backbone: str = DEFAULT_BACKBONE,
    weights: str | Path | None = None,
    batch_size: int = 8,
    ratios: Sequence[float] = DEFAULT_RATIOS,
    quick: bool = False,
    threads: int | None = None,
    sections: Sequence[str] | None = None,
    compile: bool = False,
    seed: int = 42,
    resize: int | None = None,
    crop: int | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Run the benchmark and return its figures as one JSON-compatible dict.

    Args:
        images: an MVTec-style category folder (``train/good``, ``test/<defect>``,
            ``ground_truth``), ``"synthetic"``, or ``None`` for :func:`default_images` when present
            (else synthetic).
        backbone: registered backbone name; ``weights`` its weights file when needed.
        batch_size: images per backbone call.
        ratios: coreset ratios of the table rows (the first is the reference bank everywhere).
        quick: a few images and smaller inputs (a smoke test, seconds to a minute).
        threads: torch / faiss threads (default: torch's current setting).
        sections: subset of :data:`SECTIONS` (+ ``"large_fit"``, ``"start"``, ``"deploy"``); ``None`` runs
            :data:`SECTIONS`.
        compile: also measure the ``torch.compile``-d fast path (first call compiles, ~30 s).
        seed: seeds the feature space, coresets and samples.
        resize, crop: preprocessing geometry (default 448 -> 392; ``quick``: 160 -> 160).
        progress: ``progress(message)`` as each step starts.

    Returns:
        Keys ``rows`` (the table), ``knn``, ``coreset``, ``extract``, ``routing``, ``loading``,
        ``memory``, ``accuracy`` (section dicts) and the headline ratios ``knn_floor_ratio``,
        ``coreset_floor_ratio``, ``extract_gemm_fraction``, ``route_cost_ratio_1000_vs_2``,
        ``fit_rss_ratio`` (``None`` for sections not run); see :func:`format_bench`.
    """
    chosen = tuple(SECTIONS if sections is None else sections)
    unknown = [s for s in chosen if s not in SECTIONS + OPTIONAL_SECTIONS]
    if unknown:
        msg = f"unknown bench sections {unknown}; choose from {SECTIONS + OPTIONAL_SECTIONS}"
        raise ValueError(msg)
    say = progress or (lambda _message: None)
    started = time.perf_counter()
    set_num_threads(torch.get_num_threads() if threads is None else threads)
    result: dict[str, Any] = {
        "config": {
            "backbone": backbone,
            "batch_size": batch_size,
            "ratios": list(ratios),
            "quick": quick,
            "sections": list(chosen),
            "seed": seed,
        },
        "machine": _machine(),
        "rows": [],
        "knn_floor_ratio": None,
        "coreset_floor_ratio": None,
        "extract_gemm_fraction": None,
        "route_cost_ratio_1000_vs_2": None,
        "fit_rss_ratio": None,
    }
    say("loading images")
    data = _load_images(images, quick, seed)
    result["config"].update(images=data.name, n_train=len(data.train), n_test=len(data.test))
    say(f"building backbone {backbone}")
    bb = create_backbone(backbone, weights)
    stride = bb.info.patch_stride
    side = max(stride, round(160 / stride) * stride) if quick else 392  # 392 = 49 x 8 = 28 x 14
    crop = crop or side
    resize = resize or (crop if quick else 448)
    space = new_feature_space(bb, resize=resize, crop=crop, seed=seed)
    result["config"].update(resize=resize, crop=crop)
    extractor = build_extractor(space, bb, batch_size=batch_size)
    reference_extractor = build_extractor(space, bb, batch_size=batch_size, fast=False)
    grid = extractor.grid_shape()

    context = _Context(
        data=data,
        backbone=bb,
        extractor=extractor,
        reference_extractor=reference_extractor,
        train=np.empty((0, 0, 0), dtype=np.float32),
        test_batches=[],
        masks=None,
        grid=grid,
        crop=crop,
        quick=quick,
        seed=seed,
        say=say,
        weights=weights,
        backbone_name=backbone,
    )
    if any(section in chosen for section in ("table", "knn", "coreset", "extract", "routing", "loading", "deploy")):
        say(f"embedding {len(data.train)} train images")
        context.train = embed_images(extractor, data.train)
        say(f"preparing {len(data.test)} test images")
        context.test_batches = [extractor.prepare(data.test[part]) for part in _batches(len(data.test), batch_size)]
        if len(data.masks):
            context.masks = np.stack([_mask_array(mask, extractor) for mask in data.masks])
        say("fitting the 1% category (auto coreset)")
        context.model = context.fit(ratios[0], method="auto", timings=result.setdefault("fit", {}))
        if "extract" in chosen:
            say("extract vs machine")
            result["extract"] = _extract_section(context, compile)
            result["extract_gemm_fraction"] = result["extract"]["gemm_fraction"]
        if "table" in chosen:
            result["rows"] = _table(context, ratios)
        result["accuracy"] = _accuracy(context)
        if "knn" in chosen:
            say("kNN vs floor")
            result["knn"] = _knn_section(context)
            result["knn_floor_ratio"] = result["knn"]["floor_ratio"]
        if "coreset" in chosen:
            say("coreset vs floor")
            result["coreset"] = _coreset_section(context, ratios[0], result["fit"])
            result["coreset_floor_ratio"] = result["coreset"]["floor_ratio"]
        if "routing" in chosen:
            say("routing scale")
            result["routing"] = _routing_section(context, result)
            result["route_cost_ratio_1000_vs_2"] = result["routing"]["cost_ratio_1000_vs_2"]
        if "loading" in chosen:
            say("bank loading")
            result["loading"] = _loading_section(context)
        if "deploy" in chosen:
            say("backbone runtimes and kNN engines (issue 26)")
            result["deploy"] = _deploy_section(context)
    if "memory" in chosen:
        say("fit memory (subprocess)")
        result["memory"] = _memory_section(context)
        result["fit_rss_ratio"] = result["memory"].get("ratio")
    if "large_fit" in chosen:
        say("large add-category (subprocess)")
        result["large_fit"] = _large_fit_section(context)
    if "tile" in chosen:
        say("tile geometry: cost per image and per megapixel against squash (issue 25)")
        result["tile"] = _tile_section(context)
    if "start" in chosen:
        say(f"registry list start time on {START_CATEGORIES} categories (subprocesses)")
        result["start"] = _start_section(context, START_CATEGORIES)
        result["list_start_seconds"] = result["start"]["median_seconds"]
    result["targets"] = target_checks(result)
    result["seconds"] = time.perf_counter() - started
    return result


#: Headline ratio -> its target (an upper bound), as in docs/performance.md.
TARGETS = {
    "knn_floor_ratio": 1.5,
    "coreset_floor_ratio": 2.0,
    "route_cost_ratio_1000_vs_2": 1.5,
    "fit_rss_ratio": 2.0,
    #: seconds, not a ratio: wall time of a bare ``registry list`` on START_CATEGORIES categories
    "list_start_seconds": 0.5,
}
#: Why a ``quick`` run (a smoke test: few, small images) cannot speak to each target; the full
#: bench checks them. Filled in from the result by :func:`_verdict`.
NOT_COMPARABLE_WHEN_QUICK = {
    "knn_floor_ratio": "a {bank}-vector bank, where call overhead dominates",
    "coreset_floor_ratio": "{points} points, where per-iteration overhead dominates",
    "route_cost_ratio_1000_vs_2": "it routes among {largest} categories, not " + str(ROUTE_COUNTS[-1]),
    "fit_rss_ratio": "{images} small images, where fixed costs dominate",
}


def target_checks(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each measured headline ratio against its target: ``{"value", "target", "status"}``.

    ``status`` is ``"PASS"``, ``"MISS"`` or ``"not comparable"`` (a quick run's fit memory).
    """
    quick = bool(result.get("config", {}).get("quick"))
    checks: dict[str, dict[str, Any]] = {}
    for key, target in TARGETS.items():
        value = result.get(key)
        if not isinstance(value, int | float) or math.isnan(value):
            continue
        if quick and key in NOT_COMPARABLE_WHEN_QUICK:
            status = "not comparable"
        else:
            status = "PASS" if value <= target else "MISS"
        checks[key] = {"value": float(value), "target": target, "status": status}
    return checks


def _verdict(result: dict[str, Any], key: str) -> str:
    """``target <= 1.5: PASS`` (or ``MISS``; for a quick run's fit memory: why it is not comparable)."""
    check = target_checks(result).get(key)
    if check is None:
        return f"target <= {TARGETS[key]}"
    if check["status"] == "not comparable":
        reason = NOT_COMPARABLE_WHEN_QUICK[key].format(
            bank=result.get("knn", {}).get("bank_size", "small"),
            points=result.get("coreset", {}).get("n_points", "few"),
            largest=max(result.get("routing", {}).get("counts") or [0]),
            images=result.get("memory", {}).get("images", "a few"),
        )
        return f"target <= {check['target']} is for the full run; not comparable in --quick: {reason}"
    return f"target <= {check['target']}: {check['status']}"


@dataclass
class _Context:
    data: _Images
    backbone: Backbone
    extractor: FeatureExtractor
    reference_extractor: FeatureExtractor
    train: np.ndarray
    test_batches: list[torch.Tensor]
    masks: np.ndarray | None
    grid: tuple[int, int]
    crop: int
    quick: bool
    seed: int
    say: Progress
    weights: str | Path | None
    backbone_name: str
    model: CategoryModel | None = None
    vectors: np.ndarray | None = None

    @property
    def test(self) -> np.ndarray:
        """Projected patch vectors (n_test, P, D) of the test images (embedded once)."""
        if self.vectors is None:
            self.vectors = np.concatenate([self.extractor.embed(batch).numpy() for batch in self.test_batches])
        return self.vectors

    def fit(self, ratio: float, method: str, timings: dict[str, Any] | None = None) -> CategoryModel:
        """A category model at ``ratio`` with the coreset ``method`` forced; stage times into ``timings``."""
        marks: list[tuple[str, float]] = []
        model = CategoryModel(coreset_ratio=ratio, seed=self.seed, coreset_method=method)
        model.fit(
            self.train, self.grid, self.crop, progress=lambda event: marks.append((event.stage, time.perf_counter()))
        )
        end = time.perf_counter()
        if timings is not None:
            stages = {name: (marks[i + 1][1] if i + 1 < len(marks) else end) - at for i, (name, at) in enumerate(marks)}
            timings[f"{ratio:g}-{method}"] = {"seconds": stages, "bank_size": len(model.bank_)}
        return model


@torch.inference_mode()
def anomaly_maps_reference(
    patch_scores: np.ndarray | torch.Tensor,
    output_size: int,
    sigma: float = DEFAULT_SIGMA,
) -> np.ndarray:
    """The benchmark's reference for :func:`structcore.anomaly_map.anomaly_maps`: ``F.interpolate`` then blur."""
    grids = patch_score_grids(patch_scores)
    upsampled = F.interpolate(
        grids.unsqueeze(1), size=(output_size, output_size), mode="bilinear", align_corners=False
    ).squeeze(1)
    return gaussian_blur(upsampled, sigma).numpy()


def _machine() -> dict[str, Any]:
    try:
        load = os.getloadavg()
    except OSError:  # pragma: no cover
        load = (float("nan"),) * 3
    return {
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "bf16_matmul": bf16_matmul_supported(),
        "backbone_runtime": backbone_runtime(),
        "load_average_at_start": [round(v, 2) for v in load],
    }


# ------------------------------------------------------------------------------ the table
def _bank_for(context: _Context, ratio: float) -> tuple[np.ndarray, str]:
    flat = context.train.reshape(-1, context.train.shape[-1])
    count = max(1, math.ceil(len(flat) * ratio))
    if float(count) * len(flat) > TABLE_CORESET_MAX_WORK:
        rows = np.sort(np.random.default_rng(context.seed).choice(len(flat), count, replace=False))
        return flat[rows], "random subset"
    selected = KCenterGreedy(ratio=ratio, seed=context.seed).fit(flat).indices_
    return flat[selected], "coreset"


def _table(context: _Context, ratios: Sequence[float]) -> list[dict[str, Any]]:
    assert context.model is not None
    rows = []
    for ratio in ratios:
        context.say(f"table row {ratio:.0%}")
        if ratio == ratios[0]:
            model, kind = context.model, "coreset"
        else:
            bank, kind = _bank_for(context, ratio)
            model = _with_bank(context.model, bank)
        model.knn()  # index built before timing (part of loading, not of scoring)
        # Warm-up batch (first-call allocations, oneDNN primitive creation).
        warm = context.extractor.embed(context.test_batches[0]).numpy()
        model.predict(warm)
        reset_peak_rss()
        stage: dict[str, list[float]] = {"extract": [], "knn": [], "post": []}
        count = 0
        for batch in context.test_batches:
            size = int(batch.shape[0])
            t0 = time.perf_counter()
            vectors = context.extractor.embed(batch).numpy()
            t1 = time.perf_counter()
            scores = model.patch_scores(vectors)
            t2 = time.perf_counter()
            maps = anomaly_maps(scores.reshape(size, *model.grid_), model.map_size_, model.sigma)
            model.calibrator_.score(maps)
            t3 = time.perf_counter()
            for name, seconds in zip(stage, (t1 - t0, t2 - t1, t3 - t2), strict=True):
                stage[name].append(seconds / size)
            count += size
        ms = {name: 1000 * float(np.median(values)) for name, values in stage.items()}
        total = sum(ms.values())
        rows.append(
            {
                "coreset": ratio,
                "bank_size": len(model.bank_),
                "bank": kind,
                "extract_ms": ms["extract"],
                "knn_ms": ms["knn"],
                "post_ms": ms["post"],
                "total_ms": total,
                "images_per_s": 1000.0 / total if total > 0 else float("nan"),
                "peak_rss_mb": peak_rss_mb(),
                "images": count,
                "knn_engine": model.knn().engine_,
            }
        )
    return rows


def _predict_all(context: _Context, model: CategoryModel, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    maps, scores = [], []
    for part in _batches(len(vectors), 16):
        prediction = model.predict(vectors[part])
        maps.append(prediction.maps)
        scores.append(prediction.scores.hybrid)
    return np.concatenate(maps), np.concatenate(scores)


def _metrics(context: _Context, maps: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    labels = context.data.labels
    found: dict[str, float] = {"image_auroc": image_metrics(labels, scores)["auroc"]}
    if context.masks is not None and context.masks.any():
        pixel = pixel_metrics(context.masks, maps, max_pixels=4_000_000, seed=context.seed)
        found["pixel_auroc"] = pixel.get("auroc", float("nan"))
    return found


def _accuracy(context: _Context) -> dict[str, Any]:
    assert context.model is not None
    context.say("accuracy of the 1% model")
    maps, scores = _predict_all(context, context.model, context.test)
    found = _metrics(context, maps, scores)
    # the decision at the shipped threshold: test-good false-reject rate and defect recall
    defective = np.asarray(context.data.labels).astype(bool)
    flagged = scores > float(context.model.thresholds["hybrid"])
    found["frr"] = float(flagged[~defective].mean()) if (~defective).any() else float("nan")
    found["recall"] = float(flagged[defective].mean()) if defective.any() else float("nan")
    # Post-processing: matrix-form maps vs the direct computation (float tolerance).
    patch = context.model.patch_scores(context.test[:4]).reshape(-1, *context.grid)
    fast, plain = anomaly_maps(patch, context.crop), anomaly_maps_reference(patch, context.crop)
    found["maps_max_abs_difference"] = float(np.abs(fast - plain).max())
    return found


# ------------------------------------------------------------------------------------ kNN
def _knn_section(context: _Context) -> dict[str, Any]:
    assert context.model is not None
    vectors = context.test
    bank = np.ascontiguousarray(context.model.bank_, dtype=np.float32)
    faiss_knn = PatchKNN(engine="faiss").fit(bank)
    auto_knn = PatchKNN(engine="auto").fit(bank)
    bank_t = torch.from_numpy(bank).T.contiguous()
    out = torch.empty(vectors.shape[1], len(bank))
    queries = [vectors[i % len(vectors)] for i in range(64)]
    position = {"faiss": 0, "auto": 0, "matmul": 0}

    def run(name: str, function: Callable[[np.ndarray], object]) -> Callable[[], object]:
        def call() -> object:
            position[name] = (position[name] + 1) % len(queries)
            return function(queries[position[name]])

        return call

    repeats = 3 if context.quick else 15
    times = median_times(
        {
            "faiss": run("faiss", faiss_knn.search),
            "auto": run("auto", auto_knn.search),
            "matmul": run("matmul", lambda q: torch.mm(torch.from_numpy(q), bank_t, out=out)),
        },
        repeats,
    )
    # Exactness of the engine in use vs faiss on every test image.
    same = 0
    max_difference = 0.0
    for image in vectors:
        d_faiss, i_faiss = faiss_knn.search(image)
        d_auto, i_auto = auto_knn.search(image)
        max_difference = max(max_difference, float(np.abs(d_faiss - d_auto).max()))
        same += int(np.sum(np.sort(i_faiss, axis=1) == np.sort(i_auto, axis=1)))
    section: dict[str, Any] = {
        "bank_size": len(bank),
        "queries": int(vectors.shape[1]),
        "dim": int(bank.shape[1]),
        "engine": auto_knn.engine_,
        "ms": {name: 1000 * seconds for name, seconds in times.items()},
        "floor_ratio": times["auto"] / times["matmul"],
        "faiss_floor_ratio": times["faiss"] / times["matmul"],
        "engine_vs_faiss_speedup": times["faiss"] / times["auto"],
        "exact_neighbour_agreement": same / float(vectors.shape[0] * vectors.shape[1] * faiss_knn.k),
        "exact_distance_max_abs_difference": max_difference,
    }
    section["hnsw"] = _hnsw(context, context.model, faiss_knn, auto_knn, queries, repeats)
    large_ratio = max(DEFAULT_RATIOS)
    context.say(f"HNSW at a {large_ratio:.0%} bank")
    large_bank, kind = _bank_for(context, large_ratio)
    large_model = _with_bank(context.model, large_bank)
    section["hnsw_large_bank"] = {
        "ratio": large_ratio,
        "bank": kind,
        "bank_size": len(large_bank),
        **_hnsw(
            context,
            large_model,
            PatchKNN(engine="faiss").fit(large_bank),
            large_model.knn(),
            queries,
            max(3, repeats // 3),
        ),
    }
    return section


def _with_bank(model: CategoryModel, bank: np.ndarray) -> CategoryModel:
    """``model`` with another bank (same calibration): kNN time depends on the bank size."""
    arrays = {**model.to_arrays(), "bank": bank, "bank_image_ids": np.zeros(len(bank), np.int32)}
    return CategoryModel.from_parts(arrays, model.to_metadata())


def _hnsw(
    context: _Context,
    model: CategoryModel,
    faiss_knn: PatchKNN,
    exact_knn: PatchKNN,
    queries: list[np.ndarray],
    repeats: int,
) -> dict[str, Any]:
    """HNSW over ``model``'s bank at each :data:`HNSW_EF_SEARCH` (one graph): recall@5, speed, AUROC.

    Recall is against the exact engine's neighbours, AUROC against ``model`` with its exact index.
    The headline is the smallest ``efSearch`` with recall@5 >= 0.99 and image / pixel AUROC equal
    to the exact ones to 3 decimals (the largest one when none qualifies).
    """
    vectors = context.test
    exact_maps, exact_scores = _predict_all(context, model, vectors)
    exact_metrics = _metrics(context, exact_maps, exact_scores)
    exact_neighbours = [exact_knn.search(image)[1] for image in vectors]
    built = time.perf_counter()
    hnsw = PatchKNN(index="hnsw", hnsw_m=HNSW_M, hnsw_ef_search=HNSW_EF_SEARCH[0]).fit(model.bank_)
    build_seconds = time.perf_counter() - built
    position = {"n": 0}

    def cycled(search: Callable[[np.ndarray], object]) -> Callable[[], object]:
        def call() -> object:
            position["n"] = (position["n"] + 1) % len(queries)
            return search(queries[position["n"]])

        return call

    sweep: list[dict[str, Any]] = []
    for ef_search in HNSW_EF_SEARCH:
        hnsw.hnsw_ef_search = ef_search
        hnsw.index_.hnsw.efSearch = ef_search
        hits = total = 0
        for image, exact in zip(vectors, exact_neighbours, strict=True):
            _, approx = hnsw.search(image)
            hits += sum(len(set(a) & set(e)) for a, e in zip(approx.tolist(), exact.tolist(), strict=True))
            total += exact.size
        times = median_times(
            {"hnsw": cycled(hnsw.search), "faiss": cycled(faiss_knn.search), "auto": cycled(exact_knn.search)},
            repeats,
        )
        saved = model._knn
        model._knn = hnsw
        try:
            approx_maps, approx_scores = _predict_all(context, model, vectors)
        finally:
            model._knn = saved
        found = _metrics(context, approx_maps, approx_scores)
        unchanged = all(round(found[key], 3) == round(exact_metrics[key], 3) for key in exact_metrics)
        sweep.append(
            {
                "m": HNSW_M,
                "ef_search": ef_search,
                "build_s": build_seconds,
                "recall_at_5": hits / max(1, total),
                "ms": 1000 * times["hnsw"],
                "exact_ms": 1000 * times["auto"],
                "faiss_ms": 1000 * times["faiss"],
                "speedup_vs_faiss_flat": times["faiss"] / times["hnsw"],
                "speedup_vs_exact_engine": times["auto"] / times["hnsw"],
                "exact": exact_metrics,
                "hnsw": found,
                "auroc_unchanged": unchanged,
            }
        )
    passing = [entry for entry in sweep if float(entry["recall_at_5"]) >= 0.99 and entry["auroc_unchanged"]]
    return {**(passing[0] if passing else sweep[-1]), "qualifies": bool(passing), "sweep": sweep}


# -------------------------------------------------------------------------------- coreset
def common_way_coreset(points: np.ndarray, ratio: float, seed: int = 0) -> np.ndarray:
    """The usual PatchCore coreset (anomalib style), as the reference of the comparison.

    Sparse random projection to the Johnson-Lindenstrauss dimension for eps = 0.9 (~270 dims for
    50k points), then per iteration one ``torch.linalg.norm(features - features[idx])`` pass.
    """
    n_points, dim = points.shape
    eps = 0.9
    target_dim = min(dim, int(4 * math.log(n_points) / (eps**2 / 2 - eps**3 / 3)))
    rng = np.random.default_rng(seed)
    density = 1 / math.sqrt(dim)
    mask = rng.random((dim, target_dim)) < density
    signs = rng.choice([-1.0, 1.0], size=(dim, target_dim))
    projection = torch.from_numpy((mask * signs / math.sqrt(density * target_dim)).astype(np.float32))
    features = torch.from_numpy(np.ascontiguousarray(points, dtype=np.float32)) @ projection
    count = max(1, math.ceil(n_points * ratio))
    index = int(rng.integers(n_points))
    selected = [index]
    min_distances = torch.linalg.norm(features - features[index], dim=1, keepdim=True)
    for _ in range(count - 1):
        index = int(torch.argmax(min_distances))
        distances = torch.linalg.norm(features - features[index], dim=1, keepdim=True)
        min_distances = torch.minimum(min_distances, distances)
        min_distances[index] = 0
        selected.append(index)
    return np.asarray(selected)


def _stream_floor(proxy: torch.Tensor, repeats: int) -> dict[str, float]:
    vector = torch.ones(proxy.shape[1])
    out = torch.empty(proxy.shape[0])
    times = median_times(
        {"sum": lambda: proxy.sum(), "mv": lambda: torch.mv(proxy, vector, out=out)}, repeats, warmup=2
    )
    return {"sum_s": times["sum"], "mv_s": times["mv"], "floor_s": min(times.values())}


def _coreset_section(context: _Context, ratio: float, fit_timings: dict[str, Any]) -> dict[str, Any]:
    """Exact vs approximate greedy on the train vectors, each timed inside a full category fit."""
    assert context.model is not None
    flat = context.train.reshape(-1, context.train.shape[-1])
    n_points = len(flat)
    selector = KCenterGreedy(ratio=ratio, seed=context.seed)
    proxy = selector._proxy(flat)
    target = selector._target_size(n_points)
    repeats = 5 if context.quick else 9
    auto = selector.resolve_method(n_points)
    section: dict[str, Any] = {
        "n_points": n_points,
        "proxy_dim": int(proxy.shape[1]),
        "n_select": target,
        "auto_method": auto,
        "auto_threshold_work": coreset_module.APPROX_MIN_WORK,
    }
    floors = [_stream_floor(proxy, repeats)]
    models: dict[str, CategoryModel] = {auto: context.model}
    seconds: dict[str, float] = {auto: fit_timings[f"{ratio:g}-auto"]["seconds"]["coreset"]}
    for method in ("exact", "approx"):
        if method in models:
            continue
        context.say(f"1% category with the {method} coreset on {n_points} points")
        timings: dict[str, Any] = {}
        models[method] = context.fit(ratio, method, timings)
        seconds[method] = timings[f"{ratio:g}-{method}"]["seconds"]["coreset"]
        floors.append(_stream_floor(proxy, repeats))
    del proxy
    floor = float(np.median([f["floor_s"] for f in floors]))
    section["stream_floor_ms"] = 1000 * floor
    section["stream"] = floors
    context.say("covering radii and AUROC of both banks")
    for method, model in models.items():
        maps, scores = _predict_all(context, model, context.test)
        section[method] = {
            "seconds": seconds[method],
            "ms_per_iteration": 1000 * seconds[method] / target,
            "floor_ratio": seconds[method] / (target * floor),
            "proxy_radius": model.coreset_radius_,
            "radius": covering_radius(flat, np.asarray(model.bank_, dtype=np.float32)),
            **_metrics(context, maps, scores),
        }
    exact_rows = {tuple(row) for row in np.asarray(models["exact"].bank_[:, :8]).tolist()}
    shared = sum(tuple(row) in exact_rows for row in np.asarray(models["approx"].bank_[:, :8]).tolist())
    section["overlap"] = shared / target
    section["radius_ratio_approx_vs_exact"] = section["approx"]["radius"] / max(section["exact"]["radius"], 1e-12)
    section["approx_speedup"] = seconds["exact"] / seconds["approx"]
    section["floor_ratio"] = section[auto]["floor_ratio"]
    section["common_way"] = _common_way(context, flat)
    return section


def _common_way(context: _Context, flat: np.ndarray) -> dict[str, Any]:
    """Ours vs :func:`common_way_coreset` on the same sample, in this process and in a plain one.

    In this process the allocator keeps freed pages (:func:`structcore.runtime.tune_allocator`),
    which also spares the common way the page faults of its per-iteration ``(N, d)`` temporary; a
    fresh process with glibc's default settings times the common way as its users run it.
    """
    size = min(len(flat), 10_000 if context.quick else 50_000)
    rows = np.sort(np.random.default_rng(context.seed).choice(len(flat), size, replace=False))
    sample = np.ascontiguousarray(flat[rows])
    context.say(f"common-way coreset on {size} x {sample.shape[1]}")

    def ours() -> object:
        return KCenterGreedy(ratio=0.01, seed=context.seed).fit(sample)

    before = median_times({"ours": ours}, 3, warmup=1)["ours"]
    started = time.perf_counter()
    common_way_coreset(sample, 0.01, context.seed)
    theirs = time.perf_counter() - started
    plain = _common_way_plain_process(sample, context.seed)
    after = median_times({"ours": ours}, 3, warmup=0)["ours"]
    ours_s = float(np.median([before, after]))
    found: dict[str, Any] = {"n_points": size, "common_s": theirs, "ours_s": ours_s, "speedup": theirs / ours_s}
    if plain is not None:
        found.update(common_plain_process_s=plain, speedup_plain_process=plain / ours_s)
    return found


def _common_way_plain_process(sample: np.ndarray, seed: int) -> float | None:
    """Seconds of :func:`common_way_coreset` in a new process with the default allocator settings."""
    code = (
        "import json, sys, time\n"
        "import numpy as np, torch\n"
        "torch.set_num_threads(int(sys.argv[2]))\n"
        f"sys.path.insert(0, {str(CHECKOUT)!r})\n"
        "from benchmarks.bench import common_way_coreset\n"
        "sample = np.fromfile(sys.argv[1], dtype=np.float32).reshape(-1, int(sys.argv[4]))\n"
        "t = time.perf_counter(); common_way_coreset(sample, 0.01, int(sys.argv[3]))\n"
        "print(json.dumps(time.perf_counter() - t))\n"
    )
    with tempfile.TemporaryDirectory(prefix="structcore-bench-common-") as folder:
        path = Path(folder) / "sample.f32"
        np.ascontiguousarray(sample, dtype=np.float32).tofile(path)
        environment = dict(os.environ, STRUCTCORE_TUNE_MALLOC="0")
        try:
            output = subprocess.run(
                [sys.executable, "-c", code, str(path), str(torch.get_num_threads()), str(seed), str(sample.shape[1])],
                capture_output=True, text=True, check=True, timeout=1800, env=environment,
            )  # fmt: skip
            return float(json.loads(output.stdout.strip().splitlines()[-1]))
        except (subprocess.SubprocessError, ValueError, IndexError):
            return None


# -------------------------------------------------------------------------------- extract
def _deploy_section(context: _Context) -> dict[str, Any]:
    """Issue 26's components, interleaved: extract ms/img per backbone runtime, kNN ms/img per engine.

    Extract: the test batch through torch, ONNX Runtime f32, OpenVINO f32 and bf16 (those
    installed; the exported graph of this extractor, cached). kNN: the 1% bank searched by the
    registry's bf16 engine (torch), the runtime's screened engine (OpenVINO bf16 screen) and
    faiss ``IndexFlatL2``; all exact, so their scores agree to float32 rounding. End to end per
    runtime (files -> records, the torch-free runtime included) is ``benchmarks/runtime_speed.py``.
    """
    batch = context.test_batches[0]
    size = int(batch.shape[0])
    extractors = {
        "torch": FeatureExtractor(
            context.backbone, context.extractor.projection, context.extractor.geometry, size, runtime="torch"
        )
    }
    installed = [name for name, module in (("onnx", "onnxruntime"), ("openvino", "openvino")) if _installed(module)]
    for runtime in installed:
        extractors[runtime] = FeatureExtractor(
            context.backbone, context.extractor.projection, context.extractor.geometry, size, runtime=runtime
        )
    functions: dict[str, Callable[[], object]] = {
        f"extract {name}": _embedding(extractor, batch) for name, extractor in extractors.items()
    }
    if "openvino" in installed:
        bf16 = GraphSession(cached_onnx(extractors["torch"]), "openvino", "bf16")
        images = batch.numpy()
        functions["extract openvino bf16"] = lambda: bf16.run(images)
    model = context.model
    assert model is not None
    bank = np.asarray(model.bank_, dtype=np.float32)
    queries = extractors["torch"].embed(batch).numpy().reshape(-1, bank.shape[1])
    engines: dict[str, Any] = {"faiss": BankSearch(bank, model.k, engine="faiss")}
    if bf16_matmul_supported():
        engines["registry bf16 (torch)"] = PatchKNN(k=model.k, engine="bf16").fit(bank)
    if "openvino" in installed and openvino_bf16_available():
        engines["runtime screened (openvino)"] = BankSearch(bank, model.k, engine="screened")
    for name, engine in engines.items():
        score = engine.score if isinstance(engine, PatchKNN) else engine.patch_scores
        functions[f"knn {name}"] = (lambda f: lambda: f(queries))(score)
    times = median_times(functions, 1 if context.quick else 5)
    reference = engines["faiss"].patch_scores(queries)
    agreement = {
        name: float(np.max(np.abs((e.score if isinstance(e, PatchKNN) else e.patch_scores)(queries) - reference)))
        for name, e in engines.items()
    }
    return {
        "batch_size": size,
        "bank_size": int(bank.shape[0]),
        "load_average": list(os.getloadavg()),
        "ms_per_image": {name: 1000 * seconds / size for name, seconds in times.items()},
        "knn_max_abs_difference_to_faiss": agreement,
    }


def _embedding(extractor: FeatureExtractor, batch: torch.Tensor) -> Callable[[], object]:
    return lambda: extractor.embed(batch)


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _extract_section(context: _Context, compile: bool) -> dict[str, Any]:
    batch = context.test_batches[0]
    with FlopCounterMode(display=False) as counter:
        context.backbone.extract(batch[:1])
    flops_per_image = float(counter.get_total_flops())
    size = int(batch.shape[0])
    side = 1024 if context.quick else 2048
    a, b = torch.randn(side, side), torch.randn(side, side)
    product = torch.empty(side, side)
    repeats = 1 if context.quick else 5
    fast, plain = context.extractor, context.reference_extractor
    functions: dict[str, Callable[[], object]] = {
        "fast_backbone": lambda: fast.extract_maps(batch),
        "reference_backbone": lambda: plain.extract_maps(batch),
        "fast_embed": lambda: fast.embed(batch),
        "reference_embed": lambda: plain.embed(batch),
        "matmul": lambda: torch.mm(a, b, out=product),
    }
    section: dict[str, Any] = {}
    if compile and hasattr(context.backbone, "compile") and isinstance(context.backbone, EfficientNetLite2):
        compiled = EfficientNetLite2(weights=context.weights, compile=True)
        compiled_extractor = build_extractor(new_feature_space(compiled, seed=context.seed), compiled, batch_size=size)
        started = time.perf_counter()
        compiled_extractor.extract_maps(batch)
        section["compile_s"] = time.perf_counter() - started
        functions["compiled_backbone"] = lambda: compiled_extractor.extract_maps(batch)
    times = median_times(functions, repeats)
    matmul_gflops = 2 * side**3 / times["matmul"] / 1e9
    per_image = {name: 1000 * seconds / size for name, seconds in times.items() if name != "matmul"}
    achieved = {
        name.removesuffix("_backbone"): flops_per_image * size / times[name] / 1e9
        for name in times
        if name.endswith("_backbone")
    }
    reference_maps = plain.extract_maps(batch)
    fast_maps = fast.extract_maps(batch)
    max_relative = max(
        float((f - r).abs().max() / r.abs().max()) for f, r in zip(fast_maps, reference_maps, strict=True)
    )
    embed_difference = float((fast.embed(batch) - plain.embed(batch)).abs().max())
    section.update(
        {
            "gflop_per_image": flops_per_image / 1e9,
            "batch_size": size,
            "ms_per_image": per_image,
            "achieved_gflops": achieved,
            "matmul_gflops": matmul_gflops,
            "gemm_fraction": achieved["fast"] / matmul_gflops,
            "reference_gemm_fraction": achieved["reference"] / matmul_gflops,
            "speedup_embed": times["reference_embed"] / times["fast_embed"],
            "fast_vs_reference_max_relative_difference": max_relative,
            "embed_max_abs_difference": embed_difference,
        }
    )
    return section


# -------------------------------------------------------------------------------- routing
def _fake_prototypes(rng: np.random.Generator, count: int, dim: int, per_category: int = 64) -> np.ndarray:
    return l2_normalize(rng.standard_normal((count, per_category, dim)).astype(np.float32))


def _routing_section(context: _Context, result: dict[str, Any]) -> dict[str, Any]:
    assert context.model is not None
    vectors = context.test
    model = context.model
    dim = vectors.shape[-1]
    rng = np.random.default_rng(context.seed)
    counts = (2, 20) if context.quick else ROUTE_COUNTS
    fakes = _fake_prototypes(rng, max(counts) - 1, dim)
    images = [vectors[i % len(vectors)][None] for i in range(8)]
    repeats = 2 if context.quick else 5
    shortlist_ms: dict[str, float] = {}
    exact_ms: dict[str, float] = {}
    correct: dict[str, float] = {}
    for count in counts:
        routers = {}
        for name, size in (("shortlist", 8), ("exact", None)):
            router = PrototypeRouter(shortlist=size)
            router.add(context.data.name, model.prototypes_, model.route_threshold_)
            for index in range(count - 1):
                router.add(f"synthetic-{index:04d}", fakes[index])
            routers[name] = router

        def routed(router: PrototypeRouter, position: list[int]) -> Callable[[], object]:
            def call() -> object:
                position[0] = (position[0] + 1) % len(images)
                return router.route(images[position[0]])

            return call

        context.say(f"routing with {count} categories")
        exact_repeats = 1 if count >= 200 else repeats
        times = median_times({"shortlist": routed(routers["shortlist"], [0])}, repeats)
        times.update(median_times({"exact": routed(routers["exact"], [0])}, exact_repeats))
        shortlist_ms[str(count)] = 1000 * times["shortlist"]
        exact_ms[str(count)] = 1000 * times["exact"]
        picked = routers["shortlist"].route(vectors).categories
        correct[str(count)] = float(np.mean([name == context.data.name for name in picked]))
    rows = result.get("rows") or []
    stages = rows[0] if rows else {"extract_ms": float("nan"), "knn_ms": float("nan"), "post_ms": float("nan")}
    base = stages["extract_ms"] + stages["knn_ms"] + stages["post_ms"]
    totals = {count: base + ms for count, ms in shortlist_ms.items()}
    exact_totals = {count: base + ms for count, ms in exact_ms.items()}
    largest, smallest = str(max(counts)), str(min(counts))
    section: dict[str, Any] = {
        "counts": list(counts),
        "route_ms": shortlist_ms,
        "route_ms_exact": exact_ms,
        "routed_total_ms": totals,
        "routed_total_ms_exact": exact_totals,
        "accuracy_with_synthetic_distractors": correct,
        "cost_ratio_1000_vs_2": totals[largest] / totals[smallest],
        "cost_ratio_exact_1000_vs_2": exact_totals[largest] / exact_totals[smallest],
        "route_only_ratio": shortlist_ms[largest] / shortlist_ms[smallest],
    }
    section["real_categories"] = _routing_accuracy(context)
    return section


def _routing_accuracy(context: _Context) -> dict[str, Any]:
    """Routing accuracy over real categories (the bench set + synthetic demo kinds), exact vs shortlist."""
    assert context.model is not None
    kinds = CATEGORY_KINDS[:2] if context.quick else CATEGORY_KINDS
    n_train, n_test = (3, 2) if context.quick else (10, 6)
    prototypes = {context.data.name: context.model.prototypes_}
    tests: list[tuple[str, np.ndarray]] = [(context.data.name, context.test)]
    for offset, kind in enumerate(kinds):
        if context.data.synthetic and context.data.name == f"synthetic-{kind}":
            continue
        context.say(f"routing accuracy: synthetic {kind}")
        category = make_category(kind, n_train=n_train, n_test_good=n_test // 2, n_test_bad=n_test - n_test // 2,
                                 seed=context.seed + offset + 1, size=256)  # fmt: skip
        train = embed_images(context.extractor, list(category.train_images))
        prototypes[kind] = patch_vectors_to_prototypes(train.reshape(-1, train.shape[-1]), seed=context.seed)[0]
        tests.append((kind, embed_images(context.extractor, list(category.test_images))))
    outcome: dict[str, Any] = {"categories": len(prototypes), "test_images": sum(len(v) for _, v in tests)}
    rng = np.random.default_rng(context.seed + 7)
    fakes = _fake_prototypes(rng, 1000 - len(prototypes), tests[0][1].shape[-1])
    for label, size, distractors in (("exact", None, 0), ("shortlist_3", 3, 0), ("shortlist_8_1000", 8, len(fakes))):
        router = PrototypeRouter(shortlist=size)
        for name, protos in prototypes.items():
            router.add(name, protos)
        for index in range(distractors):
            router.add(f"synthetic-{index:04d}", fakes[index])
        hits = total = 0
        for name, vectors in tests:
            picked = router.route(vectors).categories
            hits += sum(p == name for p in picked)
            total += len(picked)
        outcome[label] = hits / max(1, total)
    return outcome


# -------------------------------------------------------------------------------- loading
def _loading_section(context: _Context) -> dict[str, Any]:
    assert context.model is not None
    with tempfile.TemporaryDirectory(prefix="structcore-bench-") as folder:
        root = Path(folder) / "registry"
        registry = Registry.init(
            root,
            backbone=context.backbone_name,
            weights=context.weights,
            resize=context.extractor.geometry.resize,
            crop=context.extractor.geometry.crop,
        )
        registry.add_fitted("bench", context.model)
        registry.close()
        timings: dict[str, list[float]] = {"cold": [], "warm": []}
        for _ in range(2 if context.quick else 5):
            forget_verified_checksums()  # a new process would verify checksums again
            reopened = Registry.open(root)
            detector = reopened.detector()  # pins the version, reads the prototypes (the bank on first use)
            started = time.perf_counter()
            detector.model("bench")
            timings["cold"].append(time.perf_counter() - started)
            started = time.perf_counter()
            detector.model("bench")  # kept by the Detector
            timings["warm"].append(time.perf_counter() - started)
            reopened.close()
        child = _child_cold_load(root)
    return {
        "bank_size": len(context.model.bank_),
        "bank_mb": context.model.bank_.nbytes / 2**20,
        "cold_ms": 1000 * float(np.median(timings["cold"])),
        "warm_ms": 1000 * float(np.median(timings["warm"])),
        "cold_ms_new_process": child,
    }


def _child_cold_load(root: Path) -> float | None:
    code = (
        "import time, json\n"
        "from registry.core import Registry\n"
        f"r = Registry.open({str(root)!r})\n"
        "t = time.perf_counter(); r.load_category('bench'); print(json.dumps(time.perf_counter() - t))\n"
    )
    try:
        output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300)
        return 1000 * float(json.loads(output.stdout.strip().splitlines()[-1]))
    except (subprocess.SubprocessError, ValueError, IndexError):
        return None


# --------------------------------------------------------------------------------- memory
def _fit_child(spec: dict[str, Any]) -> dict[str, Any]:
    """Child process body: load the model, then ``add_category``; report RSS figures."""
    set_num_threads(int(spec["threads"]))
    sources: list[Any]
    if spec["synthetic"]:
        made = make_category(spec["kind"], n_train=int(spec["n_train"]), n_test_good=0, n_test_bad=0,
                             seed=int(spec["seed"]), size=int(spec.get("size", 256)))  # fmt: skip
        sources = list(made.train_images)
    else:
        sources = [Path(p) for p in spec["train"]]
    with tempfile.TemporaryDirectory(prefix="structcore-bench-fit-") as folder:
        registry = Registry.init(
            Path(folder) / "registry",
            backbone=spec["backbone"],
            weights=spec["weights"],
            resize=int(spec.get("resize", 448)),
            crop=int(spec.get("crop", 392)),
        )
        registry.extractor(int(spec["batch_size"])).grid_shape()  # model loaded (weights, W, one tiny pass)
        baseline = rss_mb() or 0.0
        reset_peak_rss()
        marks: list[tuple[str, float]] = [("start", time.perf_counter())]
        model = CategoryModel(coreset_ratio=float(spec["ratio"]), seed=int(spec["seed"]))
        registry.add_category(
            "bench",
            sources,
            model=model,
            batch_size=int(spec["batch_size"]),
            progress=lambda event: (
                None if marks[-1][0] == event.stage else marks.append((event.stage, time.perf_counter()))
            ),
        )
        peak = peak_rss_mb() or 0.0
        stages = {name: marks[i + 1][1] - at for i, (name, at) in enumerate(marks[:-1])}
        grid = registry.extractor(int(spec["batch_size"])).grid_shape()
        registry.close()
    n_vectors = len(sources) * grid[0] * grid[1]
    matrix_mb = n_vectors * 512 * 4 / 2**20
    return {
        "images": len(sources),
        "n_vectors": n_vectors,
        "baseline_rss_mb": baseline,
        "peak_rss_mb": peak,
        "matrix_mb": matrix_mb,
        "ratio": (peak - baseline) / matrix_mb,
        "seconds": marks[-1][1] - marks[0][1],
        "stages_s": stages,
    }


def _run_child(spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    code = (
        "import json, sys\n"
        f"sys.path.insert(0, {str(CHECKOUT)!r})\n"
        "from benchmarks.bench import _fit_child\n"
        "print(json.dumps(_fit_child(json.loads(sys.argv[1]))))\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code, json.dumps(spec)], capture_output=True, text=True, timeout=timeout
    )
    if completed.returncode != 0:
        return {"error": completed.stderr.strip().splitlines()[-1] if completed.stderr.strip() else "failed"}
    return dict(json.loads(completed.stdout.strip().splitlines()[-1]))


_HEAVY_PROBE = (
    "import sys\nfrom cli.main import app\ntry:\n    app(sys.argv[2:])\nexcept SystemExit:\n    pass\n"
    "print(sorted(m for m in sys.argv[1].split(',') if m in sys.modules), file=sys.stderr)\n"
)


def _start_section(context: _Context, n_categories: int, runs: int = 5) -> dict[str, Any]:
    """Wall time of a bare ``registry list`` (a fresh interpreter) on ``n_categories`` tiny categories.

    The categories are one small model fitted on random patch vectors and stored ``n_categories``
    times through :meth:`Registry.add_fitted` (the start time depends on the catalogue, not the banks).
    """
    rng = np.random.default_rng(context.seed)
    with tempfile.TemporaryDirectory(prefix="bench-start-") as folder:
        root = Path(folder) / "registry"
        registry = Registry.init(
            root, backbone=context.backbone_name, weights=context.weights, resize=context.crop, crop=context.crop
        )
        patches = context.grid[0] * context.grid[1]
        vectors = rng.standard_normal((6, patches, registry.feature_space.dim)).astype(np.float32)
        model = CategoryModel(coreset_ratio=0.05, calibration="loo", seed=context.seed)
        model.fit(vectors, context.grid, context.crop)
        for index in range(n_categories):
            registry.add_fitted(f"c{index:04d}", model)
        registry.close()
        command = [sys.executable, "-m", "cli.main", "list", "--root", str(root)]
        seconds = []
        for _ in range(runs):
            begin = time.perf_counter()
            subprocess.run(command, check=True, capture_output=True)
            seconds.append(time.perf_counter() - begin)
        probe = subprocess.run(
            [sys.executable, "-c", _HEAVY_PROBE, ",".join(HEAVY_MODULES), "list", "--root", str(root)],
            check=True,
            capture_output=True,
            text=True,
        )
    heavy = json.loads(probe.stderr.strip().splitlines()[-1].replace("'", '"'))
    return {
        "categories": n_categories,
        "runs": runs,
        "median_seconds": float(np.median(seconds)),
        "seconds": seconds,
        "heavy_modules": heavy,
        "load_average": os.getloadavg()[0],
    }


def _memory_section(context: _Context) -> dict[str, Any]:
    data = context.data
    spec: dict[str, Any] = {
        "backbone": context.backbone_name,
        "weights": None if context.weights is None else str(context.weights),
        "batch_size": context.extractor.batch_size,
        "threads": torch.get_num_threads(),
        "ratio": 0.01,
        "seed": context.seed,
        "synthetic": data.synthetic,
        "kind": data.name.removeprefix("synthetic-"),
        "n_train": len(data.train),
        "train": [str(p) for p in data.train] if not data.synthetic else [],
        "resize": context.extractor.geometry.resize,
        "crop": context.extractor.geometry.crop,
    }
    return _run_child(spec, timeout=3600)


#: Image sizes (width, height) of the tile section: 4, 9 and 20 tiles of 392 px (overlap 64).
TILE_SIZES = ((640, 480), (1024, 768), (1536, 1152))
#: ``--quick``: 4, 6 and 9 tiles of the quick side.
TILE_SIZES_QUICK = ((256, 192), (384, 256), (384, 384))


def _tile_section(context: _Context, repeats: int = 3) -> dict[str, Any]:
    """Per image cost (load excluded: images in memory) of the tile geometry at :data:`TILE_SIZES`, and of squash.

    One category is fitted per geometry on synthetic ``tile``-kind images of the smallest size;
    then each size's test images go through :meth:`registry.detector.Detector.predict` (embed,
    score, regions), the geometries interleaved per repeat (the median is kept), so that a busy
    machine slows them alike. Cost per tile should stay flat across the sizes (linear in tiles).
    """
    from registry.detector import Detector, PinnedCategory
    from structcore.model import fit_category
    from structcore.tiles import tile_count

    side = context.crop
    sizes = TILE_SIZES_QUICK if context.quick else TILE_SIZES
    n_train, n_test = (3, 2) if context.quick else (6, 3)
    overlap = 64 if side >= 256 else side // 6
    spaces = {
        "squash": new_feature_space(context.backbone, resize=side, crop=side, seed=context.seed),
        "tile": new_feature_space(
            context.backbone,
            resize=side,
            crop=side,
            seed=context.seed,
            input_geometry="tile",
            tile_max_side=max(max(size) for size in sizes),
            tile_overlap=overlap,
        ),
    }
    extractors = {name: build_extractor(space, context.backbone, batch_size=8) for name, space in spaces.items()}
    width, height = sizes[0]
    train = make_category("tile", n_train, 0, 0, context.seed, size=width, height=height).train_images
    detectors = {}
    for name, extractor in extractors.items():
        model = fit_category(extractor, list(train), CategoryModel(coreset_ratio=0.01, seed=context.seed))
        detectors[name] = Detector(extractor, [PinnedCategory.of_model("tile", 1, model)])
    tests = {
        size: make_category("tile", 0, n_test, 0, context.seed + 1, size=size[0], height=size[1]) for size in sizes
    }
    seconds: dict[str, list[float]] = {}
    for _ in range(repeats):
        for size, category in tests.items():
            for name, detector in detectors.items():
                if name == "squash" and size != sizes[1]:
                    continue  # squash costs the same at any size (one square); measured at the middle size
                started = time.perf_counter()
                detector.predict(list(category.test_images), "tile")
                seconds.setdefault(f"{name} {size[0]}x{size[1]}", []).append(time.perf_counter() - started)
    rows = []
    for key, found in seconds.items():
        name, shape = key.split(" ")
        w, h = (int(v) for v in shape.split("x"))
        per_image = float(np.median(found)) / n_test
        tiles = tile_count((h, w), side, overlap) if name == "tile" else 1
        rows.append(
            {
                "geometry": name,
                "size": [w, h],
                "tiles": tiles,
                "ms_per_image": 1000 * per_image,
                "ms_per_megapixel": 1000 * per_image / (w * h / 1e6),
                "ms_per_tile": 1000 * per_image / tiles,
            }
        )
    return {"side": side, "overlap": overlap, "repeats": repeats, "load_average": os.getloadavg()[0], "rows": rows}


def _large_fit_section(context: _Context) -> dict[str, Any]:
    count = 48 if context.quick else 761
    spec: dict[str, Any] = {
        "backbone": context.backbone_name,
        "weights": None if context.weights is None else str(context.weights),
        "batch_size": context.extractor.batch_size,
        "threads": torch.get_num_threads(),
        "ratio": 0.01,
        "seed": context.seed,
        "synthetic": True,
        "kind": "tile",
        "n_train": count,
        "size": 448,
        "train": [],
    }
    return _run_child(spec, timeout=7200)


# ------------------------------------------------------------------------------- formatting
def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def format_bench(result: dict[str, Any]) -> str:
    """The bench as text: Table 4 and one line per floor ratio (see :func:`run_bench`)."""
    config = result.get("config", {})
    machine = result.get("machine", {})
    lines = [
        f"StructCore bench: {config.get('backbone')} | batch {config.get('batch_size')} | "
        f"{machine.get('torch_threads')} threads | images {config.get('images')} "
        f"({config.get('n_train')} train, {config.get('n_test')} test){' | quick' if config.get('quick') else ''}",
        f"machine: {machine.get('cpu_count')} CPUs, torch {machine.get('torch')}, bf16 GEMM "
        f"{'yes' if machine.get('bf16_matmul') else 'no'}, "
        f"backbone runtime {machine.get('backbone_runtime', 'torch')}, "
        f"load average at start {machine.get('load_average_at_start')}",
        "",
    ]
    if config.get("quick"):
        lines[-1:-1] = [
            "quick run: a smoke test of every section; its ratios are not comparable to the targets "
            "(run without --quick for PASS / MISS)"
        ]
    rows = result.get("rows") or []
    if rows:
        header = (
            f"{'Coreset':>7} {'Bank':>7} {'Extract (ms)':>12} {'kNN (ms)':>9} {'Post (ms)':>9} "
            f"{'Total (ms)':>10} {'Img/s':>6} {'Peak RSS (MB)':>13}"
        )
        lines += [header, "-" * len(header)]
        for row in rows:
            lines.append(
                f"{row['coreset']:>7.0%} {row['bank_size']:>7} {_fmt(row['extract_ms']):>12} {_fmt(row['knn_ms']):>9} "
                f"{_fmt(row['post_ms']):>9} {_fmt(row['total_ms']):>10} {_fmt(row['images_per_s']):>6} "
                f"{_fmt(row['peak_rss_mb'], 0):>13}"
            )
        kinds = sorted({row["bank"] for row in rows})
        lines.append(f"(banks: {', '.join(kinds)}; kNN engine {rows[0]['knn_engine']}; medians over batches)")
        lines.append("")
    accuracy = result.get("accuracy")
    # A quick run scores a handful of small test images: its AUROC (often 0.5 or 0.0 on the
    # synthetic set) says that the code ran, not how well it detects, so it is left out.
    show_auroc = not config.get("quick")
    if accuracy and show_auroc:
        lines.append(
            f"accuracy 1%: image AUROC {_fmt(accuracy.get('image_auroc'), 4)}, pixel AUROC "
            f"{_fmt(accuracy.get('pixel_auroc'), 4)}; at the shipped threshold FRR {_fmt(accuracy.get('frr'), 3)}, "
            f"recall {_fmt(accuracy.get('recall'), 3)}"
        )
    elif accuracy:
        lines.append(
            f"accuracy: AUROC figures left out in --quick ({config.get('n_test')} small test images say nothing "
            "about detection; run without --quick for them)"
        )
    knn = result.get("knn")
    if knn:
        hnsw = knn["hnsw"]
        lines += [
            f"1. kNN vs floor: {knn['engine']} search {_fmt(knn['ms']['auto'])} ms / fp32 matmul "
            f"{knn['queries']}x{knn['dim']} @ {knn['dim']}x{knn['bank_size']} {_fmt(knn['ms']['matmul'])} ms = "
            f"{_fmt(knn['floor_ratio'], 2)} ({_verdict(result, 'knn_floor_ratio')}); faiss IndexFlatL2 "
            f"{_fmt(knn['ms']['faiss'])} ms = "
            f"{_fmt(knn['faiss_floor_ratio'], 2)}; neighbours equal to faiss: {knn['exact_neighbour_agreement']:.4%}",
            f"   HNSW (M {hnsw['m']}, ef {hnsw['ef_search']}): recall@5 {hnsw['recall_at_5']:.4f}, "
            f"{_fmt(hnsw['ms'])} ms, speed-up "
            f"{_fmt(hnsw['speedup_vs_faiss_flat'], 2)}x vs faiss flat, {_fmt(hnsw['speedup_vs_exact_engine'], 2)}x vs "
            f"{knn['engine']}"
            + (
                f"; image AUROC {_fmt(hnsw['hnsw'].get('image_auroc'), 4)} vs "
                f"{_fmt(hnsw['exact'].get('image_auroc'), 4)}, pixel AUROC "
                f"{_fmt(hnsw['hnsw'].get('pixel_auroc'), 4)} vs {_fmt(hnsw['exact'].get('pixel_auroc'), 4)}"
                if show_auroc
                else ""
            ),
        ]
        for label, entry in (
            ("1%", hnsw),
            (f"{knn.get('hnsw_large_bank', {}).get('ratio', 0):.0%}", knn.get("hnsw_large_bank")),
        ):
            if entry and entry.get("sweep") and show_auroc:
                lines.append(
                    f"   HNSW sweep at the {label} bank ({entry['sweep'][0]['exact_ms']:.1f} ms exact, "
                    f"{entry['sweep'][0]['faiss_ms']:.1f} ms faiss flat; ef: recall@5, ms, image / pixel AUROC vs "
                    f"{_fmt(entry['exact'].get('image_auroc'), 4)} / {_fmt(entry['exact'].get('pixel_auroc'), 4)}): "
                    + "; ".join(
                        f"{e['ef_search']}: {e['recall_at_5']:.4f}, {_fmt(e['ms'])}, "
                        f"{_fmt(e['hnsw'].get('image_auroc'), 4)} / {_fmt(e['hnsw'].get('pixel_auroc'), 4)}"
                        for e in entry["sweep"]
                    )
                )
    core = result.get("coreset")
    if core:
        exact, approx, common = core["exact"], core["approx"], core["common_way"]
        lines += [
            f"2. coreset vs floor: N {core['n_points']} x proxy {core['proxy_dim']}, {core['n_select']} centers; "
            f"stream floor {_fmt(core['stream_floor_ms'], 2)} ms/pass; exact {_fmt(exact['seconds'])} s = "
            f"{_fmt(exact['floor_ratio'], 2)} x floor; approx {_fmt(approx['seconds'])} s = "
            f"{_fmt(approx['floor_ratio'], 2)} x floor (auto: {core['auto_method']}; "
            f"{_verdict(result, 'coreset_floor_ratio')})",
            f"   covering radius approx/exact {_fmt(core['radius_ratio_approx_vs_exact'], 4)} "
            f"({_fmt(approx['radius'], 4)} vs {_fmt(exact['radius'], 4)}); "
            + (
                f"image AUROC approx {_fmt(approx.get('image_auroc'), 4)} vs exact "
                f"{_fmt(exact.get('image_auroc'), 4)}, pixel {_fmt(approx.get('pixel_auroc'), 4)} vs "
                f"{_fmt(exact.get('pixel_auroc'), 4)}; "
                if show_auroc
                else ""
            )
            + f"approx {_fmt(core['approx_speedup'], 2)}x faster",
            f"   common way ({common['n_points']} x 512, 1%, ~270-dim projection, torch norm per iteration): "
            f"{_fmt(common['common_s'], 2)} s vs ours {_fmt(common['ours_s'], 2)} s = {_fmt(common['speedup'], 1)}x"
            + (
                f" (with this process's allocator settings); in a plain process "
                f"{_fmt(common['common_plain_process_s'], 2)} s = {_fmt(common['speedup_plain_process'], 1)}x"
                if "common_plain_process_s" in common
                else ""
            ),
        ]
    extract = result.get("extract")
    if extract:
        ms = extract["ms_per_image"]
        compiled = (
            f"; torch.compile {_fmt(ms['compiled_backbone'])} ms/img (compile {_fmt(extract['compile_s'])} s)"
            if "compiled_backbone" in ms
            else ""
        )
        lines += [
            f"3. extract vs machine: {_fmt(extract['gflop_per_image'], 2)} GFLOP/img; fast path "
            f"{_fmt(extract['achieved_gflops']['fast'])} GFLOP/s / fp32 matmul {_fmt(extract['matmul_gflops'])} "
            f"GFLOP/s = {_fmt(extract['gemm_fraction'], 3)} "
            f"(reference path {_fmt(extract['reference_gemm_fraction'], 3)})",
            f"   backbone {_fmt(ms['fast_backbone'])} vs {_fmt(ms['reference_backbone'])} ms/img; extract+project "
            f"{_fmt(ms['fast_embed'])} vs {_fmt(ms['reference_embed'])} ms/img ({_fmt(extract['speedup_embed'], 2)}x); "
            f"max rel. map difference {extract['fast_vs_reference_max_relative_difference']:.1e}{compiled}",
        ]
    routing = result.get("routing")
    if routing:
        counts = [str(c) for c in routing["counts"]]
        totals = ", ".join(f"{c}: {_fmt(routing['routed_total_ms'][c])}" for c in counts)
        exact_route = ", ".join(f"{c}: {_fmt(routing['route_ms_exact'][c])}" for c in counts)
        route = ", ".join(f"{c}: {_fmt(routing['route_ms'][c], 2)}" for c in counts)
        real = routing["real_categories"]
        lines += [
            f"4. routed inference ms/img by categories (shortlist 8): {totals}; ratio {counts[-1]} vs {counts[0]} = "
            f"{_fmt(routing['cost_ratio_1000_vs_2'], 3)} ({_verdict(result, 'route_cost_ratio_1000_vs_2')}; "
            "exact routing "
            f"{_fmt(routing['cost_ratio_exact_1000_vs_2'], 2)})",
            f"   route only ms/img: shortlist {route}; exact {exact_route}",
            f"   routing accuracy ({real['categories']} real categories, {real['test_images']} images): exact "
            f"{real['exact']:.4f}, shortlist 3 {real['shortlist_3']:.4f}, shortlist 8 among 1000 "
            f"{real['shortlist_8_1000']:.4f}",
        ]
    loading = result.get("loading")
    if loading:
        lines.append(
            f"5. bank loading ({loading['bank_size']} x 512, {_fmt(loading['bank_mb'])} MB): cold "
            f"{_fmt(loading['cold_ms'])} ms (new process {_fmt(loading['cold_ms_new_process'])} ms), warm "
            f"{_fmt(loading['warm_ms'], 3)} ms"
        )
    memory = result.get("memory")
    if memory:
        if "error" in memory:
            lines.append(f"6. fit memory: failed ({memory['error']})")
        else:
            lines.append(
                f"6. fit memory: add-category of {memory['images']} images peak {_fmt(memory['peak_rss_mb'], 0)} MB - "
                f"baseline {_fmt(memory['baseline_rss_mb'], 0)} MB over matrix {_fmt(memory['matrix_mb'], 0)} MB = "
                f"{_fmt(memory['ratio'], 2)} ({_verdict(result, 'fit_rss_ratio')}); took {_fmt(memory['seconds'])} s"
            )
    large = result.get("large_fit")
    if large:
        if "error" in large:
            lines.append(f"   large add-category: failed ({large['error']})")
        else:
            stages = ", ".join(f"{k} {_fmt(v)}" for k, v in large["stages_s"].items())
            lines.append(
                f"   add-category of {large['images']} images at 1%: {_fmt(large['seconds'])} s ({stages}); "
                f"peak RSS {_fmt(large['peak_rss_mb'], 0)} MB"
            )
    tile = result.get("tile")
    if tile:
        lines.append(
            f"   tile geometry (issue 25), {tile['side']} px tiles overlapping >= {tile['overlap']} px, median of "
            f"{tile['repeats']}, load {_fmt(tile['load_average'], 1)}:"
        )
        for row in tile["rows"]:
            lines.append(
                f"     {row['geometry']:6s} {row['size'][0]}x{row['size'][1]}: {row['tiles']} tile(s), "
                f"{_fmt(row['ms_per_image'], 0)} ms/image, {_fmt(row['ms_per_megapixel'], 0)} ms/MP, "
                f"{_fmt(row['ms_per_tile'], 0)} ms/tile"
            )
    start = result.get("start")
    if start:
        heavy = ", ".join(start["heavy_modules"]) or "none"
        lines.append(
            f"   registry list on {start['categories']} categories: median {_fmt(start['median_seconds'], 2)} s "
            f"of {start['runs']} runs ({_verdict(result, 'list_start_seconds')} on an idle core; "
            f"load {_fmt(start['load_average'], 1)}); heavy modules imported: {heavy}"
        )
    deploy = result.get("deploy")
    if deploy:
        times = ", ".join(f"{name} {_fmt(ms, 1)}" for name, ms in deploy["ms_per_image"].items())
        lines.append(
            f"   deploy (issue 26), ms/img, batch {deploy['batch_size']}, bank {deploy['bank_size']}, "
            f"load {_fmt(deploy['load_average'][0], 1)}: {times}"
        )
    if "seconds" in result:
        lines.append(f"bench took {_fmt(result['seconds'])} s")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- command line
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="registry bench",
        description="Measure extract / kNN / post per image, floors of kNN, coreset and extraction, "
        "routing scale, memory.",
    )
    parser.add_argument(
        "--images",
        help=f"MVTec-style category folder, or 'synthetic' [default: ${DATA_ENV}/mvtec_ad/bottle when present].",
    )
    parser.add_argument("--backbone", default=DEFAULT_BACKBONE, help="Backbone name.")
    parser.add_argument("--weights", type=Path, help="Weights file for backbones that need one.")
    parser.add_argument("--batch-size", type=int, default=8, help="Images per backbone call.")
    parser.add_argument("--ratios", default="0.01,0.05,0.1", help="Comma-separated coreset ratios of the table rows.")
    parser.add_argument("--sections", help="Comma-separated subset of sections to run.")
    parser.add_argument("--threads", type=int, help="torch / faiss threads.")
    parser.add_argument("--quick", action="store_true", help="Few small images: a smoke test.")
    parser.add_argument("--compile", action="store_true", help="Also measure torch.compile.")
    parser.add_argument("--json", action="store_true", help="One JSON object with every figure.")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``registry bench`` (and ``python -m benchmarks.bench``): figures on stdout, progress on stderr.

    Returns 0, or 1 after one line ``error: ...`` on stderr for bad input (no traceback).
    """
    from registry.errors import RegistryError
    from structcore.backbones import BackboneError
    from structcore.image_files import ImageReadError

    args = _parser().parse_args(argv)
    try:
        result = run_bench(
            args.images,
            backbone=args.backbone,
            weights=args.weights,
            batch_size=args.batch_size,
            ratios=[float(r) for r in args.ratios.split(",") if r.strip()],
            quick=args.quick,
            threads=args.threads,
            sections=[s.strip() for s in args.sections.split(",") if s.strip()] if args.sections else None,
            compile=args.compile,
            progress=lambda message: print(message, file=sys.stderr, flush=True),
        )
    except (RegistryError, BackboneError, ImageReadError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    print(json.dumps(result, indent=2, default=str) if args.json else format_bench(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
