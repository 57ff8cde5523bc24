"""What limits MTD's pixel figures (issue 25, item 4): embed once, vary only the map side.

Phase ``embed`` embeds a seeded subset of Magnetic Tile Defects once (EfficientNet-Lite2, 392 px
squash, the registry's defaults), keeps each backbone layer's projected part separately
(``project_layers`` is their sum; checked on the first batch), builds a 1% coreset bank (k = 5)
and scores the test patches for three feature variants: both layers (the shipped features), the
shallow block-6 layer alone and the deep block-14 layer alone. It caches the (n_test, 49, 49)
patch-score grids and the test metadata in ``CACHE`` (and ``heldout_both``: the second half of the
train images scored against a bank of the first half, for a choice made on train-good images
only; unused, since no setting was chosen). All test features are held in memory: the full test
set (``--max-test 0``) with 200 train images needs about 8 GB and was killed on the shared machine.

Phase ``extra``: bank variants on the same images (k = 1, a 3% coreset) and features without the
per-layer L2 norm; ``pool``: the local average pool over 5 x 5 and 7 x 7 patches instead of 3 x 3.

Phase ``analyze`` reads the cache and computes, per map variant (Gaussian sigma, upsampling
mode, order of blur and upsampling, blur at the original size) and per feature variant, pixel
AUROC and AUPRO (0.3 FPR limit) at each image's own size with
``evaluation.metrics.pixel_metrics_at_sizes``, per defect type (that type's images plus all good
test images), image AUROC of the map's max, the masks' share on the image border, the figures
without the border ring and without the empty defective masks, the maps shifted by 2-4 own pixels
(alignment), a hand-made check of the metric code against sklearn, and overlays (image with the
mask's outline | the map over it) of cracks, uneven areas, blowholes and frays in ``--out``.
Phase ``diagnose``: each defect type's share of the defect pixels and of its image, the figures
without ``uneven``, the mean within-image pixel AUROC, uneven's map inside / outside its mask, a
per-image median-centred map, and the ``extra`` / ``pool`` grids when present.

    PYTHONPATH=. .venv/bin/python experiments/geometry/mtd_pixel_limits.py embed /tmp/25p-cache \\
        --max-train 200 --max-test 292
    PYTHONPATH=. .venv/bin/python experiments/geometry/mtd_pixel_limits.py extra /tmp/25p-cache
    PYTHONPATH=. .venv/bin/python experiments/geometry/mtd_pixel_limits.py pool /tmp/25p-cache
    PYTHONPATH=. .venv/bin/python experiments/geometry/mtd_pixel_limits.py analyze /tmp/25p-cache --out /tmp/25p-out
    PYTHONPATH=. .venv/bin/python experiments/geometry/mtd_pixel_limits.py diagnose /tmp/25p-cache --out /tmp/25p-out

About 1 min to embed 492 images and 1 min per bank at load 2-3, 5-6 min for ``analyze``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import ndimage
from sklearn.metrics import average_precision_score, roc_auc_score
from structcore_runtime import maps as shared_maps

from evaluation.datasets import load_dataset
from evaluation.metrics import pixel_metrics_at_sizes
from structcore.backbones.base import create_backbone
from structcore.coreset import KCenterGreedy
from structcore.features import aligned_layers, build_extractor, new_feature_space
from structcore.knn import PatchKNN
from structcore.preprocess import load_mask_at_size
from structcore.regions import map_at_original_size
from structcore.settings import DEFAULT_BACKBONE, DEFAULT_CORESET_RATIO, DEFAULT_K, DEFAULT_SEED

MTD = Path("/work/shared/data/mtd/magnetic_tile")
FEATURES = ("both", "shallow", "deep")


def save_arrays(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write named arrays to an HDF5 cache file (no pickle anywhere, as the code base requires)."""
    with h5py.File(path, "w") as file:
        for name, array in arrays.items():
            file.create_dataset(name, data=array, compression="gzip")


