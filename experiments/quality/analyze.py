# Exploratory measurement script of issue 13 (docs/quality.md); writes its cache to /tmp/13-cache.
# Run from the repo root: PYTHONPATH=. .venv/bin/python experiments/quality/analyze.py (see experiments/README.md).
"""Score variants from cached patch-score grids: per-descriptor AUROC, lambda, FRR, hybrid variants."""

import functools
import json
import sys
from pathlib import Path

import numpy as np

from evaluation.metrics import image_metrics, pixel_metrics
from structcore.anomaly_map import anomaly_maps
from structcore.scoring import StructCoreCalibrator, base_scores, structural_descriptor

load_npy = functools.partial(np.load, allow_pickle=False)  # arrays only, never pickles

d = Path(sys.argv[1])
tag = sys.argv[2] if len(sys.argv) > 2 else "r0.01"
pix = "--pixel" in sys.argv
meta = json.loads((d / f"meta_{tag}.json").read_text())
grid = tuple(meta["grid"])
crop = meta["crop"]
labels = load_npy(d / "labels.npy").astype(bool)


def stats(ps, keep_maps=False):
    b, ds, ms = [], [], []
    for s in range(0, len(ps), 32):
        m = anomaly_maps(ps[s : s + 32].reshape(-1, *grid), crop, 4.0)
        b.append(base_scores(m))
        ds.append(structural_descriptor(m))
        if keep_maps:
            ms.append(m.astype(np.float32))
    return np.concatenate(b), np.concatenate(ds), (np.concatenate(ms) if keep_maps else None)


tb, td, _ = stats(load_npy(d / f"train_loo_{tag}.npy"))
ib, idd, _ = stats(load_npy(d / f"train_ins_{tag}.npy"))
eb, ed, emaps = stats(load_npy(d / f"test_ps_{tag}.npy"), keep_maps=pix)
np.savez(d / f"desc_{tag}.npz", tb=tb, td=td, ib=ib, idd=idd, eb=eb, ed=ed)


def au(s):
    return image_metrics(labels, s)["auroc"]


print(f"== {d.name} {tag}: base AUROC {au(eb):.4f}")
for j, n in enumerate(["std", "topk", "tv"]):
    print(
        f"  {n}: AUROC {au(ed[:, j]):.4f}  loo-train mean/sd {td[:, j].mean():.4g}/{td[:, j].std():.4g}"
        f"  ins-train {idd[:, j].mean():.4g}/{idd[:, j].std():.4g}"
        f"  test-good {ed[~labels, j].mean():.4g}/{ed[~labels, j].std():.4g}"
        f"  test-bad {ed[labels, j].mean():.4g}"
    )
print(
    f"  base: loo-train {tb.mean():.4g}/{tb.std():.4g} ins {ib.mean():.4g}/{ib.std():.4g}"
    f" test-good {eb[~labels].mean():.4g}/{eb[~labels].std():.4g}"
)
for mode, (b, dd) in {"loo": (tb, td), "in-sample": (ib, idd)}.items():
    c = StructCoreCalibrator(scoring="paper").fit_descriptors(b, dd)
    sc = c.score_descriptors(eb, ed)
    frr = {k: float((sc.by_kind(k)[~labels] > c.thresholds_[k]).mean()) for k in ("base", "struct", "hybrid")}
    print(f"  paper[{mode}]: lambda {c.lambda_:.4g} struct {au(sc.struct):.4f} hybrid {au(sc.hybrid):.4f} FRR {frr}")
if pix:
    masks = np.unpackbits(load_npy(d / "masks.npy"), axis=-1)[..., :crop].astype(bool)
    pm = pixel_metrics(masks, emaps, max_pixels=20_000_000)
    print(f"  pixel AUROC {pm['auroc']:.4f} AUPRO {pm['aupro']:.4f}")
