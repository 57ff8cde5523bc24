"""Defect regions at the image's own size: the anomaly map brought back to it, connected areas above a threshold.

Arrays in, arrays out; the one implementation, used by ``structcore.regions`` (the registry) and
by the exported runtime. The model sees each image through its preprocessing geometry (squashed
to ``resize`` x ``resize``, then an optional centre crop); :func:`map_at_original_size` undoes that
for a map: the crop's map is put back into the resized square (outside the crop the map is 0:
the model never saw it) and the square is resized bilinearly to the original width and height.
:func:`find_regions` labels the pixels above the category's map threshold 8-connected
(:func:`label_8connected`, equal to ``scipy.ndimage.label(mask, structure=np.ones((3, 3)))``; the
runtime does not install scipy, which would add ~140 MB to its ~270-370 MB) and describes each
region; :func:`region_mask` is the binary mask of all of them.
"""

from __future__ import annotations

import math
from typing import TypedDict

import numpy as np
from PIL import Image

#: Defect regions reported per record, largest first (the registry's settings table holds the same).
DEFAULT_MAX_REGIONS = 10


def _runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Horizontal runs of True in raster order: (row, start, stop) with ``stop`` exclusive."""
    height, width = mask.shape
    padded = np.zeros((height, width + 2), dtype=np.int8)
    padded[:, 1:-1] = mask
    edges = np.diff(padded, axis=1)  # +1 where a run starts, -1 one past its end
    rows, starts = np.nonzero(edges == 1)
    _, stops = np.nonzero(edges == -1)
    return rows, starts, stops


def _run_edges(rows: np.ndarray, starts: np.ndarray, stops: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (a, b) of runs on consecutive rows that touch 8-connected (a on the row above b).

    Run ``a`` on row ``r`` and ``b`` on row ``r + 1`` touch when ``start_b <= stop_a`` and
    ``start_a <= stop_b`` (stops exclusive: diagonal contact counts). Runs are sorted by (row,
    start), and so by (row, stop): the runs of row ``r`` touching ``b`` are one contiguous range,
    found for every ``b`` at once with two binary searches.
    """
    stride = width + 2
    start_keys = rows * stride + starts
    stop_keys = rows * stride + stops
    above = (rows - 1) * stride
    first = np.searchsorted(stop_keys, above + starts, side="left")
    last = np.searchsorted(start_keys, above + stops, side="right")
    counts = np.maximum(last - first, 0)
    b = np.repeat(np.arange(len(rows)), counts)
    offsets = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
    a = np.repeat(first, counts) + offsets
    return a, b


def _components(count: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per node, the smallest node of its connected component (graph with edges ``a[i] - b[i]``).

    Vectorised union-find: every round hooks each edge's larger root under its smaller root, then
    compresses every path; the roots of a component at least halve per round (log rounds).
    """
    parent = np.arange(count)
    while True:
        root_a, root_b = parent[a], parent[b]
        differ = root_a != root_b
        if not differ.any():
            return parent
        low = np.minimum(root_a[differ], root_b[differ])
        high = np.maximum(root_a[differ], root_b[differ])
        np.minimum.at(parent, high, low)
        while True:  # path compression: every node points at its root
            grand = parent[parent]
            if np.array_equal(grand, parent):
                break
            parent = grand


def label_8connected(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """8-connected labels (int32, 0 = background, 1.. in raster order of first pixel) and their count.

    Equal to ``scipy.ndimage.label(mask, structure=np.ones((3, 3)))``: run-length rows, touching
    runs of consecutive rows joined (:func:`_run_edges`), components by union-find over the runs
    (:func:`_components`); a component's label is the rank of its first run.
    """
    values = np.asarray(mask, dtype=bool)
    if values.ndim != 2:
        msg = f"a mask must be (H, W), got shape {values.shape}"
        raise ValueError(msg)
    height, width = values.shape
    labels = np.zeros((height, width), dtype=np.int32)
    rows, starts, stops = _runs(values)
    if len(rows) == 0:
        return labels, 0
    a, b = _run_edges(rows, starts, stops, width)
    roots = _components(len(rows), a, b)
    firsts, run_labels = np.unique(roots, return_inverse=True)
    lengths = stops - starts
    pixels = np.repeat(rows * width + starts - np.cumsum(lengths) + lengths, lengths) + np.arange(int(lengths.sum()))
    labels.ravel()[pixels] = np.repeat(run_labels.astype(np.int32) + 1, lengths)
    return labels, len(firsts)


def label_boxes(labels: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Bounding boxes of labels ``1..count``: (tops, lefts, bottoms, rights), ends exclusive.

    The boxes of ``scipy.ndimage.find_objects`` for labels that occur.
    """
    rows, columns = np.nonzero(labels)
    owner = labels[rows, columns] - 1
    tops = np.full(count, labels.shape[0], dtype=np.int64)
    lefts = np.full(count, labels.shape[1], dtype=np.int64)
    bottoms = np.zeros(count, dtype=np.int64)
    rights = np.zeros(count, dtype=np.int64)
    np.minimum.at(tops, owner, rows)
    np.minimum.at(lefts, owner, columns)
    np.maximum.at(bottoms, owner, rows + 1)
    np.maximum.at(rights, owner, columns + 1)
    return tops, lefts, bottoms, rights


class Region(TypedDict):
    """One connected area of the map above the threshold, in original pixels.

    ``x``, ``y``, ``w``, ``h``: bounding box (left, top, width, height); ``area``: pixels in the
    region; ``area_share``: ``area`` over the image's pixel count; ``peak`` / ``mean``: the map's
    maximum and mean inside the region.
    """

    x: int
    y: int
    w: int
    h: int
    area: int
    area_share: float
    peak: float
    mean: float


def map_at_original_size(
    anomaly_map: np.ndarray,
    size: tuple[int, int],
    resize: int | None = None,
    crop: int | None = None,
) -> np.ndarray:
    """The (crop, crop) map of an image squashed to ``resize`` and centre-cropped, at its ``size`` (width, height).

    Returns a float32 (height, width) map. Without ``resize``/``crop`` the map is taken to cover
    the whole image (squash without crop). Bilinear resampling (PIL, pixel centres aligned).
    """
    values = _model_square(anomaly_map, resize, crop)
    width, height = _checked_size(size)
    if values.shape == (height, width):
        return values.copy()
    resized = Image.fromarray(values, mode="F").resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.float32)


