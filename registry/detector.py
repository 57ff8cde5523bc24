"""The :class:`Detector`: an immutable, version-pinned snapshot of category versions that scores images.

A Detector holds the router over its categories, the fitted model of each category version
(loaded on first use) and the feature extractor. It is built by :meth:`registry.Registry.detector`
(from a registry folder), by the Ray workers of :mod:`registry.distributed` (from the arrays the
driver shipped) and by the evaluation's in-memory store (from models fitted in memory); every
image that ``registry infer``, ``registry serve`` and ``registry eval`` scores goes through
:meth:`Detector.score_vectors`.

An unreadable image gives a record with ``error`` set; the other images of its batch are still
scored. So does an image routed to a category that cannot be loaded (a damaged store): the images
of the other categories are still scored. Every record names the category ``version`` that scored
it and the ``threshold`` that decided it, so a refit committed while a Detector lives is used by
the next Detector, never mixed into this one's records.
"""

from __future__ import annotations

import dataclasses
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TypedDict

import numpy as np
from PIL import Image

from registry.errors import BackboneLoadError, FeatureSpaceMismatchError, RegistryError
from structcore.backbones.base import Backbone, BackboneError, create_backbone
from structcore.feature_space import FeatureSpace
from structcore.features import FeatureExtractor, ImageSource, build_extractor
from structcore.image_files import ImageReadError
from structcore.model import CategoryModel
from structcore.preprocess import load_image, preprocess_image
from structcore.progress import Progress, ProgressCallback
from structcore.regions import Region, find_regions, map_at_original_size, regions_at_original_size
from structcore.routing import DEFAULT_SHORTLIST, DEFAULT_UNKNOWN_STATISTIC, PrototypeRouter
from structcore.settings import DEFAULT_BATCH_SIZE, DEFAULT_MAX_REGIONS

#: Category models kept loaded per Detector (LRU) when they are read from a registry folder.
DEFAULT_CACHE_SIZE = 8


class PredictionRecord(TypedDict):
    """The result for one image (scores are ``None`` when ``error`` is set).

    ``version`` is the category version that scored the image and ``threshold`` the hybrid
    threshold of that version that decided ``anomalous``.
    """

    path: str
    category: str | None
    version: int | None
    route_score: float | None
    unknown: bool | None
    unknown_score: float | None
    score_base: float | None
    score_struct: float | None
    score_hybrid: float | None
    threshold: float | None
    anomalous: bool | None
    error: str | None
    #: Connected areas of the map (at the image's original size) above the category's map
    #: threshold, largest first (:func:`structcore.regions.find_regions`); ``None`` with ``error``.
    regions: list[Region] | None


#: ``on_image(record, image, anomaly_map, map_threshold)``: the preprocessed crop (3, H, W) float in
#: [0, 1], its anomaly map (H, W) and the base threshold of the category version that scored it
#: (the map's own scale: a pixel above it is as anomalous as the worst train-good image), for each
#: successfully scored image.
ImageCallback = Callable[[PredictionRecord, np.ndarray, np.ndarray, float], None]
#: ``on_map(row, record, anomaly_map, map_threshold)``: as :data:`ImageCallback` without the image,
#: ``row`` being the image's index in the scored batch.
MapCallback = Callable[[int, PredictionRecord, np.ndarray, float], None]
#: ``on_full_map(row, record, full_map, map_threshold)``: the anomaly map at the image's original
#: size (height, width), the one its ``regions`` come from.
FullMapCallback = Callable[[int, PredictionRecord, np.ndarray, float], None]


def error_record(path: str, message: str) -> PredictionRecord:
    """The record of an image that could not be scored."""
    return PredictionRecord(
        path=path,
        category=None,
        version=None,
        route_score=None,
        unknown=None,
        unknown_score=None,
        score_base=None,
        score_struct=None,
        score_hybrid=None,
        threshold=None,
        anomalous=None,
        error=message,
        regions=None,
    )


@dataclass(frozen=True)
class ImageScore:
    """One image scored by one category version: base / struct / hybrid scores and its anomaly map."""

    base: float
    struct: float
    hybrid: float
    anomaly_map: np.ndarray


#: Scores by ``(image name, category)``: lets a caller score one embedding under several routings
#: (the evaluation's protocols) with one kNN search per image and category.
ScoreMemo = MutableMapping[tuple[str, str], ImageScore]


