"""What a new user tripped over in the first hour (issue 16), each as a test.

Output paths checked before any work, terminal tables at 80 columns, overlays, add-category's
check of every train image, hints that name real commands, `demo --keep`, the bench's target
lines, the eval report printed raw, and the real-data location. Real registries in temporary
folders, small synthetic images.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from benchmarks.bench import format_bench, target_checks
from cli.main import app
from evaluation.plots import render_overlay
from evaluation.synthetic import make_category, write_mvtec_layout

runner = CliRunner()
REPO = Path(__file__).resolve().parents[2]
SIZE = 96
MISSING = "does not exist (create it first, or pass --parents)"


def invoke(*args: str) -> Any:
    return runner.invoke(app, list(args))


def one_line(result: Any) -> str:
    """The output with rich's wrapping undone."""
    return " ".join(result.output.split())


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("first-hour-data")
    for kind, seed in (("pill", 3), ("carpet", 4)):
        write_mvtec_layout(
            make_category(kind, n_train=5, n_test_good=2, n_test_bad=2, seed=seed, size=SIZE), root, kind
        )
    return root


@pytest.fixture(scope="module")
def registry_root(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("first-hour-registry") / "registry"
    assert invoke("init", "--root", str(root), "--resize", str(SIZE), "--crop", str(SIZE)).exit_code == 0
    for kind in ("pill", "carpet"):
        result = invoke(
            "add-category", kind, "--train", str(data / kind), "--root", str(root), "--coreset-ratio", "0.1"
        )
        assert result.exit_code == 0, result.output
    return root


# ----------------------------------------------------------------------------- output paths
def test_export_output_paths_are_checked_before_any_work(registry_root: Path, tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("a file")
    existing = tmp_path / "ov"
    existing.mkdir()
    cases = {
        "parent is a file": (notes / "b.h5", f"{notes} is a file, not a folder"),
        "an existing folder": (existing, f"--out {existing} is an existing folder; give a file name"),
        "missing folders": (tmp_path / "nonexistent" / "dir" / "b.h5", MISSING),
        "/proc": (Path("/proc/b.h5"), "cannot write in /proc"),
    }  # fmt: skip
    for case, (out, message) in cases.items():
        result = invoke("export", "pill", "--out", str(out), "--root", str(registry_root))
        assert result.exit_code == 1, (case, result.output)
        assert message in one_line(result), (case, result.output)
        assert "Traceback" not in result.output and "errno" not in result.output, case
        assert len(result.output.strip().splitlines()) == 1, (case, result.output)  # one line
    assert not (tmp_path / "nonexistent").exists()  # no folder created unless asked
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "ov"] and not any(existing.iterdir())

    nested = tmp_path / "bundles" / "2026" / "b.h5"
    result = invoke("export", "pill", "--out", str(nested), "--root", str(registry_root), "--parents")
    assert result.exit_code == 0, result.output
    assert nested.is_file()


def test_file_system_errors_show_a_traceback_only_with_debug(registry_root: Path, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("x")
    out = str(tmp_path / "notes.txt" / "b.h5")
    assert "Traceback" not in invoke("export", "pill", "--out", out, "--root", str(registry_root)).output
    result = runner.invoke(app, ["--debug", "export", "pill", "--out", out, "--root", str(registry_root)])
    assert result.exit_code == 1 and "Traceback" in result.output


def test_infer_and_eval_output_paths_are_checked_before_the_registry_is_opened(tmp_path: Path) -> None:
    """No registry at all: the path error comes first, so nothing was scored or fitted."""
    nothing = str(tmp_path / "no-registry")
    (tmp_path / "file").write_text("x")
    image = tmp_path / "a.png"
    Image.new("RGB", (32, 32)).save(image)
    cases = [
        (["infer", str(image), "--out", str(tmp_path / "file" / "r.jsonl")], f"{tmp_path / 'file'} is a file"),
        (["infer", str(image), "--out", str(tmp_path / "r.txt")], "must end in .jsonl, .json, .csv"),
        (["infer", str(image), "--out", str(tmp_path)], "is an existing folder"),
        (["infer", str(image), "--maps", str(tmp_path / "a" / "b")], MISSING),
        (["infer", str(image), "--maps", str(tmp_path / "file")], "is a file, not a folder"),
        (["eval", str(tmp_path), "--out", str(tmp_path / "x" / "y")], MISSING),
        (["demo", "--keep", str(tmp_path)], "is not empty; give a new or empty folder"),
    ]  # fmt: skip
    for arguments, message in cases:
        result = invoke(*arguments, "--root", nothing)
        assert result.exit_code == 1, (arguments, result.output)
        assert message in one_line(result), (arguments, result.output)
        assert "registry init" not in result.output  # the registry was not even opened
    assert not (tmp_path / "a").exists() and not (tmp_path / "x").exists()


# ----------------------------------------------------------------------------- infer
def test_infer_table_fits_80_columns_and_overlays_are_named_and_recorded(
    registry_root: Path, data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    maps = tmp_path / "maps"
    out = tmp_path / "results.jsonl"
    sources = [str(data / "pill" / "test"), str(data / "carpet" / "test" / "good")]
    result = invoke("infer", *sources, "--root", str(registry_root), "--maps", str(maps), "--out", str(out))
    assert result.exit_code == 0, result.output
    table = result.stdout.splitlines()
    assert max(len(line) for line in table) <= 80, result.stdout
    assert " ok " in result.stdout  # the good carpets
    defects = sorted(p.parent.name for p in (data / "pill" / "test").glob("*/*.png") if p.parent.name != "good")
    for defect in defects:  # paths relative to the common folder, complete
        assert f"pill/test/{defect}/000.png" in result.stdout
    assert f"paths relative to {data}" in " ".join(result.stdout.split())

    records = [json.loads(line) for line in out.read_text().splitlines()]  # --out stays complete
    assert len(records) == 6 and all(r["score_struct"] is not None and r["route_score"] is not None for r in records)
    overlays = [Path(r["overlay"]) for r in records]
    assert len(set(overlays)) == 6 and all(path.parent == maps and path.is_file() for path in overlays)
    assert {path.name for path in overlays} >= {f"pill_test_{defect}_000.png" for defect in defects}
    assert sorted(p.name for p in maps.iterdir()) == sorted(path.name for path in overlays)
    picture = Image.open(overlays[0])
    assert picture.width > picture.height  # the colour bar on the right

    plain = json.loads(invoke("infer", sources[1], "--root", str(registry_root), "--json").stdout)
    assert all(record["overlay"] is None for record in plain)

    # Five train images make conservative thresholds (their leave-one-out maps lose a fifth of
    # the bank), so the tiny synthetic defects pass; a pill half painted over does not.
    painted = np.asarray(Image.open(next((data / "pill" / "test" / "good").glob("*.png"))).convert("RGB")).copy()
    painted[: SIZE // 2] = np.random.default_rng(0).integers(0, 256, (SIZE // 2, SIZE, 3), dtype=np.uint8)
    Image.fromarray(painted).save(tmp_path / "painted.png")
    result = invoke("infer", str(tmp_path / "painted.png"), "--root", str(registry_root), "--category", "pill")
    assert result.exit_code == 0, result.output
    assert "anomalous" in result.stdout and max(len(line) for line in result.stdout.splitlines()) <= 80


def test_infer_table_keeps_every_column_on_a_wide_terminal(
    registry_root: Path, data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "160")
    result = invoke("infer", str(data / "pill" / "test" / "good"), "--root", str(registry_root))
    assert result.exit_code == 0, result.output
    header = result.stdout.splitlines()[1].split()
    assert header == ["path", "category", "route", "base", "struct", "hybrid", "threshold", "decision"]


def test_show_and_list_fit_80_columns(registry_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    shown = invoke("show", "pill", "--root", str(registry_root))
    assert shown.exit_code == 0, shown.output
    assert max(len(line) for line in shown.stdout.splitlines()) <= 80
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d", shown.stdout) and "threshold" in shown.stdout
    assert "thresholds base" in shown.stdout and "lambda" in shown.stdout  # the rest, below the table
    listed = invoke("list", "--root", str(registry_root))
    assert max(len(line) for line in listed.stdout.splitlines()) <= 80
    assert "2 categories" in listed.stdout


def test_render_overlay_shows_the_part_where_the_map_is_low() -> None:
    image = np.full((3, 64, 64), 0.5, dtype=np.float32)
    image[:, 20:44, 20:44] = 0.8  # the part
    anomaly_map = np.full((64, 64), 0.1, dtype=np.float32)
    anomaly_map[40:56, 40:56] = 3.0  # a defect, above the threshold
    picture = render_overlay(image, anomaly_map, threshold=1.0, title="pill: ANOMALOUS", anomalous=True)
    assert picture.mode == "RGB" and picture.width > picture.height
    pixels = np.asarray(picture).astype(int)
    scale = 320 / 64  # small crops are drawn at 320 px
    top = round(picture.height - 8 - 64 * scale)

    def at(row: float, column: float) -> np.ndarray:
        return pixels[top + round(row * scale), 8 + round(column * scale)]

    assert np.abs(at(32, 24) - 204).max() <= 3  # low map: the plain (grey) part, not tinted
    assert np.abs(at(30, 60) - 128).max() <= 3
    hot = at(48, 48)
    assert hot.max() - hot.min() > 60  # coloured where the map is high


# ----------------------------------------------------------------------------- add-category
def test_add_category_lists_every_bad_train_image_before_embedding(
    registry_root: Path, data: Path, tmp_path: Path
) -> None:
    train = tmp_path / "train"
    train.mkdir()
    good = sorted((data / "pill" / "train" / "good").glob("*.png"))
    for path in good:
        (train / path.name).write_bytes(path.read_bytes())
    (train / "empty.png").write_bytes(b"")
    (train / "text.png").write_text("not an image")
    (train / "truncated.png").write_bytes(good[0].read_bytes()[:200])
    result = invoke("add-category", "bad", "--train", str(train), "--root", str(registry_root))
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.startswith("bad train image: ")]
    assert [line.split(": ")[1] for line in lines] == [
        str(train / n) for n in ("empty.png", "text.png", "truncated.png")
    ]
    assert "empty file (0 bytes)" in lines[0] and "not a readable image file" in lines[1] and "truncated" in lines[2]
    assert "3 of 8 train images cannot be read" in one_line(result) and "--skip-bad" in result.output
    assert "Traceback" not in result.output
    listed = json.loads(invoke("list", "--root", str(registry_root), "--json").stdout)
    assert "bad" not in [item["name"] for item in listed]  # stopped before anything was fitted

    result = invoke("add-category", "bad", "--train", str(train), "--root", str(registry_root), "--skip-bad", "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["n_train_images"] == len(good)
    assert [Path(item["path"]).name for item in info["skipped"]] == ["empty.png", "text.png", "truncated.png"]
    assert "skipped: " in result.output and "fitting on 5 of 8 train images (3 skipped)" in result.output
    assert invoke("remove", "bad", "--root", str(registry_root)).exit_code == 0


# ----------------------------------------------------------------------------- hints
HINT = re.compile(r"`(?:\.venv/bin/)?registry ([^`]+)`")


def _commands() -> dict[str, Any]:
    """Every command of the app by its full name (``data check`` too); Typer's own click classes."""
    root = typer.main.get_command(app)
    found: dict[str, Any] = {}
    context = type(root).context_class(root)  # type: ignore[attr-defined]
    for name in root.list_commands(context):  # type: ignore[attr-defined]
        command = root.get_command(context, name)  # type: ignore[attr-defined]
        assert command is not None
        found[name] = command
        if hasattr(command, "list_commands"):
            for sub in command.list_commands(context):
                sub_command = command.get_command(context, sub)
                assert sub_command is not None
                found[f"{name} {sub}"] = sub_command
    return found


def _named_commands(text: str) -> list[str]:
    """The ``registry ...`` command lines named in backticks in ``text``."""
    return [match.group(1) for match in HINT.finditer(text)]


def _check_hint(hint: str, commands: dict[str, Any]) -> str | None:
    words = hint.split()
    name = " ".join(words[:2]) if " ".join(words[:2]) in commands else words[0]
    if name not in commands:
        return f"`registry {hint}`: no command {words[0]!r}"
    options = {opt for param in commands[name].params for opt in (*param.opts, *param.secondary_opts)}
    for word in words[len(name.split()) :]:
        option = word.split("=")[0].rstrip(",.;)")
        if option.startswith("--") and option not in options and option not in {"--help", "--debug"}:
            return f"`registry {hint}`: {name} has no option {option}"
    return None


def test_every_hint_and_help_text_names_an_existing_command() -> None:
    commands = _commands()
    assert {"add-category", "data check", "demo", "eval", "bench"} <= set(commands)
    texts: dict[str, str] = {}
    for folder in ("cli", "registry", "structcore"):
        for path in sorted((REPO / folder).rglob("*.py")):
            texts[str(path.relative_to(REPO))] = path.read_text()
    for name, command in commands.items():
        texts[f"help of {name}"] = " ".join(
            [command.help or "", *(getattr(param, "help", None) or "" for param in command.params)]
        )
    for path in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        texts[str(path.relative_to(REPO))] = path.read_text()
    named = {where: _named_commands(text) for where, text in texts.items()}
    assert sum(map(len, named.values())) > 20  # the walk found the hints
    assert "add-category NAME --train DIR" in named["registry/errors.py"]
    problems = [
        f"{where}: {problem}"
        for where, hints in named.items()
        for hint in hints
        if (problem := _check_hint(hint, commands)) is not None
    ]
    assert problems == []
    assert _check_hint("add NAME", commands) is not None  # the walk can fail
    assert _check_hint("demo --keeep DIR", commands) is not None


def test_empty_registry_hints_name_add_category(tmp_path: Path) -> None:
    root = str(tmp_path / "empty")
    assert invoke("init", "--root", root, "--resize", "64", "--crop", "64").exit_code == 0
    image = tmp_path / "a.png"
    Image.new("RGB", (32, 32)).save(image)
    for arguments in (["infer", str(image)], ["show", "pill"], ["list"]):
        result = invoke(*arguments, "--root", root)
        text = one_line(result)
        assert "`registry add-category NAME --train DIR`" in text, (arguments, result.output)
        assert "`registry add`" not in text


# ----------------------------------------------------------------------------- demo
def test_demo_keep_keeps_data_registry_and_overlays(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import cli.demo

    monkeypatch.setattr(cli.demo, "DEMO_TRAIN_IMAGES", 4)
    monkeypatch.setattr(cli.demo, "DEMO_TEST_GOOD", 1)
    monkeypatch.setattr(cli.demo, "DEMO_TEST_BAD", 1)
    keep = tmp_path / "demo-run"
    result = invoke("demo", "--keep", str(keep), "--categories", "2")
    assert result.exit_code == 0, result.output
    text = one_line(result)
    assert f"kept in {keep}:" in text and f"`registry list --root {keep / 'registry'}`" in text
    overlays = sorted((keep / "overlays").glob("*.png"))
    assert len(overlays) == 4 and f"{keep / 'overlays'}: 4 overlay PNGs" in text
    assert all("_test_" in path.name for path in overlays)  # pill_test_good_000.png, ...
    assert len(list((keep / "data").glob("*/train/good/*.png"))) == 8
    listed = json.loads(invoke("list", "--root", str(keep / "registry"), "--json").stdout)
    assert len(listed) == 2


def test_demo_without_keep_says_it_removes_its_data(capsys: pytest.CaptureFixture[str]) -> None:
    from cli.demo import _print_kept

    _print_kept({"data": None, "registry": None, "overlays": None, "kept": None}, 0)
    assert "`registry demo --keep DIR` keeps it all" in " ".join(capsys.readouterr().out.split())


# ----------------------------------------------------------------------------- bench
def _bench_result(quick: bool) -> dict[str, Any]:
    return {
        "config": {"quick": quick, "backbone": "efficientnet-lite2", "n_test": 4},
        "machine": {},
        "knn_floor_ratio": 1.65,
        "coreset_floor_ratio": 0.12,
        "route_cost_ratio_1000_vs_2": 1.07,
        "fit_rss_ratio": 12.12,
        "accuracy": {"image_auroc": 0.5, "pixel_auroc": 0.98},
        "memory": {
            "images": 8, "peak_rss_mb": 493.0, "baseline_rss_mb": 420.0, "matrix_mb": 6.0, "ratio": 12.12,
            "seconds": 0.8,
        },
    }  # fmt: skip


def test_bench_target_lines_say_pass_or_miss() -> None:
    result = _bench_result(quick=False)
    checks = target_checks(result)
    assert {key: check["status"] for key, check in checks.items()} == {
        "knn_floor_ratio": "MISS",
        "coreset_floor_ratio": "PASS",
        "route_cost_ratio_1000_vs_2": "PASS",
        "fit_rss_ratio": "MISS",
    }
    text = format_bench(result)
    assert "= 12.12 (target <= 2.0: MISS)" in text
    assert "accuracy 1%: image AUROC 0.5000" in text


def test_quick_bench_leaves_out_auroc_and_says_targets_are_not_comparable() -> None:
    result = _bench_result(quick=True)
    text = format_bench(result)
    assert "AUROC 0.5000" not in text and "0.0000" not in text
    assert "AUROC figures left out in --quick (4 small test images" in text
    assert "12.12 (target <= 2.0 is for the full run; not comparable in --quick: 8 small images" in text
    assert ": PASS" not in text and ": MISS" not in text
    assert {check["status"] for check in target_checks(result).values()} == {"not comparable"}


# ----------------------------------------------------------------------------- eval
def test_eval_prints_its_markdown_unwrapped(
    registry_root: Path, data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    out = tmp_path / "eval"
    result = invoke(
        "eval", str(data), "--root", str(registry_root), "--protocol", "separate", "--categories", "pill",
        "--out", str(out), "--no-plots", "--dataset", "none",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    table_lines = [line for line in result.stdout.splitlines() if line.startswith("|")]
    assert table_lines and max(map(len, table_lines)) > 80  # not re-wrapped at the terminal width
    assert all(line.endswith("|") for line in table_lines)
    assert result.stdout.strip() == (out / "report.md").read_text().strip()
    assert "1 category)" in result.stdout and "1 categories" not in result.stdout


# ----------------------------------------------------------------------------- real data
def test_real_data_root_reads_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from tests.conftest import REAL_DATA_SKIP, real_data_root, require_real_data

    monkeypatch.setenv("STRUCTCORE_DATA", str(tmp_path))
    monkeypatch.delenv("STRUCTCORE_REQUIRE_DATA", raising=False)  # CI sets it; here a skip is the answer
    assert real_data_root() == tmp_path
    (tmp_path / "mvtec_ad" / "bottle" / "train" / "good").mkdir(parents=True)
    assert require_real_data("mvtec_ad/bottle", "train/good") == tmp_path / "mvtec_ad" / "bottle"
    with pytest.raises(pytest.skip.Exception, match=f"{REAL_DATA_SKIP}: .*set STRUCTCORE_DATA"):
        require_real_data("mtd/magnetic_tile", "train")
    monkeypatch.delenv("STRUCTCORE_DATA")
    assert real_data_root() == REPO.parent / "shared" / "data"


def test_pytest_run_names_skipped_real_data_tests(tmp_path: Path) -> None:
    """A run without the data lists the skipped and the deselected real-data tests by name."""
    (tmp_path / "conftest.py").write_text((REPO / "tests" / "conftest.py").read_text())
    (tmp_path / "test_real.py").write_text(
        "import pytest\n\n\ndef test_uses_bottle(mvtec_bottle):\n    pass\n\n\n"
        "@pytest.mark.slow\ndef test_slow_bottle(mvtec_bottle):\n    pass\n"
    )
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    slow: slow\naddopts = -m 'not slow'\n")
    env = {**os.environ, "STRUCTCORE_DATA": "/nonexistent"}
    env.pop("PYTEST_ADDOPTS", None)
    env.pop("STRUCTCORE_REQUIRE_DATA", None)  # CI sets it; this run is about skips
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", str(tmp_path)]
    run = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    assert any("real-data tests that did not run" in line for line in lines), run.stdout
    assert any(
        line.startswith("SKIPPED test_real.py::test_uses_bottle: real data not found: /nonexistent/mvtec_ad/bottle")
        for line in lines
    ), run.stdout
    assert any(
        line.startswith("DESELECTED 1 slow real-data test(s) (test_real.py::test_slow_bottle)") and "-m slow" in line
        for line in lines
    ), run.stdout
    assert "1 skipped, 1 deselected" in run.stdout
