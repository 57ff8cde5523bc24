"""The web page shows what the record says: regions listed, the unknown badge only when ``unknown``.

A real server on a free 127.0.0.1 port and Debian's chromium through playwright. The assertions
are about what a user sees (visibility, text), not only that a result arrived. With
``STRUCTCORE_SCREENSHOT=PATH`` the page with its regions is saved there (docs/images/ uses it).
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("starlette")
uvicorn = pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from server import ServeSettings  # noqa: E402
from server.app import create_app  # noqa: E402
from tests.support_registry import make_base, write_data  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _has_browser() -> bool:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return False
    return Path(CHROMIUM).exists()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, tuple[list[Path], list[Path]]]]]:
    data = write_data(tmp_path_factory.mktemp("images"))
    root = make_base(tmp_path_factory.mktemp("base") / "registry", data, ("pill", "grid"))
    settings = ServeSettings(root=root, port=_free_port(), max_wait_ms=10.0, poll_seconds=0.3)
    config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=settings.port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 300
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the test server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{settings.port}", data
    finally:
        server.should_exit = True
        thread.join(60)


def test_infer_records_carry_regions(served: tuple[str, dict[str, tuple[list[Path], list[Path]]]]) -> None:
    url, data = served
    image = data["grid"][1][-1]  # a grid with a missing piece
    with httpx.Client(base_url=url, timeout=120) as client:
        response = client.post("/v1/infer", files=[("image", (image.name, image.read_bytes(), "image/png"))])
    (record,) = response.json()["records"]
    assert isinstance(record["regions"], list) and record["regions"]
    largest = record["regions"][0]
    assert set(largest) == {"x", "y", "w", "h", "area", "area_share", "peak", "mean"}
    assert [r["area"] for r in record["regions"]] == sorted((r["area"] for r in record["regions"]), reverse=True)
    assert largest["peak"] >= largest["mean"] > 0


def test_page_shows_regions_and_hides_the_unknown_badge_for_a_known_product(
    served: tuple[str, dict[str, tuple[list[Path], list[Path]]]], tmp_path: Path
) -> None:
    if not _has_browser():
        if os.environ.get("CI"):
            pytest.fail("CI needs Debian's chromium and the playwright package (see .ci/run)")
        pytest.skip("needs Debian's chromium and the playwright package")
    from playwright.sync_api import sync_playwright

    url, data = served
    defective = data["grid"][1][-1]  # a grid with a missing piece: one region
    with httpx.Client(base_url=url, timeout=120) as client:
        expected = client.post(
            "/v1/infer", files=[("image", (defective.name, defective.read_bytes(), "image/png"))]
        ).json()["records"][0]
    assert expected["unknown"] is False and expected["regions"]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.goto(url + "/")
            page.wait_for_selector("#categories tr:has-text('pill')")
            # before any image: no result, no badge
            assert not page.is_visible("#r-unknown")
            page.set_input_files("#file", str(defective))
            page.wait_for_selector("#result:not([hidden])", timeout=60_000)
            assert page.inner_text("#r-category") == "grid"
            # a known product: the badge is in the page but not shown
            assert page.locator("#r-unknown").count() == 1
            assert not page.is_visible("#r-unknown")
            assert page.evaluate("getComputedStyle(document.getElementById('r-unknown')).display") == "none"
            # the unknown row compares the unknown score with 1.0, the rule that decides
            scores = page.inner_text("#r-scores")
            assert "route" not in scores
            unknown_row = page.locator("#r-scores tr", has_text="unknown").inner_text()
            assert f"{expected['unknown_score']:.4f}" in unknown_row and "1.0000" in unknown_row
            # every region is listed, largest first, with its box
            assert page.is_visible("#r-regions-table") and not page.is_visible("#r-regions-none")
            rows = page.locator("#r-regions tr")
            assert rows.count() == len(expected["regions"])
            first = rows.nth(0).inner_text()
            largest = expected["regions"][0]
            assert f"{largest['x']}, {largest['y']}" in first and f"{largest['w']} x {largest['h']}" in first
            assert page.inner_text("#r-regions-count") == f"({len(expected['regions'])})"
            page.wait_for_function("document.getElementById('overlay').naturalWidth > 0")
            assert page.is_visible("#overlay")
            assert page.inner_text("#error") == ""
            shot = Path(os.environ.get("STRUCTCORE_SCREENSHOT") or tmp_path / "page.png")
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 0
        finally:
            browser.close()


def test_page_shows_the_badge_for_an_unknown_product(
    served: tuple[str, dict[str, tuple[list[Path], list[Path]]]],
) -> None:
    """A product the registry does not hold (wood; it holds pill and grid): the badge is shown."""
    if not _has_browser():
        pytest.skip("needs Debian's chromium and the playwright package")
    from playwright.sync_api import sync_playwright

    url, data = served
    stranger = data["wood"][1][0]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        try:
            page = browser.new_page()
            page.goto(url + "/")
            page.wait_for_selector("#categories tr:has-text('pill')")
            page.set_input_files("#file", str(stranger))
            page.wait_for_selector("#result:not([hidden])", timeout=60_000)
            assert page.is_visible("#r-unknown")
            unknown_row = page.locator("#r-scores tr", has_text="unknown").inner_text()
            assert "1.0000" in unknown_row
            # the same page hides it again for the next, known, image
            assert page.inner_text("#r-category") == "pill"  # still scored against the nearest category
            page.set_input_files("#file", str(data["grid"][1][1]))  # a good grid
            page.wait_for_function("document.getElementById('r-category').textContent === 'grid'", timeout=60_000)
            assert not page.is_visible("#r-unknown")
            # a record without regions says so instead of an empty table
            assert page.is_visible("#r-regions-none") and not page.is_visible("#r-regions-table")
            assert page.inner_text("#r-regions-count") == "(0)"
        finally:
            browser.close()
