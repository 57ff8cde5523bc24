"""Metrics at each image's own size, region scores and recall per defect type (issue 25)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage
from sklearn.metrics import auc, average_precision_score, roc_auc_score

from evaluation import run_evaluation
from evaluation.metrics import pixel_metrics, pixel_metrics_at_sizes, recall_by_defect, region_scores
from evaluation.synthetic import make_category, write_mvtec_layout
from registry import Registry
from structcore.model import CategoryModel


def test_at_sizes_equals_the_stacked_metrics_when_every_image_has_one_size() -> None:
    rng = np.random.default_rng(0)
    masks = np.zeros((4, 20, 24), dtype=bool)
    masks[1, 3:8, 4:9] = True
    masks[2, 10:12, 1:20] = True
    masks[2, 0:2, 0:2] = True
    maps = rng.random((4, 20, 24)).astype(np.float32) + masks * 0.7
    stacked = pixel_metrics(masks, maps)
    sized = pixel_metrics_at_sizes(list(masks), list(maps))
    for key, value in stacked.items():
        assert sized[key] == pytest.approx(value, abs=1e-12), key


def test_at_sizes_takes_images_of_different_sizes() -> None:
    small = np.zeros((5, 7), dtype=bool)
    small[1:3, 1:3] = True
    large = np.zeros((40, 9), dtype=bool)
    perfect = [small.astype(np.float32), large.astype(np.float32)]
    found = pixel_metrics_at_sizes([small, large], perfect)
    assert found["auroc"] == pytest.approx(1.0) and found["aupro"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="differ in shape"):
        pixel_metrics_at_sizes([small], [large.astype(np.float32)])


def _pro_loop_aupro(masks: list[np.ndarray], maps: list[np.ndarray], limit: float) -> float:
    """AUPRO by the definition: one threshold per distinct score, PRO = mean overlap of each region."""
    regions = []
    for mask, values in zip(masks, maps, strict=True):
        labelled, count = ndimage.label(mask, structure=np.ones((3, 3)))
        regions += [values[labelled == r] for r in range(1, count + 1)]
    normal = np.concatenate([values[~mask] for mask, values in zip(masks, maps, strict=True)])
    every = np.concatenate([values.ravel() for values in maps])
    fprs, pros = [0.0], [0.0]
    for threshold in np.unique(every)[::-1]:
        fprs.append(float(np.mean(normal >= threshold)))
        pros.append(float(np.mean([np.mean(region >= threshold) for region in regions])))
    fprs_a, pros_a = np.asarray([*fprs, 1.0]), np.asarray([*pros, 1.0])
    cut = int(np.searchsorted(fprs_a, limit, side="right"))
    x = np.append(fprs_a[:cut], limit)
    y = np.append(pros_a[:cut], np.interp(limit, fprs_a, pros_a))
    return float(auc(x, y) / limit)


def test_at_sizes_matches_sklearn_and_the_pro_definition_on_mixed_sizes() -> None:
    """Images of three sizes, one defective image with an empty mask (its pixels are all normal, as
    MTD's five empty ``uneven`` masks are read) and a tie across images: pooled AUROC / AP equal
    sklearn's on the concatenated pixels, AUPRO (0.3 FPR) the definition's loop."""
    rng = np.random.default_rng(0)
    masks = [np.zeros((7, 9), dtype=bool), np.zeros((5, 6), dtype=bool), np.zeros((8, 4), dtype=bool)]
    masks[0][1:3, 2:5] = True
    masks[0][5, 7] = True  # a second, one-pixel region
    masks[1][2:5, 0:2] = True
    maps = [rng.random(mask.shape).astype(np.float32) + np.float32(0.6) * mask for mask in masks]
    maps[2][0, 0] = maps[0][1, 2]
    found = pixel_metrics_at_sizes(masks, maps)
    pixels = np.concatenate([mask.ravel() for mask in masks])
    scores = np.concatenate([values.ravel() for values in maps])
    assert found["auroc"] == pytest.approx(roc_auc_score(pixels, scores), abs=1e-12)
    assert found["ap"] == pytest.approx(average_precision_score(pixels, scores), abs=1e-12)
    assert found["aupro"] == pytest.approx(_pro_loop_aupro(masks, maps, 0.3), abs=1e-12)


def test_region_scores_count_hits_and_false_regions() -> None:
    mask = np.zeros((10, 10), dtype=bool)
    mask[0:2, 0:2] = True  # region A: hit
    mask[7:9, 7:9] = True  # region B: missed
    values = np.zeros((10, 10), dtype=np.float32)
    values[1, 1] = 1.0
    good = np.zeros((6, 6), dtype=bool)
    good_map = np.zeros((6, 6), dtype=np.float32)
    good_map[0, 0] = good_map[5, 5] = 1.0  # two false regions on a good image
    found = region_scores([mask, good], [values, good_map], [0.5, 0.5])
    assert found["region_hit_rate"] == pytest.approx(0.5)
    assert found["false_regions_per_good"] == pytest.approx(2.0)
    assert found["gt_regions"] == 2 and found["good_images"] == 1


def test_region_scores_do_not_count_a_defective_image_with_an_empty_mask_as_good() -> None:
    """MTD's empty ``uneven`` masks: pixels all normal for AUROC / AUPRO, but not a good image here."""
    empty = np.zeros((6, 6), dtype=bool)
    flagged = np.zeros((6, 6), dtype=np.float32)
    flagged[2, 2] = 1.0
    assert region_scores([empty], [flagged], [0.5])["false_regions_per_good"] == pytest.approx(1.0)
    found = region_scores([empty, empty], [flagged, np.zeros_like(flagged)], [0.5, 0.5], labels=[1, 0])
    assert found["false_regions_per_good"] == pytest.approx(0.0)
    assert found["good_images"] == 1 and found["gt_regions"] == 0
    with pytest.raises(ValueError, match="1 labels for 2 images"):
        region_scores([empty, empty], [flagged, flagged], [0.5, 0.5], labels=[1])


def test_recall_by_defect() -> None:
    defects = ["good", "crack", "crack", "uneven", "good"]
    assert recall_by_defect(defects, [True, True, False, True, False]) == {"crack": 0.5, "uneven": 1.0}


def test_eval_reports_original_size_metrics_on_non_square_images(tmp_path: Path) -> None:
    data = tmp_path / "data"
    folder = write_mvtec_layout(make_category("pill", 5, 2, 3, seed=1, size=128), data, "pill")
    for path in [*(folder / "test").rglob("*.png"), *(folder / "ground_truth").rglob("*.png")]:
        picture = Image.open(path)
        resample = Image.Resampling.NEAREST if "ground_truth" in path.parts else Image.Resampling.BILINEAR
        picture.resize((192, 96), resample).save(path)  # 2:1 images and masks at their own size
    result = run_evaluation(
        data,
        out=tmp_path / "out",
        protocols=("separate",),
        dataset=None,
        resize=128,
        crop=128,
        model=CategoryModel(coreset_ratio=0.05, n_prototypes=16),
        plots=False,
    )
    metrics = result.per_category("separate")["pill"]
    for key in ("pixel_auroc_original", "aupro_original", "region_hit_rate", "false_regions_per_good"):
        assert math.isfinite(metrics[key]), key
    assert 0.0 <= metrics["region_hit_rate"] <= 1.0
    defects = {path.name for path in (folder / "test").iterdir()} - {"good"}
    assert {key.removeprefix("defect_recall:") for key in metrics if key.startswith("defect_recall:")} == defects
    report = (tmp_path / "out" / "report.md").read_text()
    assert "## At each image's own size" in report and "Recall by defect" in report
    with (tmp_path / "out" / "per_category.csv").open() as handle:
        row = next(csv.DictReader(handle))
    assert row["aupro_original"] and row["region_hit_rate"]


@pytest.mark.parametrize("geometry", ["fit", "tile"])
def test_eval_of_a_fit_registry_on_non_square_images(tmp_path: Path, geometry: str) -> None:
    """The fit and tile geometries through the evaluation: maps on each image's content, metrics at both sizes, plots.

    ``tile`` with 64 px tiles: the 192 x 96 images are three by two tiles at their own size.
    """
    data = tmp_path / "data"
    for seed, kind in enumerate(("wood", "pill")):  # two: the open-set protocol leaves one out
        folder = write_mvtec_layout(make_category(kind, 5, 2, 3, seed=seed, size=128), data, kind)
        for path in [*(folder / "test").rglob("*.png"), *(folder / "ground_truth").rglob("*.png")]:
            picture = Image.open(path)
            resample = Image.Resampling.NEAREST if "ground_truth" in path.parts else Image.Resampling.BILINEAR
            picture.resize((192, 96), resample).save(path)
    side = 128 if geometry == "fit" else 64
    Registry.init(tmp_path / "registry", resize=side, crop=side, input_geometry=geometry, tile_overlap=16).close()
    result = run_evaluation(
        data,
        out=tmp_path / "out",
        protocols=("separate", "open-set"),
        dataset=None,
        registry=tmp_path / "registry",
        model=CategoryModel(coreset_ratio=0.05, n_prototypes=16),
        plots=True,
    )
    metrics = result.per_category("separate")["wood"]
    for key in ("pixel_auroc", "aupro", "pixel_auroc_original", "aupro_original", "image_auroc_hybrid"):
        assert math.isfinite(metrics[key]), key
    assert result.results["config"]["geometry"]["input_geometry"] == geometry
