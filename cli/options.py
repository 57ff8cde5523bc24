"""Command-line options of the model's settings, built from :mod:`structcore.settings` (declared once).

Every fitting command (``add-category``, ``add-categories``, ``eval``) takes the fit options
below with the same names, defaults and help; ``init`` takes the feature-space ones. The
option name and help text come from the settings table, the default from
:class:`~structcore.settings.FitSettings` / :class:`~structcore.settings.FeatureSpaceSettings`,
so a setting is described in one place. Use them as ``coreset_ratio: CoresetRatioOption =
FIT_DEFAULTS.coreset_ratio`` and build the settings with :func:`fit_settings`, which turns a
refused value into one line naming the option (exit code 1, as the other input errors).

Standard library, Typer and :mod:`structcore.settings` only: ``registry list`` imports this module.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

from cli.common import InputError
from structcore.settings import (
    BACKBONE_RUNTIME_ENV,
    FEATURE_SPACE_PARAMETERS,
    FIT_PARAMETERS,
    INFER_PARAMETERS,
    FeatureSpaceSettings,
    FitSettings,
    InvalidSettingError,
    Parameter,
    backbone_runtime,
)

#: The defaults of the options (the settings' own).
FIT_DEFAULTS = FitSettings()
FEATURE_SPACE_DEFAULTS = FeatureSpaceSettings()

#: The fit settings every fitting command exposes as options, by settings name.
FIT_OPTIONS = (
    "coreset_ratio",
    "calibration",
    "scoring",
    "index",
    "seed",
    "threshold_rule",
    "threshold_frr",
    "batch_size",
)


def _option(parameter: Parameter) -> Any:
    """A Typer option named and described by the settings table."""
    if parameter.option is None:  # pragma: no cover - a programming error, caught by the tests
        msg = f"setting {parameter.name!r} has no command-line option"
        raise ValueError(msg)
    return typer.Option(parameter.option, help=parameter.help)


# ----------------------------------------------------------------------------- fit (per category)
CoresetRatioOption = Annotated[float, _option(FIT_PARAMETERS["coreset_ratio"])]
CalibrationOption = Annotated[str, _option(FIT_PARAMETERS["calibration"])]
ScoringOption = Annotated[str, _option(FIT_PARAMETERS["scoring"])]
KnnIndexOption = Annotated[str, _option(FIT_PARAMETERS["index"])]
FitSeedOption = Annotated[int, _option(FIT_PARAMETERS["seed"])]
ThresholdRuleOption = Annotated[str, _option(FIT_PARAMETERS["threshold_rule"])]
ThresholdFrrOption = Annotated[float, _option(FIT_PARAMETERS["threshold_frr"])]
BatchSizeOption = Annotated[int, _option(FIT_PARAMETERS["batch_size"])]

# ----------------------------------------------------------------------------- feature space (registry init)
BackboneOption = Annotated[str, _option(FEATURE_SPACE_PARAMETERS["backbone"])]
WeightsOption = Annotated[Path | None, _option(FEATURE_SPACE_PARAMETERS["weights"])]
ResizeOption = Annotated[int, _option(FEATURE_SPACE_PARAMETERS["resize"])]
CropOption = Annotated[int, _option(FEATURE_SPACE_PARAMETERS["crop"])]
GeometryOption = Annotated[str, _option(FEATURE_SPACE_PARAMETERS["input_geometry"])]
TileMaxSideOption = Annotated[int, _option(FEATURE_SPACE_PARAMETERS["tile_max_side"])]
TileOverlapOption = Annotated[int, _option(FEATURE_SPACE_PARAMETERS["tile_overlap"])]
DimOption = Annotated[int, _option(FEATURE_SPACE_PARAMETERS["dim"])]
ProjectionSeedOption = Annotated[int, _option(FEATURE_SPACE_PARAMETERS["seed"])]

# ----------------------------------------------------------------------------- scoring (infer, serve)
MaxRegionsOption = Annotated[int, _option(INFER_PARAMETERS["max_regions"])]
#: ``None`` (not given) keeps ``$STRUCTCORE_BACKBONE_RUNTIME``, else ``auto``.
BackboneRuntimeOption = Annotated[str | None, _option(INFER_PARAMETERS["backbone_runtime"])]


def use_backbone_runtime(value: str | None) -> str:
    """Apply ``--backbone-runtime`` to this command and the processes it starts; the runtime that runs.

    The extractor reads :data:`~structcore.settings.BACKBONE_RUNTIME_ENV`, so setting it here reaches
    every extractor of the command: the server's workers, ``bench``'s child process, Ray's local workers.
    """
    if value is not None:
        problem = INFER_PARAMETERS["backbone_runtime"].problem(value, as_option=True)
        if problem is not None:
            raise InputError(str(problem))
        os.environ[BACKBONE_RUNTIME_ENV] = value
    try:
        return backbone_runtime()
    except ValueError as error:
        raise InputError(str(error)) from None


def max_regions_setting(value: int) -> int:
    """``--max-regions`` checked against the settings table (one line naming the option when refused)."""
    problem = INFER_PARAMETERS["max_regions"].problem(value, as_option=True)
    if problem is not None:
        raise InputError(str(problem))
    return value


def fit_settings(**values: Any) -> FitSettings:
    """The validated :class:`FitSettings` of a command's options (the others keep their defaults).

    Raises:
        InputError: a value outside its allowed values; the message names the option
            (``--coreset-ratio must be a number in (0, 1], got 2.0``).
    """
    try:
        return FitSettings.from_values(values).validate(as_options=True)
    except InvalidSettingError as error:
        raise InputError(str(error)) from None


def feature_space_settings(**values: Any) -> FeatureSpaceSettings:
    """The validated :class:`FeatureSpaceSettings` of ``registry init``'s options (see :func:`fit_settings`)."""
    try:
        return FeatureSpaceSettings.from_values(values).validate(as_options=True)
    except InvalidSettingError as error:
        raise InputError(str(error)) from None


__all__ = [
    "FEATURE_SPACE_DEFAULTS",
    "FIT_DEFAULTS",
    "FIT_OPTIONS",
    "BackboneOption",
    "BackboneRuntimeOption",
    "BatchSizeOption",
    "CalibrationOption",
    "CoresetRatioOption",
    "CropOption",
    "DimOption",
    "FitSeedOption",
    "GeometryOption",
    "KnnIndexOption",
    "MaxRegionsOption",
    "ProjectionSeedOption",
    "ResizeOption",
    "ScoringOption",
    "ThresholdFrrOption",
    "ThresholdRuleOption",
    "WeightsOption",
    "feature_space_settings",
    "fit_settings",
    "max_regions_setting",
    "use_backbone_runtime",
]
