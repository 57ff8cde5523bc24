"""The benchmark (benchmarks/bench.py): its reference computations, and a quick run end to end."""

from __future__ import annotations

import math

import numpy as np
import pytest

from benchmarks.bench import anomaly_maps_reference, common_way_coreset, format_bench, run_bench
from structcore.anomaly_map import anomaly_maps


@pytest.mark.parametrize(("grid", "size"), [((49, 49), 392), ((7, 9), 56), ((16, 16), 128), ((10, 10), 7)])
def test_matrix_anomaly_maps_equal_direct(grid: tuple[int, int], size: int) -> None:
    scores = np.random.default_rng(1).random((3, *grid)).astype(np.float32)
    np.testing.assert_allclose(anomaly_maps(scores, size), anomaly_maps_reference(scores, size), atol=2e-6)


def test_common_way_coreset_is_greedy() -> None:
    points = np.random.default_rng(2).normal(size=(500, 64)).astype(np.float32)
    selected = common_way_coreset(points, 0.02, seed=0)
    assert len(selected) == 10 and len(set(selected.tolist())) == 10


def test_run_bench_quick_synthetic() -> None:
    messages: list[str] = []
    result = run_bench("synthetic", quick=True, batch_size=4, progress=messages.append)
    assert messages and messages[0] == "loading images"
    for key in ("knn_floor_ratio", "coreset_floor_ratio", "extract_gemm_fraction", "route_cost_ratio_1000_vs_2"):
        assert isinstance(result[key], float) and math.isfinite(result[key]) and result[key] > 0, key
    assert result["fit_rss_ratio"] is None or result["fit_rss_ratio"] > 0
    assert [row["coreset"] for row in result["rows"]] == [0.01, 0.05, 0.10]
    for row in result["rows"]:
        assert row["total_ms"] == pytest.approx(row["extract_ms"] + row["knn_ms"] + row["post_ms"])
        assert row["images_per_s"] > 0
    assert result["knn"]["exact_neighbour_agreement"] > 0.999
    assert result["coreset"]["radius_ratio_approx_vs_exact"] < 1.1
    assert result["routing"]["real_categories"]["exact"] == result["routing"]["real_categories"]["shortlist_3"]
    text = format_bench(result)
    assert "Extract (ms)" in text and "2. coreset vs floor" in text
    import json

    json.dumps(result)  # JSON-compatible


def test_run_bench_deploy_section() -> None:
    result = run_bench("synthetic", quick=True, batch_size=4, sections=["deploy"])
    deploy = result["deploy"]
    assert "extract torch" in deploy["ms_per_image"] and "knn faiss" in deploy["ms_per_image"]
    assert all(ms > 0 for ms in deploy["ms_per_image"].values())
    assert all(difference < 1e-3 for difference in deploy["knn_max_abs_difference_to_faiss"].values())
    assert result["machine"]["backbone_runtime"] == "torch"  # the suite pins the reference
    assert "deploy (issue 26)" in format_bench(result)


def test_run_bench_tile_section() -> None:
    """The tile section: one row per geometry and size, tile counts as planned, the line in the text."""
    result = run_bench("synthetic", quick=True, batch_size=4, sections=["tile"])
    rows = result["tile"]["rows"]
    assert [(row["geometry"], row["tiles"]) for row in rows if row["geometry"] == "tile"] == [
        ("tile", 4),
        ("tile", 6),
        ("tile", 9),
    ]
    assert [row["geometry"] for row in rows].count("squash") == 1
    assert all(row["ms_per_image"] > 0 and row["ms_per_tile"] > 0 for row in rows)
    assert "tile geometry (issue 25)" in format_bench(result)
