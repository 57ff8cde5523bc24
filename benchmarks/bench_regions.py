"""Cost of a record's regions at the image's own size: whole map back to the original size + labelling
(what ``--masks`` and ``registry eval`` pay) against the windowed path every record uses.

    python benchmarks/bench_regions.py [--repeats 5]

For a 392 x 392 model map with a few blobs above the threshold, times
:func:`structcore.regions.map_at_original_size` and :func:`structcore.regions.find_regions` at
several original sizes and prints ms per image and per megapixel (median of the repeats). This is
what the Detector adds to every scored image; the backbone and kNN (about 180 ms per image on the
project machine) do not depend on the original size under the squash geometry.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from structcore.regions import find_regions, map_at_original_size, regions_at_original_size

SIZES = ((392, 392), (900, 900), (448, 166), (2048, 1536), (4096, 3072))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    model_map = rng.random((392, 392)).astype(np.float32) * 0.5
    for cy, cx in ((50, 60), (200, 300), (330, 100)):
        yy, xx = np.ogrid[:392, :392]
        model_map += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 200.0).astype(np.float32)
    header = f"{'size':>11} {'MP':>6} {'resize ms':>10} {'regions ms':>11} {'total ms':>9} {'ms/MP':>7}"
    print(header + f" {'windowed ms':>12} {'good ms':>8}")
    for width, height in SIZES:
        resize_times, region_times, window_times, good_times = [], [], [], []
        for _ in range(args.repeats):
            started = time.perf_counter()
            full = map_at_original_size(model_map, (width, height), 392, 392)
            middle = time.perf_counter()
            find_regions(full, 0.9, 10)
            resize_times.append(middle - started)
            region_times.append(time.perf_counter() - middle)
            started = time.perf_counter()
            regions_at_original_size(model_map, 0.9, (width, height), 392, 392, 10)
            window_times.append(time.perf_counter() - started)
            started = time.perf_counter()
            regions_at_original_size(model_map * 0.5, 0.9, (width, height), 392, 392, 10)  # a good image
            good_times.append(time.perf_counter() - started)
        resize_ms = 1000 * statistics.median(resize_times)
        region_ms = 1000 * statistics.median(region_times)
        megapixels = width * height / 1e6
        total = resize_ms + region_ms
        print(
            f"{width:>5}x{height:<5} {megapixels:6.2f} {resize_ms:10.1f} {region_ms:11.1f} {total:9.1f} "
            f"{total / megapixels:7.1f} {1000 * statistics.median(window_times):12.2f} "
            f"{1000 * statistics.median(good_times):8.2f}"
        )


if __name__ == "__main__":
    main()
