"""Where the evaluated categories live: a small "category store" interface and two implementations.

The protocols (:mod:`evaluation.protocols`) need only five things from a store: whether it
already holds a category (then it is not refitted), fitting one from train-good paths, the
fitted model of a category, a router over its categories, and a feature extractor.
:class:`RegistryStore` adapts the persistent :class:`registry.Registry`; :class:`InMemoryStore`
keeps fitted :class:`~structcore.model.CategoryModel` objects in memory (fast tests, or runs
that should leave nothing on disk) and works with any extractor, including fake ones.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from registry import Registry
from registry.records import DB_FILE
from structcore.model import CategoryModel, CategoryPrediction
from structcore.preprocess import Preprocessing
from structcore.routing import PrototypeRouter
from structcore.settings import DEFAULT_BACKBONE, DEFAULT_BATCH_SIZE, DEFAULT_CROP, DEFAULT_RESIZE

__all__ = [
    "BatchProgress",
    "CategoryStore",
    "Embedder",
    "InMemoryStore",
    "ModelLike",
    "RegistryStore",
    "RouterLike",
    "open_registry_store",
]

#: ``on_batch(done, total)`` after each embedded batch.
BatchProgress = Callable[[int, int], None]


@runtime_checkable
class Embedder(Protocol):
    """What the protocols need of a feature extractor (:class:`structcore.features.FeatureExtractor` fits)."""

    geometry: Preprocessing

    def grid_shape(self) -> tuple[int, int]:
        """Patch grid (h, w)."""
        ...

    def iter_embeddings(self, sources: Sequence[Any]) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(start index, (b, P, D) float32 patch vectors)`` per batch of ``sources``."""
        ...


class ModelLike(Protocol):
    """What the protocols need of a fitted category (:class:`CategoryModel` fits)."""

    calibration_scores_: dict[str, np.ndarray]

    @property
    def thresholds(self) -> dict[str, float]:
        """Decision thresholds for ``base``, ``struct`` and ``hybrid``."""
        ...

    def predict(self, patch_vectors: np.ndarray) -> CategoryPrediction:
        """Maps (B, H, W) and base / struct / hybrid scores of (B, P, D) patch vectors."""
        ...


class RouterLike(Protocol):
    """What the protocols need of a router (:class:`structcore.routing.PrototypeRouter` fits).

    ``scores`` returns one column per entry of ``categories_``, lower = closer; a category's
    column must not depend on which other categories the router holds (true of prototype
    routing: adding a category never changes another's prototypes). The continual protocol
    relies on this to evaluate every step from one pass over the test images.
    """

    categories_: list[str]
    thresholds_: list[float]

    def scores(self, patch_vectors: np.ndarray) -> np.ndarray:
        """Route scores (B, C) of patch vectors (B, P, D)."""
        ...


