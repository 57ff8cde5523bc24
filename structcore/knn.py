"""k-nearest-neighbour patch scoring against a memory bank, method.md step 5.

Exact search has two engines that return the same neighbours:

* ``faiss``: ``IndexFlatL2`` (BLAS float32 GEMM + heap selection);
* ``bf16``: a screened exact search for CPUs with bfloat16 matrix units (AMX / AVX512-BF16).
  One bfloat16 GEMM (about 5x the float32 throughput) ranks the bank for each query; the best
  ``k + margin`` candidates are re-scored in float32, and a rigorous bound on the bfloat16
  error proves per query that no other bank vector can be among the ``k`` nearest. Queries
  whose proof fails (under 1% of MVTec bottle patches at the default margin) are searched
  again exhaustively in float32. The neighbours and distances are therefore those of an exact
  float32 search (distances agree to float32 rounding).

``engine="torch"`` is a plain float32 GEMM + top-k (the fallback of the ``bf16`` engine).
``engine="auto"`` picks ``bf16`` when torch reports bfloat16 matrix support, else ``faiss``;
GPU faiss is used when present. ``index="hnsw"`` is an approximate HNSW graph (faiss).
Speeds and the threading choice are in ``docs/performance.md``. The faiss indexes are built and
searched by :mod:`structcore_runtime.knn` (shared with the exported runtime, which has no torch
and so searches with faiss; the ``bf16`` engine gives the same neighbours to float32 rounding).
"""

from __future__ import annotations

from typing import Any

import faiss
import numpy as np
import torch
from structcore_runtime import knn as shared_knn

from structcore.runtime import small_op_threads, torch_threads
from structcore.settings import DEFAULT_INDEX, DEFAULT_K, INDEX_KINDS  # declared once, with the other settings

#: Engines of the exact ("flat") search.
ENGINES = ("auto", "faiss", "bf16", "torch")

#: Bank column groups of the screened candidate selection (the layout of ScreenedBank's columns).
_GROUPS = shared_knn.SCREEN_GROUPS
#: Elements per block of the screened search (scores and gathered candidates stay in cache).
_BLOCK_ELEMENTS = 1 << 22
#: Elements per block of the exhaustive float32 search.
_MAX_BLOCK_ELEMENTS = 1 << 23


def gpu_available() -> bool:
    """True when faiss was built with GPU support and sees at least one GPU."""
    get_num_gpus = getattr(faiss, "get_num_gpus", None)
    return bool(get_num_gpus is not None and get_num_gpus() > 0)


