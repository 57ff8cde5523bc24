# Exploratory measurement script of issue 13 (docs/quality.md); reads the cache of embed.py + analyze.py.
# Run from the repo root: PYTHONPATH=. .venv/bin/python experiments/quality/table.py NAME [NAME ...]
"""The before/after table of docs/quality.md: per category, geometry x scoring x calibration.

NAME is a cache prefix (/tmp/13-cache/NAME-{crop,nocrop}); pixel figures come from analyze.py's output
(NAME-GEOM.analyze.txt), fit time from embed.py's meta (a loo fit of the product's CategoryModel).
"""

import functools
import json
import re
import sys
from pathlib import Path

import numpy as np

from evaluation.metrics import image_metrics
from structcore.scoring import StructCoreCalibrator

load_npy = functools.partial(np.load, allow_pickle=False)
ROWS = [(g, s, c) for g in ("crop", "nocrop") for s in ("paper", "robust") for c in ("loo", "mixed")]
print(
    "| category | geometry | scoring | calibration | base | struct | hybrid | hybrid - base | P-AUROC | AUPRO"
    " | FRR hybrid | lambda | fit (s) |"
)
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for name in sys.argv[1:]:
    for geom, scoring, cal in ROWS:
        cache = Path(f"/tmp/13-cache/{name}-{geom}")
        if not (cache / "desc_r0.01.npz").exists():
            continue
        d = load_npy(cache / "desc_r0.01.npz")
        labels = load_npy(cache / "labels.npy").astype(bool)
        c = StructCoreCalibrator(scoring=scoring)
        if cal == "loo":
            c.fit_descriptors(d["tb"], d["td"])
        else:
            c.fit_descriptors(d["ib"], d["idd"]).fit_thresholds(d["tb"], d["td"])
        s = c.score_descriptors(d["eb"], d["ed"])
        au = {k: image_metrics(labels, s.by_kind(k))["auroc"] for k in ("base", "struct", "hybrid")}
        frr = float((s.hybrid[~labels] > c.thresholds_["hybrid"]).mean())
        text = (Path(f"/tmp/13-cache/{name}-{geom}.analyze.txt")).read_text()
        found = re.search(r"pixel AUROC ([0-9.]+) AUPRO ([0-9.]+)", text)
        pa, pro = found.groups() if found else ("-", "-")
        fit = json.loads((cache / "meta_r0.01.json").read_text())["fit_s"]
        geo = "448 -> 392 crop" if geom == "crop" else "392, no crop"
        print(
            f"| {name} | {geo} | {scoring} | {cal} | {au['base']:.4f} | {au['struct']:.4f} | {au['hybrid']:.4f}"
            f" | {au['hybrid'] - au['base']:+.4f} | {pa} | {pro} | {frr:.1%} | {c.lambda_:.4g} | {fit:.0f} |"
        )
