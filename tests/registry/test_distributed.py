"""Ray paths of :mod:`registry.distributed` on a local Ray instance (2 CPUs) started by this module.

Bit-identity needs the same number of torch threads on both sides: Ray tasks here run with one
thread each, so the local reference computations run with one thread too (``one_thread``).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
import typer
from typer.testing import CliRunner

from evaluation.synthetic import make_category, write_mvtec_layout
from registry import Registry
from registry.errors import RegistryError
from structcore.progress import Progress

ray = pytest.importorskip("ray")

from cli.common import InputError  # noqa: E402
from cli.distributed import discover_categories, register  # noqa: E402
from registry.distributed import (  # noqa: E402
    FAULTS_ENV,
    INSTALL_HINT,
    distributed_infer,
    fit_categories,
    import_ray,
    plan_shards,
)

KINDS = (("carpet", 1), ("pill", 2), ("screw", 3))
PARAMS = {"coreset_ratio": 0.1}


@contextmanager
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def faults(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("faults")


@pytest.fixture(scope="module")
def ray_local(faults: Path) -> Iterator[None]:
    previous = os.environ.get(FAULTS_ENV)
    os.environ[FAULTS_ENV] = str(faults)  # set before ray.init: the workers inherit it
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=200 * 2**20, logging_level=logging.WARNING)
    try:
        yield
    finally:
        ray.shutdown()
        if previous is None:
            os.environ.pop(FAULTS_ENV, None)
        else:
            os.environ[FAULTS_ENV] = previous


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    for kind, seed in KINDS:
        write_mvtec_layout(make_category(kind, n_train=8, n_test_good=2, n_test_bad=2, seed=seed, size=96), root, kind)
    return root


@pytest.fixture(scope="module")
def categories(dataset: Path) -> dict[str, list[Path]]:
    return {kind: sorted((dataset / kind / "train" / "good").glob("*.png")) for kind, _ in KINDS}


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("template") / "registry"
    Registry.init(root, resize=128, crop=128).close()
    return root


def fresh(template: Path, where: Path) -> Path:
    target = where / "registry"
    shutil.copytree(template, target)
    return target


@pytest.fixture(scope="module")
def sequential(template: Path, categories: dict[str, list[Path]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference: the same categories fitted in this process, one after another."""
    root = fresh(template, tmp_path_factory.mktemp("sequential"))
    with one_thread():
        report = fit_categories(root, categories, PARAMS, None)
    assert report.ok and report.mode == "in-process"
    assert [r.attempts for r in report.categories] == [1, 1, 1]
    return root


def eval_images(dataset: Path) -> list[Path]:
    return sorted(dataset.glob("*/test/*/*.png"))


def assert_same_categories(left: Path, right: Path, names: list[str]) -> None:
    with Registry.open(left, read_only=True) as a, Registry.open(right, read_only=True) as b:
        for name in names:
            x, y = a.load_category(name), b.load_category(name)
            for array, value in x.to_arrays().items():
                assert np.array_equal(value, y.to_arrays()[array]), (name, array)
                assert value.dtype == y.to_arrays()[array].dtype
            mx, my = x.to_metadata(), y.to_metadata()
            mx.pop("fit_seconds"), my.pop("fit_seconds")
            assert mx == my, name


# ---------------------------------------------------------------------------------- planning
def test_shards_are_aligned_to_batches() -> None:
    assert plan_shards(20, 4, 5) == [(0, 8), (8, 16), (16, 20)]
    assert plan_shards(0, 8, 64) == []
    for start, stop in plan_shards(1001, 8, 60):
        assert start % 8 == 0 and stop - start <= 64
    with pytest.raises(ValueError, match="positive"):
        plan_shards(10, 0, 4)


def test_missing_ray_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(RegistryError, match=r"pip install 'structcore-registry\[ray\]'"):
        import_ray()
    assert "structcore-registry[ray]" in INSTALL_HINT


