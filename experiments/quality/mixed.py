# Exploratory measurement script of issue 13 (docs/quality.md); reads the cache of embed.py + analyze.py.
# Run from the repo root: PYTHONPATH=. .venv/bin/python experiments/quality/mixed.py CACHE_DIR [...]
"""Statistics (mu, sigma, lambda) from in-sample maps, thresholds from loo maps: a 'mixed' calibration."""

import functools
import sys
from pathlib import Path

import numpy as np

from evaluation.metrics import image_metrics
from structcore.scoring import StructCoreCalibrator

load_npy = functools.partial(np.load, allow_pickle=False)
for cache in sys.argv[1:]:
    d = load_npy(Path(cache) / "desc_r0.01.npz")
    labels = load_npy(Path(cache) / "labels.npy").astype(bool)
    for scoring in ("paper", "robust"):
        c = StructCoreCalibrator(scoring=scoring).fit_descriptors(d["ib"], d["idd"])
        loo = c.score_descriptors(d["tb"], d["td"])
        te = c.score_descriptors(d["eb"], d["ed"])
        thr = {k: float(np.quantile(loo.by_kind(k), 0.995)) for k in ("base", "struct", "hybrid")}
        au = {k: image_metrics(labels, te.by_kind(k))["auroc"] for k in ("base", "struct", "hybrid")}
        frr = {k: float((te.by_kind(k)[~labels] > thr[k]).mean()) for k in ("base", "struct", "hybrid")}
        print(
            f"{Path(cache).name} {scoring} mixed: base {au['base']:.4f} struct {au['struct']:.4f} "
            f"hybrid {au['hybrid']:.4f}"
            f" lambda {c.lambda_:.4g} FRR base {frr['base']:.3f} struct {frr['struct']:.3f} hybrid {frr['hybrid']:.3f}"
        )
