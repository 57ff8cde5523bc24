"""The overlay picture of a scored image, as the web page and API clients receive it.

The one place the server draws an overlay: it calls the CLI's renderer (the same picture that
``registry infer --maps`` writes) with the same label and colour scale.
"""

from __future__ import annotations

import base64
import io

from cli.output import overlay
from server.scoring import Scored


def overlay_png_base64(result: Scored) -> str:
    """The anomaly map over the preprocessed crop, as a base64 PNG (``result`` must carry both)."""
    assert result.crop is not None and result.anomaly_map is not None
    record = result.record
    threshold = float(record["threshold"] or 0.0)
    label = (
        f"{record['category']}: {'ANOMALOUS' if record['anomalous'] else 'ok'} "
        f"{record['score_hybrid']:.3f} / {threshold:.3f}"
    )
    base_threshold = float(result.base_threshold or threshold)
    picture = overlay(result.crop, result.anomaly_map, label, bool(record["anomalous"]), vmax=2.0 * base_threshold)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")
