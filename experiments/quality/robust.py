# Exploratory measurement script of issue 13 (docs/quality.md); reads the cache of embed.py + analyze.py.
# Run from the repo root: PYTHONPATH=. .venv/bin/python experiments/quality/robust.py (see experiments/README.md).
"""Paper vs robust scoring (the shipped StructCoreCalibrator) and robust-mode variants on cached descriptors.

Usage: robust.py CACHE_DIR [CACHE_DIR ...]   (each holds desc_r0.01.npz and labels.npy from analyze.py)

Every variant is calibrated on train-good descriptors only (loo, or in-sample where said); the test
labels are used for the printed AUROC / FRR alone.
"""

import functools
import sys
from pathlib import Path

import numpy as np

from evaluation.metrics import image_metrics
from structcore.scoring import StructCoreCalibrator, robust_scale

load_npy = functools.partial(np.load, allow_pickle=False)


def iqr(x):
    q75, q25 = np.percentile(x, [75, 25])
    return (q75 - q25) / 1.3489795003921634


def upper(x):
    q75, q50 = np.percentile(x, [75, 50])
    return q75 - q50


def upper90(x):
    q90, q50 = np.percentile(x, [90, 50])
    return q90 - q50


def evaluate(name, labels, b, D, eb, ed, **kw):
    lam_kind = kw.pop("lam", None)
    dims = kw.pop("dims", None)
    c = StructCoreCalibrator(**kw)
    if dims is not None:  # zero the weight of the dropped dimensions via their columns
        D = D.copy()
        ed = ed.copy()
        for j in set(range(3)) - set(dims):
            D[:, j] = 0.0
            ed[:, j] = 0.0
    c.fit_descriptors(b, D)
    if lam_kind is not None:
        st = c.struct_distance(D)
        scale = {"std": np.std, "mad": robust_scale, "iqr": iqr, "upper": upper, "upper90": upper90}[lam_kind]
        c.lambda_ = float(scale(b) / (scale(st) + c.eps))
        h = b + c.lambda_ * st
        c.thresholds_["hybrid"] = float(np.quantile(h, c.quantile))
        c.thresholds_["struct"] = float(np.quantile(st, c.quantile))
    train_struct = c.struct_distance(D)
    s = c.score_descriptors(eb, ed)
    au = {k: image_metrics(labels, s.by_kind(k))["auroc"] for k in ("base", "struct", "hybrid")}
    frr = {k: float((s.by_kind(k)[~labels] > c.thresholds_[k]).mean()) for k in ("base", "struct", "hybrid")}
    zero = float((train_struct <= 0).mean())
    print(
        f"  {name:44s} struct {au['struct']:.4f} hybrid {au['hybrid']:.4f} (+{au['hybrid'] - au['base']:+.4f})"
        f" lambda {c.lambda_:.4g} FRR hyb {frr['hybrid']:.3f} base {frr['base']:.3f}  train D=0 {zero:.2f}"
    )
    return au, frr, c


for cache in sys.argv[1:]:
    d = load_npy(Path(cache) / "desc_r0.01.npz")
    labels = load_npy(Path(cache) / "labels.npy").astype(bool)
    eb, ed = d["eb"], d["ed"]
    print(
        f"== {Path(cache).name}: base {image_metrics(labels, eb)['auroc']:.4f}"
        f" (n train {len(d['tb'])}, test good {(~labels).sum()}, bad {labels.sum()})"
    )
    for cal, (b, D) in {"loo": (d["tb"], d["td"]), "in-sample": (d["ib"], d["idd"])}.items():
        print(f" [{cal}]")
        evaluate("paper", labels, b, D, eb, ed, scoring="paper")
        evaluate("robust (shipped)", labels, b, D, eb, ed, scoring="robust")
        for lam in ("std", "mad", "iqr", "upper", "upper90"):
            evaluate(f"robust, lambda by {lam} ratio", labels, b, D, eb, ed, scoring="robust", lam=lam)
        for floor in (0.0, 0.05, 0.1, 0.2):
            evaluate(f"robust, scale floor {floor}", labels, b, D, eb, ed, scoring="robust", scale_floor=floor)
        evaluate("robust, no TV", labels, b, D, eb, ed, scoring="robust", dims=(0, 1))
        evaluate("robust, std only", labels, b, D, eb, ed, scoring="robust", dims=(0,))
