"""Write the synthetic high-resolution set (issue 25) in the MVTec AD layout.

2048 x 1536 frames (``HIGH_RESOLUTION_SHAPE``) with defects of 0.05-0.5% of the area
(``SMALL_DEFECT_FRACTION``): the case where squashing a line camera's frame to the model's
392 px square leaves a defect a patch or two. Every image is a seeded function of (kind, seed), so
the set is rebuilt identically anywhere (about 1 s per image on one core).

    PYTHONPATH=. .venv/bin/python experiments/geometry/make_high_resolution.py /tmp/25-hires \\
        --kinds carpet screw tile --train 40 --test-good 20 --test-bad 20
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from evaluation.synthetic import (
    CATEGORY_KINDS,
    HIGH_RESOLUTION_SHAPE,
    SMALL_DEFECT_FRACTION,
    make_category,
    write_mvtec_layout,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="dataset root to write (category folders <kind>_hr)")
    parser.add_argument("--kinds", nargs="+", default=["carpet", "screw", "tile"], choices=CATEGORY_KINDS)
    parser.add_argument("--train", type=int, default=40)
    parser.add_argument("--test-good", type=int, default=20)
    parser.add_argument("--test-bad", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    height, width = HIGH_RESOLUTION_SHAPE
    for kind in args.kinds:
        started = time.perf_counter()
        category = make_category(
            kind,
            args.train,
            args.test_good,
            args.test_bad,
            args.seed,
            width,
            height=height,
            defect_fraction=SMALL_DEFECT_FRACTION,
        )
        folder = write_mvtec_layout(category, args.out, f"{kind}_hr")
        shares = category.test_masks[category.test_labels == 1].mean(axis=(1, 2)) * 100
        print(
            f"{folder}: {width}x{height}, defects {shares.min():.3f}-{shares.max():.3f}% of the area "
            f"({time.perf_counter() - started:.0f} s)"
        )


if __name__ == "__main__":
    main()
