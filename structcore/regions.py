"""Defect regions at the image's own size: :mod:`structcore_runtime.regions`, with the registry's defaults.

The one implementation lives in the runtime (numpy + PIL; the exported runtime reports the same
regions as ``registry infer``): :func:`map_at_original_size` undoes the preprocessing geometry for
a map, :func:`find_regions` labels the pixels above the category's map threshold 8-connected and
describes each region, :func:`region_mask` is the binary mask of all of them. Here the number of
regions defaults to the settings table's ``max_regions``.
"""

from __future__ import annotations

import numpy as np
from structcore_runtime import regions as shared
from structcore_runtime.regions import Region, boxes_on_model_map, map_at_original_size, region_mask

from structcore.settings import DEFAULT_MAX_REGIONS


def find_regions(anomaly_map: np.ndarray, threshold: float, max_regions: int = DEFAULT_MAX_REGIONS) -> list[Region]:
    """Connected areas (8-connected) of ``anomaly_map`` above ``threshold``, largest first, at most ``max_regions``.

    Ties in area are broken by the higher peak, then by position (top, left), so the order is
    deterministic. ``max_regions`` 0 returns no region.
    """
    return shared.find_regions(anomaly_map, threshold, max_regions)


def regions_at_original_size(
    anomaly_map: np.ndarray,
    threshold: float,
    size: tuple[int, int],
    resize: int | None = None,
    crop: int | None = None,
    max_regions: int = DEFAULT_MAX_REGIONS,
) -> list[Region]:
    """``find_regions(map_at_original_size(anomaly_map, size, resize, crop), threshold, max_regions)``, cheaply.

    Only the part of the original image around the model map's pixels above ``threshold`` is
    resampled (see :func:`structcore_runtime.regions.regions_at_original_size`).
    """
    return shared.regions_at_original_size(anomaly_map, threshold, size, resize, crop, max_regions=max_regions)


__all__ = [
    "Region",
    "boxes_on_model_map",
    "find_regions",
    "map_at_original_size",
    "region_mask",
    "regions_at_original_size",
]
