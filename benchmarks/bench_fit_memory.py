"""Peak RSS of ``add_category`` over the projected patch matrix, for any checkout (issue 6 "before" figures).

``python benchmarks/bench_fit_memory.py [--tree PATH] [--images DIR] [--limit N]`` runs the fit in a child
process with ``PYTHONPATH=PATH`` (default: this checkout), so an older commit's ``structcore`` (e.g. a
``git worktree`` of the commit before the performance work) can be measured the same way. The child
reads ``VmRSS`` after the model is loaded and ``VmHWM`` after ``add_category``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import json, sys, tempfile, time
from pathlib import Path
import torch
torch.set_num_threads(int(sys.argv[3]))
from registry.core import Registry
def kb(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return float(line.split()[1]) / 1024
images = sorted(p for p in Path(sys.argv[1]).iterdir() if p.suffix.lower() in {".png", ".jpg", ".jpeg"})
images = images[: int(sys.argv[2])] if int(sys.argv[2]) > 0 else images
with tempfile.TemporaryDirectory() as folder:
    registry = Registry.init(Path(folder) / "r")
    registry.extractor(8).grid_shape()
    baseline = kb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")
    started = time.perf_counter()
    registry.add_category("bench", images)
    seconds = time.perf_counter() - started
    peak = kb("VmHWM")
    grid = registry.extractor(8).grid_shape()
matrix = len(images) * grid[0] * grid[1] * 512 * 4 / 2**20
print(json.dumps({"images": len(images), "baseline_rss_mb": baseline, "peak_rss_mb": peak, "matrix_mb": matrix,
                  "ratio": (peak - baseline) / matrix, "seconds": seconds}))
"""


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tree", default=str(Path(__file__).resolve().parents[1]))
    default_images = Path(__file__).resolve().parents[2] / "shared" / "data" / "mvtec_ad" / "bottle" / "train" / "good"
    parser.add_argument("--images", default=str(default_images))
    parser.add_argument("--limit", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    environment = dict(os.environ, PYTHONPATH=args.tree)
    completed = subprocess.run(
        [sys.executable, "-c", CHILD, args.images, str(args.limit), str(args.threads)],
        env=environment,
        cwd=args.tree,
        capture_output=True,
        text=True,
    )
    if completed.returncode != 0:
        print(completed.stderr, file=sys.stderr)
        return completed.returncode
    print(completed.stdout.strip().splitlines()[-1])
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
