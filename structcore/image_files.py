"""Which files are images, and the error for one that is not usable.

Standard library only, so that the command line can name image files and report bad ones
without loading numpy or Pillow (see :mod:`structcore.preprocess` for the reading itself).
"""

from __future__ import annotations

from pathlib import Path

#: File suffixes read as images (lower case).
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})


class ImageReadError(ValueError):
    """An input file is not a usable image. The message names the file and the reason."""

    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")

    def __reduce__(self) -> tuple[type[ImageReadError], tuple[str, str]]:
        # Picklable with its two-argument constructor (multiprocessing, Ray workers).
        return (type(self), (self.path, self.reason))


__all__ = ["IMAGE_SUFFIXES", "ImageReadError"]
