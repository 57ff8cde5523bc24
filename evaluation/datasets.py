"""Benchmark and user datasets: MVTec AD, VisA and a plain folder layout.

Each loader returns a :class:`Dataset`: per category, the train-good image paths and the test
images with their labels (0 good, 1 anomalous), defect names and mask paths (``None`` for good
images and for anomalous images without a mask). Nothing is decoded here; the loaders only list
files, so they are fast on full-size copies.

Layouts:

* **MVTec AD** (``layout="mvtec"``)::

      ROOT/CATEGORY/train/good/*.png
      ROOT/CATEGORY/test/good/*.png
      ROOT/CATEGORY/test/<defect>/<stem>.png
      ROOT/CATEGORY/ground_truth/<defect>/<stem>_mask.png

  The VisA copy that VisA's ``prepare_data.py`` writes (``visa_pytorch``) has this layout too.
* **VisA** (``layout="visa"``), as downloaded::

      ROOT/split_csv/1cls.csv          columns object,split,label,image,mask
      ROOT/<object>/Data/Images/{Normal,Anomaly}/*.JPG
      ROOT/<object>/Data/Masks/Anomaly/*.png

* **Plain folder** (``layout="folder"``), for a user's own category::

      CATEGORY/good/*            good images (a seeded share is held out for testing)
      CATEGORY/<defect>/*        anomalous test images, one folder per defect kind
      CATEGORY/masks/<defect>/<stem>.png or <stem>_mask.png   (optional)

  ``CATEGORY/train/good`` may be given instead of splitting ``good/``; then ``good/`` is all
  test-good. A root holding several such category folders is a multi-category dataset.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from structcore.image_files import IMAGE_SUFFIXES

__all__ = [
    "LAYOUTS",
    "CategoryData",
    "Dataset",
    "DatasetLayoutError",
    "detect_layout",
    "list_images",
    "load_dataset",
    "load_folder",
    "load_mvtec",
    "load_visa",
]

#: Layout names accepted by :func:`load_dataset` (``"auto"`` detects one of the others).
LAYOUTS = ("auto", "mvtec", "visa", "folder")
#: Name of the good class in every layout.
GOOD = "good"
#: Default split file of VisA (the one-class protocol every paper uses).
VISA_SPLIT = Path("split_csv") / "1cls.csv"
_MASK_FOLDER_NAMES = frozenset({"masks", "mask", "ground_truth"})


class DatasetLayoutError(ValueError):
    """A dataset folder does not have the expected layout; the message says what was expected."""


@dataclass(frozen=True)
class CategoryData:
    """One category's files.

    Attributes:
        name: category name.
        train: train-good image paths, sorted.
        test: test image paths (good first, then defects in name order).
        labels: (n_test,) int8, 0 = good, 1 = anomalous.
        defects: defect name per test image (``"good"`` for good images).
        masks: mask path per test image; ``None`` for good images and unmasked anomalies.
    """

    name: str
    train: tuple[Path, ...]
    test: tuple[Path, ...]
    labels: np.ndarray
    defects: tuple[str, ...]
    masks: tuple[Path | None, ...]

    def __post_init__(self) -> None:
        n = len(self.test)
        if not len(self.labels) == len(self.defects) == len(self.masks) == n:
            msg = f"category {self.name}: test paths, labels, defects and masks differ in length"
            raise ValueError(msg)

    @property
    def n_good(self) -> int:
        """Good test images."""
        return int(np.count_nonzero(self.labels == 0))

    @property
    def n_anomalous(self) -> int:
        """Anomalous test images."""
        return int(np.count_nonzero(self.labels == 1))

    @property
    def has_masks(self) -> bool:
        """Whether any anomalous test image has a mask (pixel metrics are computable)."""
        return any(mask is not None for mask in self.masks)

    def counts(self) -> dict[str, dict[str, int]]:
        """File counts per split and defect: ``{"train": {"good": n}, "test": {defect: n}}``."""
        test: dict[str, int] = {}
        for defect in self.defects:
            test[defect] = test.get(defect, 0) + 1
        return {"train": {GOOD: len(self.train)}, "test": dict(sorted(test.items()))}

    def subset(self, max_test: int | None = None, max_train: int | None = None, seed: int = 0) -> CategoryData:
        """A smaller copy: at most ``max_train`` train and ``max_test`` test images (seeded, stratified).

        Good and anomalous test images are subsampled in proportion, keeping at least one of each
        when the category has them.
        """
        train = self.train
        rng = np.random.default_rng(seed)
        if max_train is not None and len(train) > max_train:
            keep = np.sort(rng.choice(len(train), size=max_train, replace=False))
            train = tuple(train[i] for i in keep)
        picked = np.arange(len(self.test))
        if max_test is not None and len(self.test) > max_test:
            good = np.flatnonzero(self.labels == 0)
            bad = np.flatnonzero(self.labels == 1)
            n_good = round(max_test * len(good) / len(self.test))
            n_good = min(len(good), max(1 if len(good) else 0, n_good))
            n_bad = min(len(bad), max_test - n_good)
            picked = np.sort(
                np.concatenate(
                    [rng.choice(good, size=n_good, replace=False), rng.choice(bad, size=n_bad, replace=False)]
                )
            )
        return CategoryData(
            name=self.name,
            train=train,
            test=tuple(self.test[i] for i in picked),
            labels=self.labels[picked],
            defects=tuple(self.defects[i] for i in picked),
            masks=tuple(self.masks[i] for i in picked),
        )


@dataclass(frozen=True)
class Dataset:
    """Categories of one dataset, by name, in a fixed (alphabetical) order."""

    layout: str
    root: Path
    categories: dict[str, CategoryData] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        """Category names, in order."""
        return list(self.categories)

    def select(self, names: Iterable[str] | None) -> Dataset:
        """The dataset restricted to ``names`` (in the order given); ``None`` keeps all."""
        if names is None:
            return self
        wanted = list(names)
        unknown = [name for name in wanted if name not in self.categories]
        if unknown:
            msg = (
                f"categories not found under {self.root}: {', '.join(unknown)}; "
                f"found: {', '.join(self.categories) or 'none'}"
            )
            raise DatasetLayoutError(msg)
        return Dataset(self.layout, self.root, {name: self.categories[name] for name in wanted})


def list_images(folder: Path) -> list[Path]:
    """Image files (by suffix, case-insensitive) directly inside ``folder``, sorted by name."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _require_dir(path: Path, what: str) -> None:
    if not path.exists():
        msg = f"{path} does not exist; expected {what}"
        raise DatasetLayoutError(msg)
    if not path.is_dir():
        msg = f"{path} is not a folder; expected {what}"
        raise DatasetLayoutError(msg)


