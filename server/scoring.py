"""The scoring worker: one thread that owns the :class:`~registry.Registry` and batches requests.

Requests put a :class:`Job` (decoded images, an optional forced category) on a queue. The worker
takes the first job, gathers more until ``max_batch_size`` images are waiting or ``max_wait_ms``
has passed, and scores each forced-category group with one :meth:`Detector.predict
<registry.detector.Detector.predict>` call (routed requests form one group). Concurrent requests
therefore share backbone batches.

The worker holds one :class:`~registry.detector.Detector`, an immutable snapshot pinned to
category versions, and keeps it live: it polls SQLite's ``data_version`` (a counter that moves
whenever another connection commits) every ``poll_seconds`` and before each batch, and on a change
builds a new Detector (warming its models) and swaps it in whole. A predict call uses the Detector
it started with, so no request mixes two versions, and each record carries the ``version`` and
``threshold`` that scored and decided it.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from registry import Detector, Registry, RegistryError, UnknownCategoryError, VersionInfo
from registry.db import DB_FILE
from server.metrics import ServeMetrics
from server.settings import ServeSettings
from structcore.regions import boxes_on_model_map

log = logging.getLogger("structcore.serve")


class ServeError(Exception):
    """An error a request is answered with: an HTTP status and a one-line message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Catalogue:
    """The registry as the worker last read it: ``marker`` is the ``data_version`` it belongs to."""

    marker: int
    categories: tuple[dict[str, Any], ...]
    current: Mapping[str, VersionInfo]


@dataclass(frozen=True)
class Scored:
    """One image's result: the record (``registry infer --json`` fields plus ``version``), and
    the preprocessed crop and anomaly map when an overlay was asked for."""

    record: dict[str, Any]
    crop: np.ndarray | None = None
    anomaly_map: np.ndarray | None = None
    base_threshold: float | None = None
    #: The record's regions on the crop's map, (x, y, w, h) (drawn on the overlay).
    boxes: tuple[tuple[float, float, float, float], ...] = ()


@dataclass
class Job:
    """One request's images, waiting for the worker."""

    names: list[str]
    images: list[Image.Image]
    category: str | None
    overlay: bool
    future: Future[list[Scored]] = field(default_factory=Future)


