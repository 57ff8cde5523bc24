"""Region boxes on the overlay: drawn on the map, the colour bar untouched."""

from __future__ import annotations

import numpy as np

from evaluation.plots import render_overlay


def test_boxes_change_the_map_not_the_colour_bar() -> None:
    image = np.full((3, 64, 64), 0.5, dtype=np.float32)
    values = np.zeros((64, 64), dtype=np.float32)
    values[10:30, 20:40] = 2.0
    plain = np.asarray(render_overlay(image, values, threshold=1.0, title="t", anomalous=True))
    boxed = np.asarray(
        render_overlay(image, values, threshold=1.0, title="t", anomalous=True, boxes=[(20.0, 10.0, 20.0, 20.0)])
    )
    assert plain.shape == boxed.shape
    shown = 64 * max(1.0, 320.0 / 64)  # render_overlay draws small maps larger
    bar = int(8 + shown + 10)  # right of the map: the colour bar and its labels
    np.testing.assert_array_equal(plain[:, bar:], boxed[:, bar:])
    assert not np.array_equal(plain[:, :bar], boxed[:, :bar])
