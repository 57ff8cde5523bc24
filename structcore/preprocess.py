"""Image and mask loading and preprocessing (method.md step 1).

Every image of a registry is preprocessed alike: RGB, resize to ``resize`` x ``resize``, centre
crop ``crop`` x ``crop`` (``crop == resize`` means no crop, the default of new registries:
:data:`DEFAULT_RESIZE`), values in [0, 1]. Masks take the
same geometric path with nearest-neighbour resampling.

That is the ``squash`` input geometry. With ``fit`` (:data:`structcore.settings.INPUT_GEOMETRIES`)
the image keeps its aspect ratio: its long side is resized to ``resize``, it is placed in the
top-left corner of the square and the rest is padding (0 here; the extractor sets it to the
backbone's mean colour, 0 after normalisation). The *content* is the top-left (height, width) of
the square the image covers (:func:`fit_content`); the patches whose centre lies in it are the
valid ones (:func:`valid_patch_mask`): the model never looks at the others.
"""

from __future__ import annotations

import io
import re
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# 8-bit RGB from any PIL mode: one implementation, shared with the exported runtime
from structcore_runtime.images import to_rgb

from structcore.image_files import ImageReadError
from structcore.settings import (
    DEFAULT_CROP,
    DEFAULT_INPUT_GEOMETRY,
    DEFAULT_RESIZE,
    DEFAULT_TILE_MAX_SIDE,
    DEFAULT_TILE_OVERLAP,
    INPUT_GEOMETRIES,
)

#: Largest image (in pixels) that is decoded; larger headers are refused before decoding
#: (a decompression bomb would otherwise exhaust memory). 16k x 16k covers real line cameras.
MAX_IMAGE_PIXELS = 16384 * 16384


#: Default geometry of new feature spaces (``DEFAULT_RESIZE``, ``DEFAULT_CROP``: 392, no crop) and
#: the paper's (``PAPER_RESIZE``, ``PAPER_CROP``: 448 -> 392) live in :mod:`structcore.settings`.


@dataclass(frozen=True)
class Preprocessing:
    """Geometry of the preprocessing: resize to ``resize``, then centre crop ``crop``.

    ``input_geometry``: ``squash`` (resize whatever the aspect ratio), ``fit`` (aspect kept, long
    side to ``resize``, padded to the square; ``crop`` must equal ``resize``) or ``tile`` (own
    resolution, long side capped at ``tile_max_side``, cut into ``resize`` tiles overlapping by at
    least ``tile_overlap`` pixels: :mod:`structcore.tiles`; ``crop`` must equal ``resize``).
    """

    resize: int = DEFAULT_RESIZE
    crop: int = DEFAULT_CROP
    input_geometry: str = DEFAULT_INPUT_GEOMETRY
    tile_max_side: int = DEFAULT_TILE_MAX_SIDE
    tile_overlap: int = DEFAULT_TILE_OVERLAP

    def __post_init__(self) -> None:
        if not 0 < self.crop <= self.resize:
            msg = f"crop ({self.crop}) must be in 1..resize ({self.resize})"
            raise ValueError(msg)
        if self.input_geometry not in INPUT_GEOMETRIES:
            msg = f"input geometry must be one of {', '.join(INPUT_GEOMETRIES)}, got {self.input_geometry!r}"
            raise ValueError(msg)
        if self.input_geometry in {"fit", "tile"} and self.crop != self.resize:
            msg = f"the {self.input_geometry} geometry takes no crop (crop {self.crop} must equal resize {self.resize})"
            raise ValueError(msg)
        if self.input_geometry == "tile" and not (0 <= self.tile_overlap < self.resize and self.tile_max_side >= 1):
            msg = f"tile overlap {self.tile_overlap} must be in [0, {self.resize}) and the max side positive"
            raise ValueError(msg)

    @property
    def fits(self) -> bool:
        """Whether images keep their aspect ratio (``fit``): maps cover each image's content only."""
        return self.input_geometry == "fit"

    @property
    def tiles(self) -> bool:
        """Whether images are cut into tiles at their own resolution (``tile``)."""
        return self.input_geometry == "tile"

    @property
    def masks_content(self) -> bool:
        """Whether maps cover each image's content only (``fit`` and ``tile``), with invalid patches masked."""
        return self.input_geometry in {"fit", "tile"}

    def content(self, size: tuple[int, int]) -> tuple[int, int]:
        """(height, width) the map of an image of ``size`` (width, height) covers (``fit`` / ``tile``)."""
        if self.tiles:
            return tiled_size(size, self.tile_max_side)
        return fit_content(size, self.resize)

    @property
    def crop_box(self) -> tuple[int, int, int, int]:
        """(left, top, right, bottom) of the centre crop inside the resized image."""
        offset = (self.resize - self.crop) // 2
        return (offset, offset, offset + self.crop, offset + self.crop)