# ------------------------------------------------------------------------------------ MVTec AD
def _mvtec_mask(root: Path, defect: str, image: Path) -> Path | None:
    folder = root / "ground_truth" / defect
    for candidate in (folder / f"{image.stem}_mask.png", folder / f"{image.stem}.png"):
        if candidate.is_file():
            return candidate
    return None


def _load_mvtec_category(folder: Path) -> CategoryData:
    train_dir = folder / "train" / GOOD
    if not train_dir.is_dir():
        msg = (
            f"{folder} has no train/good folder; expected the MVTec AD layout "
            "CATEGORY/train/good, CATEGORY/test/<defect>, CATEGORY/ground_truth/<defect>/<stem>_mask.png"
        )
        raise DatasetLayoutError(msg)
    train = list_images(train_dir)
    if not train:
        msg = f"{train_dir} holds no images (looked for {', '.join(sorted(IMAGE_SUFFIXES))})"
        raise DatasetLayoutError(msg)
    test_dir = folder / "test"
    if not test_dir.is_dir():
        msg = f"{folder} has no test folder; expected CATEGORY/test/good and CATEGORY/test/<defect> folders"
        raise DatasetLayoutError(msg)
    defects = [p.name for p in _subfolders(test_dir)]
    order = ([GOOD] if GOOD in defects else []) + [d for d in defects if d != GOOD]
    test: list[Path] = []
    labels: list[int] = []
    names: list[str] = []
    masks: list[Path | None] = []
    for defect in order:
        for image in list_images(test_dir / defect):
            test.append(image)
            labels.append(0 if defect == GOOD else 1)
            names.append(defect)
            masks.append(None if defect == GOOD else _mvtec_mask(folder, defect, image))
    if not test:
        msg = f"{test_dir} holds no test images; expected CATEGORY/test/good and CATEGORY/test/<defect> folders"
        raise DatasetLayoutError(msg)
    return CategoryData(
        name=folder.name,
        train=tuple(train),
        test=tuple(test),
        labels=np.asarray(labels, dtype=np.int8),
        defects=tuple(names),
        masks=tuple(masks),
    )


