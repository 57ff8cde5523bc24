"""`registry serve` with a real server on a free 127.0.0.1 port: endpoints, batching, hot reload, bad input, token."""

from __future__ import annotations

import base64
import io
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

import uvicorn  # noqa: E402
from PIL import Image  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from cli.main import app as cli_app  # noqa: E402
from registry import Registry  # noqa: E402
from server import ServeSettings, ServeSettingsError, is_loopback  # noqa: E402
from server.app import create_app  # noqa: E402
from tests.support_registry import REPO, clone, make_base, small_model, write_data  # noqa: E402

Data = dict[str, tuple[list[Path], list[Path]]]
SCORE_FIELDS = (
    "category",
    "route_score",
    "unknown",
    "score_base",
    "score_struct",
    "score_hybrid",
    "threshold",
    "anomalous",
)
UPLOAD_LIMIT = 1024 * 1024
TOKEN = "s3cret-token"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Served:
    """A uvicorn server in a thread, on 127.0.0.1."""

    def __init__(self, settings: ServeSettings):
        self.settings = settings
        self.url = f"http://127.0.0.1:{settings.port}"
        config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=settings.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Served:
        self.thread.start()
        deadline = time.monotonic() + 300
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *_exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(60)

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=120)


def settings_for(root: Path, **overrides: Any) -> ServeSettings:
    values: dict[str, Any] = {
        "root": root,
        "port": free_port(),
        "max_wait_ms": 30.0,
        "poll_seconds": 0.3,
        "max_upload_bytes": UPLOAD_LIMIT,
    }
    values.update(overrides)
    return ServeSettings(**values)


def files_of(*paths: Path) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("image", (path.name, path.read_bytes(), "image/png")) for path in paths]


def same_scores(served: dict[str, Any], reference: dict[str, Any]) -> None:
    """Equal decisions, and scores equal up to float32 rounding.

    The server scores in its own worker thread; BLAS (the routing and map matmuls) may split the
    same product across another number of threads there, which moves the last float32 bits
    (seen: a route score 2e-8 relative apart). README promises relative differences below 1e-5.
    """
    for field in SCORE_FIELDS:
        if isinstance(reference[field], float):
            assert served[field] == pytest.approx(reference[field], rel=1e-6, abs=1e-9), field
        else:
            assert served[field] == reference[field], field


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Data:
    return write_data(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory, data: Data) -> Path:
    """A registry with ``pill`` and ``grid`` (tests that change it work on copies)."""
    return make_base(tmp_path_factory.mktemp("base") / "registry", data, ("pill", "grid"))


@pytest.fixture(scope="module")
def served(base: Path) -> Iterator[Served]:
    with Served(settings_for(base)) as running:
        yield running


@pytest.fixture(scope="module")
def client(served: Served) -> Iterator[httpx.Client]:
    with served.client() as http:
        yield http


@pytest.fixture(scope="module")
def reference(base: Path, data: Data) -> dict[str, dict[str, Any]]:
    """``Registry.predict`` (what `registry infer` runs) on every test image, one image per call."""
    with Registry.open(base, read_only=True) as registry:
        return {str(path): dict(registry.predict([path])[0]) for kind in ("pill", "grid") for path in data[kind][1]}


# ----------------------------------------------------------------------------- endpoints
def test_health_ready_and_metrics(client: httpx.Client) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"ready": True, "categories": 2}
    metrics = client.get("/metrics")
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")
    assert "# TYPE structcore_request_seconds histogram" in metrics.text
    assert 'structcore_requests_total{method="GET",route="/healthz",status="200"} 1.0' in metrics.text


def test_categories_list_and_detail(client: httpx.Client, base: Path) -> None:
    listed = client.get("/v1/categories").json()["categories"]
    assert [c["name"] for c in listed] == ["grid", "pill"]
    with Registry.open(base, read_only=True) as registry:
        pill = registry.version_info("pill")
    entry = next(c for c in listed if c["name"] == "pill")
    assert entry["current_version"] == 1
    assert entry["thresholds"] == pill.thresholds
    assert entry["bank_size"] == pill.bank_size
    assert entry["versions"][0]["n_train_images"] == pill.n_train_images
    detail = client.get("/v1/categories/pill").json()
    assert detail["name"] == "pill"
    assert detail["versions"][0]["uuid"] == pill.uuid
    missing = client.get("/v1/categories/nope")
    assert missing.status_code == 404
    assert missing.json() == {"error": "unknown category 'nope'; see GET /v1/categories"}


