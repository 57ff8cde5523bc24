# Exploratory measurement script of issue 13 (docs/quality.md); writes its cache to /tmp/13-cache.
# Run from the repo root: PYTHONPATH=. .venv/bin/python experiments/quality/variants.py (see experiments/README.md).
"""Scoring variants on cached descriptors (desc_*.npz)."""

import functools
import sys

import numpy as np
from scipy.stats import median_abs_deviation as mad

from evaluation.metrics import image_metrics

load_npy = functools.partial(np.load, allow_pickle=False)  # arrays only, never pickles

d = load_npy(sys.argv[1])
labels = load_npy(sys.argv[1].rsplit("/", 1)[0] + "/labels.npy").astype(bool)


def au(s):
    return image_metrics(labels, s)["auroc"]


def run(name, b, D, eb, ed, loc, scale, onesided, lam_kind, floor=0.0, dims=(0, 1, 2)):
    dims = list(dims)
    D, ed = D[:, dims], ed[:, dims]
    mu = D.mean(0) if loc == "mean" else np.median(D, 0)
    sd = D.std(0) if scale == "std" else mad(D, axis=0, scale="normal")
    sd = np.maximum(sd, floor * np.abs(mu)) + 1e-6

    def dist(x):
        z = (x - mu) / sd
        if onesided:
            z = np.maximum(z, 0)
        return np.sqrt((z**2).sum(1))

    st, se = dist(D), dist(ed)
    if lam_kind == "std":
        lam = b.std() / (st.std() + 1e-6)
    elif lam_kind == "mad":
        lam = mad(b, scale="normal") / (mad(st, scale="normal") + 1e-6)
    elif lam_kind == "iqr":
        lam = np.subtract(*np.percentile(b, [75, 25])) / (np.subtract(*np.percentile(st, [75, 25])) + 1e-6)
    h, he = b + lam * st, eb + lam * se
    thr = np.quantile(h, 0.995)
    frr = (he[~labels] > thr).mean()
    print(f"  {name:42s} struct {au(se):.4f} hybrid {au(he):.4f} lambda {lam:.4g} FRR {frr:.3f}")


for cal, (b, D) in {"loo": (d["tb"], d["td"]), "in-sample": (d["ib"], d["idd"])}.items():
    eb, ed = d["eb"], d["ed"]
    print(f"[{cal}] base {au(eb):.4f} FRR {(eb[~labels] > np.quantile(b, 0.995)).mean():.3f}")
    run("paper", b, D, eb, ed, "mean", "std", False, "std")
    run("onesided", b, D, eb, ed, "mean", "std", True, "std")
    run("median/MAD two-sided", b, D, eb, ed, "median", "mad", False, "std")
    run("median/MAD one-sided", b, D, eb, ed, "median", "mad", True, "std")
    run("median/MAD one-sided lam-mad", b, D, eb, ed, "median", "mad", True, "mad")
    run("median/MAD one-sided lam-iqr", b, D, eb, ed, "median", "mad", True, "iqr")
    run("onesided lam-mad", b, D, eb, ed, "mean", "std", True, "mad")
    for dims in [(0,), (1,), (2,), (0, 1), (1, 2), (0, 2)]:
        run(f"paper dims {dims}", b, D, eb, ed, "mean", "std", False, "std", dims=dims)
        run(f"onesided dims {dims}", b, D, eb, ed, "mean", "std", True, "std", dims=dims)
