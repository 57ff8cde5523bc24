"""Shared fixtures: the real embedded backbone (built once per session), small synthetic data, real data.

Real data (MVTec AD, MTD) is read from ``$STRUCTCORE_DATA`` (default: ``<repo>/../shared/data``,
the folder holding ``mvtec_ad/`` and ``mtd/``). Tests that need it take a fixture such as
:func:`mvtec_bottle`; without the data they are skipped, and the end of the run says loudly which
ones and why. ``STRUCTCORE_REQUIRE_DATA=1`` turns those skips into errors (for a CI machine that
must have the data). Real-data tests that take long carry ``@pytest.mark.slow``: the default run
(``-m "not slow"`` in pyproject's ``addopts``) leaves them out and ``pytest -m slow`` runs them.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from structcore.backbones import Backbone, create_backbone
from structcore.features import FeatureExtractor, FeatureSpace, build_extractor, new_feature_space

torch.set_num_threads(2)
# The suite runs the torch backbone (the reference) unless a test asks for another: ``auto``
# would pick OpenVINO where installed, whose maps differ from torch's by float rounding and whose
# graph export would cost seconds per new backbone. Child processes (CLI tests) inherit it.
os.environ.setdefault("STRUCTCORE_BACKBONE_RUNTIME", "torch")

DATA_ENV = "STRUCTCORE_DATA"
REQUIRE_DATA_ENV = "STRUCTCORE_REQUIRE_DATA"
#: Prefix of every real-data skip reason (the terminal summary looks for it).
REAL_DATA_SKIP = "real data not found"
#: Fixtures that provide real data; a test using one is marked ``real_data``.
REAL_DATA_FIXTURES = ("mvtec_bottle", "mtd_magnetic_tile", "real_data_root")


def real_data_root() -> Path:
    """``$STRUCTCORE_DATA``, else ``<repo>/../shared/data``."""
    configured = os.environ.get(DATA_ENV)
    return Path(configured).expanduser() if configured else Path(__file__).resolve().parents[2] / "shared" / "data"


#: The MVTec AD bottle category of the real data (may be absent; use the ``mvtec_bottle`` fixture).
MVTEC_BOTTLE = real_data_root() / "mvtec_ad" / "bottle"


def require_real_data(relative: str, must_hold: str = "") -> Path:
    """``real_data_root() / relative``, or skip the test naming the path and the variable to set.

    Args:
        relative: the dataset folder inside the data root (``"mvtec_ad/bottle"``).
        must_hold: a sub-folder that must exist too (``"train/good"``).
    """
    folder = real_data_root() / relative
    if not (folder / must_hold).is_dir():
        where = "$STRUCTCORE_DATA" if os.environ.get(DATA_ENV) else "the default <repo>/../shared/data"
        reason = (
            f"{REAL_DATA_SKIP}: {folder / must_hold} is missing ({where}); "
            f"set {DATA_ENV} to the folder that holds {relative.split('/')[0]}/"
        )
        if os.environ.get(REQUIRE_DATA_ENV) == "1":
            pytest.fail(f"{reason} ({REQUIRE_DATA_ENV}=1)")
        pytest.skip(reason)
    return folder


@pytest.fixture(scope="session")
def mvtec_bottle() -> Path:
    """The real MVTec AD bottle category (``train/good``, ``test/<defect>``, ``ground_truth``)."""
    return require_real_data("mvtec_ad/bottle", "train/good")


@pytest.fixture(scope="session")
def mtd_magnetic_tile() -> Path:
    """The real Magnetic Tile Defects category in MVTec layout (DifferNet's split)."""
    return require_real_data("mtd/magnetic_tile", "train/good")


@pytest.fixture(scope="session")
def backbone() -> Backbone:
    """The real EfficientNet-Lite2 backbone with its shipped ImageNet weights."""
    return create_backbone("efficientnet-lite2")


@pytest.fixture(scope="session")
def small_space(backbone: Backbone) -> FeatureSpace:
    """A feature space at 128 px (16x16 patch grid) so tests stay fast."""
    return new_feature_space(backbone, resize=128, crop=128)


@pytest.fixture(scope="session")
def small_extractor(small_space: FeatureSpace, backbone: Backbone) -> FeatureExtractor:
    return build_extractor(small_space, backbone, batch_size=8)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "real_data: uses the real datasets of $STRUCTCORE_DATA (set automatically)")


@pytest.hookimpl(tryfirst=True)  # before -m deselects: the summary names deselected real-data tests too
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if any(name in getattr(item, "fixturenames", ()) for name in REAL_DATA_FIXTURES):
            item.add_marker(pytest.mark.real_data)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, exitstatus: int, config: pytest.Config) -> None:
    """Say loudly which real-data tests did not run, and why."""
    skipped = [
        report
        for report in terminalreporter.stats.get("skipped", [])
        if isinstance(report.longrepr, tuple) and REAL_DATA_SKIP in str(report.longrepr[2])
    ]
    real_deselected = [
        item
        for item in terminalreporter.stats.get("deselected", [])
        if isinstance(item, pytest.Item) and item.get_closest_marker("real_data") is not None
    ]
    # Only the slow ones need their own step; the others were left out by a `-m slow` run and ran in the default one.
    deselected = [item for item in real_deselected if item.get_closest_marker("slow") is not None]
    if not skipped and not deselected:
        return
    terminalreporter.write_sep("=", "real-data tests that did not run", yellow=True, bold=True)
    for report in skipped:
        reason = str(report.longrepr[2]).removeprefix("Skipped: ") if isinstance(report.longrepr, tuple) else ""
        terminalreporter.write_line(f"SKIPPED {report.nodeid}: {reason}", yellow=True, bold=True)
    if skipped:
        terminalreporter.write_line(f"  data root: {real_data_root()} (set {DATA_ENV} to change it)", yellow=True)
    if deselected:
        names = ", ".join(item.nodeid for item in deselected)
        terminalreporter.write_line(
            f"DESELECTED {len(deselected)} slow real-data test(s) ({names}); "
            "run them with: .venv/bin/python -m pytest -q -p no:cacheprovider -m slow",
            yellow=True,
            bold=True,
        )
