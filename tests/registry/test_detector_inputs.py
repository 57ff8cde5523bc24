"""Awkward inputs in one batch: each is scored (regions at its own size) or gets its own error; the batch goes on."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from cli.main import app
from registry import Registry
from tests.support_registry import make_base, write_data


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims ``width`` x ``height`` (no pixel data): refused before decoding."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Path]]:
    folder = tmp_path_factory.mktemp("inputs")
    data = write_data(folder / "data")
    root = make_base(folder / "registry", data, ("pill",))
    base = np.asarray(Image.open(data["pill"][1][0]).convert("RGB"))
    images = folder / "batch"
    images.mkdir()
    paths: dict[str, Path] = {}
    paths["good"] = images / "a_good.png"
    Image.fromarray(base).save(paths["good"])
    paths["tiny"] = images / "b_tiny.png"  # smaller than one patch of the grid
    Image.fromarray(base[:2, :3]).save(paths["tiny"])
    paths["strip"] = images / "c_strip.png"  # 1 x 5000
    Image.fromarray(np.tile(base[:1, :50], (1, 100, 1))).save(paths["strip"])
    paths["huge"] = _png_header_only(images / "d_huge.png", 20000, 20000)  # 400 M pixels: over the limit
    paths["grey"] = images / "e_grey.png"
    Image.fromarray(base).convert("L").save(paths["grey"])
    paths["deep"] = images / "f_deep16.png"
    grey16 = (np.asarray(Image.fromarray(base).convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    Image.fromarray(grey16).save(paths["deep"])  # PIL stores uint16 as a 16-bit PNG (mode I;16)
    paths["rotated"] = images / "g_rotated.jpg"  # stored 128 x 64, EXIF orientation 6: shown 64 x 128
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(base[:64]).save(paths["rotated"], exif=exif, quality=95)
    paths["text"] = images / "h_text.png"
    paths["text"].write_text("not an image")
    return root, paths


def test_detector_scores_each_awkward_image_or_names_its_error(setup: tuple[Path, dict[str, Path]]) -> None:
    root, paths = setup
    shapes: dict[str, tuple[int, ...]] = {}

    def on_full_map(record: dict, full_map: np.ndarray, _threshold: float) -> None:  # type: ignore[type-arg]
        shapes[record["path"]] = full_map.shape

    with Registry.open(root, read_only=True) as registry:
        records = registry.detector().predict(list(paths.values()), batch_size=3, on_full_map=on_full_map)
    by_kind = dict(zip(paths, records, strict=True))
    assert "image too large" in by_kind["huge"]["error"] and by_kind["huge"]["regions"] is None
    assert "not a readable image" in by_kind["text"]["error"]
    expected = {"good": (128, 128), "tiny": (2, 3), "strip": (1, 5000), "grey": (128, 128), "deep": (128, 128)}
    expected["rotated"] = (128, 64)  # EXIF applied: the picture as shown, not as stored
    for kind, shape in expected.items():
        record = by_kind[kind]
        assert record["error"] is None, (kind, record["error"])
        assert np.isfinite(record["score_hybrid"])
        assert isinstance(record["regions"], list)
        assert shapes[str(paths[kind])] == shape, kind
        for region in record["regions"]:
            assert region["x"] >= 0 and region["x"] + region["w"] <= shape[1]
            assert region["y"] >= 0 and region["y"] + region["h"] <= shape[0]
    # a grey copy, its 16-bit copy and the colour original score alike (16 bits are scaled, not clipped)
    assert by_kind["deep"]["score_hybrid"] == pytest.approx(by_kind["grey"]["score_hybrid"], rel=1e-3)


def test_infer_cli_writes_masks_at_the_original_size_and_goes_on(
    setup: tuple[Path, dict[str, Path]], tmp_path: Path
) -> None:
    root, paths = setup
    masks = tmp_path / "masks"
    out = tmp_path / "out.csv"
    result = CliRunner().invoke(
        app,
        ["infer", str(paths["good"].parent), "--root", str(root), "--masks", str(masks), "--json",
         "--out", str(out), "--category", "pill", "--max-regions", "2"],
    )  # fmt: skip
    assert result.exit_code == 1, result.output  # two inputs failed, the others were scored
    records = {Path(r["path"]).name: r for r in json.loads(result.stdout)}
    assert records["d_huge.png"]["error"] and records["h_text.png"]["error"]
    assert records["d_huge.png"]["mask"] is None
    for name, size in {"a_good.png": (128, 128), "c_strip.png": (5000, 1), "g_rotated.jpg": (64, 128)}.items():
        mask = Image.open(records[name]["mask"])
        assert mask.size == size and mask.mode == "L"
        assert set(np.unique(np.asarray(mask))) <= {0, 255}
        assert len(records[name]["regions"]) <= 2
    assert sorted(p.name for p in masks.iterdir()) == sorted(
        f"batch_{Path(n).stem}.png" for n in records if records[n]["error"] is None
    )
    header = out.read_text().splitlines()[0].split(",")
    assert header[-2:] == ["regions_count", "largest_region"]


def test_max_regions_is_checked(setup: tuple[Path, dict[str, Path]]) -> None:
    root, paths = setup
    result = CliRunner().invoke(app, ["infer", str(paths["good"]), "--root", str(root), "--max-regions", "-1"])
    assert result.exit_code == 1
    assert "--max-regions must be an integer in [0, 10000], got -1" in result.output
