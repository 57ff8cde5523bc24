"""Image file names and the unusable-image error (structcore.image_files)."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image, features

from structcore.image_files import IMAGE_SUFFIXES, ImageReadError
from structcore.preprocess import load_image


def test_error_names_the_file_and_the_reason() -> None:
    error = ImageReadError(Path("/line/cam3/000.png"), "truncated PNG")
    assert str(error) == "/line/cam3/000.png: truncated PNG"
    assert error.path == "/line/cam3/000.png" and error.reason == "truncated PNG"
    assert isinstance(error, ValueError)


def test_error_survives_pickling() -> None:
    """Worker processes (multiprocessing, Ray) send it back pickled."""
    error = pickle.loads(pickle.dumps(ImageReadError("a.png", "not an image")))
    assert type(error) is ImageReadError
    assert (error.path, error.reason, str(error)) == ("a.png", "not an image", "a.png: not an image")


def test_suffixes_are_lower_case_and_each_one_is_readable(tmp_path: Path) -> None:
    assert all(suffix.startswith(".") and suffix == suffix.lower() for suffix in IMAGE_SUFFIXES)
    assert {".png", ".jpg", ".jpeg"} <= IMAGE_SUFFIXES
    pixels = np.random.default_rng(0).integers(0, 255, size=(40, 40, 3), dtype=np.uint8)
    for suffix in sorted(IMAGE_SUFFIXES):
        if suffix == ".webp" and not features.check("webp"):
            continue
        path = tmp_path / f"image{suffix}"
        Image.fromarray(pixels).save(path)
        loaded = load_image(path)
        assert (loaded.mode, loaded.size) == ("RGB", (40, 40)), suffix


def test_importing_it_loads_neither_numpy_nor_pillow() -> None:
    code = "import sys, structcore.image_files; print(sorted({'numpy', 'PIL'} & set(sys.modules)))"
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert found.stdout.strip() == "[]"
