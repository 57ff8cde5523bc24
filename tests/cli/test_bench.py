"""``registry bench``: a thin command that runs the checkout's ``benchmarks/bench.py`` in a child process."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.bench import NO_CHECKOUT, find_checkout
from cli.main import app

REPO = Path(__file__).resolve().parents[2]


def test_finds_the_checkout_of_the_installed_package(tmp_path: Path) -> None:
    assert find_checkout() == REPO
    assert find_checkout([tmp_path]) is None
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "benchmarks" / "bench.py").write_text("")
    assert find_checkout([REPO / "docs", tmp_path]) == tmp_path


def test_bad_images_give_one_error_line_from_the_benchmark(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    result = CliRunner().invoke(app, ["bench", "--quick", "--images", str(tmp_path)])
    assert result.exit_code == 1
    err = capfd.readouterr().err.strip().splitlines()
    assert err[:-1] == ["loading images"]  # progress, then one line naming the folder
    assert err[-1].startswith("error: ") and str(tmp_path) in err[-1] and "MVTec-style" in err[-1]


def test_without_a_checkout_it_says_how_to_get_one(tmp_path: Path) -> None:
    """A copy of ``cli/`` outside any checkout (as in an installed wheel): one line, exit 1."""
    shutil.copytree(REPO / "cli", tmp_path / "site" / "cli")
    work = tmp_path / "work"
    work.mkdir()
    code = f"import sys; sys.path.insert(0, {str(tmp_path / 'site')!r}); from cli.main import main; main()"
    completed = subprocess.run(
        [sys.executable, "-c", code, "bench", "--quick"], cwd=work, capture_output=True, text=True, timeout=120
    )
    assert completed.returncode == 1, completed.stderr
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1 and "source checkout" in lines[0], completed.stderr
    assert " ".join(lines[0].split()).endswith(" ".join(NO_CHECKOUT.split()))
    assert completed.stdout == ""
