"""Patch kNN scores against a memory bank (method.md step 5): squared L2, mean of the k nearest.

The one implementation of the search outside torch, shared with ``structcore.knn``:

* faiss indexes (:func:`build_index`, :func:`search_index`): exact ``flat`` and approximate ``hnsw``;
* the screened exact search (:class:`ScreenedBank`): a cheap bfloat16 GEMM ranks the bank per query,
  the best ``k + margin`` candidates are re-scored exactly in float32, and a rigorous bound on the
  bfloat16 error proves per query that no other bank vector can be among the ``k`` nearest
  (queries whose proof fails are searched again exhaustively in float32). Its bank preparation and
  its proof are numpy here; the screening GEMM runs either in torch (``structcore.knn``, the
  registry) or as an OpenVINO graph holding the bank as a constant (:class:`ScreenedSearch`, the
  exported runtime: no torch). Neighbours and distances are those of an exact float32 search.

:class:`BankSearch` is the runtime's search: ``engine="auto"`` runs :class:`ScreenedSearch` where
OpenVINO is installed and the CPU has bfloat16 matrix units, faiss ``IndexFlatL2`` otherwise.
"""

from __future__ import annotations

import importlib.util
import math
import os
from typing import Any

import faiss
import numpy as np

#: Index kinds: exact ``flat`` and approximate ``hnsw``.
INDEX_KINDS = ("flat", "hnsw")
#: Engines of the runtime's exact search (``auto``: ``screened`` where possible, else ``faiss``).
SEARCH_ENGINES = ("auto", "screened", "faiss")
DEFAULT_HNSW_M = 32
DEFAULT_HNSW_EF_SEARCH = 128

#: Bank column groups of the screened candidate selection (``structcore.knn``'s torch screen).
SCREEN_GROUPS = 32
#: Unit roundoff of bfloat16 (8 significand bits, round to nearest).
BF16_U = 2.0**-8
#: Unit roundoff of float32.
F32_U = 2.0**-24
#: Relative error of a two-part bfloat16 split (2^-16, widened for the float64 -> float32 step).
SPLIT_U = 2.0**-16 * 1.01
#: Query rows per call of the OpenVINO screen (bottle, 2 vCPUs at load 3: 45 ms/img in one call of
#: 19208 rows, 53 in blocks of 4096; 8192 bounds its 5000-column scratch to ~160 MB).
_SCREEN_BLOCK = 8192


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


def round_bf16(values: np.ndarray) -> np.ndarray:
    """``values`` rounded to bfloat16 (to nearest, ties to even), as float32 (finite inputs)."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    rounded = bits + (np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1)))
    rounded &= np.uint32(0xFFFF0000)
    return rounded.view(np.float32)


def split_bf16(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``values`` (float64) as ``high + low`` bfloat16 parts (float32); error <= SPLIT_U |values|."""
    high = round_bf16(values.astype(np.float32))
    low = round_bf16((values - high.astype(np.float64)).astype(np.float32))
    return high, low


def cpu_threads() -> int:
    """Threads for a search: 1 while other processes keep the cores busy (load above the CPU count).

    Multi-threaded searches wait at every barrier for a descheduled partner on shared cores
    (bottle's 1% bank with faiss on 2 shared vCPUs at load 12: 158 ms per image with 1 thread,
    215 with 2); idle, all cores.
    """
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        busy = os.getloadavg()[0] > cpus
    except (AttributeError, OSError):  # pragma: no cover - no load average (Windows)
        busy = False
    return 1 if busy else cpus