def region_mask(anomaly_map: np.ndarray, threshold: float) -> np.ndarray:
    """Boolean mask of the pixels strictly above ``threshold`` (NaN counts as not above)."""
    values = np.asarray(anomaly_map)
    with np.errstate(invalid="ignore"):
        return np.asarray(values > threshold)


def find_regions(
    anomaly_map: np.ndarray,
    threshold: float,
    max_regions: int,
) -> list[Region]:
    """Connected areas (8-connected) of ``anomaly_map`` above ``threshold``, largest first, at most ``max_regions``.

    Ties in area are broken by the higher peak, then by position (top, left), so the order is
    deterministic. ``max_regions`` 0 returns no region.
    """
    values = np.asarray(anomaly_map, dtype=np.float32)
    if values.ndim != 2:
        msg = f"an anomaly map must be (H, W), got shape {values.shape}"
        raise ValueError(msg)
    return _describe(values, threshold, max_regions, (0, 0), values.size)


def _describe(
    values: np.ndarray, threshold: float, max_regions: int, offset: tuple[int, int], total_pixels: int
) -> list[Region]:
    """:func:`find_regions` of ``values``, a window at ``offset`` (x, y) of an image of ``total_pixels``."""
    if max_regions < 0:
        msg = f"max_regions must be >= 0, got {max_regions}"
        raise ValueError(msg)
    mask = region_mask(values, threshold)
    if max_regions == 0 or not mask.any():
        return []
    # Label only the bounding box of the pixels above the threshold (defects are small: cheap).
    rows = np.flatnonzero(mask.any(axis=1))
    columns = np.flatnonzero(mask.any(axis=0))
    top, left = int(rows[0]), int(columns[0])
    origin_x, origin_y = offset
    window = (slice(top, int(rows[-1]) + 1), slice(left, int(columns[-1]) + 1))
    labels, count = label_8connected(mask[window])
    inside = np.flatnonzero(labels)  # statistics over the labelled pixels only
    owner = labels.ravel()[inside]
    pixel_values = values[window].ravel()[inside].astype(np.float64)
    areas = np.bincount(owner, minlength=count + 1)[1:]
    sums = np.bincount(owner, weights=pixel_values, minlength=count + 1)[1:]
    by_owner = np.lexsort((pixel_values, owner))  # within each label, the largest value last
    last = np.flatnonzero(np.diff(owner[by_owner], append=count + 1))
    peaks = pixel_values[by_owner][last]
    tops, lefts, bottoms, rights = label_boxes(labels, count)
    order = np.lexsort((lefts, tops, -peaks, -areas))[:max_regions]
    total = float(total_pixels)
    regions: list[Region] = []
    for index in order:
        area = int(areas[index])
        regions.append(
            Region(
                x=origin_x + left + int(lefts[index]),
                y=origin_y + top + int(tops[index]),
                w=int(rights[index] - lefts[index]),
                h=int(bottoms[index] - tops[index]),
                area=area,
                area_share=area / total,
                peak=float(peaks[index]),
                mean=float(sums[index] / area),
            )
        )
    return regions


