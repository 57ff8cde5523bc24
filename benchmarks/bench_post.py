"""Post-processing before/after (issue 6): anomaly maps (direct vs matrix form) and StructCore scoring.

``python benchmarks/bench_post.py [--batch 8] [--repeats 30]``: interleaved medians, ms per image, for
a 49 x 49 patch grid upsampled to 392 px with the sigma-4 blur, then the StructCore descriptor and
calibrated scores.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import torch

from benchmarks.bench import anomaly_maps_reference, median_times
from structcore.anomaly_map import anomaly_maps
from structcore.scoring import StructCoreCalibrator


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--grid", type=int, default=49)
    parser.add_argument("--size", type=int, default=392)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    scores = rng.random((args.batch, args.grid, args.grid)).astype(np.float32)
    calibrator = StructCoreCalibrator().fit(anomaly_maps(rng.random((16, args.grid, args.grid)), args.size))
    maps = anomaly_maps(scores, args.size)
    times = median_times(
        {
            "maps_direct": lambda: anomaly_maps_reference(scores, args.size),
            "maps_matrix": lambda: anomaly_maps(scores, args.size),
            "structcore_score": lambda: calibrator.score(maps),
        },
        args.repeats,
        warmup=2,
    )
    per_image = {name: 1000 * seconds / args.batch for name, seconds in times.items()}
    per_image["post_before"] = per_image["maps_direct"] + per_image["structcore_score"]
    per_image["post_after"] = per_image["maps_matrix"] + per_image["structcore_score"]
    difference = float(np.abs(anomaly_maps(scores, args.size) - anomaly_maps_reference(scores, args.size)).max())
    print(json.dumps({"ms_per_image": per_image, "max_abs_difference": difference, "threads": torch.get_num_threads()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
