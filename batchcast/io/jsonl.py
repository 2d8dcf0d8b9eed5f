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
) -> list[dict[str, Any]]:
    """One output dict per series, values as numpy row views, keys in SPEC.md's order
    (``quantiles``, ``samples``, ``mean``), only those in ``config.output_types``.

    For joins (:class:`batchcast.io.join.Join`), which edit the dict before encoding; encode
    with ``orjson.OPT_SERIALIZE_NUMPY``. Arguments as for :func:`encode_forecasts`.
    """
    wanted = config.output_types
    arrays = {
        "quantiles": _checked("quantiles", quantiles, wanted, ndim=3),
        "samples": _checked("samples", samples, wanted, ndim=3),
        "mean": _checked("mean", mean, wanted, ndim=2),
    }
    present = [a for a in arrays.values() if a is not None]
    batch, horizon = present[0].shape[0], present[0].shape[-1]
    for name, array in arrays.items():
        if array is not None and (array.shape[0], array.shape[-1]) != (batch, horizon):
            raise ValueError(f"{name} has shape {array.shape}; expected ({batch}, ..., {horizon})")
    q = arrays["quantiles"]
    if q is not None and q.shape[1] != len(config.quantiles):
        raise ValueError(
            f"quantiles has {q.shape[1]} levels; the configuration has {len(config.quantiles)}"
        )
    keys = config.quantiles
    s, m = arrays["samples"], arrays["mean"]
    out: list[dict[str, Any]] = []
    for b in range(batch):
        record: dict[str, Any] = {}
        if q is not None:
            row = q[b]
            record["quantiles"] = {key: row[i] for i, key in enumerate(keys)}
        if s is not None:
            record["samples"] = s[b]
        if m is not None:
            record["mean"] = m[b]
        out.append(record)
    return out


def encode_forecasts(
    config: InferenceConfig,
    *,
    mean: np.ndarray | None,
    quantiles: np.ndarray | None,
    samples: np.ndarray | None,
) -> list[bytes]:
    """Encode one JSON object per series (no newline).

    Args:
        config: which outputs (``output_types``) and the quantile keys, exactly as configured.
        mean: (B, P), needed when ``"mean"`` is asked for.
        quantiles: (B, Q, P) in ``config.quantiles``' order, needed for ``"quantiles"``.
        samples: (B, S, P), needed for ``"samples"``.

    Returns:
        B encoded objects.

    Raises:
        ValueError: when an asked-for array is missing or the shapes disagree (a bug in the
            caller, not a user error).
    """
    dumps = orjson.dumps
    return [
        dumps(d, option=_NUMPY)
        for d in forecast_dicts(config, mean=mean, quantiles=quantiles, samples=samples)
    ]


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
