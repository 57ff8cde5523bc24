"""Bad images for `registry infer` and bad folders for `registry add-category` (issue 7).

Images: a generated corpus of broken files (empty, truncated PNG / JPEG, text named .png, a
symlink loop, two decompression bombs) and of odd but valid ones (1x1, 16-bit grey, RGBA,
palette, CMYK JPEG, EXIF-rotated). Each broken file gives one line naming it, the rest of the
batch is scored, the exit code is 1, there is no traceback, and the bombs are refused from
their header (the peak memory of the command stays at that of a clean run). Each valid odd
file is scored exactly as its plain RGB equivalent.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from typer.testing import CliRunner

from cli.main import app
from registry import Registry, RegistryError
from structcore.image_files import ImageReadError
from structcore.preprocess import load_image
from tests.support_registry import tree_hashes
from tests.support_reliability import (
    CHILD_ENV,
    REGISTRY_SCRIPT,
    Data,
    make_registry,
    run_measured,
    small_model,
    write_data,
)

runner = CliRunner()
#: How much more memory the corpus run may use than a run on clean images only.
RSS_MARGIN_MB = 150


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("inputs")
    data: Data = write_data(folder / "images", ("pill", "grid", "tile"))
    root = make_registry(folder / "registry", data, ("pill", "grid"))
    return {"folder": folder, "data": data, "root": root}


# --------------------------------------------------------------------------- the corpus
def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _png(width: int, height: int, depth: int, color: int, idat: bytes) -> bytes:
    header = struct.pack(">IIBBBBB", width, height, depth, color, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def bomb_header(width: int = 30_000, height: int = 30_000) -> bytes:
    """An RGB PNG header of ``width`` x ``height`` whose pixel data is a few bytes (cheap to make)."""
    return _png(width, height, 8, 2, zlib.compress(b"\0" * 64))


def bomb_one_bit(side: int = 30_000) -> bytes:
    """A complete 1-bit PNG of ``side``^2 zero pixels (~110 KB; 2.7 GB once decoded to RGB)."""
    row = b"\0" * (1 + (side + 7) // 8)
    compressor = zlib.compressobj(9)
    block = row * 1000
    parts = [compressor.compress(block) for _ in range(side // 1000)] + [compressor.flush()]
    return _png(side, side, 1, 0, b"".join(parts))


def _encoded(image: Image.Image, fmt: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def write_corpus(folder: Path, clean: Path) -> tuple[list[Path], dict[str, Path], list[tuple[Path, Path]]]:
    """Broken files, valid odd files and (odd, plain equivalent) pairs, built from ``clean``."""
    folder.mkdir(parents=True)
    base = Image.open(clean).convert("RGB")
    png, jpeg = _encoded(base, "PNG"), _encoded(base, "JPEG", quality=95)
    broken = {
        "empty.png": b"",
        "truncated.png": png[: len(png) // 2],
        "truncated.jpg": jpeg[: len(jpeg) * 2 // 3],
        "text.png": b"this is not an image\n",
        "bomb-header.png": bomb_header(),
        "bomb-1bit.png": bomb_one_bit(),
    }
    for name, content in broken.items():
        (folder / name).write_bytes(content)
    os.symlink("loop-b.png", folder / "loop-a.png")
    os.symlink("loop-a.png", folder / "loop-b.png")
    bad = sorted([*(folder / name for name in broken), folder / "loop-a.png", folder / "loop-b.png"])

    grey = base.convert("L")
    rotated = base.transpose(Image.Transpose.ROTATE_270)  # what EXIF orientation 6 asks a viewer to show
    exif = Image.Exif()
    exif[0x0112] = 6
    palette = base.quantize(256)
    valid = {
        "one-pixel.png": Image.new("RGB", (1, 1), (120, 80, 40)),
        "grey8.png": grey,
        "grey16.png": Image.fromarray(np.asarray(grey).astype(np.uint16) * 257),
        "rgb.png": base,
        "rgba.png": base.convert("RGBA"),
        "palette.png": palette,
        "palette-as-rgb.png": palette.convert("RGB"),
        "rotated.png": rotated,
    }
    paths = {}
    for name, image in valid.items():
        image.save(folder / name)
        paths[name] = folder / name
    base.save(folder / "exif-rotated.png", exif=exif)
    base.convert("CMYK").save(folder / "cmyk.jpg", quality=95)
    paths["exif-rotated.png"] = folder / "exif-rotated.png"
    paths["cmyk.jpg"] = folder / "cmyk.jpg"
    pairs = [
        (paths["grey16.png"], paths["grey8.png"]),
        (paths["rgba.png"], paths["rgb.png"]),
        (paths["palette.png"], paths["palette-as-rgb.png"]),
        (paths["exif-rotated.png"], paths["rotated.png"]),
    ]
    return bad, paths, pairs


def test_infer_reports_each_bad_file_on_one_line_and_scores_the_rest(world: dict[str, Any], tmp_path: Path) -> None:
    clean_images = world["data"]["pill"][1][:2] + world["data"]["grid"][1][:1]
    corpus = tmp_path / "corpus"
    bad, valid, pairs = write_corpus(corpus, clean_images[0])
    for image in clean_images:
        shutil.copy(image, corpus / f"clean-{image.parent.name}-{image.name}")
    root = str(world["root"])
    baseline, baseline_rss = run_measured(
        [str(REGISTRY_SCRIPT), "infer", *map(str, clean_images), "--root", root, "--json"],
        tmp_path / "rss-baseline", env=CHILD_ENV,
    )  # fmt: skip
    assert baseline.returncode == 0, baseline.stderr
    result, rss = run_measured(
        [str(REGISTRY_SCRIPT), "infer", str(corpus), "--root", root, "--json"], tmp_path / "rss", env=CHILD_ENV
    )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    records = {Path(r["path"]).name: r for r in json.loads(result.stdout)}
    assert len(records) == len(bad) + len(valid) + len(clean_images)
    failed_lines = [line for line in result.stderr.splitlines() if line.startswith("failed: ")]
    assert len(failed_lines) == len(bad), result.stderr
    for path in bad:
        record = records[path.name]
        assert record["error"] and record["score_hybrid"] is None, record
        assert str(path) in record["error"]
        assert sum(str(path) + ":" in line for line in failed_lines) == 1
    expected = {
        "empty.png": "empty file (0 bytes)",
        "truncated.png": "corrupt or truncated image",
        "truncated.jpg": "corrupt or truncated image",
        "text.png": "not a readable image file",
        "bomb-header.png": "image too large (900000000 pixels; limit 268435456); refused before decoding",
        "bomb-1bit.png": "image too large (900000000 pixels; limit 268435456); refused before decoding",
        "loop-a.png": "cannot read file (Too many levels of symbolic links)",
    }
    for name, reason in expected.items():
        assert reason in records[name]["error"], records[name]["error"]
    for name in [*valid, *(f"clean-{p.parent.name}-{p.name}" for p in clean_images)]:
        record = records[name]
        assert record["error"] is None and record["category"] in {"pill", "grid"}, record
        assert np.isfinite(record["score_hybrid"])
    for odd, plain in pairs:  # the same pixels after loading; the same scores (up to batch-order rounding)
        np.testing.assert_array_equal(np.asarray(load_image(odd)), np.asarray(load_image(plain)))
        assert records[odd.name]["score_hybrid"] == pytest.approx(records[plain.name]["score_hybrid"], rel=1e-5)
        assert records[odd.name]["category"] == records[plain.name]["category"]
    # the bombs were refused from their headers: no decoded 2.7 GB image, not even 112 MB of bits
    print(f"\npeak RSS: clean run {baseline_rss:.0f} MiB, corpus run {rss:.0f} MiB")
    assert rss < baseline_rss + RSS_MARGIN_MB


def test_the_product_limit_applies_not_pils_default(tmp_path: Path) -> None:
    """PIL refuses more than ~89 M pixels on its own; the documented limit is 16k x 16k."""
    path = tmp_path / "big.png"
    path.write_bytes(bomb_header(10_000, 10_000))  # 100 M pixels, pixel data missing
    before = Image.MAX_IMAGE_PIXELS
    with pytest.raises(ImageReadError, match="corrupt or truncated image") as caught:
        load_image(path)  # within the product's limit: decoded (and found truncated), not refused
    assert "too large" not in str(caught.value)
    with pytest.raises(ImageReadError, match=r"too large \(100000000 pixels; limit 50000000\); refused before"):
        load_image(path, max_pixels=50_000_000)
    assert before == Image.MAX_IMAGE_PIXELS  # PIL's global is restored


SEEDS = {fmt: _encoded(Image.fromarray(np.random.default_rng(1).integers(0, 255, (24, 32, 3), np.uint8)), fmt)
         for fmt in ("PNG", "JPEG", "TIFF", "GIF", "WEBP", "BMP")}  # fmt: skip


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    fmt=st.sampled_from(sorted(SEEDS)),
    mutations=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), min_size=1, max_size=8),
    head=st.booleans(),
    truncate=st.one_of(st.none(), st.floats(0.0, 1.0)),
)
def test_mutated_images_fail_only_with_image_read_errors(
    tmp_path: Path, fmt: str, mutations: list[tuple[float, int]], head: bool, truncate: float | None
) -> None:
    data = bytearray(SEEDS[fmt])
    span = min(len(data), 256) if head else len(data)  # headers are where parsers go wrong
    for where, value in mutations:
        data[int(where * span)] = value
    if truncate is not None:
        data = data[: int(len(data) * truncate)]
    path = tmp_path / f"mutated.{fmt.lower()}"
    path.write_bytes(bytes(data))
    try:
        image = load_image(path)
    except ImageReadError as error:
        assert str(error).startswith(f"{path}: ")
        return
    assert image.mode == "RGB" and min(image.size) >= 1


# ------------------------------------------------------------------------- add-category
def _folder(root: Path, name: str, images: list[Path], layout: str = "") -> Path:
    target = root / name / layout if layout else root / name
    target.mkdir(parents=True, exist_ok=True)
    for image in images:
        shutil.copy(image, target / image.name)
    return root / name


def _stable_hashes(root: Path) -> dict[str, str]:
    return {k: v for k, v in tree_hashes(root).items() if not k.endswith(("-wal", "-shm"))}


def test_add_category_bad_folders_get_clear_messages(world: dict[str, Any], tmp_path: Path) -> None:
    train = world["data"]["tile"][0]
    folders = tmp_path / "folders"
    cases: dict[str, tuple[list[str], int, str]] = {}

    no_good = _folder(folders, "no-good", train[:1], "test/good")
    (no_good / "train").mkdir()
    cases["missing train/good"] = ([str(no_good)], 1, "looks like an MVTec AD category but has no train/good")
    cases["empty folder"] = ([str(_folder(folders, "empty", []))], 1, "holds no images; pass a folder of good images")
    cases["empty train/good"] = ([str(_folder(folders, "empty-good", [], "train/good"))], 1,
                                 "train/good holds no images")  # fmt: skip
    cases["one image"] = ([str(_folder(folders, "one", train[:1]))], 1, "needs at least 3 train images, got 1")
    cases["two images"] = ([str(_folder(folders, "two", train[:2]))], 1, "needs at least 3 train images, got 2")
    cases["holdout, six images"] = ([str(_folder(folders, "holdout", train)), "--calibration", "holdout"], 1,
                                    "was calibrated on 2 images, fewer than 3")  # fmt: skip
    broken = _folder(folders, "broken", train[:4])
    (broken / "zero.png").write_bytes(b"")
    cases["an unreadable image"] = ([str(broken)], 1, f"{broken / 'zero.png'}: empty file (0 bytes)")
    looping = _folder(folders, "file-loop", train[:4])
    os.symlink("b.png", looping / "a.png")
    os.symlink("a.png", looping / "b.png")
    cases["a symlink loop of files"] = ([str(looping)], 1, f"{looping / 'a.png'}: cannot read file (Too many levels")
    (folders / "a-file.png").write_bytes(b"x")
    cases["a file, not a folder"] = ([str(folders / "a-file.png")], 1, "--train expects a folder")
    cases["a missing folder"] = ([str(folders / "nowhere")], 1, "does not exist")

    root: Path = world["root"]
    before = _stable_hashes(root)
    for case, (arguments, code, message) in cases.items():
        result = runner.invoke(app, ["add-category", "new", "--train", *arguments, "--root", str(root),
                                     "--coreset-ratio", "0.1"])  # fmt: skip
        assert result.exit_code == code, (case, result.output)
        assert message in " ".join(result.output.split()), (case, result.output)
        assert "Traceback" not in result.output
        assert _stable_hashes(root) == before, case  # nothing written
    assert runner.invoke(app, ["add-category", "new", "--root", str(root)]).exit_code == 2  # usage: no --train


def test_add_category_accepts_mixed_sizes_and_walks_a_folder_loop_once(world: dict[str, Any], tmp_path: Path) -> None:
    train = world["data"]["tile"][0]
    folders = tmp_path / "folders"
    mixed = _folder(folders, "mixed", train[:4])
    Image.open(train[4]).resize((97, 131)).save(mixed / "tall.png")
    Image.open(train[5]).convert("L").resize((20, 20)).save(mixed / "small.jpg")
    looped = _folder(folders, "looped", train[:4], "train/good")
    os.symlink("..", looped / "train" / "good" / "up")  # train/good/up -> train (-> good again)
    os.symlink(".", looped / "train" / "good" / "self")
    root = Path(shutil.copytree(world["root"], tmp_path / "registry"))
    for name, folder, count in (("mixed", mixed, 6), ("looped", looped, 4)):
        result = runner.invoke(app, ["add-category", name, "--train", str(folder), "--root", str(root),
                                     "--coreset-ratio", "0.1", "--json"])  # fmt: skip
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["n_train_images"] == count
    with Registry.open(root) as registry:
        assert registry.verify().ok


def test_two_images_are_refused_by_the_api_too(world: dict[str, Any], tmp_path: Path) -> None:
    """With two calibration maps lambda = std(base) / eps (~1e5): refused, nothing written."""
    root = Path(shutil.copytree(world["root"], tmp_path / "registry"))
    with Registry.open(root) as registry:
        with pytest.raises(RegistryError, match="needs at least 3 train images, got 2"):
            registry.add_category("two", world["data"]["tile"][0][:2], small_model())
        three = registry.add_category("three", world["data"]["tile"][0][:3], small_model())
        assert three.calibration["lambda"] < 100 and three.thresholds["hybrid"] < 100
        assert registry.names() == ["grid", "pill", "three"]
