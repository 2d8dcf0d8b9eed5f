"""Model artifacts as bytes: a model <-> its two files ``{name: bytes}``.

A model is two files::

    config.json        {"format": "batchcast-deepar", "format_version": 1, "spec": {...},
                        "hyperparameters": {...} | null, "metadata": {...}}
    model.safetensors  the state dict

safetensors is a flat tensor container: loading it cannot run code (SPEC.md §6 rules out
pickles, which ``torch.save`` writes). No I/O here: :mod:`batchcast.io.model_files` reads and
writes the files (a folder or a ``model.tar.gz``, local or S3) and :mod:`batchcast.models`
joins the two (``load_model(uri)``, ``save_model(model, uri)``).

Before a network is built, the configuration is checked against the weights file's header
(tensor names, shapes and dtype; :func:`check_weights`), so a corrupt or mismatched artifact
(``num_cells`` 1e9 beside small weights) fails as a one-line :class:`ModelError` instead of
asking for hundreds of GB (issue 9.7).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from batchcast.errors import ModelError
from batchcast.forecast.config import ModelSpec
from batchcast.forecast.model import DeepAR, state_shapes

__all__ = [
    "CONFIG_NAME",
    "MODEL_FILES",
    "WEIGHTS_NAME",
    "LoadedModel",
    "check_weights",
    "decode_model",
    "decode_spec",
    "encode_model",
]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
MODEL_FILES = (CONFIG_NAME, WEIGHTS_NAME)
FORMAT = "batchcast-deepar"
FORMAT_VERSION = 1
# A safetensors header is a small JSON table; a "length" past this is a corrupt file.
_MAX_HEADER_BYTES = 100 << 20


@dataclass(frozen=True)
class LoadedModel:
    """A loaded network with what was stored beside it."""

    model: DeepAR
    hyperparameters: Mapping[str, Any] | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def spec(self) -> ModelSpec:
        return self.model.spec


def encode_model(
    model: DeepAR,
    *,
    hyperparameters: Mapping[str, Any] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> dict[str, bytes]:
    """A model's two files.

    Args:
        model: the network (its spec is stored with it).
        hyperparameters: what it was trained with, if known.
        metadata: anything JSON-ready to keep beside it (seed, epochs, provenance).

    Returns:
        ``{CONFIG_NAME: JSON, WEIGHTS_NAME: safetensors}``.
    """
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "spec": model.spec.to_dict(),
        "hyperparameters": dict(hyperparameters) if hyperparameters is not None else None,
        "metadata": dict(metadata or {}),
    }
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    return {
        CONFIG_NAME: orjson.dumps(config, option=orjson.OPT_INDENT_2),
        WEIGHTS_NAME: save_safetensors(state),
    }


def _require(uri: str, files: Mapping[str, bytes], needed: tuple[str, ...]) -> None:
    missing = [n for n in needed if n not in files]
    if missing:
        raise ModelError(
            f"{uri} is not a batchcast model: missing {missing} (expected a folder or model.tar.gz "
            f"holding {CONFIG_NAME} and {WEIGHTS_NAME}; import GluonTS models with "
            "`batchcast import-gluonts`)"
        )


def _config(uri: str, files: Mapping[str, bytes]) -> dict[str, Any]:
    _require(uri, files, (CONFIG_NAME,))
    try:
        config = orjson.loads(files[CONFIG_NAME])
    except orjson.JSONDecodeError as err:
        raise ModelError(f"{uri}/{CONFIG_NAME} is not valid JSON: {err}") from err
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise ModelError(f"{uri}/{CONFIG_NAME}: format must be {FORMAT!r}")
    if config.get("format_version") != FORMAT_VERSION:
        raise ModelError(
            f"{uri}: format_version {config.get('format_version')!r} is not supported "
            f"(this batchcast reads version {FORMAT_VERSION})"
        )
    return config


def _spec(uri: str, config: Mapping[str, Any]) -> ModelSpec:
    try:
        return ModelSpec.from_dict(config["spec"])
    except (KeyError, TypeError, ValueError) as err:  # ConfigError is a ValueError
        raise ModelError(f"{uri}: invalid model spec: {err}") from err


def decode_spec(files: Mapping[str, bytes], *, uri: str) -> ModelSpec:
    """A model's signature from its ``config.json`` (the weights need not be there).

    Args:
        files: the model's files (at least ``config.json``).
        uri: where they came from, for messages.

    Raises:
        ModelError: when ``config.json`` is missing or is not a valid batchcast configuration.
    """
    return _spec(uri, _config(uri, files))


def check_weights(spec: ModelSpec, weights: bytes, *, uri: str) -> None:
    """Check a safetensors file's header against the tensors ``DeepAR(spec)`` has.

    Reads the header only (names, dtypes, shapes, where the data lies); nothing is allocated
    for the tensors.

    Raises:
        ModelError: for a header that cannot be read, tensor data shorter or longer than the
            header says, a missing or unexpected tensor, a shape that differs, or a dtype
            other than float32.
    """
    mismatch = f"{uri}: weights do not match the model spec"
    if len(weights) < 8:
        raise ModelError(f"{mismatch}: {WEIGHTS_NAME} is {len(weights)} bytes, not safetensors")
    (length,) = struct.unpack("<Q", weights[:8])
    if length > min(len(weights) - 8, _MAX_HEADER_BYTES):
        raise ModelError(f"{mismatch}: {WEIGHTS_NAME} has a corrupt header (length {length})")
    try:
        header = orjson.loads(weights[8 : 8 + length])
    except orjson.JSONDecodeError as err:
        raise ModelError(f"{mismatch}: {WEIGHTS_NAME} has a corrupt header ({err})") from err
    if not isinstance(header, dict):
        raise ModelError(f"{mismatch}: {WEIGHTS_NAME} has a corrupt header")
    found = {name: info for name, info in header.items() if name != "__metadata__"}
    data_bytes = len(weights) - 8 - length
    ends = [
        info.get("data_offsets", [0, 0])[-1] for info in found.values() if isinstance(info, dict)
    ]
    if max(ends, default=0) != data_bytes:
        raise ModelError(
            f"{mismatch}: {WEIGHTS_NAME} holds {data_bytes} bytes of tensor data, its header "
            f"describes {max(ends, default=0)} (truncated or corrupt)"
        )
    seen = 0
    for name, shape in state_shapes(spec):
        info = found.get(name)
        if not isinstance(info, dict):
            raise ModelError(f"{mismatch}: no tensor {name!r} of shape {list(shape)}")
        if info.get("shape") != list(shape):
            raise ModelError(
                f"{mismatch}: {name!r} has shape {info.get('shape')}, the spec needs {list(shape)}"
            )
        if info.get("dtype") != "F32":
            raise ModelError(f"{mismatch}: {name!r} is {info.get('dtype')}, expected F32")
        seen += 1
    if seen != len(found):
        expected = {name for name, _ in state_shapes(spec)}
        raise ModelError(f"{mismatch}: unexpected tensor(s) {sorted(set(found) - expected)}")


def decode_model(
    files: Mapping[str, bytes], *, uri: str, device: str | torch.device = "cpu"
) -> LoadedModel:
    """Build the model from its files onto ``device``, in eval mode.

    Args:
        files: ``config.json`` and ``model.safetensors``.
        uri: where they came from, for messages.
        device: where the weights go.

    Raises:
        ModelError: if a file is missing, the configuration is invalid, or the weights do not
            fit it (checked before the network is built).
    """
    _require(uri, files, MODEL_FILES)
    config = _config(uri, files)
    spec = _spec(uri, config)
    check_weights(spec, files[WEIGHTS_NAME], uri=uri)
    try:
        model = DeepAR(spec)
    except (TypeError, ValueError) as err:  # sizes nn.LSTM rejects
        raise ModelError(f"{uri}: invalid model spec: {err}") from err
    try:
        model.load_state_dict(load_safetensors(files[WEIGHTS_NAME]))
    except (RuntimeError, ValueError, SafetensorError) as err:  # corrupt tensor data
        raise ModelError(f"{uri}: weights do not match the model spec: {err}") from err
    model.to(device).eval()
    return LoadedModel(
        model=model,
        hyperparameters=config.get("hyperparameters"),
        metadata=config.get("metadata") or {},
    )