#: Serialises the short window in which PIL's own header check uses :data:`MAX_IMAGE_PIXELS`.
_PIL_LIMIT_LOCK = threading.Lock()


def _open_within_limit(path: Path | BinaryIO, max_pixels: int) -> Image.Image:
    """``Image.open`` (header only) with PIL's decompression-bomb check set to ``max_pixels``.

    PIL refuses images above its own default (about 89 M pixels) whatever the caller allows,
    so the product's limit is applied through PIL's check while the header is parsed.
    """
    with _PIL_LIMIT_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # damaged metadata that PIL skips
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        previous = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = max_pixels
        try:
            return Image.open(path)
        finally:
            Image.MAX_IMAGE_PIXELS = previous


def _too_large(error: BaseException, max_pixels: int) -> str:
    found = re.search(r"\((\d+) pixels\)", str(error))
    size = f"{found.group(1)} pixels" if found else "more pixels than allowed"
    return f"image too large ({size}; limit {max_pixels}); refused before decoding"


def load_image(path: str | Path, max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """Read an image file into an 8-bit RGB PIL image, EXIF orientation applied.

    The size in the header is checked against ``max_pixels`` before any pixel is decoded.

    Raises:
        ImageReadError: the file is missing, empty, not an image, truncated, or too large.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as error:
        raise ImageReadError(path, f"cannot read file ({error.strerror})") from error
    if size == 0:
        raise ImageReadError(path, "empty file (0 bytes)")
    return _decode(path, path, max_pixels)


def decode_image(data: bytes, name: str, max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """:func:`load_image` for an image held in memory (e.g. an upload); ``name`` labels errors.

    Raises:
        ImageReadError: the bytes are empty, not an image, truncated, or too large.
    """
    if not data:
        raise ImageReadError(name, "empty file (0 bytes)")
    return _decode(name, io.BytesIO(data), max_pixels)


def _check_size(path: str | Path, opened: Image.Image, max_pixels: int) -> tuple[int, int]:
    """``opened.size`` after the checks every read makes before decoding (pixel limit, no pixels)."""
    width, height = opened.size
    if width * height > max_pixels:
        msg = f"image too large ({width * height} pixels; limit {max_pixels}); refused before decoding"
        raise ImageReadError(path, msg)
    if min(opened.size) < 1:
        raise ImageReadError(path, "image has no pixels")
    return width, height


def _decode(path: str | Path, source: Path | BinaryIO, max_pixels: int) -> Image.Image:
    """Open ``source`` (a file or a byte stream) and decode it; errors name ``path``."""
    try:
        opened = _open_within_limit(source, max_pixels)
    except Exception as error:
        raise _read_error(path, error, max_pixels) from error
    try:
        with warnings.catch_warnings():
            # PIL warns (UserWarning) about damaged metadata that it skips; the pixels are fine
            warnings.simplefilter("ignore", UserWarning)
            _check_size(path, opened, max_pixels)
            opened.load()
            image: Image.Image = ImageOps.exif_transpose(opened) or opened
            result = to_rgb(image)
    except Exception as error:
        opened.close()  # a failed read releases its file at once
        if isinstance(error, ImageReadError):
            raise
        raise _read_error(path, error, max_pixels) from error
    if result is not opened:
        opened.close()  # the returned RGB image is a separate copy
    return result


def check_image_file(path: str | Path, max_pixels: int = MAX_IMAGE_PIXELS) -> None:
    """Check that ``path`` reads as an image, more cheaply than :func:`load_image`.

    Opens the header (size limit as in :func:`load_image`), runs PIL's ``verify`` (chunk
    checksums, structure) and decodes the pixels at a reduced scale where the format allows it
    (JPEG draft mode), which finds truncated or damaged data.

    Raises:
        ImageReadError: with the same reasons as :func:`load_image`.
    """
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise ImageReadError(path, "empty file (0 bytes)")
    except OSError as error:
        raise ImageReadError(path, f"cannot read file ({error.strerror})") from error
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            with _open_within_limit(path, max_pixels) as opened:
                width, height = _check_size(path, opened, max_pixels)
                opened.verify()
            with _open_within_limit(path, max_pixels) as opened:
                opened.draft("RGB", (max(1, width // 8), max(1, height // 8)))
                opened.load()
    except Exception as error:
        raise _read_error(path, error, max_pixels) from error


def _read_error(path: str | Path, error: Exception, max_pixels: int) -> ImageReadError:
    """The :class:`ImageReadError` for an exception raised while opening or decoding ``path``."""
    if isinstance(error, ImageReadError):
        return error
    if isinstance(error, UnidentifiedImageError):
        return ImageReadError(path, "not a readable image file")
    if isinstance(error, Image.DecompressionBombError | Image.DecompressionBombWarning):
        return ImageReadError(path, _too_large(error, max_pixels))
    if isinstance(error, PermissionError | IsADirectoryError | FileNotFoundError):
        return ImageReadError(path, f"cannot read file ({error.strerror})")
    if isinstance(error, MemoryError):
        return ImageReadError(path, "not enough memory to decode the image")
    # PIL's plugins raise OSError, SyntaxError, ValueError, struct.error, ... on damaged files
    return ImageReadError(path, f"corrupt or truncated image ({type(error).__name__}: {error})")


def fit_content(size: tuple[int, int], side: int) -> tuple[int, int]:
    """(height, width) an image of ``size`` (width, height) covers in the ``fit`` square of ``side``.

    The long side becomes ``side``, the short one ``round(short * side / long)`` (at least 1).
    """
    width, height = int(size[0]), int(size[1])
    if width < 1 or height < 1:
        msg = f"an image size must be positive, got {size}"
        raise ValueError(msg)
    scale = side / max(width, height)
    return max(1, min(side, round(height * scale))), max(1, min(side, round(width * scale)))


def tiled_size(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    """(height, width) of an image of ``size`` (width, height) in the ``tile`` geometry.

    Its own size, or scaled down (aspect kept, at least 1 pixel a side) so that the long side
    is ``max_side``; never scaled up.
    """
    width, height = int(size[0]), int(size[1])
    if width < 1 or height < 1:
        msg = f"an image size must be positive, got {size}"
        raise ValueError(msg)
    if max_side < 1:
        msg = f"max_side must be positive, got {max_side}"
        raise ValueError(msg)
    longest = max(width, height)
    if longest <= max_side:
        return height, width
    scale = max_side / longest
    return max(1, min(max_side, round(height * scale))), max(1, min(max_side, round(width * scale)))


def valid_patch_grid(content: tuple[int, int], grid: tuple[int, int], side: int) -> tuple[int, int]:
    """(rows, columns) of the top-left block of valid patches: those whose centre lies in ``content``.

    Patch ``j`` of a grid of ``n`` over ``side`` pixels is centred at ``(j + 0.5) * side / n``; at
    least one patch per axis is valid.
    """
    counts = []
    for extent, cells in zip(content, grid, strict=True):
        stride = side / cells
        counts.append(int(np.clip(np.ceil(extent / stride - 0.5), 1, cells)))
    return counts[0], counts[1]


def valid_patch_mask(contents: np.ndarray, grid: tuple[int, int], side: int) -> np.ndarray:
    """(B, h*w) bool: the valid patches of each image's ``contents`` row (height, width)."""
    contents = np.asarray(contents, dtype=np.int64).reshape(-1, 2)
    mask = np.zeros((len(contents), grid[0], grid[1]), dtype=bool)
    for row, content in enumerate(contents):
        rows, columns = valid_patch_grid((int(content[0]), int(content[1])), grid, side)
        mask[row, :rows, :columns] = True
    return mask.reshape(len(contents), grid[0] * grid[1])


