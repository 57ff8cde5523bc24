"""The overlay picture of a scored image, as the web page and API clients receive it.

The one place the server draws an overlay: it calls the project's renderer with the same title
and map threshold that ``registry infer --maps`` uses.
"""

from __future__ import annotations

import base64
import io

from evaluation.plots import overlay_title, render_overlay
from server.scoring import Scored


def overlay_png_base64(result: Scored) -> str:
    """The anomaly map over the preprocessed crop, as a base64 PNG (``result`` must carry both)."""
    assert result.crop is not None and result.anomaly_map is not None
    record = result.record
    map_threshold = float(result.base_threshold or record["threshold"] or 0.0)
    picture = render_overlay(
        result.crop,
        result.anomaly_map,
        threshold=map_threshold,
        title=overlay_title(record),
        anomalous=bool(record["anomalous"]),
        boxes=result.boxes,
    )
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")
