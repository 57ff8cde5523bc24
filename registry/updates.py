"""``registry update``: a new version of a category from its current one plus new good images.

Without re-embedding the old images: the version's stored patch vectors (``train_patches``,
float16) and k-nearest bank distances (``TRAIN_DISTANCES``) are read back, only the new images are
embedded, the bank is continued (:meth:`structcore.model.CategoryModel.updated`), the old images'
distance lists are merged with their distances to the new bank vectors (exact), and everything
else is recomputed for old and new images. Versions without stored patch vectors (fitted before
updates existed, imported from a bundle, fitted from in-memory images) are refitted on their
listed train images plus the new ones, when those files are still there. Writing goes through
:meth:`Registry.commit_versions`, so an interrupted update leaves the previous version current and
intact.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from registry.core import Registry, _name_outliers, _source_name, image_sha256, train_distance_arrays
from registry.errors import RegistryError
from registry.records import TRAIN_DISTANCES, TRAIN_IMAGE_INFO, TRAIN_PATCHES, PendingVersion, VersionInfo
from registry.storage import checkpoint

if TYPE_CHECKING:
    from structcore.features import ImageSource
    from structcore.model import CategoryModel
    from structcore.progress import ProgressCallback

#: Where added images come from (recorded per image).
SOURCES = ("update", "feedback")


@dataclass
class UpdateResult:
    """What an update did."""

    info: VersionInfo
    parent: VersionInfo
    mode: str  # "update" (incremental) or "refit"
    added: list[str]
    duplicates: list[str] = field(default_factory=list)
    reason: str | None = None
    threshold_note: str | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    #: How the k-nearest distances were found (``CategoryModel.update_search_``): ``merged`` or ``full``.
    distance_search: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible summary."""
        return {
            **self.info.to_dict(),
            "parent_version": self.parent.version,
            "mode": self.mode,
            "added": self.added,
            "duplicates": self.duplicates,
            "refit_reason": self.reason,
            "threshold_note": self.threshold_note,
            "seconds": self.seconds,
            "distance_search": self.distance_search,
        }


def image_records(metadata: dict[str, Any], train_images: Sequence[Any]) -> list[dict[str, Any]]:
    """The train images of a version: ``{"name", "sha256", "source"}`` each (older versions: names only, source fit)."""
    found = metadata.get(TRAIN_IMAGE_INFO)
    if isinstance(found, list) and len(found) == len(train_images or found):
        return [dict(item) for item in found]
    return [{"name": str(name), "sha256": None, "source": "fit"} for name in train_images]


def train_image_list(
    registry: Registry, name: str, version: int | None = None
) -> tuple[VersionInfo, list[dict[str, Any]]]:
    """A version's train images with their content hash and source (``registry show --images``)."""
    info, metadata, train_images = registry._stored_row(name, version)
    return info, image_records(metadata, train_images)


def _fit_rule(registry: Registry, info: VersionInfo) -> tuple[str, float, float | None]:
    """(threshold rule to fit with, its FRR, the FRR of a carried-over operating point or ``None``).

    A version whose hybrid threshold was set with ``registry threshold`` (or carried over by an
    earlier update) keeps that operating point as an FRR target: the share of its leave-one-out
    train scores above the threshold (``--frr``: that FRR itself).
    """
    from structcore.settings import DEFAULT_FRR, DEFAULT_THRESHOLD_RULE
    from structcore.thresholds import THRESHOLD_RULES

    record = info.threshold_rule
    rule = str(record.get("rule", "quantile"))
    source = str(record.get("source", "fit"))
    frr = record.get("frr")
    if source == "fit":
        return rule, float(frr) if isinstance(frr, int | float) else DEFAULT_FRR, None
    if rule in THRESHOLD_RULES and isinstance(frr, int | float) and "carried_frr" not in record:
        return rule, float(frr), None  # registry threshold --frr: the same rule at the same FRR
    carried = record.get("carried_frr")
    if not isinstance(carried, int | float):
        train = registry.train_scores(info.category, info.version)
        carried = float((train > info.thresholds["hybrid"]).mean())
    return DEFAULT_THRESHOLD_RULE, DEFAULT_FRR, float(carried)


