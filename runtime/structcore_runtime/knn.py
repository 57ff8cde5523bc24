"""Patch kNN scores against a memory bank with faiss (method.md step 5): squared L2, mean of k.

The one faiss implementation of the search: ``structcore.knn`` builds its faiss indexes here (its
``bf16`` engine, a torch fast path, returns the same neighbours and distances to float32
rounding), and the exported runtime scores with :class:`BankSearch`.
"""

from __future__ import annotations

import os
from typing import Any

import faiss
import numpy as np

#: Index kinds: exact ``flat`` and approximate ``hnsw``.
INDEX_KINDS = ("flat", "hnsw")
DEFAULT_HNSW_M = 32
DEFAULT_HNSW_EF_SEARCH = 128


def build_index(
    vectors: np.ndarray,
    index: str = "flat",
    hnsw_m: int = DEFAULT_HNSW_M,
    hnsw_ef_search: int = DEFAULT_HNSW_EF_SEARCH,
    use_gpu: bool = False,
) -> Any:
    """A faiss index over ``vectors`` (M, D) float32: ``IndexFlatL2`` or ``IndexHNSWFlat``."""
    if index not in INDEX_KINDS:
        msg = f"unknown index kind {index!r}; choose one of {INDEX_KINDS}"
        raise ValueError(msg)
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    dim = vectors.shape[1]
    built: Any
    if index == "hnsw":
        built = faiss.IndexHNSWFlat(dim, hnsw_m, faiss.METRIC_L2)
        built.hnsw.efConstruction = max(40, 2 * hnsw_m)
        built.hnsw.efSearch = hnsw_ef_search
    else:
        built = faiss.IndexFlatL2(dim)
        if use_gpu:  # pragma: no cover - GPU only
            built = faiss.index_cpu_to_all_gpus(built)
    built.add(vectors)
    return built


def search_index(index: Any, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Squared L2 distances (clamped at 0) and bank indices of the ``k`` nearest bank vectors."""
    distances, indices = index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
    return np.maximum(distances, 0.0, out=distances), indices


class BankSearch:
    """A category's memory bank, searched with faiss; patch score = mean of the k squared distances."""

    def __init__(
        self, bank: np.ndarray, k: int, index: str = "flat", hnsw_m: int = DEFAULT_HNSW_M, hnsw_ef_search: int = 128
    ):
        vectors = np.ascontiguousarray(bank, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] == 0:
            msg = f"bank must be a non-empty (M, D) array, got shape {bank.shape}"
            raise ValueError(msg)
        self.k = min(int(k), vectors.shape[0])
        self.size = int(vectors.shape[0])
        self.index = build_index(vectors, index, hnsw_m, hnsw_ef_search)

    def patch_scores(self, queries: np.ndarray) -> np.ndarray:
        """Patch scores (n,) of queries (n, D).

        faiss runs on one OpenMP thread while the cores are busy with other processes (the
        one-minute load average above the CPU count): its threads wait at every barrier for a
        descheduled partner (bottle's 1% bank on 2 shared vCPUs at load 12: 158 ms per image with
        1 thread, 215 with 2), and on all of them otherwise.
        """
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        try:
            busy = os.getloadavg()[0] > cpus
        except (AttributeError, OSError):  # pragma: no cover - no load average (Windows)
            busy = False
        faiss.omp_set_num_threads(1 if busy else cpus)
        distances, _ = search_index(self.index, queries, self.k)
        return distances.mean(axis=1)
