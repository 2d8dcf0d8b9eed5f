"""Hyperparameters, the resolved model signature and the inference configuration.

Three frozen values, each validated in ``__post_init__``, which stores the normalised value
it checked (``DeepARConfig(context_length="24").context_length == 24``): every value may
arrive as text, the way SageMaker passes hyperparameters, and :mod:`batchcast.coerce` holds
the rules. The frequency is :mod:`batchcast.forecast.frequency`'s.

No torch here: ``io`` validates records against a model's :class:`ModelSpec` without loading
torch.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from batchcast.coerce import as_choice_or_int, as_choice_or_ints, as_float, as_int, as_list
from batchcast.errors import ConfigError
from batchcast.forecast.classes import CLASS_KEYS, Classes
from batchcast.forecast.frequency import Frequency, parse_frequency

__all__ = [
    "LIKELIHOODS",
    "LOCATION_FAMILIES",
    "OUTPUT_KEYS",
    "OUTPUT_TYPES",
    "SCALINGS",
    "DeepARConfig",
    "InferenceConfig",
    "ModelSpec",
]

LIKELIHOODS = ("student-T", "gaussian", "negative-binomial", "beta", "deterministic-L1")
# How a window's targets become the network's units (ModelSpec.scaling): "mean" divides by the
# context's mean absolute value (GluonTS's MeanScaler); "std" subtracts the context's mean and
# divides by its standard deviation. "std" needs a location family: shifting a draw by the
# window's mean must give a draw of the series (not so for counts or proportions).
SCALINGS = ("mean", "std")
LOCATION_FAMILIES = ("student-T", "gaussian", "deterministic-L1")
OUTPUT_TYPES = ("mean", "quantiles", "samples")
# Every key an output record may hold (SAGEMAKER_INFERENCE_OUTPUT, SPEC.md §8).
OUTPUT_KEYS = OUTPUT_TYPES + CLASS_KEYS
# The order of an output record's keys when they come from ``output_types`` (SPEC.md §3).
_DEFAULT_KEY_ORDER = ("quantiles", "samples", "mean")
_INFERENCE_KEYS = ("num_samples", "output_types", "quantiles", "classes")
DEFAULT_QUANTILES = ("0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7", "0.8", "0.9")


def _quantile_key(name: str, value: Any) -> str:
    """A quantile as its output key: strings are kept as given, numbers printed shortest."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ConfigError(f"{name} entries must be strings or numbers in (0, 1), got {value!r}")
    key = value.strip() if isinstance(value, str) else repr(float(value))
    try:
        level = float(key)
    except ValueError:
        raise ConfigError(f"{name} entries must be numbers in (0, 1), got {value!r}") from None
    if not 0.0 < level < 1.0:
        raise ConfigError(f"{name} entries must be in (0, 1), got {value!r}")
    return key


def _likelihood(value: Any) -> str:
    if value not in LIKELIHOODS:
        raise ConfigError(f"likelihood must be one of {list(LIKELIHOODS)}, got {value!r}")
    return str(value)


def _scaling(value: Any, likelihood: str, *, allow_auto: bool) -> str:
    """A checked ``scaling`` (``"auto"`` only where ``allow_auto``), for ``likelihood``."""
    choices = (("auto",) if allow_auto else ()) + SCALINGS
    if value not in choices:
        raise ConfigError(f"scaling must be one of {list(choices)}, got {value!r}")
    if value == "std" and likelihood not in LOCATION_FAMILIES:
        raise ConfigError(
            f"scaling 'std' needs a location family {list(LOCATION_FAMILIES)}, not the "
            f"{likelihood!r} likelihood: use scaling 'mean'"
        )
    return str(value)


def _dropout_rate(value: Any) -> float:
    rate = as_float("dropout_rate", value)
    if not 0.0 <= rate < 1.0:
        raise ConfigError(f"dropout_rate must be in [0, 1), got {rate}")
    return rate


def _freeze(instance: object, **values: Any) -> None:
    """Store normalised field values on a frozen dataclass (from its ``__post_init__``)."""
    for name, value in values.items():
        object.__setattr__(instance, name, value)


# ---------------------------------------------------------------------------------------------
# Hyperparameters