def load_arrays(path: Path) -> dict[str, np.ndarray]:
    """The named arrays of :func:`save_arrays`."""
    with h5py.File(path, "r") as file:
        return {name: np.asarray(file[name]) for name in file}


def layer_parts(
    layer_maps: list[torch.Tensor], projection: torch.Tensor, local_pool: int, normalize: bool = True
) -> list[torch.Tensor]:
    """Each layer's term of ``structcore.features.project_layers`` (their sum is the shipped vector)."""
    height = max(int(layer.shape[-2]) for layer in layer_maps)
    width = max(int(layer.shape[-1]) for layer in layer_maps)
    batch = int(layer_maps[0].shape[0])
    parts, offset = [], 0
    for layer in aligned_layers(layer_maps, local_pool):
        channels = int(layer.shape[1])
        rows = layer.permute(0, 2, 3, 1).reshape(batch * height * width, channels)
        if normalize:
            rows = F.normalize(rows, dim=1, eps=1e-12)
        parts.append((rows @ projection[offset : offset + channels]).reshape(batch, height * width, -1))
        offset += channels
    return parts


def embed_parts(
    extractor, paths: list[Path], normalize: bool = True, local_pool: int | None = None
) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int]]]:
    """(n, P, D) float16 shallow and deep parts of the projected vectors, and the (width, height) sizes."""
    grid = extractor.grid_shape()
    shallow = np.empty((len(paths), grid[0] * grid[1], extractor.dim), dtype=np.float16)
    deep = np.empty_like(shallow)
    sizes: list[tuple[int, int]] = []
    projection = torch.from_numpy(extractor.projection)
    with torch.inference_mode():
        for start in range(0, len(paths), extractor.batch_size):
            batch, batch_sizes = extractor.prepare_sized(paths[start : start + extractor.batch_size])
            maps = extractor.extract_maps(batch)
            pool = extractor.backbone.info.local_pool if local_pool is None else local_pool
            low, high = layer_parts(maps, projection, pool, normalize)
            if (
                start == 0 and normalize and pool == extractor.backbone.info.local_pool
            ):  # the parts add up to what the registry embeds
                shipped = extractor.embed(batch)
                assert torch.allclose(low + high, shipped, atol=1e-4), float((low + high - shipped).abs().max())
            shallow[start : start + len(batch)] = low.numpy()
            deep[start : start + len(batch)] = high.numpy()
            sizes.extend(batch_sizes)
            print(f"  embedded {start + len(batch)}/{len(paths)}", flush=True)
    return shallow, deep, sizes


def variant(shallow: np.ndarray, deep: np.ndarray, name: str) -> np.ndarray:
    if name == "both":
        return shallow.astype(np.float32) + deep.astype(np.float32)
    return (shallow if name == "shallow" else deep).astype(np.float32)


def patch_grids(
    bank_source: np.ndarray,
    queries: np.ndarray,
    grid: tuple[int, int],
    ratio: float = DEFAULT_CORESET_RATIO,
    k: int = DEFAULT_K,
) -> np.ndarray:
    """Coreset of ``bank_source`` (n, P, D), then the k-NN patch scores of ``queries`` as (m, h, w) grids."""
    points = bank_source.reshape(-1, bank_source.shape[-1])
    coreset = KCenterGreedy(ratio=ratio, seed=DEFAULT_SEED).fit(points)
    knn = PatchKNN(k=k).fit(points[coreset.indices_])
    scores = knn.score(queries.reshape(-1, queries.shape[-1]))
    return scores.reshape(len(queries), *grid).astype(np.float32)


