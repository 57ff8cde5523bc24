"""End to end on real Magnetic Tile Defects (DifferNet's split) with the shipped defaults (10-20 minutes).

The figures asserted are those of docs/quality.md (no crop, robust scoring, 1% bank) less a small
margin. One fit gives the leave-one-out and the in-sample calibration maps, so the shipped
calibration, ``loo`` and the paper's scoring are all compared on the same bank and test maps.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from evaluation.metrics import image_metrics, pixel_metrics
from structcore.backbones import Backbone
from structcore.features import build_extractor, new_feature_space
from structcore.model import DEFAULT_CALIBRATION, CategoryModel, embed_images
from structcore.preprocess import load_mask
from structcore.scoring import StructCoreCalibrator

pytestmark = pytest.mark.slow  # run by `pytest -m slow` (the second step of .ci/run)

#: docs/quality.md, MTD "after" row, less MARGIN (image AUROC).
BASE_AUROC = 0.9683
HYBRID_AUROC = {"mixed": 0.9804, "loo": 0.9761}
MARGIN = 0.004
KINDS = ("base", "struct", "hybrid")


def test_mtd_hybrid_beats_base(backbone: Backbone, mtd_magnetic_tile: Path) -> None:
    space = new_feature_space(backbone)  # the default geometry: 392, no crop
    assert space.resize == space.crop == 392
    extractor = build_extractor(space, backbone, batch_size=8)
    train = sorted((mtd_magnetic_tile / "train" / "good").glob("*.png"))
    tests = sorted((mtd_magnetic_tile / "test").glob("*/*.png"))
    labels = np.array([path.parent.name != "good" for path in tests])
    assert len(train) == 761 and len(tests) == 583 and labels.sum() == 392
    model = CategoryModel(calibration="mixed")
    statistics = model._map_statistics
    kept: list[tuple[np.ndarray, np.ndarray]] = []

    def keep(patch_scores: np.ndarray, contents: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        kept.append(statistics(patch_scores, contents))  # first the loo maps' (base, phi), then the in-sample maps'
        return kept[-1]

    model._map_statistics = keep  # type: ignore[method-assign]
    model.fit(embed_images(extractor, train), extractor.grid_shape(), space.crop)
    assert model.calibrator_.scoring == "robust" and len(kept) == 2
    prediction = model.predict(embed_images(extractor, tests))
    loo_base, loo_phi = kept[0]
    calibrators = {
        "mixed": model.calibrator_,
        "loo": StructCoreCalibrator().fit_descriptors(loo_base, loo_phi),
        "paper loo": StructCoreCalibrator(scoring="paper").fit_descriptors(loo_base, loo_phi),
        "paper mixed": StructCoreCalibrator(scoring="paper").fit_descriptors(*kept[1]).fit_thresholds(*kept[0]),
    }
    auroc, frr = {}, {}
    for name, calibrator in calibrators.items():
        scores = calibrator.score(prediction.maps)
        auroc[name] = {kind: image_metrics(labels, scores.by_kind(kind))["auroc"] for kind in KINDS}
        frr[name] = float((scores.hybrid[~labels] > calibrator.thresholds_["hybrid"]).mean())
        print(
            f"MTD {name}: base {auroc[name]['base']:.4f} struct {auroc[name]['struct']:.4f} "
            f"hybrid {auroc[name]['hybrid']:.4f}, lambda {calibrator.lambda_:.4f}, FRR {frr[name]:.3f}"
        )
    masks = np.stack(
        [
            load_mask(mtd_magnetic_tile / "ground_truth" / p.parent.name / f"{p.stem}_mask.png", space.geometry)
            if label
            else np.zeros((space.crop, space.crop), dtype=bool)
            for p, label in zip(tests, labels, strict=True)
        ]
    )
    pixel = pixel_metrics(masks, prediction.maps, max_pixels=20_000_000)
    print(f"MTD: P-AUROC {pixel['auroc']:.4f}, AUPRO {pixel['aupro']:.4f}, fit {model.fit_seconds_:.0f} s")
    assert auroc["loo"]["base"] >= BASE_AUROC - MARGIN
    for name in ("mixed", "loo"):
        assert auroc[name]["hybrid"] >= HYBRID_AUROC[name] - MARGIN
        assert auroc[name]["hybrid"] > auroc["paper loo"]["hybrid"]
        assert frr[name] <= 0.02
    shipped = auroc[DEFAULT_CALIBRATION]
    assert shipped["hybrid"] >= 0.977 - MARGIN
    assert shipped["hybrid"] >= shipped["base"] + 0.01 - MARGIN
    assert pixel["auroc"] >= 0.75
