# Exploratory measurement script of issue 13 (docs/quality.md); reads/writes the cache /tmp/13-cache.
# Run from the repo root: PYTHONPATH=. .venv/bin/python experiments/quality/calmode.py CATEGORY_ROOT GEOM MODE [RATIO]
"""Fit one calibration mode (loo / holdout / in-sample) on re-embedded train images and score the cached test set.

Needs the cache of embed.py (test_emb16.npy, labels.npy) for CATEGORY_ROOT and GEOM. Prints paper and robust
image AUROC / FRR for that mode; the test labels are used for the printed figures only.
"""

import functools
import sys
import time
from pathlib import Path

import numpy as np

from evaluation.datasets import load_mvtec
from evaluation.metrics import image_metrics
from structcore.backbones import create_backbone
from structcore.features import build_extractor, new_feature_space
from structcore.model import CategoryModel, embed_images
from structcore.scoring import StructCoreCalibrator

load_npy = functools.partial(np.load, allow_pickle=False)
cat_root, geom, mode = sys.argv[1], sys.argv[2], sys.argv[3]
ratio = float(sys.argv[4]) if len(sys.argv) > 4 else 0.01
name = Path(cat_root).name
resize, crop = {"crop": (448, 392), "nocrop": (392, 392), "nocrop512": (512, 512)}[geom]
cache = Path(f"/tmp/13-cache/{name}-{geom}")
bb = create_backbone("efficientnet-lite2")
space = new_feature_space(bb, resize=resize, crop=crop)
ex = build_extractor(space, bb, batch_size=8)
data = load_mvtec(str(Path(cat_root).parent), [name]).categories[name]
t0 = time.time()
train = embed_images(ex, [str(p) for p in data.train])
labels = load_npy(cache / "labels.npy").astype(bool)
model = CategoryModel(coreset_ratio=ratio, calibration=mode, scoring="paper")
kept = []  # (base, phi) per _map_statistics call: the calibration maps (mixed: loo first, then in-sample)
stats = model._map_statistics


def keep(ps):
    kept.append(stats(ps))
    return kept[-1]


model._map_statistics = keep
model.fit(train, ex.grid_shape(), crop)
fit_s = time.time() - t0
test16 = load_npy(cache / "test_emb16.npy", mmap_mode="r")
maps = np.concatenate(
    [
        model._maps(model.patch_scores(np.asarray(test16[s : s + 32], dtype=np.float32)))
        for s in range(0, len(test16), 32)
    ]
)
print(f"== {name} {geom} {mode} r{ratio}: fit+embed {fit_s:.0f} s, calibration maps {len(kept[0][0])}")
for scoring in ("paper", "robust"):
    c = StructCoreCalibrator(scoring=scoring).fit_descriptors(*kept[-1])
    if mode == "mixed":
        c.fit_thresholds(*kept[0])
    sc = c.score(maps)
    au = {k: image_metrics(labels, sc.by_kind(k))["auroc"] for k in ("base", "struct", "hybrid")}
    frr = {k: float((sc.by_kind(k)[~labels] > c.thresholds_[k]).mean()) for k in ("base", "struct", "hybrid")}
    print(
        f"  {scoring}: base {au['base']:.4f} struct {au['struct']:.4f} hybrid {au['hybrid']:.4f}"
        f" lambda {c.lambda_:.4g} FRR base {frr['base']:.3f} struct {frr['struct']:.3f} hybrid {frr['hybrid']:.3f}"
    )