def load_mvtec(root: str | Path, categories: Sequence[str] | None = None) -> Dataset:
    """Load an MVTec AD-layout dataset (every sub-folder with ``train/good`` is a category).

    Args:
        root: the dataset root (holding ``bottle/``, ``cable/``, ...), or one category folder.
        categories: names to load (default: all found).

    Raises:
        DatasetLayoutError: when the root or a category does not have the MVTec AD layout.
    """
    root = Path(root)
    _require_dir(root, "an MVTec AD root holding CATEGORY/train/good folders")
    if (root / "train" / GOOD).is_dir():  # a single category folder
        data = _load_mvtec_category(root)
        return Dataset("mvtec", root.parent, {data.name: data}).select(categories)
    found = [p for p in _subfolders(root) if (p / "train").is_dir() or (p / "test").is_dir()]
    if categories is not None:
        missing = [name for name in categories if not (root / name).is_dir()]
        if missing:
            msg = (
                f"categories not found under {root}: {', '.join(missing)}; "
                f"found: {', '.join(p.name for p in found) or 'none'}"
            )
            raise DatasetLayoutError(msg)
        found = [root / name for name in categories]
    if not found:
        msg = (
            f"{root} has no category folders with train/good; expected the MVTec AD layout "
            "ROOT/CATEGORY/train/good, ROOT/CATEGORY/test/<defect>, ROOT/CATEGORY/ground_truth/<defect>"
        )
        raise DatasetLayoutError(msg)
    return Dataset("mvtec", root, {p.name: _load_mvtec_category(p) for p in found})


# ---------------------------------------------------------------------------------------- VisA
def read_visa_split(csv_path: Path) -> list[dict[str, str]]:
    """Rows of a VisA split file (``object,split,label,image,mask``), validated."""
    if not csv_path.is_file():
        msg = f"{csv_path} not found; expected VisA's split file ROOT/{VISA_SPLIT.as_posix()}"
        raise DatasetLayoutError(msg)
    with csv_path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = {c.strip() for c in (reader.fieldnames or [])}
        needed = {"object", "split", "label", "image", "mask"}
        if not needed <= columns:
            msg = (
                f"{csv_path} has columns {sorted(columns)}; expected VisA's object,split,label,image,mask "
                f"(missing: {', '.join(sorted(needed - columns))})"
            )
            raise DatasetLayoutError(msg)
        rows = [{k.strip(): (v or "").strip() for k, v in row.items() if k is not None} for row in reader]
    bad = [r for r in rows if r["split"] not in {"train", "test"} or r["label"] not in {"normal", "anomaly"}]
    if bad:
        first = bad[0]
        msg = (
            f"{csv_path}: {len(bad)} rows with an unknown split or label "
            f"(first: split={first['split']!r}, label={first['label']!r}); expected train/test and normal/anomaly"
        )
        raise DatasetLayoutError(msg)
    return rows


