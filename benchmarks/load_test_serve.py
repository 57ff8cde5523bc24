"""Load test of `registry serve`: N concurrent clients for T seconds against bottle + synthetic categories.

Localhost only, bounded in time and in request count. Builds (once, then reuses) a registry of
MVTec bottle and a few synthetic categories, measures `registry infer` on the same images as the
baseline, starts `registry serve` as a child process and, for each client count, runs the clients
until the time or the request budget is spent. Reports p50 / p95 / p99 latency, images per second
(also against the CLI), errors, and the server's RSS after warm-up and at the end.

    .venv/bin/python benchmarks/load_test_serve.py --clients 1,4,8 --seconds 20
    .venv/bin/python benchmarks/load_test_serve.py --screenshot docs/images/serve_page.png   # the README picture
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("STRUCTCORE_DATA", REPO.parent / "shared" / "data"))
REGISTRY_BIN = str(Path(sys.executable).with_name("registry"))
SYNTHETIC_KINDS = ("pill", "grid", "tile")


def build_registry(root: Path, bottle: Path, images: Path, n_synthetic: int) -> None:
    """A registry of bottle and ``n_synthetic`` synthetic categories, and the request images in ``images``."""
    from evaluation.synthetic import make_category
    from registry import Registry

    images.mkdir(parents=True, exist_ok=True)
    if not (root / "registry.sqlite").exists():
        registry = Registry.init(root)
        print("fitting bottle ...", flush=True)
        registry.add_category("bottle", sorted((bottle / "train" / "good").glob("*.png")))
        registry.close()
    with Registry.open(root) as registry:
        for seed, kind in enumerate(SYNTHETIC_KINDS[:n_synthetic]):
            category = make_category(kind, 24, 2, 4, seed, size=256)
            for j, array in enumerate(category.test_images):
                Image.fromarray(array).save(images / f"{kind}_{category.test_defects[j]}_{j}.png")
            if kind not in registry:
                print(f"fitting {kind} ...", flush=True)
                registry.add_category(kind, list(category.train_images))
    for defect in ("good", "broken_large", "broken_small", "contamination"):
        for path in sorted((bottle / "test" / defect).glob("*.png"))[:4]:
            target = images / f"bottle_{defect}_{path.name}"
            if not target.exists():
                target.write_bytes(path.read_bytes())


def cli_baseline(root: Path, pool: list[Path]) -> dict[str, float]:
    """`registry infer` on the pool: images/s of its scoring (its own timing line) and with its start-up."""
    started = time.perf_counter()
    done = subprocess.run(
        [REGISTRY_BIN, "infer", *map(str, pool), "--root", str(root), "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    wall = time.perf_counter() - started
    found = re.search(r"(\d+) images in ([\d.]+) s", done.stderr)
    assert found, done.stderr
    return {
        "images": float(found.group(1)),
        "scoring_seconds": float(found.group(2)),
        "img_per_s": float(found.group(1)) / float(found.group(2)),
        "wall_seconds": wall,
        "img_per_s_with_start": len(pool) / wall,
    }


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def run_clients(url: str, pool: list[tuple[str, bytes]], clients: int, seconds: float, max_requests: int) -> dict:
    """``clients`` threads posting one image each request until ``seconds`` pass or ``max_requests`` are sent."""
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    counter = iter(range(max_requests))
    deadline = time.monotonic() + seconds

    def client(index: int) -> None:
        with httpx.Client(base_url=url, timeout=120) as http:
            while time.monotonic() < deadline:
                with lock:
                    n = next(counter, None)
                if n is None:
                    return
                name, data = pool[(n + index) % len(pool)]
                started = time.perf_counter()
                try:
                    response = http.post("/v1/infer", files=[("image", (name, data, "image/png"))])
                    ok = response.status_code == 200
                    problem = None if ok else f"{response.status_code} {response.text[:120]}"
                except httpx.HTTPError as error:
                    problem = f"{type(error).__name__}: {error}"
                elapsed = time.perf_counter() - started
                with lock:
                    if problem is None:
                        latencies.append(elapsed)
                    else:
                        errors.append(problem)

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    values = np.asarray(latencies) * 1000
    return {
        "clients": clients,
        "requests": len(latencies) + len(errors),
        "errors": len(errors),
        "first_errors": errors[:3],
        "p50_ms": float(np.percentile(values, 50)) if values.size else None,
        "p95_ms": float(np.percentile(values, 95)) if values.size else None,
        "p99_ms": float(np.percentile(values, 99)) if values.size else None,
        "img_per_s": len(latencies) / wall,
        "seconds": wall,
    }


def screenshot(url: str, image: Path, target: Path) -> None:
    """The web page after scoring ``image``, taken in Debian's headless Chromium."""
    from playwright.sync_api import sync_playwright

    args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
    args += ["--disable-component-update", "--disable-sync", "--no-first-run"]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=args)
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.goto(url + "/")
        page.wait_for_selector("#categories tr:has-text('bottle')")
        page.set_input_files("#file", str(image))
        page.wait_for_selector("#result:not([hidden])", timeout=120_000)
        page.wait_for_function("document.getElementById('overlay').naturalWidth > 0")
        target.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(target), full_page=True)
        browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--registry", type=Path, default=Path("/tmp/17-load/registry"))
    parser.add_argument("--images", type=Path, default=Path("/tmp/17-load/images"))
    parser.add_argument("--bottle", type=Path, default=DATA / "mvtec_ad" / "bottle")
    parser.add_argument("--synthetic", type=int, default=3, help="synthetic categories beside bottle")
    parser.add_argument("--clients", default="1,4,8")
    parser.add_argument("--seconds", type=float, default=20.0, help="per client count (at most 120)")
    parser.add_argument("--max-requests", type=int, default=2000, help="per client count")
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument("--max-wait-ms", type=float, default=10.0)
    parser.add_argument("--screenshot", type=Path, help="also write a screenshot of the web page here")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    seconds = min(args.seconds, 120.0)

    build_registry(args.registry, args.bottle, args.images, args.synthetic)
    paths = sorted(args.images.glob("*.png"))
    pool = [(path.name, path.read_bytes()) for path in paths]
    print(f"{len(pool)} request images; `registry infer` on them ...", flush=True)
    cli = cli_baseline(args.registry, paths)

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [REGISTRY_BIN, "serve", "--root", str(args.registry), "--host", "127.0.0.1", "--port", str(port)]
    command += ["--max-batch-size", str(args.max_batch_size), "--max-wait-ms", str(args.max_wait_ms)]
    log = (args.registry.parent / "serve.log").open("w")  # closed at the end
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("the server did not become ready; see serve.log")
            time.sleep(0.5)
        counts = [int(c) for c in args.clients.split(",")]
        # warm-up at the largest concurrency: full batches size the allocator's and torch's buffers
        run_clients(url, pool, max(counts), 10.0, 4 * len(pool))
        rss_start = rss_mb(server.pid)
        rows = []
        for count in counts:
            rows.append(run_clients(url, pool, count, seconds, args.max_requests))
            rows[-1]["rss_mb"] = rss_mb(server.pid)
        rss_end = rss_mb(server.pid)
        if args.screenshot:
            bad = next(p for p in paths if p.name.startswith("bottle_broken_large"))
            screenshot(url, bad, args.screenshot)
        metrics = httpx.get(url + "/metrics").text
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(60)
        log.close()

    batches = {
        m.group(1): float(m.group(2))
        for m in re.finditer(r"^structcore_batch_images_(sum|count) (\S+)$", metrics, re.M)
    }
    result: dict[str, Any] = {
        "cli": cli,
        "rows": rows,
        "rss_mb_start": rss_start,
        "rss_mb_end": rss_end,
        "mean_batch_images": batches.get("sum", 0) / max(batches.get("count", 1), 1),
        "load_average": os.getloadavg(),
        "cpu_count": os.cpu_count(),
    }
    print(
        f"\n`registry infer` on {len(paths)} images: {cli['img_per_s']:.1f} img/s scoring "
        f"({cli['img_per_s_with_start']:.1f} img/s with its {cli['wall_seconds']:.0f} s start-up and load)"
    )
    print("\n| clients | requests | errors | p50 ms | p95 ms | p99 ms | img/s | vs CLI | vs CLI with start | RSS MB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['clients']} | {row['requests']} | {row['errors']} | {row['p50_ms']:.0f} | {row['p95_ms']:.0f} | "
            f"{row['p99_ms']:.0f} | {row['img_per_s']:.1f} | {row['img_per_s'] / cli['img_per_s']:.2f}x | "
            f"{row['img_per_s'] / cli['img_per_s_with_start']:.2f}x | {row['rss_mb']:.0f} |"
        )
    print(
        f"\nserver RSS {rss_start:.0f} MB after warm-up, {rss_end:.0f} MB at the end; "
        f"mean batch {result['mean_batch_images']:.2f} images; load average {result['load_average'][0]:.1f} "
        f"on {result['cpu_count']} cores"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
