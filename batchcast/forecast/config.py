"""Hyperparameters, the resolved model signature and the inference configuration.

No torch here: ``io`` validates records against a model's :class:`ModelSpec` without loading
torch. Every value may arrive as a string, the way SageMaker passes hyperparameters.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from batchcast.errors import ConfigError

__all__ = [
    "LIKELIHOODS",
    "OUTPUT_TYPES",
    "DeepARConfig",
    "Frequency",
    "InferenceConfig",
    "ModelSpec",
    "parse_frequency",
]

LIKELIHOODS = ("student-T", "gaussian", "negative-binomial", "beta", "deterministic-L1")
OUTPUT_TYPES = ("mean", "quantiles", "samples")
DEFAULT_QUANTILES = ("0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7", "0.8", "0.9")

FreqUnit = Literal["min", "H", "D", "W", "M"]
_FREQ_RE = re.compile(r"^\s*(\d*)\s*(min|H|D|W|M)\s*$")


@dataclass(frozen=True)
class Frequency:
    """A SageMaker ``time_freq``: an integer ``multiple`` of a base ``unit``."""

    multiple: int
    unit: FreqUnit

    def __str__(self) -> str:
        return self.unit if self.multiple == 1 else f"{self.multiple}{self.unit}"


def parse_frequency(value: str) -> Frequency:
    """Parse ``time_freq``: ``min``, ``H``, ``D``, ``W`` or ``M`` times an integer (``5min``).

    Raises:
        ConfigError: naming the value and the accepted forms.
    """
    match = _FREQ_RE.match(str(value))
    if match is None or (match.group(1) and int(match.group(1)) < 1):
        raise ConfigError(
            f"time_freq must be an integer multiple of min, H, D, W or M (e.g. '5min', '2H', 'D'), "
            f"got {value!r}"
        )
    multiple = int(match.group(1)) if match.group(1) else 1
    return Frequency(multiple, match.group(2))  # type: ignore[arg-type]  # regex admits only FreqUnit


# ---------------------------------------------------------------------------------------------
# Coercion of SageMaker-style values (strings allowed)


def _as_int(name: str, value: Any, *, minimum: int = 1) -> int:
    if isinstance(value, bool):
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    try:
        number = int(value) if not isinstance(value, float) else None
    except (TypeError, ValueError):
        number = None
    if number is None:
        if isinstance(value, float) and value.is_integer():
            number = int(value)
        else:
            raise ConfigError(f"{name} must be an integer, got {value!r}")
    if number < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {number}")
    return number


def _as_float(name: str, value: Any) -> float:
    if isinstance(value, bool):
        raise ConfigError(f"{name} must be a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ConfigError(f"{name} must be finite, got {value!r}")
    return number


def _as_list(name: str, value: Any) -> list[Any]:
    """A JSON array, given as a list or as its string form (``"[2, 3]"``)."""
    if isinstance(value, str):
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
            raise ConfigError(f"{name} must be a JSON array, got {value!r}") from None
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{name} must be a JSON array, got {value!r}")
    return list(value)


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


# ---------------------------------------------------------------------------------------------
# Hyperparameters


@dataclass(frozen=True)
class DeepARConfig:
    """DeepAR hyperparameters with SageMaker's names and defaults (SPEC.md §6).

    ``cardinality`` and ``num_dynamic_feat`` keep SageMaker's three forms: ``"auto"`` (use the
    feature if the training data has it), ``"ignore"`` (never use it), or an explicit value.
    Build from a SageMaker hyperparameter dict with :meth:`from_hyperparameters`.
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
    learning_rate: float = 1e-3
    mini_batch_size: int = 128
    # None: train for all epochs. SageMaker only stops early when a test channel is given;
    # without one we watch the training loss instead (documented in the README).
    early_stopping_patience: int | None = None
    test_quantiles: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
    num_eval_samples: int = 100

    def __post_init__(self) -> None:
        parse_frequency(self.time_freq)
        for name in ("context_length", "prediction_length", "epochs", "num_cells", "num_layers"):
            _as_int(name, getattr(self, name))
        _as_int("embedding_dimension", self.embedding_dimension)
        _as_int("mini_batch_size", self.mini_batch_size)
        _as_int("num_eval_samples", self.num_eval_samples)
        if self.likelihood not in LIKELIHOODS:
            raise ConfigError(
                f"likelihood must be one of {list(LIKELIHOODS)}, got {self.likelihood!r}"
            )
        if not 0.0 <= self.dropout_rate < 1.0:
            raise ConfigError(f"dropout_rate must be in [0, 1), got {self.dropout_rate}")
        if not self.learning_rate > 0.0:
            raise ConfigError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.early_stopping_patience is not None:
            _as_int("early_stopping_patience", self.early_stopping_patience)
        if isinstance(self.cardinality, str):
            if self.cardinality not in ("auto", "ignore"):
                raise ConfigError(
                    f"cardinality must be 'auto', 'ignore' or a list of positive integers, "
                    f"got {self.cardinality!r}"
                )
        else:
            for c in self.cardinality:
                _as_int("cardinality entries", c)
        if isinstance(self.num_dynamic_feat, str):
            if self.num_dynamic_feat not in ("auto", "ignore"):
                raise ConfigError(
                    f"num_dynamic_feat must be 'auto', 'ignore' or an integer >= 0, "
                    f"got {self.num_dynamic_feat!r}"
                )
        else:
            _as_int("num_dynamic_feat", self.num_dynamic_feat, minimum=0)
        if not self.test_quantiles:
            raise ConfigError("test_quantiles must not be empty")
        for q in self.test_quantiles:
            if not 0.0 < q < 1.0:
                raise ConfigError(f"test_quantiles entries must be in (0, 1), got {q}")

    @property
    def frequency(self) -> Frequency:
        return parse_frequency(self.time_freq)

    @classmethod
    def from_hyperparameters(cls, hyperparameters: Mapping[str, Any]) -> DeepARConfig:
        """Build from SageMaker-style hyperparameters, where every value may be a string.

        Raises:
            ConfigError: for an unknown or missing name, or an invalid value (naming both).
        """
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(hyperparameters) - known)
        if unknown:
            raise ConfigError(f"unknown hyperparameter(s) {unknown}; known: {sorted(known)}")
        missing = [
            n
            for n in ("time_freq", "context_length", "prediction_length", "epochs")
            if n not in hyperparameters
        ]
        if missing:
            raise ConfigError(f"missing required hyperparameter(s) {missing}")
        hp = dict(hyperparameters)
        kwargs: dict[str, Any] = {"time_freq": str(hp.pop("time_freq"))}
        for name in (
            "context_length",
            "prediction_length",
            "epochs",
            "num_cells",
            "num_layers",
            "embedding_dimension",
            "mini_batch_size",
            "num_eval_samples",
        ):
            if name in hp:
                kwargs[name] = _as_int(name, hp.pop(name))
        for name in ("dropout_rate", "learning_rate"):
            if name in hp:
                kwargs[name] = _as_float(name, hp.pop(name))
        if "likelihood" in hp:
            kwargs["likelihood"] = str(hp.pop("likelihood"))
        if "early_stopping_patience" in hp:
            value = hp.pop("early_stopping_patience")
            kwargs["early_stopping_patience"] = (
                None if value in (None, "", "None") else _as_int("early_stopping_patience", value)
            )
        if "cardinality" in hp:
            kwargs["cardinality"] = _choice_or_list("cardinality", hp.pop("cardinality"))
        if "num_dynamic_feat" in hp:
            value = hp.pop("num_dynamic_feat")
            kwargs["num_dynamic_feat"] = (
                value
                if value in ("auto", "ignore")
                else _as_int("num_dynamic_feat", value, minimum=0)
            )
        if "test_quantiles" in hp:
            kwargs["test_quantiles"] = tuple(
                _as_float("test_quantiles entries", q)
                for q in _as_list("test_quantiles", hp.pop("test_quantiles"))
            )
        assert not hp, f"unhandled hyperparameters {hp}"  # every known field is handled above
        return cls(**kwargs)

    def to_hyperparameters(self) -> dict[str, Any]:
        """The hyperparameters as a JSON-ready dict (inverse of :meth:`from_hyperparameters`)."""
        out = dataclasses.asdict(self)
        for key in ("cardinality", "test_quantiles"):
            if isinstance(out[key], tuple):
                out[key] = list(out[key])
        if out["early_stopping_patience"] is None:
            del out["early_stopping_patience"]
        return out


