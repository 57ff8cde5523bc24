"""Routed inference over a registry: embed a batch, route it, score each image against its category.

An unreadable image gives a record with ``error`` set; the other images of its batch are
still scored. So does an image routed to a category that cannot be loaded (a damaged store):
the images of the other categories are still scored.

One call scores every image with the category versions it saw when it started: the versions
of the router it routes with, or the version current when it started for a named category. A
refit committed meanwhile is used by the next call.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypedDict

import numpy as np
from PIL import Image

from registry.errors import RegistryError
from structcore.image_files import ImageReadError
from structcore.preprocess import load_image, preprocess_image
from structcore.settings import DEFAULT_BATCH_SIZE

if TYPE_CHECKING:
    from structcore.features import FeatureExtractor, ImageSource
    from structcore.model import CategoryModel
    from structcore.routing import PrototypeRouter


class ModelSource(Protocol):
    """All that routed inference reads: a router pinned to category versions, a category loader, the extractor.

    :class:`registry.Registry` is one (reading its folder); the Ray workers of
    :mod:`registry.distributed` hold another (serving state shipped by the driver).
    """

    @property
    def root(self) -> str | Path:
        """Where the categories come from (for messages)."""
        ...

    def routing(self) -> tuple[PrototypeRouter, Mapping[str, int]]:
        """The router and the version of each category in it, read together."""
        ...

    def current_version(self, name: str) -> int:
        """The version of ``name`` that scores when the category is named instead of routed."""
        ...

    def load_category(self, name: str, version: int) -> CategoryModel:
        """The fitted model of one category version."""
        ...

    def extractor(self, batch_size: int = DEFAULT_BATCH_SIZE) -> FeatureExtractor:
        """The feature extractor of the registry's feature space."""
        ...


class PredictionRecord(TypedDict):
    """The result for one image (scores are ``None`` when ``error`` is set)."""

    path: str
    category: str | None
    route_score: float | None
    unknown: bool | None
    unknown_score: float | None
    score_base: float | None
    score_struct: float | None
    score_hybrid: float | None
    threshold: float | None
    anomalous: bool | None
    error: str | None


#: ``on_image(record, image, anomaly_map, map_threshold)``: the preprocessed crop (3, H, W) float in
#: [0, 1], its anomaly map (H, W) and the base threshold of the category version that scored it
#: (the map's own scale: a pixel above it is as anomalous as the worst train-good image), for each
#: successfully scored image.
ImageCallback = Callable[[PredictionRecord, np.ndarray, np.ndarray, float], None]


def _name(source: object, index: int) -> str:
    return str(source) if isinstance(source, str | Path) else f"<in-memory image {index}>"


def _error_record(path: str, message: str) -> PredictionRecord:
    return PredictionRecord(
        path=path,
        category=None,
        route_score=None,
        unknown=None,
        unknown_score=None,
        score_base=None,
        score_struct=None,
        score_hybrid=None,
        threshold=None,
        anomalous=None,
        error=message,
    )


