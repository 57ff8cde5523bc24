"""Helpers of the reliability tests (issue 7): small data, registry copies, a fork server for
SIGKILL trials, byte flips. Holds no tests itself; it serves the tests in ``tests/reliability/``.

Everything is small: 64 px synthetic images, registries with ``resize = crop = 64`` (an 8x8
patch grid), coreset ratio 0.1 and 8 prototypes, so a fit takes well under a second.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from evaluation.synthetic import make_category, write_mvtec_layout
from registry import Registry
from structcore.model import CategoryModel
from structcore.preprocess import load_image

SIZE = 64
N_TRAIN = 6
KINDS = ("pill", "grid", "tile", "wood", "carpet")
REPO = Path(__file__).resolve().parents[1]
REGISTRY_SCRIPT = Path(sys.executable).with_name("registry")
#: Environment of every child process: one thread each (the machine is shared).
CHILD_ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

Data = dict[str, tuple[list[Path], list[Path]]]


def small_model(seed: int = 42) -> CategoryModel:
    """Settings of every test fit: 10% coreset, 8 prototypes."""
    return CategoryModel(coreset_ratio=0.1, n_prototypes=8, seed=seed)


def write_data(root: Path, kinds: tuple[str, ...] = KINDS) -> Data:
    """MVTec-layout PNGs of a few synthetic kinds: kind -> (train paths, test paths)."""
    data = {}
    for seed, kind in enumerate(kinds):
        folder = write_mvtec_layout(make_category(kind, N_TRAIN, 2, 2, seed, size=SIZE), root, kind)
        data[kind] = (sorted((folder / "train" / "good").glob("*.png")), sorted((folder / "test").rglob("*.png")))
    return data


def make_registry(root: Path, data: Data, kinds: tuple[str, ...], *, keep_patches: bool = False) -> Path:
    """A registry at ``root`` (64 px feature space) with ``kinds`` fitted, closed."""
    with Registry.init(root, resize=SIZE, crop=SIZE) as registry:
        for kind in kinds:
            registry.add_category(kind, data[kind][0], small_model(), keep_patches=keep_patches)
    return root


def embed(registry: Registry, paths: list[Path]) -> np.ndarray:
    """Patch vectors (B, P, D) of ``paths`` in the registry's feature space."""
    extractor = registry.extractor()
    return extractor.embed(extractor.prepare([load_image(p) for p in paths])).numpy()


def version_scores(registry: Registry, vectors: np.ndarray) -> dict[tuple[str, int], list[float]]:
    """Hybrid scores of ``vectors`` under every version of every category (a fingerprint)."""
    found = {}
    for category in registry.categories():
        for version in category.versions:
            model = registry.load_category(category.name, version.version)
            found[(category.name, version.version)] = model.predict(vectors).scores.hybrid.tolist()
    return found


def flip_byte(path: Path, position: int, bit: int) -> None:
    """Flip one bit of one byte of a file in place."""
    data = bytearray(path.read_bytes())
    data[position] ^= 1 << bit
    path.write_bytes(bytes(data))


RSS_WRAPPER = textwrap.dedent(
    """
    import os, resource, subprocess, sys
    result = subprocess.run(sys.argv[2:], capture_output=True, text=True)
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    with open(sys.argv[1], "w") as out:
        out.write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))
    sys.exit(result.returncode)
    """
)


def run_measured(command: list[str], rss_file: Path, **kwargs: Any) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run ``command`` through a wrapper; returns the result and the command's peak RSS in MiB."""
    result = subprocess.run(
        [sys.executable, "-c", RSS_WRAPPER, str(rss_file), *command],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        **kwargs,
    )
    return result, int(rss_file.read_text()) / 1024


# --------------------------------------------------------------------------- fork server
ZYGOTE = textwrap.dedent(
    """
    import json, os, sys, time, traceback
    import torch
    torch.set_num_threads(1)
    import h5py  # noqa: F401 - imported before forking, like everything the operations use
    import registry.bundle  # noqa: F401
    from registry import Registry, storage
    from tests.support_reliability import small_model

    def say(message):
        os.write(1, (json.dumps(message) + "\\n").encode())

    def operate(command):
        registry = Registry.open(command["root"])
        if command["op"] == "add":
            registry.extractor()  # the backbone is built before "ready": the delay covers the operation
        marks = {}
        say({"ready": os.getpid()})
        started = time.perf_counter()
        storage.checkpoint_hook = lambda stage: marks.setdefault(stage, time.perf_counter() - started)
        op = command["op"]
        if op == "add":
            registry.add_category(
                command["name"], command["images"], small_model(), lambda event: storage.checkpoint(event.stage)
            )
        elif op == "remove":
            registry.remove(command["name"], command.get("version"))
        elif op == "import":
            registry.import_(command["bundle"])
        elif op == "gc":
            registry.gc()
        say({"done": os.getpid(), "seconds": time.perf_counter() - started, "marks": marks})

    for line in sys.stdin:
        command = json.loads(line)
        sys.stdout.flush()
        pid = os.fork()
        if pid == 0:
            status = 0
            try:
                operate(command)
            except BaseException as error:
                say({"error": f"{type(error).__name__}: {error}", "trace": traceback.format_exc()[-2000:]})
                status = 1
            finally:
                os._exit(status)
        reap = sys.stdin.readline()  # the test says when the child may be reaped (after its kill)
        _, status = os.waitpid(pid, 0)
        code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        say({"exit": pid, "code": code})
    """
)


@dataclass
class Trial:
    """What one operation in the fork server did."""

    code: int
    seconds: float | None = None
    marks: dict[str, float] = field(default_factory=dict)
    error: str | None = None


class ForkServer:
    """A Python process with the registry imported that forks one child per operation.

    The test kills the child (``SIGKILL``) after a delay measured from the child's "ready"
    message, which it sends once it has opened the registry (and built the backbone).
    """

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", ZYGOTE],
            cwd=REPO,
            env=CHILD_ENV,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        self._buffer = b""

    def _line(self, timeout: float = 120.0) -> dict[str, Any]:
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        fd = self.process.stdout.fileno()
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            ready, _, _ = select.select([fd], [], [], max(remaining, 0))
            if not ready:
                raise TimeoutError("the fork server did not answer")
            chunk = os.read(fd, 65536)
            if not chunk:
                raise RuntimeError(f"the fork server exited with {self.process.wait()}")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return dict(json.loads(line))

    def run(self, command: dict[str, Any], kill_after: float | None) -> Trial:
        """Run one operation; with ``kill_after`` (seconds after "ready") SIGKILL it then."""
        assert self.process.stdin is not None
        self.process.stdin.write((json.dumps(command) + "\n").encode())
        self.process.stdin.flush()
        message = self._line()
        if "error" in message:  # failed before it was ready
            self.process.stdin.write(b"reap\n")
            self.process.stdin.flush()
            exit_message = self._line()
            return Trial(code=int(exit_message["code"]), error=str(message["error"]))
        pid = int(message["ready"])
        if kill_after is not None:
            time.sleep(kill_after)
            with contextlib.suppress(ProcessLookupError):  # not reaped yet, so it cannot be gone
                os.kill(pid, signal.SIGKILL)
        self.process.stdin.write(b"reap\n")
        self.process.stdin.flush()
        trial = Trial(code=0)
        while True:
            message = self._line()
            if "done" in message:
                trial.seconds = float(message["seconds"])
                trial.marks = dict(message["marks"])
            elif "error" in message:
                trial.error = str(message["error"]) + "\n" + str(message.get("trace", ""))
            elif "exit" in message:
                trial.code = int(message["code"])
                return trial

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=30)
