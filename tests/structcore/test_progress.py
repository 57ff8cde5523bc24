"""The one progress event: a frozen value with counts, and the callback that ignores it."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from structcore.model import CategoryModel
from structcore.progress import Progress, quiet


def test_an_event_is_a_frozen_value_with_zero_counts_by_default() -> None:
    event = Progress("coreset")
    assert (event.stage, event.done, event.total, event.category, event.protocol) == ("coreset", 0, 0, "", "")
    assert event == Progress("coreset", 0, 0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.done = 3  # type: ignore[misc]


def test_quiet_ignores_every_event() -> None:
    assert quiet(Progress("embed", 2, 8, category="bottle")) is None


def test_fitting_reports_its_stages_in_order() -> None:
    rng = np.random.default_rng(0)
    patch_vectors = rng.normal(size=(4, 16, 8)).astype(np.float32)
    events: list[Progress] = []
    CategoryModel(coreset_ratio=0.5, k=2, sigma=1.0).fit(patch_vectors, (4, 4), 16, progress=events.append)
    stages = [event.stage for event in events]
    assert stages == sorted(set(stages), key=stages.index)  # each stage once
    assert {"coreset", "calibration"} <= set(stages)
    assert stages.index("coreset") < stages.index("calibration")
