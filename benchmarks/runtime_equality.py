"""Equality table of issue 26: the exported runtime against ``registry infer`` on real and synthetic categories.

Fits MVTec AD bottle, MTD magnetic tile and a synthetic category (``synthetic-pill``, our
generator) into a registry (default settings; ``--reuse`` keeps the categories a ``--workdir``
registry already holds), scores every test image with ``registry infer``'s Detector (torch
backbone: the reference), exports the registry as ONNX and as OpenVINO IR, and scores the same
images through ``structcore_runtime`` with ONNX Runtime (f32), OpenVINO (f32) and, with
``--bf16``, OpenVINO bf16 (its default on AMX CPUs); the runtime's default kNN. Per category and
runtime: the largest absolute and relative difference of each score, decisions / routes /
unknown flags that changed, and the image AUROC of the hybrid score. ``score_struct`` is also
compared on the scale of its threshold (``max_abs / threshold``): its relative difference is
large only where the value is near zero (an image whose descriptor sits on the good mean).

    .venv/bin/python benchmarks/runtime_equality.py --bf16 --out equality.json
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score
from structcore_runtime import load

from evaluation.synthetic import make_category, write_mvtec_layout
from registry import Registry
from registry.deploy import export_deployment

REPO = Path(__file__).resolve().parents[1]
SCORES = ("route_score", "unknown_score", "score_base", "score_struct", "score_hybrid")
CATEGORIES = {"bottle": "mvtec_ad/bottle", "magnetic_tile": "mtd/magnetic_tile", "synthetic-pill": "synthetic"}
#: Scores whose absolute and relative differences the table reports.
TABLE_SCORES = ("score_base", "score_struct", "score_hybrid")


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in {".png", ".jpg", ".jpeg", ".bmp"})


def compare(
    found: list[dict[str, Any]], expected: list[dict[str, Any]], labels: np.ndarray, thresholds: dict[str, float]
) -> dict[str, Any]:
    """Largest relative differences, changed decisions / routes / unknown flags, AUROC of both."""
    row: dict[str, Any] = {"images": len(found)}
    for field in SCORES:
        a = np.array([r[field] for r in found], dtype=np.float64)
        b = np.array([r[field] for r in expected], dtype=np.float64)
        row[f"max_rel_{field}"] = float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-12)))
        row[f"max_abs_{field}"] = float(np.max(np.abs(a - b)))
    struct_a = np.array([r["score_struct"] for r in found], dtype=np.float64)
    struct_b = np.array([r["score_struct"] for r in expected], dtype=np.float64)
    worst = int(np.argmax(np.abs(struct_a - struct_b) / np.maximum(np.abs(struct_b), 1e-12)))
    row["score_struct_at_worst"] = float(struct_b[worst])
    row["median_score_struct"] = float(np.median(np.abs(struct_b)))
    row["max_abs_score_struct_over_threshold"] = row["max_abs_score_struct"] / max(thresholds["struct"], 1e-12)
    row["decisions_changed"] = sum(x["anomalous"] != y["anomalous"] for x, y in zip(found, expected, strict=True))
    row["routes_changed"] = sum(x["category"] != y["category"] for x, y in zip(found, expected, strict=True))
    row["unknown_changed"] = sum(x["unknown"] != y["unknown"] for x, y in zip(found, expected, strict=True))
    row["errors"] = sum(x["error"] is not None for x in found)
    if 0 < labels.sum() < len(labels):
        row["auroc"] = float(roc_auc_score(labels, [r["score_hybrid"] for r in found]))
        row["auroc_registry"] = float(roc_auc_score(labels, [r["score_hybrid"] for r in expected]))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--data", type=Path, default=Path(os.environ.get("STRUCTCORE_DATA", REPO.parent / "shared" / "data"))
    )
    parser.add_argument("--workdir", type=Path, default=None, help="keep the registry and exports here")
    parser.add_argument(
        "--reuse", action="store_true", help="open the --workdir registry and fit only the categories it lacks"
    )
    parser.add_argument("--categories", default=",".join(CATEGORIES))
    parser.add_argument(
        "--stride",
        action="append",
        default=[],
        metavar="NAME=TRAIN,TEST",
        help="time box: fit NAME on every TRAIN-th train image and score every TEST-th test image",
    )
    parser.add_argument("--bf16", action="store_true", help="also OpenVINO bf16 (its default hint on AMX CPUs)")
    parser.add_argument("--out", type=Path, default=None, help="write the table as JSON")
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="runtime-equality-"))
    names = [name for name in args.categories.split(",") if name]
    started = time.time()
    strides = dict.fromkeys(names, (1, 1))
    for item in args.stride:
        name, _, pair = item.partition("=")
        train_stride, _, test_stride = pair.partition(",")
        strides[name] = (int(train_stride), int(test_stride or 1))
    result: dict[str, Any] = {"load_average_at_start": list(os.getloadavg()), "strides": strides}
    os.environ["STRUCTCORE_BACKBONE_RUNTIME"] = "torch"  # the reference (the default, auto, may be OpenVINO)
    reuse = args.reuse and (work / "registry").is_dir()
    with Registry.open(work / "registry") if reuse else Registry.init(work / "registry") as registry:
        tests: list[Path] = []
        truth: dict[str, str] = {}
        labels: dict[str, int] = {}
        held = set(registry.names()) if reuse else set()
        for name in names:
            folder = args.data / CATEGORIES[name]
            if CATEGORIES[name] == "synthetic":
                folder = write_mvtec_layout(
                    make_category(name.removeprefix("synthetic-"), n_train=40, n_test_good=10, n_test_bad=20, seed=0),
                    work / "synthetic",
                    name,
                )
            train = _images(folder / "train" / "good")[:: strides[name][0]]
            if name not in held:
                fit_started = time.time()
                registry.add_category(name, train)
                print(f"fitted {name} on {len(train)} images in {time.time() - fit_started:.0f} s", flush=True)
            for path in _images(folder / "test")[:: strides[name][1]]:
                tests.append(path)
                truth[str(path)] = name
                labels[str(path)] = int(path.parent.name != "good")
        predicted = time.time()
        detector = registry.detector(names)
        reference = [dict(r) for r in detector.predict(tests)]
        result["torch_ms_per_image"] = 1000 * (time.time() - predicted) / len(tests)
        thresholds = {name: dict(detector.model(name).thresholds) for name in names}
        exports = {
            fmt: export_deployment(registry, names, work / f"export-{fmt}-{len(names)}", fmt)
            for fmt in ("onnx", "openvino")
        }
    runs = [("onnxruntime f32", "onnx", "onnxruntime", "f32"), ("openvino f32", "openvino", "openvino", "f32")]
    if args.bf16:
        runs.append(("openvino bf16", "openvino", "openvino", "bf16"))
    table: list[dict[str, Any]] = []
    for label, fmt, backend, precision in runs:
        detector = load(exports[fmt], backend=backend, precision=precision)
        run_started = time.time()
        found = detector.predict(tests)
        ms = 1000 * (time.time() - run_started) / len(tests)
        for name in names:
            rows = [i for i, path in enumerate(tests) if truth[str(path)] == name]
            y = np.array([labels[str(tests[i])] for i in rows])
            row = compare([found[i] for i in rows], [reference[i] for i in rows], y, thresholds[name])
            table.append({"category": name, "runtime": label, "ms_per_image": ms, **row})
            print(json.dumps(table[-1]), flush=True)
    result["table"] = table
    result["seconds"] = time.time() - started
    print()
    print(
        "| category | runtime | images | base abs / rel | struct abs / rel (abs / threshold) | hybrid abs / rel "
        "| decisions changed | routes changed | unknown changed | AUROC runtime / registry |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for row in table:
        cells = [f"{row[f'max_abs_{f}']:.1e} / {row[f'max_rel_{f}']:.1e}" for f in TABLE_SCORES]
        cells[1] += f" ({row['max_abs_score_struct_over_threshold']:.1e})"
        print(
            f"| {row['category']} | {row['runtime']} | {row['images']} | {' | '.join(cells)} "
            f"| {row['decisions_changed']} | {row['routes_changed']} | {row['unknown_changed']} "
            f"| {row.get('auroc', float('nan')):.4f} / {row.get('auroc_registry', float('nan')):.4f} |"
        )
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
