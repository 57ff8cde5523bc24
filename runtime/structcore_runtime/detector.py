"""Scoring images with an exported folder: graph -> routing -> kNN -> map -> StructCore scores.

:func:`load` checks the folder first (format version, every file's sha256, array shapes, the
graph's input size against the manifest) and refuses it with one line (:class:`ExportError`)
rather than ever scoring with a part that differs. Records have the fields of ``registry infer``'s
JSONL: the same routing, maps, scores, unknown flag and thresholds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from structcore_runtime.export_format import ExportError, check_file, load_array, read_manifest
from structcore_runtime.graph import GraphSession
from structcore_runtime.images import ImageError, load_image, preprocess
from structcore_runtime.knn import SEARCH_ENGINES, BankSearch
from structcore_runtime.maps import anomaly_maps
from structcore_runtime.records import error_record
from structcore_runtime.regions import DEFAULT_MAX_REGIONS, find_regions, regions_at_original_size
from structcore_runtime.routing import DEFAULT_SHORTLIST, Router, RouteRule
from structcore_runtime.scores import base_scores, hybrid_scores, struct_distance, structural_descriptor


@dataclass
class ExportedCategory:
    """One category version of an export: bank search, map settings, StructCore statistics, thresholds."""

    name: str
    version: int
    search: BankSearch
    grid: tuple[int, int]
    map_size: int
    sigma: float
    top_ratio: float
    mu: np.ndarray
    scale: np.ndarray
    eps: float
    lambda_: float
    one_sided: bool
    thresholds: dict[str, float]

    def score(self, patch_vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(maps, base, struct, hybrid) of patch vectors (B, P, D)."""
        batch, patches, dim = patch_vectors.shape
        patch_scores = self.search.patch_scores(patch_vectors.reshape(batch * patches, dim))
        maps = anomaly_maps(patch_scores.reshape(batch, *self.grid), self.map_size, self.sigma)
        base = base_scores(maps)
        struct = struct_distance(
            structural_descriptor(maps, self.top_ratio), self.mu, self.scale, self.eps, self.one_sided
        )
        return maps, base, struct, hybrid_scores(base, struct, self.lambda_)


def _category(folder: Path, entry: dict[str, Any], knn: str) -> tuple[ExportedCategory, RouteRule]:
    name = str(entry["name"])
    arrays = entry["arrays"]
    bank = load_array(folder, arrays["bank"])
    prototypes = load_array(folder, arrays["prototypes"]).astype(np.float32)
    params = entry["params"]
    calibrator = entry["calibrator"]
    index = str(params.get("index", "flat"))
    search = BankSearch(
        bank,
        int(params["k"]),
        index,
        int(params.get("hnsw_m", 32)),
        int(params.get("hnsw_ef_search", 128)),
        engine=knn if index == "flat" else "faiss",  # HNSW categories are searched by faiss as exported
    )
    category = ExportedCategory(
        name=name,
        version=int(entry["version"]),
        search=search,
        grid=(int(entry["grid"][0]), int(entry["grid"][1])),
        map_size=int(entry["map_size"]),
        sigma=float(params["sigma"]),
        top_ratio=float(calibrator["top_ratio"]),
        mu=np.asarray(calibrator["mu"], dtype=np.float64),
        scale=np.asarray(calibrator["sigma"], dtype=np.float64),
        eps=float(calibrator["eps"]),
        lambda_=float(calibrator["lambda"]),
        one_sided=str(calibrator.get("scoring", "paper")) != "paper",
        thresholds={key: float(value) for key, value in calibrator["thresholds"].items()},
    )
    unknown = entry.get("unknown_threshold")
    far = entry.get("far_threshold")
    rule = RouteRule(
        name=name,
        prototypes=prototypes,
        route_threshold=float(entry["route_threshold"]),
        unknown_threshold=None if unknown is None else float(unknown),
        unknown_statistic=str(entry["unknown_statistic"]),
        far_threshold=None if far is None else float(far),
    )
    return category, rule


