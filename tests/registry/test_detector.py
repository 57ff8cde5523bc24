"""The Detector: a version-pinned snapshot that scores images; every record names its version and threshold."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from registry import Detector, Registry, RegistryError
from registry.detector import ImageScore, PredictionRecord
from structcore.progress import Progress
from tests.support_registry import clone, make_base, small_model, write_data

Data = dict[str, tuple[list[Path], list[Path]]]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Data:
    return write_data(tmp_path_factory.mktemp("detector-data"))


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory, data: Data) -> Path:
    return make_base(tmp_path_factory.mktemp("detector") / "reg", data, kinds=("pill", "grid", "tile"))


def _tests(data: Data) -> list[Path]:
    return [path for kind in ("pill", "grid", "tile") for path in data[kind][1]]


def test_records_carry_the_version_and_threshold_that_decided_them(base: Path, data: Data, tmp_path: Path) -> None:
    root = clone(base, tmp_path / "reg")
    with Registry.open(root) as registry:
        before = registry.detector()
        records = before.predict(_tests(data))
        for record in records:
            info = registry.version_info(str(record["category"]))
            assert record["version"] == info.version == 1
            assert record["threshold"] == info.thresholds["hybrid"]
            assert record["anomalous"] == (record["score_hybrid"] > record["threshold"])  # type: ignore[operator]
        registry.add_category("pill", data["pill"][0], small_model())  # version 2, other thresholds
        again = before.predict(_tests(data))
        assert again == records  # the old snapshot never sees the refit
        after = registry.detector().predict(_tests(data))
        pill = [r for r in after if r["category"] == "pill"]
        assert pill and {r["version"] for r in pill} == {2}
        assert {r["threshold"] for r in pill} == {registry.version_info("pill").thresholds["hybrid"]}
        assert {r["version"] for r in after if r["category"] != "pill"} == {1}
        assert registry.predict(_tests(data)) == after  # the thin convenience is a new Detector per call


def test_error_records_carry_no_version(base: Path, data: Data, tmp_path: Path) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    with Registry.open(base, read_only=True) as registry:
        records = registry.detector().predict([broken, data["pill"][1][0]])
    assert records[0]["error"] and records[0]["version"] is None and records[0]["threshold"] is None
    assert records[1]["error"] is None and records[1]["version"] == 1


def test_score_vectors_is_predict_after_the_backbone(base: Path, data: Data) -> None:
    with Registry.open(base, read_only=True) as registry:
        detector = registry.detector()
        paths = _tests(data)[:8]
        events: list[Progress] = []
        predicted = detector.predict(paths, progress=events.append)
        assert events == [Progress("predict", 8, 8)]
        vectors = detector.extractor.embed(detector.extractor.prepare(paths)).numpy()
        memo: dict[tuple[str, str], ImageScore] = {}
        scored = detector.score_vectors(vectors, [str(p) for p in paths], memo=memo)
        assert scored == predicted
        assert len(memo) == len(paths)
        again = detector.score_vectors(vectors, [str(p) for p in paths], memo=memo)  # read from the memo
        assert again == predicted


def test_restricted_to_routes_as_a_registry_holding_only_those(base: Path, data: Data, tmp_path: Path) -> None:
    root = clone(base, tmp_path / "reg")
    with Registry.open(root) as registry:
        detector = registry.detector()
        subset = detector.restricted_to(["pill", "tile"])
        assert isinstance(subset, Detector) and dict(subset.versions) == {"pill": 1, "tile": 1}
        paths = _tests(data)
        restricted = subset.predict(paths)
        registry.remove("grid")
        without = registry.detector().predict(paths)
    for a, b in zip(restricted, without, strict=True):
        assert (a["category"], a["unknown"], a["anomalous"]) == (b["category"], b["unknown"], b["anomalous"])
        np.testing.assert_allclose(
            [a["unknown_score"], a["score_hybrid"]], [b["unknown_score"], b["score_hybrid"]], rtol=1e-6
        )
    with pytest.raises(RegistryError, match="not in this detector"):
        detector.restricted_to(["nope"])


def test_a_pinned_version_removed_meanwhile_gives_error_records(base: Path, data: Data, tmp_path: Path) -> None:
    root = clone(base, tmp_path / "reg")
    with Registry.open(root) as registry:
        detector = registry.detector()  # nothing loaded yet
        registry.remove("tile")
        records: list[PredictionRecord] = detector.predict(data["tile"][1])  # routed to tile: its bank is gone
        with pytest.raises(RegistryError, match="removed"):
            detector.predict(data["tile"][1], "tile")  # a forced category fails at once
    assert all(r["error"] and "removed" in r["error"] and r["version"] is None for r in records)
