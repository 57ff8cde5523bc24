"""The model's settings, declared once: each parameter's default, allowed values and help text.

Two groups, each a table of :class:`Parameter` (in the style of scikit-learn's
``_parameter_constraints``) and a frozen dataclass with one ``validate()``:

* :class:`FeatureSpaceSettings` (:data:`FEATURE_SPACE_PARAMETERS`): what ``registry init`` fixes
  once per registry: backbone, weights, resize / crop, projection dimension and seed.
* :class:`FitSettings` (:data:`FIT_PARAMETERS`): how one category is fitted: the constructor
  settings of :class:`structcore.model.CategoryModel` (stored with each version) plus the images
  per backbone call (a run setting, not stored).

Every entry point uses them: the commands (``cli/options.py`` builds their options from these
tables), :class:`~structcore.model.CategoryModel` (``fit`` validates), the Ray path, the
evaluation and bundle import (which refuses a stored version whose settings break the table).

Standard library only: the command line imports this module to build its options, and
``registry list`` must start without numpy, torch or scipy.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import numbers
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

# ----------------------------------------------------------------------------- defaults
#: Backbone of new registries (its ImageNet weights ship inside a Python package).
DEFAULT_BACKBONE = "efficientnet-lite2"
#: Backbones built into the package (others may be added with ``register_backbone``).
BUILTIN_BACKBONES = ("efficientnet-lite2", "dinov2-vitb14")
#: Default geometry of new feature spaces: resize straight to 392, no crop. The paper's MVTec/VisA
#: protocol (448 -> 392 centre crop) cuts 6% off each border, where defects of tiles, textures
#: and webs lie (docs/quality.md: Magnetic Tile Defects lose 5 points of image AUROC to it).
DEFAULT_RESIZE = 392
DEFAULT_CROP = 392
#: The paper's (and method.md's) geometry, and that of registries made before the no-crop default.
PAPER_RESIZE = 448
PAPER_CROP = 392
#: How an image is brought to the model's square (``registry init --geometry``, docs/quality.md §8):
#: ``squash`` resizes it to ``resize`` x ``resize`` whatever its aspect ratio (registries made
#: before the setting existed read as ``squash``); ``fit`` keeps the aspect ratio (long side to
#: ``resize``, the short side padded) and every map, bank and statistic ignores the padding.
#: ``tile`` keeps the image at its own resolution (its long side capped at ``tile_max_side``) and
#: cuts it into overlapping ``resize`` x ``resize`` tiles whose maps are stitched
#: (:mod:`structcore.tiles`).
INPUT_GEOMETRIES = ("squash", "fit", "tile")
DEFAULT_INPUT_GEOMETRY = "squash"
#: ``tile``: the longest image side that is kept; larger images are scaled down (aspect kept) to it
#: first. 1024 bounds an image at 3 x 3 = 9 tiles of 392 px: a 2048 x 1536 frame becomes 1024 x 768,
#: where a 0.05%-area defect still covers ~2.5 x 2.5 patches of 8 px (one at the 392 px squash). The
#: train patch matrix and the bank grow with the tile count: 40 such frames at 1024 took 6.6 GB and
#: a 8.6k bank (docs/quality.md §8); at 2048 (35 tiles) about four times that, more than a 24 GB machine.
DEFAULT_TILE_MAX_SIDE = 1024
#: ``tile``: the least overlap (pixels) of neighbouring tiles; the tiles of an axis are spread
#: evenly so that they end at its edges, which can make the overlap larger. 64 px (16% of a
#: 392 px tile) gives every patch near a tile's border a second, interior view in the blend.
DEFAULT_TILE_OVERLAP = 64
#: Largest resize side of a feature space (bundles with larger ones are refused on import).
MAX_IMAGE_SIDE = 4096
#: Dimension D of the projected patch vectors, and the seed of the projection matrix W.
DEFAULT_DIM = 512
MAX_DIM = 1 << 16
DEFAULT_PROJECTION_SEED = 42

#: What runs the backbone of the registry's own extractor (``registry infer``, ``serve``, ``eval``,
#: ``bench``): ``torch`` (the reference), or the exported feature graph on ``onnx`` (ONNX Runtime)
#: or ``openvino`` (f32 precision hint; both need ``pip install -e '.[deploy]'``); ``auto`` (the
#: default) picks OpenVINO where installed, else ONNX Runtime, else torch: measured faster with
#: scores equal within 1e-4 relative and no decision changed (docs/performance.md). The
#: ``--backbone-runtime`` option sets it per command; :data:`BACKBONE_RUNTIME_ENV` overrides the
#: default (the test suite pins ``torch`` with it).
BACKBONE_RUNTIMES = ("auto", "torch", "onnx", "openvino")
DEFAULT_BACKBONE_RUNTIME = "auto"
BACKBONE_RUNTIME_ENV = "STRUCTCORE_BACKBONE_RUNTIME"
#: ``auto``'s order of preference: (backbone runtime, the modules it needs: the graph is exported with onnx).
_AUTO_BACKBONE_RUNTIMES = (("openvino", ("openvino", "onnx")), ("onnx", ("onnxruntime", "onnx")))


def backbone_runtime(value: str | None = None) -> str:
    """The backbone runtime that runs: ``value``, else ``$STRUCTCORE_BACKBONE_RUNTIME``, else ``auto``.

    ``auto`` resolves to the first installed of OpenVINO, ONNX Runtime (each with onnx, the
    graph's exporter: the ``deploy`` extra), and torch.
    """
    chosen = (value if value is not None else os.environ.get(BACKBONE_RUNTIME_ENV, "")).strip().lower()
    chosen = chosen or DEFAULT_BACKBONE_RUNTIME
    if chosen not in BACKBONE_RUNTIMES:
        source = "--backbone-runtime" if value is not None else f"${BACKBONE_RUNTIME_ENV}"
        msg = f"{source} must be one of {', '.join(BACKBONE_RUNTIMES)}, got {chosen!r}"
        raise ValueError(msg)
    if chosen != "auto":
        return chosen
    for runtime, modules in _AUTO_BACKBONE_RUNTIMES:
        if all(importlib.util.find_spec(module) is not None for module in modules):
            return runtime
    return "torch"


#: Share of a category's train patch vectors kept in its memory bank (greedy k-center coreset).
DEFAULT_CORESET_RATIO = 0.01
#: Neighbours averaged per patch score.
DEFAULT_K = 5
#: Calibration modes (method.md "Calibration bias", docs/calibration.md) and the default
#: (docs/quality.md has the measurements behind it).
CALIBRATION_MODES = ("loo", "in-sample", "holdout", "mixed")
DEFAULT_CALIBRATION = "mixed"
DEFAULT_HOLDOUT_RATIO = 0.2
#: StructCore scorings (:mod:`structcore.scoring`): ``robust`` (median/MAD, one-sided) and ``paper``.
SCORING_MODES = ("robust", "paper")
DEFAULT_SCORING = "robust"
#: Rules that choose a category's hybrid threshold from its leave-one-out train-good scores
#: (:mod:`structcore.thresholds`; docs/calibration.md "Thresholds" has the evidence behind the
#: default), the default target false-reject rate, and its upper bound.
THRESHOLD_RULES = ("robust-conformal", "robust-tail", "conformal", "tail", "quantile")
DEFAULT_THRESHOLD_RULE = "robust-conformal"
#: How ``registry threshold`` records an operating point it set without a train-good rule (a
#: threshold version's stored rule; never a fit setting): a value, or a labelled folder's
#: threshold at an FRR or at the F1 maximum.
OPERATING_POINT_RULES = ("value", "labelled-frr", "labelled-f1")
DEFAULT_FRR = 0.01
MAX_FRR = 0.5
#: ``registry eval --protocol continual`` variants: categories added step by step, or one category
#: grown by ``registry update`` step by step; and the update variant's steps (25% of the train images each).
CONTINUAL_VARIANTS = ("categories", "update")
DEFAULT_UPDATE_STEPS = 4
#: Routing prototypes K per category, and the quantile of train route scores behind ``unknown``.
DEFAULT_PROTOTYPES = 64
DEFAULT_ROUTE_QUANTILE = 0.995
#: Image statistics of patch-to-prototype distances that may decide ``unknown`` (docs/open-set.md).
UNKNOWN_STATISTICS = ("quantile-30", "far-share", "low-mean-50", "low-mean-75", "median", "mean")
DEFAULT_UNKNOWN_STATISTIC = "quantile-30"
#: Quantile of the leave-one-out train patch distances beyond which a patch is far.
DEFAULT_FAR_QUANTILE = 0.9
#: ``far-share``: share of far patches beyond which an image is unknown.
DEFAULT_FAR_SHARE = 0.5
#: For ``mean``, ``median`` and ``low-mean-<N>``: factor on their train quantile.
DEFAULT_UNKNOWN_MARGIN = 1.2
#: Gaussian blur of the anomaly map (pixels of the crop).
DEFAULT_SIGMA = 4.0
#: Dimension of the coreset's distance proxy (``None``: exact distances).
DEFAULT_PROXY_DIM = 128
BANK_DTYPES = ("float32", "float16")
DEFAULT_BANK_DTYPE = "float32"
#: kNN index of a bank: ``flat`` (exact) or ``hnsw`` (approximate).
INDEX_KINDS = ("flat", "hnsw")
DEFAULT_INDEX = "flat"
#: Coreset algorithms (:mod:`structcore.coreset`).
CORESET_METHODS = ("auto", "exact", "approx")
DEFAULT_CORESET_METHOD = "auto"
#: Seed of the coreset, prototypes and holdout split.
DEFAULT_SEED = 42
#: Largest seed: seeds are stored in SQLite's signed 64-bit integers.
MAX_SEED = (1 << 63) - 1
#: Images per backbone call.
DEFAULT_BATCH_SIZE = 8
#: Defect regions reported per image (largest first; ``registry infer --max-regions``).
DEFAULT_MAX_REGIONS = 10
#: Largest ``--max-regions``.
MAX_REGIONS = 10_000


# ----------------------------------------------------------------------------- constraints
class InvalidSettingError(ValueError):
    """A setting outside its allowed values; names the parameter, the value and what is allowed.

    Attributes:
        parameter: the parameter's name (``coreset_ratio``), or its command-line option.
        value: the value given.
        allowed: what the parameter accepts, in words (``a number in (0, 1]``).
    """

    def __init__(self, parameter: str, value: object, allowed: str):
        self.parameter = parameter
        self.value = value
        self.allowed = allowed
        super().__init__(f"{parameter} must be {allowed}, got {value!r}")


class Constraint:
    """One kind of allowed value; a parameter accepts a value that meets any of its constraints."""

    def is_satisfied_by(self, value: object) -> bool:  # pragma: no cover - abstract
        raise NotImplementedError

    def describe(self) -> str:  # pragma: no cover - abstract
        raise NotImplementedError


@dataclass(frozen=True)
class Interval(Constraint):
    """An integer (``integer=True``) or a finite real number in a range; ``None`` bounds are open.

    ``closed`` is ``"both"``, ``"left"``, ``"right"`` or ``"neither"`` (scikit-learn's spelling).
    Booleans are not numbers here; numpy scalars are (they register with :mod:`numbers`).
    """

    integer: bool
    low: float | None = None
    high: float | None = None
    closed: str = "both"

    def is_satisfied_by(self, value: object) -> bool:
        if isinstance(value, bool):
            return False
        if self.integer:  # compared as Python integers: exact up to MAX_SEED and beyond
            return isinstance(value, numbers.Integral) and self._within(int(value))
        return isinstance(value, numbers.Real) and math.isfinite(float(value)) and self._within(float(value))

    def _within(self, number: float) -> bool:
        if self.low is not None and not (number >= self.low if self.closed in ("both", "left") else number > self.low):
            return False
        return self.high is None or (number <= self.high if self.closed in ("both", "right") else number < self.high)

    def describe(self) -> str:
        kind = "an integer" if self.integer else "a number"
        low, high = _bound(self.low), _bound(self.high)
        if self.low is None and self.high is None:
            return kind
        if self.high is None:
            return f"{kind} {'>=' if self.closed in ('both', 'left') else '>'} {low}"
        if self.low is None:
            return f"{kind} {'<=' if self.closed in ('both', 'right') else '<'} {high}"
        left = "[" if self.closed in ("both", "left") else "("
        right = "]" if self.closed in ("both", "right") else ")"
        return f"{kind} in {left}{low}, {high}{right}"


def _bound(value: float | None) -> str:
    if value is None:
        return ""
    if float(value).is_integer():
        return str(int(value))
    return f"{value:g}"


@dataclass(frozen=True)
class Options(Constraint):
    """One of a fixed set of strings."""

    values: tuple[str, ...]

    def is_satisfied_by(self, value: object) -> bool:
        return isinstance(value, str) and value in self.values

    def describe(self) -> str:
        return f"one of {', '.join(self.values)}"


@dataclass(frozen=True)
class Text(Constraint):
    """A non-empty string."""

    def is_satisfied_by(self, value: object) -> bool:
        return isinstance(value, str) and bool(value.strip())

    def describe(self) -> str:
        return "a non-empty name"


@dataclass(frozen=True)
class PathLike(Constraint):
    """A file-system path (``str`` or :class:`os.PathLike`)."""

    def is_satisfied_by(self, value: object) -> bool:
        return isinstance(value, str | os.PathLike) and bool(os.fspath(value))

    def describe(self) -> str:
        return "a path"


@dataclass(frozen=True)
class NoneValue(Constraint):
    """``None`` (the parameter is optional)."""

    def is_satisfied_by(self, value: object) -> bool:
        return value is None

    def describe(self) -> str:
        return "None"


@dataclass(frozen=True)
class Parameter:
    """One setting: its default, its allowed values, its help text and its command-line option.

    Attributes:
        name: the keyword (``coreset_ratio``; ``index`` for the kNN index).
        default: the default value (the only place it is written).
        constraints: a value is allowed when it meets any of them.
        help: the command line's help text (``cli/options.py`` uses it as is).
        option: the command-line option (``--knn-index``), ``None`` where no command exposes it.
        stored: stored with a category version (``False`` for run settings such as the batch size).
    """

    name: str
    default: Any
    constraints: tuple[Constraint, ...]
    help: str
    option: str | None = None
    stored: bool = True

    @property
    def allowed(self) -> str:
        """What the parameter accepts, in words."""
        return " or ".join(constraint.describe() for constraint in self.constraints)

    @property
    def label(self) -> str:
        """The command-line option where there is one, else the keyword."""
        return self.option or self.name

    def problem(self, value: object, *, as_option: bool = False) -> InvalidSettingError | None:
        """The error for ``value``, or ``None`` when it is allowed."""
        if any(constraint.is_satisfied_by(value) for constraint in self.constraints):
            return None
        return InvalidSettingError(self.label if as_option else self.name, value, self.allowed)


def _table(*parameters: Parameter) -> dict[str, Parameter]:
    return {parameter.name: parameter for parameter in parameters}


_POSITIVE_INT = Interval(integer=True, low=1)
_SEED = Interval(integer=True, low=0, high=MAX_SEED)
_SHARE_OPEN = Interval(integer=False, low=0, high=1, closed="neither")

#: ``registry init``: the feature space of a registry.
FEATURE_SPACE_PARAMETERS: dict[str, Parameter] = _table(
    Parameter(
        "backbone",
        DEFAULT_BACKBONE,
        (Text(),),
        f"Backbone: {BUILTIN_BACKBONES[0]} (embedded weights) or {BUILTIN_BACKBONES[1]} (needs --weights).",
        "--backbone",
    ),
    Parameter(
        "weights",
        None,
        (NoneValue(), PathLike()),
        "Weights file or folder (needed for dinov2-*).",
        "--weights",
    ),
    Parameter(
        "resize",
        DEFAULT_RESIZE,
        (Interval(integer=True, low=1, high=MAX_IMAGE_SIDE),),
        f"Resize side before the crop ({PAPER_RESIZE} with --crop {PAPER_CROP}: the paper's).",
        "--resize",
    ),
    Parameter(
        "crop",
        DEFAULT_CROP,
        (Interval(integer=True, low=1, high=MAX_IMAGE_SIDE),),
        "Centre-crop side, at most --resize (equal to --resize: no crop, the default).",
        "--crop",
    ),
    Parameter(
        "input_geometry",
        DEFAULT_INPUT_GEOMETRY,
        (Options(INPUT_GEOMETRIES),),
        "How images reach the model's square: squash (resize, aspect ignored), fit (aspect kept, "
        "long side to --resize, the padding ignored) or tile (own resolution, long side capped at "
        "--tile-max-side, cut into overlapping --resize tiles); fit and tile need --crop equal to --resize.",
        "--geometry",
    ),
    Parameter(
        "tile_max_side",
        DEFAULT_TILE_MAX_SIDE,
        (Interval(integer=True, low=1, high=MAX_IMAGE_SIDE),),
        "With --geometry tile: longer image sides are scaled down to this first (aspect kept).",
        "--tile-max-side",
    ),
    Parameter(
        "tile_overlap",
        DEFAULT_TILE_OVERLAP,
        (Interval(integer=True, low=0, high=MAX_IMAGE_SIDE),),
        "With --geometry tile: the least overlap of neighbouring tiles in pixels (below --resize).",
        "--tile-overlap",
    ),
    Parameter(
        "dim",
        DEFAULT_DIM,
        (Interval(integer=True, low=1, high=MAX_DIM),),
        "Dimension D of the projected patch vectors.",
        "--dim",
    ),
    Parameter("seed", DEFAULT_PROJECTION_SEED, (_SEED,), "Seed of the projection matrix W.", "--seed"),
)

#: ``add-category``, ``add-categories``, ``eval`` and the Ray path: how a category is fitted.
#: Every :class:`~structcore.model.CategoryModel` constructor setting, plus the batch size.
FIT_PARAMETERS: dict[str, Parameter] = _table(
    Parameter(
        "coreset_ratio",
        DEFAULT_CORESET_RATIO,
        (Interval(integer=False, low=0, high=1, closed="right"),),
        "Share of train patch vectors kept in the bank.",
        "--coreset-ratio",
    ),
    Parameter("k", DEFAULT_K, (_POSITIVE_INT,), "Neighbours averaged per patch score."),
    Parameter(
        "calibration",
        DEFAULT_CALIBRATION,
        (Options(CALIBRATION_MODES),),
        "Calibration: mixed (statistics in-sample, thresholds loo), loo, in-sample or holdout.",
        "--calibration",
    ),
    Parameter(
        "holdout_ratio",
        DEFAULT_HOLDOUT_RATIO,
        (Interval(integer=False, low=0, high=1),),
        "Share of train images kept out of the bank with holdout calibration.",
    ),
    Parameter("n_prototypes", DEFAULT_PROTOTYPES, (_POSITIVE_INT,), "Routing prototypes per category."),
    Parameter(
        "proxy_dim", DEFAULT_PROXY_DIM, (NoneValue(), _POSITIVE_INT), "Dimension of the coreset's distance proxy."
    ),
    Parameter(
        "route_quantile",
        DEFAULT_ROUTE_QUANTILE,
        (Interval(integer=False, low=0, high=1, closed="right"),),
        "Quantile of train route scores behind the unknown thresholds.",
    ),
    Parameter(
        "unknown_statistic",
        DEFAULT_UNKNOWN_STATISTIC,
        (Options(UNKNOWN_STATISTICS),),
        "Image statistic of patch-to-prototype distances behind unknown.",
    ),
    Parameter(
        "unknown_margin",
        DEFAULT_UNKNOWN_MARGIN,
        (Interval(integer=False, low=1),),
        "Factor on the train quantile of mean, median and low-mean-<N>.",
    ),
    Parameter(
        "far_quantile",
        DEFAULT_FAR_QUANTILE,
        (_SHARE_OPEN,),
        "Quantile of leave-one-out train patch distances beyond which a patch is far.",
    ),
    Parameter("far_share", DEFAULT_FAR_SHARE, (_SHARE_OPEN,), "far-share: share of far patches behind unknown."),
    Parameter("sigma", DEFAULT_SIGMA, (Interval(integer=False, low=0),), "Gaussian blur of the anomaly map."),
    Parameter("bank_dtype", DEFAULT_BANK_DTYPE, (Options(BANK_DTYPES),), "Storage type of the bank."),
    Parameter(
        "index",
        DEFAULT_INDEX,
        (Options(INDEX_KINDS),),
        "kNN index of the bank: flat (exact) or hnsw (approximate; pays off at 5-10% banks).",
        "--knn-index",
    ),
    Parameter("seed", DEFAULT_SEED, (_SEED,), "Seed of the coreset, prototypes and holdout split.", "--seed"),
    Parameter("coreset_method", DEFAULT_CORESET_METHOD, (Options(CORESET_METHODS),), "Coreset algorithm."),
    Parameter(
        "scoring",
        DEFAULT_SCORING,
        (Options(SCORING_MODES),),
        "StructCore scoring: robust (median/MAD, one-sided) or paper (its exact equations).",
        "--scoring",
    ),
    Parameter(
        "threshold_rule",
        DEFAULT_THRESHOLD_RULE,
        (Options(THRESHOLD_RULES),),
        "Threshold from the train-good scores: robust-conformal (default), robust-tail, conformal, tail, "
        "or quantile (the 99.5% quantile of versions fitted before; docs/calibration.md).",
        "--threshold-rule",
    ),
    Parameter(
        "threshold_frr",
        DEFAULT_FRR,
        (Interval(integer=False, low=0, high=MAX_FRR, closed="right"),),
        f"Target false-reject rate of the threshold rule, in (0, {MAX_FRR}].",
        "--threshold-frr",
    ),
    Parameter("batch_size", DEFAULT_BATCH_SIZE, (_POSITIVE_INT,), "Images per backbone call.", "--batch-size", False),
)

#: ``registry infer`` / ``serve`` (``eval`` and ``bench`` take ``backbone_runtime`` too): how images are
#: scored and described (not stored with a category).
INFER_PARAMETERS: dict[str, Parameter] = _table(
    Parameter(
        "backbone_runtime",
        DEFAULT_BACKBONE_RUNTIME,
        (Options(BACKBONE_RUNTIMES),),
        "What runs the backbone: auto (OpenVINO, else ONNX Runtime, else torch; same scores within 1e-4 "
        f"relative), torch, onnx or openvino. ${BACKBONE_RUNTIME_ENV} sets the default.",
        "--backbone-runtime",
        False,
    ),
    Parameter(
        "max_regions",
        DEFAULT_MAX_REGIONS,
        (Interval(integer=True, low=0, high=MAX_REGIONS),),
        "Defect regions reported per image, largest first (0: none).",
        "--max-regions",
        False,
    ),
)

#: The fit settings that :class:`~structcore.model.CategoryModel` takes (all but the run settings).
MODEL_PARAMETERS = tuple(name for name, parameter in FIT_PARAMETERS.items() if parameter.stored)


def validate_parameters(
    table: Mapping[str, Parameter], values: Mapping[str, object], *, as_options: bool = False
) -> None:
    """Raise :class:`InvalidSettingError` for the first value of ``values`` that ``table`` refuses.

    An unknown name is refused too. ``as_options`` names parameters by their command-line option.
    """
    for problem in check_parameters(table, values, as_options=as_options):
        raise problem


def check_parameters(
    table: Mapping[str, Parameter], values: Mapping[str, object], *, as_options: bool = False
) -> list[InvalidSettingError]:
    """Every value of ``values`` that ``table`` refuses (an unknown name included), in order."""
    problems: list[InvalidSettingError] = []
    for name, value in values.items():
        parameter = table.get(name)
        if parameter is None:
            problems.append(InvalidSettingError(str(name), value, f"one of the settings {', '.join(table)}"))
            continue
        problem = parameter.problem(value, as_option=as_options)
        if problem is not None:
            problems.append(problem)
    return problems


class _Settings:
    """Shared behaviour of the settings dataclasses."""

    parameters: ClassVar[Mapping[str, Parameter]]

    def to_dict(self) -> dict[str, Any]:
        """The settings by name."""
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}  # type: ignore[arg-type]

    def problems(self, *, as_options: bool = False) -> list[InvalidSettingError]:
        """Every refused setting (empty when all are allowed)."""
        return check_parameters(self.parameters, self.to_dict(), as_options=as_options)

    @classmethod
    def from_values(cls, values: Mapping[str, object]) -> Any:
        """The settings from a mapping (unknown names refused); missing ones take their default."""
        unknown = [name for name in values if name not in cls.parameters]
        if unknown:
            raise InvalidSettingError(
                str(unknown[0]), values[unknown[0]], f"one of the settings {', '.join(cls.parameters)}"
            )
        return cls(**values)


@dataclass(frozen=True)
class FeatureSpaceSettings(_Settings):
    """The settings of a registry's feature space (:data:`FEATURE_SPACE_PARAMETERS`)."""

    backbone: str = DEFAULT_BACKBONE
    weights: str | os.PathLike[str] | None = None
    resize: int = DEFAULT_RESIZE
    crop: int = DEFAULT_CROP
    input_geometry: str = DEFAULT_INPUT_GEOMETRY
    tile_max_side: int = DEFAULT_TILE_MAX_SIDE
    tile_overlap: int = DEFAULT_TILE_OVERLAP
    dim: int = DEFAULT_DIM
    seed: int = DEFAULT_PROJECTION_SEED

    parameters: ClassVar[Mapping[str, Parameter]] = FEATURE_SPACE_PARAMETERS

    def problems(self, *, as_options: bool = False) -> list[InvalidSettingError]:
        """Every refused setting; a crop larger than the resize side is refused as well."""
        found = super().problems(as_options=as_options)
        if not found and self.crop > self.resize:
            label = FEATURE_SPACE_PARAMETERS["crop"].label if as_options else "crop"
            found.append(InvalidSettingError(label, self.crop, f"an integer in [1, resize = {self.resize}]"))
        if not found and self.input_geometry in {"fit", "tile"} and self.crop != self.resize:
            label = FEATURE_SPACE_PARAMETERS["crop"].label if as_options else "crop"
            wanted = f"equal to resize ({self.resize}) with --geometry {self.input_geometry}"
            found.append(InvalidSettingError(label, self.crop, wanted))
        if not found and self.input_geometry == "tile" and self.tile_overlap >= self.resize:
            label = FEATURE_SPACE_PARAMETERS["tile_overlap"].label if as_options else "tile_overlap"
            found.append(InvalidSettingError(label, self.tile_overlap, f"an integer in [0, resize = {self.resize})"))
        return found

    def validate(self, *, as_options: bool = False) -> FeatureSpaceSettings:
        """``self`` when every setting is allowed; raises :class:`InvalidSettingError` otherwise."""
        for problem in self.problems(as_options=as_options):
            raise problem
        return self


@dataclass(frozen=True)
class FitSettings(_Settings):
    """How a category is fitted (:data:`FIT_PARAMETERS`): the model's settings and the batch size."""

    coreset_ratio: float = DEFAULT_CORESET_RATIO
    k: int = DEFAULT_K
    calibration: str = DEFAULT_CALIBRATION
    holdout_ratio: float = DEFAULT_HOLDOUT_RATIO
    n_prototypes: int = DEFAULT_PROTOTYPES
    proxy_dim: int | None = DEFAULT_PROXY_DIM
    route_quantile: float = DEFAULT_ROUTE_QUANTILE
    unknown_statistic: str = DEFAULT_UNKNOWN_STATISTIC
    unknown_margin: float = DEFAULT_UNKNOWN_MARGIN
    far_quantile: float = DEFAULT_FAR_QUANTILE
    far_share: float = DEFAULT_FAR_SHARE
    sigma: float = DEFAULT_SIGMA
    bank_dtype: str = DEFAULT_BANK_DTYPE
    index: str = DEFAULT_INDEX
    seed: int = DEFAULT_SEED
    coreset_method: str = DEFAULT_CORESET_METHOD
    scoring: str = DEFAULT_SCORING
    threshold_rule: str = DEFAULT_THRESHOLD_RULE
    threshold_frr: float = DEFAULT_FRR
    batch_size: int = DEFAULT_BATCH_SIZE

    parameters: ClassVar[Mapping[str, Parameter]] = FIT_PARAMETERS

    def validate(self, *, as_options: bool = False) -> FitSettings:
        """``self`` when every setting is allowed; raises :class:`InvalidSettingError` otherwise."""
        for problem in self.problems(as_options=as_options):
            raise problem
        return self

    def model_params(self) -> dict[str, Any]:
        """The :class:`~structcore.model.CategoryModel` keyword arguments (no run settings)."""
        return {name: getattr(self, name) for name in MODEL_PARAMETERS}


def fit_parameter_defaults() -> dict[str, Any]:
    """Every fit setting's default, by name."""
    return {name: parameter.default for name, parameter in FIT_PARAMETERS.items()}


__all__ = [
    "BANK_DTYPES",
    "BUILTIN_BACKBONES",
    "CALIBRATION_MODES",
    "CONTINUAL_VARIANTS",
    "CORESET_METHODS",
    "DEFAULT_BACKBONE",
    "DEFAULT_BANK_DTYPE",
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_CALIBRATION",
    "DEFAULT_CORESET_METHOD",
    "DEFAULT_CORESET_RATIO",
    "DEFAULT_CROP",
    "DEFAULT_DIM",
    "DEFAULT_FAR_QUANTILE",
    "DEFAULT_FAR_SHARE",
    "DEFAULT_FRR",
    "DEFAULT_HOLDOUT_RATIO",
    "DEFAULT_INDEX",
    "DEFAULT_INPUT_GEOMETRY",
    "DEFAULT_K",
    "DEFAULT_MAX_REGIONS",
    "DEFAULT_PROJECTION_SEED",
    "DEFAULT_PROTOTYPES",
    "DEFAULT_PROXY_DIM",
    "DEFAULT_RESIZE",
    "DEFAULT_ROUTE_QUANTILE",
    "DEFAULT_SCORING",
    "DEFAULT_SEED",
    "DEFAULT_SIGMA",
    "DEFAULT_THRESHOLD_RULE",
    "DEFAULT_TILE_MAX_SIDE",
    "DEFAULT_TILE_OVERLAP",
    "DEFAULT_UNKNOWN_MARGIN",
    "DEFAULT_UNKNOWN_STATISTIC",
    "DEFAULT_UPDATE_STEPS",
    "FEATURE_SPACE_PARAMETERS",
    "FIT_PARAMETERS",
    "INDEX_KINDS",
    "INFER_PARAMETERS",
    "INPUT_GEOMETRIES",
    "MAX_DIM",
    "MAX_FRR",
    "MAX_IMAGE_SIDE",
    "MAX_REGIONS",
    "MAX_SEED",
    "MODEL_PARAMETERS",
    "OPERATING_POINT_RULES",
    "PAPER_CROP",
    "PAPER_RESIZE",
    "SCORING_MODES",
    "THRESHOLD_RULES",
    "UNKNOWN_STATISTICS",
    "Constraint",
    "FeatureSpaceSettings",
    "FitSettings",
    "Interval",
    "InvalidSettingError",
    "NoneValue",
    "Options",
    "Parameter",
    "PathLike",
    "Text",
    "check_parameters",
    "fit_parameter_defaults",
    "validate_parameters",
]
