"""The feature space of a registry: backbone, layers, geometry and the projection matrix W.

numpy only (no torch): reading, comparing and storing a feature space needs no model, so
commands such as ``registry export`` run without loading the backbone's libraries.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from structcore.preprocess import Preprocessing

#: What a feature-space description holds (everything but W), in order.
DESCRIPTION_FIELDS = (
    "backbone",
    "weights_sha256",
    "layers",
    "channels",
    "mean",
    "std",
    "local_pool",
    "resize",
    "crop",
    "input_geometry",
    "dim",
)

#: Values of description fields that older descriptions lack (feature spaces made before the
#: field existed): ``input_geometry`` appeared with revision 0007, and every earlier space squashes.
DESCRIPTION_DEFAULTS: dict[str, object] = {"input_geometry": "squash"}

#: Fields that only a ``tile`` feature space describes (after ``input_geometry``); squash and fit
#: descriptions stay as they were before the tile geometry existed (revision 0008).
TILE_FIELDS = ("tile_max_side", "tile_overlap")


def describe_fields(source: object) -> dict[str, object]:
    """The :data:`DESCRIPTION_FIELDS` of ``source`` (a :class:`FeatureSpace`, or a stored row of one), JSON-ready.

    A ``tile`` space also has its :data:`TILE_FIELDS`.
    """
    names: list[str] = list(DESCRIPTION_FIELDS)
    if getattr(source, "input_geometry", None) == "tile":
        at = names.index("input_geometry") + 1
        names[at:at] = TILE_FIELDS
    values = {name: getattr(source, name, DESCRIPTION_DEFAULTS.get(name)) for name in names}
    return {name: list(value) if isinstance(value, list | tuple) else value for name, value in values.items()}


@dataclass(frozen=True)
class FeatureSpace:
    """Everything that fixes the meaning of a projected patch vector (one per registry).

    Routing compares categories, so every category of a registry lives in one feature space.
    """

    backbone: str
    weights_sha256: str
    layers: tuple[str, ...]
    channels: tuple[int, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    local_pool: int
    resize: int
    crop: int
    dim: int
    projection: np.ndarray
    #: ``squash``, ``fit`` or ``tile`` (:data:`structcore.settings.INPUT_GEOMETRIES`).
    input_geometry: str = "squash"
    #: ``tile`` only: the cap on an image's long side and the least overlap of tiles (pixels).
    tile_max_side: int | None = None
    tile_overlap: int | None = None

    def describe(self) -> dict[str, object]:
        """JSON-compatible description (everything but the projection matrix itself)."""
        return describe_fields(self)

    def differences(self, other: FeatureSpace) -> list[str]:
        """Human-readable differences to ``other`` (empty when the spaces are the same)."""
        mine, theirs = self.describe(), other.describe()
        keys = list(dict.fromkeys([*mine, *theirs]))  # a tile space has fields the others lack
        found = [f"{key}: {mine.get(key)} vs {theirs.get(key)}" for key in keys if mine.get(key) != theirs.get(key)]
        if not found and not np.array_equal(self.projection, other.projection):
            found.append("projection matrix W differs")
        return found

    @classmethod
    def from_description(cls, description: dict[str, object], projection: np.ndarray) -> FeatureSpace:
        """Inverse of :meth:`describe` plus the projection matrix."""
        return cls(
            backbone=str(description["backbone"]),
            weights_sha256=str(description["weights_sha256"]),
            layers=tuple(str(v) for v in description["layers"]),  # type: ignore[attr-defined]
            channels=tuple(int(v) for v in description["channels"]),  # type: ignore[attr-defined]
            mean=tuple(float(v) for v in description["mean"]),  # type: ignore[attr-defined]
            std=tuple(float(v) for v in description["std"]),  # type: ignore[attr-defined]
            local_pool=int(description["local_pool"]),  # type: ignore[call-overload]
            resize=int(description["resize"]),  # type: ignore[call-overload]
            crop=int(description["crop"]),  # type: ignore[call-overload]
            dim=int(description["dim"]),  # type: ignore[call-overload]
            projection=np.asarray(projection, dtype=np.float32),
            input_geometry=str(description.get("input_geometry", DESCRIPTION_DEFAULTS["input_geometry"])),
            **{name: int(description[name]) for name in TILE_FIELDS if description.get(name) is not None},  # type: ignore[call-overload]
        )

    @property
    def geometry(self) -> Preprocessing:
        """Resize / crop / input geometry settings."""
        tiles = {name: getattr(self, name) for name in TILE_FIELDS if getattr(self, name) is not None}
        return Preprocessing(resize=self.resize, crop=self.crop, input_geometry=self.input_geometry, **tiles)


__all__ = ["DESCRIPTION_DEFAULTS", "DESCRIPTION_FIELDS", "TILE_FIELDS", "FeatureSpace", "describe_fields"]
