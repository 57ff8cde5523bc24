"""Runtime settings (structcore.runtime): threads, the contention check, the allocator switch."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import faiss
import pytest
import torch

import structcore.runtime as runtime
from structcore.runtime import ALLOCATOR_ENV, available_cpus, set_num_threads, small_op_threads, torch_threads


def test_contention_check_ignores_own_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime, "available_cpus", lambda: 2)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    # Our own spinning workers are subtracted: nothing else runnable -> not contended.
    monkeypatch.setattr(runtime, "_own_running_threads", lambda: 3)
    monkeypatch.setattr(runtime.Path, "read_text", lambda self: "0.5 0.5 0.5 3/100 1")
    assert not runtime.cores_contended()
    assert runtime.small_op_threads() == 2
    # One thread of another process on the two cores we would use -> contended.
    monkeypatch.setattr(runtime, "_own_running_threads", lambda: 2)
    assert runtime.cores_contended()
    assert runtime.small_op_threads() == 1


def test_torch_threads_sets_and_restores() -> None:
    saved = torch.get_num_threads()
    other = 1 if saved != 1 else 2
    with torch_threads(other):
        assert torch.get_num_threads() == other
    assert torch.get_num_threads() == saved
    with pytest.raises(RuntimeError, match="inside"), torch_threads(other):
        raise RuntimeError("inside")
    assert torch.get_num_threads() == saved
    with torch_threads(None):
        assert torch.get_num_threads() == saved


def test_set_num_threads_sets_torch_and_faiss() -> None:
    saved = torch.get_num_threads()
    try:
        set_num_threads(1)
        assert torch.get_num_threads() == 1 and faiss.omp_get_max_threads() == 1
    finally:
        set_num_threads(saved)
    assert torch.get_num_threads() == saved and faiss.omp_get_max_threads() == saved


def test_available_cpus_is_the_affinity_mask() -> None:
    assert available_cpus() == len(os.sched_getaffinity(0)) >= 1
    assert small_op_threads() in {1, torch.get_num_threads()}


@pytest.mark.parametrize(("setting", "expected"), [("0", "False"), ("1", "True")])
def test_allocator_tuning_follows_the_environment(setting: str, expected: str) -> None:
    """In a fresh process: ``STRUCTCORE_TUNE_MALLOC=0`` opts out; otherwise glibc's mallopt is set."""
    if expected == "True" and (platform.system() != "Linux" or platform.libc_ver()[0] != "glibc"):
        pytest.skip("glibc only")
    code = "from structcore.runtime import tune_allocator; print(tune_allocator(), tune_allocator())"
    env = dict(os.environ, **{ALLOCATOR_ENV: setting})
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [expected, expected]
