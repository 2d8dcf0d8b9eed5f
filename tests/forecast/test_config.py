"""Hyperparameters (SPEC.md §6), the inference configuration (§2) and the model signature.

SageMaker passes every hyperparameter as a string, so each is checked in its string form
as well as its native one; every invalid value must fail with a ConfigError that names the
field and the value.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest

from batchcast.errors import ConfigError
from batchcast.forecast import DeepARConfig, Frequency, InferenceConfig, ModelSpec
from batchcast.forecast.frequency import parse_frequency

REQUIRED = {"time_freq": "H", "context_length": "24", "prediction_length": "12", "epochs": "5"}

# SPEC.md §2, written out by hand.
SPEC_DEFAULT_INFERENCE = {
    "num_samples": 100,
    "output_types": ["mean", "quantiles"],
    "quantiles": ["0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7", "0.8", "0.9"],
}


def _config(**hyperparameters: Any) -> DeepARConfig:
    return DeepARConfig.from_hyperparameters({**REQUIRED, **hyperparameters})


# ---------------------------------------------------------------------------------------------
# DeepARConfig: valid values


def test_required_only_gives_sagemaker_defaults() -> None:
    config = _config()
    assert (config.time_freq, config.context_length, config.prediction_length, config.epochs) == (
        "H",
        24,
        12,
        5,
    )
    # SPEC.md §6 defaults
    assert config.num_cells == 40
    assert config.num_layers == 2
    assert config.likelihood == "student-T"
    assert config.dropout_rate == 0.1
    assert config.embedding_dimension == 10
    assert config.cardinality == "auto"
    assert config.num_dynamic_feat == "auto"
    assert config.learning_rate == 3e-3  # not SageMaker's 1e-3: measured (docs/model.md)
    assert config.mini_batch_size == 128
    assert config.early_stopping_patience is None


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("time_freq", "5min", "5min"),
        ("time_freq", "2H", "2H"),
        ("time_freq", "D", "D"),
        ("time_freq", "W", "W"),
        ("time_freq", "M", "M"),
        ("context_length", "40", 40),
        ("context_length", 40, 40),
        ("context_length", 40.0, 40),
        ("prediction_length", "1", 1),
        ("epochs", "1", 1),
        ("num_cells", "64", 64),
        ("num_layers", "3", 3),
        ("num_layers", "1", 1),
        ("likelihood", "student-T", "student-T"),
        ("likelihood", "gaussian", "gaussian"),
        ("likelihood", "negative-binomial", "negative-binomial"),
        ("likelihood", "beta", "beta"),
        ("likelihood", "deterministic-L1", "deterministic-L1"),
        ("dropout_rate", "0.1", 0.1),
        ("dropout_rate", "0", 0.0),
        ("dropout_rate", 0.5, 0.5),
        ("embedding_dimension", "5", 5),
        ("cardinality", "auto", "auto"),
        ("cardinality", "ignore", "ignore"),
        ("cardinality", "[2, 3]", (2, 3)),
        ("cardinality", [4], (4,)),
        ("num_dynamic_feat", "auto", "auto"),
        ("num_dynamic_feat", "ignore", "ignore"),
        ("num_dynamic_feat", "2", 2),
        ("num_dynamic_feat", "0", 0),
        ("num_dynamic_feat", 3, 3),
        ("learning_rate", "0.01", 0.01),
        ("learning_rate", "1e-4", 1e-4),
        ("mini_batch_size", "32", 32),
        ("early_stopping_patience", "10", 10),
        ("early_stopping_patience", "", None),
        ("test_quantiles", "[0.1, 0.5, 0.9]", (0.1, 0.5, 0.9)),
        ("test_quantiles", [0.25, "0.75"], (0.25, 0.75)),
        ("num_eval_samples", "50", 50),
    ],
)
def test_valid_hyperparameter(name: str, value: Any, expected: Any) -> None:
    config = _config(**{name: value})
    assert getattr(config, name) == expected
    assert type(getattr(config, name)) is type(expected)


@pytest.mark.parametrize(
    ("name", "value", "shown"),
    [
        ("time_freq", "0H", "'0H'"),
        ("time_freq", "H2", "'H2'"),
        ("time_freq", "Q", "'Q'"),
        ("time_freq", "5s", "'5s'"),
        ("time_freq", "2.5H", "'2.5H'"),
        ("time_freq", "", "''"),
        ("context_length", "0", "0"),
        ("context_length", "-3", "-3"),
        ("context_length", "abc", "'abc'"),
        ("context_length", "4.5", "'4.5'"),
        ("context_length", 4.5, "4.5"),
        ("context_length", True, "True"),
        ("prediction_length", "0", "0"),
        ("epochs", "0", "0"),
        ("epochs", "many", "'many'"),
        ("num_cells", "0", "0"),
        ("num_layers", "0", "0"),
        ("embedding_dimension", "0", "0"),
        ("mini_batch_size", "0", "0"),
        ("num_eval_samples", "0", "0"),
        ("dropout_rate", "1", "1.0"),
        ("dropout_rate", "-0.1", "-0.1"),
        ("dropout_rate", "abc", "'abc'"),
        ("dropout_rate", "nan", "'nan'"),
        ("learning_rate", "0", "0.0"),
        ("learning_rate", "-0.1", "-0.1"),
        ("learning_rate", "inf", "'inf'"),
        ("learning_rate", "fast", "'fast'"),
        ("likelihood", "studentT", "'studentT'"),
        ("likelihood", "poisson", "'poisson'"),
        ("likelihood", "Gaussian", "'Gaussian'"),
        ("cardinality", "some", "'some'"),
        ("cardinality", "[0]", "0"),
        ("cardinality", "[2, -1]", "-1"),
        ("cardinality", "[2.5]", "2.5"),
        ("cardinality", "3", "3"),
        ("num_dynamic_feat", "-1", "-1"),
        ("num_dynamic_feat", "many", "'many'"),
        ("early_stopping_patience", "0", "0"),
        ("early_stopping_patience", "soon", "'soon'"),
        ("test_quantiles", "[0, 0.5]", "0.0"),
        ("test_quantiles", "[0.5, 1]", "1.0"),
        ("test_quantiles", '[0.5, "x"]', "'x'"),
        ("test_quantiles", "abc", "'abc'"),
        ("test_quantiles", "[]", "empty"),
        # sizes whose buffers, not weights, would exhaust memory
        ("prediction_length", "10001", "10001"),
        ("context_length", "100001", "100001"),
    ],
)
def test_invalid_hyperparameter_names_field_and_value(name: str, value: Any, shown: str) -> None:
    with pytest.raises(ConfigError) as info:
        _config(**{name: value})
    message = str(info.value)
    assert name in message
    assert shown in message


def test_unknown_hyperparameter_is_named() -> None:
    with pytest.raises(ConfigError, match="num_cell'"):
        _config(num_cell="40")


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_missing_required_hyperparameter_is_named(name: str) -> None:
    hyperparameters = {k: v for k, v in REQUIRED.items() if k != name}
    with pytest.raises(ConfigError, match=f"missing.*{name}"):
        DeepARConfig.from_hyperparameters(hyperparameters)


def test_direct_construction_validates() -> None:
    with pytest.raises(ConfigError, match="prediction_length must be >= 1, got 0"):
        DeepARConfig(time_freq="H", context_length=4, prediction_length=0, epochs=1)


@pytest.mark.parametrize(
    ("text", "multiple", "unit"),
    [
        ("min", 1, "min"),
        ("5min", 5, "min"),
        ("15min", 15, "min"),
        ("H", 1, "H"),
        ("1H", 1, "H"),
        ("2H", 2, "H"),
        ("D", 1, "D"),
        ("3D", 3, "D"),
        ("W", 1, "W"),
        ("M", 1, "M"),
        ("6M", 6, "M"),
    ],
)
def test_time_freq_forms(text: str, multiple: int, unit: str) -> None:
    freq = parse_frequency(text)
    assert freq == Frequency(multiple, unit)  # type: ignore[arg-type]  # unit is a FreqUnit
    assert str(freq) == (unit if multiple == 1 else f"{multiple}{unit}")
    assert _config(time_freq=text).frequency == freq


@pytest.mark.parametrize("text", ["0H", "H2", "Q", "5s", "S", "Y", "2.5H", "-1H", "5 minutes", ""])
def test_time_freq_rejects(text: str) -> None:
    with pytest.raises(ConfigError, match=r"time_freq .*got"):
        parse_frequency(text)


def test_to_hyperparameters_round_trip() -> None:
    config = _config(
        time_freq="15min",
        num_cells="16",
        num_layers="3",
        likelihood="negative-binomial",
        dropout_rate="0.2",
        embedding_dimension="4",
        cardinality="[2, 3]",
        num_dynamic_feat="1",
        learning_rate="0.005",
        mini_batch_size="64",
        early_stopping_patience="3",
        test_quantiles="[0.2, 0.8]",
        num_eval_samples="20",
    )
    hyperparameters = config.to_hyperparameters()
    assert DeepARConfig.from_hyperparameters(hyperparameters) == config
    # ... also the way SageMaker stores them: every value a string, lists as JSON text
    as_strings = {
        k: json.dumps(v) if isinstance(v, list) else str(v) for k, v in hyperparameters.items()
    }
    assert DeepARConfig.from_hyperparameters(as_strings) == config
    # ... and through JSON
    assert DeepARConfig.from_hyperparameters(orjson.loads(orjson.dumps(hyperparameters))) == config


def test_to_hyperparameters_round_trip_defaults() -> None:
    config = _config()
    assert DeepARConfig.from_hyperparameters(config.to_hyperparameters()) == config


# ---------------------------------------------------------------------------------------------
# InferenceConfig


def test_inference_defaults_are_spec_section_2() -> None:
    default = InferenceConfig()
    assert default.to_dict() == SPEC_DEFAULT_INFERENCE
    assert InferenceConfig.from_json(json.dumps(SPEC_DEFAULT_INFERENCE)) == default
    for absent in (None, "", "  \n", b"", "null", "{}"):
        assert InferenceConfig.from_json(absent) == default
    assert InferenceConfig.from_mapping(None) == default
    assert InferenceConfig.from_mapping({}) == default
    assert default.quantile_levels == (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def test_inference_from_environment_text() -> None:
    text = '{"num_samples": "50", "output_types": ["samples", "mean"], "quantiles": ["0.05"]}'
    for raw in (text, text.encode()):
        config = InferenceConfig.from_json(raw)
        assert config.num_samples == 50
        assert config.output_types == ("samples", "mean")
        assert config.quantiles == ("0.05",)


def test_inference_partial_keeps_other_defaults() -> None:
    config = InferenceConfig.from_json('{"num_samples": 7}')
    assert config.to_dict() == {**SPEC_DEFAULT_INFERENCE, "num_samples": 7}


@pytest.mark.parametrize("text", ["{", "num_samples=5", "[1, 2]", '"x"', "5"])
def test_inference_from_json_rejects_non_objects(text: str) -> None:
    with pytest.raises(ConfigError, match=r"DEEPAR_INFERENCE_CONFIG|JSON object"):
        InferenceConfig.from_json(text)


@pytest.mark.parametrize(
    ("data", "key", "shown"),
    [
        ({"num_samples": 0}, "num_samples", "0"),
        ({"num_samples": -5}, "num_samples", "-5"),
        ({"num_samples": "abc"}, "num_samples", "'abc'"),
        ({"num_samples": 1.5}, "num_samples", "1.5"),
        ({"num_samples": True}, "num_samples", "True"),
        ({"num_samples": None}, "num_samples", "None"),
        ({"output_types": []}, "output_types", "[]"),
        ({"output_types": ["median"]}, "output_types", "'median'"),
        ({"output_types": ["mean", "mean"]}, "output_types", "'mean', 'mean'"),
        ({"output_types": "mean"}, "output_types", "'mean'"),
        ({"output_types": {"mean": 1}}, "output_types", "'mean'"),
        ({"quantiles": ["0"]}, "quantiles", "'0'"),
        ({"quantiles": ["1"]}, "quantiles", "'1'"),
        ({"quantiles": [0]}, "quantiles", "0"),
        ({"quantiles": [1.0]}, "quantiles", "1.0"),
        ({"quantiles": ["1.5"]}, "quantiles", "'1.5'"),
        ({"quantiles": ["-0.1"]}, "quantiles", "'-0.1'"),
        ({"quantiles": ["abc"]}, "quantiles", "'abc'"),
        ({"quantiles": ["nan"]}, "quantiles", "'nan'"),
        ({"quantiles": [True]}, "quantiles", "True"),
        ({"quantiles": [None]}, "quantiles", "None"),
        ({"quantiles": "0.5"}, "quantiles", "'0.5'"),
        ({"quantiles": 0.5}, "quantiles", "0.5"),
        ({"quantiles": []}, "quantiles", "empty"),
    ],
)
def test_inference_invalid_value_names_key(data: dict[str, Any], key: str, shown: str) -> None:
    for build in (InferenceConfig.from_mapping, lambda d: InferenceConfig.from_json(json.dumps(d))):
        with pytest.raises(ConfigError) as info:
            build(data)
        assert key in str(info.value)
        assert shown in str(info.value)


def test_inference_unknown_key_is_named() -> None:
    with pytest.raises(ConfigError, match="num_sample'"):
        InferenceConfig.from_mapping({"num_sample": 5})


def test_empty_quantiles_allowed_without_quantile_output() -> None:
    config = InferenceConfig.from_mapping({"output_types": ["mean"], "quantiles": []})
    assert config.quantiles == ()


def test_quantile_strings_are_kept_exactly_and_numbers_accepted() -> None:
    config = InferenceConfig.from_mapping({"quantiles": ["0.05", "0.50", ".9", 0.25, 0.5]})
    assert config.quantiles == ("0.05", "0.50", ".9", "0.25", "0.5")
    assert config.quantile_levels == (0.05, 0.5, 0.9, 0.25, 0.5)


def test_direct_construction_with_number_quantiles_gives_string_keys() -> None:
    """Quantiles are output keys, so they must be strings however the config was built.

    ``InferenceConfig(quantiles=(0.5,))`` must either keep ``"0.5"`` as the key or fail
    with a ConfigError; it must not keep a float that later breaks JSON encoding.
    """
    try:
        config = InferenceConfig(quantiles=(0.5, 0.9))  # type: ignore[arg-type]  # on purpose
    except ConfigError:
        return
    assert config.quantiles == ("0.5", "0.9")


def test_merged_replaces_only_given_keys() -> None:
    base = InferenceConfig.from_mapping({"num_samples": 20, "quantiles": ["0.5"]})
    assert base.merged(None) == base
    assert base.merged({}) == base
    merged = base.merged({"output_types": ["samples"]})
    assert merged == InferenceConfig(num_samples=20, output_types=("samples",), quantiles=("0.5",))
    merged = base.merged({"quantiles": [0.25, "0.75"], "num_samples": "3"})
    assert merged.to_dict() == {
        "num_samples": 3,
        "output_types": ["mean", "quantiles"],
        "quantiles": ["0.25", "0.75"],
    }
    assert base.num_samples == 20  # frozen: merged is a new value


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"num_samples": 0}, "num_samples"),
        ({"output_types": ["everything"]}, "output_types"),
        ({"quantiles": ["2"]}, "quantiles"),
        ({"bogus": 1}, "bogus"),
        ("num_samples=3", "configuration"),
    ],
)
def test_merged_validates(overrides: Any, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        InferenceConfig().merged(overrides)


# ---------------------------------------------------------------------------------------------
# ModelSpec

HOURLY_LAGS = (
    *range(1, 8),
    *range(23, 26),
    *range(47, 50),
    *range(71, 74),
    *range(95, 98),
    *range(119, 122),
    *range(143, 146),
    *range(167, 170),
    *range(335, 338),
    *range(503, 506),
    *range(671, 674),
    *range(719, 722),
)


def test_model_spec_sizes_match_reference() -> None:
    # DEEPAR_REFERENCE A.1: hourly, C=24 -> L = 24 + 721 - 1 = 744. Input width: 40 lags,
    # log(scale), 4 time features, age (GluonTS's dummy embedding and static real are
    # folded away here, so 48 - 2 = 46).
    spec = ModelSpec(
        freq="H", context_length=24, prediction_length=24, lags=HOURLY_LAGS, num_time_features=4
    )
    assert len(HOURLY_LAGS) == 40
    assert spec.max_lag == 721
    assert spec.past_length == 744
    assert spec.input_size == 46
    with_features = ModelSpec(
        freq="H",
        context_length=10,
        prediction_length=3,
        lags=(1, 2, 5),
        num_time_features=4,
        cardinality=(3, 7),
        embedding_dims=(2, 4),
        num_dynamic_feat=2,
    )
    assert with_features.past_length == 10 + 5 - 1
    assert with_features.num_feature_columns == 4 + 1 + 2
    assert with_features.input_size == 3 + (2 + 4) + 1 + 4 + 1 + 2


def test_model_spec_round_trip() -> None:
    spec = ModelSpec(
        freq="5min",
        context_length=12,
        prediction_length=6,
        lags=(1, 2, 3, 12),
        num_time_features=5,
        cardinality=(4, 2),
        embedding_dims=(3, 1),
        num_dynamic_feat=1,
        num_cells=16,
        num_layers=3,
        dropout_rate=0.0,
        likelihood="gaussian",
        default_scale=12.5,
        minimum_scale=1e-6,
    )
    data = spec.to_dict()
    assert data["lags"] == [1, 2, 3, 12]
    assert ModelSpec.from_dict(data) == spec
    assert ModelSpec.from_dict(orjson.loads(orjson.dumps(data))) == spec


@pytest.mark.parametrize(
    ("change", "shown"),
    [
        ({"lags": (2, 1)}, "lags"),
        ({"lags": (1, 1, 2)}, "lags"),
        ({"lags": (0, 1)}, "lags"),
        ({"lags": ()}, "lags"),
        ({"cardinality": (3,)}, "embedding_dims"),
        ({"likelihood": "poisson"}, "likelihood"),
        ({"freq": "Q"}, "time_freq"),
        ({"context_length": 0}, "context_length"),
    ],
)
def test_model_spec_validates(change: dict[str, Any], shown: str) -> None:
    fields: dict[str, Any] = {
        "freq": "H",
        "context_length": 4,
        "prediction_length": 2,
        "lags": (1, 2),
        "num_time_features": 4,
    }
    with pytest.raises(ConfigError, match=shown):
        ModelSpec(**{**fields, **change})


def test_model_spec_from_dict_rejects_unknown_field() -> None:
    data = ModelSpec(
        freq="D", context_length=3, prediction_length=2, lags=(1,), num_time_features=3
    ).to_dict()
    with pytest.raises(ConfigError, match="surprise"):
        ModelSpec.from_dict({**data, "surprise": 1})


# ---------------------------------------------------------------------------------------------
# Construction stores what it validated (issue 8)


def test_direct_construction_stores_the_normalised_values() -> None:
    config = DeepARConfig(
        time_freq="H",
        context_length="24",  # type: ignore[arg-type]  # text, as SageMaker sends it
        prediction_length=12.0,  # type: ignore[arg-type]  # an integral float
        epochs="3",  # type: ignore[arg-type]
        dropout_rate="0.2",  # type: ignore[arg-type]
        cardinality="[2, 3]",
        num_dynamic_feat="1",
        early_stopping_patience="",  # type: ignore[arg-type]  # SageMaker's unset value
        test_quantiles="[0.5]",  # type: ignore[arg-type]
    )
    assert (config.context_length, config.prediction_length, config.epochs) == (24, 12, 3)
    assert all(type(v) is int for v in (config.context_length, config.prediction_length))
    assert config.dropout_rate == 0.2
    assert config.cardinality == (2, 3)
    assert config.num_dynamic_feat == 1
    assert config.early_stopping_patience is None
    assert config.test_quantiles == (0.5,)
    # Equal to the same configuration built from native values: one canonical form.
    assert config == DeepARConfig(
        time_freq="H",
        context_length=24,
        prediction_length=12,
        epochs=3,
        dropout_rate=0.2,
        cardinality=(2, 3),
        num_dynamic_feat=1,
        test_quantiles=(0.5,),
    )


def test_model_spec_stores_tuples_and_ints() -> None:
    spec = ModelSpec(
        freq="H",
        context_length="4",  # type: ignore[arg-type]
        prediction_length=2,
        lags=[1, 2],  # type: ignore[arg-type]  # a JSON array
        num_time_features=4,
        cardinality=[3],  # type: ignore[arg-type]
        embedding_dims=[2],  # type: ignore[arg-type]
    )
    assert spec.context_length == 4
    assert (spec.lags, spec.cardinality, spec.embedding_dims) == ((1, 2), (3,), (2,))
    assert hash(spec) == hash(ModelSpec.from_dict(spec.to_dict()))


def test_model_spec_from_dict_accepts_the_removed_extra_field() -> None:
    data = ModelSpec(
        freq="D", context_length=3, prediction_length=2, lags=(1,), num_time_features=3
    ).to_dict()
    assert "extra" not in data
    # Models saved before ModelSpec.extra was removed still load.
    assert ModelSpec.from_dict({**data, "extra": {}}) == ModelSpec.from_dict(data)