def load_visa(
    root: str | Path,
    categories: Sequence[str] | None = None,
    split_csv: str | Path | None = None,
    require_files: bool = True,
) -> Dataset:
    """Load VisA as downloaded, with the split of ``split_csv`` (default ``split_csv/1cls.csv``).

    Args:
        root: the VisA root (holding ``split_csv/`` and the object folders).
        categories: objects to load (default: every object of the split file).
        split_csv: split file, relative to ``root`` or absolute.
        require_files: raise when a listed image is missing (otherwise it is dropped).

    Raises:
        DatasetLayoutError: no split file, wrong columns, unknown objects, or missing files.
    """
    root = Path(root)
    _require_dir(root, f"a VisA root holding {VISA_SPLIT.as_posix()} and the object folders")
    csv_path = Path(split_csv) if split_csv is not None else VISA_SPLIT
    if not csv_path.is_absolute():
        csv_path = root / csv_path
    if not csv_path.is_file() and (root / "candle" / "train" / GOOD).is_dir():
        msg = (
            f"{csv_path} not found, but {root} looks like VisA prepared in the MVTec AD layout "
            "(CATEGORY/train/good); load it with layout='mvtec'"
        )
        raise DatasetLayoutError(msg)
    rows = read_visa_split(csv_path)
    objects = sorted({r["object"] for r in rows})
    if categories is not None:
        unknown = [name for name in categories if name not in objects]
        if unknown:
            msg = f"objects not in {csv_path.name}: {', '.join(unknown)}; known: {', '.join(objects)}"
            raise DatasetLayoutError(msg)
        objects = list(categories)
    result: dict[str, CategoryData] = {}
    missing: list[Path] = []
    for name in objects:
        train: list[Path] = []
        test: list[tuple[int, Path, Path | None]] = []
        for row in rows:
            if row["object"] != name:
                continue
            image = root / row["image"]
            if not image.is_file():
                missing.append(image)
                continue
            if row["split"] == "train":
                if row["label"] == "normal":
                    train.append(image)
                continue
            label = 0 if row["label"] == "normal" else 1
            mask = root / row["mask"] if row["mask"] else None
            if mask is not None and not mask.is_file():
                missing.append(mask)
                mask = None
            test.append((label, image, mask))
        test.sort(key=lambda item: (item[0], item[1].name))
        if not train or not test:
            continue
        result[name] = CategoryData(
            name=name,
            train=tuple(sorted(train)),
            test=tuple(item[1] for item in test),
            labels=np.asarray([item[0] for item in test], dtype=np.int8),
            defects=tuple(GOOD if item[0] == 0 else "anomaly" for item in test),
            masks=tuple(item[2] for item in test),
        )
    if missing and require_files:
        msg = (
            f"{len(missing)} files listed in {csv_path.name} are missing under {root} "
            f"(first: {missing[0]}); is this a partial copy? Pass require_files=False to skip them"
        )
        raise DatasetLayoutError(msg)
    if not result:
        msg = f"no VisA object under {root} has both train and test images listed in {csv_path.name}"
        raise DatasetLayoutError(msg)
    return Dataset("visa", root, result)


# -------------------------------------------------------------------------------- plain folder
def _folder_mask(masks_dir: Path | None, defect: str, image: Path) -> Path | None:
    if masks_dir is None:
        return None
    for folder in (masks_dir / defect, masks_dir):
        for name in (f"{image.stem}_mask.png", f"{image.stem}.png", f"{image.stem}_mask{image.suffix}"):
            if (folder / name).is_file():
                return folder / name
    return None


def _load_folder_category(folder: Path, test_share: float, seed: int) -> CategoryData:
    good_dir = folder / GOOD
    train_dir = folder / "train" / GOOD
    if not good_dir.is_dir() and not train_dir.is_dir():
        msg = (
            f"{folder} has no good folder; expected the plain layout CATEGORY/good (good images), "
            "CATEGORY/<defect> (anomalous images), optional CATEGORY/masks/<defect>/<stem>.png"
        )
        raise DatasetLayoutError(msg)
    good = list_images(good_dir)
    if train_dir.is_dir():
        train, test_good = list_images(train_dir), good
    else:
        if len(good) < 3:
            msg = f"{good_dir} holds {len(good)} images; need at least 3 to split into train and test"
            raise DatasetLayoutError(msg)
        held = min(len(good) - 2, max(1, round(len(good) * test_share)))
        order = np.random.default_rng(seed).permutation(len(good))
        test_idx = set(order[:held].tolist())
        train = [p for i, p in enumerate(good) if i not in test_idx]
        test_good = [p for i, p in enumerate(good) if i in test_idx]
    if not train:
        msg = f"{folder}: no train-good images found"
        raise DatasetLayoutError(msg)
    masks_dir = next((folder / n for n in ("masks", "mask", "ground_truth") if (folder / n).is_dir()), None)
    defect_dirs = [p for p in _subfolders(folder) if p.name not in {GOOD, "train", *_MASK_FOLDER_NAMES}]
    test: list[Path] = list(test_good)
    labels = [0] * len(test_good)
    defects = [GOOD] * len(test_good)
    masks: list[Path | None] = [None] * len(test_good)
    for defect_dir in defect_dirs:
        for image in list_images(defect_dir):
            test.append(image)
            labels.append(1)
            defects.append(defect_dir.name)
            masks.append(_folder_mask(masks_dir, defect_dir.name, image))
    return CategoryData(
        name=folder.name,
        train=tuple(train),
        test=tuple(test),
        labels=np.asarray(labels, dtype=np.int8),
        defects=tuple(defects),
        masks=tuple(masks),
    )


