# Exploratory measurement script of issue 13 (docs/quality.md); writes its cache to /tmp/13-cache.
# Run from the repo root: PYTHONPATH=. .venv/bin/python experiments/quality/embed.py (see experiments/README.md).
"""Embed a category under one geometry, fit CategoryModel(loo), cache patch-score grids."""

import functools
import gc
import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from evaluation.datasets import load_mvtec
from structcore.backbones import create_backbone
from structcore.features import build_extractor, new_feature_space
from structcore.model import CategoryModel, embed_images
from structcore.preprocess import load_image, preprocess_mask

load_npy = functools.partial(np.load, allow_pickle=False)  # arrays only, never pickles

cat_root, geom, ratio = sys.argv[1], sys.argv[2], float(sys.argv[3]) if len(sys.argv) > 3 else 0.01
name = Path(cat_root).name
resize, crop, mode = {
    "crop": (448, 392, "stretch"),
    "nocrop": (392, 392, "stretch"),
    "pad": (392, 392, "pad"),
    "nocrop512": (512, 512, "stretch"),
}[geom]
out = Path(f"/tmp/13-cache/{name}-{geom}")
out.mkdir(parents=True, exist_ok=True)
bb = create_backbone("efficientnet-lite2")
space = new_feature_space(bb, resize=resize, crop=crop)
ex = build_extractor(space, bb, batch_size=8)


def pad_image(img, size):
    w, h = img.size
    s = size / max(w, h)
    nw, nh = max(1, round(w * s)), max(1, round(h * s))
    r = img.resize((nw, nh), Image.Resampling.BILINEAR)
    a = np.asarray(r)
    left = (size - nw) // 2
    t = (size - nh) // 2
    pads = ((t, size - nh - t), (left, size - nw - left)) + ((0, 0),) * (a.ndim - 2)
    return np.pad(a, pads, mode="edge"), (t, left, nh, nw)


data = load_mvtec(str(Path(cat_root).parent), [name]).categories[name]


def sources(paths):
    if mode != "pad":
        return [str(p) for p in paths], None
    arrs, boxes = [], []
    for p in paths:
        a, b = pad_image(load_image(p), crop)
        arrs.append(a)
        boxes.append(b)
    return arrs, np.array(boxes)


t0 = time.time()
tr, trbox = sources(data.train)
train = embed_images(ex, tr)
t1 = time.time()
print("train embedded", train.shape, t1 - t0, flush=True)
te, tebox = sources(data.test)
test = embed_images(ex, te)
t2 = time.time()
print("test embedded", t2 - t1, flush=True)
masks = []
for m, _lab in zip(data.masks, data.labels, strict=False):
    if m is None:
        masks.append(np.zeros((crop, crop), bool))
        continue
    mk = Image.open(m).convert("L")
    if mode == "pad":
        a, _ = pad_image(mk, crop)
        masks.append(a > 0)  # edge pad; mask edge may extend: fix below
    else:
        masks.append(preprocess_mask(mk, space.geometry))
masks = np.stack(masks)
if mode == "pad":  # zero the padded region of masks
    for i, (t, left, nh, nw) in enumerate(tebox):
        keep = np.zeros((crop, crop), bool)
        keep[t : t + nh, left : left + nw] = True
        masks[i] &= keep
    np.save(out / "train_box.npy", trbox)
    np.save(out / "test_box.npy", tebox)
np.save(out / "masks.npy", np.packbits(masks, axis=-1))
np.save(out / "labels.npy", np.asarray(data.labels))
(out / "defects.json").write_text(json.dumps([str(p) for p in data.test]))
np.save(out / "test_emb16.npy", test.astype(np.float16))
del test
gc.collect()
model = CategoryModel(coreset_ratio=ratio, calibration="loo")
model.fit(train, ex.grid_shape(), crop)
t3 = time.time()
print("fit", t3 - t2, "bank", model.bank_.shape, flush=True)
knn = model.knn()
loo = model.train_distances_["loo"].mean(axis=2)  # the fit's own loo patch scores (no second loo pass)
test16 = load_npy(out / "test_emb16.npy", mmap_mode="r")
tp = np.concatenate(
    [model.patch_scores(np.asarray(test16[s : s + 32], dtype=np.float32)) for s in range(0, len(test16), 32)]
)
tag = f"r{ratio}"
np.save(out / f"train_loo_{tag}.npy", loo)
np.save(out / f"test_ps_{tag}.npy", tp)
np.save(out / f"train_ins_{tag}.npy", np.stack([knn.score(train[i]) for i in range(len(train))]))
meta = {
    "grid": ex.grid_shape(),
    "crop": crop,
    "fit_s": t3 - t2,
    "embed_s": t2 - t0,
    "lambda": model.calibrator_.lambda_,
}
(out / f"meta_{tag}.json").write_text(json.dumps(meta))
print("done", time.time() - t0, flush=True)