def test_discover_categories(dataset: Path, tmp_path: Path) -> None:
    found, skipped = discover_categories(dataset)
    assert list(found) == ["carpet", "pill", "screw"] and not skipped
    assert all(len(paths) == 8 for paths in found.values())
    with pytest.raises(InputError, match="is one category"):
        discover_categories(dataset / "pill")
    (tmp_path / "bad name").mkdir()
    shutil.copy(found["pill"][0], tmp_path / "bad name" / "a.png")
    with pytest.raises(InputError, match="not valid category names"):
        discover_categories(tmp_path)


# ---------------------------------------------------------------------------------- fitting
def test_parallel_fit_is_bit_identical_to_sequential(
    ray_local: None, sequential: Path, template: Path, categories: dict[str, list[Path]], dataset: Path, tmp_path: Path
) -> None:
    root = fresh(template, tmp_path)
    events: list[Progress] = []
    report = fit_categories(root, categories, PARAMS, "auto", on_event=events.append)
    assert report.ok, report.to_dict()
    assert [r.version for r in report.categories] == [1, 1, 1]
    assert [r.attempts for r in report.categories] == [1, 1, 1]
    assert {e.stage for e in events} == {"started", "ok"}
    assert events[-1].done == 3 and events[-1].images_done == 24 and events[-1].images_total == 24
    assert all(e.category in categories for e in events) and not [e for e in events if e.stage == "failed"]
    assert_same_categories(sequential, root, list(categories))
    images = eval_images(dataset)
    with one_thread(), Registry.open(sequential) as a, Registry.open(root) as b:
        assert a.predict(images, batch_size=4) == b.predict(images, batch_size=4)
        assert b.verify().ok


def test_dead_workers_lose_only_their_category(
    ray_local: None,
    faults: Path,
    sequential: Path,
    template: Path,
    categories: dict[str, list[Path]],
    tmp_path: Path,
) -> None:
    """pill's worker dies once (retried), screw's on every attempt (failed), broken has a bad image."""
    broken = tmp_path / "broken"
    broken.mkdir()
    for i in range(3):
        shutil.copy(categories["pill"][i], broken / f"00{i}.png")
    (broken / "001.png").write_bytes(b"\x89PNG\r\n\x1a\nnot an image")
    (faults / "pill.crash").write_text("1")
    (faults / "screw.crash").write_text("5")
    root = fresh(template, tmp_path)
    events: list[Progress] = []
    jobs = {**categories, "broken": sorted(broken.glob("*.png"))}
    try:
        report = fit_categories(root, jobs, PARAMS, "auto", max_retries=1, on_event=events.append)
    finally:
        for plan in faults.glob("*.crash"):
            plan.unlink()
    assert report["carpet"].ok and report["carpet"].attempts == 1
    assert report["pill"].ok and report["pill"].attempts == 2 and report["pill"].version == 1
    assert not report["screw"].ok and report["screw"].attempts == 2
    assert "worker lost after 2 attempts" in str(report["screw"].error)
    assert not report["broken"].ok and report["broken"].attempts == 1  # an error of the fit is not retried
    assert "001.png" in str(report["broken"].error)
    assert [e.category for e in events if e.stage == "retry"] == ["pill", "screw"]
    assert events[-1].done == 4 and len({e.category for e in events if e.stage == "failed"}) == 2
    with Registry.open(root) as registry:
        assert registry.names() == ["carpet", "pill"]
        verified = registry.verify()
        assert verified.ok, verified.problems
    assert_same_categories(sequential, root, ["carpet", "pill"])