def run_embed(
    cache: Path,
    max_train: int,
    max_test: int | None,
    seed: int,
    features: tuple[str, ...] = FEATURES,
    root: Path = MTD,
) -> None:
    cache.mkdir(parents=True, exist_ok=True)
    dataset = load_dataset(root)
    data = dataset.categories[dataset.names[0]].subset(max_test=max_test, max_train=max_train, seed=seed)
    backbone = create_backbone(DEFAULT_BACKBONE)
    extractor = build_extractor(new_feature_space(backbone), backbone)
    grid = extractor.grid_shape()
    started = time.perf_counter()
    train_low, train_high, _ = embed_parts(extractor, list(data.train))
    test_low, test_high, sizes = embed_parts(extractor, list(data.test))
    print(f"embedded in {time.perf_counter() - started:.0f} s", flush=True)
    # Train-only check images: the bank from the first half of the train images scores the second half.
    half = len(data.train) // 2
    out: dict[str, Any] = {}
    for name in features:
        started = time.perf_counter()
        train = variant(train_low, train_high, name)
        out[f"test_{name}"] = patch_grids(train, variant(test_low, test_high, name), grid)
        if name == "both":
            out["heldout_both"] = patch_grids(train[:half], train[half:], grid)
        del train
        print(f"{name}: bank + scores in {time.perf_counter() - started:.0f} s", flush=True)
    save_arrays(cache / "grids.h5", out)
    meta = {
        "test": [str(p) for p in data.test],
        "labels": [int(v) for v in data.labels],
        "defects": list(data.defects),
        "masks": [str(m) if m else None for m in data.masks],
        "sizes": [list(s) for s in sizes],
        "train": [str(p) for p in data.train],
        "grid": list(grid),
    }
    (cache / "meta.json").write_text(json.dumps(meta))


# ----------------------------------------------------------------------------- analyze
MODEL = 392  # the model's square (squash, no crop): the shipped map size