class OpenSetRouterLike(RouterLike, Protocol):
    """A router the ``open-set`` protocol can use: it also gives per-category unknown ratios."""

    def score_all(self, patch_vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Route scores (B, C) and unknown ratios (B, C; ``> 1`` = unlike that category)."""
        ...


@runtime_checkable
class CategoryStore(Protocol):
    """A collection of fitted categories sharing one feature space."""

    def has(self, name: str) -> bool:
        """Whether ``name`` is already fitted (then the protocols reuse it)."""
        ...

    def add(self, name: str, train_paths: Sequence[Path], on_batch: BatchProgress | None = None) -> None:
        """Embed ``train_paths`` and fit ``name``."""
        ...

    def load(self, name: str) -> ModelLike:
        """The fitted model of ``name``."""
        ...

    def router(self) -> RouterLike:
        """A router over every category of the store."""
        ...

    def extractor(self) -> Embedder:
        """The feature extractor of the store's feature space."""
        ...

    def describe(self) -> dict[str, Any]:
        """JSON-compatible description (kind, feature space, settings) for the results file."""
        ...


def _embed(extractor: Embedder, sources: Sequence[Any], on_batch: BatchProgress | None) -> np.ndarray:
    parts: list[np.ndarray] = []
    done = 0
    for _start, batch in extractor.iter_embeddings(sources):
        parts.append(np.asarray(batch, dtype=np.float32))
        done += len(batch)
        if on_batch is not None:
            on_batch(done, len(sources))
    return np.concatenate(parts) if parts else np.empty((0, 0, 0), dtype=np.float32)


class InMemoryStore:
    """Categories fitted and kept in memory.

    Args:
        extractor: the feature extractor (a real :class:`~structcore.features.FeatureExtractor`
            or any object with ``geometry``, ``grid_shape()`` and ``iter_embeddings()``).
        model_factory: makes an unfitted model per category (default :class:`CategoryModel`);
            its result must have ``fit(patch_vectors, grid, map_size)``, ``prototypes_`` and
            ``route_threshold_`` (a :class:`CategoryModel`).
        description: extra JSON-compatible facts for :meth:`describe`.
    """

    def __init__(
        self,
        extractor: Embedder,
        model_factory: Callable[[], CategoryModel] = CategoryModel,
        description: dict[str, Any] | None = None,
    ):
        self._extractor = extractor
        self._factory = model_factory
        self._models: dict[str, CategoryModel] = {}
        self._description = dict(description or {})

    def has(self, name: str) -> bool:
        """Whether ``name`` is fitted."""
        return name in self._models

    def put(self, name: str, model: CategoryModel) -> None:
        """Store an already fitted model under ``name``."""
        self._models[name] = model

    def add(self, name: str, train_paths: Sequence[Path], on_batch: BatchProgress | None = None) -> None:
        """Embed ``train_paths`` and fit a new model for ``name`` (replacing an older one)."""
        vectors = _embed(self._extractor, list(train_paths), on_batch)
        model = self._factory()
        model.fit(vectors, self._extractor.grid_shape(), self._extractor.geometry.crop)
        self._models[name] = model

    def load(self, name: str) -> CategoryModel:
        """The fitted model of ``name``."""
        try:
            return self._models[name]
        except KeyError:
            msg = f"category {name!r} is not in the store; known: {', '.join(self._models) or 'none'}"
            raise KeyError(msg) from None

    def names(self) -> list[str]:
        """Stored category names, in insertion order."""
        return list(self._models)

    def router(self) -> PrototypeRouter:
        """A :class:`PrototypeRouter` over all stored categories."""
        router = PrototypeRouter()
        for name, model in self._models.items():
            router.add(name, model.prototypes_, model.route_threshold_, **model.unknown_rule())
        return router

    def extractor(self) -> Embedder:
        """The extractor given at construction."""
        return self._extractor

    def describe(self) -> dict[str, Any]:
        """Kind, geometry and grid of the store."""
        geometry = self._extractor.geometry
        return {
            "kind": "memory",
            "resize": geometry.resize,
            "crop": geometry.crop,
            "grid": list(self._extractor.grid_shape()),
            **self._description,
        }


class RegistryStore:
    """Adapter of a persistent :class:`registry.Registry` to :class:`CategoryStore`.

    Args:
        registry: an open, writable (for fitting) :class:`registry.Registry`.
        model: the settings of categories fitted by the evaluation (an unfitted
            :class:`CategoryModel`; default settings when ``None``).
        batch_size: images per backbone call.
    """

    def __init__(self, registry: Any, model: CategoryModel | None = None, batch_size: int = DEFAULT_BATCH_SIZE):
        self.registry = registry
        self.model = model
        self.batch_size = batch_size
        self._extractor: Embedder | None = None

    def has(self, name: str) -> bool:
        """Whether the registry holds ``name`` (its current version is reused)."""
        return name in self.registry.names()

    def add(self, name: str, train_paths: Sequence[Path], on_batch: BatchProgress | None = None) -> None:
        """Fit ``name`` into the registry (a new version when it exists)."""
        self.registry.add_category(
            name,
            [str(path) for path in train_paths],
            model=self.model,
            on_batch=on_batch,
            batch_size=self.batch_size,
            description="fitted by registry eval",
        )

    def load(self, name: str) -> CategoryModel:
        """The current version of ``name``."""
        model: CategoryModel = self.registry.load_category(name)
        return model

    def router(self) -> PrototypeRouter:
        """The registry's router over the current version of every category."""
        router: PrototypeRouter = self.registry.load_router()
        return router

    def extractor(self) -> Embedder:
        """The registry's feature extractor (built once)."""
        if self._extractor is None:
            self._extractor = self.registry.extractor(self.batch_size)
        return self._extractor

    def describe(self) -> dict[str, Any]:
        """Root and feature space of the registry."""
        info: dict[str, Any] = {"kind": "registry", "root": str(self.registry.root)}
        try:
            info["feature_space"] = self.registry.feature_space_info()
        except Exception as error:  # pragma: no cover - description only
            info["feature_space_error"] = str(error)
        return info


def open_registry_store(
    root: str | Path,
    *,
    backbone: str = DEFAULT_BACKBONE,
    weights: str | Path | None = None,
    resize: int = DEFAULT_RESIZE,
    crop: int = DEFAULT_CROP,
    model: CategoryModel | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> RegistryStore:
    """Open the registry at ``root``, creating it (with the given feature space) when absent.

    An existing registry keeps its own feature space; ``backbone``, ``resize`` and ``crop``
    only apply to a new one.
    """
    root = Path(root)
    if (root / DB_FILE).is_file():
        registry = Registry.open(root, weights=weights)
    else:
        registry = Registry.init(root, backbone=backbone, weights=weights, resize=resize, crop=crop)
    return RegistryStore(registry, model=model, batch_size=batch_size)
