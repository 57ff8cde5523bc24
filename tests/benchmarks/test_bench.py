"""Performance paths equal their plain references; the bench runs end to end in quick mode."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from benchmarks.bench import anomaly_maps_reference, common_way_coreset, format_bench, run_bench
from structcore.anomaly_map import anomaly_maps
from structcore.features import FeatureExtractor, fuse_layers, project_layers
from structcore.knn import PatchKNN, bf16_matmul_supported
from structcore.routing import PrototypeRouter, l2_normalize


def test_fast_backbone_equals_reference(backbone) -> None:  # type: ignore[no-untyped-def]
    images = torch.randn(3, 3, 136, 136)
    reference = backbone.extract(images)
    fast = backbone.extract_fast(images)
    assert [tuple(m.shape) for m in fast] == [tuple(m.shape) for m in reference]
    for ours, theirs in zip(fast, reference, strict=True):
        # Folded BatchNorm + channels-last convs: equal to float32 rounding of a 15-block network.
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4 * float(theirs.abs().max()))


def test_fast_embedding_equals_plain(backbone, small_space) -> None:  # type: ignore[no-untyped-def]
    fast = FeatureExtractor(backbone, small_space.projection, small_space.geometry, fast=True)
    plain = FeatureExtractor(backbone, small_space.projection, small_space.geometry, fast=False)
    images = torch.randn(2, 3, 128, 128)
    ours, theirs = fast.embed(images), plain.embed(images)
    assert ours.shape == theirs.shape == (2, 256, 512)
    relative = (ours - theirs).norm(dim=-1) / theirs.norm(dim=-1)
    assert float(relative.max()) < 1e-4


def test_project_layers_equals_fuse_then_project() -> None:
    generator = torch.Generator().manual_seed(0)
    layers = [torch.randn(2, 6, 8, 8, generator=generator), torch.randn(2, 10, 4, 4, generator=generator)]
    projection = torch.randn(16, 32, generator=generator)
    fused = fuse_layers(layers, local_pool=3)
    expected = (fused.reshape(-1, 16) @ projection).reshape(2, 64, 32)
    torch.testing.assert_close(project_layers(layers, projection, local_pool=3), expected, rtol=1e-5, atol=1e-5)
    channels_last = [layer.contiguous(memory_format=torch.channels_last) for layer in layers]
    torch.testing.assert_close(project_layers(channels_last, projection, 3), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("grid", "size"), [((49, 49), 392), ((7, 9), 56), ((16, 16), 128), ((10, 10), 7)])
def test_matrix_anomaly_maps_equal_direct(grid: tuple[int, int], size: int) -> None:
    scores = np.random.default_rng(1).random((3, *grid)).astype(np.float32)
    np.testing.assert_allclose(anomaly_maps(scores, size), anomaly_maps_reference(scores, size), atol=2e-6)


@pytest.mark.parametrize("engine", ["bf16", "torch"])
def test_exact_engines_equal_brute_force(engine: str) -> None:
    rng = np.random.default_rng(3)
    # Clustered data with near-duplicates, where the bf16 screen has to fall back now and then.
    centers = rng.normal(size=(30, 48)).astype(np.float32)
    bank = centers[rng.integers(30, size=2000)] + 0.05 * rng.normal(size=(2000, 48)).astype(np.float32)
    queries = centers[rng.integers(30, size=700)] + 0.05 * rng.normal(size=(700, 48)).astype(np.float32)
    squared = ((queries[:, None, :].astype(np.float64) - bank[None].astype(np.float64)) ** 2).sum(-1)
    for k in (1, 5, 30):
        expected = np.sort(squared, axis=1)[:, :k]
        distances, indices = PatchKNN(k=k, engine=engine, margin=2).fit(bank).search(queries)
        np.testing.assert_allclose(distances, expected, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(np.take_along_axis(squared, indices, axis=1), expected, rtol=1e-4, atol=1e-5)


def test_bf16_engine_is_picked_when_supported() -> None:
    knn = PatchKNN().fit(np.random.default_rng(0).normal(size=(100, 8)).astype(np.float32))
    assert knn.engine_ == ("bf16" if bf16_matmul_supported() else "faiss")


def test_router_shortlist_matches_exact_routing() -> None:
    rng = np.random.default_rng(5)
    dim = 32
    centers = l2_normalize(rng.normal(size=(40, dim)).astype(np.float32))
    exact, shortlisted = PrototypeRouter(shortlist=None), PrototypeRouter(shortlist=4)
    for index, center in enumerate(centers):
        prototypes = l2_normalize(center + 0.2 * rng.normal(size=(16, dim)).astype(np.float32))
        exact.add(f"c{index}", prototypes, threshold=1.0)
        shortlisted.add(f"c{index}", prototypes, threshold=1.0)
    truth = rng.integers(40, size=12)
    images = np.stack([centers[t] + 0.2 * rng.normal(size=(50, dim)) for t in truth]).astype(np.float32)
    full, short = exact.route(images), shortlisted.route(images)
    assert full.categories == short.categories == [f"c{t}" for t in truth]
    assert short.shortlist is not None and short.shortlist.shape == (12, 4)
    assert np.isinf(short.all_scores).sum(axis=1).tolist() == [36] * 12
    chosen = np.isfinite(short.all_scores)
    np.testing.assert_allclose(short.all_scores[chosen], full.all_scores[chosen], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(short.route_scores, full.route_scores, rtol=1e-4, atol=1e-6)
    # With no more categories than the shortlist, routing is exact (no +inf).
    small = PrototypeRouter(shortlist=8)
    small.add("a", centers[:4])
    assert small.route(images[:2]).shortlist is None


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
