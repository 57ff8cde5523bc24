"""Explore open-set ``unknown`` statistics on cached routing patch vectors (issue 14).

What it does:

1. ``--data`` (default ``/tmp/14-data``) is a dataset root in the MVTec layout holding real
   categories (symlinks to bottle and MTD's magnetic_tile) and synthetic kinds; ``--make-data``
   writes it (synthetic kinds via :mod:`evaluation.synthetic`, real folders linked, never copied).
2. Each category's train images (seeded subset, ``--max-train``, the same subset as
   ``registry eval --max-train``) and test images (``--max-test``) are embedded once with the
   default feature space (EfficientNet-Lite2, 448 -> 392, D = 512) and cached under ``--cache``
   as float16: the projected patch vectors (the routing features) and the first backbone layer
   alone (block 6, stride 8; "shallower-layer" option).
3. Per category: 64 routing prototypes (greedy k-center, as :class:`CategoryModel`), the
   leave-one-out train patch distances, and every test image's nearest-prototype distance per
   patch against every category.
4. Options are scored under the open-set protocol (each category left out in turn, its test
   images presented as unknown among the other categories' test images). Thresholds come from
   train-good images only (leave-one-out). Printed: statistic, AUROC mean (min), left-out
   flagged (mean, min), registered good flagged (mean, worst), registered defective flagged
   (mean, worst). ``--paste`` adds the "shares a background" probe: a registered category's
   good test image with a centred square of another category's image pasted over a share of its
   area, flagged share per area.

Options: far share (patch quantile q of the LOO train distances, share threshold fixed or
LOO-calibrated), its continuous twin ``quantile-N`` (the N% patch-distance quantile over the
far threshold; the shipped rule is ``quantile-30`` over q = 0.9), mean / median / low quantiles
/ low means over a margin times their LOO train 99.5% quantile or median + k MAD, the pooled
embedding's nearest train image, the same on the shallow layer, "flag only if both" pairs, and
the route-score margin to the second-best category (AUROC only). Results: docs/open-set.md.

Usage::

    python experiments/open_set/explore.py --make-data          # once: writes /tmp/14-data
    python experiments/open_set/explore.py --max-train 80 --paste

The cache key holds the category, split and subset size; delete ``--cache`` to re-embed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from evaluation.datasets import load_dataset
from evaluation.synthetic import CATEGORY_KINDS, make_category, write_mvtec_layout
from structcore.routing import (
    l2_normalize,
    leave_one_out_patch_distances,
    patch_vectors_to_prototypes,
)

REAL = {"bottle": "/work/shared/data/mvtec_ad/bottle", "magnetic_tile": "/work/shared/data/mtd/magnetic_tile"}
SEED = 42  # CategoryModel's default seed (prototypes)


# ----------------------------------------------------------------------------- data + cache
def make_data(root: Path, n_train: int, n_good: int, n_bad: int, size: int) -> None:
    """Link the real categories and write the synthetic kinds under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    for name, target in REAL.items():
        link = root / name
        if not link.exists() and Path(target).is_dir():
            link.symlink_to(target)
    for seed, kind in enumerate(CATEGORY_KINDS):
        if not (root / kind).exists():
            category = make_category(kind, n_train=n_train, n_test_good=n_good, n_test_bad=n_bad, seed=seed, size=size)
            write_mvtec_layout(category, root, kind)


@dataclass
class Cached:
    """Embedded category: train / test routing vectors, shallow-layer vectors, test labels."""

    name: str
    train: np.ndarray  # (n, P, D) float16
    test: np.ndarray
    train_shallow: np.ndarray  # (n, P, 48) float16
    test_shallow: np.ndarray
    labels: np.ndarray
    defects: list[str]


def _embed(extractor, paths: Sequence[Path]) -> tuple[np.ndarray, np.ndarray]:  # type: ignore[no-untyped-def]
    projected, shallow = [], []
    with torch.inference_mode():
        for start in range(0, len(paths), extractor.batch_size):
            images = extractor.prepare(list(paths[start : start + extractor.batch_size]))
            maps = extractor.extract_maps(images)
            from structcore.features import project_layers

            projected.append(
                project_layers(maps, extractor._projection_t, extractor.backbone.info.local_pool).half().numpy()
            )
            first = F.normalize(maps[0].float(), dim=1)
            shallow.append(first.permute(0, 2, 3, 1).reshape(len(images), -1, first.shape[1]).half().numpy())
    return np.concatenate(projected), np.concatenate(shallow)


