"""The backbone registry (structcore.backbones.base): names, weights files, errors."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from structcore.backbones import (
    Backbone,
    BackboneError,
    BackboneInfo,
    available_backbones,
    base,
    create_backbone,
    register_backbone,
    sha256_file,
)


def test_backbone_unknown_and_missing_weights(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(BackboneError, match="unknown backbone"):
        create_backbone("resnet-9000")
    with pytest.raises(BackboneError, match="not found"):
        create_backbone("efficientnet-lite2", weights=tmp_path / "nope.pth")


class _Tiny(Backbone):
    """A real (if minimal) backbone: one 2x2 average pool of the input."""

    def __init__(self, weights: object = None) -> None:
        self.weights = weights
        self.model = torch.nn.AvgPool2d(2)
        self.info = BackboneInfo("tiny", ("pool",), (3,), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), 2, 1, "0" * 64)

    def extract(self, images: torch.Tensor) -> list[torch.Tensor]:
        return [self.model(images)]


def test_registered_backbone_is_built_by_name(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(base, "_BACKBONES", dict(base._BACKBONES))  # registering here leaves no trace
    assert "tiny" not in available_backbones()
    register_backbone("tiny")(_Tiny)
    assert "tiny" in available_backbones() and available_backbones() == sorted(available_backbones())
    built = create_backbone("tiny", weights=tmp_path / "w.pth")
    assert isinstance(built, _Tiny) and built.weights == tmp_path / "w.pth"
    maps = built.to("cpu").extract(torch.ones(1, 3, 8, 8))
    assert [tuple(m.shape) for m in maps] == [(1, 3, 4, 4)]
    with pytest.raises(BackboneError, match=r"available: .*tiny"):
        create_backbone("tinier")


def test_builtin_backbones_are_listed() -> None:
    assert {"efficientnet-lite2", "dinov2-vitb14"} <= set(available_backbones())


@pytest.mark.parametrize("chunk", [1, 7, 1 << 20])
def test_sha256_file_equals_hashlib_at_any_chunk_size(tmp_path: Path, chunk: int) -> None:
    path = tmp_path / "weights.bin"
    content = bytes(range(256)) * 41
    path.write_bytes(content)
    assert sha256_file(path, chunk_bytes=chunk) == hashlib.sha256(content).hexdigest()