def _axis(in_size: int, out_size: int, sigma: float, upsample: str, order: str) -> np.ndarray:
    """(out, in) per-axis operator of one map variant at the model's square."""
    if upsample == "nearest":
        up = np.zeros((out_size, in_size))
        up[np.arange(out_size), np.minimum(np.arange(out_size) * in_size // out_size, in_size - 1)] = 1.0
    else:
        up = shared_maps.bilinear_matrix(in_size, out_size)
    if order == "blur-first":  # blur the patch grid (sigma in patches = sigma / patch stride), then upsample
        return up @ shared_maps.blur_matrix(in_size, sigma * in_size / out_size)
    return shared_maps.blur_matrix(out_size, sigma) @ up


def model_map(grid: np.ndarray, sigma: float, upsample: str = "bilinear", order: str = "upsample-first") -> np.ndarray:
    rows = _axis(grid.shape[0], MODEL, sigma, upsample, order)
    columns = _axis(grid.shape[1], MODEL, sigma, upsample, order)
    return (rows @ grid @ columns.T).astype(np.float32)


def original_map(grid: np.ndarray, size: tuple[int, int], sigma_original: float) -> np.ndarray:
    """The grid upsampled (bilinear) straight to the image's own (width, height), blurred there."""
    width, height = size
    rows = shared_maps.blur_matrix(height, sigma_original) @ shared_maps.bilinear_matrix(grid.shape[0], height)
    columns = shared_maps.blur_matrix(width, sigma_original) @ shared_maps.bilinear_matrix(grid.shape[1], width)
    return (rows @ grid @ columns.T).astype(np.float32)


def map_variants() -> dict[str, object]:
    """Name -> function (grid, size) -> map at the image's own size."""
    variants: dict[str, object] = {}
    for sigma in (0.0, 1.0, 2.0, 4.0, 8.0):
        variants[f"model sigma {sigma:g} (bilinear, upsample then blur)"] = lambda g, size, s=sigma: (
            map_at_original_size(model_map(g, s), size)
        )
    variants["model sigma 4, nearest upsample"] = lambda g, size: map_at_original_size(
        model_map(g, 4.0, "nearest"), size
    )
    variants["model sigma 4, blur the grid then bilinear"] = lambda g, size: map_at_original_size(
        model_map(g, 4.0, order="blur-first"), size
    )
    for sigma in (0.0, 1.0, 2.0, 4.0):
        variants[f"own size: grid -> own size (bilinear), sigma {sigma:g} own px"] = lambda g, size, s=sigma: (
            original_map(g, size, s)
        )
    variants["own size: sigma 4 x own/392 (tied to the image size)"] = lambda g, size: original_map(
        g, size, 4.0 * float(np.sqrt(size[0] * size[1])) / MODEL
    )
    return variants


def _metrics(masks: list[np.ndarray], maps: list[np.ndarray], keep: np.ndarray) -> dict[str, float]:
    chosen = np.flatnonzero(keep)
    return pixel_metrics_at_sizes([masks[i] for i in chosen], [maps[i] for i in chosen])


def _per_defect(masks, maps, defects, labels, max_scores) -> dict[str, object]:
    defects = np.asarray(defects)
    good = labels == 0
    row: dict[str, object] = {}
    every = _metrics(masks, maps, np.ones(len(masks), dtype=bool))
    row["pixel_auroc"], row["aupro"] = every["auroc"], every["aupro"]
    row["image_auroc_max"] = float(roc_auc_score(labels, max_scores))
    for defect in sorted(set(defects.tolist()) - {"good"}):
        found = _metrics(masks, maps, good | (defects == defect))
        row[defect] = (found["auroc"], found["aupro"])
    return row


def border_shares(masks: list[np.ndarray], labels: np.ndarray, patches: int) -> float:
    """Share of all defect-mask pixels within ``patches`` model patches (8 px of 392) of the image edge."""
    inside = total = 0
    for mask, label in zip(masks, labels, strict=True):
        if not label or not mask.any():
            continue
        height, width = mask.shape
        band_h = round(patches * 8 * height / MODEL)
        band_w = round(patches * 8 * width / MODEL)
        interior = mask[band_h : height - band_h, band_w : width - band_w]
        inside += int(mask.sum() - interior.sum())
        total += int(mask.sum())
    return inside / max(total, 1)


def _interior(array: np.ndarray, patches: int) -> np.ndarray:
    height, width = array.shape
    band_h = round(patches * 8 * height / MODEL)
    band_w = round(patches * 8 * width / MODEL)
    return array[band_h : height - band_h, band_w : width - band_w]


def overlay(image_path: str, mask: np.ndarray, anomaly_map: np.ndarray, low: float, high: float) -> Image.Image:
    """Image | image with the mask's outline (red) and the map (heat, alpha) side by side."""
    image = Image.open(image_path).convert("RGB")
    base = np.asarray(image, dtype=np.float32)
    heat = np.clip((anomaly_map - low) / max(high - low, 1e-9), 0.0, 1.0)
    colour = np.stack([heat, np.zeros_like(heat), 1.0 - heat], axis=-1) * 255.0
    blended = 0.5 * base + 0.5 * colour
    edge = mask & ~ndimage.binary_erosion(mask)
    blended[edge] = (255.0, 255.0, 0.0)
    outlined = base.copy()
    outlined[edge] = (255.0, 0.0, 0.0)
    both = np.concatenate([outlined, np.full((base.shape[0], 4, 3), 255.0), blended], axis=1)
    return Image.fromarray(both.astype(np.uint8))


def check_metrics_by_hand() -> dict[str, float]:
    """pixel_metrics_at_sizes against sklearn (AUROC, AP) and a direct PRO-curve loop (AUPRO, 0.3)."""
    rng = np.random.default_rng(0)
    masks = [np.zeros((7, 9), dtype=bool), np.zeros((5, 6), dtype=bool), np.zeros((8, 4), dtype=bool)]
    masks[0][1:3, 2:5] = True
    masks[0][5, 7] = True
    masks[1][2:5, 0:2] = True
    maps = [rng.random(m.shape).astype(np.float32) + 0.6 * m for m in masks]
    maps[2][0, 0] = maps[0][1, 2]  # a tie across images
    found = pixel_metrics_at_sizes(masks, maps)
    flat_masks = np.concatenate([m.ravel() for m in masks])
    flat_maps = np.concatenate([s.ravel() for s in maps])
    regions = []
    for mask, values in zip(masks, maps, strict=True):
        labelled, count = ndimage.label(mask, structure=np.ones((3, 3)))
        regions += [values[labelled == r] for r in range(1, count + 1)]
    normal = flat_maps[~flat_masks]
    fprs, pros = [0.0], [0.0]
    for threshold in np.sort(np.unique(flat_maps))[::-1]:
        fprs.append(float(np.mean(normal >= threshold)))
        pros.append(float(np.mean([np.mean(r >= threshold) for r in regions])))
    fprs_a, pros_a = np.asarray([*fprs, 1.0]), np.asarray([*pros, 1.0])
    limit = 0.3
    cut = np.searchsorted(fprs_a, limit, side="right")
    x = np.concatenate([fprs_a[:cut], [limit]])
    y = np.concatenate([pros_a[:cut], [np.interp(limit, fprs_a, pros_a)]])
    reference_aupro = float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2.0) / limit)
    return {
        "auroc": found["auroc"],
        "auroc_sklearn": float(roc_auc_score(flat_masks, flat_maps)),
        "ap": found["ap"],
        "ap_sklearn": float(average_precision_score(flat_masks, flat_maps)),
        "aupro": found["aupro"],
        "aupro_reference_loop": reference_aupro,
    }