def load_cached(data: Path, cache: Path, names: Sequence[str], max_train: int, max_test: int | None) -> list[Cached]:
    """Embed (or read back) every category."""
    dataset = load_dataset(data, layout="mvtec", categories=list(names))
    extractor = None
    out = []
    for name in names:
        category = dataset.categories[name].subset(max_train=max_train, max_test=max_test, seed=0)
        folder = cache / f"{name}-train{max_train}-test{max_test}"
        if not (folder / "done").exists():
            if extractor is None:
                from structcore.backbones import create_backbone
                from structcore.features import build_extractor, new_feature_space

                backbone = create_backbone("efficientnet-lite2")
                extractor = build_extractor(new_feature_space(backbone), backbone, batch_size=8)
            folder.mkdir(parents=True, exist_ok=True)
            started = time.perf_counter()
            for split, paths in (("train", category.train), ("test", category.test)):
                projected, shallow = _embed(extractor, paths)
                np.save(folder / f"{split}.npy", projected)
                np.save(folder / f"{split}_shallow.npy", shallow)
            np.save(folder / "labels.npy", np.asarray(category.labels))
            (folder / "defects.json").write_text(json.dumps(list(category.defects)))
            (folder / "done").write_text("")
            n_images = len(category.train) + len(category.test)
            print(f"embedded {name}: {n_images} images in {time.perf_counter() - started:.0f} s", flush=True)
        out.append(
            Cached(
                name=name,
                train=np.lib.format.open_memmap(folder / "train.npy", mode="r"),
                test=np.lib.format.open_memmap(folder / "test.npy", mode="r"),
                train_shallow=np.lib.format.open_memmap(folder / "train_shallow.npy", mode="r"),
                test_shallow=np.lib.format.open_memmap(folder / "test_shallow.npy", mode="r"),
                labels=np.asarray(np.lib.format.open_memmap(folder / "labels.npy", mode="r")),
                defects=json.loads((folder / "defects.json").read_text()),
            )
        )
    return out


