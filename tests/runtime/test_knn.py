"""The runtime's screened exact kNN (OpenVINO bf16 screen) against exact float32 searches."""

from __future__ import annotations

import numpy as np
import pytest
from structcore_runtime.knn import BankSearch, ScreenedBank, ScreenedSearch, build_index, round_bf16, search_index

from structcore.knn import PatchKNN

pytest.importorskip("openvino")


def _data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    bank = rng.normal(size=(2000, 64)).astype(np.float32)
    bank[1000:1100] = bank[0]  # exact duplicates: ties and failed proofs
    queries = np.concatenate([bank[rng.integers(0, 2000, 300)] + 0.01, rng.normal(size=(300, 64))]).astype(np.float32)
    return bank, queries


def test_round_bf16_is_round_to_nearest_even() -> None:
    values = np.array([1.0, 1.0 + 2**-8, 1.0 + 3 * 2**-8, -2.5, 1e-3, 3.0e38], dtype=np.float32)
    rounded = round_bf16(values)
    assert rounded.tolist()[:4] == [1.0, 1.0, 1.0 + 2**-6, -2.5]
    assert np.all(np.abs(rounded - values) <= 2**-8 * np.abs(values))
    assert np.all(rounded.view(np.uint32) & 0xFFFF == 0)


def test_screened_search_equals_exact_float32_search() -> None:
    bank, queries = _data()
    expected_d, expected_i = search_index(build_index(bank), queries, 5)
    search = ScreenedSearch(bank)
    distances, indices = search.search(queries, 5)
    np.testing.assert_allclose(distances, expected_d, rtol=1e-5, atol=1e-5)
    same = indices == expected_i
    # Ties (duplicated bank rows) may come in another order; their distances are equal.
    assert same.mean() > 0.9
    # Every returned neighbour is at its returned distance.
    recomputed = np.sum((bank[indices] - queries[:, None]) ** 2, axis=2)
    np.testing.assert_allclose(recomputed, distances, rtol=1e-5, atol=1e-5)


def test_screened_search_equals_the_registrys_bf16_engine() -> None:
    bank, queries = _data(1)
    registry = PatchKNN(k=5, engine="bf16").fit(bank)
    runtime = BankSearch(bank, 5, engine="screened")
    np.testing.assert_allclose(runtime.patch_scores(queries), registry.score(queries), rtol=1e-5, atol=1e-6)


def test_small_banks_and_hnsw_use_the_exhaustive_or_faiss_search() -> None:
    bank, queries = _data(2)
    small = BankSearch(bank[:100], 5, engine="screened")
    expected, _ = search_index(build_index(bank[:100]), queries, 5)
    np.testing.assert_allclose(small.patch_scores(queries), expected.mean(axis=1), rtol=1e-6)
    assert BankSearch(bank, 5, index="hnsw").engine == "faiss"
    with pytest.raises(ValueError, match="flat index only"):
        BankSearch(bank, 5, index="hnsw", engine="screened")


def test_proof_rejects_a_candidate_set_that_misses_a_closer_vector() -> None:
    bank, queries = _data(3)
    screened = ScreenedBank(bank)
    q = queries[:1]
    rounded = round_bf16(q)
    q_squared, offset, error, _, _ = screened.query_bounds(q, np.linalg.norm(q - rounded, axis=1))
    exact = np.sum((bank - q) ** 2, axis=1)
    order = np.argsort(exact)
    # A largest candidate output below the nearest vector's distance proves nothing; a large one does.
    worst = exact[order[1:14]].max() + offset
    assert not screened.proven(
        np.asarray([exact[order[0]] + offset[0] - 1.0]), q_squared, offset, error, exact[order[[5]]]
    )[0]
    assert screened.proven(np.asarray([worst[0] * 10]), q_squared, offset, error, exact[order[[5]]])[0]
