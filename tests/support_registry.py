"""Helpers shared by the registry tests (small synthetic data, registry copies, child processes).

Holds no tests itself (``support_*``, so pytest does not collect it).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from evaluation.synthetic import make_category, write_mvtec_layout
from registry import Registry
from structcore.model import CategoryModel

#: Image side and registry resize/crop: a 16x16 patch grid keeps every fit well under a second.
SIZE = 128
N_TRAIN = 6
KINDS = ("pill", "grid", "tile", "wood")
REPO = Path(__file__).resolve().parents[1]


def small_model() -> CategoryModel:
    """Settings for test fits: 5% coreset, fewer prototypes."""
    return CategoryModel(coreset_ratio=0.05, n_prototypes=16)


def write_data(root: Path) -> dict[str, tuple[list[Path], list[Path]]]:
    """PNG train / test images of a few synthetic kinds: kind -> (train paths, test paths)."""
    data = {}
    for seed, kind in enumerate(KINDS):
        folder = write_mvtec_layout(make_category(kind, N_TRAIN, 2, 2, seed, size=SIZE), root, kind)
        data[kind] = (sorted((folder / "train" / "good").glob("*.png")), sorted((folder / "test").rglob("*.png")))
    return data


def make_base(
    root: Path,
    data: dict[str, tuple[list[Path], list[Path]]],
    kinds: tuple[str, ...] = ("pill",),
    *,
    keep_patches: bool = False,
) -> Path:
    """A registry at ``root`` (128 px feature space) with the given categories fitted.

    ``keep_patches``: store the train patches as ``add-category --keep-patches`` does (what an
    incremental ``registry update`` reads).
    """
    registry = Registry.init(root, resize=SIZE, crop=SIZE)
    for kind in kinds:
        registry.add_category(kind, data[kind][0], small_model(), keep_patches=keep_patches)
    registry.close()
    return root


def random_registry(root: Path, versions: list[tuple[str, str | None]]) -> Path:
    """A 64 px registry whose versions (``(name, description)``, in order) are one model fitted on random vectors.

    For tests of what reads the catalogue: no images, about a second.
    """
    with Registry.init(root, resize=64, crop=64) as registry:
        grid = registry.extractor().grid_shape()
        vectors = np.random.default_rng(0).standard_normal((6, grid[0] * grid[1], registry.feature_space.dim))
        model = CategoryModel(coreset_ratio=0.1, seed=0).fit(vectors.astype(np.float32), grid, 64)
        for name, description in versions:
            registry.add_fitted(name, model, description=description)
    return root


def clone(source: Path, target: Path) -> Path:
    """Copy a (closed) registry folder."""
    shutil.copytree(source, target)
    return target


def tree_hashes(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder``, by relative path."""
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def db_rows(root: Path, name: str) -> dict[str, Any]:
    """The raw database rows of one category (categories row + its versions), read-only."""
    connection = sqlite3.connect(f"file:{root / 'registry.sqlite'}?mode=ro", uri=True)
    connection.row_factory = sqlite3.Row
    try:
        category = connection.execute("SELECT * FROM categories WHERE name = ?", (name,)).fetchone()
        versions = connection.execute(
            "SELECT * FROM category_versions WHERE category_id = ? ORDER BY version", (category["id"],)
        ).fetchall()
        return {"category": dict(category), "versions": [dict(v) for v in versions]}
    finally:
        connection.close()


def scores(records: list[Any]) -> list[tuple[Any, ...]]:
    """The comparable part of prediction records."""
    return [
        (
            r["path"],
            r["category"],
            r["route_score"],
            r["unknown"],
            r["score_base"],
            r["score_struct"],
            r["score_hybrid"],
        )
        for r in records
    ]


CHILD = textwrap.dedent(
    """
    import json, os, signal, sys, time
    from pathlib import Path
    import torch
    torch.set_num_threads(1)
    from registry import Registry, storage
    from tests.support_registry import small_model

    args = json.loads(sys.argv[1])

    def die(stage):
        if stage == args.get("kill_at"):
            os.kill(os.getpid(), signal.SIGKILL)

    storage.checkpoint_hook = die
    registry = Registry.open(args["root"])
    registry.extractor()  # build the backbone before waiting, so the writers really overlap
    go = args.get("go")
    if go:
        Path(args["ready"]).touch()
        deadline = time.monotonic() + 60
        while not Path(go).exists() and time.monotonic() < deadline:
            time.sleep(0.01)
    if args.get("remove"):
        registry.remove(args["remove"])
    for name in args.get("add", []):
        registry.add_category(name, args["images"], small_model(), lambda event: die(event.stage))
    for name in args.get("update", []):
        from registry.updates import update_category

        update_category(registry, name, args["images"], progress=lambda event: die(event.stage))
    registry.close()
    """
)


def start_child(args: dict[str, Any]) -> subprocess.Popen[bytes]:
    """Start a Python process that opens a registry and adds / removes categories (see ``CHILD``)."""
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, json.dumps(args)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def landscape_copies(paths: list[Path], folder: Path) -> list[Path]:
    """The images cut to their top half (2:1), as new files in ``folder`` (the fit and tile geometry tests)."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for path in paths:
        with Image.open(path) as image:
            target = folder / f"{path.parent.name}-{path.name}"
            image.crop((0, 0, image.width, image.height // 2)).save(target)
            out.append(target)
    return out
