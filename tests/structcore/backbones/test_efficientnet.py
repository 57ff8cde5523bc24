"""The EfficientNet-Lite2 backbone: hooked feature maps and the fast (folded BatchNorm, channels-last) path."""

from __future__ import annotations

import torch


def test_fast_backbone_equals_reference(backbone) -> None:  # type: ignore[no-untyped-def]
    images = torch.randn(3, 3, 136, 136)
    reference = backbone.extract(images)
    fast = backbone.extract_fast(images)
    assert [tuple(m.shape) for m in fast] == [tuple(m.shape) for m in reference]
    for ours, theirs in zip(fast, reference, strict=True):
        # Folded BatchNorm + channels-last convs: equal to float32 rounding of a 15-block network.
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4 * float(theirs.abs().max()))


def test_backbone_hooks_equal_truncated_forward(backbone) -> None:  # type: ignore[no-untyped-def]
    captured: dict[int, torch.Tensor] = {}
    handles = [
        backbone.model._blocks[i].register_forward_hook(lambda _m, _i, out, i=i: captured.__setitem__(i, out.clone()))
        for i in (6, 14)
    ]
    images = torch.randn(2, 3, 128, 128)
    try:
        with torch.inference_mode():
            backbone.model.extract_features(images)
        reference = dict(captured)
    finally:
        for handle in handles:
            handle.remove()
    maps = backbone.extract(images)
    assert [tuple(m.shape) for m in maps] == [(2, 48, 16, 16), (2, 120, 8, 8)]
    torch.testing.assert_close(maps[0], reference[6])
    torch.testing.assert_close(maps[1], reference[14])
