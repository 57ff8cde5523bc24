"""kNN patch scores (structcore.knn): every engine against brute force, float16 banks, HNSW recall."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from structcore import knn as knn_module
from structcore.knn import PatchKNN, bf16_matmul_supported


def test_flat_knn_equals_brute_force(rng: np.random.Generator) -> None:
    bank = rng.normal(size=(700, 64)).astype(np.float32)
    queries = rng.normal(size=(300, 64)).astype(np.float32)
    squared = ((queries[:, None, :].astype(np.float64) - bank[None].astype(np.float64)) ** 2).sum(-1)
    expected = np.sort(squared, axis=1)[:, :5].mean(axis=1)
    np.testing.assert_allclose(PatchKNN(k=5).fit(bank).score(queries), expected, rtol=1e-4, atol=1e-4)


def test_float16_bank_is_searched(rng: np.random.Generator) -> None:
    bank = rng.normal(size=(100, 16)).astype(np.float16)
    knn = PatchKNN(k=1).fit(bank)
    assert knn.score(bank.astype(np.float32)) == pytest.approx(np.zeros(100), abs=1e-6)


def test_hnsw_recall(rng: np.random.Generator) -> None:
    bank = rng.normal(size=(5000, 32)).astype(np.float32)
    queries = rng.normal(size=(500, 32)).astype(np.float32)
    _, exact = PatchKNN(k=5).fit(bank).search(queries)
    _, approx = PatchKNN(k=5, index="hnsw", hnsw_ef_search=128).fit(bank).search(queries)
    recall = np.mean([len(set(a) & set(e)) / 5 for a, e in zip(approx, exact, strict=True)])
    assert recall >= 0.95


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


@pytest.mark.parametrize("bf16", [True, False], ids=["bf16-screen", "float32-screen"])
def test_pairs_within_finds_every_pair_below_each_limit(monkeypatch: pytest.MonkeyPatch, bf16: bool) -> None:
    """The screened radius search equals brute force: same pairs, same distances, sorted, strict at the limit."""
    monkeypatch.setattr(knn_module, "bf16_matmul_supported", lambda: bf16)
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(6, 32)).astype(np.float32) * 3
    queries = (centres[rng.integers(0, 6, 9000)] + rng.normal(size=(9000, 32))).astype(np.float32)
    vectors = (centres[rng.integers(0, 6, 80)] + rng.normal(size=(80, 32))).astype(np.float32)
    limits = rng.uniform(10, 60, size=9000).astype(np.float32)
    # as the engines measure: from differences, by torch in float32
    differences = torch.from_numpy(queries)[:, None, :] - torch.from_numpy(vectors)[None]
    brute = torch.linalg.vector_norm(differences, dim=2).square_().numpy()
    limits[:50] = brute[:50, 7]  # exactly at a pair's distance: that pair is out (strictly below)
    limits[50:100] = np.nextafter(brute[50:100, 7], np.float32(np.inf))  # just above: in
    rows, columns, distances = knn_module.pairs_within(queries, limits, vectors)
    want_rows, want_columns = np.nonzero(brute < limits[:, None])
    assert 0 < len(want_rows) < brute.size // 2  # some pairs in, most out: the screen has work to do
    assert sorted(zip(rows.tolist(), columns.tolist(), strict=True)) == sorted(
        zip(want_rows.tolist(), want_columns.tolist(), strict=True)
    )
    found = set(zip(rows.tolist(), columns.tolist(), strict=True))
    assert not any((row, 7) in found for row in range(50)) and all((row, 7) in found for row in range(50, 100))
    np.testing.assert_allclose(distances, brute[rows, columns], rtol=1e-5)
    assert np.all(np.diff(rows) >= 0)
    same_row = np.diff(rows) == 0
    assert np.all(np.diff(distances)[same_row] >= 0)
    empty = knn_module.pairs_within(queries, np.zeros(9000, np.float32), vectors)
    assert all(len(part) == 0 for part in empty)
