"""Process runtime control: intra-op threads (torch and faiss), the allocator, load detection.

One place for everything that tunes or inspects the process rather than the method: the
``torch_threads`` context manager, :func:`set_num_threads` (torch and faiss together),
:func:`tune_allocator` (glibc ``mallopt``) and the ``/proc/loadavg`` contention check.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import platform
from collections.abc import Iterator
from pathlib import Path

import faiss
import torch

#: Environment variable: ``0`` keeps glibc's default allocator settings (see :func:`tune_allocator`).
ALLOCATOR_ENV = "STRUCTCORE_TUNE_MALLOC"
_ALLOCATOR_TUNED = False


def tune_allocator() -> bool:
    """Keep freed memory in the process instead of returning large blocks to the OS (glibc only).

    glibc serves every allocation above ``M_MMAP_THRESHOLD`` (at most 32 MB) with a fresh
    ``mmap`` and unmaps it on free, so each large tensor (backbone activations, kNN score blocks)
    is page-faulted in again on every call: ~0.6 ms per MB on this VM, which made a batch-8
    forward pass 1.3-1.8x slower. With ``M_MMAP_MAX = 0`` and a huge ``M_TRIM_THRESHOLD`` the
    heap keeps and reuses those pages (the usual advice of using jemalloc/tcmalloc for PyTorch
    on CPU, without a preload). Peak memory is unchanged; the resident size no longer shrinks
    after a peak. Called once by :class:`FeatureExtractor`; set ``STRUCTCORE_TUNE_MALLOC=0`` to
    opt out. Returns True when the settings are in effect.
    """
    global _ALLOCATOR_TUNED
    if _ALLOCATOR_TUNED:
        return True
    if os.environ.get(ALLOCATOR_ENV, "1").strip() == "0" or platform.system() != "Linux":
        return False
    if platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # pragma: no cover - glibc under another name
        return False
    m_trim_threshold, m_mmap_max = -1, -4
    tuned = bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 2**31 - 1))
    _ALLOCATOR_TUNED = tuned
    return tuned


def available_cpus() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _own_running_threads() -> int:
    """Threads of this process that are runnable right now (state ``R`` in ``/proc/self/task``)."""
    count = 0
    try:
        tasks = list(os.scandir("/proc/self/task"))
    except OSError:
        return 0
    for task in tasks:
        try:
            stat = Path(task.path, "stat").read_text()
        except OSError:  # the thread ended meanwhile
            continue
        count += stat[stat.rindex(")") + 2 : stat.rindex(")") + 3] == "R"
    return count


def _other_runnable_threads() -> int:
    """Runnable threads of other processes right now (``/proc/loadavg`` minus our own)."""
    own_before = _own_running_threads()
    try:
        running = int(Path("/proc/loadavg").read_text().split()[3].split("/")[0])
    except (OSError, ValueError, IndexError):
        return 0
    # Our spinning workers may stop between the reads: count them if either read saw them.
    return max(0, running - max(own_before, _own_running_threads()))


def cores_contended() -> bool:
    """True when other processes' runnable threads leave fewer CPUs than torch would use.

    Reads the instantaneous run-queue count of ``/proc/loadavg`` and subtracts this process's own
    runnable threads: OpenMP workers of torch and faiss keep spinning for a while after each
    parallel region and would otherwise count as load. Two reads must agree, so a kernel thread
    that wakes for a moment does not switch a whole loop to one thread.
    """
    cpus = available_cpus()
    used = min(torch.get_num_threads(), cpus)
    return all(_other_runnable_threads() + used > cpus for _ in range(2))


def small_op_threads() -> int:
    """Intra-op threads for loops of small torch ops: 1 when other processes are busy on our cores.

    Each parallel op ends at an OpenMP barrier; when another process holds a core, the barrier
    waits for the descheduled thread, so a loop of small ops runs 10-25x slower with 2 threads
    than with 1 (measured here: 501 greedy iterations over 50k x 128 took 13.5 s with 2 threads
    and 0.58 s with 1 while a colleague's job used both cores; 0.36 s with 2 when idle).
    """
    return 1 if cores_contended() else torch.get_num_threads()


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block with ``threads`` intra-op torch threads (``None``: unchanged)."""
    saved = torch.get_num_threads()
    if threads is None or threads == saved:
        yield
        return
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def set_num_threads(threads: int) -> None:
    """Intra-op threads of torch and faiss (OpenMP) in this process."""
    torch.set_num_threads(threads)
    faiss.omp_set_num_threads(threads)