def predict(
    registry: ModelSource,
    sources: Sequence[ImageSource],
    category: str | None = None,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    on_batch: Callable[[int, int], None] | None = None,
    on_image: ImageCallback | None = None,
) -> list[PredictionRecord]:
    """Score ``sources`` with the registry's categories.

    With ``category=None`` each image is routed to the category whose prototypes are nearest
    and scored there. ``unknown_score`` says how unlike every registered product the image is
    (the smallest per-category unknown ratio, see :mod:`structcore.routing`; ``unknown`` is
    ``unknown_score > 1``): a defective image of a registered product stays known, an image of
    a product the registry does not hold is flagged (it is still scored against the nearest
    category). With a category, every image is scored against it and ``route_score``,
    ``unknown_score`` and ``unknown`` are measured against that category alone.

    Args:
        registry: an open :class:`registry.Registry`, or any other :class:`ModelSource`.
        sources: image paths, PIL images or arrays.
        category: score against this category instead of routing.
        batch_size: images per backbone call.
        on_batch: ``on_batch(done, total)`` after each batch.
        on_image: ``on_image(record, image, anomaly_map)`` per scored image (see :data:`ImageCallback`).

    Returns:
        One :class:`PredictionRecord` per source, in order. ``threshold`` is the hybrid
        threshold and ``anomalous`` is ``score_hybrid > threshold``.
    """
    router: PrototypeRouter | None
    if category is None:
        router, versions = registry.routing()
        if not router.categories_:
            msg = (
                f"the registry at {registry.root} has no categories; "
                "add one with `registry add-category NAME --train DIR`"
            )
            raise RegistryError(msg)
    else:
        version = registry.current_version(category)
        registry.load_category(category, version)  # fail early on an unknown or damaged category
        versions = {category: version}
        router = None
    failed: dict[str, str] = {}

    def load(name: str) -> CategoryModel | None:
        """The model of ``name`` at the version this call uses; ``None`` (and a message) when it cannot be loaded."""
        if name in failed:
            return None
        try:
            return registry.load_category(name, versions[name])
        except RegistryError as error:
            failed[name] = str(error)
            return None

    extractor = registry.extractor(batch_size)
    records: list[PredictionRecord] = []
    total = len(sources)
    for start in range(0, total, batch_size):
        batch = sources[start : start + batch_size]
        names = [_name(source, start + i) for i, source in enumerate(batch)]
        batch_records: list[PredictionRecord | None] = [None] * len(batch)
        images: list[Image.Image | np.ndarray] = []
        positions: list[int] = []
        for i, source in enumerate(batch):
            try:
                images.append(load_image(source) if isinstance(source, str | Path) else source)
                positions.append(i)
            except ImageReadError as error:
                batch_records[i] = _error_record(names[i], str(error))
        if images:
            vectors = extractor.embed(extractor.prepare(images)).numpy()
            if router is not None:
                routed = router.route(vectors)
                chosen = list(routed.categories)
                route_scores = np.asarray(routed.route_scores, dtype=np.float64)
                assert routed.unknown_scores is not None
                unknown_scores = np.asarray(routed.unknown_scores, dtype=np.float64)
            else:
                assert category is not None
                own = load(category)
                if own is None:
                    raise RegistryError(failed[category])
                chosen = [category] * len(images)
                route_scores = np.asarray(own.route_score(vectors), dtype=np.float64)
                unknown_scores = np.asarray(own.unknown_score(vectors), dtype=np.float64)
            for name in dict.fromkeys(chosen):
                rows = [j for j, c in enumerate(chosen) if c == name]
                model = load(name)
                if model is None:
                    for j in rows:
                        batch_records[positions[j]] = _error_record(names[positions[j]], failed[name])
                    continue
                prediction = model.predict(vectors[rows])
                scores = prediction.scores
                threshold = float(model.thresholds["hybrid"])
                for k, j in enumerate(rows):
                    hybrid = float(scores.hybrid[k])
                    batch_records[positions[j]] = PredictionRecord(
                        path=names[positions[j]],
                        category=name,
                        route_score=float(route_scores[j]),
                        unknown=bool(unknown_scores[j] > 1.0),
                        unknown_score=float(unknown_scores[j]),
                        score_base=float(scores.base[k]),
                        score_struct=float(scores.struct[k]),
                        score_hybrid=hybrid,
                        threshold=threshold,
                        anomalous=hybrid > threshold,
                        error=None,
                    )
                    if on_image is not None:
                        record = batch_records[positions[j]]
                        assert record is not None
                        crop = preprocess_image(images[j], extractor.geometry)
                        on_image(record, crop, prediction.maps[k], float(model.thresholds["base"]))
        for record in batch_records:
            assert record is not None
            records.append(record)
        if on_batch is not None:
            on_batch(min(start + batch_size, total), total)
    return records


__all__ = ["ImageCallback", "ModelSource", "PredictionRecord", "predict"]