class ScoringWorker:
    """The thread that scores every request (see the module docstring)."""

    def __init__(self, settings: ServeSettings, metrics: ServeMetrics):
        self.settings = settings
        self.metrics = metrics
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="structcore-scoring", daemon=True)
        self._started = threading.Event()
        self._ready = False
        self._failure: BaseException | None = None
        self._catalogue: Catalogue | None = None
        self._registry: Registry | None = None
        self._detector: Detector | None = None
        self._marker_connection: sqlite3.Connection | None = None

    # ----------------------------------------------------------------- public (any thread)
    def start(self, timeout: float = 600.0) -> None:
        """Start the thread and wait until the registry is open and the backbone is loaded.

        Raises:
            the error that stopped the worker from opening the registry.
        """
        self._thread.start()
        if not self._started.wait(timeout):
            raise RuntimeError(f"the scoring worker did not start within {timeout:.0f} s")
        if self._failure is not None:
            raise self._failure

    def stop(self, timeout: float = 60.0) -> None:
        """Finish the queued jobs, then stop the thread."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout)

    @property
    def ready(self) -> bool:
        """The backbone is loaded and the registry holds at least one category."""
        catalogue = self._catalogue
        return self._ready and self._thread.is_alive() and catalogue is not None and bool(catalogue.current)

    @property
    def loaded(self) -> bool:
        """The catalogue has been read once."""
        return self._catalogue is not None

    @property
    def catalogue(self) -> Catalogue:
        """The latest catalogue (replaced as a whole on every change, so it is safe to read)."""
        if self._catalogue is None:
            raise ServeError(503, "the registry is still loading; try again shortly")
        return self._catalogue

    def submit(self, names: list[str], images: list[Image.Image], category: str | None, overlay: bool) -> Job:
        """Queue images for scoring; the job's future gets one :class:`Scored` per image."""
        if not self._thread.is_alive():
            raise ServeError(503, "the scoring worker has stopped; restart the server")
        if category is not None and category not in self.catalogue.current:
            raise ServeError(404, f"unknown category {category!r}; see GET /v1/categories")
        job = Job(names, images, category, overlay)
        self._queue.put(job)
        self.metrics.queue_images.inc(len(images))
        return job

    # ----------------------------------------------------------------- the thread
    def _run(self) -> None:
        try:
            self._open()
        except BaseException as error:
            self._failure = error
            self._started.set()
            return
        self._ready = True
        self._started.set()
        try:
            self._loop()
        finally:
            if self._marker_connection is not None:
                self._marker_connection.close()
            if self._registry is not None:
                self._registry.close()

    def _open(self) -> None:
        settings = self.settings
        self._registry = Registry.open(settings.root, read_only=True, cache_size=settings.cache_size)
        database = (settings.root / DB_FILE).resolve()
        self._marker_connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True, check_same_thread=False)
        self._refresh()  # builds the first Detector and runs its backbone once: the first request does not pay

    def _loop(self) -> None:
        settings = self.settings
        while True:
            try:
                first = self._queue.get(timeout=settings.poll_seconds)
            except queue.Empty:
                self._poll()
                continue
            if first is None:
                break
            jobs = self._gather(first)
            stop = jobs[-1] is None
            self._score([job for job in jobs if job is not None])
            if stop:
                break
        # shutdown: whatever is still queued is scored too
        leftover: list[Job] = []
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                leftover.append(job)
        if leftover:
            self._score(leftover)

    def _gather(self, first: Job) -> list[Job | None]:
        """``first`` and the jobs that arrive until the batch is full or the wait is over."""
        jobs: list[Job | None] = [first]
        count = len(first.images)
        deadline = time.monotonic() + self.settings.max_wait_ms / 1000.0
        while count < self.settings.max_batch_size:
            remaining = deadline - time.monotonic()
            try:
                job = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            jobs.append(job)
            if job is None:
                break
            count += len(job.images)
        return jobs

    # ----------------------------------------------------------------- live registry
    def _marker(self) -> int:
        assert self._marker_connection is not None
        return int(self._marker_connection.execute("PRAGMA data_version").fetchone()[0])

    def _poll(self) -> None:
        """Reload the catalogue and router when the registry changed since the last read."""
        catalogue = self._catalogue
        try:
            if catalogue is None or self._marker() != catalogue.marker:
                self._refresh()
        except (RegistryError, sqlite3.Error) as error:  # e.g. a damaged row: keep serving what was loaded
            log.warning("registry reload failed: %s", error)

    def _refresh(self) -> None:
        """Read the catalogue consistently (no commit between the two marker reads); on a change, swap Detectors."""
        registry = self._registry
        assert registry is not None
        for _ in range(10):
            marker = self._marker()
            infos = registry.categories()
            if self._marker() == marker:
                break
        categories = tuple(info.to_dict() for info in infos)
        current = {info.name: info.current for info in infos if info.current is not None}
        changed = self._catalogue is None or {k: v.uuid for k, v in current.items()} != {
            k: v.uuid for k, v in self._catalogue.current.items()
        }
        if changed or self._detector is None:
            detector = registry.detector()
            detector.warm_up()  # outside any request: the swap below is the only moment requests see
            self._detector = detector
        self._catalogue = Catalogue(marker, categories, current)
        self.metrics.categories.set(len(current))
        if not changed:
            return
        self.metrics.reloads.inc()
        log.info("registry changed: %s", ", ".join(f"{k} v{v.version}" for k, v in sorted(current.items())) or "empty")

    # ----------------------------------------------------------------- scoring
    def _score(self, jobs: Sequence[Job]) -> None:
        """Score ``jobs``: one predict call per forced category (routed jobs are one group)."""
        groups: dict[str | None, list[Job]] = {}
        for job in jobs:
            groups.setdefault(job.category, []).append(job)
        self.metrics.queue_images.dec(sum(len(job.images) for job in jobs))
        for category, group in groups.items():
            try:
                results = self._predict_group(category, group)
            except ServeError as error:
                for job in group:
                    job.future.set_exception(error)
                continue
            except Exception:
                log.exception("scoring failed")
                failure = ServeError(500, "internal error while scoring; see the server log")
                for job in group:
                    job.future.set_exception(failure)
                continue
            start = 0
            for job in group:
                job.future.set_result(results[start : start + len(job.images)])
                start += len(job.images)

    def _predict_group(self, category: str | None, group: Sequence[Job]) -> list[Scored]:
        images = [image for job in group for image in job.images]
        names = [name for job in group for name in job.names]
        overlay = any(job.overlay for job in group)
        self.metrics.batch_images.observe(len(images))
        collected: dict[int, tuple[object, np.ndarray, np.ndarray, float]] = {}

        def on_image(record: object, crop: np.ndarray, anomaly_map: np.ndarray, map_threshold: float) -> None:
            collected[id(record)] = (record, crop, anomaly_map, map_threshold)

        self._poll()
        detector = self._detector  # one snapshot for the whole call: never two versions of a category
        if detector is None:
            raise ServeError(503, "the registry is still loading; try again shortly")
        if category is not None and category not in detector.versions:
            raise ServeError(404, f"unknown category {category!r} (removed?); see GET /v1/categories")
        if category is None and not len(detector):
            raise ServeError(503, "the registry has no categories; add one with `registry add-category`")
        try:
            records = detector.predict(
                images,
                category,
                batch_size=self.settings.max_batch_size,
                on_image=on_image if overlay else None,
            )
        except UnknownCategoryError as error:
            raise ServeError(404, str(error)) from None
        except RegistryError as error:
            raise ServeError(503, str(error)) from None
        geometry = detector.extractor.geometry
        sizes = [image.size for image in images]
        return self._results(records, names, collected, group, sizes, (geometry.resize, geometry.crop))

    def _results(
        self,
        records: Sequence[Mapping[str, Any]],
        names: Sequence[str],
        collected: Mapping[int, tuple[object, np.ndarray, np.ndarray, float]],
        group: Sequence[Job],
        sizes: Sequence[tuple[int, int]],
        geometry: tuple[int, int],
    ) -> list[Scored]:
        wants = [job.overlay for job in group for _ in job.images]
        results: list[Scored] = []
        for record, name, want, size in zip(records, names, wants, sizes, strict=True):
            out = dict(record)
            out["path"] = name
            if record["error"] is None and record["category"] is not None:
                self.metrics.images_scored.labels(category=record["category"]).inc()
                if record["anomalous"]:
                    self.metrics.images_flagged.labels(category=record["category"]).inc()
                if record["unknown"]:
                    self.metrics.images_unknown.labels(category=record["category"]).inc()
            found = collected.get(id(record))
            if want and found is not None and found[0] is record:
                shape = tuple(np.shape(found[2])[:2])  # fit: the map covers the content, not the square
                square = shape == (geometry[1], geometry[1])
                boxes = boxes_on_model_map(record["regions"] or [], size, *geometry, None if square else shape)
                results.append(Scored(out, found[1], found[2], found[3], tuple(boxes)))
            else:
                results.append(Scored(out))
        return results