_REQUIRED_HYPERPARAMETERS = ("time_freq", "context_length", "prediction_length", "epochs")
# Sizes past which a network's buffers, not its weights, exhaust memory (a window is
# held per series, a horizon per sample path): what a config.json or the hyperparameters
# may ask for. A corrupt config.json with prediction_length 1e6 was OOM-killed at 24 GB.
MAX_PREDICTION_LENGTH = 10_000
MAX_PAST_LENGTH = 100_000  # context_length + the largest lag
# Positive integers, checked and stored the same way.
_POSITIVE_INTS = (
    "context_length",
    "prediction_length",
    "epochs",
    "num_cells",
    "num_layers",
    "embedding_dimension",
    "mini_batch_size",
    "num_eval_samples",
)


@dataclass(frozen=True)
class DeepARConfig:
    """DeepAR hyperparameters with SageMaker's names and defaults (SPEC.md §6).

    ``cardinality`` and ``num_dynamic_feat`` keep SageMaker's three forms: ``"auto"`` (use the
    feature if the training data has it), ``"ignore"`` (never use it), or an explicit value.
    Any field may be given as text (``"24"``, ``"[2, 3]"``, ``"1e-3"``); the instance holds
    the parsed value. Build from a SageMaker hyperparameter dict with
    :meth:`from_hyperparameters`, which also rejects unknown and missing names.

    Raises:
        ConfigError: on construction, for an invalid value (naming the field and the value).
    """

    time_freq: str
    context_length: int
    prediction_length: int
    epochs: int
    num_cells: int = 40
    num_layers: int = 2
    likelihood: str = "student-T"
    dropout_rate: float = 0.1
    # SageMaker's default; GluonTS uses min(50, (c + 1) // 2) per feature instead.
    embedding_dimension: int = 10
    cardinality: str | tuple[int, ...] = "auto"
    num_dynamic_feat: str | int = "auto"
    # Not SageMaker's 1e-3: with this trainer's epochs (50 steps at least) 3e-3 forecast
    # better on M3 monthly (-4.8% mean wQL), M3 quarterly (-2.8%) and M1 monthly (-16%), the
    # same on Tourism quarterly (+0.5%), two seeds each (benchmarks/RESULTS.md, 2026-12-06).
    learning_rate: float = 3e-3
    mini_batch_size: int = 128
    # None: train for all epochs. SageMaker only stops early when a test channel is given;
    # without one we watch the training loss instead (documented in the README). The text
    # forms "" and "None" mean None, as SageMaker's console sends an unset value.
    early_stopping_patience: int | None = None
    test_quantiles: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
    num_eval_samples: int = 100
    # batchcast's, not SageMaker's. "auto": for a location family (student-T, gaussian,
    # deterministic-L1) train one network per scaling and keep the one with the lower
    # validation loss (twice the training time); "mean" for the others. Neither scaling wins
    # everywhere: "std" forecast M3 monthly 3.4% better than "mean" and M1 monthly 14% worse
    # (it overfits there), and the validation loss told them apart (benchmarks/RESULTS.md,
    # 2026-12-06, eighth pass).
    scaling: str = "auto"

    def __post_init__(self) -> None:
        parse_frequency(self.time_freq)
        _freeze(self, **{name: as_int(name, getattr(self, name)) for name in _POSITIVE_INTS})
        _check_lengths(self.context_length, self.prediction_length, 0)
        learning_rate = as_float("learning_rate", self.learning_rate)
        if not learning_rate > 0.0:
            raise ConfigError(f"learning_rate must be > 0, got {learning_rate}")
        patience = self.early_stopping_patience
        test_quantiles = tuple(
            as_float("test_quantiles entries", q)
            for q in as_list("test_quantiles", self.test_quantiles)
        )
        if not test_quantiles:
            raise ConfigError("test_quantiles must not be empty")
        for q in test_quantiles:
            if not 0.0 < q < 1.0:
                raise ConfigError(f"test_quantiles entries must be in (0, 1), got {q}")
        _freeze(
            self,
            time_freq=str(self.time_freq),
            likelihood=_likelihood(self.likelihood),
            dropout_rate=_dropout_rate(self.dropout_rate),
            learning_rate=learning_rate,
            early_stopping_patience=(
                None
                if patience is None or patience in ("", "None")
                else as_int("early_stopping_patience", patience)
            ),
            cardinality=as_choice_or_ints("cardinality", self.cardinality),
            num_dynamic_feat=as_choice_or_int("num_dynamic_feat", self.num_dynamic_feat),
            test_quantiles=test_quantiles,
        )
        _freeze(self, scaling=_scaling(self.scaling, self.likelihood, allow_auto=True))

    @property
    def frequency(self) -> Frequency:
        """``time_freq`` parsed."""
        return parse_frequency(self.time_freq)

    @property
    def scaling_candidates(self) -> tuple[str, ...]:
        """The scalings a training run tries, in order: ``scaling`` itself, or for ``"auto"``
        both where the likelihood allows "std" (the trainer keeps the better on validation)."""
        if self.scaling != "auto":
            return (self.scaling,)
        return SCALINGS if self.likelihood in LOCATION_FAMILIES else ("mean",)

    @classmethod
    def from_hyperparameters(cls, hyperparameters: Mapping[str, Any]) -> DeepARConfig:
        """Build from SageMaker-style hyperparameters, where every value may be a string.

        Raises:
            ConfigError: for an unknown or missing name, or an invalid value (naming both).
        """
        if not isinstance(hyperparameters, Mapping):
            kinds = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
            kinds.update({int: "a number", float: "a number"})
            found = kinds.get(type(hyperparameters), type(hyperparameters).__name__)
            raise ConfigError(f"hyperparameters must be a JSON object of names, found {found}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(hyperparameters) - known)
        if unknown:
            raise ConfigError(f"unknown hyperparameter(s) {unknown}; known: {sorted(known)}")
        missing = [n for n in _REQUIRED_HYPERPARAMETERS if n not in hyperparameters]
        if missing:
            raise ConfigError(f"missing required hyperparameter(s) {missing}")
        return cls(**hyperparameters)

    def to_hyperparameters(self) -> dict[str, Any]:
        """The hyperparameters as a JSON-ready dict (inverse of :meth:`from_hyperparameters`)."""
        out = dataclasses.asdict(self)
        for key in ("cardinality", "test_quantiles"):
            if isinstance(out[key], tuple):
                out[key] = list(out[key])
        if out["early_stopping_patience"] is None:
            del out["early_stopping_patience"]
        return out


# ---------------------------------------------------------------------------------------------
# The resolved model signature (what a trained model is)


@dataclass(frozen=True)
class ModelSpec:
    """Everything that fixes a trained network's shape and its record contract.

    Unlike :class:`DeepARConfig`, nothing here is left to ``auto``: the cardinalities, the
    dynamic-feature count and the lags are resolved. ``io`` validates records against it.
    Sequences are stored as tuples and numbers as ``int``/``float`` whatever was given.

    Raises:
        ConfigError: on construction, for an invalid or inconsistent value.
    """

    freq: str
    context_length: int
    prediction_length: int
    lags: tuple[int, ...]
    num_time_features: int
    cardinality: tuple[int, ...] = ()
    embedding_dims: tuple[int, ...] = ()
    num_dynamic_feat: int = 0
    num_cells: int = 40
    num_layers: int = 2
    dropout_rate: float = 0.1
    likelihood: str = "student-T"
    # Scale for a series whose context has no observed value. None reproduces GluonTS: the
    # batch-wide mean of the other series' scales, which couples series that share a batch.
    # Our trainer stores the training set's mean scale so a forecast never depends on its
    # neighbours in a batch.
    default_scale: float | None = None
    minimum_scale: float = 1e-10
    # "mean" (GluonTS's, and what a model saved without this field used) or "std"; see SCALINGS.
    scaling: str = "mean"

    def __post_init__(self) -> None:
        parse_frequency(self.freq)
        lags = tuple(as_int("lags entries", v) for v in as_list("lags", self.lags))
        if not lags or list(lags) != sorted(set(lags)):
            raise ConfigError(f"lags must be ascending distinct integers >= 1, got {self.lags}")
        cardinality, embedding_dims = (
            tuple(as_int(f"{name} entries", v) for v in as_list(name, getattr(self, name)))
            for name in ("cardinality", "embedding_dims")
        )
        if len(cardinality) != len(embedding_dims):
            raise ConfigError(
                f"embedding_dims must have one entry per cardinality, got {self.embedding_dims} "
                f"for {self.cardinality}"
            )
        minimum_scale = as_float("minimum_scale", self.minimum_scale)
        if not minimum_scale > 0.0:
            raise ConfigError(f"minimum_scale must be > 0, got {minimum_scale}")
        if self.default_scale is not None:
            default_scale = as_float("default_scale", self.default_scale)
            if not 0.0 < default_scale < math.inf:  # a scale divides: > 0, and NaN fails too
                raise ConfigError(f"default_scale must be > 0 (or null), got {default_scale}")
        _check_lengths(
            as_int("context_length", self.context_length),
            as_int("prediction_length", self.prediction_length),
            lags[-1] - 1,
        )
        _freeze(
            self,
            freq=str(self.freq),
            context_length=as_int("context_length", self.context_length),
            prediction_length=as_int("prediction_length", self.prediction_length),
            lags=lags,
            num_time_features=as_int("num_time_features", self.num_time_features, minimum=0),
            cardinality=cardinality,
            embedding_dims=embedding_dims,
            num_dynamic_feat=as_int("num_dynamic_feat", self.num_dynamic_feat, minimum=0),
            num_cells=as_int("num_cells", self.num_cells),
            num_layers=as_int("num_layers", self.num_layers),
            dropout_rate=_dropout_rate(self.dropout_rate),
            likelihood=_likelihood(self.likelihood),
            default_scale=(
                None
                if self.default_scale is None
                else as_float("default_scale", self.default_scale)
            ),
            minimum_scale=minimum_scale,
        )
        _freeze(self, scaling=_scaling(self.scaling, self.likelihood, allow_auto=False))

    @property
    def frequency(self) -> Frequency:
        """``freq`` parsed."""
        return parse_frequency(self.freq)

    @property
    def max_lag(self) -> int:
        return self.lags[-1]

    @property
    def past_length(self) -> int:
        """``L = C + max_lag - 1``: the past window the network reads (DEEPAR_REFERENCE A.1)."""
        return self.context_length + self.max_lag - 1

    @property
    def num_feature_columns(self) -> int:
        """Time features + age + dynamic features: the per-step covariate width."""
        return self.num_time_features + 1 + self.num_dynamic_feat

    @property
    def input_size(self) -> int:
        """LSTM input width: lags, embeddings, log-scale, covariates."""
        return len(self.lags) + sum(self.embedding_dims) + 1 + self.num_feature_columns

    def to_dict(self) -> dict[str, Any]:
        """The spec as a JSON-ready dict (sequences as lists)."""
        out = dataclasses.asdict(self)
        for key in ("lags", "cardinality", "embedding_dims"):
            out[key] = list(out[key])
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelSpec:
        """The inverse of :meth:`to_dict`.

        Raises:
            ConfigError: for an unknown field or an invalid value.
        """
        kwargs = dict(data)
        # Models saved before ModelSpec.extra was removed hold an "extra" object that nothing
        # ever read; it is dropped, so they still load.
        kwargs.pop("extra", None)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise ConfigError(f"unknown model spec field(s) {unknown}")
        return cls(**kwargs)


# ---------------------------------------------------------------------------------------------
# Inference configuration (DEEPAR_INFERENCE_CONFIG)


@dataclass(frozen=True)
class InferenceConfig:
    """``DEEPAR_INFERENCE_CONFIG`` (SPEC.md §2) and the selected response keys (§8).

    Attributes:
        num_samples: sample paths per series.
        output_types: DeepAR's ``mean`` / ``quantiles`` / ``samples``.
        quantiles: kept as the exact strings used as output keys.
        classes: bins over each path's aggregate, for the classification keys (§8).
        keys: the keys each output record holds, in order (``SAGEMAKER_INFERENCE_OUTPUT``);
            None: ``output_types`` rules, in SPEC.md §3's order.
        supported: the keys a deployment allows (``SAGEMAKER_INFERENCE_SUPPORTED``), kept so
            that a request's configuration merged in (:meth:`merged`) is held to them too;
            None: any key.
    """

    num_samples: int = 100
    output_types: tuple[str, ...] = ("mean", "quantiles")
    quantiles: tuple[str, ...] = DEFAULT_QUANTILES
    classes: Classes | None = None
    keys: tuple[str, ...] | None = None
    supported: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "num_samples", as_int("num_samples", self.num_samples))
        if not self.output_types:
            raise ConfigError(
                f"output_types must be a non-empty subset of {list(OUTPUT_TYPES)}, got []"
            )
        for t in self.output_types:
            if t not in OUTPUT_TYPES:
                raise ConfigError(
                    f"output_types entries must be in {list(OUTPUT_TYPES)}, got {t!r}"
                )
        if len(set(self.output_types)) != len(self.output_types):
            raise ConfigError(
                f"output_types must not repeat an entry, got {list(self.output_types)}"
            )
        if self.keys is not None:
            _check_keys(tuple(self.keys))
            object.__setattr__(self, "keys", tuple(self.keys))
        if self.supported is not None:
            object.__setattr__(self, "supported", tuple(self.supported))
            check_supported(self.output_keys, self.supported)
        if "quantiles" in self.output_keys and not self.quantiles:
            raise ConfigError("quantiles must not be empty when the output holds 'quantiles'")
        keys = tuple(_quantile_key("quantiles", q) for q in self.quantiles)
        if len(set(keys)) != len(keys):
            raise ConfigError(f"quantiles must not repeat a key, got {list(keys)}")
        # Numbers given directly become their output keys (JSON object keys are strings).
        object.__setattr__(self, "quantiles", keys)
        asked = [k for k in self.output_keys if k in CLASS_KEYS]
        if asked and self.classes is None:
            raise ConfigError(
                f"the output keys {asked} need 'classes' in the inference configuration "
                "(DEEPAR_INFERENCE_CONFIG or the request's configuration); none is set"
            )

    @property
    def output_keys(self) -> tuple[str, ...]:
        """The keys of each output record, in order."""
        if self.keys is not None:
            return self.keys
        return tuple(k for k in _DEFAULT_KEY_ORDER if k in self.output_types)

    @property
    def wants_classes(self) -> bool:
        """Whether any classification key is asked for (class probabilities are computed)."""
        return any(k in CLASS_KEYS for k in self.output_keys)

    @property
    def quantile_levels(self) -> tuple[float, ...]:
        return tuple(float(q) for q in self.quantiles)

    @classmethod
    def from_mapping(
        cls, data: Mapping[str, Any] | None, *, keys: Sequence[str] | None = None
    ) -> InferenceConfig:
        """Build from a parsed configuration object; absent keys take SPEC.md §2's defaults.

        Args:
            data: the configuration object (None: the defaults).
            keys: the selected response keys (``SAGEMAKER_INFERENCE_OUTPUT``), if any.

        Raises:
            ConfigError: for an unknown key or an invalid value, naming the key.
        """
        if data is None:
            return cls(keys=None if keys is None else tuple(keys))
        if not isinstance(data, Mapping):
            raise ConfigError(f"the inference configuration must be a JSON object, got {data!r}")
        unknown = sorted(set(data) - set(_INFERENCE_KEYS))
        if unknown:
            raise ConfigError(
                f"unknown inference configuration key(s) {unknown}; known: {list(_INFERENCE_KEYS)}"
            )
        kwargs: dict[str, Any] = {"keys": None if keys is None else tuple(keys)}
        if "num_samples" in data:
            kwargs["num_samples"] = as_int("num_samples", data["num_samples"])
        if "output_types" in data:
            types = data["output_types"]
            if isinstance(types, str) or not isinstance(types, Sequence):
                raise ConfigError(f"output_types must be a JSON array, got {types!r}")
            kwargs["output_types"] = tuple(types)
        if "quantiles" in data:
            quantiles = data["quantiles"]
            if isinstance(quantiles, str) or not isinstance(quantiles, Sequence):
                raise ConfigError(f"quantiles must be a JSON array, got {quantiles!r}")
            kwargs["quantiles"] = tuple(_quantile_key("quantiles", q) for q in quantiles)
        if data.get("classes") is not None:
            kwargs["classes"] = Classes.from_mapping(data["classes"])
        return cls(**kwargs)

    @classmethod
    def from_json(cls, text: str | bytes | None) -> InferenceConfig:
        """Parse the ``DEEPAR_INFERENCE_CONFIG`` text (empty or None: the defaults)."""
        if text is None or not str(text if isinstance(text, str) else text.decode()).strip():
            return cls()
        try:
            data = orjson.loads(text)
        except orjson.JSONDecodeError as err:
            raise ConfigError(f"DEEPAR_INFERENCE_CONFIG is not valid JSON: {err}") from err
        return cls.from_mapping(data)

    def merged(self, overrides: Mapping[str, Any] | None) -> InferenceConfig:
        """This configuration with the keys of ``overrides`` replaced (e.g. a request's),
        under the same response keys and held to the same ``supported`` keys.

        Raises:
            ConfigError: for an ``overrides`` that is not an object (or None), as
                :meth:`from_mapping`, and the SDK's text for a key outside ``supported``.
        """
        if overrides is None:
            return self
        if not isinstance(overrides, Mapping):
            raise ConfigError(f"configuration must be a JSON object, got {_short(overrides)}")
        if not overrides:
            return self
        base = self.to_dict()
        base.update(overrides)
        merged = InferenceConfig.from_mapping(base, keys=self.keys)
        if self.supported is None:
            return merged
        return dataclasses.replace(merged, supported=self.supported)

    def with_keys(self, keys: Sequence[str] | None) -> InferenceConfig:
        """This configuration holding the response keys ``keys`` (None: ``output_types``)."""
        return dataclasses.replace(self, keys=None if keys is None else tuple(keys))

    def check_horizon(self, prediction_length: int) -> None:
        """Check what depends on the model's horizon (``classes.steps``).

        Raises:
            ConfigError: when ``classes.steps`` reaches past ``prediction_length``.
        """
        if self.classes is not None:
            self.classes.step_range(prediction_length)

    def to_dict(self) -> dict[str, Any]:
        """The configuration object (without ``keys``, which come from the environment)."""
        out: dict[str, Any] = {
            "num_samples": self.num_samples,
            "output_types": list(self.output_types),
            "quantiles": list(self.quantiles),
        }
        if self.classes is not None:
            out["classes"] = self.classes.to_dict()
        return out


