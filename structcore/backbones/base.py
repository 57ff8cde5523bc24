"""The backbone contract and the registry of backbones by name.

A backbone turns a batch of preprocessed images into a list of per-layer patch maps. Everything
after that (local pooling, resampling to one grid, per-layer L2 norm, concat, projection) is done
by :mod:`structcore.features`, identically for every backbone.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported by the backbones themselves: `registry list` starts without it
    import torch


class BackboneError(RuntimeError):
    """A backbone cannot be built: unknown name, missing or wrong weights file."""


@dataclass(frozen=True)
class BackboneInfo:
    """What identifies a backbone's feature space (stored in every registry).

    Attributes:
        name: registry name, e.g. ``"efficientnet-lite2"``.
        layers: the layer selection, as human-readable strings (e.g. ``("6", "14")``).
        channels: channels of each returned layer map, in order.
        mean: per-channel mean subtracted from a [0, 1] RGB image.
        std: per-channel std the image is divided by after the mean.
        patch_stride: pixels of the crop per patch of the finest returned grid.
        local_pool: size of the local average pool applied to each map (1 = none).
        weights_sha256: hex digest of the weights that were loaded.
    """

    name: str
    layers: tuple[str, ...]
    channels: tuple[int, ...]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    patch_stride: int
    local_pool: int
    weights_sha256: str


class Backbone(ABC):
    """A frozen feature extractor. Subclasses set ``info`` and implement ``extract``."""

    info: BackboneInfo

    @abstractmethod
    def extract(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Per-layer patch maps of a normalised batch.

        Args:
            images: float32 tensor (B, 3, H, W), already normalised with ``info.mean``/``info.std``.

        Returns:
            One tensor (B, C_l, H_l, W_l) per selected layer, in ``info.layers`` order. Grids may
            differ between layers; the caller resamples them to the finest one.
        """

    def to(self, device: str | torch.device) -> Backbone:
        """Move the backbone's parameters to ``device``; returns ``self``."""
        import torch

        module = getattr(self, "model", None)
        if isinstance(module, torch.nn.Module):
            module.to(device)
        return self


BackboneFactory = Callable[..., Backbone]
_BACKBONES: dict[str, BackboneFactory] = {}


def register_backbone(name: str) -> Callable[[BackboneFactory], BackboneFactory]:
    """Decorator: register ``factory(weights: str | Path | None = None) -> Backbone`` under ``name``."""

    def decorator(factory: BackboneFactory) -> BackboneFactory:
        _BACKBONES[name] = factory
        return factory

    return decorator


def available_backbones() -> list[str]:
    """Names of all registered backbones."""
    _import_builtin_backbones()
    return sorted(_BACKBONES)


def create_backbone(name: str, weights: str | Path | None = None) -> Backbone:
    """Build the backbone registered as ``name``, with weights from ``weights`` where it needs them."""
    _import_builtin_backbones()
    if name not in _BACKBONES:
        msg = f"unknown backbone {name!r}; available: {', '.join(sorted(_BACKBONES))}"
        raise BackboneError(msg)
    return _BACKBONES[name](weights=weights)


def sha256_file(path: str | Path, chunk_bytes: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def _import_builtin_backbones() -> None:
    # Imported lazily so that importing structcore does not build any model.
    from structcore.backbones import (
        dinov2,  # noqa: F401
        efficientnet,  # noqa: F401
    )
