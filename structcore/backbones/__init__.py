"""Frozen feature extractors behind one contract (:class:`Backbone`), looked up by name."""

from structcore.backbones.base import (
    Backbone,
    BackboneError,
    BackboneInfo,
    available_backbones,
    create_backbone,
    register_backbone,
    sha256_file,
)

__all__ = [
    "Backbone",
    "BackboneError",
    "BackboneInfo",
    "available_backbones",
    "create_backbone",
    "register_backbone",
    "sha256_file",
]