def regions_at_original_size(
    anomaly_map: np.ndarray,
    threshold: float,
    size: tuple[int, int],
    resize: int | None = None,
    crop: int | None = None,
    *,
    max_regions: int,
) -> list[Region]:
    """``find_regions(map_at_original_size(anomaly_map, size, resize, crop), threshold, max_regions)``, cheaply.

    Only the part of the original image around the model map's pixels above ``threshold`` is
    resampled (bilinear resampling is a convex combination of nearby map values, so no pixel
    farther away can be above it): a good image costs one comparison at the model's size, a
    defect on a 20-megapixel image a window around the defect, not the whole image.
    """
    values = _model_square(anomaly_map, resize, crop)
    width, height = _checked_size(size)
    if max_regions < 0:
        msg = f"max_regions must be >= 0, got {max_regions}"
        raise ValueError(msg)
    mask = region_mask(values, threshold)
    if max_regions == 0 or not mask.any():
        return []
    if values.shape == (height, width):
        return _describe(values, threshold, max_regions, (0, 0), width * height)
    source_h, source_w = values.shape
    scale_x, scale_y = source_w / width, source_h / height
    rows = np.flatnonzero(mask.any(axis=1))
    columns = np.flatnonzero(mask.any(axis=0))
    pad_x = 2 * math.ceil(max(scale_x, 1.0)) + 2  # the resampling filter's reach, with a margin
    pad_y = 2 * math.ceil(max(scale_y, 1.0)) + 2
    x0 = max(0, math.floor((int(columns[0]) - pad_x) / scale_x))
    x1 = min(width, math.ceil((int(columns[-1]) + 1 + pad_x) / scale_x))
    y0 = max(0, math.floor((int(rows[0]) - pad_y) / scale_y))
    y1 = min(height, math.ceil((int(rows[-1]) + 1 + pad_y) / scale_y))
    box = (x0 * scale_x, y0 * scale_y, x1 * scale_x, y1 * scale_y)
    window = Image.fromarray(values, mode="F").resize((x1 - x0, y1 - y0), Image.Resampling.BILINEAR, box=box)
    return _describe(np.asarray(window, dtype=np.float32), threshold, max_regions, (x0, y0), width * height)


def _model_square(anomaly_map: np.ndarray, resize: int | None, crop: int | None) -> np.ndarray:
    """The (crop, crop) map put back in the resized square (0 outside the crop)."""
    values = np.asarray(anomaly_map, dtype=np.float32)
    if values.ndim != 2:
        msg = f"an anomaly map must be (H, W), got shape {values.shape}"
        raise ValueError(msg)
    if resize is not None and crop is not None and crop < resize:
        offset = (resize - crop) // 2
        canvas = np.zeros((resize, resize), dtype=np.float32)
        canvas[offset : offset + values.shape[0], offset : offset + values.shape[1]] = values
        values = canvas
    return values


def _checked_size(size: tuple[int, int]) -> tuple[int, int]:
    width, height = int(size[0]), int(size[1])
    if width < 1 or height < 1:
        msg = f"an image size must be positive, got {size}"
        raise ValueError(msg)
    return width, height


def boxes_on_model_map(
    regions: list[Region],
    size: tuple[int, int],
    resize: int,
    crop: int | None = None,
    map_shape: tuple[int, int] | None = None,
) -> list[tuple[float, float, float, float]]:
    """The regions' boxes (x, y, w, h) moved from original pixels onto the model's (crop, crop) map.

    The inverse of :func:`map_at_original_size`'s geometry, for drawing regions on an overlay of
    the crop; a box outside the crop comes back clipped to it (possibly with zero size).
    ``map_shape`` (height, width): a map that covers the whole image at that shape (the ``fit``
    geometry's content map) instead of the square.
    """
    width, height = int(size[0]), int(size[1])
    crop = resize if crop is None else crop
    offset = (resize - crop) // 2
    scale_x, scale_y = resize / max(width, 1), resize / max(height, 1)
    if map_shape is not None:
        scale_x, scale_y = map_shape[1] / max(width, 1), map_shape[0] / max(height, 1)
        crop = max(map_shape)
    boxes = []
    for region in regions:
        left = min(max(region["x"] * scale_x - offset, 0.0), float(crop))
        top = min(max(region["y"] * scale_y - offset, 0.0), float(crop))
        right = min(max((region["x"] + region["w"]) * scale_x - offset, 0.0), float(crop))
        bottom = min(max((region["y"] + region["h"]) * scale_y - offset, 0.0), float(crop))
        boxes.append((left, top, right - left, bottom - top))
    return boxes


__all__ = [
    "DEFAULT_MAX_REGIONS",
    "Region",
    "boxes_on_model_map",
    "find_regions",
    "label_8connected",
    "label_boxes",
    "map_at_original_size",
    "region_mask",
    "regions_at_original_size",
]
