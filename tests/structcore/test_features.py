"""Feature extraction: the random projection, layer fusion, the fast embedding path and the extractor's checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from structcore.features import FeatureExtractor, fuse_layers, make_projection, project_layers


def test_fast_embedding_equals_plain(backbone, small_space) -> None:  # type: ignore[no-untyped-def]
    fast = FeatureExtractor(backbone, small_space.projection, small_space.geometry, fast=True)
    plain = FeatureExtractor(backbone, small_space.projection, small_space.geometry, fast=False)
    images = torch.randn(2, 3, 128, 128)
    ours, theirs = fast.embed(images), plain.embed(images)
    assert ours.shape == theirs.shape == (2, 256, 512)
    relative = (ours - theirs).norm(dim=-1) / theirs.norm(dim=-1)
    assert float(relative.max()) < 1e-4


def test_project_layers_equals_fuse_then_project() -> None:
    generator = torch.Generator().manual_seed(0)
    layers = [torch.randn(2, 6, 8, 8, generator=generator), torch.randn(2, 10, 4, 4, generator=generator)]
    projection = torch.randn(16, 32, generator=generator)
    fused = fuse_layers(layers, local_pool=3)
    expected = (fused.reshape(-1, 16) @ projection).reshape(2, 64, 32)
    torch.testing.assert_close(project_layers(layers, projection, local_pool=3), expected, rtol=1e-5, atol=1e-5)
    channels_last = [layer.contiguous(memory_format=torch.channels_last) for layer in layers]
    torch.testing.assert_close(project_layers(channels_last, projection, 3), expected, rtol=1e-5, atol=1e-5)


def test_projection_is_seeded_and_scaled() -> None:
    first, second = make_projection(168, 512, 42), make_projection(168, 512, 42)
    np.testing.assert_array_equal(first, second)
    assert first.shape == (168, 512) and abs(first.std() - 1 / np.sqrt(512)) < 2e-3


def test_fuse_normalises_each_layer() -> None:
    layers = [torch.randn(1, 4, 8, 8) * 10, torch.randn(1, 6, 4, 4) * 0.1]
    fused = fuse_layers(layers, local_pool=3)
    assert fused.shape == (1, 8, 8, 10)
    torch.testing.assert_close(fused[..., :4].norm(dim=-1), torch.ones(1, 8, 8))
    torch.testing.assert_close(fused[..., 4:].norm(dim=-1), torch.ones(1, 8, 8))


def test_extractor_rejects_wrong_projection(backbone) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="projection"):
        FeatureExtractor(backbone, np.zeros((10, 512), dtype=np.float32))
