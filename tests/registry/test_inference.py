"""Routed inference (registry.inference.predict) over a real registry with two categories."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from registry import Registry, RegistryError
from registry.inference import PredictionRecord, predict
from structcore.preprocess import load_image
from tests.support_registry import make_base, write_data

Data = dict[str, tuple[list[Path], list[Path]]]
SCORES = ("route_score", "unknown_score", "score_base", "score_struct", "score_hybrid")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Data:
    return write_data(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory, data: Data) -> Registry:
    root = make_base(tmp_path_factory.mktemp("base") / "registry", data, kinds=("pill", "grid"))
    with Registry.open(root, read_only=True) as opened:
        yield opened


def _tests(data: Data) -> list[Path]:
    return [*data["pill"][1], *data["grid"][1]]


def test_routed_records_name_category_scores_and_decision(registry: Registry, data: Data) -> None:
    paths = _tests(data)
    progress: list[tuple[int, int]] = []
    records = predict(registry, paths, batch_size=3, on_batch=lambda done, total: progress.append((done, total)))
    assert [r["path"] for r in records] == [str(p) for p in paths]
    assert [r["category"] for r in records] == ["pill"] * len(data["pill"][1]) + ["grid"] * len(data["grid"][1])
    assert progress == [(3, 8), (6, 8), (8, 8)]
    for record in records:
        assert set(record) == set(PredictionRecord.__annotations__) and record["error"] is None
        assert record["threshold"] == registry.version_info(record["category"]).thresholds["hybrid"]
        assert record["anomalous"] == (record["score_hybrid"] > record["threshold"])
        assert record["unknown"] == (record["unknown_score"] > 1)
        assert all(np.isfinite(record[key]) for key in SCORES)
        assert record["score_hybrid"] >= record["score_base"]  # lambda * D_struct is never negative


def test_in_memory_images_score_like_their_files(registry: Registry, data: Data) -> None:
    paths = data["pill"][1][:2]
    from_files = predict(registry, paths)
    in_memory = predict(registry, [load_image(p) for p in paths])
    assert [r["path"] for r in in_memory] == ["<in-memory image 0>", "<in-memory image 1>"]
    for ours, theirs in zip(in_memory, from_files, strict=True):
        assert {k: ours[k] for k in SCORES} == {k: theirs[k] for k in SCORES}


def test_scores_do_not_depend_on_the_batch(registry: Registry, data: Data) -> None:
    paths = [*data["pill"][1][:2], *data["grid"][1][:2]]
    together, alone = predict(registry, paths, batch_size=8), predict(registry, paths, batch_size=1)
    for ours, theirs in zip(together, alone, strict=True):
        assert ours["category"] == theirs["category"]
        for key in SCORES:
            assert ours[key] == pytest.approx(theirs[key], rel=1e-5, abs=1e-7), key


def test_a_named_category_scores_every_image_against_it(registry: Registry, data: Data) -> None:
    paths = data["pill"][1]
    forced = predict(registry, paths, category="grid")
    routed = predict(registry, paths)
    assert {r["category"] for r in forced} == {"grid"}
    assert all(r["threshold"] == registry.version_info("grid").thresholds["hybrid"] for r in forced)
    # pill images lie farther from grid's prototypes than from their own category's
    assert all(f["route_score"] > r["route_score"] for f, r in zip(forced, routed, strict=True))


def test_an_empty_registry_says_how_to_add_a_category(tmp_path: Path, data: Data) -> None:
    with Registry.init(tmp_path / "empty", resize=128, crop=128) as empty:
        with pytest.raises(RegistryError, match="has no categories; add one with `registry add-category"):
            predict(empty, data["pill"][1][:1])
        with pytest.raises(RegistryError, match="unknown category 'pill'"):
            predict(empty, data["pill"][1][:1], category="pill")
