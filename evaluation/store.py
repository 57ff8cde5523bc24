"""Where the evaluated categories live: a small "category store" interface and two implementations.

The protocols (:mod:`evaluation.protocols`) need three things from a store: whether it already
holds a category (then it is not refitted), fitting one from train-good paths, and a
:class:`~registry.detector.Detector` over the evaluated categories: the same object that scores
``registry infer``'s images, so every score, threshold and decision in a report is the product's.
:class:`RegistryStore` adapts the persistent :class:`registry.Registry`; :class:`InMemoryStore`
keeps fitted :class:`~structcore.model.CategoryModel` objects in memory (fast tests, or runs
that should leave nothing on disk). Both fit through :func:`structcore.model.fit_category`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from registry import Registry
from registry.detector import Detector, MapCallback, PinnedCategory, PredictionRecord, Routing, ScoreMemo
from registry.records import DB_FILE
from structcore.features import FeatureExtractor
from structcore.model import CategoryModel, CategoryPrediction, fit_category
from structcore.preprocess import Preprocessing
from structcore.progress import ProgressCallback
from structcore.settings import DEFAULT_BACKBONE, DEFAULT_BATCH_SIZE, DEFAULT_CROP, DEFAULT_RESIZE

__all__ = [
    "CategoryStore",
    "Embedder",
    "InMemoryStore",
    "ModelLike",
    "RegistryStore",
    "Scorer",
    "open_registry_store",
]


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
    """What the reports read of a fitted category (:class:`CategoryModel` fits): thresholds, calibration."""

    calibration_scores_: dict[str, np.ndarray]

    @property
    def thresholds(self) -> dict[str, float]:
        """Decision thresholds for ``base``, ``struct`` and ``hybrid``."""
        ...

    def predict(self, patch_vectors: np.ndarray) -> CategoryPrediction:
        """Maps (B, H, W) and base / struct / hybrid scores of (B, P, D) patch vectors."""
        ...


class Scorer(Protocol):
    """What the protocols use of a :class:`~registry.detector.Detector` (which is one)."""

    @property
    def versions(self) -> Mapping[str, int]:
        """The pinned version of each category."""
        ...

    @property
    def extractor(self) -> Any:
        """The feature extractor (an :class:`Embedder`)."""
        ...

    def model(self, name: str) -> Any:
        """The fitted model of ``name`` (a :class:`ModelLike`)."""
        ...

    def restricted_to(self, names: Sequence[str]) -> Scorer:
        """The same versions, routing among ``names`` only."""
        ...

    def route(
        self,
        patch_vectors: np.ndarray,
        category: str | None = None,
        *,
        sizes: Sequence[tuple[int, int] | None] | None = None,
    ) -> Routing:
        """Chosen category, route score and unknown score per image (``sizes``: originals, for ``fit``)."""
        ...

    def score_vectors(
        self,
        patch_vectors: np.ndarray,
        names: Sequence[str],
        category: str | None = None,
        *,
        on_map: MapCallback | None = None,
        memo: ScoreMemo | None = None,
        sizes: Sequence[tuple[int, int] | None] | None = None,
    ) -> list[PredictionRecord]:
        """The records ``registry infer`` gives for these embedded images (``sizes``: their own (width, height))."""
        ...


@runtime_checkable
class CategoryStore(Protocol):
    """A collection of fitted categories sharing one feature space."""

    def has(self, name: str) -> bool:
        """Whether ``name`` is already fitted (then the protocols reuse it)."""
        ...

    def add(self, name: str, train_paths: Sequence[Path], progress: ProgressCallback | None = None) -> None:
        """Embed ``train_paths`` and fit ``name``."""
        ...

    def detector(self, names: Sequence[str]) -> Scorer:
        """A Detector over ``names`` (their current versions, routing among them)."""
        ...

    def extractor(self) -> Any:
        """The feature extractor of the store's feature space (the ``update`` variant embeds with it)."""
        ...

    def describe(self) -> dict[str, Any]:
        """JSON-compatible description (kind, feature space, settings) for the results file."""
        ...


class InMemoryStore:
    """Categories fitted and kept in memory.

    Args:
        extractor: the feature extractor.
        model_factory: makes an unfitted model giving the settings per category (default
            :class:`CategoryModel`).
        description: extra JSON-compatible facts for :meth:`describe`.
    """

    def __init__(
        self,
        extractor: FeatureExtractor,
        model_factory: Callable[[], CategoryModel] = CategoryModel,
        description: dict[str, Any] | None = None,
    ):
        self._extractor = extractor
        self._factory = model_factory
        self._models: dict[str, CategoryModel] = {}
        self._versions: dict[str, int] = {}
        self._description = dict(description or {})

    def has(self, name: str) -> bool:
        """Whether ``name`` is fitted."""
        return name in self._models

    def put(self, name: str, model: CategoryModel) -> None:
        """Store an already fitted model under ``name`` (its next version)."""
        self._models[name] = model
        self._versions[name] = self._versions.get(name, 0) + 1

    def add(self, name: str, train_paths: Sequence[Path], progress: ProgressCallback | None = None) -> None:
        """Embed ``train_paths`` and fit a new model for ``name`` (replacing an older one)."""
        self.put(name, fit_category(self._extractor, list(train_paths), self._factory(), progress, category=name))

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

    def detector(self, names: Sequence[str] | None = None) -> Detector:
        """A :class:`Detector` over ``names`` (all stored categories by default), in that order."""
        chosen = list(self._models) if names is None else list(names)
        pinned = [PinnedCategory.of_model(name, self._versions[name], self.load(name)) for name in chosen]
        return Detector(self._extractor, pinned)

    def extractor(self) -> FeatureExtractor:
        """The feature extractor of the store's feature space."""
        return self._extractor

    def describe(self) -> dict[str, Any]:
        """Kind, geometry and grid of the store."""
        geometry = self._extractor.geometry
        return {
            "kind": "memory",
            "resize": geometry.resize,
            "crop": geometry.crop,
            "input_geometry": geometry.input_geometry,
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

    def __init__(self, registry: Registry, model: CategoryModel | None = None, batch_size: int = DEFAULT_BATCH_SIZE):
        self.registry = registry
        self.model = model
        self.batch_size = batch_size

    def has(self, name: str) -> bool:
        """Whether the registry holds ``name`` (its current version is reused)."""
        return name in self.registry.names()

    def add(self, name: str, train_paths: Sequence[Path], progress: ProgressCallback | None = None) -> None:
        """Fit ``name`` into the registry (a new version when it exists)."""
        self.registry.add_category(
            name,
            [str(path) for path in train_paths],
            model=self.model,
            progress=progress,
            batch_size=self.batch_size,
            description="fitted by registry eval",
        )

    def detector(self, names: Sequence[str] | None = None) -> Detector:
        """The registry's :meth:`~registry.Registry.detector` over ``names`` (all categories by default)."""
        return self.registry.detector(names, batch_size=self.batch_size)

    def extractor(self) -> FeatureExtractor:
        """The registry's feature extractor."""
        return self.registry.extractor(self.batch_size)

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
