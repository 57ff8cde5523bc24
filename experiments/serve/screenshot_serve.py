"""Screenshot of the `registry serve` page after scoring one image (docs/images/serve_regions.png).

    python experiments/serve/screenshot_serve.py REGISTRY IMAGE OUT.png

Starts the server on a free 127.0.0.1 port in this process, opens the page in Debian's chromium
(playwright), uploads IMAGE, waits for the overlay and the regions list, and saves a full-page
screenshot.
"""

from __future__ import annotations

import shutil
import socket
import sys
import threading
import time
from pathlib import Path

import uvicorn
from playwright.sync_api import sync_playwright

from server import ServeSettings
from server.app import create_app


def main(registry: str, image: str, out: str) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    settings = ServeSettings(root=Path(registry), port=port)
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.1)
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, args=["--headless", "--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_selector("#categories tr td")
            page.set_input_files("#file", image)
            page.wait_for_selector("#result:not([hidden])", timeout=600_000)
            page.wait_for_function("document.getElementById('overlay').naturalWidth > 0")
            page.screenshot(path=out, full_page=True)
            print(page.inner_text("#r-regions-box"))
            browser.close()
    finally:
        server.should_exit = True
        thread.join(60)


if __name__ == "__main__":
    main(*sys.argv[1:4])
