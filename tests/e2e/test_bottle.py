"""End to end on real MVTec AD bottle images with the embedded backbone (a couple of minutes)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from evaluation.metrics import image_metrics, pixel_metrics
from structcore.backbones import Backbone
from structcore.features import build_extractor, new_feature_space
from structcore.model import CategoryModel, embed_images
from structcore.preprocess import load_mask

pytestmark = pytest.mark.slow  # run by `pytest -m slow` (the second step of .ci/run)


def test_bottle_hybrid_auroc(backbone: Backbone, mvtec_bottle: Path) -> None:
    space = new_feature_space(backbone)
    extractor = build_extractor(space, backbone, batch_size=8)
    train = sorted((mvtec_bottle / "train" / "good").glob("*.png"))
    tests = sorted((mvtec_bottle / "test").glob("*/*.png"))
    labels = np.array([path.parent.name != "good" for path in tests])
    model = CategoryModel(coreset_ratio=0.01).fit(embed_images(extractor, train), extractor.grid_shape(), space.crop)
    prediction = model.predict(embed_images(extractor, tests))
    masks = np.stack(
        [
            load_mask(mvtec_bottle / "ground_truth" / p.parent.name / f"{p.stem}_mask.png", space.geometry)
            if label
            else np.zeros((space.crop, space.crop), dtype=bool)
            for p, label in zip(tests, labels, strict=True)
        ]
    )
    hybrid = image_metrics(labels, prediction.scores.hybrid)
    pixel = pixel_metrics(masks, prediction.maps)
    print(f"bottle: hybrid I-AUROC {hybrid['auroc']:.4f}, P-AUROC {pixel['auroc']:.4f}, AUPRO {pixel['aupro']:.4f}")
    assert hybrid["auroc"] >= 0.99
    assert pixel["auroc"] >= 0.97
    good_rejected = prediction.scores.hybrid[~labels] > model.thresholds["hybrid"]
    assert good_rejected.mean() <= 0.1
