"""The ``tile`` input geometry: cut an image into overlapping model-size tiles, stitch their maps.

An image keeps its own resolution; only a long side above ``max_side`` is scaled down to it
(aspect kept, :func:`tiled_size`). Each axis of that image is covered by tiles of ``tile`` pixels
(the model's square) that overlap by at least ``overlap`` pixels and are spread evenly so that the
first starts at 0 and the last ends at the edge (:func:`tile_starts`). An axis shorter than one
tile gets one tile whose content is the image and whose rest is padding, as in the ``fit``
geometry: the padding's patches are not valid (:func:`tiled_valid_mask`) and never reach a map,
the bank or a statistic.

A tiled image's patch vectors are its tiles' rows one after the other, ``(slots * P, D)``, the
tiles in row-major order in the first slots; a batch of images of different sizes is padded to
its largest tile count with invalid slots. Everything downstream of the extractor treats them as
one image with ``slots * P`` patches and a valid-patch mask, like ``fit``; only the map differs:
each tile's valid patch scores are upsampled bilinearly onto the tile's pixels, the tiles are
averaged where they overlap, and the whole stitched map is blurred once (scipy ``reflect``
borders, the blur of every other map) (:func:`stitch_map`).

numpy / scipy only: arrays in, arrays out.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage
from structcore_runtime.maps import bilinear_matrix

from structcore.preprocess import tiled_size, valid_patch_grid

#: Columns of a tile box: top, left, height, width of its content in the tiled image's pixels.
BOX_FIELDS = ("top", "left", "height", "width")


def tile_starts(extent: int, tile: int, overlap: int) -> np.ndarray:
    """Start offsets of the tiles covering ``extent`` pixels: evenly spread from 0 to ``extent - tile``.

    As many tiles as neighbours overlapping by at least ``overlap`` need; one (at 0) when the
    extent fits in a tile.
    """
    if not 0 <= overlap < tile:
        msg = f"the tile overlap must be in [0, tile = {tile}), got {overlap}"
        raise ValueError(msg)
    if extent <= tile:
        return np.zeros(1, dtype=np.int64)
    count = math.ceil((extent - overlap) / (tile - overlap))
    return np.round(np.linspace(0, extent - tile, count)).astype(np.int64)


def tile_boxes(content: tuple[int, int], tile: int, overlap: int) -> np.ndarray:
    """(T, 4) int: each tile's (top, left, height, width) in an image of ``content`` (height, width), row-major."""
    height, width = int(content[0]), int(content[1])
    rows = tile_starts(height, tile, overlap)
    columns = tile_starts(width, tile, overlap)
    tops, lefts = np.meshgrid(rows, columns, indexing="ij")
    boxes = np.empty((tops.size, 4), dtype=np.int64)
    boxes[:, 0] = tops.ravel()
    boxes[:, 1] = lefts.ravel()
    boxes[:, 2] = min(height, tile)
    boxes[:, 3] = min(width, tile)
    return boxes


def tile_count(content: tuple[int, int], tile: int, overlap: int) -> int:
    """Number of tiles of an image of ``content`` (height, width)."""
    return len(tile_starts(int(content[0]), tile, overlap)) * len(tile_starts(int(content[1]), tile, overlap))


def cut_tiles(image: np.ndarray, tile: int, overlap: int, fill: float = 0.0) -> np.ndarray:
    """(T, C, tile, tile) tiles of a (C, H, W) image, row-major; padding (an axis shorter than a tile) is ``fill``."""
    channels, height, width = image.shape
    boxes = tile_boxes((height, width), tile, overlap)
    tiles = np.full((len(boxes), channels, tile, tile), fill, dtype=image.dtype)
    for out, (top, left, rows, columns) in zip(tiles, boxes, strict=True):
        out[:, :rows, :columns] = image[:, top : top + rows, left : left + columns]
    return tiles


def tiled_valid_mask(contents: np.ndarray, grid: tuple[int, int], tile: int, overlap: int, slots: int) -> np.ndarray:
    """(B, slots * h * w) bool: the valid patches of each tiled image (``contents`` rows: its (height, width)).

    Slot ``t`` holds tile ``t``'s patches; a patch is valid when its centre lies in the tile's
    content (:func:`structcore.preprocess.valid_patch_grid`); slots past the image's tile count
    are all invalid.
    """
    contents = np.asarray(contents, dtype=np.int64).reshape(-1, 2)
    patches = grid[0] * grid[1]
    mask = np.zeros((len(contents), slots, grid[0], grid[1]), dtype=bool)
    for row, content in enumerate(contents):
        boxes = tile_boxes((int(content[0]), int(content[1])), tile, overlap)
        if len(boxes) > slots:
            msg = f"an image of {tuple(content)} px has {len(boxes)} tiles, more than the {slots} slots given"
            raise ValueError(msg)
        rows, columns = valid_patch_grid((int(boxes[0, 2]), int(boxes[0, 3])), grid, tile)
        mask[row, : len(boxes), :rows, :columns] = True
    return mask.reshape(len(contents), slots * patches)


def stitch_map(
    patch_scores: np.ndarray, content: tuple[int, int], grid: tuple[int, int], tile: int, overlap: int, sigma: float
) -> np.ndarray:
    """One tiled image's patch scores (slots * h * w,) -> its blurred map (height, width) = ``content``, float32.

    Each tile's valid patch grid is upsampled bilinearly (``align_corners=False``) onto its
    content's pixels; overlapping tiles are averaged; the stitched map is blurred with the
    Gaussian of ``sigma`` pixels (scipy ``reflect`` borders, radius ``int(4 * sigma + 0.5)``).
    """
    height, width = int(content[0]), int(content[1])
    boxes = tile_boxes((height, width), tile, overlap)
    scores = np.asarray(patch_scores, dtype=np.float64).reshape(-1, grid[0], grid[1])
    if len(scores) < len(boxes):
        msg = f"{len(scores)} tiles of patch scores for an image of {content} px that has {len(boxes)} tiles"
        raise ValueError(msg)
    rows, columns = valid_patch_grid((int(boxes[0, 2]), int(boxes[0, 3])), grid, tile)
    up_rows = bilinear_matrix(rows, int(boxes[0, 2]))
    up_columns = bilinear_matrix(columns, int(boxes[0, 3]))
    total = np.zeros((height, width), dtype=np.float64)
    weight = np.zeros((height, width), dtype=np.float64)
    for grid_scores, (top, left, box_rows, box_columns) in zip(scores, boxes, strict=False):
        total[top : top + box_rows, left : left + box_columns] += up_rows @ grid_scores[:rows, :columns] @ up_columns.T
        weight[top : top + box_rows, left : left + box_columns] += 1.0
    stitched = total / weight
    if sigma > 0:
        stitched = ndimage.gaussian_filter(stitched, sigma, mode="reflect", truncate=4.0)
    return np.ascontiguousarray(stitched, dtype=np.float32)


__all__ = [
    "BOX_FIELDS",
    "cut_tiles",
    "stitch_map",
    "tile_boxes",
    "tile_count",
    "tile_starts",
    "tiled_size",
    "tiled_valid_mask",
]