@dataclass(frozen=True)
class Routing:
    """Where a batch goes: the chosen category, its route score and the unknown score per image.

    ``unknown_scores`` is the smallest per-category unknown ratio over the Detector's categories
    (or the forced category's own); ``unknown`` is ``unknown_scores > 1``.
    """

    categories: list[str]
    route_scores: np.ndarray
    unknown_scores: np.ndarray

    @property
    def unknown(self) -> np.ndarray:
        """Per image: unlike every category (``unknown_score > 1``)."""
        return np.asarray(self.unknown_scores > 1.0)


@dataclass(frozen=True)
class PinnedCategory:
    """One category version of a Detector: what routing needs now, the model on first use.

    ``load`` returns the fitted :class:`CategoryModel` of exactly this version (it may read a
    store, fetch shipped arrays, or return a model held in memory).
    """

    name: str
    version: int
    prototypes: np.ndarray
    route_threshold: float
    unknown_threshold: float | None
    unknown_statistic: str
    far_threshold: float | None
    load: Callable[[], CategoryModel]

    @classmethod
    def of_model(cls, name: str, version: int, model: CategoryModel) -> PinnedCategory:
        """A category version held in memory by its fitted model."""
        return cls(
            name=name,
            version=version,
            prototypes=model.prototypes_,
            route_threshold=float(model.route_threshold_),
            **model.unknown_rule(),
            load=lambda: model,
        )

    @classmethod
    def of_stored(
        cls,
        name: str,
        version: int,
        prototypes: np.ndarray,
        metadata: Mapping[str, object],
        load: Callable[[], CategoryModel],
    ) -> PinnedCategory:
        """A stored category version: its prototypes and metadata now, ``load`` for the model on first use."""
        params = metadata.get("params")
        statistic = params.get("unknown_statistic") if isinstance(params, dict) else None
        return cls(
            name=name,
            version=version,
            prototypes=np.asarray(prototypes, dtype=np.float32),
            route_threshold=float(metadata["route_threshold"]),  # type: ignore[arg-type]
            unknown_threshold=_optional_float(metadata.get("unknown_threshold")),
            unknown_statistic=str(statistic or DEFAULT_UNKNOWN_STATISTIC),
            far_threshold=_optional_float(metadata.get("far_threshold")),
            load=load,
        )


def _optional_float(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]


