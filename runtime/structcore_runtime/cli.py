"""``registry-runtime infer EXPORT_DIR IMAGES... --out FILE.jsonl``: score images without torch.

Exit 0 when every image was scored, 1 when an image failed or the folder cannot be used (one
line on stderr), 2 on usage errors.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from structcore_runtime import __version__
from structcore_runtime.detector import load
from structcore_runtime.export_format import ExportError
from structcore_runtime.graph import BACKENDS, PRECISIONS
from structcore_runtime.images import expand_inputs
from structcore_runtime.knn import SEARCH_ENGINES
from structcore_runtime.regions import DEFAULT_MAX_REGIONS


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="registry-runtime", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=f"structcore-runtime {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    infer = commands.add_parser("infer", help="score images with an exported folder")
    infer.add_argument("export_dir", type=Path, help="folder written by `registry export --format onnx|openvino`")
    infer.add_argument("images", nargs="+", help="image files or folders (recursive)")
    infer.add_argument("--out", type=Path, help="write the records to this .jsonl file (its folder must exist)")
    infer.add_argument("--category", help="score against this category instead of routing")
    infer.add_argument("--backend", choices=BACKENDS, default="auto", help="graph runtime (default: auto)")
    infer.add_argument(
        "--precision", choices=PRECISIONS, default="f32", help="f32 (default, equal to the registry) or bf16 (OpenVINO)"
    )
    infer.add_argument(
        "--knn",
        choices=SEARCH_ENGINES,
        default="auto",
        help="exact kNN search: screened (OpenVINO bf16 screen + float32 re-ranking), faiss, or auto (default)",
    )
    infer.add_argument(
        "--max-regions",
        type=int,
        default=DEFAULT_MAX_REGIONS,
        help=f"defect regions reported per image, largest first (0: none; default {DEFAULT_MAX_REGIONS})",
    )
    infer.add_argument("--batch-size", type=int, default=8, help="images per graph call (default 8)")
    infer.add_argument("--threads", type=int, default=None, help="graph runtime threads (default: all cores)")
    infer.add_argument("--json", action="store_true", help="print the records as JSON lines on stdout")
    return parser


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``registry-runtime``."""
    args = _parser().parse_args(argv)
    if args.batch_size < 1 or args.max_regions < 0:
        print("error: --batch-size must be >= 1 and --max-regions >= 0", file=sys.stderr)
        return 2
    if args.out is not None and (args.out.suffix != ".jsonl" or not args.out.parent.is_dir() or args.out.is_dir()):
        return _fail(f"--out {args.out}: expected a .jsonl file in an existing folder")
    started = time.perf_counter()
    try:
        detector = load(
            args.export_dir,
            backend=args.backend,
            precision=args.precision,
            threads=args.threads,
            knn=args.knn,
            max_regions=args.max_regions,
        )
        sources = expand_inputs(args.images)
        if not sources:
            return _fail(f"no images found in {' '.join(args.images)}")
        records = detector.predict(sources, args.category, batch_size=args.batch_size)
    except ExportError as error:
        return _fail(str(error))
    except KeyboardInterrupt:
        return _fail("interrupted")
    lines = [json.dumps(record) for record in records]
    if args.out is not None:
        args.out.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    if args.json:
        print("\n".join(lines))
    else:
        for record in records:
            if record["error"] is None:
                flag = "ANOMALOUS" if record["anomalous"] else "ok"
                note = " unknown" if record["unknown"] else ""
                print(
                    f"{record['path']}  {record['category']} v{record['version']}  "
                    f"{record['score_hybrid']:.4f} / {record['threshold']:.4f}  {flag}{note}"
                )
    failed = [record for record in records if record["error"]]
    anomalous = sum(bool(record["anomalous"]) for record in records)
    unknown = sum(bool(record["unknown"]) for record in records)
    print(
        f"{len(records)} images in {time.perf_counter() - started:.1f} s ({detector.session.backend} "
        f"{detector.session.precision}): {anomalous} anomalous, {unknown} unknown, {len(failed)} failed"
        + (f"; results in {args.out}" if args.out is not None else ""),
        file=sys.stderr,
    )
    for record in failed:
        print(f"failed: {record['error']}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