def bf16_matmul_supported() -> bool:
    """True when torch runs bfloat16 GEMMs natively on this CPU (AMX or AVX512-BF16 via oneDNN)."""
    try:
        native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # pragma: no cover - builds without oneDNN
        return False
    cpu = getattr(torch, "cpu", None)
    checks = [getattr(cpu, name, None) for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")]
    units = [bool(check()) for check in checks if callable(check)]
    return native and any(units)


def _screen_buffer(shared: shared_knn.ScreenedBank, rows: int) -> torch.Tensor:
    """A (rows, padded_dim) bfloat16 buffer for :func:`_screen_queries`, its two constant columns set."""
    buffer = torch.zeros(rows, shared.padded_dim, dtype=torch.bfloat16)
    buffer[:, shared.dim : shared.dim + 2] = 1.0
    return buffer


def _screen_queries(
    shared: shared_knn.ScreenedBank, queries: torch.Tensor, buffer: torch.Tensor
) -> tuple[torch.Tensor, np.ndarray, np.ndarray, np.ndarray]:
    """The augmented bfloat16 queries ``[q, 1, 1, h_q, l_q]`` of ``shared``'s screen, in ``buffer``'s first rows.

    Returns them with each query's ``||q||^2``, offset and error bound
    (:meth:`~structcore_runtime.knn.ScreenedBank.query_bounds`).
    """
    dim = shared.dim
    augmented = buffer[: int(queries.shape[0])]
    augmented[:, :dim] = queries
    residuals = torch.linalg.vector_norm(queries - augmented[:, :dim].float(), dim=1)
    q_squared, offset, error, high, low = shared.query_bounds(queries.numpy(), residuals.numpy())
    augmented[:, dim + 2] = torch.from_numpy(high)  # exact: bfloat16 values
    augmented[:, dim + 3] = torch.from_numpy(low)
    return augmented, q_squared, offset, error


class _ScreenedFlat:
    """Exact kNN: bfloat16 screening GEMM in torch + float32 re-scoring + a per-query error proof.

    The screening matrix and the proof are :class:`structcore_runtime.knn.ScreenedBank`'s (one
    implementation, shared with the exported runtime, whose screen is an OpenVINO graph; its
    docstring derives the bound). Here the GEMM outputs stay bfloat16 and, being positive, order
    like their int16 bit patterns, on which selection is fast. Candidates: the bank columns are
    split into 32 interleaved groups (column ``j*G + g`` belongs to group ``g``); the ``K`` groups
    with the smallest minimum contain the ``K`` smallest outputs, so the top-``K`` selection runs
    over ``32 K`` values instead of the whole bank.
    """

    def __init__(self, bank: np.ndarray, margin: int | None = None, threads: int | None = None):
        self.margin = margin
        self.threads = threads
        self.last_fallbacks = 0
        # Grows when many proofs fail (dense banks): re-scoring a few more candidates is cheaper
        # than exhaustive fallbacks. It never changes the results, only the work.
        self._extra_margin = 0
        self.shared = shared_knn.ScreenedBank(bank, margin)
        self.bank = torch.from_numpy(self.shared.vectors)
        self.norms = torch.from_numpy(self.shared.norms)
        self.size, self.dim = self.shared.size, self.shared.dim
        self.groups, self.padded_dim = self.shared.groups, self.shared.padded_dim
        self.padded_size = self.shared.padded_size
        self.columns = torch.from_numpy(self.shared.columns).bfloat16().contiguous()  # exact: bf16 values

    def candidates_for(self, k: int) -> int:
        return self.shared.candidates_for(k, self._extra_margin)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        with torch_threads(self.threads or small_op_threads()):
            return self._search(queries, k)

    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        q_all = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32))
        n = int(q_all.shape[0])
        k = min(k, self.size)
        candidates = self.candidates_for(k)
        distances = torch.empty(n, k, dtype=torch.float32)
        indices = torch.empty(n, k, dtype=torch.int64)
        self.last_fallbacks = 0
        if n == 0:
            return distances.numpy(), indices.numpy()
        if not self.shared.screens(candidates):  # small bank: exhaustive float32
            self._exhaustive(q_all, k, distances, indices, torch.arange(n))
            return distances.numpy(), indices.numpy()
        block = max(32, min(n, _BLOCK_ELEMENTS // self.padded_size, _BLOCK_ELEMENTS // (candidates * self.dim)))
        augmented = _screen_buffer(self.shared, min(block, n))
        offsets = (torch.arange(_GROUPS) * self.groups).view(1, 1, _GROUPS)
        failed: list[torch.Tensor] = []
        for start in range(0, n, block):
            q = q_all[start : start + block]
            rows = int(q.shape[0])
            aug, q_squared, offset, error = _screen_queries(self.shared, q, augmented)
            scores = torch.mm(aug, self.columns).view(torch.int16)  # d + offset > 0, as int16 bits
            group_min = scores.view(rows, _GROUPS, self.groups).amin(dim=1)
            _, best_groups = torch.topk(group_min, candidates, dim=1, largest=False, sorted=False)
            columns = (best_groups.unsqueeze(2) + offsets).view(rows, candidates * _GROUPS)
            values, picked = torch.topk(scores.gather(1, columns), candidates, dim=1, largest=False, sorted=False)
            cand = columns.gather(1, picked)
            # Exact float32 distances of the candidates.
            gathered = self.bank.index_select(0, cand.view(-1)).view(rows, candidates, self.dim)
            exact = torch.linalg.vector_norm(gathered.sub_(q.unsqueeze(1)), dim=2).square_()
            best, order = torch.topk(exact, k, dim=1, largest=False, sorted=True)
            distances[start : start + rows] = best
            indices[start : start + rows] = cand.gather(1, order)
            # Proof that nothing outside the candidates is closer than the k-th (ScreenedBank.proven).
            worst_included = values.max(dim=1).values.view(torch.bfloat16).float().numpy()
            proven = self.shared.proven(worst_included, q_squared, offset, error, best[:, k - 1].numpy())
            if not proven.all():
                failed.append(torch.from_numpy(np.flatnonzero(~proven)) + start)
        if failed:
            rows_failed = torch.cat(failed)
            self.last_fallbacks = len(rows_failed)
            self._exhaustive(q_all, k, distances, indices, rows_failed)
            if self.last_fallbacks > 0.02 * n and self._extra_margin < 64:
                self._extra_margin = min(64, max(4, 2 * self._extra_margin))
        return distances.numpy(), indices.numpy()

    def _exhaustive(
        self, q_all: torch.Tensor, k: int, distances: torch.Tensor, indices: torch.Tensor, rows: torch.Tensor
    ) -> None:
        """Exact float32 search for the given query rows (written into ``distances``/``indices``)."""
        step = max(1, _MAX_BLOCK_ELEMENTS // self.size)
        for start in range(0, len(rows), step):
            part = rows[start : start + step]
            q = q_all.index_select(0, part)
            q_norms = (q * q).sum(dim=1)
            full = torch.addmm(self.norms.unsqueeze(0), q, self.bank.T, alpha=-2.0).add_(q_norms.unsqueeze(1))
            _, order = torch.topk(full, k, dim=1, largest=False, sorted=True)
            # Distances of the selected neighbours from differences (exact 0 for equal vectors).
            gathered = self.bank.index_select(0, order.view(-1)).view(len(part), k, self.dim)
            best = torch.linalg.vector_norm(gathered.sub_(q.unsqueeze(1)), dim=2).square_()
            best, resort = torch.sort(best, dim=1)
            distances[part] = best
            indices[part] = order.gather(1, resort)


class PatchKNN:
    """Squared-L2 kNN search over a bank, returning the mean of the k smallest distances.

    Args:
        k: neighbours per query (scores are the mean of their squared L2 distances).
        index: ``"flat"`` (exact) or ``"hnsw"`` (``IndexHNSWFlat``, approximate).
        hnsw_m: HNSW graph degree.
        hnsw_ef_search: HNSW search breadth (recall vs speed); 128 keeps bottle's AUROC to 3 decimals
            at 1% and 10% banks (recall@5 >= 0.993, ``registry bench``).
        use_gpu: move a flat index to the GPU when faiss-gpu is present (``None`` = auto).
        engine: exact search engine for ``"flat"``: ``"auto"``, ``"faiss"``, ``"bf16"`` (screened
            exact search, see the module docstring) or ``"torch"`` (float32 GEMM + top-k).
        margin: extra candidates of the ``bf16`` engine (``None``: ``max(8, ceil(k / 2))``).
        threads: intra-op threads of the ``bf16`` engine; ``None``: torch's setting on idle cores,
            1 when other processes are busy on them (:func:`structcore.runtime.small_op_threads`).
            Its ~25 small ops per query block stall at every OpenMP barrier when a thread is
            descheduled: on 2 shared cores at load ~10, 89 ms per image with 1 thread against
            722 ms with 2 (faiss: 239 ms); idle, 39 ms with 2 threads and 58 ms with 1.

    Attributes:
        index_: the faiss index holding the bank (``None`` for the torch engines).
        engine_: the engine in use.
        size_: number of bank vectors.
    """

    def __init__(
        self,
        k: int = DEFAULT_K,
        index: str = DEFAULT_INDEX,
        hnsw_m: int = 32,
        hnsw_ef_search: int = 128,
        use_gpu: bool | None = None,
        engine: str = "auto",
        margin: int | None = None,
        threads: int | None = None,
    ):
        self.k = k
        self.index = index
        self.hnsw_m = hnsw_m
        self.hnsw_ef_search = hnsw_ef_search
        self.use_gpu = use_gpu
        self.engine = engine
        self.margin = margin
        self.threads = threads

    def _pick_engine(self) -> str:
        if self.engine not in ENGINES:
            msg = f"unknown kNN engine {self.engine!r}; choose one of {ENGINES}"
            raise ValueError(msg)
        if self.index != "flat":
            return "faiss"
        if self.engine != "auto":
            return self.engine
        if self.use_gpu or (self.use_gpu is None and gpu_available()):  # pragma: no cover - GPU only
            return "faiss"
        return "bf16" if bf16_matmul_supported() else "faiss"

    def fit(self, bank: np.ndarray) -> PatchKNN:
        """Index ``bank`` (M, D); float16 banks are searched in float32."""
        if self.index not in INDEX_KINDS:
            msg = f"unknown index kind {self.index!r}; choose one of {INDEX_KINDS}"
            raise ValueError(msg)
        vectors = np.ascontiguousarray(bank, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] == 0:
            msg = f"bank must be a non-empty (M, D) array, got shape {bank.shape}"
            raise ValueError(msg)
        self.engine_ = self._pick_engine()
        self.size_ = vectors.shape[0]
        self._screened: _ScreenedFlat | None = None
        self.index_: Any = None
        if self.engine_ in ("bf16", "torch"):
            self._screened = _ScreenedFlat(vectors, self.margin, self.threads if self.engine_ == "bf16" else None)
            return self
        use_gpu = bool(self.use_gpu or (self.use_gpu is None and gpu_available()))
        index = shared_knn.build_index(vectors, self.index, self.hnsw_m, self.hnsw_ef_search, use_gpu=use_gpu)
        self.index_ = index
        return self

    def search(self, queries: np.ndarray, k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Squared L2 distances and bank indices of the ``k`` nearest bank vectors of each query."""
        count = min(k or self.k, self.size_)
        vectors = np.ascontiguousarray(queries, dtype=np.float32)
        if self._screened is not None:
            if self.engine_ == "torch":
                q = torch.from_numpy(vectors)
                distances_t = torch.empty(len(q), count)
                indices_t = torch.empty(len(q), count, dtype=torch.int64)
                self._screened._exhaustive(q, count, distances_t, indices_t, torch.arange(len(q)))
                return distances_t.numpy(), indices_t.numpy()
            return self._screened.search(vectors, count)
        return shared_knn.search_index(self.index_, vectors, count)

    def score(self, queries: np.ndarray) -> np.ndarray:
        """Patch scores (n,) = mean squared L2 distance to the ``k`` nearest bank vectors."""
        distances, _ = self.search(queries)
        return distances.mean(axis=1)


#: Query rows per block of :func:`pairs_within` (its scores stay near 20 MB for ~1,200 vectors).
_PAIR_BLOCK = 8192


def pairs_within(
    queries: np.ndarray, limits: np.ndarray, vectors: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every (query, vector) pair at squared distance below the query's limit, exactly.

    ``registry update`` asks this of the train patches (``queries``, (N, D), float16 or float32)
    and the bank vectors the update added (``vectors``, (M, D)), each patch's limit its k-th
    distance so far: the pairs are the new vectors that enter its k nearest. One product per block
    of queries screens all pairs, then the survivors are measured from differences (as the exact
    kNN engines measure neighbours) and kept below their limit. The screen only ever keeps too
    many pairs, never too few:

    * on CPUs with bfloat16 matrix units, the bfloat16 GEMM of
      :class:`structcore_runtime.knn.ScreenedBank` (about 5x float32), whose rigorous error bound
      turns each limit into a threshold on the screening output;
    * elsewhere, float32 products with a relative slack of ``(D + 2) 2^-22`` (above the float32
      rounding of expanded distances).

    Returns:
        Query rows, vector rows and squared distances, sorted by query row, then by distance.
    """
    vector_rows = np.ascontiguousarray(vectors, dtype=np.float32)
    limit_rows = np.asarray(limits, dtype=np.float32)
    found: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    screen = _BF16PairScreen(vector_rows) if bf16_matmul_supported() else _Float32PairScreen(vector_rows)
    with torch.inference_mode():
        vectors_t = torch.from_numpy(vector_rows)
        for start in range(0, len(queries), _PAIR_BLOCK):
            block = np.ascontiguousarray(queries[start : start + _PAIR_BLOCK], dtype=np.float32)
            block_limits = limit_rows[start : start + len(block)]
            hit_rows_t, hit_columns_t = screen.candidates(torch.from_numpy(block), block_limits)
            if len(hit_rows_t) == 0:
                continue
            differences = torch.from_numpy(block).index_select(0, hit_rows_t) - vectors_t.index_select(0, hit_columns_t)
            distances = torch.linalg.vector_norm(differences, dim=1).square_().numpy()  # as the engines measure
            hit_rows = hit_rows_t.numpy()
            inside = distances < block_limits[hit_rows]
            found.append((start + hit_rows[inside], hit_columns_t.numpy()[inside], distances[inside]))
    if not found:
        empty = np.empty(0, np.int64)
        return empty, empty.copy(), np.empty(0, np.float32)
    pair_queries, pair_vectors, distances = (np.concatenate(parts) for parts in zip(*found, strict=True))
    ordered = np.lexsort((distances, pair_queries))
    return pair_queries[ordered], pair_vectors[ordered], distances[ordered]


class _BF16PairScreen:
    """The pairs of a query block that may lie below their limits, by one bfloat16 screening GEMM.

    The output ``s`` of :class:`~structcore_runtime.knn.ScreenedBank`'s screen bounds every
    distance from below, ``d >= s (1 - c - 4u) - o_q - E(q) - 4u (|q|^2 + max|b|^2) - 1e-7``
    (``ScreenedBank.proven`` with ``u`` the float32 roundoff), so a pair can only be below the limit
    ``L`` when ``s < (L (1 + 4u) + o_q + E(q) + 4u (|q|^2 + max|b|^2) + 1e-7) / (1 - c - 4u)``.
    That threshold, rounded up to bfloat16, is compared with the outputs as int16 bit patterns
    (positive bfloat16 values order like them).
    """

    def __init__(self, vectors: np.ndarray):
        self.shared = shared_knn.ScreenedBank(vectors)
        self.columns = torch.from_numpy(self.shared.columns).bfloat16().contiguous()
        self.shrink = 1.0 - shared_knn.BF16_U / (1.0 - shared_knn.BF16_U) - 4.0 * shared_knn.F32_U

    def candidates(self, block: torch.Tensor, limits: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        augmented, q_squared, offset, error = _screen_queries(
            self.shared, block, _screen_buffer(self.shared, int(block.shape[0]))
        )
        scores = torch.mm(augmented, self.columns)
        slack = 4.0 * shared_knn.F32_U
        allowed = limits.astype(np.float64) * (1.0 + slack) + offset + error
        allowed += slack * (q_squared + self.shared.max_squared_norm) + 1e-7
        threshold = torch.from_numpy((allowed / self.shrink).astype(np.float32))
        threshold = torch.nextafter(threshold, torch.tensor(float("inf")))  # float64 -> float32 rounded up
        rounded = threshold.bfloat16()
        bits = rounded.view(torch.int16) + (rounded.float() < threshold).to(torch.int16)  # rounded up
        hit_rows, hit_columns = torch.nonzero(scores.view(torch.int16) < bits.unsqueeze(1), as_tuple=True)
        real = hit_columns < self.shared.size  # padding columns score 2^100: never, but cheap to be sure
        return hit_rows[real], hit_columns[real]


class _Float32PairScreen:
    """The pairs of a query block that may lie below their limits, by float32 products with a slack."""

    def __init__(self, vectors: np.ndarray):
        self.vectors = torch.from_numpy(vectors)
        self.norms = self.vectors.square().sum(dim=1)
        self.tolerance = (vectors.shape[1] + 2) * 2.0**-22

    def candidates(self, block: torch.Tensor, limits: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        block_norms = block.square().sum(dim=1, keepdim=True)
        lowered = (block_norms + self.norms.unsqueeze(0)).mul_(1.0 - self.tolerance)  # (1 - t)(|x|^2 + |c|^2)
        approximate = torch.addmm(lowered, block, self.vectors.T, alpha=-2.0)
        hit_rows, hit_columns = torch.nonzero(approximate < torch.from_numpy(limits).unsqueeze(1), as_tuple=True)
        return hit_rows, hit_columns