def _load(cache: Path) -> tuple[dict, np.ndarray, list[str], list[tuple[int, int]], list[np.ndarray]]:
    meta = json.loads((cache / "meta.json").read_text())
    sizes = [(int(s[0]), int(s[1])) for s in meta["sizes"]]
    masks = [
        load_mask_at_size(m, size) if m else np.zeros((size[1], size[0]), dtype=bool)
        for m, size in zip(meta["masks"], sizes, strict=True)
    ]
    return meta, np.asarray(meta["labels"]), list(meta["defects"]), sizes, masks


def run_diagnose(cache: Path, out: Path) -> dict[str, object]:
    """Where the pooled figure loses: positive pixels per defect type, pooling across images, bank variants."""
    out.mkdir(parents=True, exist_ok=True)
    _meta, labels, defects, sizes, masks = _load(cache)
    grids = load_arrays(cache / "grids.h5")
    maps = [map_at_original_size(model_map(g, 4.0), size) for g, size in zip(grids["test_both"], sizes, strict=True)]
    kinds = np.asarray(defects)
    positives = {d: int(sum(int(m.sum()) for m, k in zip(masks, kinds, strict=True) if k == d)) for d in set(defects)}
    total = sum(positives.values())
    result: dict[str, object] = {
        "shipped map": _per_defect(masks, maps, defects, labels, np.asarray([m.max() for m in maps])),
        "positive_pixel_share": {d: v / total for d, v in sorted(positives.items())},
    }
    result["mean_mask_share_of_image"] = {
        d: float(np.mean([m.mean() for m, k in zip(masks, kinds, strict=True) if k == d]))
        for d in sorted(set(defects) - {"good"})
    }
    result["all_but_uneven"] = _metrics(masks, maps, kinds != "uneven")
    within = {}
    for d in sorted(set(defects) - {"good"}):
        values = [
            roc_auc_score(m.ravel(), s.ravel())
            for m, s, k in zip(masks, maps, kinds, strict=True)
            if k == d and 0 < m.sum() < m.size
        ]
        within[d] = float(np.mean(values))
    result["mean_within_image_pixel_auroc"] = within
    uneven = [
        (s[m].mean(), s[~m].mean()) for m, s, k in zip(masks, maps, kinds, strict=True) if k == "uneven" and m.any()
    ]
    good_mean = float(np.mean([s.mean() for s, lab in zip(maps, labels, strict=True) if not lab]))
    result["uneven_map_mean_inside_outside_vs_good"] = (
        float(np.mean([u[0] for u in uneven])),
        float(np.mean([u[1] for u in uneven])),
        good_mean,
    )
    centred = [m - np.float32(np.median(m)) for m in maps]  # an image-wide rise removed (diagnostic)
    result["map minus its image's median"] = _per_defect(
        masks, centred, defects, labels, np.asarray([m.max() for m in centred])
    )
    for extra in (cache / "grids_extra.h5", cache / "grids_pool.h5"):
        if not extra.exists():
            continue
        loaded = load_arrays(extra)
        for name in loaded:
            variant_maps = [
                map_at_original_size(model_map(g, 4.0), size) for g, size in zip(loaded[name], sizes, strict=True)
            ]
            result[f"bank: {name}"] = _per_defect(
                masks, variant_maps, defects, labels, np.asarray([m.max() for m in variant_maps])
            )
    for key, value in result.items():
        print(key, value, flush=True)
    (out / "diagnose.json").write_text(json.dumps(result, indent=1, default=float))
    return result


