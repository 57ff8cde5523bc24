# Exploratory measurement script of issue 13 (docs/quality.md); writes its cache to /tmp/13-cache.
# Run from the repo root: PYTHONPATH=. .venv/bin/python experiments/quality/borders.py (see experiments/README.md).
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[3] / "shared/data/mtd/magnetic_tile"
per = defaultdict(
    lambda: [0, 0, 0, 0.0, 0]
)  # n, any mask pixel outside crop, fully outside, share of pixels lost, n regions
sizes = []
for p in sorted((root / "ground_truth").glob("*/*.png")):
    m = np.asarray(Image.open(p).convert("L")) > 0
    h, w = m.shape
    sizes.append((w, h))
    t, left = round(h * 28 / 448), round(w * 28 / 448)
    inner = np.zeros_like(m)
    inner[t : h - t, left : w - left] = True
    d = per[p.parent.name]
    d[0] += 1
    out = (m & ~inner).sum()
    d[1] += out > 0
    d[2] += (m & inner).sum() == 0
    d[3] += out / max(1, m.sum())
for k, (n, a, f, s, _) in per.items():
    print(
        f"{k}: {n} images, {a} with mask pixels in the cut border ({a / n:.0%}), {f} fully cut, "
        f"mean share cut {s / n:.1%}"
    )
sz = np.array([Image.open(p).size for p in (root / "train/good").glob("*")])
print(
    "train widths",
    sz[:, 0].min(),
    np.median(sz[:, 0]),
    sz[:, 0].max(),
    "heights",
    sz[:, 1].min(),
    np.median(sz[:, 1]),
    sz[:, 1].max(),
)
ar = sz[:, 0] / sz[:, 1]
print("aspect w/h", ar.min(), np.median(ar), ar.max())
