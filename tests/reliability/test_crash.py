"""SIGKILL at seeded random moments of add-category, remove, import and gc (issue 7).

One fitted registry and one bundle are prepared once. Each trial copies the registry, runs one
operation in a child process (forked from a server that has the registry imported, so a trial
costs the operation, not Python's start-up), kills it with SIGKILL a seeded random delay after
the child reports that it is ready, and then checks:

* ``verify()`` reports only leftovers that ``gc`` removes (temp files, orphan stores), and after
  ``verify(repair=True)`` the registry verifies clean with an empty ``tmp/``;
* the registry holds either the state before the operation or the state after it, never a
  mixture (an import is all or nothing, a removal of a whole category is all or nothing);
* every category version that exists scores a fixed image set exactly as before the kill
  (hybrid scores of preloaded patch vectors, ``CategoryModel.predict``), and a category that the
  killed operation committed scores exactly as the same operation run to completion.

The delays are drawn per operation from the duration of an uninterrupted run: half of them over
the whole operation, half over its write phase (where the interesting crash points are). A few
trials use the installed ``registry`` console script instead of the fork server.

The second half (formerly ``tests/test_registry_crash.py``) kills ``add_category`` at each of its
named checkpoints, and between a removal's row delete and its store removal, and runs two writers
at the same time; each scenario in its own Python process (``tests.support_registry.CHILD``), the
kill scenarios side by side, each on its own copy of a registry that holds category ``pill``.
"""

from __future__ import annotations

import collections
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from registry import Registry
from registry.checks import GC_KINDS
from tests import support_registry
from tests.support_registry import clone, db_rows, make_base, scores, start_child, tree_hashes
from tests.support_reliability import (
    CHILD_ENV,
    REGISTRY_SCRIPT,
    Data,
    ForkServer,
    Trial,
    embed,
    make_registry,
    small_model,
    version_scores,
    write_data,
)

SEED = 20240607
#: Trials per operation through the fork server (52 in all) and through the console script.
TRIALS = {"add": 16, "remove": 12, "import": 14, "gc": 10}
SCRIPT_TRIALS = ("add", "remove", "import", "gc")
#: The stage from which an operation's write phase starts (the delays of half the trials).
WRITE_STAGE = {"add": "write", "remove": None, "import": "store-partial", "gc": None}

