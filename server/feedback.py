"""``POST /v1/categories/{name}/good``: good images sent back by a line, queued into one update per batch.

Each accepted upload is written (atomically, named by its content sha256) to
``<registry>/feedback/<category>/`` and queued. One background thread takes the queue: whatever
has arrived for a category by the time it starts (and within ``batch_seconds`` after the first
image) goes into one ``registry.updates.update_category(source="feedback")``, a new current
version; the scoring worker's Detector swap picks it up within its poll interval. A request may
wait for its update (``?wait=1``: the new version in the answer) or not (202 with the queue).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("structcore.serve")

#: Folder, inside the registry, that keeps the images sent as good.
FEEDBACK_DIR = "feedback"


@dataclass
class FeedbackJob:
    """Images of one request for one category; ``future`` gets the update's summary."""

    category: str
    paths: list[Path]
    future: Future[dict[str, Any]] = field(default_factory=Future)


def save_upload(root: Path, category: str, data: bytes, suffix: str = ".png") -> Path:
    """Write an uploaded image under ``<root>/feedback/<category>/<sha256><suffix>`` (temp file, fsync, rename)."""
    folder = root / FEEDBACK_DIR / category
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{hashlib.sha256(data).hexdigest()}{suffix}"
    if target.exists():
        return target
    temporary = folder / f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp"
    with temporary.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    temporary.replace(target)
    return target


class FeedbackWorker:
    """The thread that turns queued good images into updates (one per category per batch)."""

    def __init__(self, root: Path, batch_seconds: float = 1.0):
        self.root = root
        self.batch_seconds = batch_seconds
        self._queue: queue.Queue[FeedbackJob | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self.updates = 0

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="structcore-feedback", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 60.0) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout)
            self._thread = None

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    def submit(self, category: str, paths: list[Path]) -> FeedbackJob:
        job = FeedbackJob(category, paths)
        self._queue.put(job)
        return job

    def _run(self) -> None:
        from registry import Registry

        registry: Registry | None = None
        try:
            while True:
                first = self._queue.get()
                if first is None:
                    return
                batch = [first]
                deadline = time.monotonic() + self.batch_seconds
                stop = False
                while True:
                    try:
                        item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                    except queue.Empty:
                        break
                    if item is None:
                        stop = True
                        break
                    batch.append(item)
                if registry is None:
                    registry = Registry.open(self.root)
                for category in dict.fromkeys(job.category for job in batch):
                    self._update(registry, [job for job in batch if job.category == category])
                if stop:
                    return
        finally:
            if registry is not None:
                registry.close()

    def _update(self, registry: Any, jobs: list[FeedbackJob]) -> None:
        from registry.updates import update_category

        paths = list(dict.fromkeys(path for job in jobs for path in job.paths))
        try:
            result = update_category(registry, jobs[0].category, paths, source="feedback")
            summary = {
                "category": jobs[0].category,
                "version": result.info.version,
                "parent_version": result.parent.version,
                "mode": result.mode,
                "added": len(result.added),
                "duplicates": len(result.duplicates),
                "n_train_images": result.info.n_train_images,
                "threshold": result.info.thresholds.get("hybrid"),
                "batched_requests": len(jobs),
            }
            self.updates += 1
            for job in jobs:
                job.future.set_result(summary)
        except Exception as error:  # reported to every waiting request, the worker goes on
            log.warning("feedback update of %s failed: %s", jobs[0].category, error)
            for job in jobs:
                with contextlib.suppress(Exception):
                    job.future.set_exception(error)


__all__ = ["FEEDBACK_DIR", "FeedbackJob", "FeedbackWorker", "save_upload"]
