"""Table 4 (extract / kNN / post ms per image) of two checkouts, measured alternately (issue 6 "before/after").

``python benchmarks/bench_before_after.py --before PATH [--after PATH] [--images DIR] [--rounds N]``

Each checkout runs in its own child process (``PYTHONPATH=PATH``) through the API both old and new
trees share (``create_backbone``, ``build_extractor``, ``embed_images``, ``CategoryModel``,
``anomaly_maps``), so a ``git worktree`` of the commit before the speed work is timed exactly as it
ran, with its own allocator settings, kNN engine, maps and coreset. Rounds alternate before / after
so both see the same machine load. Per round and checkout: the fit of the 1% category (coreset and
calibration included) and, per bank ratio, the median per-image stage times over the test batches
(5% and 10% banks are seeded random subsets of the train patches, as in ``registry bench``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import json, math, sys, time
from pathlib import Path
import numpy as np
import torch
spec = json.loads(sys.argv[1])
torch.set_num_threads(spec["threads"])
from structcore.anomaly_map import anomaly_maps
from structcore.backbones.base import create_backbone
from structcore.features import build_extractor, new_feature_space
from structcore.model import CategoryModel, embed_images

def kb(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return float(line.split()[1]) / 1024

root = Path(spec["images"])
suffixes = {".png", ".jpg", ".jpeg", ".bmp"}
train = sorted(p for p in (root / "train" / "good").iterdir() if p.suffix.lower() in suffixes)
test = sorted(p for d in sorted((root / "test").iterdir()) for p in d.iterdir() if p.suffix.lower() in suffixes)
backbone = create_backbone("efficientnet-lite2")
space = new_feature_space(backbone, seed=42)
extractor = build_extractor(space, backbone, batch_size=spec["batch_size"])
grid = extractor.grid_shape()
started = time.perf_counter()
train_vectors = embed_images(extractor, train)
embed_s = time.perf_counter() - started
started = time.perf_counter()
model = CategoryModel(coreset_ratio=0.01, seed=42).fit(train_vectors, grid, space.crop)
fit_s = time.perf_counter() - started
flat = train_vectors.reshape(-1, train_vectors.shape[-1])
batches = [extractor.prepare(test[i : i + spec["batch_size"]]) for i in range(0, len(test), spec["batch_size"])]
rows = []
for ratio in spec["ratios"]:
    if ratio == 0.01:
        current = model
    else:
        count = math.ceil(len(flat) * ratio)
        picked = np.sort(np.random.default_rng(42).choice(len(flat), count, replace=False))
        arrays = {**model.to_arrays(), "bank": flat[picked], "bank_image_ids": np.zeros(count, np.int32)}
        current = CategoryModel.from_parts(arrays, model.to_metadata())
    current.knn()
    current.predict(extractor.embed(batches[0]).numpy())
    stage = {"extract": [], "knn": [], "post": []}
    for batch in batches:
        size = int(batch.shape[0])
        t0 = time.perf_counter()
        vectors = extractor.embed(batch).numpy()
        t1 = time.perf_counter()
        patch_scores = current.patch_scores(vectors)
        t2 = time.perf_counter()
        maps = anomaly_maps(patch_scores.reshape(size, *current.grid_), current.map_size_, current.sigma)
        current.calibrator_.score(maps)
        t3 = time.perf_counter()
        for name, seconds in zip(stage, (t1 - t0, t2 - t1, t3 - t2)):
            stage[name].append(seconds / size)
    ms = {name: 1000 * float(np.median(values)) for name, values in stage.items()}
    rows.append({"coreset": ratio, "bank_size": len(current.bank_), **{f"{k}_ms": v for k, v in ms.items()},
                 "total_ms": sum(ms.values())})
print(json.dumps({"embed_train_s": embed_s, "fit_1pct_s": fit_s, "n_train": len(train), "n_test": len(test),
                  "peak_rss_mb": kb("VmHWM"), "rows": rows}))
"""


def run_tree(tree: Path, spec: dict[str, object]) -> dict[str, object]:
    """Run the child in ``tree`` and return its JSON result."""
    environment = dict(os.environ, PYTHONPATH=str(tree))
    completed = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(spec)],
        env=environment,
        cwd=tree,
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        raise SystemExit(f"checkout {tree} failed:\n{completed.stderr[-4000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def format_rows(label: str, result: dict[str, object]) -> list[str]:
    """Table lines of one checkout's result."""
    lines = [
        f"{label}: embed {result['n_train']} train {result['embed_train_s']:.1f} s, "
        f"fit 1% {result['fit_1pct_s']:.1f} s, peak RSS {result['peak_rss_mb']:.0f} MB"
    ]
    for row in result["rows"]:  # type: ignore[attr-defined]
        lines.append(
            f"  {row['coreset']:>4.0%} bank {row['bank_size']:>6}: extract {row['extract_ms']:7.1f}  kNN "
            f"{row['knn_ms']:7.1f}  post {row['post_ms']:6.1f}  total {row['total_ms']:7.1f} ms/img "
            f"({1000 / row['total_ms']:.1f} img/s)"
        )
    return lines


def main(argv: list[str]) -> int:
    here = Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", required=True, help="checkout of the commit before the speed work")
    parser.add_argument("--after", default=str(here), help="checkout to compare (default: this one)")
    parser.add_argument("--images", default=str(here.parent / "shared" / "data" / "mvtec_ad" / "bottle"))
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    spec = {
        "images": str(Path(args.images).resolve()),
        "threads": args.threads,
        "batch_size": args.batch_size,
        "ratios": [0.01, 0.05, 0.1],
    }
    results: dict[str, list[dict[str, object]]] = {"before": [], "after": []}
    for round_index in range(args.rounds):
        for label, tree in (("before", args.before), ("after", args.after)):
            print(f"round {round_index + 1}: {label} ({tree})", file=sys.stderr, flush=True)
            results[label].append(run_tree(Path(tree).resolve(), spec))
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    load = os.getloadavg()
    print(f"threads {args.threads}, batch {args.batch_size}, load average now {load[0]:.2f}")
    for round_index in range(args.rounds):
        for label in ("before", "after"):
            print("\n".join(format_rows(f"round {round_index + 1} {label}", results[label][round_index])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
