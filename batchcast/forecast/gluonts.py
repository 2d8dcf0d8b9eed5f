"""Import a GluonTS torch DeepAR predictor (``predictor.serialize(path)``) as a batchcast model.

GluonTS writes three files: ``gluonts-config.json`` (versions), ``predictor.json`` (the
predictor, its input transformation and the network's init arguments, in GluonTS's serde
encoding: ``{"__kind__": "instance", "class": ..., "kwargs": ...}``) and
``prediction-net-state.pt`` (the network's state dict). The importer reads the JSON as plain
data and the weights with ``torch.load(weights_only=True)``: nothing in the artifact is
executed, no class named in it is imported, and gluonts need not be installed. The files
arrive as bytes (:func:`convert_gluonts`); ``batchcast.models.import_gluonts`` reads them from
a folder, local or on S3, and saves the result.

What changes on the way (GluonTS's LSTM input is ``[lags, cat embeddings, static reals,
log(scale), time features, age, dynamic reals]``; batchcast's is ``[lags, cat embeddings,
log(scale), time features, age, dynamic reals]``, DEEPAR_REFERENCE.md A.9):

* **Folded**: GluonTS feeds dummy inputs to a model trained without categorical or static
  real features: its transformation sets ``feat_static_cat = [0]`` (a 1x1 embedding) and
  ``feat_static_real = [0.0]``. These inputs are the same constant for every series and step,
  so their contribution ``W_ih_l0[:, cols] @ value`` is added to ``bias_ih_l0`` and the columns
  are deleted; the network then computes the same function without them (batchcast's records
  have no such fields).
* **Stacked**: the per-argument heads ``param_proj.proj.{i}`` (each ``Linear(H, 1)``, in
  ``args_dim`` order: df, loc, scale / loc, scale / total_count, logits) become one
  ``head = Linear(H, num_args)`` in the same order.
* **Kept**: real categorical embeddings (their sizes are read from the weights), the LSTM,
  the lags as serialized (``lags_seq`` is 1-based in the JSON; GluonTS subtracts 1 inside the
  module; when it is null GluonTS used ``get_lags_for_frequency(freq)``, which
  :func:`~batchcast.forecast.features.lags_for_frequency` reproduces, checked against the
  weights and the InstanceSplitter's window), ``default_scale`` (None keeps GluonTS's
  batch-wide default). A ``lags_seq`` out of order or with repeats is sorted and its weight
  columns permuted (a repeated lag's columns summed): batchcast reads each lag once, ascending.

Rejected with :class:`~batchcast.errors.ModelError` naming the cause: anything that is not a
torch DeepAR predictor; ``scaling=False``; ``nonnegative_pred_samples=True``; real static
features; a distribution other than StudentTOutput, NormalOutput or NegativeBinomialOutput
(BetaOutput too: GluonTS scales a beta affinely, batchcast's beta is unscaled); a frequency
batchcast cannot express; custom time features; imputation other than the distribution's
dummy value; a ``lead_time`` or ``output_transform``; weights that do not fit the arguments.
"""

from __future__ import annotations

import dataclasses
import io
import json
import pickle
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from batchcast.coerce import as_int
from batchcast.errors import ConfigError, ModelError
from batchcast.forecast.artifacts import LoadedModel
from batchcast.forecast.config import ModelSpec
from batchcast.forecast.features import lags_for_frequency, time_feature_names
from batchcast.forecast.frequency import Frequency, parse_frequency
from batchcast.forecast.likelihoods import get_likelihood
from batchcast.forecast.model import DeepAR

__all__ = ["GLUONTS_FILES", "convert_gluonts", "normalize_freq"]

PREDICTOR_JSON = "predictor.json"
CONFIG_JSON = "gluonts-config.json"
STATE_FILE = "prediction-net-state.pt"
GLUONTS_FILES = (PREDICTOR_JSON, CONFIG_JSON, STATE_FILE)