def image_size(image: Image.Image | np.ndarray) -> tuple[int, int]:
    """(width, height) of a PIL image or an (H, W[, C]) array."""
    if isinstance(image, np.ndarray):
        return int(image.shape[1]), int(image.shape[0])
    return int(image.size[0]), int(image.size[1])


def preprocess_image(image: Image.Image | np.ndarray, geometry: Preprocessing) -> np.ndarray:
    """Resize + centre crop an image; returns float32 (3, crop, crop) in [0, 1].

    ``fit``: the image, aspect kept, in the top-left (:func:`fit_content`) of a 0-filled square.
    ``tile``: the whole image at its own size, or scaled down to :func:`tiled_size`: (3, height,
    width), which :func:`structcore.tiles.cut_tiles` cuts.
    """
    if isinstance(image, np.ndarray):
        image = Image.fromarray(_as_uint8_rgb(image))
    image = to_rgb(image)
    if geometry.tiles:
        height, width = tiled_size(image.size, geometry.tile_max_side)
        if (width, height) != image.size:
            image = image.resize((width, height), Image.Resampling.BILINEAR)
        return np.ascontiguousarray(np.asarray(image, dtype=np.float32).transpose(2, 0, 1) / 255.0)
    if geometry.fits:
        height, width = fit_content(image.size, geometry.resize)
        square = np.zeros((3, geometry.resize, geometry.resize), dtype=np.float32)
        content = image.resize((width, height), Image.Resampling.BILINEAR)
        square[:, :height, :width] = np.asarray(content, dtype=np.float32).transpose(2, 0, 1) / 255.0
        return square
    resized = image.resize((geometry.resize, geometry.resize), Image.Resampling.BILINEAR)
    if geometry.crop != geometry.resize:
        resized = resized.crop(geometry.crop_box)
    array = np.asarray(resized, dtype=np.float32) / 255.0
    return np.ascontiguousarray(array.transpose(2, 0, 1))


