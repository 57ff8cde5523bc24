"""Fitting many categories and scoring many images on a Ray cluster (optional extra ``[ray]``).

Two entry points, both also usable without a cluster:

* :func:`fit_categories` fits each category in its own Ray task. A task embeds the category's
  train images with its own extractor (built from the registry's :class:`FeatureSpace`, which
  the driver puts in the object store once) and returns the fitted arrays and metadata. The
  driver is the only process that writes the registry: it stores each result with
  :meth:`Registry.add_fitted` (the atomic write path of ``add-category``) as soon as it
  arrives. A worker that dies loses only its own category, which is submitted again (at most
  ``max_retries`` times) and reported. With ``ray_address=None`` the same code runs the
  categories one after another in this process.
* :func:`distributed_infer` scores a long list of image paths with a pool of Ray actors. Each
  actor receives the feature space and, per pinned category version, its prototypes, metadata
  and an object reference to its arrays once; it builds one :class:`~registry.detector.Detector`
  from them and fetches a category's arrays the first time it routes an image to it, so a bank
  crosses the network at most once per worker. Images travel as paths (in shards). Shards start at
  multiples of ``batch_size``, so the backbone sees the same batches as in
  :meth:`Registry.predict`, and the scores are bit-identical when the worker and the local
  process use the same number of torch threads (see ``docs/distributed.md``). Records are
  appended to a JSON-lines file in input order as shards complete.

Workers never open the registry's SQLite database; only the driver does. Ray is imported
lazily: without it, the in-process paths still work and the Ray paths raise a
:class:`RegistryError` that says how to install it.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from registry.core import MIN_CALIBRATION_IMAGES, Registry, validate_name
from registry.detector import Detector, PinnedCategory, PredictionRecord, error_record, extractor_for
from registry.errors import RegistryError
from structcore.model import CategoryModel, fit_category
from structcore.progress import Progress, ProgressCallback
from structcore.runtime import set_num_threads
from structcore.settings import DEFAULT_BATCH_SIZE, DEFAULT_MAX_REGIONS, FitSettings

if TYPE_CHECKING:
    from structcore.feature_space import FeatureSpace
    from structcore.features import FeatureExtractor

#: Message shown when Ray is needed but not installed.
INSTALL_HINT = "Ray is not installed; install with pip install 'structcore-registry[ray]'"
#: Test hook: a folder; a file ``<category>.crash`` in it holding N > 0 makes the next N fit
#: attempts of that category kill their Ray worker (``os._exit``) after embedding, and a file
#: ``shard-<start>.crash`` does the same to the actor that scores the shard starting at ``start``.
FAULTS_ENV = "STRUCTCORE_TEST_FAULTS_DIR"
#: Shards kept queued per inference actor (one running, one waiting), to hide dispatch latency.
_SHARDS_PER_ACTOR = 2

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------ Ray
def import_ray() -> Any:
    """The ``ray`` module, or a :class:`RegistryError` naming the extra to install."""
    try:
        import ray
    except ImportError as error:
        raise RegistryError(INSTALL_HINT) from error
    return ray


@contextmanager
def ray_session(address: str) -> Iterator[Any]:
    """Connect to Ray for the duration of the block and yield the ``ray`` module.

    ``address`` is ``"local"`` (start a Ray instance on this machine, using all its CPUs),
    ``"auto"`` (join the cluster this machine belongs to) or a cluster address
    (``host:6379`` or ``ray://host:10001``). When Ray is already initialised in this process
    (a notebook, a test) that connection is used as is and left open.
    """
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    try:
        if address == "local":
            ray.init(address="local", include_dashboard=False, logging_level=logging.WARNING)
        else:
            ray.init(address=address, logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError, ValueError) as error:
        msg = f"cannot connect to Ray at {address!r} ({error}); pass --ray local, --ray auto or a cluster address"
        raise RegistryError(msg) from error
    try:
        yield ray
    finally:
        ray.shutdown()


def _where() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _is_system_failure(ray: Any, error: BaseException) -> bool:
    """True when Ray lost the worker, actor, node or object (retry), not for an error raised by our code."""
    exceptions = ray.exceptions
    return isinstance(error, exceptions.RayError) and not isinstance(
        error, exceptions.RayTaskError | exceptions.TaskCancelledError
    )


def _cause(error: BaseException) -> str:
    """The user-facing message of an exception raised inside a Ray task."""
    cause = getattr(error, "cause", None)
    if isinstance(cause, BaseException):
        return str(cause) or type(cause).__name__
    text = str(error).strip().splitlines()
    return text[-1] if text else type(error).__name__


# ------------------------------------------------------------------------------- fitting
@dataclass
class CategoryResult:
    """The outcome of one category of :func:`fit_categories`.

    ``seconds`` is the embed + fit time of the successful (or last) attempt, ``write_seconds``
    the driver's store time, ``worker`` the ``host:pid`` that fitted it.
    """

    name: str
    ok: bool
    attempts: int
    n_images: int
    seconds: float | None = None
    version: int | None = None
    error: str | None = None
    worker: str | None = None
    write_seconds: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible form."""
        return dict(self.__dict__)


@dataclass
class FitReport:
    """The result of :func:`fit_categories`: one :class:`CategoryResult` per category (input order)."""

    categories: list[CategoryResult] = field(default_factory=list)
    elapsed_seconds: float = 0.0
    mode: str = "in-process"

    @property
    def ok(self) -> bool:
        """True when every category was fitted and stored."""
        return all(result.ok for result in self.categories)

    @property
    def failed(self) -> list[CategoryResult]:
        """The categories that were not stored."""
        return [result for result in self.categories if not result.ok]

    def __getitem__(self, name: str) -> CategoryResult:
        return next(result for result in self.categories if result.name == name)

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible form (for ``--json``)."""
        return {
            "ok": self.ok,
            "mode": self.mode,
            "elapsed_seconds": self.elapsed_seconds,
            "categories": [result.to_dict() for result in self.categories],
        }


def _fit_model(
    extractor: FeatureExtractor,
    sources: Sequence[Path],
    params: Mapping[str, Any],
    after_embed: Callable[[], None] | None = None,
) -> CategoryModel:
    """Embed + fit through :func:`structcore.model.fit_category`, as :meth:`Registry.add_category` does."""

    def progress(event: Progress) -> None:
        if event.stage == "fit" and after_embed is not None:
            after_embed()

    return fit_category(extractor, list(sources), CategoryModel(**params), progress)


def _fault_point(name: str) -> None:
    """Test hook (see :data:`FAULTS_ENV`): kill this worker process if a crash is planned for ``name``.

    Only called inside Ray workers, never in the driver.
    """
    folder = os.environ.get(FAULTS_ENV)
    if not folder:
        return
    plan = Path(folder) / f"{name}.crash"
    try:
        remaining = int(plan.read_text().strip() or 0)
    except (OSError, ValueError):
        return
    if remaining > 0:
        plan.write_text(str(remaining - 1))
        os._exit(1)


def _fit_task(
    space: FeatureSpace,
    weights_path: str | None,
    name: str,
    paths: list[str],
    params: dict[str, Any],
    batch_size: int,
    threads: int,
) -> dict[str, Any]:
    """Ray task: fit one category; returns its arrays and metadata (the driver stores them).

    An error of the fit comes back as ``{"error": message}``: some exceptions (``ImageReadError``)
    cannot be unpickled by the driver, and such errors are not worth a retry anyway.
    """
    set_num_threads(threads)
    started = time.perf_counter()
    try:
        extractor = extractor_for(space, weights_path, batch_size)
        model = _fit_model(extractor, [Path(p) for p in paths], params, after_embed=lambda: _fault_point(name))
    except Exception as error:
        return {"error": str(error) or type(error).__name__, "worker": _where()}
    return {
        "arrays": model.to_arrays(),
        "metadata": model.to_metadata(),
        "seconds": time.perf_counter() - started,
        "worker": _where(),
    }


def _check_params(model_params: Mapping[str, Any], batch_size: int) -> dict[str, Any]:
    """Every :class:`CategoryModel` setting, checked against :data:`structcore.settings.FIT_PARAMETERS`."""
    settings = FitSettings.from_values({**model_params, "batch_size": batch_size}).validate()
    return settings.model_params()


class _FitJob:
    """Bookkeeping and events of one :func:`fit_categories` call."""

    def __init__(self, categories: Mapping[str, Sequence[Path]], on_event: ProgressCallback | None, mode: str):
        self.categories = {name: [Path(p) for p in paths] for name, paths in categories.items()}
        self.results = {
            name: CategoryResult(name=name, ok=False, attempts=0, n_images=len(paths))
            for name, paths in self.categories.items()
        }
        self.on_event = on_event
        self.mode = mode
        self.started = time.perf_counter()
        self.ready_at = self.started
        self.images_total = sum(len(paths) for paths in self.categories.values())

    def emit(self, kind: str, name: str, version: int | None = None, message: str | None = None) -> None:
        if self.on_event is None:
            return
        finished = [r for r in self.results.values() if r.ok or r.error is not None]
        self.on_event(
            Progress(
                stage=kind,
                category=name,
                attempt=self.results[name].attempts,
                done=len(finished),
                total=len(self.results),
                images_done=sum(r.n_images for r in finished),
                images_total=self.images_total,
                elapsed_seconds=time.perf_counter() - self.started,
                version=version,
                message=message or "",
            )
        )

    def runnable(self) -> list[str]:
        """The categories worth fitting; those with too few images fail here, without a fit."""
        minimum = MIN_CALIBRATION_IMAGES
        names = []
        for name, paths in self.categories.items():
            if len(paths) < minimum:
                message = f"category {name!r} needs at least {minimum} train images, got {len(paths)}; "
                self.fail(name, message + "pass more good images")
            else:
                names.append(name)
        return names

    def fail(self, name: str, message: str) -> None:
        self.results[name].error = message
        self.emit("failed", name, message=message)

    def store(self, registry: Registry, name: str, model: CategoryModel, seconds: float, worker: str) -> None:
        result = self.results[name]
        result.seconds, result.worker = seconds, worker
        written = time.perf_counter()
        try:
            info = registry.add_fitted(name, model, train_images=self.categories[name])
        except (RegistryError, OSError, ValueError) as error:
            self.fail(name, f"could not store the category: {error}")
            return
        result.write_seconds = time.perf_counter() - written
        result.ok, result.version = True, info.version
        self.emit("ok", name, version=info.version)

    def report(self) -> FitReport:
        ordered = [self.results[name] for name in self.categories]
        return FitReport(categories=ordered, elapsed_seconds=time.perf_counter() - self.started, mode=self.mode)


def fit_categories(
    root: Path,
    categories: dict[str, list[Path]],
    model_params: dict[str, Any],
    ray_address: str | None,
    max_retries: int = 2,
    on_event: ProgressCallback | None = None,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    threads: int = 1,
) -> FitReport:
    """Fit ``categories`` (name -> train-good image paths) and store each as a new version.

    With ``ray_address`` each category is a Ray task (``num_cpus=threads``); the driver writes
    every result with :meth:`Registry.add_fitted` as it arrives, so the registry only ever sees
    complete categories. A task whose worker dies (crash, out-of-memory kill, lost node) is
    submitted again, at most ``max_retries`` times; an error raised by the fit itself (an
    unreadable image, too few images) fails that category at once. Without ``ray_address``
    the categories are fitted one after another in this process (no retries). The other
    categories are stored either way.

    Args:
        root: the registry folder (opened for writing by this process only).
        categories: category name -> image paths; names must be valid category names.
        model_params: :class:`CategoryModel` settings (``coreset_ratio``, ``calibration``, ``seed``, ...;
            see :data:`structcore.settings.FIT_PARAMETERS`); the others keep their defaults.
        ray_address: ``None`` (in-process), ``"local"``, ``"auto"`` or a cluster address.
        max_retries: resubmissions of a category after its worker died.
        on_event: receives a :class:`~structcore.progress.Progress` per submission (``started``),
            retry, success (``ok``) and failure (``failed``).
        batch_size: images per backbone call.
        threads: torch / faiss threads (and CPUs reserved) per Ray task. Banks are
            bit-identical to an in-process fit that uses the same number of torch threads.

    Returns:
        A :class:`FitReport` with one :class:`CategoryResult` per category, in input order.

    Raises:
        InvalidNameError: a category name is not valid (nothing is fitted).
        structcore.settings.InvalidSettingError: a setting outside its allowed values (a
            ``ValueError``; nothing is fitted).
        RegistryError: the registry cannot be opened, or Ray is needed but missing.
    """
    if not categories:
        raise ValueError("no categories to fit")
    for name in categories:
        validate_name(name)
    params = _check_params(model_params, batch_size)
    registry = Registry.open(root)
    try:
        if ray_address is None:
            return _fit_in_process(registry, categories, params, on_event, batch_size)
        return _fit_on_ray(registry, categories, params, ray_address, max_retries, on_event, batch_size, threads)
    finally:
        registry.close()


def _fit_in_process(
    registry: Registry,
    categories: Mapping[str, Sequence[Path]],
    params: dict[str, Any],
    on_event: ProgressCallback | None,
    batch_size: int,
) -> FitReport:
    job = _FitJob(categories, on_event, "in-process")
    extractor = registry.extractor(batch_size)
    for name in job.runnable():
        paths = job.categories[name]
        job.results[name].attempts = 1
        job.emit("started", name)
        started = time.perf_counter()
        try:
            model = _fit_model(extractor, paths, params)
        except Exception as error:  # as on Ray: this category fails, the others go on
            job.fail(name, str(error) or type(error).__name__)
            continue
        job.store(registry, name, model, time.perf_counter() - started, _where())
    return job.report()


def _fit_on_ray(
    registry: Registry,
    categories: Mapping[str, Sequence[Path]],
    params: dict[str, Any],
    address: str,
    max_retries: int,
    on_event: ProgressCallback | None,
    batch_size: int,
    threads: int,
) -> FitReport:
    registry.extractor(batch_size)  # fail here, not in every task, when the backbone is missing
    weights_path = registry.feature_space_info()["weights_path"]
    with ray_session(address) as ray:
        job = _FitJob(categories, on_event, f"ray:{address}")
        space_ref = ray.put(registry.feature_space)
        task = ray.remote(_fit_task).options(num_cpus=threads, max_retries=0)

        def submit(name: str) -> Any:
            job.results[name].attempts += 1
            paths = [str(p) for p in job.categories[name]]
            ref = task.remote(space_ref, weights_path, name, paths, params, batch_size, threads)
            job.emit("started", name)
            return ref

        running = {submit(name): name for name in job.runnable()}
        try:
            while running:
                ready, _ = ray.wait(list(running), num_returns=1)
                name = running.pop(ready[0])
                try:
                    output = ray.get(ready[0])
                except Exception as error:
                    result = job.results[name]
                    if _is_system_failure(ray, error) and result.attempts <= max_retries:
                        job.emit("retry", name, message=f"worker lost ({type(error).__name__}): {_cause(error)}")
                        running[submit(name)] = name
                    elif _is_system_failure(ray, error):
                        attempts = f"{result.attempts} attempt{'s' if result.attempts > 1 else ''}"
                        job.fail(name, f"worker lost after {attempts} ({type(error).__name__}): {_cause(error)}")
                    else:
                        job.fail(name, _cause(error))
                    continue
                if "error" in output:
                    job.results[name].worker = str(output["worker"])
                    job.fail(name, str(output["error"]))
                    continue
                model = CategoryModel.from_parts(output["arrays"], output["metadata"])
                job.store(registry, name, model, float(output["seconds"]), str(output["worker"]))
        except BaseException:
            for ref in running:
                with suppress(Exception):
                    ray.cancel(ref, force=True)
            raise
        return job.report()


# ----------------------------------------------------------------------------- inference
def plan_shards(total: int, batch_size: int, shard_size: int) -> list[tuple[int, int]]:
    """``[start, stop)`` of each shard; the shard size is rounded up to a multiple of ``batch_size``.

    Every shard therefore starts at a multiple of ``batch_size``, so the batches inside a shard
    are exactly the batches :meth:`Registry.predict` forms over the whole list.
    """
    if batch_size < 1 or shard_size < 1:
        raise ValueError(f"batch_size and shard_size must be positive, got {batch_size} and {shard_size}")
    size = -(-shard_size // batch_size) * batch_size
    return [(start, min(start + size, total)) for start in range(0, total, size)]


def _fetched(ref: Any, name: str, fetched: list[str]) -> Callable[[], CategoryModel]:
    """A loader that fetches one shipped category version from the object store (once per worker)."""

    def load() -> CategoryModel:
        import ray

        arrays, metadata = ray.get(ref)
        fetched.append(name)
        # Copies: the object store hands out read-only views, which torch refuses to wrap cleanly.
        return CategoryModel.from_parts({key: np.array(value) for key, value in arrays.items()}, metadata)

    return load


class _ShardScorer:
    """Ray actor: scores shards of image paths with one :class:`Detector` built from the shipped versions.

    ``shipped`` maps each category to ``(version, prototypes, metadata, object ref of (arrays,
    metadata))``: the versions the driver pinned, so every worker scores with them. A category's
    bank is fetched the first time an image is routed to it.
    """

    def __init__(
        self,
        space: FeatureSpace,
        weights_path: str | None,
        shipped: dict[str, tuple[int, np.ndarray, dict[str, Any], Any]],
        root: str,
        batch_size: int,
        threads: int,
        max_regions: int = DEFAULT_MAX_REGIONS,
    ):
        set_num_threads(threads)
        self._batch_size = batch_size
        self._shards = 0
        self._images = 0
        self.fetched: list[str] = []
        pinned = [
            PinnedCategory.of_stored(name, version, np.array(prototypes), metadata, _fetched(ref, name, self.fetched))
            for name, (version, prototypes, metadata, ref) in shipped.items()
        ]
        self._detector = Detector(
            extractor_for(space, weights_path, batch_size), pinned, source=root, max_regions=max_regions
        )

    def ready(self) -> str:
        """Where this actor runs (``host:pid``); returns once the backbone is built."""
        return _where()

    def report(self) -> dict[str, Any]:
        """Where the actor runs, the shards and images it scored and the models it fetched (each once)."""
        return {"worker": _where(), "shards": self._shards, "images": self._images, "fetched": list(self.fetched)}

    def score(self, start: int, paths: list[str], category: str | None) -> tuple[int, list[PredictionRecord]]:
        _fault_point(f"shard-{start}")
        try:
            records = self._detector.predict(paths, category, batch_size=self._batch_size)
        except Exception as error:  # returned, not raised: some exceptions do not unpickle in the driver
            records = [error_record(path, f"scoring failed: {error}") for path in paths]
        self._shards += 1
        self._images += len(paths)
        return start, records


def distributed_infer(
    root: Path,
    sources: list[Path],
    category: str | None,
    ray_address: str,
    out: Path | None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    shard_size: int = 64,
    progress: ProgressCallback | None = None,
    *,
    workers: int | None = None,
    threads: int = 1,
    max_retries: int = 2,
    stats: dict[str, Any] | None = None,
    max_regions: int = DEFAULT_MAX_REGIONS,
) -> list[PredictionRecord]:
    """Score ``sources`` (image paths) on Ray; the records equal :meth:`Registry.predict`'s.

    The driver opens the registry read-only and puts the feature space, the router and each
    needed category model (all current categories when routing, else ``category``) in the
    object store once. ``workers`` actors (default: the cluster's CPUs divided by
    ``threads``) each build a backbone once and fetch a model on first use. Shards of
    ``shard_size`` paths (rounded up to a multiple of ``batch_size``) are handed to the
    actors as they free up; a shard whose actor died is given to a new actor, at most
    ``max_retries`` times, after which its images get error records. Unreadable images get
    error records as in :meth:`Registry.predict`.

    Args:
        root: the registry folder (read by this process only).
        sources: image paths (readable by every worker: a shared file system).
        category: score against this category instead of routing.
        ray_address: ``"local"``, ``"auto"`` or a cluster address (see :func:`ray_session`).
        out: a ``.jsonl`` file; records are appended in input order as soon as they and all
            records before them are done (the same lines ``registry infer --out x.jsonl``
            writes). ``None``: nothing is written.
        batch_size: images per backbone call (the same batches as the single-machine path).
        shard_size: images per task.
        progress: receives ``Progress("predict", done, total)`` after each shard.
        workers: number of actors.
        threads: torch / faiss threads (and CPUs reserved) per actor. Scores are bit-identical
            to :meth:`Registry.predict` run with the same number of torch threads.
        max_retries: resubmissions of a shard after its actor died.
        max_regions: defect regions reported per record.
        stats: when given, filled with ``workers`` (per live actor: ``worker`` host:pid,
            ``shards``, ``images``, ``fetched`` categories), ``shards``, ``retries``,
            ``seconds`` (in all), ``startup_seconds`` (until every actor had its backbone)
            and ``images_per_second`` (after the start-up).

    Returns:
        One record per source, in input order.

    Raises:
        ValueError: ``out`` is not a ``.jsonl`` file, or bad sizes.
        RegistryError: no categories, unknown category, no Ray, or the workers cannot start.
    """
    if out is not None and out.suffix.lower() not in {".jsonl", ".ndjson"}:
        msg = f"distributed inference streams JSON lines; --out must end in .jsonl, got {out.name}"
        raise ValueError(msg)
    paths = [str(source) for source in sources]
    shards = plan_shards(len(paths), batch_size, shard_size)
    registry = Registry.open(root, read_only=True, cache_size=1)
    try:
        # Fails here when the backbone is missing or a category is unknown; pins the versions.
        detector = registry.detector(None if category is None else [category])
        if not len(detector):
            msg = f"the registry at {registry.root} has no categories; add one with `registry add-category`"
            raise RegistryError(msg)
        space = registry.feature_space
        weights_path = registry.feature_space_info()["weights_path"]
        stored = {name: registry.read_version(name, version) for name, version in detector.versions.items()}
        root_name = str(registry.root)
    finally:
        registry.close()
    if not paths:
        if out is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text("")
        return []
    with ray_session(ray_address) as ray:
        shipped = {
            name: (item.info.version, item.arrays["prototypes"], item.metadata, ray.put((item.arrays, item.metadata)))
            for name, item in stored.items()
        }
        del stored
        job = _InferJob(ray, paths, shards, out, progress, max_retries, stats)
        actor_class = ray.remote(_ShardScorer).options(num_cpus=threads, max_restarts=0, scheduling_strategy="SPREAD")
        init_args = (ray.put(space), weights_path, shipped, root_name, batch_size, threads, max_regions)
        if workers is None:
            cpus = float(ray.cluster_resources().get("CPU", 1))
            workers = max(1, int(cpus // threads))
        return job.run(lambda: actor_class.remote(*init_args), min(workers, len(shards)), category)


class _InferJob:
    """Dispatch, retry and in-order output of one :func:`distributed_infer` call."""

    def __init__(
        self,
        ray: Any,
        paths: list[str],
        shards: list[tuple[int, int]],
        out: Path | None,
        progress: ProgressCallback | None,
        max_retries: int,
        stats: dict[str, Any] | None = None,
    ):
        self.ray = ray
        self.stats = stats
        self.retries = 0
        self.started = time.perf_counter()
        self.ready_at = self.started
        self.paths = paths
        self.shards = shards
        self.out = out
        self.progress = progress
        self.max_retries = max_retries
        self.results: list[list[PredictionRecord] | None] = [None] * len(shards)
        self.attempts = [0] * len(shards)
        self.written = 0
        self.done = 0

    def run(self, new_actor: Callable[[], Any], n_workers: int, category: str | None) -> list[PredictionRecord]:
        ray = self.ray
        actors = [new_actor() for _ in range(n_workers)]
        try:
            ray.get([actor.ready.remote() for actor in actors])
        except ray.exceptions.RayError as error:
            msg = f"the inference workers could not start: {_cause(error)}"
            raise RegistryError(msg) from error
        self.ready_at = time.perf_counter()
        generation = [0] * n_workers
        pending = deque(range(len(self.shards)))
        running: dict[Any, tuple[int, int, int]] = {}  # ref -> (shard, actor slot, generation)
        handle = None
        if self.out is not None:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            handle = self.out.open("w")

        def submit(slot: int, depth: int = _SHARDS_PER_ACTOR) -> None:
            while pending and sum(1 for _, s, _ in running.values() if s == slot) < depth:
                shard = pending.popleft()
                self.attempts[shard] += 1
                start, stop = self.shards[shard]
                ref = actors[slot].score.remote(start, self.paths[start:stop], category)
                running[ref] = (shard, slot, generation[slot])

        try:
            for depth in range(1, _SHARDS_PER_ACTOR + 1):  # one shard per actor first, then the queue
                for slot in range(n_workers):
                    submit(slot, depth)
            while running:
                ready, _ = ray.wait(list(running), num_returns=1)
                shard, slot, gen = running.pop(ready[0])
                start, stop = self.shards[shard]
                try:
                    _, records = ray.get(ready[0])
                except Exception as error:
                    if not _is_system_failure(ray, error):
                        records = [error_record(p, f"scoring failed: {_cause(error)}") for p in self.paths[start:stop]]
                    else:
                        if gen == generation[slot]:  # the first failure seen from this actor: replace it
                            with suppress(Exception):
                                ray.kill(actors[slot])
                            actors[slot] = new_actor()
                            generation[slot] += 1
                        if self.attempts[shard] <= self.max_retries:
                            logger.warning("shard %d: worker lost (%s); retrying", shard, type(error).__name__)
                            self.retries += 1
                            pending.appendleft(shard)
                            submit(slot)
                            continue
                        message = f"worker lost after {self.attempts[shard]} attempts: {_cause(error)}"
                        records = [error_record(path, message) for path in self.paths[start:stop]]
                self.results[shard] = records
                self.done += stop - start
                self._flush(handle)
                if self.progress is not None:
                    self.progress(Progress("predict", self.done, len(self.paths)))
                submit(slot)
        except BaseException:
            for ref in running:  # actor tasks cannot be force-cancelled; the actors are killed below
                with suppress(Exception):
                    ray.cancel(ref)
            raise
        finally:
            if handle is not None:
                handle.flush()
                os.fsync(handle.fileno())
                handle.close()
            if self.stats is not None:
                self._fill_stats(actors)
            for actor in actors:
                with suppress(Exception):
                    ray.kill(actor)
        output: list[PredictionRecord] = []
        for records in self.results:
            assert records is not None
            output.extend(records)
        return output

    def _fill_stats(self, actors: list[Any]) -> None:
        assert self.stats is not None
        now = time.perf_counter()
        reports = []
        for actor in actors:
            with suppress(Exception):
                reports.append(self.ray.get(actor.report.remote(), timeout=30))
        self.stats.update(
            workers=reports,
            shards=len(self.shards),
            retries=self.retries,
            seconds=now - self.started,
            startup_seconds=self.ready_at - self.started,
            images_per_second=self.done / max(now - self.ready_at, 1e-9),
        )

    def _flush(self, handle: Any) -> None:
        """Append the shards that are now contiguous with what is written (input order)."""
        while self.written < len(self.results) and self.results[self.written] is not None:
            records = self.results[self.written]
            assert records is not None
            if handle is not None:
                handle.write("".join(json.dumps(record) + "\n" for record in records))
                handle.flush()
            self.written += 1


__all__ = [
    "FAULTS_ENV",
    "INSTALL_HINT",
    "CategoryResult",
    "FitReport",
    "distributed_infer",
    "fit_categories",
    "import_ray",
    "plan_shards",
    "ray_session",
]
