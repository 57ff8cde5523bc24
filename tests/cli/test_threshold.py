"""`registry threshold`: operating points as new versions sharing their parent's arrays (real SQLite,
real zarr, the embedded backbone on small synthetic images), their lifecycle, and bad input."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from cli.main import app
from registry import Registry
from structcore.thresholds import choose_threshold
from tests.support_registry import clone, db_rows, make_base, tree_hashes, write_data

runner = CliRunner()
Data = dict[str, tuple[list[Path], list[Path]]]


def invoke(*args: str):  # type: ignore[no-untyped-def]
    return runner.invoke(app, list(args))


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Data:
    return write_data(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory, data: Data) -> Path:
    return make_base(tmp_path_factory.mktemp("base") / "registry", data, ("pill", "grid"))


@pytest.fixture
def root(base: Path, tmp_path: Path) -> Path:
    return clone(base, tmp_path / "registry")


@pytest.fixture(scope="module")
def labelled(data: Data, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """pill's test images as a labelled folder: good/ and the defect folders (what write_data wrote)."""
    test_dir = data["pill"][1][0].parents[1]
    assert (test_dir / "good").is_dir() and any(p.name != "good" for p in test_dir.iterdir())
    return test_dir


def threshold_json(root: Path, *args: str) -> dict[str, Any]:
    result = invoke("threshold", *args, "--root", str(root), "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_frr_writes_a_new_version_that_shares_the_arrays(root: Path, data: Data) -> None:
    with Registry.open(root, read_only=True) as registry:
        parent = registry.version_info("pill")
        train = registry.train_scores("pill")
    result = threshold_json(root, "pill", "--frr", "0.2")
    expected = choose_threshold(train, "robust-conformal", 0.2).value
    assert result["version"] == 2 and result["parent_version"] == 1
    assert result["threshold"] == pytest.approx(expected)
    assert result["rule"]["rule"] == "robust-conformal" and result["rule"]["frr"] == 0.2
    assert result["rule"]["source"] == "registry threshold" and result["rule"]["parent_version"] == 1
    assert result["seconds"] < 5.0  # the work itself; docs/calibration.md gives the idle figure
    rows = db_rows(root, "pill")["versions"]
    assert rows[1]["arrays_path"] == parent.store_path and rows[0]["arrays_path"] is None
    child_store = root / rows[1]["store_path"]
    assert child_store != root / parent.store_path
    assert sorted(p.name for p in child_store.iterdir()) == ["zarr.json"]  # attributes only: no array copied
    with Registry.open(root) as registry:
        info = registry.version_info("pill")
        assert info.is_current and info.version == 2 and info.thresholds["hybrid"] == pytest.approx(expected)
        assert info.thresholds["base"] == parent.thresholds["base"]
        record = registry.predict([data["pill"][1][0]], "pill")[0]
        assert record["threshold"] == pytest.approx(expected)
        assert registry.verify().ok
    show = invoke("show", "pill", "--root", str(root))
    assert show.exit_code == 0 and "robust-conformal 20% FRR" in show.output.replace("\n", " ")
    rolled = invoke("set-current", "pill", "1", "--root", str(root))
    assert rolled.exit_code == 0, rolled.output
    with Registry.open(root, read_only=True) as registry:
        assert registry.version_info("pill").thresholds == parent.thresholds


def test_value_and_a_chain_of_thresholds_share_the_first_store(root: Path, data: Data) -> None:
    first = threshold_json(root, "pill", "--value", "0.5")
    second = threshold_json(root, "pill", "--value", "0.75")
    assert (first["version"], second["version"], second["parent_version"]) == (2, 3, 2)
    assert first["rule"]["rule"] == "value" and second["previous_threshold"] == 0.5
    rows = db_rows(root, "pill")["versions"]
    assert rows[1]["arrays_path"] == rows[2]["arrays_path"] == rows[0]["store_path"]
    with Registry.open(root) as registry:
        assert registry.predict([data["pill"][1][0]], "pill")[0]["threshold"] == 0.75
    text = invoke("threshold", "pill", "--value", "0.9", "--root", str(root))
    assert text.exit_code == 0 and "0.7500 -> 0.9000" in text.output and "set-current pill 3" in text.output


def test_from_labelled_maximises_f1_or_meets_the_frr(root: Path, labelled: Path) -> None:
    result = threshold_json(root, "pill", "--from-labelled", str(labelled))
    measured = result["labelled"]
    assert result["rule"]["rule"] == "labelled-f1"
    assert measured["n_good"] == 2 and measured["n_defective"] == 2
    assert 0.0 <= measured["frr_ci"][0] <= measured["frr"] <= measured["frr_ci"][1] <= 1.0
    assert 0.0 <= measured["recall_ci"][0] <= measured["recall"] <= measured["recall_ci"][1] <= 1.0
    with Registry.open(root, read_only=True) as registry:
        records = registry.predict(sorted(labelled.rglob("*.png")), "pill")
    good = np.array([r["score_hybrid"] for r in records if Path(r["path"]).parent.name == "good"])
    assert measured["frr"] == float((good > result["threshold"]).mean())
    text = invoke("threshold", "pill", "--from-labelled", str(labelled), "--frr", "0.5", "--root", str(root))
    assert text.exit_code == 0, text.output
    assert "labelled: FRR" in text.output and "95% CI" in text.output and "recall" in text.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("pill", "--frr", "0"), "--frr must lie in (0, 0.5]"),
        (("pill", "--frr", "0.6"), "--frr must lie in (0, 0.5]"),
        (("pill", "--frr", "-0.1"), "--frr must lie in (0, 0.5]"),
        (("pill",), "give one of --frr, --value or --from-labelled"),
        (("pill", "--value", "1", "--frr", "0.1"), "give one of"),
        (("nope", "--frr", "0.01"), "unknown category 'nope'"),
        (("pill", "--version", "9", "--frr", "0.01"), "version 9"),
        (("pill", "--frr", "0.01", "--rule", "quantile"), "--rule must be one of"),
    ],
)
def test_bad_input_is_one_line_exit_1_and_changes_nothing(root: Path, args: tuple[str, ...], message: str) -> None:
    before = tree_hashes(root)
    result = invoke("threshold", *args, "--root", str(root))
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and message in result.output.replace("\n", " ")
    assert tree_hashes(root) == before