def _check_lengths(context_length: int, prediction_length: int, extra_past: int) -> None:
    """``prediction_length`` and the past window (``context_length + extra_past``: the
    largest lag's reach) within :data:`MAX_PREDICTION_LENGTH` and :data:`MAX_PAST_LENGTH`."""
    if prediction_length > MAX_PREDICTION_LENGTH:
        raise ConfigError(
            f"prediction_length must be <= {MAX_PREDICTION_LENGTH}, got {prediction_length}"
        )
    if context_length + extra_past > MAX_PAST_LENGTH:
        reach = "" if not extra_past else f" plus the largest lag ({extra_past + 1}) less 1"
        raise ConfigError(
            f"context_length{reach} must be <= {MAX_PAST_LENGTH}, got {context_length + extra_past}"
        )


def check_supported(keys: Sequence[str], supported: Sequence[str]) -> None:
    """Every one of ``keys`` is among the ``supported`` keys of a deployment.

    Raises:
        ConfigError: in the SageMaker Python SDK's wording and list format
            (``AutoML._check_inference_keys``), naming the keys that are not.
    """
    bad = [k for k in keys if k not in supported]
    if bad:
        raise ConfigError(
            f"Requested inference output keys [{', '.join(bad)}] are unsupported. "
            f"The supported inference keys are [{', '.join(supported)}]"
        )


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_keys(keys: tuple[str, ...]) -> None:
    if not keys:
        raise ConfigError(f"the output keys must be a non-empty list from {list(OUTPUT_KEYS)}")
    for key in keys:
        if key not in OUTPUT_KEYS:
            raise ConfigError(f"unknown output key {key!r}; known: {list(OUTPUT_KEYS)}")
    if len(set(keys)) != len(keys):
        raise ConfigError(f"the output keys must not repeat a key, got {list(keys)}")