class ScreenedBank:
    """The numpy half of the screened exact search: the screening matrix and the per-query proof.

    The screening GEMM multiplies augmented bfloat16 vectors, ``[q, 1, 1, h_q, l_q]`` by the
    columns ``[-2b, h_b, l_b, 1, 1]``, where ``h + l`` is a two-part bfloat16 split of ``||b||^2`` and
    of ``||q||^2 + o_q``, so each output approximates ``d(q, b) + o_q`` (squared distance plus a
    per-query offset that keeps every output positive). With ``q~``, ``b~`` the bfloat16 roundings
    and ``r_q = q - q~``, ``r_b = b - b~`` (exact in float32):

        q.b = q~.b~ + q~.r_b + r_q.b,   so  |q.b - q~.b~| <= |q~| max|r_b| + |r_q| max|b|.

    Products of bfloat16 values are exact in float32; accumulation adds at most gamma_n * sum|terms|,
    the norm splits at most ``SPLIT_U`` of the norms, and a bfloat16 rounding of the output at most
    ``c |output|`` with ``c = 2^-8 / (1 - 2^-8)``. With ``E(q)`` the sum of these bounds, every bank
    vector satisfies ``d >= s (1 - c) - o_q - E(q)`` for its output ``s``. Outside the ``K``
    candidates every output is at least the largest candidate output ``s_K``, so when
    ``s_K (1 - c) - o_q - E(q)`` exceeds the k-th smallest exact distance among the candidates, the
    k nearest neighbours are among them (:meth:`proven`).

    The columns are padded to ``SCREEN_GROUPS`` groups (padding columns score ``2^100``, never
    candidates) and the rows to a multiple of 32 (zeros).

    Attributes:
        vectors: the bank (M, D) float32.
        columns: the screening matrix (padded_dim, padded_size), float32 values exact in bfloat16.
    """

    def __init__(self, bank: np.ndarray, margin: int | None = None):
        vectors = np.ascontiguousarray(bank, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] == 0:
            msg = f"bank must be a non-empty (M, D) array, got shape {bank.shape}"
            raise ValueError(msg)
        self.vectors = vectors
        self.margin = margin
        self.size, self.dim = int(vectors.shape[0]), int(vectors.shape[1])
        norms64 = np.einsum("md,md->m", vectors.astype(np.float64), vectors.astype(np.float64))
        self.norms = norms64.astype(np.float32)
        rounded = round_bf16(vectors)
        residual = (vectors - rounded).astype(np.float64)
        rounded64 = rounded.astype(np.float64)
        grow = 1 + 1e-6
        self.max_norm = math.sqrt(float(norms64.max())) * grow
        self.max_rounded_norm = math.sqrt(float(np.einsum("md,md->m", rounded64, rounded64).max())) * grow
        self.max_residual = math.sqrt(float(np.einsum("md,md->m", residual, residual).max())) * grow
        self.max_squared_norm = float(norms64.max()) * grow
        self.groups = max(1, math.ceil(self.size / SCREEN_GROUPS))
        self.padded_size = self.groups * SCREEN_GROUPS
        self.padded_dim = math.ceil((self.dim + 4) / 32) * 32
        high, low = split_bf16(norms64)
        columns = np.zeros((self.padded_dim, self.padded_size), dtype=np.float32)
        columns[: self.dim, : self.size] = (rounded * -2).T  # exact: scaling by a power of two
        columns[self.dim, : self.size] = high
        columns[self.dim + 1, : self.size] = low
        columns[self.dim + 2 : self.dim + 4] = 1.0
        columns[self.dim, self.size :] = float(2**100)  # padding scores far above any bank vector
        self.columns = columns
        terms = self.padded_dim + 1
        self.gamma = terms * F32_U / (1 - terms * F32_U)

    def candidates_for(self, k: int, extra: int = 0) -> int:
        """Candidates re-scored exactly for ``k`` neighbours: ``k + margin`` (at most the bank)."""
        margin = max(8, (k + 1) // 2) if self.margin is None else self.margin
        return min(self.size, k + margin + extra)

    def screens(self, candidates: int) -> bool:
        """True when screening pays off (else the search is exhaustive): the candidates are few."""
        return candidates < self.size and candidates <= self.groups

    def query_bounds(
        self, queries: np.ndarray, residual_norms: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Per query: ``(||q||^2, offset o_q, error bound E(q), high, low)``; ``high + low ~ ||q||^2 + o_q``.

        ``residual_norms`` are ``|q - q~|`` of the bfloat16-rounded queries the screen multiplies.
        """
        q_squared = np.einsum("nd,nd->n", queries, queries, dtype=np.float64)
        q_norms = np.sqrt(q_squared)
        residual = residual_norms.astype(np.float64)
        q_rounded = q_norms + residual
        error = q_rounded * (2.0 * self.max_residual) + residual * (2.0 * self.max_norm)
        error += q_rounded * (2.0 * self.gamma * self.max_rounded_norm)
        error += (self.gamma + SPLIT_U) * (self.max_squared_norm + q_squared)
        offset = 2.0 * error + 1e-6
        error += (self.gamma + SPLIT_U) * offset
        high, low = split_bf16(q_squared + offset)
        return q_squared, offset, error, high, low

    def proven(
        self, worst_included: np.ndarray, q_squared: np.ndarray, offset: np.ndarray, error: np.ndarray, kth: np.ndarray
    ) -> np.ndarray:
        """Per query: True when no bank vector outside the candidates can be closer than the k-th.

        ``worst_included``: the largest screening output among the candidates; ``kth``: the k-th
        smallest exact float32 distance among them.
        """
        c = BF16_U / (1 - BF16_U)
        worst = worst_included.astype(np.float64)
        lower = worst * (1.0 - c) - offset - error
        lower -= 4.0 * F32_U * (worst + q_squared + self.max_squared_norm) + 1e-7
        return lower > kth.astype(np.float64) * (1.0 + 4.0 * F32_U)


def openvino_bf16_available() -> bool:
    """True when OpenVINO is installed and its CPU plugin runs bfloat16 (AMX / AVX512-BF16)."""
    if importlib.util.find_spec("openvino") is None:
        return False
    import openvino as ov  # optional dependency: imported only where installed

    try:
        return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    except RuntimeError:  # pragma: no cover - no CPU plugin
        return False


class OpenVINOScreen:
    """The screening GEMM + candidate selection as one OpenVINO graph with the columns as a constant.

    Input: augmented queries (n, padded_dim) float32, exact in bfloat16 (so the bf16 conversion is
    exact); output: the ``candidates`` smallest outputs (n, K) float32 and their columns (n, K).
    The precision hint is bf16 (AMX / AVX512-BF16 tiles with float32 accumulation; the output
    may be rounded to bfloat16, which the proof allows for); dynamic quantization is off.
    """

    def __init__(self, columns: np.ndarray, candidates: int, threads: int | None = None):
        import openvino as ov  # optional dependency: imported only where installed
        import openvino.opset13 as ops

        queries = ops.parameter([-1, columns.shape[0]], np.float32, name="queries")
        outputs = ops.matmul(queries, ops.constant(np.ascontiguousarray(columns, dtype=np.float32)), False, False)
        best = ops.topk(outputs, candidates, 1, "min", "none", "i32")
        model = ov.Model([best.output(0), best.output(1)], [queries], "bank_screen")
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": "bf16", "DYNAMIC_QUANTIZATION_GROUP_SIZE": 0}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        self._request = ov.Core().compile_model(model, "CPU", config).create_infer_request()

    def __call__(self, augmented: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self._request.infer({0: augmented})
        values = np.array(self._request.get_output_tensor(0).data, dtype=np.float32, copy=True)
        columns = np.array(self._request.get_output_tensor(1).data, dtype=np.int64, copy=True)
        return values, columns


class ScreenedSearch:
    """Exact kNN without torch: :class:`ScreenedBank` screened by :class:`OpenVINOScreen`.

    Candidates are re-scored exactly by faiss (``knn_L2sqr_by_idx``: float32 sums of squared
    differences); queries whose proof fails are searched again with faiss ``IndexFlatL2``.
    Same neighbours and distances as ``structcore.knn``'s ``bf16`` engine (float32 rounding).
    """

    def __init__(self, bank: np.ndarray, margin: int | None = None, threads: int | None = None):
        self.screened = ScreenedBank(bank, margin)
        self.threads = threads
        self.size = self.screened.size
        self.last_fallbacks = 0
        self._extra_margin = 0
        self._screens: dict[int, OpenVINOScreen] = {}
        self._flat: Any = None

    def _screen(self, candidates: int) -> OpenVINOScreen:
        if candidates not in self._screens:
            self._screens[candidates] = OpenVINOScreen(self.screened.columns, candidates, self.threads)
        return self._screens[candidates]

    def _exhaustive(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if self._flat is None:
            self._flat = build_index(self.screened.vectors, "flat")
        return search_index(self._flat, queries, k)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Squared L2 distances (n, k) ascending and bank indices of the ``k`` nearest, exact."""
        bank = self.screened
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        n, k = len(queries), min(int(k), self.size)
        candidates = bank.candidates_for(k, self._extra_margin)
        self.last_fallbacks = 0
        faiss.omp_set_num_threads(self.threads or cpu_threads())
        if n == 0 or not bank.screens(candidates):
            return self._exhaustive(queries, k)
        screen = self._screen(candidates)
        distances = np.empty((n, k), dtype=np.float32)
        indices = np.empty((n, k), dtype=np.int64)
        augmented = np.zeros((min(n, _SCREEN_BLOCK), bank.padded_dim), dtype=np.float32)
        augmented[:, bank.dim : bank.dim + 2] = 1.0
        failed: list[np.ndarray] = []
        for start in range(0, n, _SCREEN_BLOCK):
            q = queries[start : start + _SCREEN_BLOCK]
            rows = len(q)
            aug = augmented[:rows]
            rounded = round_bf16(q)
            aug[:, : bank.dim] = rounded
            residual = rounded
            np.subtract(q, rounded, out=residual)
            residual_norms = np.sqrt(np.einsum("nd,nd->n", residual, residual))
            q_squared, offset, error, high, low = bank.query_bounds(q, residual_norms)
            aug[:, bank.dim + 2] = high
            aug[:, bank.dim + 3] = low
            values, columns = screen(aug)
            best = distances[start : start + rows]
            chosen = indices[start : start + rows]
            faiss.knn_L2sqr_by_idx(  # type: ignore[attr-defined]
                faiss.swig_ptr(q),
                faiss.swig_ptr(bank.vectors),
                faiss.swig_ptr(columns),
                bank.dim,
                rows,
                bank.size,
                candidates,
                k,
                faiss.swig_ptr(best),
                faiss.swig_ptr(chosen),
                candidates,  # the row stride of the candidates (faiss' default -1 misreads them)
            )
            proven = bank.proven(values.max(axis=1), q_squared, offset, error, best[:, k - 1])
            if not proven.all():
                failed.append(np.flatnonzero(~proven) + start)
        np.maximum(distances, 0.0, out=distances)
        if failed:
            rows_failed = np.concatenate(failed)
            self.last_fallbacks = len(rows_failed)
            distances[rows_failed], indices[rows_failed] = self._exhaustive(queries[rows_failed], k)
            if self.last_fallbacks > 0.02 * n and self._extra_margin < 64:
                self._extra_margin = min(64, max(4, 2 * self._extra_margin))
        return distances, indices


class BankSearch:
    """A category's memory bank; patch score = mean of the k smallest squared distances.

    ``engine``: ``screened`` (:class:`ScreenedSearch`, needs OpenVINO with bfloat16), ``faiss``
    (``IndexFlatL2`` / ``IndexHNSWFlat``) or ``auto`` (screened for a flat index where it can run).
    """

    def __init__(
        self,
        bank: np.ndarray,
        k: int,
        index: str = "flat",
        hnsw_m: int = DEFAULT_HNSW_M,
        hnsw_ef_search: int = DEFAULT_HNSW_EF_SEARCH,
        engine: str = "auto",
    ):
        if engine not in SEARCH_ENGINES:
            msg = f"unknown kNN engine {engine!r}; choose one of {', '.join(SEARCH_ENGINES)}"
            raise ValueError(msg)
        vectors = np.ascontiguousarray(bank, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] == 0:
            msg = f"bank must be a non-empty (M, D) array, got shape {bank.shape}"
            raise ValueError(msg)
        self.k = min(int(k), vectors.shape[0])
        self.size = int(vectors.shape[0])
        if engine == "auto":
            engine = "screened" if index == "flat" and openvino_bf16_available() else "faiss"
        if engine == "screened" and index != "flat":
            msg = f"the screened engine searches a flat index only, not {index!r}"
            raise ValueError(msg)
        self.engine = engine
        self._screened = ScreenedSearch(vectors) if engine == "screened" else None
        self.index = None if self._screened is not None else build_index(vectors, index, hnsw_m, hnsw_ef_search)

    def search(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Squared L2 distances and bank indices of the ``k`` nearest bank vectors of each query."""
        if self._screened is not None:
            return self._screened.search(queries, self.k)
        faiss.omp_set_num_threads(cpu_threads())
        return search_index(self.index, queries, self.k)

    def patch_scores(self, queries: np.ndarray) -> np.ndarray:
        """Patch scores (n,) of queries (n, D)."""
        distances, _ = self.search(queries)
        return distances.mean(axis=1)
