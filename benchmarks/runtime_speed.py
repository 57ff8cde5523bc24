"""Speed table of issue 26: extract and end-to-end ms per image per backbone runtime, one process.

Needs a registry holding bottle (1% bank) and its exports, e.g. the work folder of
``benchmarks/runtime_equality.py --workdir W``. In one process, rounds interleaved, medians:

* extract: normalised batch of 8 bottle images (392 px) -> patch vectors, for the torch fast path,
  ONNX Runtime f32, OpenVINO f32 and OpenVINO bf16;
* end to end (files in, records out, 1% bank, routed): ``Detector.predict`` with the torch backbone
  and with ``STRUCTCORE_BACKBONE_RUNTIME=onnx|openvino`` (the main path's option), and
  ``structcore_runtime`` (ONNX Runtime f32, OpenVINO f32, OpenVINO bf16; its default kNN, the
  screened search with an OpenVINO bf16 screen, and for OpenVINO f32 also faiss);
* cold start to the first image scored: a new ``registry infer`` and ``registry-runtime infer`` process.

    .venv/bin/python benchmarks/runtime_speed.py --work W --repeats 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from structcore_runtime import load
from structcore_runtime.graph import GraphSession

from registry import Registry

REPO = Path(__file__).resolve().parents[1]


def _median_ms(fn: Callable[[], object], images: int) -> float:
    started = time.perf_counter()
    fn()
    return 1000 * (time.perf_counter() - started) / images


def _predictor(detector: Any, images: list[Path]) -> Callable[[], object]:
    return lambda: detector.predict(images)


def _cold(command: list[str]) -> float:
    started = time.perf_counter()
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        raise RuntimeError(completed.stderr[-2000:])
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--work", type=Path, required=True, help="folder with registry/, export-onnx/, export-openvino/"
    )
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "mvtec_ad" / "bottle")
    parser.add_argument("--images", type=int, default=32, help="test images per end-to-end round")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    images = sorted((args.data / "test").rglob("*.png"))[:: max(1, 83 // args.images)][: args.images]
    result: dict[str, Any] = {"load_average_at_start": list(os.getloadavg()), "torch_threads": torch.get_num_threads()}
    registry = Registry.open(args.work / "registry")
    os.environ["STRUCTCORE_BACKBONE_RUNTIME"] = "torch"  # the reference (the default, auto, may be OpenVINO)
    detectors = {"torch": registry.detector(["bottle"])}
    extractor = detectors["torch"].extractor
    for runtime in ("onnx", "openvino"):
        os.environ["STRUCTCORE_BACKBONE_RUNTIME"] = runtime
        detectors[f"main path, {runtime} backbone"] = registry.detector(["bottle"])
    os.environ.pop("STRUCTCORE_BACKBONE_RUNTIME")
    openvino = args.work / "export-openvino"
    runtimes = {
        "runtime onnxruntime f32": load(args.work / "export-onnx", backend="onnxruntime"),
        "runtime openvino f32, faiss kNN": load(openvino, backend="openvino", precision="f32", knn="faiss"),
        "runtime openvino f32": load(openvino, backend="openvino", precision="f32"),
        "runtime openvino bf16": load(openvino, backend="openvino", precision="bf16"),
    }
    result["runtime_knn_engine"] = runtimes["runtime openvino f32"].categories["bottle"].search.engine
    batch = extractor.prepare(images[:8])
    graph = args.work / "export-onnx" / "model.onnx"
    extract: dict[str, Callable[[], object]] = {
        "torch fast path": lambda: extractor.embed(batch),
        "onnxruntime f32": (lambda s: lambda: s.run(batch.numpy()))(GraphSession(graph, "onnxruntime")),
        "openvino f32": (lambda s: lambda: s.run(batch.numpy()))(GraphSession(graph, "openvino", "f32")),
        "openvino bf16": (lambda s: lambda: s.run(batch.numpy()))(GraphSession(graph, "openvino", "bf16")),
    }
    end_to_end: dict[str, Callable[[], object]] = {
        **{f"registry infer ({name})": _predictor(d, images) for name, d in detectors.items()},
        **{name: _predictor(d, images) for name, d in runtimes.items()},
    }
    for fn in [*extract.values(), *end_to_end.values()]:  # warm up: graphs compiled, banks indexed
        fn()
    times: dict[str, list[float]] = {name: [] for name in [*extract, *end_to_end]}
    for round_ in range(args.repeats):
        for name, fn in extract.items():
            times[name].append(_median_ms(fn, len(batch)))
        for name, fn in end_to_end.items():
            times[name].append(_median_ms(fn, len(images)))
        print(f"round {round_ + 1}: " + ", ".join(f"{k} {v[-1]:.1f}" for k, v in times.items()), flush=True)
    result["extract_ms_per_image"] = {name: statistics.median(times[name]) for name in extract}
    result["end_to_end_ms_per_image"] = {name: statistics.median(times[name]) for name in end_to_end}
    image = str(images[0])
    bin_dir = Path(sys.executable).parent
    result["cold_start_s"] = {
        "registry infer (torch)": _cold(
            [str(bin_dir / "registry"), "infer", image, "--root", str(args.work / "registry")]
        ),
        "registry-runtime infer (onnxruntime)": _cold(
            [
                str(bin_dir / "registry-runtime"),
                "infer",
                str(args.work / "export-onnx"),
                image,
                "--backend",
                "onnxruntime",
            ]
        ),
        "registry-runtime infer (openvino f32)": _cold(
            [str(bin_dir / "registry-runtime"), "infer", str(args.work / "export-openvino"), image]
        ),
    }
    result["load_average_at_end"] = list(os.getloadavg())
    print(json.dumps(result, indent=2))
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
