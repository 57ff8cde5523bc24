"""``POST /v1/categories/{name}/good``: good images sent back to the server become one update per batch."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("starlette")
httpx = pytest.importorskip("httpx")

from evaluation.synthetic import make_category, write_mvtec_layout  # noqa: E402
from registry import Registry  # noqa: E402
from server.feedback import FEEDBACK_DIR  # noqa: E402
from tests.serve.test_serve import Served, files_of, settings_for  # noqa: E402
from tests.support_registry import SIZE, make_base, write_data  # noqa: E402

TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def new_good(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = write_mvtec_layout(make_category("pill", 4, 0, 0, 77, size=SIZE), tmp_path_factory.mktemp("new"), "pill")
    return sorted((folder / "train" / "good").glob("*.png"))


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = write_data(tmp_path_factory.mktemp("images"))
    return make_base(tmp_path_factory.mktemp("base") / "registry", data, ("pill",), keep_patches=True)


def test_good_images_become_a_feedback_version(root: Path, new_good: list[Path]) -> None:
    settings = settings_for(root, token=TOKEN)
    with Served(settings) as served:
        with served.client() as anonymous:  # token rules as for /v1/infer
            assert anonymous.post("/v1/categories/pill/good", files=files_of(new_good[0])).status_code == 401
        with served.client(TOKEN) as client:
            before = served_record(client, new_good[0])
            assert before["version"] == 1
            assert client.post("/v1/categories/nosuch/good", files=files_of(new_good[0])).status_code == 404
            bad = client.post(
                "/v1/categories/pill/good", content=b"\x89PNG\r\n\x1a\nbroken", headers={"Content-Type": "image/png"}
            )
            assert bad.status_code in {400, 415} and "error" in bad.json()
            queued = client.post("/v1/categories/pill/good", files=files_of(new_good[0]))
            assert queued.status_code == 202 and queued.json()["queued"] == 1
            answer = client.post("/v1/categories/pill/good?wait=1", files=files_of(*new_good[1:]))
            assert answer.status_code == 200, answer.text
            summary = answer.json()
            assert summary["mode"] == "update" and summary["n_train_images"] in {9, 10}
            # the first request went into this update or the one before it; after both, all 4 are in
            assert summary["version"] in {2, 3}
            # the scoring worker swaps to the new version within its poll interval (it also polls
            # before each batch); allow one interval for a poll already under way
            committed = time.monotonic()
            after = served_record(client, new_good[0])
            while after["version"] != summary["version"] and time.monotonic() < committed + 2 * settings.poll_seconds:
                time.sleep(settings.poll_seconds / 4)
                after = served_record(client, new_good[0])
            assert after["version"] == summary["version"], after
            assert after["threshold"] != before["threshold"]  # the update recalibrated the threshold
            # the same images again: nothing new, one line of JSON
            again = client.post("/v1/categories/pill/good?wait=1", files=files_of(new_good[1]))
            assert again.status_code == 409 and "nothing to add" in again.json()["error"]
    with Registry.open(root) as registry:
        info = registry.version_info("pill")
        assert info.version == after["version"] and info.thresholds["hybrid"] == pytest.approx(after["threshold"])
        assert info.n_train_images == 10 and info.origin.startswith("feedback:")
        assert registry.verify().ok
    kept = sorted((root / FEEDBACK_DIR / "pill").iterdir())
    assert len(kept) == 4 and all(p.suffix == ".png" for p in kept)


def served_record(client: httpx.Client, image: Path) -> dict[str, Any]:
    """The ``/v1/infer`` record of one image scored as ``pill``."""
    response = client.post("/v1/infer", params={"category": "pill"}, files=files_of(image))
    assert response.status_code == 200, response.text
    (record,) = response.json()["records"]
    return dict(record)