def test_cli_add_categories(ray_local: None, sequential: Path, template: Path, dataset: Path, tmp_path: Path) -> None:
    app = typer.Typer()

    @app.callback()
    def _group() -> None:
        """Test app."""

    register(app)
    runner = CliRunner()
    root = fresh(template, tmp_path)
    common = ["add-categories", "--train-root", str(dataset), "--root", str(root), "--coreset-ratio", "0.1", "--json"]
    result = runner.invoke(app, [*common, "--ray", "auto"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["ok"] and report["mode"] == "ray:auto"
    assert [c["name"] for c in report["categories"]] == ["carpet", "pill", "screw"]
    with one_thread():
        result = runner.invoke(app, common)  # in-process: adds version 2 of each
    assert result.exit_code == 0, result.output
    assert [c["version"] for c in json.loads(result.stdout)["categories"]] == [2, 2, 2]
    assert_same_categories(sequential, root, ["carpet", "pill", "screw"])
    result = runner.invoke(app, ["add-categories", "--train-root", str(dataset / "pill"), "--root", str(root)])
    assert result.exit_code == 1 and "is one category" in result.output


# ---------------------------------------------------------------------------------- inference
def test_distributed_infer_equals_local(
    ray_local: None, faults: Path, sequential: Path, dataset: Path, tmp_path: Path
) -> None:
    """Routed scores equal Registry.predict's, also when the actor scoring shard 8 dies once."""
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\nnot an image")
    images = eval_images(dataset)
    sources = [*images[:5], broken, *images[5:], tmp_path / "missing.png", *reversed(images)]
    with one_thread(), Registry.open(sequential, read_only=True) as registry:
        expected = registry.predict(sources, batch_size=4)
    out = tmp_path / "out" / "records.jsonl"
    progress: list[tuple[int, int]] = []
    stats: dict[str, object] = {}
    (faults / "shard-8.crash").write_text("1")
    try:
        records = distributed_infer(
            sequential,
            sources,
            None,
            "auto",
            out,
            batch_size=4,
            shard_size=6,  # rounded up to 8: every shard starts at a multiple of the batch size
            progress=lambda event: progress.append((event.done, event.total)),
            stats=stats,
        )
    finally:
        (faults / "shard-8.crash").unlink()
    assert records == expected
    assert [json.loads(line) for line in out.read_text().splitlines()] == expected
    assert sum(r["error"] is not None for r in records) == 2
    assert progress[-1] == (len(sources), len(sources))
    assert [done for done, _ in progress] == sorted(done for done, _ in progress)
    assert stats["shards"] == 4 and isinstance(stats["retries"], int) and stats["retries"] >= 1
    workers = stats["workers"]
    assert isinstance(workers, list) and 1 <= len(workers) <= 2
    for worker in workers:  # each model crossed to each worker at most once
        assert len(worker["fetched"]) == len(set(worker["fetched"]))


def test_distributed_infer_one_category(ray_local: None, sequential: Path, dataset: Path, tmp_path: Path) -> None:
    images = eval_images(dataset)
    with one_thread(), Registry.open(sequential, read_only=True) as registry:
        expected = registry.predict(images, "pill", batch_size=8)
    stats: dict[str, object] = {}
    records = distributed_infer(
        sequential, images, "pill", "auto", None, batch_size=8, shard_size=8, workers=1, stats=stats
    )
    assert records == expected
    workers = stats["workers"]
    assert isinstance(workers, list) and len(workers) == 1
    assert workers[0]["shards"] == 2 and workers[0]["fetched"] == ["pill"]  # fetched once, used for both shards
    with pytest.raises(ValueError, match=r"\.jsonl"):
        distributed_infer(sequential, images, None, "auto", tmp_path / "out.csv")


def test_cli_infer_ray_equals_local_infer(ray_local: None, sequential: Path, dataset: Path) -> None:
    """`registry infer --ray` runs distributed_infer: the same records, in input order, as local `infer --json`."""
    from typer.testing import CliRunner

    from cli.main import app

    images = [str(path) for path in eval_images(dataset)[:6]]
    runner = CliRunner()
    with one_thread():  # the Ray actors score with one torch thread: bit-identical only at the same count
        local = runner.invoke(app, ["infer", *images, "--root", str(sequential), "--json", "--batch-size", "4"])
    assert local.exit_code == 0, local.output
    on_ray = runner.invoke(
        app, ["infer", *images, "--root", str(sequential), "--json", "--batch-size", "4", "--ray", "auto"]
    )
    assert on_ray.exit_code == 0, on_ray.output
    expected = json.loads(local.stdout)
    assert [record["path"] for record in expected] == images
    assert json.loads(on_ray.stdout) == expected
    refused = runner.invoke(app, ["infer", *images, "--root", str(sequential), "--ray", "auto", "--maps", "maps"])
    assert refused.exit_code != 0 and "--maps is not available with --ray" in refused.output