def run_analyze(cache: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    grids = load_arrays(cache / "grids.h5")
    meta = json.loads((cache / "meta.json").read_text())
    labels = np.asarray(meta["labels"])
    defects = meta["defects"]
    sizes = [tuple(s) for s in meta["sizes"]]
    masks = [
        load_mask_at_size(m, size) if m else np.zeros((size[1], size[0]), dtype=bool)
        for m, size in zip(meta["masks"], sizes, strict=True)
    ]
    report: dict[str, object] = {"metric_check": check_metrics_by_hand()}
    print(json.dumps(report["metric_check"], indent=1), flush=True)
    counts = {d: int(np.sum(np.asarray(defects) == d)) for d in sorted(set(defects))}
    empty = [
        (d, Path(p).name)
        for d, p, m, lab in zip(defects, meta["test"], masks, labels, strict=True)
        if lab and not m.any()
    ]
    report["counts"] = counts
    report["empty_defective_masks"] = empty
    report["border_share"] = {f"{k} patch": border_shares(masks, labels, k) for k in (1, 2)}
    print("counts", counts, "empty defective masks", empty, "border", report["border_share"], flush=True)
    shipped = grids["test_both"]
    rows: dict[str, object] = {}
    for name, function in map_variants().items():
        started = time.perf_counter()
        maps = [function(g, size) for g, size in zip(shipped, sizes, strict=True)]  # type: ignore[operator]
        rows[name] = _per_defect(masks, maps, defects, labels, np.asarray([m.max() for m in maps]))
        print(f"{name}: {rows[name]}  ({time.perf_counter() - started:.0f} s)", flush=True)
    report["map_variants"] = rows
    shipped_maps = [map_at_original_size(model_map(g, 4.0), size) for g, size in zip(shipped, sizes, strict=True)]
    layer_rows = {}
    for name in FEATURES:
        maps = [
            map_at_original_size(model_map(g, 4.0), size) for g, size in zip(grids[f"test_{name}"], sizes, strict=True)
        ]
        layer_rows[name] = _per_defect(masks, maps, defects, labels, np.asarray([m.max() for m in maps]))
        print(f"features {name}: {layer_rows[name]}", flush=True)
    report["features"] = layer_rows
    # Masks: without the empty defective masks; without the one-patch border band.
    nonempty = np.asarray([not lab or m.any() for lab, m in zip(labels, masks, strict=True)])
    report["without_empty_defective_masks"] = _metrics(masks, shipped_maps, nonempty)
    report["interior_only_1_patch"] = pixel_metrics_at_sizes(
        [_interior(m, 1) for m in masks], [_interior(s, 1) for s in shipped_maps]
    )
    # Alignment: shifting the map by a few original pixels should not help if mask and map line up.
    shifts = {}
    for axis, name in ((1, "x"), (0, "y")):
        for step in (-4, -2, 2, 4):
            moved = [
                ndimage.shift(s, [step if a == axis else 0 for a in (0, 1)], order=0, mode="nearest")
                for s in shipped_maps
            ]
            shifts[f"{name}{step:+d}"] = pixel_metrics_at_sizes(masks, moved)["auroc"]
    report["shifted_pixel_auroc"] = shifts
    print("shifts", shifts, flush=True)
    low = float(
        np.quantile(np.concatenate([s.ravel() for s, lab in zip(shipped_maps, labels, strict=True) if not lab]), 0.5)
    )
    high = float(max(s.max() for s in shipped_maps))
    for defect in ("crack", "uneven", "blowhole", "fray"):
        for i in [i for i, d in enumerate(defects) if d == defect][:3]:
            overlay(meta["test"][i], masks[i], shipped_maps[i], low, high).save(out / f"{defect}_{i}.png")
    (out / "report.json").write_text(json.dumps(report, indent=1, default=float))


def run_extra(cache: Path, only_raw: bool = False) -> None:
    """Bank-side variants on the same subset: k = 1, a 3% coreset, and features without the per-layer L2 norm."""
    meta = json.loads((cache / "meta.json").read_text())
    backbone = create_backbone(DEFAULT_BACKBONE)
    extractor = build_extractor(new_feature_space(backbone), backbone)
    grid = extractor.grid_shape()
    train = [Path(p) for p in meta["train"]]
    test = [Path(p) for p in meta["test"]]
    out: dict[str, Any] = {}
    low, high, _ = embed_parts(extractor, train)
    train_both = variant(low, high, "both")
    low, high, _ = embed_parts(extractor, test)
    test_both = variant(low, high, "both")
    bank_variants = () if only_raw else (("k 1", DEFAULT_CORESET_RATIO, 1), ("coreset 3%", 0.03, DEFAULT_K))
    for name, ratio, k in bank_variants:
        started = time.perf_counter()
        out[name] = patch_grids(train_both, test_both, grid, ratio, k)
        print(f"{name}: {time.perf_counter() - started:.0f} s", flush=True)
        save_arrays(cache / "grids_extra.h5", out)
    del train_both, test_both
    low, high, _ = embed_parts(extractor, train, normalize=False)
    train_raw = variant(low, high, "both")
    low, high, _ = embed_parts(extractor, test, normalize=False)
    out["no per-layer L2 norm"] = patch_grids(train_raw, variant(low, high, "both"), grid)
    save_arrays(cache / "grids_extra.h5", out)


def run_pool(cache: Path) -> None:
    """Feature variant: the local average pool over 5 x 5 and 7 x 7 patches instead of 3 x 3 (more context)."""
    meta = json.loads((cache / "meta.json").read_text())
    backbone = create_backbone(DEFAULT_BACKBONE)
    extractor = build_extractor(new_feature_space(backbone), backbone)
    grid = extractor.grid_shape()
    out: dict[str, Any] = {}
    for pool in (5, 7):
        low, high, _ = embed_parts(extractor, [Path(p) for p in meta["train"]], local_pool=pool)
        train = variant(low, high, "both")
        low, high, _ = embed_parts(extractor, [Path(p) for p in meta["test"]], local_pool=pool)
        out[f"local pool {pool}"] = patch_grids(train, variant(low, high, "both"), grid)
        del train
        save_arrays(cache / "grids_pool.h5", out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("phase", choices=("embed", "extra", "pool", "analyze", "diagnose"))
    parser.add_argument("cache", type=Path)
    parser.add_argument("--max-train", type=int, default=200)
    parser.add_argument("--max-test", type=int, default=292, help="0: all test images")
    parser.add_argument("--features", nargs="+", default=list(FEATURES), choices=FEATURES)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("/tmp/25p-out"))
    parser.add_argument("--data", type=Path, default=MTD, help="a category folder (MVTec AD layout): MTD or bottle")
    parser.add_argument("--only-raw", action="store_true", help="extra: only the features without the L2 norm")
    args = parser.parse_args()
    if args.phase == "embed":
        run_embed(args.cache, args.max_train, args.max_test or None, args.seed, tuple(args.features), args.data)
    elif args.phase == "extra":
        run_extra(args.cache, args.only_raw)
    elif args.phase == "pool":
        run_pool(args.cache)
    elif args.phase == "diagnose":
        run_diagnose(args.cache, args.out)
    else:
        run_analyze(args.cache, args.out)


if __name__ == "__main__":
    main()
