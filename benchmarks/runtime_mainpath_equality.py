"""``registry infer``'s Detector with each backbone runtime against torch, on the same images (issue 26).

What ``--backbone-runtime auto`` changes on the main path: the registry of
``benchmarks/runtime_equality.py --workdir W`` (bottle and magnetic tile), every 4th bottle test
image and every 12th magnetic tile one, routed; largest absolute and relative difference of
each score, decisions, routes and region boxes that changed.

    .venv/bin/python benchmarks/runtime_mainpath_equality.py --registry W/registry
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from registry import Registry

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _boxes(record: dict[str, Any]) -> list[tuple[int, int, int, int]]:
    return [(r["x"], r["y"], r["w"], r["h"]) for r in record["regions"] or []]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--registry", type=Path, required=True)
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("STRUCTCORE_DATA", DATA)))
    args = parser.parse_args()
    images = sorted((args.data / "mvtec_ad/bottle/test").rglob("*.png"))[::4]
    images += sorted((args.data / "mtd/magnetic_tile/test").rglob("*.png"))[::12]
    records: dict[str, list[dict[str, Any]]] = {}
    with Registry.open(args.registry) as registry:
        for runtime in ("torch", "openvino", "onnx"):
            os.environ["STRUCTCORE_BACKBONE_RUNTIME"] = runtime
            records[runtime] = [dict(r) for r in registry.detector().predict(images)]
    reference = records["torch"]
    result: dict[str, Any] = {"load_average": list(os.getloadavg())}
    for runtime in ("openvino", "onnx"):
        pairs = list(zip(records[runtime], reference, strict=True))
        row: dict[str, Any] = {"images": len(images)}
        for field in ("score_base", "score_struct", "score_hybrid"):
            a = np.array([x[field] for x, _ in pairs])
            b = np.array([y[field] for _, y in pairs])
            row[f"max_abs_{field}"] = float(np.abs(a - b).max())
            row[f"max_rel_{field}"] = float((np.abs(a - b) / np.maximum(np.abs(b), 1e-12)).max())
        row["decisions_changed"] = sum(x["anomalous"] != y["anomalous"] for x, y in pairs)
        row["routes_changed"] = sum(x["category"] != y["category"] for x, y in pairs)
        row["region_boxes_changed"] = sum(_boxes(x) != _boxes(y) for x, y in pairs)
        result[runtime] = row
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
