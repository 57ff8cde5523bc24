"""k-nearest-neighbour patch scoring against a memory bank (faiss), method.md step 5."""

from __future__ import annotations

from typing import Any

import faiss
import numpy as np

#: Neighbours averaged per patch score.
DEFAULT_K = 5

#: Index kinds: exact brute force, or HNSW graph (approximate, much faster on large banks).
INDEX_KINDS = ("flat", "hnsw")


def gpu_available() -> bool:
    """True when faiss was built with GPU support and sees at least one GPU."""
    get_num_gpus = getattr(faiss, "get_num_gpus", None)
    return bool(get_num_gpus is not None and get_num_gpus() > 0)


class PatchKNN:
    """Squared-L2 kNN search over a bank, returning the mean of the k smallest distances.

    Args:
        k: neighbours per query (scores are the mean of their squared L2 distances).
        index: ``"flat"`` (exact, ``IndexFlatL2``) or ``"hnsw"`` (``IndexHNSWFlat``).
        hnsw_m: HNSW graph degree.
        hnsw_ef_search: HNSW search breadth (recall vs speed).
        use_gpu: move a flat index to the GPU when faiss-gpu is present (``None`` = auto).

    Attributes:
        index_: the faiss index holding the bank.
        size_: number of bank vectors.
    """

    def __init__(
        self,
        k: int = DEFAULT_K,
        index: str = "flat",
        hnsw_m: int = 32,
        hnsw_ef_search: int = 64,
        use_gpu: bool | None = None,
    ):
        self.k = k
        self.index = index
        self.hnsw_m = hnsw_m
        self.hnsw_ef_search = hnsw_ef_search
        self.use_gpu = use_gpu

    def fit(self, bank: np.ndarray) -> PatchKNN:
        """Index ``bank`` (M, D); float16 banks are searched in float32."""
        if self.index not in INDEX_KINDS:
            msg = f"unknown index kind {self.index!r}; choose one of {INDEX_KINDS}"
            raise ValueError(msg)
        vectors = np.ascontiguousarray(bank, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] == 0:
            msg = f"bank must be a non-empty (M, D) array, got shape {bank.shape}"
            raise ValueError(msg)
        dim = vectors.shape[1]
        index: Any
        if self.index == "hnsw":
            index = faiss.IndexHNSWFlat(dim, self.hnsw_m, faiss.METRIC_L2)
            index.hnsw.efConstruction = max(40, 2 * self.hnsw_m)
            index.hnsw.efSearch = self.hnsw_ef_search
        else:
            index = faiss.IndexFlatL2(dim)
            if self.use_gpu or (self.use_gpu is None and gpu_available()):  # pragma: no cover - GPU only
                index = faiss.index_cpu_to_all_gpus(index)
        index.add(vectors)
        self.index_ = index
        self.size_ = vectors.shape[0]
        return self

    def search(self, queries: np.ndarray, k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Squared L2 distances and bank indices of the ``k`` nearest bank vectors of each query."""
        count = min(k or self.k, self.size_)
        vectors = np.ascontiguousarray(queries, dtype=np.float32)
        distances, indices = self.index_.search(vectors, count)
        return np.maximum(distances, 0.0, out=distances), indices

    def score(self, queries: np.ndarray) -> np.ndarray:
        """Patch scores (n,) = mean squared L2 distance to the ``k`` nearest bank vectors."""
        distances, _ = self.search(queries)
        return distances.mean(axis=1)


def set_num_threads(threads: int) -> None:
    """Threads used by faiss (OpenMP)."""
    faiss.omp_set_num_threads(threads)