# ----------------------------------------------------------------------------- distances
@dataclass
class Space:
    """One feature (routing vectors or shallow layer): per-category prototypes and distances."""

    loo: list[np.ndarray]  # per category: (n_train, P) leave-one-out train patch distances
    test: list[np.ndarray]  # per test category: (n_test, C, P) distance to each category's prototypes
    pooled_loo: list[np.ndarray]  # per category: (n_train,) pooled distance to nearest other train image
    pooled_test: list[np.ndarray]  # per test category: (n_test, C) pooled distance to nearest train image
    prototypes: list[np.ndarray]
    pooled_train: list[np.ndarray]

    def distances(self, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(n, C, P) patch distances and (n, C) pooled distances of new images (n, P, D)."""
        pooled = _pooled(vectors)
        near = [((pooled[:, None] - train[None]) ** 2).sum(-1).min(axis=1) for train in self.pooled_train]
        return _min_distances(vectors, self.prototypes), np.stack(near, axis=1)


def _min_distances(vectors: np.ndarray, prototypes: list[np.ndarray]) -> np.ndarray:
    """(n, C, P) squared distance of each L2-normalised patch to the nearest prototype of each category."""
    stacked = torch.from_numpy(np.concatenate(prototypes))
    sizes = [len(p) for p in prototypes]
    n, patches, _ = vectors.shape
    out = np.empty((n, len(prototypes), patches), dtype=np.float32)
    with torch.inference_mode():
        for i in range(n):
            block = torch.from_numpy(l2_normalize(np.asarray(vectors[i], dtype=np.float32)))
            sims = block @ stacked.T
            start = 0
            for c, size in enumerate(sizes):
                best = sims[:, start : start + size].amax(dim=1)
                out[i, c] = (2.0 - 2.0 * best).clamp_min_(0.0).numpy()
                start += size
    return out


def _pooled(vectors: np.ndarray) -> np.ndarray:
    return np.stack([l2_normalize(np.asarray(v, dtype=np.float32)).mean(axis=0) for v in vectors])


def build_space(cats: list[Cached], shallow: bool, count: int = 64) -> Space:
    """Prototypes, leave-one-out train distances and test distances for one feature."""
    prototypes, loo, pooled_train = [], [], []
    for cat in cats:
        train = np.asarray(cat.train_shallow if shallow else cat.train, dtype=np.float32)
        n, patches, dim = train.shape
        protos, rows = patch_vectors_to_prototypes(train.reshape(n * patches, dim), count, seed=SEED)
        prototypes.append(protos)
        loo.append(leave_one_out_patch_distances(train, protos, rows // patches))
        pooled_train.append(_pooled(train))
    pooled_loo = []
    for pooled in pooled_train:
        gaps = ((pooled[:, None] - pooled[None]) ** 2).sum(-1)
        np.fill_diagonal(gaps, np.inf)
        pooled_loo.append(gaps.min(axis=1))
    test, pooled_test = [], []
    for cat in cats:
        vectors = cat.test_shallow if shallow else cat.test
        test.append(_min_distances(vectors, prototypes))
        pooled = _pooled(vectors)
        pooled_test.append(
            np.stack([((pooled[:, None] - train[None]) ** 2).sum(-1).min(axis=1) for train in pooled_train], axis=1)
        )
    return Space(loo, test, pooled_loo, pooled_test, prototypes, pooled_train)


# ----------------------------------------------------------------------------- statistics
def low_quantile(q: float) -> Callable[[np.ndarray], np.ndarray]:
    return lambda d: np.quantile(d, q, axis=-1)


def low_mean(share: float) -> Callable[[np.ndarray], np.ndarray]:
    def stat(d: np.ndarray) -> np.ndarray:
        keep = max(1, round(d.shape[-1] * share))
        return np.partition(d, keep - 1, axis=-1)[..., :keep].mean(axis=-1)

    return stat


STATISTICS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "mean": lambda d: d.mean(axis=-1),
    "median": low_quantile(0.5),
    "q25": low_quantile(0.25),
    "q10": low_quantile(0.10),
    "low-mean-50": low_mean(0.5),
    "low-mean-25": low_mean(0.25),
}


Ratios = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass
class Option:
    """A candidate: ``fn(distances (n, C, P), pooled distances (n, C))`` -> ratios (n, C), ``> 1`` = unlike."""

    name: str
    fn: Ratios
    ratios: list[np.ndarray] = field(default_factory=list)


def _far_share(far: np.ndarray, limit: np.ndarray) -> Ratios:
    return lambda d, _p: (d > far[None, :, None]).mean(-1) / limit


def _stat_ratio(stat: Callable[[np.ndarray], np.ndarray], limit: np.ndarray) -> Ratios:
    return lambda d, _p: stat(d) / limit


def _pooled_ratio(limit: np.ndarray) -> Ratios:
    return lambda _d, p: p / limit


def ratio_options(space: Space, label: str) -> list[Option]:
    """Every (statistic, threshold rule) pair on one feature space, thresholds from train LOO only."""
    options: list[Option] = []
    for q in (0.9, 0.95, 0.99):
        far = np.asarray([np.quantile(loo, q) for loo in space.loo])
        for share in (0.5, 0.7, 0.9):
            options.append(Option(f"{label} far-share q{q:g} > {share:g}", _far_share(far, np.full(len(far), share))))
        for share in (0.5, 0.6, 0.7, 0.8):
            # continuous twin of "far-share > share": the (1 - share) quantile of the patch
            # distances over the far threshold (same decisions, unbounded score)
            stat = low_quantile(1.0 - share)
            options.append(
                Option(f"{label} quantile-{round(100 * (1 - share))} > LOO q{q:g} patch", _stat_ratio(stat, far))
            )
        loo_share = [(loo > far[c]).mean(-1) for c, loo in enumerate(space.loo)]
        for margin in (1.5, 2.0):
            limit = np.asarray([min(0.99, np.quantile(s, 0.995) * margin) for s in loo_share])
            options.append(Option(f"{label} far-share q{q:g} > LOO q99.5 x {margin:g}", _far_share(far, limit)))
    for stat_name, stat in STATISTICS.items():
        train_stat = [stat(loo) for loo in space.loo]
        for margin in (1.0, 1.2, 1.3, 1.5, 2.0):
            limit = np.asarray([np.quantile(s, 0.995) * margin for s in train_stat])
            options.append(Option(f"{label} {stat_name} > LOO q99.5 x {margin:g}", _stat_ratio(stat, limit)))
        for z in (6.0, 10.0):
            limit = np.asarray([np.median(s) + z * _mad(s) for s in train_stat])
            options.append(Option(f"{label} {stat_name} > median + {z:g} MAD", _stat_ratio(stat, limit)))
    for margin in (1.0, 1.5, 2.0, 3.0):
        limit = np.asarray([np.quantile(s, 0.995) * margin for s in space.pooled_loo])
        options.append(Option(f"{label} pooled NN > LOO q99.5 x {margin:g}", _pooled_ratio(limit)))
    for option in options:
        option.ratios = [option.fn(d, p) for d, p in zip(space.test, space.pooled_test, strict=True)]
    return options


def _mad(values: np.ndarray) -> float:
    return float(np.median(np.abs(values - np.median(values))) * 1.4826)


def combine(a: Option, b: Option) -> Option:
    """Flag only when both say far: ratio = min of the two."""
    both = Option(f"{a.name} AND {b.name}", lambda d, p: np.minimum(a.fn(d, p), b.fn(d, p)))
    both.ratios = [np.minimum(x, y) for x, y in zip(a.ratios, b.ratios, strict=True)]
    return both


# ----------------------------------------------------------------------------- protocol
@dataclass
class Figures:
    auroc_mean: float
    auroc_min: float
    left_mean: float
    left_min: float
    good_mean: float
    good_worst: float
    bad_mean: float
    bad_worst: float
    alone_bad_worst: float  # a registry holding only that category: its own defective images flagged
    left_low: float  # 1% quantile of the left-out images' scores (all left-out categories pooled)
    own_high: float  # highest score of a test image against its own category (good or defective)


def open_set(option: Option, cats: list[Cached]) -> Figures:
    aurocs, left, good, bad = [], [], [], []
    good_worst = bad_worst = 0.0
    n = len(cats)
    for out in range(n):
        keep = [c for c in range(n) if c != out]
        score = [option.ratios[t][:, keep].min(axis=1) for t in range(n)]
        positive = score[out]
        negative = np.concatenate([score[t] for t in keep])
        labels = np.concatenate([cats[t].labels for t in keep])
        truth = np.r_[np.ones(len(positive)), np.zeros(len(negative))]
        aurocs.append(roc_auc_score(truth, np.r_[positive, negative]))
        left.append(np.mean(positive > 1))
        good.append(np.mean(negative[labels == 0] > 1))
        bad.append(np.mean(negative[labels != 0] > 1))
        for t in keep:
            flags = score[t] > 1
            good_worst = max(good_worst, float(np.mean(flags[cats[t].labels == 0])))
            bad_worst = max(bad_worst, float(np.mean(flags[cats[t].labels != 0])))
    alone = max(float(np.mean(option.ratios[t][cats[t].labels != 0, t] > 1)) for t in range(n))
    lows = np.concatenate([option.ratios[out][:, [c for c in range(n) if c != out]].min(axis=1) for out in range(n)])
    own_high = max(float(option.ratios[t][:, t].max()) for t in range(n))
    return Figures(
        float(np.mean(aurocs)), float(np.min(aurocs)), float(np.mean(left)), float(np.min(left)),
        float(np.mean(good)), good_worst, float(np.mean(bad)), bad_worst, alone,
        float(np.quantile(lows, 0.01)), own_high,
    )  # fmt: skip


def _row(name: str, f: Figures) -> str:
    pct = lambda v: f"{100 * v:.1f}"  # noqa: E731
    return (
        f"| {name} | {f.auroc_mean:.4f} ({f.auroc_min:.4f}) | {pct(f.left_mean)} ({pct(f.left_min)}) "
        f"| {pct(f.good_mean)} ({pct(f.good_worst)}) | {pct(f.bad_mean)} ({pct(f.bad_worst)}) "
        f"| {pct(f.alone_bad_worst)} | {f.left_low:.2f} / {f.own_high:.2f} |"
    )


HEADER = (
    "| statistic, threshold | AUROC mean (min) | left-out flagged % mean (min) | reg. good flagged % mean (worst) "
    "| reg. defective flagged % mean (worst) | alone: own defective flagged % (worst) "
    "| left-out 1% quantile / highest own image (threshold = 1) |\n|---|---|---|---|---|---|---|"
)


PASTE_OPTIONS = {
    "routing q25 > LOO q99.5 x 1.2",
    "routing low-mean-50 > LOO q99.5 x 1.2",
    "routing median > LOO q99.5 x 1.2",
    "routing mean > LOO q99.5 x 1.3",
    "routing far-share q0.95 > 0.5",
    "routing far-share q0.99 > 0.5",
    "routing pooled NN > LOO q99.5 x 1.5",
    "routing quantile-30 > LOO q0.9 patch",
    "routing quantile-40 > LOO q0.9 patch",
}


def meets(f: Figures) -> bool:
    return f.auroc_min >= 0.99 and f.left_min >= 0.95 and f.good_worst <= 0.02 and f.bad_worst <= 0.05


SPACE_FIELDS = ("loo", "test", "pooled_loo", "pooled_test", "prototypes", "pooled_train")


def _read_npy(path: Path) -> np.ndarray:
    """A plain ``.npy`` array, memory-mapped (no pickle)."""
    return np.asarray(np.lib.format.open_memmap(path, mode="r"))


def cached_space(cats: list[Cached], cache: Path, shallow: bool) -> Space:
    """:func:`build_space`, kept in ``cache`` (plain ``.npy`` files) for reruns on the same categories."""
    key = "-".join(f"{c.name}{len(c.train)}x{len(c.test)}" for c in cats)
    folder = cache / f"space-{'shallow' if shallow else 'routing'}-{key}"
    if (folder / "done").exists():
        parts = {name: [_read_npy(folder / f"{name}-{i}.npy") for i in range(len(cats))] for name in SPACE_FIELDS}
        return Space(**parts)
    started = time.perf_counter()
    space = build_space(cats, shallow=shallow)
    print(f"{'shallow-layer' if shallow else 'routing-vector'} distances in {time.perf_counter() - started:.0f} s")
    folder.mkdir(parents=True, exist_ok=True)
    for name in SPACE_FIELDS:
        for i, array in enumerate(getattr(space, name)):
            np.save(folder / f"{name}-{i}.npy", np.asarray(array))
    (folder / "done").write_text("")
    return space


def analyse(cats: list[Cached], data: Path, cache: Path, paste: bool = False) -> int:
    deep = cached_space(cats, cache, shallow=False)
    shallow = cached_space(cats, cache, shallow=True)
    options = ratio_options(deep, "routing") + ratio_options(shallow, "shallow")
    by_name = {o.name: o for o in options}
    pairs = [
        ("routing q25 > LOO q99.5 x 1.2", "routing pooled NN > LOO q99.5 x 1.5"),
        ("routing far-share q0.9 > 0.5", "routing pooled NN > LOO q99.5 x 1.5"),
        ("routing q25 > LOO q99.5 x 1.2", "routing far-share q0.9 > 0.5"),
        ("routing median > LOO q99.5 x 1.2", "shallow median > LOO q99.5 x 1.2"),
        ("routing q25 > LOO q99.5 x 1.2", "shallow q25 > LOO q99.5 x 1.2"),
    ]
    options += [combine(by_name[a], by_name[b]) for a, b in pairs if a in by_name and b in by_name]
    margin_scores = []
    for t in range(len(cats)):
        route = deep.test[t].mean(-1)  # (n, C)
        margin_scores.append(route)
    print("categories:", ", ".join(f"{c.name} ({len(c.test)} test)" for c in cats))
    print(HEADER)
    results = []
    for option in options:
        figures = open_set(option, cats)
        results.append((option.name, figures))
        print(_row(option.name + (" **" if meets(figures) else ""), figures), flush=True)
    print("\nmargin to second-best (route score gap; AUROC only, no threshold):")
    print(" ", _margin_auroc(margin_scores, cats))
    if paste:
        shortlisted = [o for o in options if o.name in PASTE_OPTIONS or o.name.startswith("routing far-share q0.9 >")]
        paste_probe(cats, deep, shortlisted, data)
    return 0


def _margin_auroc(route: list[np.ndarray], cats: list[Cached]) -> str:
    """AUROC of -(second best - best) route score among the registered categories."""
    values = []
    n = len(cats)
    for out in range(n):
        keep = [c for c in range(n) if c != out]
        gap = []
        for t in range(n):
            part = np.sort(route[t][:, keep], axis=1)
            gap.append(part[:, 0] - part[:, 1])  # higher (less negative) = ambiguous
        truth = np.r_[np.ones(len(gap[out])), np.zeros(sum(len(gap[t]) for t in keep))]
        values.append(roc_auc_score(truth, np.r_[gap[out], *(gap[t] for t in keep)]))
    return f"mean {np.mean(values):.4f} min {np.min(values):.4f}"


PASTE_AREAS = (0.1, 0.25, 0.5, 0.75)


def paste_probe(cats: list[Cached], deep: Space, options: list[Option], data: Path, per_base: int = 4) -> None:
    """Foreign content on a registered background: a centred square of another category's image.

    For each category (the background) ``per_base`` good test images get a centred square of the
    next category's first good test image pasted over ``PASTE_AREAS`` of their area; the pasted
    category is left out of the registry, every other one is registered (the background's own
    included). Printed: share of such images flagged per area, for a few options. Flagging them is
    the right answer for a new product on a shared background and the wrong one for a huge defect:
    the probe shows where each option puts the line.
    """
    from structcore.backbones import create_backbone
    from structcore.features import build_extractor, new_feature_space, project_layers

    backbone = create_backbone("efficientnet-lite2")
    extractor = build_extractor(new_feature_space(backbone), backbone, batch_size=8)
    dataset = load_dataset(data, layout="mvtec", categories=[c.name for c in cats])
    n = len(cats)
    flagged: dict[str, dict[float, list[bool]]] = {o.name: {a: [] for a in PASTE_AREAS} for o in options}
    crop = extractor.geometry.crop
    for b, cat in enumerate(cats):
        f = (b + 1) % n
        base_paths = [
            p
            for p, label in zip(dataset.categories[cat.name].test, dataset.categories[cat.name].labels, strict=True)
            if label == 0
        ][:per_base]
        foreign_paths = [
            p
            for p, label in zip(
                dataset.categories[cats[f].name].test, dataset.categories[cats[f].name].labels, strict=True
            )
            if label == 0
        ][:1]
        base = extractor.prepare(base_paths)
        foreign = extractor.prepare(foreign_paths)
        images = []
        for area in PASTE_AREAS:
            side = round(crop * area**0.5)
            lo = (crop - side) // 2
            pasted = base.clone()
            pasted[:, :, lo : lo + side, lo : lo + side] = foreign[:, :, lo : lo + side, lo : lo + side]
            images.append(pasted)
        batch = torch.cat(images)
        with torch.inference_mode():
            maps = extractor.extract_maps(batch)
            vectors = project_layers(maps, extractor._projection_t, extractor.backbone.info.local_pool).numpy()
        distances, pooled = deep.distances(vectors)
        keep = [c for c in range(n) if c != f]
        for option in options:
            score = option.fn(distances, pooled)[:, keep].min(axis=1)
            for k, area in enumerate(PASTE_AREAS):
                flagged[option.name][area].extend(
                    bool(v) for v in score[k * len(base_paths) : (k + 1) * len(base_paths)] > 1
                )
    print(
        "\nshared background probe: % flagged by pasted area share (" + ", ".join(f"{a:g}" for a in PASTE_AREAS) + ")"
    )
    for option in options:
        cells = " | ".join(f"{100 * np.mean(flagged[option.name][a]):.0f}" for a in PASTE_AREAS)
        print(f"| {option.name} | {cells} |")


# ----------------------------------------------------------------------------- main
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("/tmp/14-data"))
    parser.add_argument("--cache", type=Path, default=Path("/tmp/14-cache"))
    parser.add_argument("--make-data", action="store_true", help="write --data (links + synthetic kinds) first")
    parser.add_argument("--synthetic-size", type=int, default=256)
    parser.add_argument("--max-train", type=int, default=80)
    parser.add_argument("--max-test", type=int, default=None)
    parser.add_argument("--categories", default=",".join(["bottle", "magnetic_tile", *CATEGORY_KINDS]))
    parser.add_argument("--cache-only", action="store_true")
    parser.add_argument("--paste", action="store_true", help="also run the shared-background probe")
    args = parser.parse_args(argv)
    if args.make_data:
        make_data(args.data, n_train=80, n_good=20, n_bad=40, size=args.synthetic_size)
    names = [n.strip() for n in args.categories.split(",") if n.strip()]
    torch.set_num_threads(int(os.environ.get("EXPLORE_THREADS", "2")))
    cats = load_cached(args.data, args.cache, names, args.max_train, args.max_test)
    if args.cache_only:
        return 0
    return analyse(cats, args.data, args.cache, paste=args.paste)


if __name__ == "__main__":
    raise SystemExit(main())