class Detector:
    """A fixed set of category versions that scores images: router, category models, extractor.

    Immutable: its versions never change (build a new Detector to see a refit). Category models
    are loaded on first use and kept (at most ``cache_size`` of them when given). Use one
    Detector from one thread at a time.

    Args:
        extractor: the feature extractor of the categories' feature space.
        categories: the pinned category versions (their order is the router's).
        source: where the categories come from (for messages), e.g. the registry folder.
        cache_size: loaded models kept (LRU); ``None`` keeps every model it loads.
        shortlist: the router's shortlist (see :class:`~structcore.routing.PrototypeRouter`).
        max_regions: defect regions reported per record (largest first; 0: none).
    """

    def __init__(
        self,
        extractor: FeatureExtractor,
        categories: Sequence[PinnedCategory],
        *,
        source: str | Path = "<memory>",
        cache_size: int | None = None,
        shortlist: int | None = DEFAULT_SHORTLIST,
        max_regions: int = DEFAULT_MAX_REGIONS,
    ):
        if max_regions < 0:
            raise ValueError(f"max_regions must be >= 0, got {max_regions}")
        self._max_regions = int(max_regions)
        self._extractor = extractor
        self._pinned = {pinned.name: pinned for pinned in categories}
        if len(self._pinned) != len(categories):
            raise ValueError("a Detector holds each category once")
        self._source = str(source)
        self._cache_size = cache_size
        self._shortlist = shortlist
        self._models: OrderedDict[str, CategoryModel] = OrderedDict()
        self._lock = threading.Lock()
        router = PrototypeRouter(shortlist=shortlist)
        for pinned in categories:
            router.add(
                pinned.name,
                pinned.prototypes,
                pinned.route_threshold,
                unknown_threshold=pinned.unknown_threshold,
                unknown_statistic=pinned.unknown_statistic,
                far_threshold=pinned.far_threshold,
            )
        self._router = router

    # ----------------------------------------------------------------- what it holds
    @property
    def versions(self) -> Mapping[str, int]:
        """The version of each category this Detector scores with (read-only)."""
        return MappingProxyType({name: pinned.version for name, pinned in self._pinned.items()})

    @property
    def categories(self) -> list[str]:
        """Its category names, in router order."""
        return list(self._pinned)

    @property
    def source(self) -> str:
        """Where its categories come from."""
        return self._source

    @property
    def extractor(self) -> FeatureExtractor:
        """The feature extractor."""
        return self._extractor

    @property
    def router(self) -> PrototypeRouter:
        """The router over its categories (do not modify it)."""
        return self._router

    def __len__(self) -> int:
        return len(self._pinned)

    def __repr__(self) -> str:
        pinned = ", ".join(f"{name} v{version}" for name, version in self.versions.items())
        return f"Detector({self._source!r}: {pinned or 'no categories'})"

    def model(self, name: str) -> CategoryModel:
        """The fitted model of ``name`` at its pinned version (loaded on first use).

        Raises:
            RegistryError: ``name`` is not one of its categories, or its model cannot be loaded.
        """
        if name not in self._pinned:
            known = ", ".join(self._pinned) or "none"
            raise RegistryError(f"category {name!r} is not in this detector (it holds: {known})")
        with self._lock:
            model = self._models.get(name)
            if model is not None:
                self._models.move_to_end(name)
                return model
        model = self._pinned[name].load()
        with self._lock:
            self._models[name] = model
            while self._cache_size is not None and len(self._models) > max(1, self._cache_size):
                self._models.popitem(last=False)
        return model

    def restricted_to(self, names: Sequence[str]) -> Detector:
        """A Detector over ``names`` only (same versions, models shared): routes among them alone.

        A category's router column does not depend on the other categories, so this routes as a
        registry holding only ``names`` would (the continual and open-set protocols use it).
        """
        missing = [name for name in names if name not in self._pinned]
        if missing:
            raise RegistryError(f"not in this detector: {', '.join(missing)}")
        subset = Detector(
            self._extractor,
            [dataclasses.replace(self._pinned[name], load=self._loader(name)) for name in names],
            source=self._source,
            cache_size=self._cache_size,
            shortlist=self._shortlist,
            max_regions=self._max_regions,
        )
        return subset

    @property
    def max_regions(self) -> int:
        """Defect regions reported per record."""
        return self._max_regions

    def with_max_regions(self, max_regions: int) -> Detector:
        """This Detector reporting at most ``max_regions`` regions per record (same versions, models shared)."""
        if max_regions < 0:
            raise ValueError(f"max_regions must be >= 0, got {max_regions}")
        if max_regions == self._max_regions:
            return self
        other = self.restricted_to(list(self._pinned))
        other._max_regions = int(max_regions)
        return other

    def _loader(self, name: str) -> Callable[[], CategoryModel]:
        return lambda: self.model(name)

    # ----------------------------------------------------------------- scoring
    def route(
        self,
        patch_vectors: np.ndarray,
        category: str | None = None,
        *,
        sizes: Sequence[tuple[int, int] | None] | None = None,
    ) -> Routing:
        """Route patch vectors (B, P, D): the nearest category, or ``category`` when it is forced.

        With a forced category the route and unknown scores are measured against it alone.
        ``sizes``: each image's original (width, height), which the ``fit`` geometry needs (only
        the patches of the image's content count).
        """
        valid = self._valid(patch_vectors, sizes)
        if category is None:
            if not self._pinned:
                msg = (
                    f"the registry at {self._source} has no categories; "
                    "add one with `registry add-category NAME --train DIR`"
                )
                raise RegistryError(msg)
            routed = self._router.route(patch_vectors, valid)
            assert routed.unknown_scores is not None
            return Routing(
                categories=list(routed.categories),
                route_scores=np.asarray(routed.route_scores, dtype=np.float64),
                unknown_scores=np.asarray(routed.unknown_scores, dtype=np.float64),
            )
        own = self.model(category)
        return Routing(
            categories=[category] * len(patch_vectors),
            route_scores=np.asarray(own.route_score(patch_vectors, valid), dtype=np.float64),
            unknown_scores=np.asarray(own.unknown_score(patch_vectors, valid), dtype=np.float64),
        )

    def _contents(self, count: int, sizes: Sequence[tuple[int, int] | None] | None) -> np.ndarray | None:
        """``fit`` geometry: each image's content (height, width) in the model's square; ``None`` for squash.

        ``tile``: each image's tiled (height, width).
        """
        extractor = self._extractor
        if not extractor.geometry.masks_content or count == 0:
            return None
        if sizes is None or len(sizes) != count or any(size is None for size in sizes):
            geometry = extractor.geometry.input_geometry
            msg = f"the {geometry} geometry needs each image's original size (sizes) to know its padding"
            raise ValueError(msg)
        return extractor.contents([size for size in sizes if size is not None])

    def _valid(self, patch_vectors: np.ndarray, sizes: Sequence[tuple[int, int] | None] | None) -> np.ndarray | None:
        """``fit`` / ``tile``: the valid patches (B, P) of each image (the padding's are not); ``None`` for squash."""
        if self._contents(len(patch_vectors), sizes) is None:
            return None
        known = [size for size in sizes or () if size is not None]
        return self._extractor.valid_patches(known, int(patch_vectors.shape[1]))

    def score_vectors(
        self,
        patch_vectors: np.ndarray,
        names: Sequence[str],
        category: str | None = None,
        *,
        on_map: MapCallback | None = None,
        memo: ScoreMemo | None = None,
        sizes: Sequence[tuple[int, int] | None] | None = None,
        on_full_map: FullMapCallback | None = None,
    ) -> list[PredictionRecord]:
        """Route and score embedded images: the part of :meth:`predict` after the backbone.

        Args:
            patch_vectors: (B, P, D) projected patch vectors.
            names: the ``path`` of each record.
            category: score against this category instead of routing.
            on_map: ``on_map(row, record, anomaly_map, map_threshold)`` per scored image.
            memo: scores by ``(name, category)`` already computed for these same vectors (read
                and filled): one embedding scored under several routings searches once.
            sizes: each image's original (width, height): its ``regions`` are found on the map
                brought back to that size; ``None`` (for all or one image): on the model's map as it is.
            on_full_map: ``on_full_map(row, record, full_map, map_threshold)`` per scored image,
                with the map at the original size.

        Raises:
            RegistryError: no categories, or the forced category is unknown or cannot be loaded.
        """
        if len(names) != len(patch_vectors):
            raise ValueError(f"{len(names)} names for {len(patch_vectors)} images")
        if sizes is not None and len(sizes) != len(names):
            raise ValueError(f"{len(sizes)} sizes for {len(names)} images")
        routing = self.route(patch_vectors, category, sizes=sizes)
        contents = self._contents(len(patch_vectors), sizes)
        records: list[PredictionRecord | None] = [None] * len(names)
        for name in dict.fromkeys(routing.categories):
            rows = [j for j, chosen in enumerate(routing.categories) if chosen == name]
            try:
                model = self.model(name)
            except RegistryError as error:
                for j in rows:
                    records[j] = error_record(names[j], str(error))
                continue
            scored = self._scores(model, name, patch_vectors, rows, names, memo, contents)
            threshold = float(model.thresholds["hybrid"])
            map_threshold = float(model.thresholds["base"])
            version = self._pinned[name].version
            for j, score in zip(rows, scored, strict=True):
                record = PredictionRecord(
                    path=names[j],
                    category=name,
                    version=version,
                    route_score=float(routing.route_scores[j]),
                    unknown=bool(routing.unknown_scores[j] > 1.0),
                    unknown_score=float(routing.unknown_scores[j]),
                    score_base=score.base,
                    score_struct=score.struct,
                    score_hybrid=score.hybrid,
                    threshold=threshold,
                    anomalous=score.hybrid > threshold,
                    error=None,
                    regions=None,
                )
                size = None if sizes is None else sizes[j]
                if on_full_map is None:  # only the window around the defects is resampled
                    record["regions"] = self._regions(score.anomaly_map, map_threshold, size)
                else:
                    full_map = self._full_map(score.anomaly_map, size)
                    record["regions"] = find_regions(full_map, map_threshold, self._max_regions)
                    on_full_map(j, record, full_map, map_threshold)
                records[j] = record
                if on_map is not None:
                    on_map(j, record, score.anomaly_map, map_threshold)
        out = [record for record in records if record is not None]
        assert len(out) == len(names)
        return out

    def _regions(self, anomaly_map: np.ndarray, threshold: float, size: tuple[int, int] | None) -> list[Region]:
        """The record's regions: at the original ``size`` (width, height), else on the map as it is."""
        if size is None:
            return find_regions(anomaly_map, threshold, self._max_regions)
        geometry = self._extractor.geometry
        return regions_at_original_size(
            anomaly_map, threshold, size, geometry.resize, geometry.crop, max_regions=self._max_regions
        )

    def _full_map(self, anomaly_map: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
        """``anomaly_map`` at the original ``size`` (width, height) through the extractor's geometry."""
        if size is None:
            return np.asarray(anomaly_map, dtype=np.float32)
        geometry = self._extractor.geometry
        return map_at_original_size(anomaly_map, size, geometry.resize, geometry.crop)

    @staticmethod
    def _scores(
        model: CategoryModel,
        category: str,
        patch_vectors: np.ndarray,
        rows: Sequence[int],
        names: Sequence[str],
        memo: ScoreMemo | None,
        contents: np.ndarray | None = None,
    ) -> list[ImageScore]:
        found: dict[int, ImageScore] = {}
        if memo is not None:
            found = {j: memo[(names[j], category)] for j in rows if (names[j], category) in memo}
        todo = [j for j in rows if j not in found]
        if todo:
            prediction = model.predict(patch_vectors[todo], None if contents is None else contents[todo])
            scores = prediction.scores
            for k, j in enumerate(todo):
                score = ImageScore(
                    base=float(scores.base[k]),
                    struct=float(scores.struct[k]),
                    hybrid=float(scores.hybrid[k]),
                    anomaly_map=prediction.maps[k],
                )
                found[j] = score
                if memo is not None:
                    memo[(names[j], category)] = score
        return [found[j] for j in rows]

    def predict(
        self,
        sources: Sequence[ImageSource],
        category: str | None = None,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        progress: ProgressCallback | None = None,
        on_image: ImageCallback | None = None,
        on_full_map: Callable[[PredictionRecord, np.ndarray, float], None] | None = None,
    ) -> list[PredictionRecord]:
        """Score images: embed each batch, route it (or force ``category``), score each image.

        With ``category=None`` each image is routed to the category whose prototypes are nearest
        and scored there. ``unknown_score`` says how unlike every category the image is (the
        smallest per-category unknown ratio, see :mod:`structcore.routing`; ``unknown`` is
        ``unknown_score > 1``): a defective image of a registered product stays known, an image
        of a product the Detector does not hold is flagged (it is still scored against the
        nearest category). With a category, every image is scored against it and
        ``route_score``, ``unknown_score`` and ``unknown`` are measured against it alone.

        Args:
            sources: image paths, PIL images or arrays.
            category: score against this category instead of routing.
            batch_size: images per backbone call.
            progress: receives ``Progress("predict", done, total)`` after each batch.
            on_image: ``on_image(record, image, anomaly_map, map_threshold)`` per scored image.
            on_full_map: ``on_full_map(record, full_map, map_threshold)`` per scored image, with
                the map at the image's original size (the one its ``regions`` come from).

        Returns:
            One :class:`PredictionRecord` per source, in order.
        """
        if category is not None:
            self.model(category)  # fail early on an unknown or damaged category
        elif not self._pinned:
            self.route(np.empty((0, 0, 0), dtype=np.float32))  # raises the "no categories" error
        extractor = self._extractor
        records: list[PredictionRecord] = []
        total = len(sources)
        if extractor.geometry.tiles:  # one image's tiles fill the backbone's batches; its rows are large
            batch_size = 1
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
                    batch_records[i] = error_record(names[i], str(error))
            if images:
                vectors, sizes = extractor.embed_sized(images)

                on_map = None if on_image is None else _crop_callback(on_image, images, extractor)
                scored = self.score_vectors(
                    vectors,
                    [names[i] for i in positions],
                    category,
                    on_map=on_map,
                    sizes=list(sizes),
                    on_full_map=None if on_full_map is None else _full_map_callback(on_full_map),
                )
                for i, record in zip(positions, scored, strict=True):
                    batch_records[i] = record
            for done in batch_records:
                assert done is not None
                records.append(done)
            if progress is not None:
                progress(Progress("predict", min(start + batch_size, total), total))
        return records

    def warm_up(self) -> None:
        """Load every category model (up to the cache size) and run the backbone once."""
        for name in list(self._pinned)[: self._cache_size or len(self._pinned)]:
            with suppress(RegistryError):  # reported when an image is routed to it
                self.model(name)
        side = self._extractor.geometry.resize
        self._extractor.embed_sized([Image.new("RGB", (side, side))])


def _crop_callback(
    on_image: ImageCallback, images: Sequence[Image.Image | np.ndarray], extractor: FeatureExtractor
) -> MapCallback:
    """An :data:`MapCallback` that hands ``on_image`` the preprocessed crop of each scored image too."""

    def on_map(row: int, record: PredictionRecord, anomaly_map: np.ndarray, threshold: float) -> None:
        image = preprocess_image(images[row], extractor.geometry)
        if extractor.geometry.masks_content:  # fit: the map covers the image's content, not the padding
            image = image[:, : anomaly_map.shape[0], : anomaly_map.shape[1]]
        on_image(record, image, anomaly_map, threshold)

    return on_map


def _full_map_callback(on_full_map: Callable[[PredictionRecord, np.ndarray, float], None]) -> FullMapCallback:
    def call(row: int, record: PredictionRecord, full_map: np.ndarray, threshold: float) -> None:
        on_full_map(record, full_map, threshold)

    return call


def image_size(image: Image.Image | np.ndarray) -> tuple[int, int]:
    """(width, height) of a PIL image or an (H, W[, C]) array."""
    if isinstance(image, Image.Image):
        return (int(image.width), int(image.height))
    shape = np.shape(image)
    return (int(shape[1]), int(shape[0]))


def _name(source: object, index: int) -> str:
    return str(source) if isinstance(source, str | Path) else f"<in-memory image {index}>"


# ------------------------------------------------------------------------- extractors
_BACKBONES: dict[tuple[object, ...], Backbone] = {}
_BACKBONES_LOCK = threading.Lock()


def load_backbone(name: str, weights: str | Path | None) -> Backbone:
    """The backbone ``name`` with ``weights``, built once per process (again when the weights file changes).

    Raises:
        BackboneLoadError: it cannot be built (missing or wrong weights file).
    """
    key: tuple[object, ...] = (name, None if weights is None else str(weights))
    if weights is not None and Path(weights).is_file():
        stat = Path(weights).stat()
        key = (*key, stat.st_size, stat.st_mtime_ns)
    with _BACKBONES_LOCK:
        backbone = _BACKBONES.get(key)
        if backbone is None:
            try:
                backbone = create_backbone(name, weights)
            except BackboneError as error:
                raise BackboneLoadError(str(error)) from error
            _BACKBONES[key] = backbone
    return backbone


def extractor_for(
    space: FeatureSpace, weights: str | Path | None, batch_size: int = DEFAULT_BATCH_SIZE
) -> FeatureExtractor:
    """A :class:`FeatureExtractor` of ``space`` (its backbone shared within the process).

    Raises:
        BackboneLoadError: the backbone's weights are missing.
        FeatureSpaceMismatchError: the weights found are not the ones ``space`` was made with.
    """
    backbone = load_backbone(space.backbone, weights)
    if backbone.info.name != space.backbone or backbone.info.weights_sha256 != space.weights_sha256:
        differences = [
            f"backbone: {backbone.info.name} vs {space.backbone}",
            f"weights sha256: {backbone.info.weights_sha256[:12]} vs {space.weights_sha256[:12]}",
        ]
        raise FeatureSpaceMismatchError(
            "the backbone weights found", differences, "pass the weights file the registry was made with"
        )
    if not space.projection.flags.writeable:  # zero-copy from Ray's object store: torch wants a writable W
        space = dataclasses.replace(space, projection=np.array(space.projection))
    return build_extractor(space, backbone, batch_size=batch_size)


__all__ = [
    "DEFAULT_CACHE_SIZE",
    "Detector",
    "FullMapCallback",
    "ImageCallback",
    "ImageScore",
    "MapCallback",
    "PinnedCategory",
    "PredictionRecord",
    "Routing",
    "ScoreMemo",
    "error_record",
    "extractor_for",
    "image_size",
    "load_backbone",
]