def update_category(
    registry: Registry,
    name: str,
    sources: Sequence[ImageSource],
    *,
    source: str = "update",
    progress: ProgressCallback | None = None,
    notice: Callable[[str], None] | None = None,
    batch_size: int | None = None,
) -> UpdateResult:
    """Add good images to category ``name``: a new current version (see the module doc).

    Images already in the version (same content sha256) are skipped and listed.

    Raises:
        UnknownCategoryError: no such category.
        IntegrityError: the stored data of the current version are damaged (nothing is written).
        RegistryError: no new image, or a refit is needed and the old train images are gone.
    """
    from structcore.model import embed_images, fit_category
    from structcore.progress import Progress, quiet

    started = time.perf_counter()
    seconds: dict[str, float] = {}

    if source not in SOURCES:
        msg = f"unknown image source {source!r}; choose one of {', '.join(SOURCES)}"
        raise ValueError(msg)
    registry._check_writable("update a category")
    report = progress or quiet
    say = notice or (lambda _text: None)
    parent, metadata, train_images = registry._stored_row(name, None)
    old_records = image_records(metadata, train_images)
    known = {item["sha256"] for item in old_records if item.get("sha256")}
    new_sources: list[ImageSource] = []
    new_records: list[dict[str, Any]] = []
    duplicates: list[str] = []
    for index, item in enumerate(sources):
        image_name = _source_name(item, len(old_records) + index)
        digest = image_sha256(item)
        if digest in known:
            duplicates.append(image_name)
            continue
        known.add(digest)
        new_sources.append(item)
        new_records.append({"name": image_name, "sha256": digest, "source": source})
    if not new_sources:
        msg = (
            f"none of the {len(duplicates)} images is new to category {name!r} version {parent.version} "
            "(same content already in it); nothing to add"
        )
        raise RegistryError(msg)
    rule, frr, carried = _fit_rule(registry, parent)
    extractor = registry.extractor(batch_size) if batch_size else registry.extractor()
    reason: str | None = None
    calibration = str(dict(metadata.get("params", {})).get("calibration", ""))
    if TRAIN_PATCHES not in parent.arrays:
        reason = "it holds no stored patch vectors (fitted before incremental updates, or imported from a bundle)"
    elif calibration == "holdout":
        reason = "its holdout calibration splits the train images anew"
    elif metadata.get("fitted_on_contents"):
        reason = f"the {registry.feature_space.input_geometry} input geometry is not updated incrementally yet"
    if reason is None:
        model = registry._build_model(parent, metadata, train_images)  # verified arrays
        old_patches = registry._read_checked(parent, TRAIN_PATCHES)
        old_distances = _stored_distances(registry, parent, model)
        if old_distances is None:
            say(
                f"version {parent.version} of {name!r} stores no train distances (made before they were kept): "
                "they are searched once over the whole bank; the new version keeps them"
            )
        _set_rule(model, rule, frr)
        report(Progress("embed", 0, len(new_sources), name))
        mark = time.perf_counter()
        seconds["read"] = mark - started
        new_patches = embed_images(extractor, new_sources, report, category=name)
        seconds["embed"] = time.perf_counter() - mark
        checkpoint("update-embedded")
        report(Progress("fit", category=name))
        fitted = model.updated(
            old_patches, new_patches, progress=lambda event: report(_named(event, name)), old_distances=old_distances
        )
        seconds.update(fitted.update_seconds_ or {})
        fitted.train_patches_ = np.concatenate([old_patches, new_patches.astype(np.float16)])
        unchanged_rows: int | None = len(old_patches)
        mode = "update"
    else:
        old_paths = [str(item["name"]) for item in old_records]
        missing = [path for path in old_paths if not Path(path).is_file()]
        if not old_paths or missing:
            where = (
                f"{len(missing)} of its {len(old_paths)} train images are gone (e.g. {missing[0]})"
                if missing
                else "it lists no train image files"
            )
            msg = (
                f"category {name!r} version {parent.version} cannot be updated: {reason}, and {where}; "
                "refit it with `registry add-category`"
            )
            raise RegistryError(msg)
        say(
            f"version {parent.version} of {name!r} is refitted from its {len(old_paths)} train images plus "
            f"{len(new_sources)} new ones: {reason}; the new version stores what later updates need"
        )
        settings = registry._build_model(parent, metadata, train_images)
        _set_rule(settings, rule, frr)
        fitted = fit_category(extractor, [*old_paths, *new_sources], settings, report, category=name, keep_patches=True)
        checkpoint("update-embedded")
        unchanged_rows = None
        old_records = [{**item, "sha256": item.get("sha256") or image_sha256(item["name"])} for item in old_records]
        mode = "refit"
    note = _carry_threshold(fitted, parent, carried)
    records = [*old_records, *new_records]
    names = [str(item["name"]) for item in records]
    new_metadata = fitted.to_metadata()
    new_metadata[TRAIN_IMAGE_INFO] = records
    new_metadata["update"] = {
        "parent_version": parent.version,
        "parent_uuid": parent.uuid,
        "mode": mode,
        "added": len(new_sources),
        "source": source,
    }
    assert fitted.train_patches_ is not None
    arrays = {
        **fitted.to_arrays(),
        TRAIN_PATCHES: np.asarray(fitted.train_patches_, dtype=np.float16),
        **train_distance_arrays(fitted),
    }
    checkpoint("update-fitted")
    report(Progress("write", category=name))
    pending = PendingVersion(
        name=name,
        arrays=lambda: arrays,
        metadata=_name_outliers(new_metadata, names),
        train_images=names,
        origin=f"{source}:v{parent.version}",
        # the old images' patches are the parent's, unchanged: link their chunk files
        leading_rows=None if unchanged_rows is None else {TRAIN_PATCHES: (parent.array_store, unchanged_rows)},
    )
    mark = time.perf_counter()
    info = registry.commit_versions([pending])[0]
    seconds["write"] = time.perf_counter() - mark
    seconds["total"] = time.perf_counter() - started
    report(Progress("done", category=name))
    added = [str(r["name"]) for r in new_records]
    search = fitted.update_search_ if mode == "update" else None
    return UpdateResult(info, parent, mode, added, duplicates, reason, note, seconds, search)


