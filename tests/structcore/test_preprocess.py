"""Image loading and preprocessing: every PIL mode, EXIF, bad files, masks."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from structcore.image_files import ImageReadError
from structcore.preprocess import (
    Preprocessing,
    fit_content,
    load_image,
    preprocess_image,
    preprocess_mask,
    valid_patch_grid,
    valid_patch_mask,
)

GEOMETRY = Preprocessing(resize=64, crop=48)


def save(image: Image.Image, path: Path, **kwargs: object) -> Path:
    image.save(path, **kwargs)
    return path


def test_geometry_and_range(tmp_path: Path) -> None:
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (100, 80, 3), dtype=np.uint8))
    array = preprocess_image(load_image(save(image, tmp_path / "a.png")), GEOMETRY)
    assert array.shape == (3, 48, 48) and array.dtype == np.float32
    assert array.min() >= 0.0 and array.max() <= 1.0


def test_no_crop_geometry() -> None:
    array = preprocess_image(np.zeros((30, 30, 3), dtype=np.uint8), Preprocessing(resize=32, crop=32))
    assert array.shape == (3, 32, 32)


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "P", "CMYK", "1", "I;16", "I", "F"])
def test_all_modes_become_rgb(tmp_path: Path, mode: str) -> None:
    base = Image.new("RGB", (20, 10), (200, 100, 50))
    if mode == "I;16":
        image = Image.fromarray(np.full((10, 20), 51200, dtype=np.uint16))
    elif mode == "F":
        image = Image.fromarray(np.full((10, 20), 0.5, dtype=np.float32))
    else:
        image = base.convert(mode)
    suffix = ".tiff" if mode in {"CMYK", "F", "I"} else ".png"
    loaded = load_image(save(image, tmp_path / f"img{suffix}"))
    assert loaded.mode == "RGB" and loaded.size == (20, 10)
    if mode == "I;16":
        assert np.asarray(loaded)[0, 0, 0] == 200  # 51200 >> 8


def test_cmyk_jpeg(tmp_path: Path) -> None:
    image = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # red
    loaded = load_image(save(image, tmp_path / "cmyk.jpg"))
    red, green, blue = np.asarray(loaded)[8, 8]
    assert red > 200 and green < 60 and blue < 60


def test_exif_rotation_applied(tmp_path: Path) -> None:
    image = Image.new("RGB", (40, 20), (0, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display
    loaded = load_image(save(image, tmp_path / "rot.jpg", exif=exif))
    assert loaded.size == (20, 40)


def test_bad_files_raise_named_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    text = tmp_path / "text.png"
    text.write_text("not an image")
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (1, 2, 3)).save(buffer, format="PNG")
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    for path, reason in [(empty, "empty"), (text, "not a readable image"), (truncated, "truncated")]:
        with pytest.raises(ImageReadError, match=reason) as info:
            load_image(path)
        assert str(path) in str(info.value)
    with pytest.raises(ImageReadError, match="cannot read"):
        load_image(tmp_path / "missing.png")


def test_decompression_bomb_refused_before_decoding(tmp_path: Path) -> None:
    path = save(Image.new("L", (3000, 3000)), tmp_path / "bomb.png")
    with pytest.raises(ImageReadError, match="too large"):
        load_image(path, max_pixels=1000 * 1000)


def test_mask_nearest_and_crop() -> None:
    mask = np.zeros((64, 64), dtype=np.uint8)
    mask[30:34, 30:34] = 255
    processed = preprocess_mask(mask, GEOMETRY)
    assert processed.dtype == bool and processed.shape == (48, 48)
    assert processed.sum() == 16 and processed[22:26, 22:26].all()


# ----------------------------------------------------------------------------- the fit geometry
def test_fit_content_keeps_the_aspect_ratio() -> None:
    assert fit_content((200, 100), 128) == (64, 128)  # (height, width): long side to 128
    assert fit_content((100, 200), 128) == (128, 64)
    assert fit_content((5000, 1), 128) == (1, 128)  # a 1-pixel strip keeps one row
    assert fit_content((300, 300), 128) == (128, 128)


def test_valid_patches_are_those_centred_in_the_content() -> None:
    # 16 patches of 8 px over 128: centres at 4, 12, ..., 124
    assert valid_patch_grid((64, 128), (16, 16), 128) == (8, 16)
    assert valid_patch_grid((61, 128), (16, 16), 128) == (8, 16)  # centre 60 < 61
    assert valid_patch_grid((60, 128), (16, 16), 128) == (7, 16)  # centre 60 is not inside
    assert valid_patch_grid((1, 1), (16, 16), 128) == (1, 1)  # never empty
    mask = valid_patch_mask(np.array([[64, 128], [128, 32]]), (16, 16), 128).reshape(2, 16, 16)
    assert mask[0, :8].all() and not mask[0, 8:].any()
    assert mask[1, :, :4].all() and not mask[1, :, 4:].any()


def test_fit_puts_the_image_top_left_and_pads_the_rest() -> None:
    geometry = Preprocessing(resize=64, crop=64, input_geometry="fit")
    image = np.full((20, 40, 3), 255, dtype=np.uint8)  # 2:1, white
    square = preprocess_image(image, geometry)
    assert square.shape == (3, 64, 64)
    assert np.all(square[:, :32, :] == 1.0) and np.all(square[:, 32:, :] == 0.0)
    mask = np.zeros((20, 40), dtype=np.uint8)
    mask[:, 20:] = 1
    content_mask = preprocess_mask(mask, geometry)
    assert content_mask.shape == (32, 64) and content_mask[:, 32:].all() and not content_mask[:, :32].any()
    with pytest.raises(ValueError, match="fit geometry takes no crop"):
        Preprocessing(resize=64, crop=48, input_geometry="fit")
