"""Reading and preprocessing images for the runtime: PIL + numpy, as ``structcore.preprocess`` does.

RGB 8 bit (16-bit and float modes scaled as the registry does), EXIF orientation applied, the
header's size checked before any pixel is decoded, bilinear resize to ``resize``, centre crop
``crop``, values in [0, 1]. The equality tests compare the runtime's scores with ``registry infer``
on the same files, which covers this path.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

#: Largest image (in pixels) that is decoded (16k x 16k, as the registry).
MAX_IMAGE_PIXELS = 16384 * 16384
#: File name suffixes of images (folders are searched recursively for these).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class ImageError(Exception):
    """An image that cannot be scored (its message is one line naming the file)."""


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode as 8-bit RGB (16/32-bit integers scaled by their bit depth, floats in [0, 1])."""
    if image.mode == "RGB":
        return image
    if image.mode in {"I;16", "I;16B", "I;16L", "I;16N", "I"}:
        values = np.clip(np.asarray(image).astype(np.int64), 0, None)
        if image.mode.startswith("I;16"):
            bits = 16
        else:
            peak = int(values.max()) if values.size else 0
            bits = 8 if peak < 256 else 16 if peak < 65536 else 32
        return Image.fromarray((values >> (bits - 8)).astype(np.uint8), mode="L").convert("RGB")
    if image.mode == "F":
        values = np.asarray(image, dtype=np.float32)
        return Image.fromarray(np.clip(np.round(values * 255.0), 0, 255).astype(np.uint8), mode="L").convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    return image.convert("RGB")


def load_image(path: str | Path, max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """An image file as 8-bit RGB; :class:`ImageError` with one line when it cannot be read."""
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise ImageError(f"{path}: empty file (0 bytes)")
    except OSError as error:
        raise ImageError(f"{path}: cannot read file ({error.strerror})") from error
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            opened = Image.open(path)
            width, height = opened.size
            if width * height > max_pixels:
                raise ImageError(f"{path}: image too large ({width * height} pixels; limit {max_pixels})")
            if min(opened.size) < 1:
                raise ImageError(f"{path}: image has no pixels")
            opened.load()
            return to_rgb(ImageOps.exif_transpose(opened) or opened)
    except ImageError:
        raise
    except UnidentifiedImageError as error:
        raise ImageError(f"{path}: not a readable image file") from error
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageError(f"{path}: image too large ({error})") from error
    except MemoryError as error:
        raise ImageError(f"{path}: not enough memory to decode the image") from error
    except Exception as error:  # PIL's plugins raise OSError, SyntaxError, ValueError, ... on damaged files
        raise ImageError(f"{path}: corrupt or truncated image ({type(error).__name__}: {error})") from error


def preprocess(image: Image.Image, resize: int, crop: int) -> np.ndarray:
    """Resize + centre crop; float32 (3, crop, crop) in [0, 1]."""
    resized = to_rgb(image).resize((resize, resize), Image.Resampling.BILINEAR)
    if crop != resize:
        offset = (resize - crop) // 2
        resized = resized.crop((offset, offset, offset + crop, offset + crop))
    array = np.asarray(resized, dtype=np.float32) / 255.0
    return np.ascontiguousarray(array.transpose(2, 0, 1))


def images_in(folder: Path) -> list[Path]:
    """Image files under ``folder`` (recursive, sorted as ``registry infer`` walks, symlink loops safe)."""
    found: list[Path] = []
    seen: set[Path] = set()
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        real = Path(dirpath).resolve()
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames.sort()
        found.extend(Path(dirpath) / name for name in sorted(filenames) if Path(name).suffix.lower() in IMAGE_SUFFIXES)
    return found


def expand_inputs(items: list[str]) -> list[Path]:
    """Files as given (a bad one is reported, not skipped); folders searched recursively; duplicates dropped."""
    found: list[Path] = []
    for item in items:
        path = Path(item)
        found.extend(images_in(path) if path.is_dir() else [path])
    return list(dict.fromkeys(found))
