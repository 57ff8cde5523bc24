"""What an official benchmark copy holds, and a check of a user's copy against it.

The manifests live in the repository's ``data_manifest/`` folder (``mvtec_ad.json``,
``visa.json``, ``protocols.json``). :func:`check_dataset` compares a copy on disk with a manifest:
missing and extra categories, file counts per split and defect (and masks), downscaled images
(smaller than the official size), and optionally a content digest per category.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from PIL import Image

from evaluation.datasets import GOOD, VISA_SPLIT, DatasetLayoutError, list_images, read_visa_split

__all__ = [
    "DATASETS",
    "MANIFEST_DIR",
    "CountMismatch",
    "DatasetCheck",
    "SizeWarning",
    "category_digest",
    "check_dataset",
    "continual_orders",
    "load_manifest",
]

#: Folder of the manifests (``data_manifest/`` at the repository root).
MANIFEST_DIR = Path(str(resources.files("data_manifest")))
#: Dataset names with a manifest, and their file names.
DATASETS = {"mvtec_ad": "mvtec_ad.json", "visa": "visa.json"}
_ALIASES = {"mvtec": "mvtec_ad", "mvtec-ad": "mvtec_ad", "mvtecad": "mvtec_ad", "visa": "visa"}
#: An image whose longer side is below this share of the official longer side is "downscaled".
DOWNSCALE_TOLERANCE = 0.9


def _canonical(dataset: str) -> str:
    key = dataset.lower().strip()
    key = _ALIASES.get(key, key)
    if key not in DATASETS:
        msg = f"no manifest for dataset {dataset!r}; known: {', '.join(DATASETS)}"
        raise ValueError(msg)
    return key


@lru_cache(maxsize=8)
def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        msg = f"manifest {path} not found; the data_manifest/ folder of the repository is needed"
        raise FileNotFoundError(msg)
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def load_manifest(dataset: str) -> dict[str, Any]:
    """The manifest of ``dataset`` (``"mvtec_ad"`` or ``"visa"``) as a dict (a fresh copy)."""
    data = _read_json(MANIFEST_DIR / DATASETS[_canonical(dataset)])
    copy: dict[str, Any] = json.loads(json.dumps(data))
    return copy


def continual_orders(dataset: str) -> dict[str, list[list[str]]]:
    """Named continual protocols of ``dataset`` as lists of steps (each a list of categories)."""
    data = _read_json(MANIFEST_DIR / "protocols.json")
    orders: dict[str, list[list[str]]] = data[_canonical(dataset)]
    return {name: [list(step) for step in steps] for name, steps in orders.items()}


def category_digest(folder: str | Path) -> str:
    """sha256 over the sorted list of ``relative path<TAB>sha256 of content`` of every file under ``folder``.

    Hidden files and folders are skipped. Two copies have the same digest exactly when they hold
    the same files with the same bytes at the same relative paths.
    """
    folder = Path(folder)
    lines = []
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if not path.is_file() or any(part.startswith(".") for part in relative.parts):
            continue
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        lines.append(f"{relative.as_posix()}\t{digest.hexdigest()}\n")
    return hashlib.sha256("".join(lines).encode()).hexdigest()


@dataclass(frozen=True)
class CountMismatch:
    """A file count that differs from the manifest (``what`` is ``"images"`` or ``"masks"``)."""

    category: str
    split: str
    defect: str
    expected: int
    found: int
    what: str = "images"

    def describe(self) -> str:
        """One line for humans."""
        return f"{self.category} {self.split}/{self.defect}: {self.found} {self.what}, expected {self.expected}"


@dataclass(frozen=True)
class SizeWarning:
    """Images of a category smaller than the official size (``[width, height]``)."""

    category: str
    official: tuple[int, int]
    found: tuple[int, int]
    example: str

    def describe(self) -> str:
        """One line for humans."""
        return (
            f"{self.category}: images are {self.found[0]}x{self.found[1]}, official "
            f"{self.official[0]}x{self.official[1]} (e.g. {self.example}); this copy is downscaled, "
            "so figures are not comparable with published ones"
        )


@dataclass
class DatasetCheck:
    """Result of :func:`check_dataset`.

    Attributes:
        dataset: manifest name; root: the copy checked; layout: layout found on disk.
        expected: categories of the manifest; present: those found; missing / extra: the differences.
        mismatches: count differences per category, split and defect.
        downscaled: categories whose sampled images are smaller than the official size.
        checksums: per checked category, ``"official"``, ``"known copy: <description>"`` or ``"unknown"``.
        problems: further findings (unreadable files, a missing split file, ...).
    """

    dataset: str
    root: str
    layout: str
    expected: list[str]
    present: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    mismatches: list[CountMismatch] = field(default_factory=list)
    downscaled: list[SizeWarning] = field(default_factory=list)
    checksums: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """Every manifest category is present with the official counts and nothing else is wrong."""
        return not (self.missing or self.mismatches or self.problems)

    @property
    def partial(self) -> bool:
        """Some manifest categories or files are absent (but at least one category is present)."""
        short = any(m.found < m.expected for m in self.mismatches)
        return bool(self.present) and (bool(self.missing) or short)

    @property
    def official(self) -> bool:
        """Complete, and no image is downscaled."""
        return self.complete and not self.downscaled

    def lines(self) -> list[str]:
        """The findings, one sentence each (empty list: nothing to report)."""
        out: list[str] = []
        if not self.present:
            out.append(f"no {self.dataset} category found under {self.root}")
        elif self.missing:
            out.append(
                f"partial copy: {len(self.present)} of {len(self.expected)} categories present "
                f"({', '.join(self.present)}); missing: {', '.join(self.missing)}"
            )
        if self.extra:
            out.append(f"extra categories not in the {self.dataset} manifest: {', '.join(self.extra)}")
        out.extend(m.describe() for m in self.mismatches)
        out.extend(w.describe() for w in self.downscaled)
        out.extend(self.problems)
        out.extend(f"{name}: checksum {state}" for name, state in self.checksums.items() if state != "official")
        return out

    def summary(self) -> str:
        """A short paragraph: the verdict, then every finding."""
        if self.official:
            verdict = f"{self.root}: complete official {self.dataset} copy"
        elif self.complete:
            verdict = f"{self.root}: complete {self.dataset} copy (counts match) but downscaled"
        elif self.partial:
            verdict = f"{self.root}: partial {self.dataset} copy"
        else:
            verdict = f"{self.root}: does not match the {self.dataset} manifest"
        return "\n".join([verdict, *(f"- {line}" for line in self.lines())])

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible form (with the derived flags)."""
        data = asdict(self)
        data.update(complete=self.complete, partial=self.partial, official=self.official, findings=self.lines())
        return data