class ExportedDetector:
    """The categories of one exported folder, ready to score images (see :func:`load`)."""

    def __init__(
        self,
        folder: str | Path,
        *,
        backend: str = "auto",
        precision: str = "f32",
        threads: int | None = None,
        shortlist: int | None = DEFAULT_SHORTLIST,
        knn: str = "auto",
        max_regions: int = DEFAULT_MAX_REGIONS,
    ):
        if max_regions < 0:
            raise ExportError(f"max_regions must be >= 0, got {max_regions}")
        self.max_regions = int(max_regions)
        if knn not in SEARCH_ENGINES:
            raise ExportError(f"unknown kNN engine {knn!r}; choose one of {', '.join(SEARCH_ENGINES)}")
        folder = Path(folder)
        manifest = read_manifest(folder)
        self.folder = folder
        self.manifest = manifest
        try:
            space = manifest["feature_space"]
            graph = manifest["graph"]
            self.resize, self.crop = int(space["resize"]), int(space["crop"])
            self.mean = np.asarray(space["mean"], dtype=np.float32).reshape(1, 3, 1, 1)
            self.std = np.asarray(space["std"], dtype=np.float32).reshape(1, 3, 1, 1)
            self.dim = int(space["dim"])
            self.grid = (int(graph["grid"][0]), int(graph["grid"][1]))
            input_size = [int(v) for v in graph["input_size"]]
            files = [check_file(folder, item) for item in graph["files"]]
            built = [_category(folder, item, knn) for item in manifest["categories"]]
        except (KeyError, TypeError, ValueError, IndexError) as error:
            raise ExportError(
                f"{folder / 'manifest.json'}: incomplete or malformed ({type(error).__name__}: {error})"
            ) from error
        if input_size != [3, self.crop, self.crop]:
            raise ExportError(
                f"{folder}: the manifest's graph input size {input_size} disagrees with its feature space "
                f"(3 x {self.crop} x {self.crop})"
            )
        self.session = GraphSession(files[0], backend, precision, threads)
        found = list(self.session.input_shape[1:])
        if found != input_size:
            raise ExportError(
                f"{files[0]}: the graph takes input {['B' if v is None else v for v in self.session.input_shape]}, "
                f"the manifest says {input_size}; the folder is inconsistent (export it again)"
            )
        self.categories = {category.name: category for category, _ in built}
        self.router = Router([rule for _, rule in built], shortlist=shortlist)

    @property
    def versions(self) -> dict[str, int]:
        """The version of each category this export scores with."""
        return {name: category.version for name, category in self.categories.items()}

    def embed(self, images: np.ndarray) -> np.ndarray:
        """Preprocessed images (B, 3, S, S) in [0, 1] -> projected patch vectors (B, P, D), checked."""
        vectors = self.session.run((images - self.mean) / self.std)
        expected = (len(images), self.grid[0] * self.grid[1], self.dim)
        if vectors.shape != expected:
            raise ExportError(f"the graph returned shape {list(vectors.shape)}, the manifest says {list(expected)}")
        return vectors

    def score_vectors(
        self,
        vectors: np.ndarray,
        names: Sequence[str],
        category: str | None = None,
        sizes: Sequence[tuple[int, int]] | None = None,
    ) -> list[dict[str, Any]]:
        """Route (or force ``category``) and score embedded images: one record per row.

        ``sizes``: the images' original (width, height), where their regions are reported (else
        on the model's map), as ``registry infer`` does.
        """
        routed = self.router.route(vectors) if category is None else self.router.forced(vectors, category)
        records: list[dict[str, Any]] = [{} for _ in names]
        for name in dict.fromkeys(routed.categories):
            rows = [j for j, chosen in enumerate(routed.categories) if chosen == name]
            model = self.categories[name]
            maps, base, struct, hybrid = model.score(vectors[rows])
            threshold = model.thresholds["hybrid"]
            map_threshold = model.thresholds["base"]
            for k, j in enumerate(rows):
                records[j] = {
                    "path": names[j],
                    "category": name,
                    "version": model.version,
                    "route_score": float(routed.route_scores[j]),
                    "unknown": bool(routed.unknown_scores[j] > 1.0),
                    "unknown_score": float(routed.unknown_scores[j]),
                    "score_base": float(base[k]),
                    "score_struct": float(struct[k]),
                    "score_hybrid": float(hybrid[k]),
                    "threshold": threshold,
                    "anomalous": bool(hybrid[k] > threshold),
                    "error": None,
                    "overlay": None,
                    "regions": self._regions(maps[k], map_threshold, None if sizes is None else sizes[j]),
                }
        return records

    def _regions(self, anomaly_map: np.ndarray, threshold: float, size: tuple[int, int] | None) -> list[Any]:
        """The record's regions: at the original ``size`` (width, height), else on the map as it is."""
        if size is None:
            return list(find_regions(anomaly_map, threshold, self.max_regions))
        return list(
            regions_at_original_size(anomaly_map, threshold, size, self.resize, self.crop, max_regions=self.max_regions)
        )

    def predict(
        self,
        sources: Sequence[str | Path],
        category: str | None = None,
        *,
        batch_size: int = 8,
        progress: Callable[[int, int], None] | None = None,
    ) -> list[dict[str, Any]]:
        """Score image files: one record per source, in order (``error`` set where one cannot be scored)."""
        if category is not None and category not in self.categories:
            raise ExportError(f"category {category!r} is not in this export (it holds: {', '.join(self.categories)})")
        records: list[dict[str, Any]] = []
        for start in range(0, len(sources), batch_size):
            batch = sources[start : start + batch_size]
            out: list[dict[str, Any] | None] = [None] * len(batch)
            arrays, positions, sizes = [], [], []
            for i, source in enumerate(batch):
                try:
                    image = load_image(source)
                    arrays.append(preprocess(image, self.resize, self.crop))
                    sizes.append(image.size)
                    positions.append(i)
                except ImageError as error:
                    out[i] = error_record(str(source), str(error))
            if arrays:
                names = [str(batch[i]) for i in positions]
                try:
                    vectors = self.embed(np.stack(arrays))
                    if not np.isfinite(vectors).all():
                        raise ExportError("the graph returned non-finite values")
                    scored = self.score_vectors(vectors, names, category, sizes)
                except ExportError as error:
                    scored = [
                        error_record(name, f"{name}: the graph cannot take this image ({error})") for name in names
                    ]
                for i, record in zip(positions, scored, strict=True):
                    out[i] = record
            records.extend(record for record in out if record is not None)
            if progress is not None:
                progress(min(start + batch_size, len(sources)), len(sources))
        return records


def load(
    folder: str | Path,
    *,
    backend: str = "auto",
    precision: str = "f32",
    threads: int | None = None,
    shortlist: int | None = DEFAULT_SHORTLIST,
    knn: str = "auto",
    max_regions: int = DEFAULT_MAX_REGIONS,
) -> ExportedDetector:
    """Open an exported folder (checked; :class:`ExportError` with one line when it cannot be used).

    ``knn``: ``auto`` (the screened exact search where OpenVINO runs bfloat16, else faiss),
    ``screened`` or ``faiss``; both give the neighbours of an exact float32 search.
    """
    return ExportedDetector(folder, backend=backend, precision=precision, threads=threads, shortlist=shortlist, knn=knn)


def finite_or_none(value: float) -> float | None:
    """``value`` when finite (JSON has no NaN), else ``None``."""
    return float(value) if math.isfinite(value) else None