def test_infer_routed_matches_registry_predict(client: httpx.Client, data: Data, reference: dict[str, Any]) -> None:
    for kind in ("pill", "grid"):
        path = data[kind][1][-1]  # a defective test image
        response = client.post("/v1/infer", files=files_of(path))
        assert response.status_code == 200, response.text
        (record,) = response.json()["records"]
        assert record["path"] == path.name
        assert record["category"] == kind
        assert record["version"] == 1
        assert record["error"] is None
        same_scores(record, reference[str(path)])


def test_infer_several_images_forced_category_with_overlay(
    client: httpx.Client, data: Data, base: Path, reference: dict[str, Any]
) -> None:
    paths = data["pill"][1][:3]
    response = client.post("/v1/infer", params={"category": "pill", "overlay": "1"}, files=files_of(*paths))
    assert response.status_code == 200, response.text
    records = response.json()["records"]
    assert [r["path"] for r in records] == [p.name for p in paths]
    with Registry.open(base, read_only=True) as registry:
        crop = registry.feature_space.crop
        # the same images in one batch of the same size: what `registry infer A B C --category pill` prints
        together = registry.predict(paths, "pill", batch_size=8)
    for record, expected in zip(records, together, strict=True):
        same_scores(record, dict(expected))
        picture = Image.open(io.BytesIO(base64.b64decode(record["overlay_png"])))
        assert picture.format == "PNG"
        assert picture.width > crop and picture.height >= crop  # the crop, its colour bar and margins
    # a raw image body works too; a forced category is scored there even for another product
    raw = client.post("/v1/infer?category=grid", content=paths[0].read_bytes(), headers={"content-type": "image/png"})
    assert raw.status_code == 200
    assert raw.json()["records"][0]["category"] == "grid"
    assert "overlay_png" not in raw.json()["records"][0]
    unknown = client.post("/v1/infer", params={"category": "nope"}, files=files_of(paths[0]))
    assert unknown.status_code == 404


def test_concurrent_requests_share_batches_with_the_same_scores(
    client: httpx.Client, data: Data, reference: dict[str, Any]
) -> None:
    def batches() -> tuple[float, float]:
        lines = client.get("/metrics").text.splitlines()
        count = next(float(x.split()[-1]) for x in lines if x.startswith("structcore_batch_images_count"))
        total = next(float(x.split()[-1]) for x in lines if x.startswith("structcore_batch_images_sum"))
        return count, total

    paths = [p for kind in ("pill", "grid") for p in data[kind][1]] * 2
    count_before, images_before = batches()
    with ThreadPoolExecutor(len(paths)) as pool:
        responses = list(pool.map(lambda p: client.post("/v1/infer", files=files_of(p)), paths))
    count_after, images_after = batches()
    for path, response in zip(paths, responses, strict=True):
        assert response.status_code == 200, response.text
        record = response.json()["records"][0]
        # batch partners change the backbone's float rounding only (as in `registry infer` on a folder)
        for field in ("score_base", "score_struct", "score_hybrid", "route_score"):
            assert record[field] == pytest.approx(reference[str(path)][field], rel=1e-4, abs=1e-7)
        for field in ("category", "unknown", "anomalous", "threshold"):
            assert record[field] == reference[str(path)][field]
    assert images_after - images_before == len(paths)
    assert count_after - count_before < len(paths)  # some requests were scored together