_PREDICTOR_CLASS = "gluonts.torch.model.predictor.PyTorchPredictor"
_LIGHTNING_CLASS = "gluonts.torch.model.deepar.lightning_module.DeepARLightningModule"
_MODULE_CLASS = "gluonts.torch.model.deepar.module.DeepARModel"

# GluonTS distribution output -> (batchcast likelihood, number of heads in args_dim order).
_DISTRIBUTIONS: dict[str, tuple[str, int]] = {
    "StudentTOutput": ("student-T", 3),  # df, loc, scale
    "NormalOutput": ("gaussian", 2),  # loc, scale
    "NegativeBinomialOutput": ("negative-binomial", 2),  # total_count, logits
}

_UNSUPPORTED_WHY = {
    "BetaOutput": " (GluonTS scales a beta by the series' mean; batchcast's beta is unscaled)",
}

# pandas offset names -> SageMaker's units. Weeks must end on Sunday (batchcast's W, and
# pandas' default); other anchors would shift every weekly time feature.
_FREQ_UNITS = {
    "h": "H",
    "H": "H",
    "T": "min",
    "min": "min",
    "D": "D",
    "W": "W",
    "W-SUN": "W",
    "M": "M",
    "ME": "M",
}
_FREQ_RE = re.compile(r"^\s*(\d*)\s*([A-Za-z]+(?:-[A-Za-z]+)?)\s*$")


def normalize_freq(freq: str) -> Frequency:
    """A pandas frequency (``h``, ``2H``, ``T``, ``ME``, ``W-SUN``...) in SageMaker's spelling.

    Raises:
        ModelError: for a unit batchcast does not support (e.g. ``Q``, ``B``, ``W-MON``).
    """
    match = _FREQ_RE.match(str(freq))
    unit = _FREQ_UNITS.get(match.group(2)) if match else None
    if match is None or unit is None:
        raise ModelError(
            f"GluonTS model frequency {freq!r} is not supported: expected a multiple of "
            f"{sorted(_FREQ_UNITS)}"
        )
    try:
        return parse_frequency(f"{match.group(1)}{unit}")
    except ConfigError as err:
        raise ModelError(f"GluonTS model frequency {freq!r}: {err}") from err


# ---------------------------------------------------------------------------------------------
# Reading the serde JSON as data


def _file(files: Mapping[str, bytes], name: str, src: str) -> bytes:
    if name not in files:
        raise ModelError(f"{src} is not a serialized GluonTS predictor: {name} is missing")
    return files[name]


