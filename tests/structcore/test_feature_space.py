"""The feature space (structcore.feature_space): description round trip, differences, geometry."""

from __future__ import annotations

import dataclasses
import json
from types import SimpleNamespace

import numpy as np

from structcore.feature_space import DESCRIPTION_FIELDS, FeatureSpace, describe_fields
from structcore.preprocess import Preprocessing


def _space(**changes: object) -> FeatureSpace:
    space = FeatureSpace(
        backbone="efficientnet-lite2",
        weights_sha256="ab" * 32,
        layers=("6", "14"),
        channels=(48, 120),
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        local_pool=3,
        resize=392,
        crop=392,
        dim=4,
        projection=np.arange(168 * 4, dtype=np.float32).reshape(168, 4),
    )
    return dataclasses.replace(space, **changes)  # type: ignore[arg-type]


def test_description_is_json_ready_and_round_trips() -> None:
    space = _space()
    description = space.describe()
    assert list(description) == list(DESCRIPTION_FIELDS)
    assert description["layers"] == ["6", "14"] and description["channels"] == [48, 120]
    decoded = json.loads(json.dumps(description))
    restored = FeatureSpace.from_description(decoded, space.projection.astype(np.float64))
    assert restored.describe() == description
    assert restored.projection.dtype == np.float32
    assert restored.differences(space) == [] and space.differences(restored) == []


def test_differences_name_each_field_and_the_matrix() -> None:
    space = _space()
    assert space.differences(_space(crop=256, backbone="dinov2-vitb14")) == [
        "backbone: efficientnet-lite2 vs dinov2-vitb14",
        "crop: 392 vs 256",
    ]
    other_matrix = _space(projection=space.projection + 1)
    assert space.differences(other_matrix) == ["projection matrix W differs"]
    # a field difference is reported without comparing the matrices
    assert space.differences(_space(dim=8, projection=np.zeros((168, 8), np.float32))) == ["dim: 4 vs 8"]


def test_describe_fields_reads_any_object_with_the_fields() -> None:
    """A stored row (any object with the attributes) describes like the space it came from."""
    space = _space()
    row = SimpleNamespace(**{name: getattr(space, name) for name in DESCRIPTION_FIELDS}, extra="ignored")
    row.layers = list(row.layers)  # a row may hold lists where the space holds tuples
    assert describe_fields(row) == space.describe()


def test_geometry_is_the_resize_and_crop() -> None:
    assert _space(resize=448, crop=392).geometry == Preprocessing(resize=448, crop=392)