def load_folder(
    root: str | Path, categories: Sequence[str] | None = None, test_share: float = 0.2, seed: int = 0
) -> Dataset:
    """Load the plain folder layout: one category folder, or a root of category folders.

    Args:
        root: a category folder (holding ``good/``) or a folder of them.
        categories: names to load (default: all).
        test_share: share of ``good/`` images held out as test-good when there is no ``train/good``.
        seed: seeds the held-out split.
    """
    root = Path(root)
    _require_dir(root, "a category folder holding good/ and <defect>/ folders")
    if not 0.0 < test_share < 1.0:
        msg = f"test_share must be in (0, 1), got {test_share}"
        raise ValueError(msg)
    if (root / GOOD).is_dir() or (root / "train" / GOOD).is_dir():
        data = _load_folder_category(root, test_share, seed)
        return Dataset("folder", root.parent, {data.name: data}).select(categories)
    found = [p for p in _subfolders(root) if (p / GOOD).is_dir() or (p / "train" / GOOD).is_dir()]
    if not found:
        msg = (
            f"{root} has no good folder and no category folders with one; expected the plain layout "
            "CATEGORY/good, CATEGORY/<defect>, optional CATEGORY/masks/<defect>/<stem>.png"
        )
        raise DatasetLayoutError(msg)
    dataset = Dataset("folder", root, {p.name: _load_folder_category(p, test_share, seed) for p in found})
    return dataset.select(categories)


# ---------------------------------------------------------------------------------------- auto
def detect_layout(root: str | Path) -> str:
    """Guess the layout of ``root``: ``"visa"``, ``"mvtec"`` or ``"folder"``.

    Raises:
        DatasetLayoutError: when no layout fits (the message lists what was looked for).
    """
    root = Path(root)
    _require_dir(root, "a dataset folder")
    if (root / VISA_SPLIT).is_file():
        return "visa"
    if (root / "train" / GOOD).is_dir() and (root / "test").is_dir():
        return "mvtec"
    subs = _subfolders(root)
    if any((p / "train" / GOOD).is_dir() and (p / "test").is_dir() for p in subs):
        return "mvtec"
    if (root / GOOD).is_dir() or any((p / GOOD).is_dir() for p in subs):
        return "folder"
    msg = (
        f"cannot tell the layout of {root}: expected MVTec AD (CATEGORY/train/good + CATEGORY/test), "
        f"VisA ({VISA_SPLIT.as_posix()}) or a plain folder (CATEGORY/good + CATEGORY/<defect>)"
    )
    raise DatasetLayoutError(msg)


def load_dataset(
    root: str | Path,
    layout: str = "auto",
    categories: Sequence[str] | None = None,
    **options: object,
) -> Dataset:
    """Load a dataset in any supported layout.

    Args:
        root: dataset root (or a single category folder for ``mvtec`` / ``folder``).
        layout: one of :data:`LAYOUTS`.
        categories: category names to load, in this order (default: all, alphabetical).
        **options: passed to the layout's loader (``split_csv``/``require_files`` for VisA,
            ``test_share``/``seed`` for the plain folder layout).
    """
    if layout not in LAYOUTS:
        msg = f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}"
        raise ValueError(msg)
    if layout == "auto":
        layout = detect_layout(root)
    if layout == "mvtec":
        dataset = load_mvtec(root, categories)
    elif layout == "visa":
        dataset = load_visa(root, categories, **options)  # type: ignore[arg-type]
    else:
        dataset = load_folder(root, categories, **options)  # type: ignore[arg-type]
    if categories is None:
        return Dataset(dataset.layout, dataset.root, dict(sorted(dataset.categories.items())))
    return dataset