# ----------------------------------------------------------------------------- bad input
def _bomb_png(width: int, height: int) -> bytes:
    """A PNG header declaring ``width x height`` pixels with almost no data (a decompression bomb)."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def test_bad_inputs_get_one_line_json_errors_and_the_server_keeps_serving(client: httpx.Client, data: Data) -> None:
    good = data["pill"][1][0].read_bytes()
    cases = {
        "truncated.png": (good[: len(good) // 2], 400, "corrupt or truncated image"),
        "notes.txt": (b"hello, this is no image\n" * 20, 415, "not a readable image file"),
        "empty.png": (b"", 400, "empty file (0 bytes)"),
        "bomb.png": (_bomb_png(50_000, 50_000), 413, "image too large (2500000000 pixels; limit 40000000)"),
    }
    for name, (content, status, message) in cases.items():
        response = client.post("/v1/infer", files=[("image", (name, content, "image/png"))])
        assert response.status_code == status, (name, response.text)
        error = response.json()["error"]
        assert error.startswith(f"{name}: {message}"), error
        assert "\n" not in response.text
        assert "Traceback" not in response.text
    # a bad image in a multi-image request refuses the whole request, naming the file
    mixed = client.post("/v1/infer", files=[*files_of(data["pill"][1][0]), ("image", ("x.png", b"junk", "image/png"))])
    assert mixed.status_code == 415
    assert mixed.json()["error"].startswith("x.png: ")
    no_image = client.post("/v1/infer", data={"category": "pill"}, files={"note": ("a", b"", "text/plain")})
    assert no_image.status_code in {400, 415}
    form_only = client.post("/v1/infer", data={"category": "pill"})
    assert form_only.status_code == 415
    json_body = client.post("/v1/infer", json={"path": "/etc/passwd"})
    assert json_body.status_code == 415
    assert "multipart/form-data" in json_body.json()["error"]
    not_found = client.get("/nope")
    assert not_found.status_code == 404
    assert "error" in not_found.json()
    assert client.post("/v1/infer", files=files_of(data["pill"][1][0])).status_code == 200


def test_upload_limit_gives_413(client: httpx.Client, data: Data) -> None:
    large = os.urandom(UPLOAD_LIMIT + 1)
    declared = client.post("/v1/infer", files=[("image", ("large.png", large, "image/png"))])
    assert declared.status_code == 413
    assert declared.json() == {"error": f"request body over the upload limit of {UPLOAD_LIMIT} bytes"}

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit is counted while reading
        for start in range(0, len(large), 64 * 1024):
            yield large[start : start + 64 * 1024]

    streamed = client.post("/v1/infer", content=chunks(), headers={"content-type": "image/png"})
    assert streamed.status_code == 413
    assert client.post("/v1/infer", files=files_of(data["pill"][1][0])).status_code == 200


# ----------------------------------------------------------------------------- token
def test_public_bind_needs_a_token() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5") and not is_loopback("example.org")
    with pytest.raises(ServeSettingsError, match="pass --token"):
        ServeSettings(root=Path("."), host="0.0.0.0").check()
    ServeSettings(root=Path("."), host="0.0.0.0", token="t").check()
    result = CliRunner().invoke(cli_app, ["serve", "--root", "nowhere", "--host", "0.0.0.0"])
    assert result.exit_code == 1
    assert "pass --token" in result.output


def test_token_is_required_when_set(base: Path, data: Data) -> None:
    with Served(settings_for(base, token=TOKEN)) as running:
        with running.client() as anonymous:
            assert anonymous.get("/healthz").status_code == 200
            assert anonymous.get("/").status_code == 200  # the page asks for the token itself
            for method, path in (("GET", "/v1/categories"), ("GET", "/metrics"), ("GET", "/readyz")):
                response = anonymous.request(method, path)
                assert response.status_code == 401
                assert response.json() == {"error": "missing or wrong bearer token"}
            refused = anonymous.post("/v1/infer", files=files_of(data["pill"][1][0]))
            assert refused.status_code == 401
        with running.client("wrong") as wrong:
            assert wrong.get("/v1/categories").status_code == 401
        with running.client(TOKEN) as authorised:
            assert authorised.get("/v1/categories").status_code == 200
            assert authorised.post("/v1/infer", files=files_of(data["pill"][1][0])).status_code == 200


# ----------------------------------------------------------------------------- live registry
def wait_for(condition: Any, seconds: float = 20.0) -> float:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > seconds:
            raise AssertionError(f"not within {seconds} s")
        time.sleep(0.1)
    return time.monotonic() - started


def test_categories_added_refitted_and_removed_while_serving(base: Path, data: Data, tmp_path: Path) -> None:
    root = clone(base, tmp_path / "live")
    tile_image = data["tile"][1][0]
    with Served(settings_for(root)) as running, running.client() as http:

        def names() -> list[str]:
            return [c["name"] for c in http.get("/v1/categories").json()["categories"]]

        with Registry.open(root) as writer:
            writer.add_category("tile", data["tile"][0], small_model())
        wait_for(lambda: "tile" in names(), 10)
        record = http.post("/v1/infer", files=files_of(tile_image)).json()["records"][0]
        assert (record["category"], record["version"]) == ("tile", 1)

        pill_image = data["pill"][1][0]
        first = http.post("/v1/infer", files=files_of(pill_image)).json()["records"][0]
        assert first["version"] == 1
        seen: list[dict[str, Any]] = []
        stop = threading.Event()

        def keep_asking() -> None:  # requests in flight while the refit commits
            with running.client() as other:
                while not stop.is_set():
                    seen.append(other.post("/v1/infer", files=files_of(pill_image)).json()["records"][0])

        asker = threading.Thread(target=keep_asking)
        asker.start()
        try:
            with Registry.open(root) as writer:  # refit pill on fewer images: version 2, other scores
                writer.add_category("pill", data["pill"][0][:5], small_model())
                refit = dict(writer.predict([pill_image], "pill")[0])
            wait_for(lambda: bool(seen) and seen[-1]["version"] == 2, 10)
        finally:
            stop.set()
            asker.join(30)
        # every record carries the version whose scores it has: none mixes the two
        by_version = {1: first, 2: refit}
        for record in seen:
            assert record["category"] == "pill"
            same_scores(record, by_version[record["version"]])
        assert {record["version"] for record in seen} >= {2}

        result = CliRunner().invoke(cli_app, ["remove", "tile", "--root", str(root)])
        assert result.exit_code == 0, result.output
        wait_for(lambda: "tile" not in names(), 10)
        gone = http.post("/v1/infer", params={"category": "tile"}, files=files_of(tile_image))
        assert gone.status_code == 404
        assert http.post("/v1/infer", files=files_of(tile_image)).json()["records"][0]["category"] != "tile"
        metrics = http.get("/metrics").text
        assert "structcore_registry_reloads_total 4.0" in metrics  # start, add, refit, remove


# ----------------------------------------------------------------------------- the CLI and shutdown
def test_cli_serve_finishes_in_flight_requests_on_sigterm(base: Path, data: Data) -> None:
    port = free_port()
    command = [sys.executable, "-m", "cli.main", "serve", "--root", str(base), "--port", str(port)]
    command += ["--max-wait-ms", "1500"]  # keeps the request in flight while the signal arrives
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: _answers(url), 180)
        result: dict[str, Any] = {}

        def request() -> None:
            with httpx.Client(base_url=url, timeout=60) as http:
                result["response"] = http.post("/v1/infer", files=files_of(data["pill"][1][0]))

        sender = threading.Thread(target=request)
        sender.start()
        time.sleep(0.5)
        process.send_signal(signal.SIGTERM)
        sender.join(60)
        assert result["response"].status_code == 200
        assert result["response"].json()["records"][0]["category"] == "pill"
        assert process.wait(60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


# ----------------------------------------------------------------------------- the web page
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
BROWSER_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def test_web_page_scores_an_uploaded_image(served: Served, data: Data, tmp_path: Path) -> None:
    if not Path(CHROMIUM).exists() or not _has_playwright():
        if os.environ.get("CI"):
            pytest.fail("CI needs Debian's chromium and the playwright package (see .ci/run)")
        pytest.skip("needs Debian's chromium and the playwright package")
    from playwright.sync_api import sync_playwright

    image = data["pill"][1][-1]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 860})
            page.goto(served.url + "/")
            page.wait_for_selector("#categories tr:has-text('pill')")
            assert "grid" in page.inner_text("#categories")
            page.set_input_files("#file", str(image))
            page.wait_for_selector("#result:not([hidden])", timeout=60_000)
            assert page.inner_text("#r-category") == "pill"
            assert page.inner_text("#r-version") == "1"
            assert page.inner_text("#r-decision") in {"OK", "ANOMALOUS"}
            assert "hybrid" in page.inner_text("#r-scores")
            page.wait_for_function("document.getElementById('overlay').naturalWidth > 0")
            assert page.inner_text("#error") == ""
            shot = tmp_path / "serve_page.png"
            page.screenshot(path=str(shot), full_page=True)
            assert Image.open(shot).size[0] == 1200
        finally:
            browser.close()


def _has_playwright() -> bool:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return False
    return True