def _parse_json(files: Mapping[str, bytes], name: str, src: str) -> Any:
    try:
        return json.loads(_file(files, name, src).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelError(f"{src}/{name}: cannot read it as JSON: {err}") from err


def _instances(node: Any) -> Iterator[dict[str, Any]]:
    """Every serde instance under ``node`` (depth first, in document order)."""
    if isinstance(node, dict):
        if node.get("__kind__") == "instance" and isinstance(node.get("class"), str):
            yield node
        for value in node.values():
            yield from _instances(value)
    elif isinstance(node, list):
        for value in node:
            yield from _instances(value)


def _kwargs(instance: Any) -> dict[str, Any]:
    """A serde instance's kwargs ({} for anything else)."""
    kwargs = instance.get("kwargs") if isinstance(instance, dict) else None
    return kwargs if isinstance(kwargs, dict) else {}


def _class_tail(node: Any) -> str:
    """``"StudentTOutput"`` for ``{"class": "gluonts....StudentTOutput"}``; "" otherwise."""
    name = node.get("class") if isinstance(node, dict) else None
    return name.rsplit(".", 1)[-1] if isinstance(name, str) else ""


def _network_args(predictor: Any, where: str) -> tuple[dict[str, Any], str]:
    """The DeepARModel's init arguments and the state-dict key prefix of its weights."""
    if not isinstance(predictor, dict) or predictor.get("class") != _PREDICTOR_CLASS:
        found = predictor.get("class") if isinstance(predictor, dict) else type(predictor).__name__
        raise ModelError(
            f"{where}: expected a GluonTS torch predictor ({_PREDICTOR_CLASS}), found {found!r}"
        )
    net = _kwargs(predictor).get("prediction_net")
    net_class = net.get("class") if isinstance(net, dict) else None
    if net_class == _LIGHTNING_CLASS:
        args = _kwargs(net).get("model_kwargs")
        prefix = "model."
    elif net_class == _MODULE_CLASS:
        args, prefix = _kwargs(net), ""
    else:
        raise ModelError(
            f"{where}: the prediction network is {net_class!r}, not GluonTS's torch DeepAR "
            f"({_LIGHTNING_CLASS})"
        )
    if not isinstance(args, dict):
        raise ModelError(f"{where}: the DeepAR network's arguments are missing")
    return args, prefix


def _transforms(predictor: dict[str, Any], name: str) -> list[dict[str, Any]]:
    """The predictor's input transformations of class ``...name``."""
    chain = _kwargs(predictor).get("input_transform")
    return [t for t in _instances(chain) if _class_tail(t) == name]


def _require(args: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in args:
        raise ModelError(f"{where}: the DeepAR arguments have no {key!r}")
    return args[key]


def _as_int(value: Any, key: str, where: str) -> int:
    """A JSON integer from the predictor's arguments (text is not accepted: it is data)."""
    try:
        return as_int(key, value, minimum=None, text=False)
    except ConfigError as err:
        raise ModelError(f"{where}: {err}") from None


# ---------------------------------------------------------------------------------------------
# The import


def _constant_inputs(predictor: dict[str, Any], where: str) -> dict[str, list[float]]:
    """``{field: value}`` of the static fields the transformation overwrites with a constant."""
    constants: dict[str, list[float]] = {}
    for t in _transforms(predictor, "SetField"):
        field, value = _kwargs(t).get("output_field"), _kwargs(t).get("value")
        if field in ("feat_static_cat", "feat_static_real"):
            if not isinstance(value, list) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
            ):
                raise ModelError(f"{where}: SetField({field}) has a non-numeric value {value!r}")
            constants[field] = [float(v) for v in value]
    return constants


def _check_transformation(
    predictor: dict[str, Any], freq: Frequency, dummy_value: float, where: str
) -> int:
    """Check the input transformation batchcast reproduces; return the number of time features."""
    steps = _transforms(predictor, "AddTimeFeatures")
    if len(steps) != 1:
        raise ModelError(f"{where}: expected one AddTimeFeatures step, found {len(steps)}")
    features = _kwargs(steps[0]).get("time_features")
    names = tuple(_class_tail(f) for f in features) if isinstance(features, list) else None
    expected = time_feature_names(freq)
    if names != expected:
        raise ModelError(
            f"{where}: time features {names} are not supported; batchcast computes GluonTS's "
            f"defaults for {freq}: {expected}"
        )
    for age in _transforms(predictor, "AddAgeFeature"):
        if _kwargs(age).get("log_scale") is not True:
            raise ModelError(f"{where}: only the log-scaled age feature is supported")
    for observed in _transforms(predictor, "AddObservedValuesIndicator"):
        method = _kwargs(observed).get("imputation_method")
        if method is not None and (
            _class_tail(method) != "DummyValueImputation"
            or _kwargs(method).get("dummy_value") != dummy_value
        ):
            raise ModelError(
                f"{where}: missing values are imputed by {_class_tail(method)} "
                f"{_kwargs(method)}; batchcast imputes the "
                f"distribution's dummy value {dummy_value}"
            )
    if _kwargs(predictor).get("lead_time", 0) != 0:
        raise ModelError(
            f"{where}: lead_time {_kwargs(predictor).get('lead_time')} is not supported"
        )
    if _kwargs(predictor).get("output_transform") is not None:
        raise ModelError(f"{where}: predictors with an output_transform are not supported")
    return len(expected)


def _load_state(data: bytes, where: str) -> dict[str, torch.Tensor]:
    try:
        # weights_only: the unpickler accepts tensors and plain containers only, never code.
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, OSError, EOFError, ValueError) as err:
        raise ModelError(f"{where}: not a plain tensor state dict: {err}") from err
    if not isinstance(state, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise ModelError(f"{where}: expected a mapping of names to tensors")
    return dict(state)


@dataclass(frozen=True)
class _Plan:
    """What the JSON says: the batchcast spec and how GluonTS's inputs map onto it."""

    spec: ModelSpec
    num_heads: int
    lag_columns: tuple[int, ...]  # GluonTS's lag columns in its order (any order, repeats)
    cardinality: tuple[int, ...]  # GluonTS's, dummy included
    cat_constant: tuple[int, ...] | None  # the dummy category per feature, None if real
    static_real_constant: tuple[float, ...]  # the dummy static real(s)
    num_dynamic: int  # GluonTS's count: time features + age + the user's


def _plan(predictor: dict[str, Any], args: dict[str, Any], where: str) -> _Plan:
    """Read and check the network arguments and the input transformation."""
    distr = _require(args, "distr_output", where)
    distr_class = distr.get("class", "") if isinstance(distr, dict) else ""
    if _class_tail(distr) not in _DISTRIBUTIONS or not distr_class.startswith("gluonts.torch."):
        why = _UNSUPPORTED_WHY.get(_class_tail(distr), "")
        raise ModelError(
            f"{where}: distribution {distr_class or distr!r} is not supported{why}; batchcast "
            f"imports {sorted(_DISTRIBUTIONS)}"
        )
    likelihood_name, num_heads = _DISTRIBUTIONS[_class_tail(distr)]
    if args.get("scaling", True) is not True:
        raise ModelError(
            f"{where}: scaling={args.get('scaling')!r} is not supported (batchcast always "
            "mean-scales)"
        )
    if args.get("nonnegative_pred_samples", False) is not False:
        raise ModelError(
            f"{where}: nonnegative_pred_samples=True is not supported (batchcast does not clip "
            "samples at zero)"
        )
    freq = normalize_freq(_require(args, "freq", where))
    dummy_value = get_likelihood(likelihood_name).value_in_support
    num_time = _check_transformation(predictor, freq, dummy_value, where)

    constants = _constant_inputs(predictor, where)
    num_static_real = _as_int(args.get("num_feat_static_real", 1), "num_feat_static_real", where)
    static_real = constants.get("feat_static_real")
    if static_real is None or len(static_real) != num_static_real:
        raise ModelError(
            f"{where}: the model uses {num_static_real} real static feature(s); batchcast's "
            "records have none (only GluonTS's constant dummy can be imported)"
        )
    cardinality = tuple(
        _as_int(c, "cardinality", where) for c in _require(args, "cardinality", where)
    )
    cat_constant = constants.get("feat_static_cat")
    if cat_constant is not None and len(cat_constant) != len(cardinality):
        raise ModelError(f"{where}: SetField(feat_static_cat) does not match {cardinality}")

    context = _as_int(_require(args, "context_length", where), "context_length", where)
    horizon = _as_int(_require(args, "prediction_length", where), "prediction_length", where)
    num_dynamic = _as_int(args.get("num_feat_dynamic_real", 1), "num_feat_dynamic_real", where)
    # GluonTS's module counts time features + age + the user's dynamic features (the
    # estimator passes 1 + its num_feat_dynamic_real + len(time_features)).
    user_dynamic = num_dynamic - num_time - 1
    stacked = [_kwargs(t).get("input_fields") for t in _transforms(predictor, "VstackFeatures")]
    has_dynamic = any(isinstance(f, list) and "feat_dynamic_real" in f for f in stacked)
    if user_dynamic < 0 or has_dynamic != (user_dynamic > 0):
        raise ModelError(
            f"{where}: num_feat_dynamic_real={num_dynamic} does not match {num_time} time "
            f"features + age + {'some' if has_dynamic else 'no'} dynamic features"
        )

    lags_seq = args.get("lags_seq")
    if lags_seq:  # 1-based as serialized; GluonTS's module shifts them to 0-based itself
        lag_columns = tuple(_as_int(v, "lags_seq", where) for v in lags_seq)
        if min(lag_columns) < 1:
            raise ModelError(f"{where}: lags_seq must be >= 1, got {list(lag_columns)}")
    else:  # None: GluonTS's module computed get_lags_for_frequency(freq), as batchcast does
        lag_columns = lags_for_frequency(freq)
    lags = tuple(sorted(set(lag_columns)))  # _convert permutes and merges the columns
    for splitter in _transforms(predictor, "InstanceSplitter"):
        past = _kwargs(splitter).get("past_length")
        if past != context + max(lags) - 1:
            raise ModelError(
                f"{where}: the InstanceSplitter cuts {past} past points but lags up to "
                f"{max(lags)} with context {context} need {context + max(lags) - 1}"
            )
        if _kwargs(splitter).get("dummy_value", dummy_value) != dummy_value:
            raise ModelError(f"{where}: the InstanceSplitter pads with a non-default value")

    try:
        spec = ModelSpec(
            freq=str(freq),
            context_length=context,
            prediction_length=horizon,
            lags=lags,
            num_time_features=num_time,
            cardinality=() if cat_constant is not None else cardinality,
            # The embedding sizes are read from the weights (_convert fills them in).
            embedding_dims=() if cat_constant is not None else (1,) * len(cardinality),
            num_dynamic_feat=user_dynamic,
            num_cells=_as_int(args.get("hidden_size", 40), "hidden_size", where),
            num_layers=_as_int(args.get("num_layers", 2), "num_layers", where),
            dropout_rate=float(args.get("dropout_rate", 0.1)),
            likelihood=likelihood_name,
            default_scale=(
                None if args.get("default_scale") is None else float(args["default_scale"])
            ),
        )
    except (ConfigError, TypeError, ValueError) as err:
        raise ModelError(f"{where}: {err}") from err
    return _Plan(
        spec=spec,
        num_heads=num_heads,
        lag_columns=lag_columns,
        cardinality=cardinality,
        cat_constant=None if cat_constant is None else tuple(int(v) for v in cat_constant),
        static_real_constant=tuple(static_real),
        num_dynamic=num_dynamic,
    )


def _convert(plan: _Plan, state: dict[str, torch.Tensor], where: str) -> DeepAR:
    """Build the batchcast network from GluonTS's weights, folding the constant inputs."""
    spec = plan.spec
    n_emb = len(plan.cardinality)
    expected = {
        f"param_proj.proj.{i}.{p}" for i in range(plan.num_heads) for p in ("weight", "bias")
    }
    expected |= {f"embedder._embedders.{i}.weight" for i in range(n_emb)}
    expected |= {
        f"rnn.{w}_l{layer}"
        for layer in range(spec.num_layers)
        for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
    }
    if set(state) != expected:
        raise ModelError(
            f"{where}: the weights do not match a DeepAR with {spec.num_layers} layer(s), "
            f"{n_emb} embedding(s) and {plan.num_heads} heads: missing "
            f"{sorted(expected - set(state))}, unexpected {sorted(set(state) - expected)}"
        )
    tables = [state[f"embedder._embedders.{i}.weight"] for i in range(n_emb)]  # (c_i, d_i)
    for c, table in zip(plan.cardinality, tables, strict=True):
        if table.ndim != 2 or table.shape[0] != c:
            raise ModelError(
                f"{where}: an embedding of shape {tuple(table.shape)} for cardinality {c}"
            )
    emb_dims = tuple(int(t.shape[1]) for t in tables)

    # GluonTS's layer-0 input: [lags K | embeddings | static reals | log(scale) | dynamic].
    w_ih = state["rnn.weight_ih_l0"].double()  # (4H, D_gluonts)
    bias = state["rnn.bias_ih_l0"].double()  # (4H,)
    k, n_real = len(plan.lag_columns), len(plan.static_real_constant)
    width = k + sum(emb_dims) + n_real + 1 + plan.num_dynamic
    if w_ih.ndim != 2 or w_ih.shape[1] != width:
        raise ModelError(
            f"{where}: the LSTM reads {w_ih.shape[-1]} inputs, but {k} lags + {sum(emb_dims)} "
            f"embedding + {n_real} static real + log(scale) + {plan.num_dynamic} dynamic "
            f"make {width}"
        )
    # batchcast reads each lag once, ascending: a lag GluonTS lists twice reads the same value
    # into both columns, so their weights add up.
    lag_block = torch.stack(
        [
            w_ih[:, [i for i, lag in enumerate(plan.lag_columns) if lag == wanted]].sum(dim=1)
            for wanted in spec.lags
        ],
        dim=1,
    )  # (4H, len(spec.lags))
    constant_cols: list[int] = []
    col = k
    for i, table in enumerate(tables):
        cols = list(range(col, col + emb_dims[i]))
        col += emb_dims[i]
        if plan.cat_constant is not None:
            row = plan.cat_constant[i]
            if not 0 <= row < table.shape[0]:
                raise ModelError(f"{where}: dummy category {row} outside its embedding")
            bias += w_ih[:, cols] @ table[row].double()  # the dummy embedding's contribution
            constant_cols += cols
    cols = list(range(col, col + n_real))
    bias += w_ih[:, cols] @ torch.tensor(plan.static_real_constant, dtype=torch.float64)
    constant_cols += cols
    keep = [i for i in range(k, width) if i not in set(constant_cols)]

    if spec.cardinality:
        spec = dataclasses.replace(spec, embedding_dims=emb_dims)
    weights = {name: v for name, v in state.items() if name.startswith("rnn.")}
    weights["rnn.weight_ih_l0"] = torch.cat((lag_block, w_ih[:, keep]), dim=1).float()  # (4H, D)
    weights["rnn.bias_ih_l0"] = bias.float()
    if spec.cardinality:
        weights.update({f"embedders.{i}.weight": t for i, t in enumerate(tables)})
    heads = range(plan.num_heads)
    weights["head.weight"] = torch.cat([state[f"param_proj.proj.{i}.weight"] for i in heads])
    weights["head.bias"] = torch.cat([state[f"param_proj.proj.{i}.bias"] for i in heads])
    model = DeepAR(spec)
    try:
        model.load_state_dict(weights)
    except RuntimeError as err:  # a shape that contradicts the arguments (e.g. hidden_size)
        raise ModelError(f"{where}: the weights do not fit the arguments: {err}") from err
    return model.eval()


def convert_gluonts(files: Mapping[str, bytes], *, src: str) -> LoadedModel:
    """Convert a serialized GluonTS torch DeepAR predictor into a batchcast model.

    Args:
        files: the predictor's files by name (:data:`GLUONTS_FILES`), as
            ``predictor.serialize(path)`` wrote them.
        src: where they came from, for messages.

    Returns:
        The model in eval mode on the CPU, with metadata
        ``{"imported_from": "gluonts", "gluonts_version": ...}``.

    Raises:
        ModelError: if the files are not a torch DeepAR predictor or use something batchcast
            does not reproduce (see the module docstring); the message names it.
    """
    src = src.rstrip("/")
    where = f"{src}/{PREDICTOR_JSON}"
    predictor = _parse_json(files, PREDICTOR_JSON, src)
    versions = _parse_json(files, CONFIG_JSON, src)
    args, prefix = _network_args(predictor, where)
    plan = _plan(predictor, args, where)
    state = _load_state(_file(files, STATE_FILE, src), f"{src}/{STATE_FILE}")
    if prefix:
        state = {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
    model = _convert(plan, state, f"{src}/{STATE_FILE}")
    metadata = {
        "imported_from": "gluonts",
        "gluonts_version": versions.get("gluonts") if isinstance(versions, dict) else None,
    }
    return LoadedModel(model=model, metadata=metadata)
