"""Compare the calibration modes (loo / in-sample / holdout) on real bottle and a synthetic category.

Prints, per dataset and mode: I-AUROC / I-AP / I-F1max for Base, Struct, Hybrid, P-AUROC, and the
false-reject rate of test-good images at the 99.5% train-good thresholds; plus ms per image for
extract / kNN / post. Usage: ``python experiments/calibration/calibration_study.py [--bottle DIR] [--json OUT]``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from evaluation.metrics import image_metrics, pixel_metrics
from evaluation.synthetic import make_category
from structcore.anomaly_map import anomaly_maps
from structcore.backbones import create_backbone
from structcore.features import build_extractor, new_feature_space
from structcore.model import CALIBRATION_MODES, CategoryModel, embed_images
from structcore.preprocess import load_mask, preprocess_mask


def mvtec_split(root: Path, geometry):  # type: ignore[no-untyped-def]
    train = sorted((root / "train" / "good").glob("*.png"))
    tests = sorted((root / "test").glob("*/*.png"))
    labels = np.array([p.parent.name != "good" for p in tests])
    masks = np.stack(
        [
            load_mask(root / "ground_truth" / p.parent.name / f"{p.stem}_mask.png", geometry)
            if label
            else np.zeros((geometry.crop, geometry.crop), dtype=bool)
            for p, label in zip(tests, labels, strict=True)
        ]
    )
    return train, tests, labels, masks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--bottle", type=Path, default=Path(__file__).resolve().parents[3] / "shared/data/mvtec_ad/bottle"
    )
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--synthetic-kind", default="tile", help="synthetic product type of the harder category")
    parser.add_argument("--skip-bottle", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    backbone = create_backbone("efficientnet-lite2")
    space = new_feature_space(backbone)
    extractor = build_extractor(space, backbone, batch_size=8)
    datasets = {}
    if not args.skip_bottle and (args.bottle / "train" / "good").is_dir():
        datasets["bottle"] = mvtec_split(args.bottle, space.geometry)
    synthetic = make_category(args.synthetic_kind, n_train=60, n_test_good=30, n_test_bad=30, seed=11, size=320)
    datasets[f"synthetic-{args.synthetic_kind}"] = (
        synthetic.train_images,
        synthetic.test_images,
        np.asarray(synthetic.test_labels, dtype=bool),
        np.stack([preprocess_mask(m, space.geometry) for m in synthetic.test_masks]),
    )
    results: dict[str, dict[str, object]] = {}
    for name, (train, tests, labels, masks) in datasets.items():
        started = time.perf_counter()
        train_vectors = embed_images(extractor, train)
        test_started = time.perf_counter()
        test_vectors = embed_images(extractor, tests)
        extract_ms = (time.perf_counter() - test_started) / len(tests) * 1e3
        print(
            f"\n== {name}: {len(train)} train, {len(tests)} test ({labels.sum()} anomalous); "
            f"embedding took {test_started - started:.1f} s + {extract_ms:.0f} ms/test image"
        )
        header = f"{'mode':10s} {'score':7s} {'I-AUROC':>8s} {'I-AP':>7s} {'I-F1max':>8s} {'FRR@99.5':>9s}"
        print(header)
        for mode in CALIBRATION_MODES:
            fit_started = time.perf_counter()
            model = CategoryModel(calibration=mode).fit(train_vectors, extractor.grid_shape(), space.crop)
            fit_s = time.perf_counter() - fit_started
            knn_started = time.perf_counter()
            patch_scores = model.patch_scores(test_vectors)
            knn_ms = (time.perf_counter() - knn_started) / len(tests) * 1e3
            post_started = time.perf_counter()
            maps = anomaly_maps(patch_scores.reshape(len(tests), *model.grid_), space.crop)
            scores = model.calibrator_.score(maps)
            post_ms = (time.perf_counter() - post_started) / len(tests) * 1e3
            row: dict[str, object] = {
                "fit_s": fit_s,
                "extract_ms": extract_ms,
                "knn_ms": knn_ms,
                "post_ms": post_ms,
            }
            for kind in ("base", "struct", "hybrid"):
                values = scores.by_kind(kind)
                metrics = image_metrics(labels, values)
                frr = float((values[~labels] > model.thresholds[kind]).mean())
                row[kind] = {**metrics, "frr": frr}
                print(
                    f"{mode:10s} {kind:7s} {metrics['auroc']:8.4f} {metrics['ap']:7.4f} "
                    f"{metrics['f1_max']:8.4f} {frr:9.3f}"
                )
            pixel = pixel_metrics(masks, maps)
            row["pixel"] = pixel
            print(
                f"{mode:10s} pixel   P-AUROC {pixel['auroc']:.4f}  AUPRO {pixel['aupro']:.4f}  "
                f"fit {fit_s:.1f} s  extract {extract_ms:.0f} / kNN {knn_ms:.0f} / post {post_ms:.0f} ms per image"
            )
            results.setdefault(name, {})[mode] = row
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