# ------------------------------------------------------------------------------------ counting
def _count_mvtec_category(folder: Path) -> tuple[dict[str, dict[str, int]], dict[str, int], list[Path]]:
    """Image counts per split/defect, mask counts per defect, and a few sample images."""
    counts: dict[str, dict[str, int]] = {"train": {}, "test": {}}
    masks: dict[str, int] = {}
    samples: list[Path] = []
    for split in ("train", "test"):
        split_dir = folder / split
        if not split_dir.is_dir():
            continue
        for defect_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
            images = list_images(defect_dir)
            counts[split][defect_dir.name] = len(images)
            samples.extend(images[:1])
    gt = folder / "ground_truth"
    if gt.is_dir():
        for defect_dir in sorted(p for p in gt.iterdir() if p.is_dir()):
            masks[defect_dir.name] = len(list_images(defect_dir))
    return counts, masks, samples


_VISA_FOLDER_LABELS = {GOOD: "normal", "bad": "anomaly"}


def _visa_prepared_counts(folder: Path) -> tuple[dict[str, dict[str, int]], dict[str, int], list[Path]]:
    counts, masks, samples = _count_mvtec_category(folder)
    renamed = {split: {_VISA_FOLDER_LABELS.get(k, k): v for k, v in per.items()} for split, per in counts.items()}
    return renamed, {_VISA_FOLDER_LABELS.get(k, k): v for k, v in masks.items()}, samples


def _visa_csv_counts(
    root: Path, rows: list[dict[str, str]]
) -> tuple[dict[str, dict[str, dict[str, int]]], dict[str, dict[str, int]], dict[str, list[Path]], int]:
    counts: dict[str, dict[str, dict[str, int]]] = {}
    masks: dict[str, dict[str, int]] = {}
    samples: dict[str, list[Path]] = {}
    absent = 0
    for row in rows:
        name = row["object"]
        image = root / row["image"]
        per = counts.setdefault(name, {"train": {}, "test": {}})
        if not image.is_file():
            absent += 1
            continue
        per[row["split"]][row["label"]] = per[row["split"]].get(row["label"], 0) + 1
        if len(samples.setdefault(name, [])) < 3:
            samples[name].append(image)
        if row["mask"] and (root / row["mask"]).is_file():
            masks.setdefault(name, {})
            masks[name][row["label"]] = masks[name].get(row["label"], 0) + 1
    return counts, masks, samples, absent


def _compare(
    name: str,
    expected: dict[str, Any],
    counts: dict[str, dict[str, int]],
    masks: dict[str, int],
) -> list[CountMismatch]:
    found: list[CountMismatch] = []
    for split in ("train", "test"):
        want: dict[str, int] = expected["splits"].get(split, {})
        have = counts.get(split, {})
        for defect in sorted(set(want) | set(have)):
            if want.get(defect, 0) != have.get(defect, 0):
                found.append(CountMismatch(name, split, defect, want.get(defect, 0), have.get(defect, 0)))
    want_masks: dict[str, int] = expected.get("masks", {})
    for defect in sorted(set(want_masks) | set(masks)):
        if want_masks.get(defect, 0) != masks.get(defect, 0):
            found.append(
                CountMismatch(name, "ground_truth", defect, want_masks.get(defect, 0), masks.get(defect, 0), "masks")
            )
    return found