Scores = dict[tuple[str, int], list[float]]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Images, the base registry (pill v1, wood v1+v2), a bundle (grid, tile) and references."""
    folder = tmp_path_factory.mktemp("crash")
    data: Data = write_data(folder / "images", ("pill", "wood", "grid", "tile"))
    base = make_registry(folder / "base", data, ("pill", "wood"))
    with Registry.open(base) as registry:  # a second version of wood, from fewer images
        registry.add_category("wood", data["wood"][0][:4], small_model(seed=7))
    source = make_registry(folder / "source", data, ("grid", "tile"))
    with Registry.open(source) as registry:
        bundle = registry.export(None, folder / "bundle.h5")
    # the bundle must be in the base's feature space: same seed, same backbone, same geometry
    with Registry.open(base, read_only=True) as registry:
        probe = sorted(p for kind in ("pill", "wood", "grid", "tile") for p in data[kind][1][:1])
        vectors = embed(registry, probe)
        before = version_scores(registry, vectors)
    return {"folder": folder, "data": data, "base": base, "bundle": bundle, "vectors": vectors, "before": before}


def _plant_leftovers(root: Path) -> None:
    """Give gc work: a half-written temp store, an orphan store and a stray file."""
    store = next((root / "stores" / "pill").iterdir())
    clone(store, root / "stores" / "pill" / "00000000-0000-4000-8000-000000000000.zarr")
    clone(store, root / "tmp" / "11111111-1111-4111-8111-111111111111.zarr")
    (root / "stores" / "stray.txt").write_text("not a store")


def _command(op: str, root: Path, world: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    if op == "add":
        return {"op": "add", "root": str(root), "name": "grid", "images": [str(p) for p in world["data"]["grid"][0]]}
    if op == "remove":
        version = None if rng.random() < 0.5 else 1
        return {"op": "remove", "root": str(root), "name": "wood", "version": version}
    if op == "import":
        return {"op": "import", "root": str(root), "bundle": str(world["bundle"])}
    _plant_leftovers(root)
    return {"op": "gc", "root": str(root)}


def _outcomes(op: str, command: dict[str, Any], world: dict[str, Any], after: dict[str, Scores]) -> list[Scores]:
    """The states the registry may be in after the operation: before, or after (fingerprints)."""
    before: Scores = world["before"]
    if op == "add":
        return [before, {**before, **after["add"]}]
    if op == "import":
        return [before, {**before, **after["import"]}]
    if op == "remove":
        removed = {k: v for k, v in before.items() if k[0] != "wood" or (command["version"] not in (None, k[1]))}
        return [before, removed]
    return [before]


def _check(root: Path, allowed: list[Scores], vectors: np.ndarray) -> tuple[bool, str]:
    """Check one killed registry; returns (whether leftovers were found, which state it is in)."""
    with Registry.open(root) as registry:
        report = registry.verify()
        assert all(p.kind in GC_KINDS for p in report.problems), [p.message for p in report.problems]
        leftovers = not report.ok
        if leftovers:
            repaired = registry.verify(repair=True)
            assert repaired.ok, [p.message for p in repaired.problems]
            assert registry.verify().ok
        assert list((root / "tmp").iterdir()) == []
        state = version_scores(registry, vectors)
        assert state in allowed, sorted(state)
        return leftovers, "before" if state == allowed[0] else "after"


def _delays(op: str, count: int, reference: Trial, rng: np.random.Generator) -> list[float]:
    assert reference.seconds is not None
    total = reference.seconds
    start = reference.marks.get(WRITE_STAGE[op] or "", 0.0)
    return [
        float(rng.uniform(0.0, total * 1.1)) if i % 2 == 0 else float(rng.uniform(start * 0.9, total * 1.05))
        for i in range(count)
    ]


def test_sigkill_at_random_points_leaves_a_consistent_registry(world: dict[str, Any]) -> None:
    rng = np.random.default_rng(SEED)
    folder: Path = world["folder"]
    server = ForkServer()
    stats: dict[str, collections.Counter[str]] = {op: collections.Counter() for op in TRIALS}
    after: dict[str, Scores] = {}
    started = time.monotonic()
    try:
        for op, count in TRIALS.items():
            # an uninterrupted run: its duration scales the delays, its result is the "after" state
            root = clone(world["base"], folder / f"{op}-reference")
            command = _command(op, root, world, rng)
            reference = server.run(command, kill_after=None)
            assert reference.code == 0 and reference.error is None, reference.error
            with Registry.open(root, read_only=True) as registry:
                final = version_scores(registry, world["vectors"])
                after[op] = {k: v for k, v in final.items() if k[0] in {"grid", "tile"}}
            for trial_number, delay in enumerate(_delays(op, count, reference, rng)):
                root = clone(world["base"], folder / f"{op}-{trial_number}")
                command = _command(op, root, world, rng)
                trial = server.run(command, kill_after=delay)
                assert trial.code in (0, -signal.SIGKILL), trial.error
                assert trial.error is None, trial.error
                leftovers, state = _check(root, _outcomes(op, command, world, after), world["vectors"])
                stats[op]["killed" if trial.code == -signal.SIGKILL else "finished"] += 1
                stats[op][f"state {state}"] += 1
                stats[op]["leftovers"] += leftovers
    finally:
        server.close()
    elapsed = time.monotonic() - started
    print(f"\n{sum(TRIALS.values())} SIGKILL trials in {elapsed:.1f} s: {dict(stats)}")
    killed = sum(s["killed"] for s in stats.values())
    assert killed >= sum(TRIALS.values()) // 2, stats  # most kills land inside the operation
    assert sum(s["leftovers"] for s in stats.values()) >= 1, stats  # some land inside a write


@pytest.mark.parametrize("op", SCRIPT_TRIALS)
def test_sigkill_of_the_console_script(op: str, world: dict[str, Any], tmp_path: Path) -> None:
    """The same through `registry ...` (killed 2.5-4 s after start, i.e. mostly inside the operation)."""
    rng = np.random.default_rng([SEED, SCRIPT_TRIALS.index(op)])
    root = clone(world["base"], tmp_path / "registry")
    command = _command(op, root, world, rng)
    arguments = {
        "add": ["add-category", "grid", "--train", str(world["data"]["grid"][0][0].parent), "--coreset-ratio", "0.1"],
        "remove": ["remove", "wood"] + ([] if command.get("version") is None else ["--version", "1"]),
        "import": ["import", str(world["bundle"])],
        "gc": ["gc"],
    }[op]
    process = subprocess.Popen(
        [str(REGISTRY_SCRIPT), *arguments, "--root", str(root)],
        env=CHILD_ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        process.wait(timeout=float(rng.uniform(2.5, 4.0)))
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGKILL)
    _out, err = process.communicate(timeout=120)
    assert process.returncode in (0, -signal.SIGKILL), err.decode()
    if op == "add":  # the CLI fits with the default prototypes: only "grid is absent or complete" holds
        with Registry.open(root) as registry:
            if not registry.verify().ok:
                assert registry.verify(repair=True).ok
            assert registry.verify().ok
            state = version_scores(registry, world["vectors"])
            assert {k: v for k, v in state.items() if k[0] != "grid"} == world["before"]
            assert set(registry.names()) in ({"pill", "wood"}, {"pill", "wood", "grid"})
        return
    imported = {}
    if op == "import":
        with Registry.init_from_bundle(tmp_path / "fresh", world["bundle"]) as fresh:
            fresh.import_(world["bundle"])
            imported = version_scores(fresh, world["vectors"])
    _check(root, _outcomes(op, command, world, {"import": imported, "add": {}}), world["vectors"])


# ------------------------------------------- SIGKILL at each checkpoint of a write; two writers
#: Checkpoints of ``add_category`` (``coreset`` is inside the fit, before anything is written).
ADD_STAGES = ("coreset", "store-partial", "tmp-written", "renamed", "in-transaction", "committed")
#: Stages after which the half-done write leaves something for gc to remove.
LEAVES_LEFTOVERS = {"store-partial", "tmp-written", "renamed", "in-transaction"}
CHILD_TIMEOUT = 240


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Data:
    return support_registry.write_data(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory, data: Data) -> Path:
    return make_base(tmp_path_factory.mktemp("base") / "registry", data, keep_patches=True)


def _finish(child: subprocess.Popen[bytes]) -> tuple[int, str]:
    try:
        _out, err = child.communicate(timeout=CHILD_TIMEOUT)
    except subprocess.TimeoutExpired:
        child.kill()
        _out, err = child.communicate()
    return child.returncode, err.decode(errors="replace")[-3000:]


@pytest.fixture(scope="module")
def killed(base: Path, data: Data, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, int, str]]:
    """Run every kill scenario at once: stage -> (registry copy, exit code, stderr)."""
    folder = tmp_path_factory.mktemp("killed")
    images = [str(p) for p in data["grid"][0]]
    children = {}
    for stage in ADD_STAGES:
        root = clone(base, folder / stage)
        children[stage] = (root, start_child({"root": str(root), "kill_at": stage, "add": ["grid"], "images": images}))
    root = clone(base, folder / "row-deleted")
    children["row-deleted"] = (root, start_child({"root": str(root), "kill_at": "row-deleted", "remove": "pill"}))
    return {stage: (root, *_finish(child)) for stage, (root, child) in children.items()}


@pytest.mark.parametrize("stage", ADD_STAGES)
def test_sigkill_during_add_leaves_old_or_new_state(
    stage: str, killed: dict[str, tuple[Path, int, str]], base: Path, data: Data
) -> None:
    root, code, err = killed[stage]
    assert code == -signal.SIGKILL, err
    with Registry.open(root) as registry:
        report = registry.verify()
        assert all(problem.removable for problem in report.problems), report.problems
        assert (not report.ok) == (stage in LEAVES_LEFTOVERS), report.problems
        assert registry.names() == (["grid", "pill"] if stage == "committed" else ["pill"])
        registry.gc()
        assert registry.verify().ok
        assert list((root / "tmp").iterdir()) == []
        # the earlier category is intact, byte for byte
        store = registry.version_info("pill").store_path
        assert tree_hashes(root / store) == tree_hashes(base / store)
        assert db_rows(root, "pill") == db_rows(base, "pill")
        if stage == "renamed":  # still fully usable: add the category for real and score
            registry.add_category("grid", data["grid"][0], support_registry.small_model())
            assert registry.verify().ok
            with Registry.open(base, read_only=True) as original:
                tests = data["pill"][1]
                assert scores(registry.predict(tests, "pill")) == scores(original.predict(tests, "pill"))


#: Checkpoints of ``registry update``: inside the computation, then the write's own.
UPDATE_STAGES = (
    "update-embedded",
    "coreset",
    "update-fitted",
    "store-partial",
    "tmp-written",
    "renamed",
    "in-transaction",
    "committed",
)


@pytest.fixture(scope="module")
def killed_updates(
    base: Path, data: Data, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, tuple[Path, int, str]]:
    """Kill ``registry update`` of pill (adding pill's test images) at each of its checkpoints."""
    folder = tmp_path_factory.mktemp("killed-updates")
    images = [str(p) for p in data["pill"][1]]
    children = {}
    for stage in UPDATE_STAGES:
        root = clone(base, folder / stage)
        children[stage] = (
            root,
            start_child({"root": str(root), "kill_at": stage, "update": ["pill"], "images": images}),
        )
    return {stage: (root, *_finish(child)) for stage, (root, child) in children.items()}


@pytest.mark.parametrize("stage", UPDATE_STAGES)
def test_sigkill_during_update_leaves_the_previous_version_current_and_intact(
    stage: str, killed_updates: dict[str, tuple[Path, int, str]], base: Path, data: Data
) -> None:
    root, code, err = killed_updates[stage]
    assert code == -signal.SIGKILL, err
    with Registry.open(root) as registry:
        report = registry.verify()
        assert all(problem.removable for problem in report.problems), report.problems
        assert (not report.ok) == (stage in LEAVES_LEFTOVERS), report.problems
        registry.gc()
        assert registry.verify().ok
        assert list((root / "tmp").iterdir()) == []
        # version 1 is intact, byte for byte, and current unless the update committed
        first = registry.version_info("pill", 1).store_path
        assert tree_hashes(root / first) == tree_hashes(base / first)
        assert registry.current_version("pill") == (2 if stage == "committed" else 1)
        if stage != "committed":
            assert db_rows(root, "pill") == db_rows(base, "pill")
            from registry.updates import update_category

            result = update_category(registry, "pill", data["pill"][1])  # and it still updates
            assert result.mode == "update" and registry.verify().ok


def test_sigkill_between_row_delete_and_store_removal(killed: dict[str, tuple[Path, int, str]]) -> None:
    root, code, err = killed["row-deleted"]
    assert code == -signal.SIGKILL, err
    with Registry.open(root) as registry:
        assert registry.names() == []
        report = registry.verify()
        assert [p.kind for p in report.problems] == ["orphan-store"]
        assert registry.gc().removed == [report.problems[0].path]
        assert registry.verify().ok


def test_two_processes_add_different_categories_at_the_same_time(base: Path, data: Data, tmp_path: Path) -> None:
    root = clone(base, tmp_path / "registry")
    go = tmp_path / "go"
    plans = {"first": ["grid", "wood"], "second": ["tile", "wood"]}  # and both refit "wood"
    children = []
    for label, names in plans.items():
        args = {
            "root": str(root),
            "add": names,
            "images": [str(p) for p in data[names[0]][0]],
            "go": str(go),
            "ready": str(tmp_path / label),
        }
        children.append(start_child(args))
    deadline = time.monotonic() + CHILD_TIMEOUT
    while not all((tmp_path / label).exists() for label in plans) and time.monotonic() < deadline:
        assert all(child.poll() is None for child in children), [_finish(c)[1] for c in children]
        time.sleep(0.05)
    go.touch()
    results = [_finish(child) for child in children]
    assert [code for code, _err in results] == [0, 0], [err for _code, err in results]
    with Registry.open(root) as registry:
        assert registry.names() == ["grid", "pill", "tile", "wood"]
        assert [v.version for v in registry.show("wood").versions] == [1, 2]
        assert registry.verify().ok
        store = registry.version_info("pill").store_path
        assert tree_hashes(root / store) == tree_hashes(base / store)
