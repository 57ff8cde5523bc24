"""The Detector: a version-pinned snapshot that scores images; every record names its version and threshold."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from registry import Detector, Registry, RegistryError
from registry.detector import ImageScore, PredictionRecord
from structcore.preprocess import load_image
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


# ------------------------------------------------------------------ routed and named scoring (was registry.inference)
SCORES = ("route_score", "unknown_score", "score_base", "score_struct", "score_hybrid")


@pytest.fixture(scope="module")
def two_kinds(tmp_path_factory: pytest.TempPathFactory, data: Data) -> Registry:
    root = make_base(tmp_path_factory.mktemp("two-kinds") / "registry", data, kinds=("pill", "grid"))
    with Registry.open(root, read_only=True) as opened:
        yield opened


def _two_kinds(data: Data) -> list[Path]:
    return [*data["pill"][1], *data["grid"][1]]


def test_inference_routed_records_name_category_scores_and_decision(two_kinds: Registry, data: Data) -> None:
    paths = _two_kinds(data)
    progress: list[tuple[int, int]] = []
    records = two_kinds.detector().predict(
        paths, batch_size=3, progress=lambda event: progress.append((event.done, event.total))
    )
    assert [r["path"] for r in records] == [str(p) for p in paths]
    assert [r["category"] for r in records] == ["pill"] * len(data["pill"][1]) + ["grid"] * len(data["grid"][1])
    assert progress == [(3, 8), (6, 8), (8, 8)]
    for record in records:
        assert set(record) == set(PredictionRecord.__annotations__) and record["error"] is None
        assert record["threshold"] == two_kinds.version_info(record["category"]).thresholds["hybrid"]
        assert record["anomalous"] == (record["score_hybrid"] > record["threshold"])
        assert record["unknown"] == (record["unknown_score"] > 1)
        assert all(np.isfinite(record[key]) for key in SCORES)
        assert record["score_hybrid"] >= record["score_base"]  # lambda * D_struct is never negative


def test_inference_in_memory_images_score_like_their_files(two_kinds: Registry, data: Data) -> None:
    paths = data["pill"][1][:2]
    from_files = two_kinds.detector().predict(paths)
    in_memory = two_kinds.detector().predict([load_image(p) for p in paths])
    assert [r["path"] for r in in_memory] == ["<in-memory image 0>", "<in-memory image 1>"]
    for ours, theirs in zip(in_memory, from_files, strict=True):
        assert {k: ours[k] for k in SCORES} == {k: theirs[k] for k in SCORES}


def test_inference_scores_do_not_depend_on_the_batch(two_kinds: Registry, data: Data) -> None:
    paths = [*data["pill"][1][:2], *data["grid"][1][:2]]
    together, alone = (
        two_kinds.detector().predict(paths, batch_size=8),
        two_kinds.detector().predict(paths, batch_size=1),
    )
    for ours, theirs in zip(together, alone, strict=True):
        assert ours["category"] == theirs["category"]
        for key in SCORES:
            assert ours[key] == pytest.approx(theirs[key], rel=1e-5, abs=1e-7), key


def test_inference_a_named_category_scores_every_image_against_it(two_kinds: Registry, data: Data) -> None:
    paths = data["pill"][1]
    forced = two_kinds.detector().predict(paths, category="grid")
    routed = two_kinds.detector().predict(paths)
    assert {r["category"] for r in forced} == {"grid"}
    assert all(r["threshold"] == two_kinds.version_info("grid").thresholds["hybrid"] for r in forced)
    # pill images lie farther from grid's prototypes than from their own category's
    assert all(f["route_score"] > r["route_score"] for f, r in zip(forced, routed, strict=True))


def test_inference_an_empty_registry_says_how_to_add_a_category(tmp_path: Path, data: Data) -> None:
    with Registry.init(tmp_path / "empty", resize=128, crop=128) as empty:
        with pytest.raises(RegistryError, match="has no categories; add one with `registry add-category"):
            empty.detector().predict(data["pill"][1][:1])
        with pytest.raises(RegistryError, match="unknown category 'pill'"):
            empty.predict(data["pill"][1][:1], category="pill")  # Registry.predict pins detector(["pill"])
