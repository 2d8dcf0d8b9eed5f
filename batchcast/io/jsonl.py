"""Output records: forecast arrays -> JSON Lines (SPEC.md §3).

orjson serialises numpy float32 arrays itself (shortest float32 repr, no ``.tolist()``),
which keeps encoding well below the model's cost. A NaN in a forecast (which a sound
model never produces) would be written as ``null``, JSON having no NaN.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson

from batchcast.errors import ConfigError, RecordError
from batchcast.forecast.config import InferenceConfig

__all__ = ["ASSEMBLE_WITH", "encode_error", "encode_forecasts", "forecast_dicts", "join_lines"]

ASSEMBLE_WITH = ("Line", "None")
_NUMPY = orjson.OPT_SERIALIZE_NUMPY


def forecast_dicts(
    config: InferenceConfig,
    *,
    mean: np.ndarray | None,
    quantiles: np.ndarray | None,
    samples: np.ndarray | None,
    probabilities: np.ndarray | None = None,
    predicted: np.ndarray | None = None,
) -> list[dict[str, Any]]:
    """One output dict per series, values as numpy row views, keys in ``config.output_keys``
    order (by default SPEC.md §3's: ``quantiles``, ``samples``, ``mean``).

    For joins (:class:`batchcast.io.join.Join`), which edit the dict before encoding, and for
    the CSV encoder; encode with ``orjson.OPT_SERIALIZE_NUMPY``. Arguments as for
    :func:`encode_forecasts`.
    """
    keys = config.output_keys
    arrays = {
        "quantiles": _checked("quantiles", quantiles, keys, ndim=3),
        "samples": _checked("samples", samples, keys, ndim=3),
        "mean": _checked("mean", mean, keys, ndim=2),
    }
    present = [a for a in arrays.values() if a is not None]
    batch = present[0].shape[0] if present else _classes_rows(probabilities, predicted)
    if present:
        horizon = present[0].shape[-1]
        for name, array in arrays.items():
            if array is not None and (array.shape[0], array.shape[-1]) != (batch, horizon):
                raise ValueError(
                    f"{name} has shape {array.shape}; expected ({batch}, ..., {horizon})"
                )
    q = arrays["quantiles"]
    if q is not None and q.shape[1] != len(config.quantiles):
        raise ValueError(
            f"quantiles has {q.shape[1]} levels; the configuration has {len(config.quantiles)}"
        )
    columns = {name: a for name, a in arrays.items() if a is not None}
    if config.wants_classes:
        columns.update(_class_columns(config, probabilities, predicted, batch))
    quantile_keys = config.quantiles
    out: list[dict[str, Any]] = []
    for b in range(batch):
        record: dict[str, Any] = {}
        for key in keys:
            value = columns[key][b]
            record[key] = (
                {k: value[i] for i, k in enumerate(quantile_keys)} if key == "quantiles" else value
            )
        out.append(record)
    return out


def _classes_rows(probabilities: np.ndarray | None, predicted: np.ndarray | None) -> int:
    if probabilities is None or predicted is None:
        raise ValueError("the output keys ask for classes but no probabilities were given")
    return int(probabilities.shape[0])


def _class_columns(
    config: InferenceConfig,
    probabilities: np.ndarray | None,
    predicted: np.ndarray | None,
    batch: int,
) -> dict[str, Any]:
    """The classification keys of SPEC.md §8, one entry per series."""
    assert config.classes is not None  # InferenceConfig guarantees it for classification keys
    if probabilities is None or predicted is None or probabilities.shape[0] != batch:
        raise ValueError("the output keys ask for classes but no probabilities were given")
    labels = list(config.classes.labels)
    probs = np.ascontiguousarray(probabilities, dtype=np.float32)  # (B, K + 1)
    rows = np.arange(batch)
    # Two classes: the upper ("True": the aggregate reaches the threshold); more: the
    # probability of the predicted label.
    chosen = probs[:, 1] if probs.shape[1] == 2 else probs[rows, predicted]
    return {
        "predicted_label": [labels[int(j)] for j in predicted],
        "probability": chosen,
        "probabilities": probs,
        "labels": [labels] * batch,
    }


def encode_forecasts(
    config: InferenceConfig,
    *,
    mean: np.ndarray | None,
    quantiles: np.ndarray | None,
    samples: np.ndarray | None,
    probabilities: np.ndarray | None = None,
    predicted: np.ndarray | None = None,
) -> list[bytes]:
    """Encode one JSON object per series (no newline).

    Args:
        config: which keys (``output_keys``), the quantile keys exactly as configured, and the
            class labels.
        mean: (B, P), needed when ``"mean"`` is asked for.
        quantiles: (B, Q, P) in ``config.quantiles``' order, needed for ``"quantiles"``.
        samples: (B, S, P), needed for ``"samples"``.
        probabilities: (B, K + 1) class probabilities, needed for the classification keys.
        predicted: (B,) the most probable class, with ``probabilities``.

    Returns:
        B encoded objects.

    Raises:
        ValueError: when an asked-for array is missing or the shapes disagree (a bug in the
            caller, not a user error).
    """
    dumps = orjson.dumps
    dicts = forecast_dicts(
        config,
        mean=mean,
        quantiles=quantiles,
        samples=samples,
        probabilities=probabilities,
        predicted=predicted,
    )
    return [dumps(d, option=_NUMPY) for d in dicts]


def _checked(
    name: str, array: np.ndarray | None, wanted: Sequence[str], *, ndim: int
) -> np.ndarray | None:
    if name not in wanted:
        return None
    if array is None:
        raise ValueError(f"output_types asks for {name!r} but no {name} array was given")
    if array.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {array.shape}")
    # orjson needs C-contiguous native float32 rows; a no-op for the usual arrays.
    return np.ascontiguousarray(array, dtype=np.float32)


def encode_error(error: RecordError) -> bytes:
    """A record error as the output line of ``record`` failure mode:
    ``{"error": {"line": N, "field": ..., "message": ...}}`` (the line must already be the
    file's, not the shard's: see :func:`batchcast.io.records.renumber`)."""
    return orjson.dumps(
        {"error": {"line": error.line, "field": error.field, "message": error.message}}
    )


def join_lines(lines: Sequence[bytes], *, assemble_with: str) -> bytes:
    """Assemble encoded records into one blob.

    Args:
        lines: encoded records, without newlines.
        assemble_with: ``"Line"`` (each record ends with ``\\n``) or ``"None"`` (concatenated,
            as SageMaker's AssembleWith=None does).

    Raises:
        ConfigError: for another ``assemble_with``.
    """
    if assemble_with == "Line":
        return b"\n".join(lines) + b"\n" if lines else b""
    if assemble_with == "None":
        return b"".join(lines)
    raise ConfigError(f"AssembleWith must be one of {list(ASSEMBLE_WITH)}, got {assemble_with!r}")