def test_labelled_folders_without_good_or_defect_images_are_refused(root: Path, labelled: Path, tmp_path: Path) -> None:
    no_good = tmp_path / "no_good"
    (no_good / "crack").mkdir(parents=True)
    for path in (labelled / next(p.name for p in labelled.iterdir() if p.name != "good")).glob("*.png"):
        (no_good / "crack" / path.name).write_bytes(path.read_bytes())
    only_good = tmp_path / "only_good"
    (only_good / "good").mkdir(parents=True)
    for path in (labelled / "good").glob("*.png"):
        (only_good / "good" / path.name).write_bytes(path.read_bytes())
    before = tree_hashes(root)
    for folder, message in ((no_good, "no good images"), (only_good, "no defective images")):
        result = invoke("threshold", "pill", "--from-labelled", str(folder), "--root", str(root))
        assert result.exit_code == 1 and message in result.output, result.output
        assert len([line for line in result.output.splitlines() if line.strip()]) == 1
    assert tree_hashes(root) == before
    # good images alone are enough for a stated FRR
    assert threshold_json(root, "pill", "--from-labelled", str(only_good), "--frr", "0.5")["labelled"]["recall"] is None


def test_a_shared_store_lives_while_any_version_uses_it(root: Path, data: Data, tmp_path: Path) -> None:
    threshold_json(root, "pill", "--value", "0.6")
    parent_store = db_rows(root, "pill")["versions"][0]["store_path"]
    with Registry.open(root) as registry:
        registry.remove("pill", 1)  # the parent goes; its arrays stay for version 2
        assert (root / parent_store / "zarr.json").is_file()
        report = registry.verify()
        assert report.ok, report.problems
        assert registry.gc().removed == []
        assert registry.predict([data["pill"][1][0]], "pill")[0]["threshold"] == 0.6
        bundle = registry.export(["pill"], tmp_path / "pill.h5")  # the bundle carries the arrays
        registry.remove("pill", 2)  # the last user: the shared store goes with it
        assert not (root / parent_store).exists()
        assert registry.verify().ok
    with Registry.open(clone(root, tmp_path / "other")) as other:
        (imported,) = other.import_(bundle)
        assert imported.arrays_path is None and imported.thresholds["hybrid"] == 0.6
        assert imported.threshold_rule["rule"] == "value"
        assert other.predict([data["pill"][1][0]], "pill")[0]["threshold"] == 0.6


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def served(root: Path) -> Iterator[str]:
    uvicorn = pytest.importorskip("uvicorn")
    from server import ServeSettings
    from server.app import create_app

    settings = ServeSettings(root=root, port=free_port(), poll_seconds=0.3, max_wait_ms=10.0)
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=settings.port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 300
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the test server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{settings.port}"
    server.should_exit = True
    thread.join(60)