def preprocess_mask(mask: Image.Image | np.ndarray, geometry: Preprocessing) -> np.ndarray:
    """Resize (nearest) + centre crop a mask; returns bool (crop, crop), True = anomalous."""
    if isinstance(mask, np.ndarray):
        mask = Image.fromarray((np.asarray(mask) > 0).astype(np.uint8) * 255, mode="L")
    if mask.mode not in {"L", "1"}:
        mask = mask.convert("L")
    if geometry.masks_content:  # the content only, as the maps of fit and tile cover it
        height, width = geometry.content(mask.size)
        return np.asarray(mask.resize((width, height), Image.Resampling.NEAREST)) > 0
    resized = mask.resize((geometry.resize, geometry.resize), Image.Resampling.NEAREST)
    if geometry.crop != geometry.resize:
        resized = resized.crop(geometry.crop_box)
    return np.asarray(resized) > 0


def load_mask(path: str | Path, geometry: Preprocessing) -> np.ndarray:
    """Read and preprocess a ground-truth mask file (any non-zero pixel is anomalous)."""
    try:
        with Image.open(path) as mask:
            mask.load()
            return preprocess_mask(mask, geometry)
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageReadError(path, f"unreadable mask ({error})") from error


def displayed_size(path: str | Path) -> tuple[int, int]:
    """(width, height) of an image file as :func:`load_image` returns it (EXIF rotation applied), from its header."""
    with Image.open(path) as opened:
        width, height = opened.size
        orientation = opened.getexif().get(0x0112, 1)
    return (height, width) if orientation in {5, 6, 7, 8} else (width, height)


def load_mask_at_size(path: str | Path, size: tuple[int, int]) -> np.ndarray:
    """A ground-truth mask as bool (height, width) at the image's ``size`` (nearest resampling if it differs)."""
    try:
        with Image.open(path) as opened:
            opened.load()
            mask: Image.Image = opened
            target = (int(size[0]), int(size[1]))
            if mask.size != target:
                mask = mask.resize(target, Image.Resampling.NEAREST)
            return np.asarray(mask.convert("L")) > 0
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageReadError(path, f"unreadable mask ({error})") from error


def _as_uint8_rgb(array: np.ndarray) -> np.ndarray:
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.shape[2] == 4:
        array = array[:, :, :3]
    if array.dtype != np.uint8:
        array = np.clip(array, 0, 255).astype(np.uint8)
    return array
