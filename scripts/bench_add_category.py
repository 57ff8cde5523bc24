"""Time ``add_category`` of many real-sized images at 1% (issue 6 target: 761 images in <= 3 min).

``python scripts/bench_add_category.py [--images N] [--batch-size B]``: synthetic 448 px images of one
kind, fitted in a fresh process through :meth:`registry.core.Registry.add_category`; prints the
stage times (embed, coreset, prototypes, calibration, write) and the peak RSS.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from registry.bench import _run_child


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=761)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--ratio", type=float, default=0.01)
    parser.add_argument("--kind", default="tile")
    args = parser.parse_args(argv)
    spec = {
        "backbone": "efficientnet-lite2",
        "weights": None,
        "batch_size": args.batch_size,
        "threads": torch.get_num_threads(),
        "ratio": args.ratio,
        "seed": 42,
        "synthetic": True,
        "kind": args.kind,
        "n_train": args.images,
        "size": 448,
        "train": [],
    }
    print(json.dumps(_run_child(spec, timeout=7200), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
