"""Concurrent writers and readers on one registry (issue 7).

Four `registry add-category` processes (three new categories and a refit of an existing one)
run while four processes call `registry infer` in a loop until the writers are done. Every
process succeeds, no "database is locked" reaches a user, and there are no torn reads: every
record was scored by one complete category version (its route score and its hybrid score are
those of the same version, computed again afterwards).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from registry import Registry
from structcore.progress import Progress
from tests.support_registry import clone
from tests.support_reliability import (
    CHILD_ENV,
    REGISTRY_SCRIPT,
    REPO,
    Data,
    embed,
    make_registry,
    small_model,
    write_data,
)

N_READERS = 4
TIMEOUT = 600

READER = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from cli.main import app

    root, stop, out, *images = sys.argv[1:]
    runs = []
    while True:
        last = Path(stop).exists()
        target = f"{out}.{len(runs)}.json"
        code = app(["infer", *images, "--root", root, "--json", "--out", target], standalone_mode=False)
        runs.append({"code": code or 0, "out": target})
        if last:
            break
    Path(out).write_text(json.dumps(runs))
    """
)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("concurrency")
    data: Data = write_data(folder / "images")
    base = make_registry(folder / "base", data, ("pill", "grid"))
    return {"folder": folder, "data": data, "base": base}


def test_four_writers_and_four_readers_at_once(world: dict[str, Any], tmp_path: Path) -> None:
    data: Data = world["data"]
    root = clone(world["base"], tmp_path / "registry")
    images = [paths[1][i] for paths in data.values() for i in (0, -1)]  # a good and a bad image per kind
    stop = tmp_path / "stop"
    writers = {
        name: subprocess.Popen(
            [str(REGISTRY_SCRIPT), "add-category", name, "--train", str(data[name][0][0].parent),
             "--root", str(root), "--coreset-ratio", "0.1", *extra],
            env=CHILD_ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for name, extra in (("tile", []), ("wood", []), ("carpet", []), ("pill", ["--seed", "7"]))
    }  # fmt: skip
    readers = [
        subprocess.Popen(
            [sys.executable, "-c", READER, str(root), str(stop), str(tmp_path / f"reader{i}"), *map(str, images)],
            cwd=REPO, env=CHILD_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        for i in range(N_READERS)
    ]  # fmt: skip
    started = time.monotonic()
    outputs = {name: process.communicate(timeout=TIMEOUT) for name, process in writers.items()}
    stop.touch()
    reader_errors = [process.communicate(timeout=TIMEOUT)[1] for process in readers]
    elapsed = time.monotonic() - started

    for name, (out, err) in outputs.items():
        assert writers[name].returncode == 0, err
        assert "locked" not in (out + err).lower() and "Traceback" not in err
    for process, err in zip(readers, reader_errors, strict=True):
        assert process.returncode == 0, err
        assert "locked" not in err.lower() and "Traceback" not in err

    with Registry.open(root) as registry:
        assert registry.verify().ok
        assert registry.names() == ["carpet", "grid", "pill", "tile", "wood"]
        assert [v.version for v in registry.show("pill").versions] == [1, 2]
        vectors = embed(registry, images)
        reference = {}  # (category, version) -> (route scores, hybrid scores) of every image
        for category in registry.categories():
            for version in category.versions:
                model = registry.load_category(category.name, version.version)
                reference[(category.name, version.version)] = (
                    model.route_score(vectors),
                    model.predict(vectors).scores.hybrid,
                )

    runs = 0
    seen: set[tuple[str, int]] = set()
    for i in range(N_READERS):
        for run in json.loads((tmp_path / f"reader{i}").read_text()):
            assert run["code"] == 0
            runs += 1
            records = json.loads(Path(run["out"]).read_text())
            assert [r["path"] for r in records] == [str(p) for p in images]
            for index, record in enumerate(records):
                assert record["error"] is None, record
                versions = [
                    key for key, (route, hybrid) in reference.items()
                    if key[0] == record["category"]
                    and np.isclose(record["route_score"], route[index], rtol=1e-4, atol=1e-6)
                    and np.isclose(record["score_hybrid"], hybrid[index], rtol=1e-4, atol=1e-6)
                ]  # fmt: skip
                assert versions, f"torn read: {record} matches no complete version of {record['category']}"
                seen.update(versions)
    print(f"\n4 writers + {N_READERS} readers ({runs} infer runs) in {elapsed:.1f} s; versions seen: {sorted(seen)}")
    assert runs >= 2 * N_READERS


def test_a_refit_during_inference_does_not_mix_versions(world: dict[str, Any], tmp_path: Path) -> None:
    """One call routes and scores with the versions it started with, whatever is committed meanwhile."""
    data: Data = world["data"]
    root = clone(world["base"], tmp_path / "registry")
    images = data["pill"][1]  # four images, two batches of two
    with Registry.open(root) as reader, Registry.open(root) as writer:
        seeds = iter((7, 11))

        def refit_after_first_batch(event: Progress) -> None:
            if event.done == 2:
                writer.add_category("pill", data["pill"][0], small_model(seed=next(seeds)))

        routed = reader.predict(images, batch_size=2)
        assert reader.predict(images, batch_size=2, progress=refit_after_first_batch) == routed
        assert reader.show("pill").current_version == 2
        named = reader.predict(images, "pill", batch_size=2)  # version 2 now
        assert [r["score_hybrid"] for r in named] != [r["score_hybrid"] for r in routed if r["category"] == "pill"]
        assert reader.predict(images, "pill", batch_size=2, progress=refit_after_first_batch) == named
        assert reader.show("pill").current_version == 3
        after = reader.predict(images, "pill", batch_size=2)  # the next call uses version 3
        assert [r["score_hybrid"] for r in after] != [r["score_hybrid"] for r in named]