def _size_check(name: str, expected: dict[str, Any], samples: Sequence[Path]) -> SizeWarning | None:
    official = expected.get("image_size")
    if not official or not samples:
        return None
    width, height = int(official[0]), int(official[1])
    for path in samples:
        try:
            with Image.open(path) as image:
                size = image.size
        except OSError:
            continue
        if max(size) < DOWNSCALE_TOLERANCE * max(width, height):
            return SizeWarning(name, (width, height), (int(size[0]), int(size[1])), path.name)
    return None


def _checksum_state(expected: dict[str, Any], folder: Path) -> str:
    digest = category_digest(folder)
    sums = expected.get("checksums") or {}
    if sums.get("official") == digest:
        return "official"
    for description, known in (sums.get("known_copies") or {}).items():
        if known == digest:
            return f"known copy: {description}"
    return f"unknown (sha256 {digest[:16]}...)"


def check_dataset(
    dataset: str,
    root: str | Path,
    *,
    categories: Sequence[str] | None = None,
    check_sizes: bool = True,
    size_samples: int = 3,
    verify_checksums: bool = False,
) -> DatasetCheck:
    """Compare a copy of ``dataset`` under ``root`` with its manifest.

    Args:
        dataset: ``"mvtec_ad"`` (alias ``"mvtec"``) or ``"visa"``.
        root: the copy's root folder. MVTec AD: ``ROOT/<category>/train|test|ground_truth``.
            VisA: as downloaded (``ROOT/split_csv/1cls.csv``; files counted when they exist) or
            prepared in the MVTec layout (``ROOT/<object>/train/good``, ``test/good|bad``,
            ``ground_truth/bad``).
        categories: restrict the check to these manifest categories (others are neither
            missing nor extra).
        check_sizes: open a few images per category (header only) to detect downscaled copies.
        size_samples: images opened per category.
        verify_checksums: also hash every file (slow on full copies) and compare with the
            manifest's digests.

    Returns:
        A :class:`DatasetCheck`; nothing is raised for a wrong copy, except when ``root`` is not a folder.
    """
    name = _canonical(dataset)
    manifest = load_manifest(name)
    root = Path(root)
    if not root.is_dir():
        msg = f"{root} is not a folder"
        raise DatasetLayoutError(msg)
    expected_cats: dict[str, Any] = manifest["categories"]
    wanted = list(expected_cats) if categories is None else list(categories)
    unknown = [c for c in wanted if c not in expected_cats]
    if unknown:
        msg = f"not {name} categories: {', '.join(unknown)}; known: {', '.join(expected_cats)}"
        raise ValueError(msg)
    on_disk = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    layout = "mvtec"
    per_category: dict[str, tuple[dict[str, dict[str, int]], dict[str, int], list[Path]]] = {}
    problems: list[str] = []
    if name == "visa" and (root / VISA_SPLIT).is_file():
        layout = "visa"
        rows = read_visa_split(root / VISA_SPLIT)
        all_counts, all_masks, all_samples, absent = _visa_csv_counts(root, rows)
        if absent:
            problems.append(f"{absent} files listed in {VISA_SPLIT.as_posix()} are missing on disk")
        for cat in all_counts:
            if (root / cat).is_dir():
                per_category[cat] = (all_counts[cat], all_masks.get(cat, {}), all_samples.get(cat, []))
        candidates = [c for c in on_disk if (root / c / "Data").is_dir()]
    else:
        if name == "visa" and any((root / c / "Data").is_dir() for c in on_disk):
            problems.append(f"{VISA_SPLIT.as_posix()} is missing: the VisA split cannot be checked without it")
        counter = _visa_prepared_counts if name == "visa" else _count_mvtec_category
        candidates = [c for c in on_disk if (root / c / "train").is_dir() or (root / c / "test").is_dir()]
        for cat in candidates:
            per_category[cat] = counter(root / cat)
    present = [c for c in wanted if c in per_category]
    check = DatasetCheck(
        dataset=name,
        root=str(root),
        layout=layout,
        expected=wanted,
        present=present,
        missing=[c for c in wanted if c not in per_category],
        extra=[c for c in candidates if c not in expected_cats] if categories is None else [],
        problems=problems,
    )
    for cat in present:
        counts, masks, samples = per_category[cat]
        check.mismatches.extend(_compare(cat, expected_cats[cat], counts, masks))
        if check_sizes:
            warning = _size_check(cat, expected_cats[cat], samples[:size_samples])
            if warning is not None:
                check.downscaled.append(warning)
        if verify_checksums:
            check.checksums[cat] = _checksum_state(expected_cats[cat], root / cat)
    return check