def _stored_distances(registry: Registry, info: VersionInfo, model: CategoryModel) -> dict[str, np.ndarray] | None:
    """The version's stored train k-nearest distances (checked), or ``None`` when it lacks any its calibration needs."""
    kinds = model.distance_kinds()
    if not all(TRAIN_DISTANCES[kind] in info.arrays for kind in kinds):
        return None
    kinds = tuple(kind for kind in TRAIN_DISTANCES if kind in kinds or TRAIN_DISTANCES[kind] in info.arrays)
    return {kind: registry._read_checked(info, TRAIN_DISTANCES[kind]) for kind in kinds}


def _named(event: Any, name: str) -> Any:
    import dataclasses

    return dataclasses.replace(event, category=name)


def _set_rule(model: CategoryModel, rule: str, frr: float) -> None:
    model.threshold_rule = rule
    model.threshold_frr = frr


def _carry_threshold(model: CategoryModel, parent: VersionInfo, carried: float | None) -> str | None:
    """Put a carried-over operating point (an FRR target) on the new model's hybrid threshold."""
    if carried is None:
        return None
    from structcore.thresholds import threshold_for_frr

    scores = np.asarray(model.calibration_scores_["hybrid"], dtype=np.float64)
    previous = float(parent.thresholds["hybrid"])
    if 0.0 < carried <= 0.5:
        value = threshold_for_frr(scores, carried)
        how = f"{carried * 100:.2f}% of the leave-one-out train scores above it, as in version {parent.version}"
    else:  # no train score lay above it: keep the value (an FRR of 0 has no order statistic)
        value = max(previous, float(scores.max())) if math.isfinite(previous) else float(scores.max())
        how = f"no leave-one-out train score above it, as in version {parent.version}"
    model.calibrator_.thresholds_["hybrid"] = float(value)
    model.calibrator_.threshold_rule_ = {
        "rule": str(parent.threshold_rule.get("rule", "value")),
        "source": "update",
        "carried_frr": float(carried),
        "parent_version": parent.version,
        "parent_threshold": previous,
        "n_scores": len(scores),
    }
    return f"operating point carried over: hybrid threshold {previous:.4f} -> {value:.4f} ({how})"


__all__ = ["SOURCES", "UpdateResult", "image_records", "train_image_list", "update_category"]