def _choice_or_list(name: str, value: Any) -> str | tuple[int, ...]:
    if value in ("auto", "ignore"):
        return str(value)
    return tuple(_as_int(f"{name} entries", v) for v in _as_list(name, value))


# ---------------------------------------------------------------------------------------------
# The resolved model signature (what a trained model is)


@dataclass(frozen=True)
class ModelSpec:
    """Everything that fixes a trained network's shape and its record contract.

    Unlike :class:`DeepARConfig`, nothing here is left to ``auto``: the cardinalities, the
    dynamic-feature count and the lags are resolved. ``io`` validates records against it.
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
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        parse_frequency(self.freq)
        _as_int("context_length", self.context_length)
        _as_int("prediction_length", self.prediction_length)
        if not self.lags or min(self.lags) < 1 or list(self.lags) != sorted(set(self.lags)):
            raise ConfigError(f"lags must be ascending distinct integers >= 1, got {self.lags}")
        for name in ("num_cells", "num_layers"):
            _as_int(name, getattr(self, name))
        for c in (*self.cardinality, *self.embedding_dims):
            _as_int("cardinality and embedding_dims entries", c)
        _as_int("num_dynamic_feat", self.num_dynamic_feat, minimum=0)
        _as_int("num_time_features", self.num_time_features, minimum=0)
        if not 0.0 <= self.dropout_rate < 1.0:
            raise ConfigError(f"dropout_rate must be in [0, 1), got {self.dropout_rate}")
        if len(self.cardinality) != len(self.embedding_dims):
            raise ConfigError(
                f"embedding_dims must have one entry per cardinality, got {self.embedding_dims} "
                f"for {self.cardinality}"
            )
        if self.likelihood not in LIKELIHOODS:
            raise ConfigError(
                f"likelihood must be one of {list(LIKELIHOODS)}, got {self.likelihood!r}"
            )

    @property
    def frequency(self) -> Frequency:
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
        out = dataclasses.asdict(self)
        for key in ("lags", "cardinality", "embedding_dims"):
            out[key] = list(out[key])
        out["extra"] = dict(self.extra)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelSpec:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown model spec field(s) {unknown}")
        kwargs = dict(data)
        for key in ("lags", "cardinality", "embedding_dims"):
            if key in kwargs:
                kwargs[key] = tuple(_as_int(f"{key} entries", v, minimum=0) for v in kwargs[key])
        return cls(**kwargs)


# ---------------------------------------------------------------------------------------------
# Inference configuration (DEEPAR_INFERENCE_CONFIG)


@dataclass(frozen=True)
class InferenceConfig:
    """``DEEPAR_INFERENCE_CONFIG`` (SPEC.md §2): what each output record holds.

    ``quantiles`` are kept as the exact strings used as output keys.
    """

    num_samples: int = 100
    output_types: tuple[str, ...] = ("mean", "quantiles")
    quantiles: tuple[str, ...] = DEFAULT_QUANTILES

    def __post_init__(self) -> None:
        _as_int("num_samples", self.num_samples)
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
        if "quantiles" in self.output_types and not self.quantiles:
            raise ConfigError("quantiles must not be empty when output_types has 'quantiles'")
        keys = tuple(_quantile_key("quantiles", q) for q in self.quantiles)
        if len(set(keys)) != len(keys):
            raise ConfigError(f"quantiles must not repeat a key, got {list(keys)}")
        # Numbers given directly become their output keys (JSON object keys are strings).
        object.__setattr__(self, "quantiles", keys)

    @property
    def quantile_levels(self) -> tuple[float, ...]:
        return tuple(float(q) for q in self.quantiles)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None) -> InferenceConfig:
        """Build from a parsed configuration object; absent keys take SPEC.md §2's defaults.

        Raises:
            ConfigError: for an unknown key or an invalid value, naming the key.
        """
        if data is None:
            return cls()
        if not isinstance(data, Mapping):
            raise ConfigError(f"the inference configuration must be a JSON object, got {data!r}")
        unknown = sorted(set(data) - {"num_samples", "output_types", "quantiles"})
        if unknown:
            raise ConfigError(
                f"unknown inference configuration key(s) {unknown}; "
                "known: ['num_samples', 'output_types', 'quantiles']"
            )
        kwargs: dict[str, Any] = {}
        if "num_samples" in data:
            kwargs["num_samples"] = _as_int("num_samples", data["num_samples"])
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
        """This configuration with the keys of ``overrides`` replaced (e.g. a request's)."""
        if not overrides:
            return self
        base: dict[str, Any] = {
            "num_samples": self.num_samples,
            "output_types": list(self.output_types),
            "quantiles": list(self.quantiles),
        }
        if not isinstance(overrides, Mapping):
            raise ConfigError(f"configuration must be a JSON object, got {overrides!r}")
        base.update(overrides)
        return InferenceConfig.from_mapping(base)

    def to_dict(self) -> dict[str, Any]:
        return {
            "num_samples": self.num_samples,
            "output_types": list(self.output_types),
            "quantiles": list(self.quantiles),
        }
