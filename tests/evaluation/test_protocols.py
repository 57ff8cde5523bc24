"""Protocol logic of evaluation on a fake store whose scores and routing are set by hand.

Each fake test image carries its own values in its "patch vectors": column 0 of patch 0 is its
anomaly score, columns 1.. are its route scores against the categories (in the store's global
category order). A fake model adds its bias to the score, so being routed to the wrong
category changes the score in a known way, and every figure has a hand-computed answer. The
fake detector routes by those columns (unknown score: the smallest route score / 0.5); that the
real protocols take every decision from the real Detector is tested in
``tests/evaluation/test_eval_matches_infer.py``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from evaluation import (
    CategoryData,
    Dataset,
    MapCache,
    Progress,
    collect,
    evaluate_continual,
    evaluate_muad,
    evaluate_separate,
    forgetting,
    normalize_order,
)
from evaluation.metrics import forgetting_measure
from evaluation.protocols import crossover_counts, fit_missing, mean_metrics
from registry.detector import MapCallback, PredictionRecord, Routing
from structcore.model import CategoryPrediction
from structcore.preprocess import Preprocessing
from structcore.scoring import ImageScores

ALL = ("A", "B", "C")
MAP = 4


class FakeExtractor:
    geometry = Preprocessing(resize=MAP, crop=MAP)

    def __init__(self, table: dict[str, np.ndarray], batch: int = 3):
        self.table = table
        self.batch = batch
        self.embedded: list[str] = []

    def grid_shape(self) -> tuple[int, int]:
        return (1, 1)

    def iter_embeddings(self, sources: Sequence[Any]) -> Iterator[tuple[int, np.ndarray]]:
        for start in range(0, len(sources), self.batch):
            part = [str(s) for s in sources[start : start + self.batch]]
            self.embedded.extend(part)
            yield start, np.stack([self.table[p] for p in part]).astype(np.float32)


class FakeModel:
    def __init__(self, bias: float, threshold: float = 0.5):
        self.bias = bias
        self.calibration_scores_ = {k: np.array([0.0, 0.1, 0.2]) for k in ("base", "struct", "hybrid")}
        self._threshold = threshold

    @property
    def thresholds(self) -> dict[str, float]:
        return {"base": self._threshold, "struct": self._threshold, "hybrid": self._threshold}

    def predict(self, patch_vectors: np.ndarray) -> CategoryPrediction:
        score = patch_vectors[:, 0, 0].astype(np.float64) + self.bias
        maps = np.repeat(score[:, None, None], MAP, axis=1).repeat(MAP, axis=2)
        return CategoryPrediction(maps=maps, scores=ImageScores(base=score, struct=score, hybrid=score))


class FakeDetector:
    def __init__(self, models: dict[str, FakeModel], names: Sequence[str], extractor: FakeExtractor):
        self.models = models
        self.names = list(names)
        self.extractor = extractor
        self.versions = dict.fromkeys(self.names, 1)

    def model(self, name: str) -> FakeModel:
        return self.models[name]

    def restricted_to(self, names: Sequence[str]) -> FakeDetector:
        return FakeDetector(self.models, names, self.extractor)

    def route(self, patch_vectors: np.ndarray, category: str | None = None) -> Routing:
        names = self.names if category is None else [category]
        routes = patch_vectors[:, 0, [1 + ALL.index(n) for n in names]].astype(np.float64)
        best = routes.argmin(axis=1)
        return Routing([names[i] for i in best], routes[np.arange(len(best)), best], routes.min(axis=1) / 0.5)

    def score_vectors(
        self,
        patch_vectors: np.ndarray,
        names: Sequence[str],
        category: str | None = None,
        *,
        on_map: MapCallback | None = None,
        memo: Any = None,
    ) -> list[PredictionRecord]:
        routing = self.route(patch_vectors, category)
        records = []
        for j, chosen in enumerate(routing.categories):
            model = self.models[chosen]
            prediction = model.predict(patch_vectors[j : j + 1])
            score = float(prediction.scores.hybrid[0])
            threshold = model.thresholds["hybrid"]
            record = PredictionRecord(
                path=names[j],
                category=chosen,
                version=1,
                route_score=float(routing.route_scores[j]),
                unknown=bool(routing.unknown[j]),
                unknown_score=float(routing.unknown_scores[j]),
                score_base=score,
                score_struct=score,
                score_hybrid=score,
                threshold=threshold,
                anomalous=score > threshold,
                error=None,
            )
            if on_map is not None:
                on_map(j, record, prediction.maps[0], threshold)
            records.append(record)
        return records


class FakeStore:
    def __init__(self, table: dict[str, np.ndarray], biases: dict[str, float]):
        self._extractor = FakeExtractor(table)
        self.biases = biases
        self.models: dict[str, FakeModel] = {}
        self.fitted: list[str] = []

    def has(self, name: str) -> bool:
        return name in self.models

    def add(self, name: str, train_paths: Sequence[Path], progress: Any = None) -> None:
        self.fitted.append(name)
        if progress is not None:
            progress(Progress("embed", len(train_paths), len(train_paths), name))
        self.models[name] = FakeModel(self.biases[name])

    def detector(self, names: Sequence[str]) -> FakeDetector:
        return FakeDetector(self.models, names, self._extractor)

    def describe(self) -> dict[str, Any]:
        return {"kind": "fake"}


def _vector(score: float, routes: Sequence[float]) -> np.ndarray:
    vector = np.zeros((1, 1 + len(ALL)), dtype=np.float32)
    vector[0, 0] = score
    vector[0, 1:] = routes
    return vector


def toy(
    images: dict[str, list[tuple[int, float, tuple[float, float, float]]]],
) -> tuple[Dataset, dict[str, np.ndarray]]:
    """Dataset + vector table from per-category (label, score, route scores) lists."""
    table: dict[str, np.ndarray] = {}
    categories = {}
    for name, rows in images.items():
        paths = []
        for i, (_label, score, routes) in enumerate(rows):
            path = Path(f"/fake/{name}/test/{i}.png")
            table[str(path)] = _vector(score, routes)
            paths.append(path)
        labels = np.asarray([r[0] for r in rows], dtype=np.int8)
        categories[name] = CategoryData(
            name=name,
            train=(Path(f"/fake/{name}/train/0.png"), Path(f"/fake/{name}/train/1.png")),
            test=tuple(paths),
            labels=labels,
            defects=tuple("good" if r[0] == 0 else "bad" for r in rows),
            masks=tuple(None for _ in rows),
        )
    return Dataset("mvtec", Path("/fake"), categories), table


# A's anomalous image 2 is closer to B's prototypes than to A's (route 0.05 < 0.1): once B is
# added it is routed to B, whose bias (-1) pushes its score below A's good images.
A_IMAGES = [
    (0, 0.1, (0.1, 0.9, 0.9)),
    (0, 0.2, (0.1, 0.9, 0.9)),
    (1, 0.8, (0.1, 0.05, 0.9)),
    (1, 0.9, (0.1, 0.9, 0.9)),
]
B_IMAGES = [(0, 0.1, (0.9, 0.1, 0.9)), (1, 0.7, (0.9, 0.1, 0.9)), (1, 0.8, (0.9, 0.1, 0.9))]
C_IMAGES = [(0, 0.3, (0.9, 0.9, 0.2)), (1, 0.6, (0.9, 0.9, 0.2)), (1, 0.4, (0.9, 0.9, 0.2))]
BIASES = {"A": 0.0, "B": -1.0, "C": 0.0}


@pytest.fixture
def setup() -> tuple[Dataset, FakeStore]:
    dataset, table = toy({"A": A_IMAGES, "B": B_IMAGES, "C": C_IMAGES})
    return dataset, FakeStore(table, BIASES)


def test_continual_forgetting_known_answer(setup: tuple[Dataset, FakeStore]) -> None:
    dataset, store = setup
    events: list[Progress] = []
    fits = fit_missing(store, dataset, list(ALL), events.append)
    assert store.fitted == ["A", "B", "C"] and not any(f["reused"] for f in fits.values())
    collected = collect(dataset, store, list(ALL), ["continual"], [["A"], ["B"], ["C"]], events.append)
    # Each test image is embedded exactly once for the whole run.
    assert sorted(store._extractor.embedded) == sorted(str(p) for c in dataset.categories.values() for p in c.test)
    result = evaluate_continual(collected, events.append)

    auroc = np.array(result["matrix"]["image_auroc_hybrid"], dtype=float)
    expected = np.array([[1.0, np.nan, np.nan], [0.5, 1.0, np.nan], [0.5, 1.0, 1.0]])
    np.testing.assert_allclose(auroc, expected)
    assert result["forgetting"]["image_auroc_hybrid"] == pytest.approx(0.25)  # ((1 - .5) + 0) / 2
    assert result["forgetting"]["image_auroc_hybrid"] == pytest.approx(forgetting_measure(auroc))
    routing = np.array(result["matrix"]["routing_accuracy"], dtype=float)
    np.testing.assert_allclose(routing[:, 0], [1.0, 0.75, 0.75])
    assert result["forgetting"]["routing_accuracy"] == pytest.approx(0.125)
    assert result["steps"][1]["routing_accuracy"] == pytest.approx(6 / 7)
    assert result["final"]["mean"]["image_auroc_hybrid"] == pytest.approx((0.5 + 1.0 + 1.0) / 3)
    assert result["columns"] == ["A", "B", "C"]
    stages = {e.stage for e in events}
    assert {"fit", "test", "metrics"} <= stages


def test_muad_routing_and_confusion(setup: tuple[Dataset, FakeStore]) -> None:
    dataset, store = setup
    fit_missing(store, dataset, list(ALL))
    collected = collect(dataset, store, list(ALL), ["muad", "separate"])
    muad = evaluate_muad(collected)
    routing = muad["routing"]
    assert routing["confusion"]["labels"] == ["A", "B", "C"]
    assert routing["confusion"]["matrix"] == [[3, 1, 0], [0, 3, 0], [0, 0, 3]]
    assert routing["accuracy"] == pytest.approx(9 / 10)
    assert routing["mean_accuracy"] == pytest.approx((0.75 + 1 + 1) / 3)
    assert muad["per_category"]["A"]["image_auroc_hybrid"] == pytest.approx(0.5)
    assert muad["per_category"]["C"]["image_auroc_hybrid"] == pytest.approx(1.0)
    # every image's smallest route score is at most 0.2: unknown score <= 0.4, none unknown.
    assert routing["unknown_rate"] == 0.0
    separate = evaluate_separate(collected)
    assert separate["per_category"]["A"]["image_auroc_hybrid"] == pytest.approx(1.0)
    assert math.isnan(separate["per_category"]["A"]["routing_accuracy"])
    assert separate["mean"]["image_auroc_hybrid"] == pytest.approx(1.0)


def test_threshold_rates_and_crossover(setup: tuple[Dataset, FakeStore]) -> None:
    dataset, store = setup
    fit_missing(store, dataset, list(ALL))
    collected = collect(dataset, store, list(ALL), ["separate"])
    per = evaluate_separate(collected, pixel=False)["per_category"]
    # Threshold 0.5: A's goods (0.1, 0.2) accepted, anomalies (0.8, 0.9) rejected.
    assert per["A"]["frr_hybrid"] == 0.0 and per["A"]["tpr_hybrid"] == 1.0
    # C: good 0.3 accepted; anomalies 0.6 rejected, 0.4 accepted.
    assert per["C"]["tpr_base"] == pytest.approx(0.5)
    assert math.isnan(per["A"]["pixel_auroc"])  # no masks
    labels = np.array([0, 0, 1, 1])
    counts = crossover_counts(labels, np.array([0.6, 0.1, 0.2, 0.9]), np.array([0.4, 0.7, 0.8, 0.3]), 0.5, 0.5)
    assert counts == {"fp_fixed": 1, "fn_recovered": 1, "fp_introduced": 1, "fn_introduced": 1}


def test_fitting_is_reused(setup: tuple[Dataset, FakeStore]) -> None:
    dataset, store = setup
    store.add("A", [])
    store.fitted.clear()
    fits = fit_missing(store, dataset, ["A", "B"])
    assert store.fitted == ["B"]
    assert fits["A"]["reused"] and not fits["B"]["reused"]
    fit_missing(store, dataset, ["A"], refit=True)
    assert store.fitted == ["B", "A"]


def test_grouped_steps_and_forgetting() -> None:
    # Steps [A, B] then [C]: only A and B count; C (added last) is left out.
    matrix = np.array([[0.9, 0.8, np.nan], [0.7, 0.8, 0.5]])
    assert forgetting(matrix, [0, 0, 1]) == pytest.approx((0.2 + 0.0) / 2)
    single = np.array([[1.0, np.nan, np.nan], [0.9, 1.0, np.nan], [0.8, 0.7, 1.0]])
    assert forgetting(single, [0, 1, 2]) == pytest.approx(forgetting_measure(single))
    assert math.isnan(forgetting(np.array([[1.0]]), [0]))


def test_continual_with_grouped_order(setup: tuple[Dataset, FakeStore]) -> None:
    dataset, store = setup
    steps = normalize_order([["A", "B"], "C"], list(ALL))
    assert steps == [["A", "B"], ["C"]]
    fit_missing(store, dataset, list(ALL))
    result = evaluate_continual(collect(dataset, store, list(ALL), ["continual"], steps))
    auroc = np.array(result["matrix"]["image_auroc_hybrid"], dtype=float)
    np.testing.assert_allclose(auroc, [[0.5, 1.0, np.nan], [0.5, 1.0, 1.0]])
    assert result["forgetting"]["image_auroc_hybrid"] == pytest.approx(0.0)


def test_order_validation() -> None:
    assert normalize_order(None, ["b", "a"]) == [["a"], ["b"]]
    with pytest.raises(ValueError, match="repeats a"):
        normalize_order(["a", ["a"]], ["a"])
    with pytest.raises(ValueError, match="not in the dataset: z"):
        normalize_order(["z"], ["a"])
    with pytest.raises(ValueError, match="empty step"):
        normalize_order([[]], ["a"])


def test_unknown_protocol_rejected(setup: tuple[Dataset, FakeStore]) -> None:
    dataset, store = setup
    with pytest.raises(ValueError, match="unknown protocols: oracle"):
        collect(dataset, store, list(ALL), ["oracle"])


def test_mean_skips_nan() -> None:
    per = {"a": {"x": 1.0, "y": float("nan")}, "b": {"x": 0.0, "y": 0.5}}
    assert mean_metrics(per) == {"x": 0.5, "y": 0.5}


def test_map_cache_spills_to_disk(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    arrays = {("c", "m", i): rng.random((5, 5)).astype(np.float32) for i in range(4)}
    with MapCache(memory_bytes=2 * 5 * 5 * 4, directory=tmp_path) as cache:
        for key, value in arrays.items():
            cache.put(key, value)
        assert len(cache) == 4 and cache.spilled == 2
        for key, value in arrays.items():
            np.testing.assert_array_equal(cache.get(key), value)
        assert list(tmp_path.iterdir())
    assert not list(tmp_path.iterdir())
