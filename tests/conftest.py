"""Shared fixtures: the real embedded backbone (built once per session) and small synthetic data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from structcore.backbones import Backbone, create_backbone
from structcore.features import FeatureExtractor, FeatureSpace, build_extractor, new_feature_space

torch.set_num_threads(2)

MVTEC_BOTTLE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mvtec_ad" / "bottle"


@pytest.fixture(scope="session")
def backbone() -> Backbone:
    """The real EfficientNet-Lite2 backbone with its shipped ImageNet weights."""
    return create_backbone("efficientnet-lite2")


@pytest.fixture(scope="session")
def small_space(backbone: Backbone) -> FeatureSpace:
    """A feature space at 128 px (16x16 patch grid) so tests stay fast."""
    return new_feature_space(backbone, resize=128, crop=128)


@pytest.fixture(scope="session")
def small_extractor(small_space: FeatureSpace, backbone: Backbone) -> FeatureExtractor:
    return build_extractor(small_space, backbone, batch_size=8)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
