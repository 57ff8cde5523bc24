"""structcore.settings: one table of the model's settings, one validate(), one clear error per bad value."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys

import numpy as np
import pytest

from structcore.model import CategoryModel
from structcore.settings import (
    FEATURE_SPACE_PARAMETERS,
    FIT_PARAMETERS,
    MAX_IMAGE_SIDE,
    MAX_SEED,
    MODEL_PARAMETERS,
    FeatureSpaceSettings,
    FitSettings,
    Interval,
    InvalidSettingError,
    check_parameters,
)

#: (parameter, bad value, what the message must say is allowed), for every fit setting.
BAD_FIT = [
    ("coreset_ratio", 0.0, "a number in (0, 1]"),
    ("coreset_ratio", 1.5, "a number in (0, 1]"),
    ("coreset_ratio", float("nan"), "a number in (0, 1]"),
    ("coreset_ratio", "0.1", "a number in (0, 1]"),
    ("coreset_ratio", True, "a number in (0, 1]"),
    ("k", 0, "an integer >= 1"),
    ("k", 2.0, "an integer >= 1"),
    ("calibration", "oob", "one of loo, in-sample, holdout, mixed"),
    ("holdout_ratio", -0.1, "a number in [0, 1]"),
    ("n_prototypes", 0, "an integer >= 1"),
    ("proxy_dim", 0, "None or an integer >= 1"),
    ("route_quantile", 0.0, "a number in (0, 1]"),
    ("unknown_statistic", "quantile-31", "one of quantile-30, far-share, low-mean-50, low-mean-75, median, mean"),
    ("unknown_margin", 0.5, "a number >= 1"),
    ("unknown_margin", float("inf"), "a number >= 1"),
    ("far_quantile", 1.0, "a number in (0, 1)"),
    ("far_share", 0.0, "a number in (0, 1)"),
    ("sigma", -1.0, "a number >= 0"),
    ("bank_dtype", "float64", "one of float32, float16"),
    ("index", "ivf", "one of flat, hnsw"),
    ("seed", -1, f"an integer in [0, {MAX_SEED}]"),
    ("seed", MAX_SEED + 1, f"an integer in [0, {MAX_SEED}]"),
    ("coreset_method", "fast", "one of auto, exact, approx"),
    ("scoring", "fancy", "one of robust, paper"),
    ("threshold_rule", "value", "one of robust-conformal, robust-tail, conformal, tail, quantile"),
    ("threshold_frr", 0.0, "a number in (0, 0.5]"),
    ("threshold_frr", 0.6, "a number in (0, 0.5]"),
    ("batch_size", 0, "an integer >= 1"),
]

BAD_FEATURE_SPACE = [
    ("backbone", "", "a non-empty name"),
    ("weights", 3, "None or a path"),
    ("resize", 0, f"an integer in [1, {MAX_IMAGE_SIDE}]"),
    ("resize", MAX_IMAGE_SIDE + 1, f"an integer in [1, {MAX_IMAGE_SIDE}]"),
    ("crop", 392.0, f"an integer in [1, {MAX_IMAGE_SIDE}]"),
    ("input_geometry", "stretch", "one of squash, fit, tile"),
    ("tile_max_side", 0, "an integer in [1, 4096]"),
    ("tile_overlap", -1, "an integer in [0, 4096]"),
    ("dim", 0, "an integer in [1, 65536]"),
    ("seed", -1, f"an integer in [0, {MAX_SEED}]"),
]


@pytest.mark.parametrize(("name", "value", "allowed"), BAD_FIT, ids=[f"{n}={v!r}" for n, v, _ in BAD_FIT])
def test_each_bad_fit_setting_gives_one_clear_error(name: str, value: object, allowed: str) -> None:
    with pytest.raises(InvalidSettingError) as raised:
        FitSettings(**{name: value}).validate()  # type: ignore[arg-type]
    error = raised.value
    assert (error.parameter, error.allowed) == (name, allowed)
    assert str(error) == f"{name} must be {allowed}, got {value!r}"
    assert "\n" not in str(error)
    assert isinstance(error, ValueError)  # the commands' one-line error path catches ValueError
    assert len(FitSettings(**{name: value}).problems()) == 1  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "value", "allowed"), BAD_FEATURE_SPACE, ids=[f"{n}={v!r}" for n, v, _ in BAD_FEATURE_SPACE]
)
def test_each_bad_feature_space_setting_gives_one_clear_error(name: str, value: object, allowed: str) -> None:
    with pytest.raises(InvalidSettingError, match=r"^" + name + " must be ") as raised:
        FeatureSpaceSettings(**{name: value}).validate()  # type: ignore[arg-type]
    assert str(raised.value) == f"{name} must be {allowed}, got {value!r}"


def test_every_parameter_is_covered_by_a_bad_value() -> None:
    assert {name for name, _, _ in BAD_FIT} == set(FIT_PARAMETERS)
    assert {name for name, _, _ in BAD_FEATURE_SPACE} == set(FEATURE_SPACE_PARAMETERS)


def test_crop_larger_than_resize_is_refused() -> None:
    with pytest.raises(InvalidSettingError, match=r"^crop must be an integer in \[1, resize = 256\], got 392$"):
        FeatureSpaceSettings(resize=256, crop=392).validate()
    assert FeatureSpaceSettings(resize=448, crop=392).validate().crop == 392  # the paper's geometry


def test_fit_and_tile_geometries_take_no_crop_and_tiles_overlap_less_than_a_tile() -> None:
    with pytest.raises(InvalidSettingError, match=r"^--crop must be equal to resize \(448\) with --geometry fit"):
        FeatureSpaceSettings(resize=448, crop=392, input_geometry="fit").validate(as_options=True)
    assert FeatureSpaceSettings(input_geometry="fit").validate().input_geometry == "fit"
    with pytest.raises(InvalidSettingError, match=r"^--crop must be equal to resize \(448\) with --geometry tile"):
        FeatureSpaceSettings(resize=448, crop=392, input_geometry="tile").validate(as_options=True)
    with pytest.raises(InvalidSettingError, match=r"^--tile-overlap must be an integer in \[0, resize = 392\)"):
        FeatureSpaceSettings(input_geometry="tile", tile_overlap=392).validate(as_options=True)
    assert FeatureSpaceSettings(input_geometry="tile", tile_overlap=391).validate().tile_max_side == 1024


def test_options_name_the_command_line_flag() -> None:
    with pytest.raises(InvalidSettingError, match=r"^--knn-index must be one of flat, hnsw, got 'ivf'$"):
        FitSettings(index="ivf").validate(as_options=True)
    with pytest.raises(InvalidSettingError, match=r"^--coreset-ratio must be a number in \(0, 1\], got 2$"):
        FitSettings(coreset_ratio=2).validate(as_options=True)
    # a setting no command exposes keeps its own name
    with pytest.raises(InvalidSettingError, match=r"^k must be an integer >= 1, got 0$"):
        FitSettings(k=0).validate(as_options=True)


def test_defaults_are_valid_and_declared_once() -> None:
    assert FitSettings().validate() == FitSettings()
    assert FeatureSpaceSettings().validate() == FeatureSpaceSettings()
    assert FitSettings().to_dict() == {name: p.default for name, p in FIT_PARAMETERS.items()}
    assert FeatureSpaceSettings().to_dict() == {name: p.default for name, p in FEATURE_SPACE_PARAMETERS.items()}
    # CategoryModel takes exactly the stored fit settings, with the same defaults
    signature = inspect.signature(CategoryModel)
    assert tuple(signature.parameters) == MODEL_PARAMETERS
    assert {name: p.default for name, p in signature.parameters.items()} == FitSettings().model_params()
    assert CategoryModel().get_params() == FitSettings().model_params()


def test_registry_init_and_feature_space_defaults_come_from_the_table() -> None:
    from registry import Registry
    from structcore.features import new_feature_space

    init = inspect.signature(Registry.init).parameters
    for name in ("backbone", "weights", "resize", "crop", "dim", "seed"):
        assert init[name].default == FEATURE_SPACE_PARAMETERS[name].default, name
    space = inspect.signature(new_feature_space).parameters
    for name in ("resize", "crop", "dim", "seed"):
        assert space[name].default == FEATURE_SPACE_PARAMETERS[name].default, name


def test_numpy_scalars_are_numbers_and_unknown_names_are_refused() -> None:
    settings = FitSettings(coreset_ratio=np.float32(0.1), k=np.int64(3), seed=np.uint32(7))  # type: ignore[arg-type]
    assert settings.validate() is settings
    with pytest.raises(InvalidSettingError, match=r"^coreset must be one of the settings coreset_ratio, k, "):
        FitSettings.from_values({"coreset": 0.1})
    problems = check_parameters(FIT_PARAMETERS, {"k": 0, "sigma": -1.0, "scoring": "paper"})
    assert [problem.parameter for problem in problems] == ["k", "sigma"]


def test_interval_descriptions() -> None:
    assert Interval(integer=False, low=0, high=1, closed="right").describe() == "a number in (0, 1]"
    assert Interval(integer=False, low=0, high=0.5, closed="neither").describe() == "a number in (0, 0.5)"
    assert Interval(integer=True, low=1).describe() == "an integer >= 1"
    assert Interval(integer=False, high=2, closed="neither").describe() == "a number < 2"
    assert Interval(integer=True).describe() == "an integer"


def test_fit_refuses_bad_settings_before_any_work() -> None:
    vectors = np.zeros((4, 4, 8), dtype=np.float32)
    with pytest.raises(InvalidSettingError, match=r"^calibration must be one of loo, in-sample, holdout, mixed"):
        CategoryModel(calibration="oob").fit(vectors, (2, 2), 8)
    with pytest.raises(InvalidSettingError, match=r"^unknown_margin must be a number >= 1, got 0.5$"):
        CategoryModel(unknown_statistic="mean", unknown_margin=0.5).fit(vectors, (2, 2), 8)


def test_settings_module_imports_the_standard_library_only() -> None:
    """The command line builds its options from it: ``registry list`` must not pay for numpy."""
    code = (
        "import json, sys; import structcore.settings; "
        "print(json.dumps(sorted(m for m in ('numpy', 'torch', 'scipy', 'PIL') if m in sys.modules)))"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(completed.stdout) == []
