"""Registry under concurrent writers and under SIGKILL at every step of a write.

Each scenario runs in its own Python process (``tests.support_registry.CHILD``); the kill
scenarios run side by side, each on its own copy of a registry that holds category ``pill``.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest

from registry import Registry
from tests.support_registry import (
    clone,
    db_rows,
    make_base,
    scores,
    small_model,
    start_child,
    tree_hashes,
    write_data,
)

Data = dict[str, tuple[list[Path], list[Path]]]

#: Checkpoints of ``add_category`` (``coreset`` is inside the fit, before anything is written).
ADD_STAGES = ("coreset", "store-partial", "tmp-written", "renamed", "in-transaction", "committed")
#: Stages after which the half-done write leaves something for gc to remove.
LEAVES_LEFTOVERS = {"store-partial", "tmp-written", "renamed", "in-transaction"}
CHILD_TIMEOUT = 240


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Data:
    return write_data(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory, data: Data) -> Path:
    return make_base(tmp_path_factory.mktemp("base") / "registry", data)


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
            registry.add_category("grid", data["grid"][0], small_model())
            assert registry.verify().ok
            with Registry.open(base, read_only=True) as original:
                tests = data["pill"][1]
                assert scores(registry.predict(tests, "pill")) == scores(original.predict(tests, "pill"))


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