def test_the_server_applies_a_new_threshold_within_its_reload_interval(root: Path, served: str, data: Data) -> None:
    httpx = pytest.importorskip("httpx")
    image = data["pill"][1][0]
    with httpx.Client(base_url=served, timeout=120) as http:

        def post() -> dict[str, Any]:
            files = [("image", (image.name, image.read_bytes(), "image/png"))]
            return dict(http.post("/v1/infer", params={"category": "pill"}, files=files).json()["records"][0])

        assert post()["version"] == 1
        threshold_json(root, "pill", "--value", "0.123")
        started = time.monotonic()
        while (record := post())["version"] != 2:
            assert time.monotonic() - started < 10, "the server did not pick up the new version"
            time.sleep(0.1)
        assert record["threshold"] == 0.123 and record["anomalous"] == (record["score_hybrid"] > 0.123)
        listed = next(c for c in http.get("/v1/categories").json()["categories"] if c["name"] == "pill")
        assert listed["current_version"] == 2 and listed["thresholds"]["hybrid"] == 0.123
        assert listed["threshold_rule"] == "value (registry threshold, from v1)"
        assert "threshold rule" in http.get("/").text


def test_versions_fitted_before_rules_keep_their_thresholds_through_the_upgrade(
    base: Path, data: Data, tmp_path: Path
) -> None:
    """A version stored as before revision 0005 (no rule recorded, no arrays_path) keeps its 99.5% quantile."""
    from alembic import command

    from registry.db import alembic_config
    from structcore.thresholds import LEGACY_RULE
    from tests.support_registry import small_model

    root = clone(base, tmp_path / "legacy")
    with Registry.open(root) as registry:
        model = small_model()
        model.threshold_rule = "quantile"
        fitted = registry.extractor()
        from structcore.model import embed_images

        model.fit(embed_images(fitted, data["grid"][0]), fitted.grid_shape(), fitted.geometry.crop)
        model.calibrator_.threshold_rule_ = dict(LEGACY_RULE)  # stored exactly as an old version
        info = registry.add_fitted("legacy", model, data["grid"][0])
        assert "threshold_rule" not in info.calibration
        legacy_threshold = info.thresholds["hybrid"]
        assert legacy_threshold == pytest.approx(np.quantile(model.calibration_scores_["hybrid"], 0.995))
        before = registry.predict([data["grid"][1][0]], "legacy")[0]
    command.downgrade(alembic_config(root / "registry.sqlite"), "0004")
    with Registry.open(root) as registry:  # upgrades to 0005
        info = registry.version_info("legacy")
        assert info.arrays_path is None and info.thresholds["hybrid"] == legacy_threshold
        assert info.threshold_summary == "quantile 99.5% (fit)"
        assert registry.predict([data["grid"][1][0]], "legacy")[0] == before
        assert registry.verify().ok
    moved = threshold_json(root, "legacy", "--frr", "0.1")
    assert moved["previous_threshold"] == legacy_threshold and moved["version"] == 2
