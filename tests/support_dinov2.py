"""A random DINOv2 checkpoint in Meta's key format, for tests (no real weights needed)."""

from __future__ import annotations

import math
import re

import torch

from structcore.backbones.dinov2 import PRETRAIN_GRID, ViTSize, _expected_shapes, get_size


def make_random_state_dict(
    size: str | ViTSize, seed: int = 0, num_register_tokens: int = 0, grid: int = PRETRAIN_GRID
) -> dict[str, torch.Tensor]:
    """A random checkpoint in Meta's key format.

    Scales are chosen so that every part matters to the output: linear and patch weights uniform
    with variance 1/fan_in, LayerScale gammas U(0.2, 1), norm weights U(0.8, 1.2), biases U(-0.2, 0.2),
    position embeddings N(0, 0.5^2), tokens N(0, 1). Uniform draws keep a ViT-L under ~2 s on 2 cores.

    Args:
        size: ``"vits14"``, ``"vitb14"``, ``"vitl14"`` (or ``"s"``, ``"b"``, ``"l"``).
        seed: seed of the generator.
        num_register_tokens: register tokens (4 imitates the ``_reg4`` checkpoints).
        grid: side of the position-embedding grid.
    """
    vit = get_size(size)
    generator = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for key, shape in _expected_shapes(vit, grid, num_register_tokens).items():
        value = torch.empty(shape)
        if key.endswith(".gamma"):
            value.uniform_(0.2, 1.0, generator=generator)
        elif re.search(r"(^|\.)norm\d?\.weight$", key):
            value.uniform_(0.8, 1.2, generator=generator)
        elif key.endswith(".weight"):
            bound = math.sqrt(3.0 / math.prod(shape[1:]))
            value.uniform_(-bound, bound, generator=generator)
        elif key.endswith(".bias"):
            value.uniform_(-0.2, 0.2, generator=generator)
        elif key == "pos_embed":
            value.normal_(0.0, 0.5, generator=generator)
        else:  # cls_token, register_tokens, mask_token
            value.normal_(0.0, 1.0, generator=generator)
        state[key] = value
    return state
