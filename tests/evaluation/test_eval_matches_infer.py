"""Issue 27: ``registry eval`` reports what ``registry infer`` decides, for every protocol and store.

A small registry (a bottle subset of the real MVTec AD, two synthetic kinds) is fitted with
``registry add-category``; ``registry eval`` runs every protocol on it (the registry store) and
again ``--in-memory`` (fitting the same settings in memory), and ``registry infer`` scores the
same test images. Every per-image score, threshold, ``anomalous``, ``unknown`` and
``unknown_score`` in eval's ``records.jsonl`` must be infer's (scores to float rounding: the
backbone sees other batch partners), and report.md's unknown line must be infer's count.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from cli.main import app
from evaluation.synthetic import make_category, write_mvtec_layout

runner = CliRunner()
KINDS = ("carpet", "pill")
PROTOCOLS = ("separate", "muad", "continual", "open-set")
SCORES = ("score_base", "score_struct", "score_hybrid", "threshold", "route_score", "unknown_score")


def invoke(*args: str) -> Any:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result


def _copy_bottle(source: Path, target: Path) -> None:
    """5 good train images, 2 good and 2 broken_large test images (with their masks)."""
    (target / "train" / "good").mkdir(parents=True)
    for path in sorted((source / "train" / "good").glob("*.png"))[:5]:
        shutil.copy(path, target / "train" / "good" / path.name)
    for defect in ("good", "broken_large"):
        (target / "test" / defect).mkdir(parents=True)
        for path in sorted((source / "test" / defect).glob("*.png"))[:2]:
            shutil.copy(path, target / "test" / defect / path.name)
            mask = source / "ground_truth" / defect / f"{path.stem}_mask.png"
            if mask.is_file():
                (target / "ground_truth" / defect).mkdir(parents=True, exist_ok=True)
                shutil.copy(mask, target / "ground_truth" / defect / mask.name)


@pytest.fixture(scope="module")
def world(mvtec_bottle: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    base = tmp_path_factory.mktemp("eval-infer")
    data = base / "data"
    _copy_bottle(mvtec_bottle, data / "bottle")
    for seed, kind in enumerate(KINDS):
        write_mvtec_layout(make_category(kind, 5, 2, 2, seed=seed, size=128), data, kind)
    root = base / "registry"
    invoke("init", "--root", str(root))  # the defaults: the in-memory store uses the same feature space
    names = ["bottle", *KINDS]
    for name in names:
        invoke("add-category", name, "--train", str(data / name / "train" / "good"), "--root", str(root))
    tests = sorted(str(p) for name in names for p in (data / name / "test").rglob("*.png"))
    infer = {r["path"]: r for r in json.loads(invoke("infer", *tests, "--root", str(root), "--json").stdout)}
    forced = {}
    for name in names:
        own = sorted(str(p) for p in (data / name / "test").rglob("*.png"))
        args = ("infer", *own, "--category", name, "--root", str(root), "--json")
        forced.update({r["path"]: r for r in json.loads(invoke(*args).stdout)})
    without_bottle = base / "without-bottle"
    shutil.copytree(root, without_bottle)
    invoke("remove", "bottle", "--root", str(without_bottle))
    left_out = {
        r["path"]: r for r in json.loads(invoke("infer", *tests, "--root", str(without_bottle), "--json").stdout)
    }
    evals = {}
    for store in ("registry", "memory"):
        out = base / f"eval-{store}"
        where = ("--in-memory",) if store == "memory" else ("--root", str(root))
        protocols = [arg for protocol in PROTOCOLS for arg in ("--protocol", protocol)]
        invoke("eval", str(data), *where, *protocols, "--dataset", "none", "--no-plots", "--out", str(out))
        evals[store] = out
    return {"names": names, "infer": infer, "forced": forced, "left_out": left_out, "evals": evals}


def _records(out: Path) -> dict[str, dict[str, dict[str, Any]]]:
    by_view: dict[str, dict[str, dict[str, Any]]] = {}
    for line in (out / "records.jsonl").read_text().splitlines():
        record = json.loads(line)
        by_view.setdefault(record["view"], {})[record["path"]] = record
    return by_view


def _same(eval_record: dict[str, Any], infer_record: dict[str, Any], fields: tuple[str, ...] = SCORES) -> None:
    assert infer_record["error"] is None
    for field in fields:
        assert eval_record[field] == pytest.approx(infer_record[field], rel=1e-4, abs=1e-6), field
    for field in ("category", "anomalous", "unknown"):
        assert eval_record[field] == infer_record[field], (field, eval_record["path"])


@pytest.mark.parametrize("store", ["registry", "memory"])
def test_every_protocol_reports_the_records_infer_gives(world: dict[str, Any], store: str) -> None:
    views = _records(world["evals"][store])
    infer, forced = world["infer"], world["forced"]
    last_step = max(int(view.split(":")[1]) for view in views if view.startswith("continual:"))
    for view in ("muad", f"continual:{last_step}"):  # every category registered: infer's routing
        assert set(views[view]) == set(infer)
        for path, record in views[view].items():
            _same(record, infer[path])
            if store == "registry":
                assert record["version"] == infer[path]["version"] == 1
    assert set(views["separate"]) == set(forced)
    for path, record in views["separate"].items():  # category given: infer --category
        _same(record, forced[path])
    left_out = world["left_out"]
    for path, record in views["open-set:bottle"].items():  # bottle left out: a registry without it
        assert record["unknown_score"] == pytest.approx(left_out[path]["unknown_score"], rel=1e-4)
        assert record["unknown"] == left_out[path]["unknown"]
    assert any(record["unknown"] for path, record in views["open-set:bottle"].items() if "/bottle/" in path)


@pytest.mark.parametrize("store", ["registry", "memory"])
def test_report_unknown_line_is_infers_count(world: dict[str, Any], store: str) -> None:
    report = (world["evals"][store] / "report.md").read_text()
    match = re.search(r"flagged unknown: ([0-9.]+) % of images", report)
    assert match is not None, report
    records = list(world["infer"].values())
    expected = 100.0 * sum(bool(r["unknown"]) for r in records) / len(records)
    assert float(match.group(1)) == pytest.approx(expected, abs=0.05)
    results = json.loads((world["evals"][store] / "results.json").read_text())
    muad = results["protocols"]["muad"]
    for name in world["names"]:
        own = [r for p, r in world["infer"].items() if f"/{name}/" in p]
        assert muad["per_category"][name]["unknown_rate"] == pytest.approx(
            sum(bool(r["unknown"]) for r in own) / len(own)
        )
        defective = [r for p, r in world["infer"].items() if f"/{name}/" in p and "/good/" not in p]
        assert muad["per_category"][name]["tpr_hybrid"] == pytest.approx(
            sum(bool(r["anomalous"]) for r in defective) / len(defective)
        )
