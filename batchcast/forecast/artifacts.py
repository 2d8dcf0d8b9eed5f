"""Model artifacts: a folder or a ``model.tar.gz``, local or on S3.

A model is two files::

    config.json        {"format": "batchcast-deepar", "format_version": 1, "spec": {...},
                        "hyperparameters": {...} | null, "metadata": {...}}
    model.safetensors  the state dict

safetensors is a flat tensor container: loading it cannot run code (SPEC.md §6 rules out
pickles, which ``torch.save`` writes). A ``model.tar.gz`` holds the same two files at its root,
as SageMaker's ``ModelArtifacts.S3ModelArtifacts`` does.
"""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from batchcast.errors import ModelError
from batchcast.forecast.config import ModelSpec
from batchcast.forecast.model import DeepAR

__all__ = [
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "LoadedModel",
    "load_model",
    "load_spec",
    "save_model",
]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT = "batchcast-deepar"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class LoadedModel:
    """A loaded network with what was stored beside it."""

    model: DeepAR
    hyperparameters: Mapping[str, Any] | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def spec(self) -> ModelSpec:
        return self.model.spec


def _is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


def _read_bytes(uri: str) -> bytes:
    if _is_s3(uri):
        import smart_open

        with smart_open.open(uri, "rb", compression="disable") as f:
            return bytes(f.read())
    return Path(uri).read_bytes()


def _write_bytes(uri: str, data: bytes) -> None:
    if _is_s3(uri):
        import smart_open

        with smart_open.open(uri, "wb", compression="disable") as f:
            f.write(data)
        return
    path = Path(uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)  # a reader never sees half a file


def _encode(
    model: DeepAR, hyperparameters: Mapping[str, Any] | None, metadata: Mapping[str, Any] | None
) -> dict[str, bytes]:
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


def save_model(
    model: DeepAR,
    uri: str,
    *,
    hyperparameters: Mapping[str, Any] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> str:
    """Save ``model`` to a folder, or to a ``.tar.gz`` when ``uri`` ends with it (local or s3://).

    Returns:
        ``uri``.
    """
    files = _encode(model, hyperparameters, metadata)
    if uri.endswith(".tar.gz"):
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
            for name, data in files.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        _write_bytes(uri, buffer.getvalue())
        return uri
    for name, data in files.items():
        _write_bytes(f"{uri.rstrip('/')}/{name}", data)
    return uri


def _untar(raw: bytes) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:gz") as tar:
        for member in tar.getmembers():
            name = os.path.basename(member.name)
            # Only the two known regular files are read; nothing is extracted to disk.
            if member.isfile() and name in (CONFIG_NAME, WEIGHTS_NAME):
                extracted = tar.extractfile(member)
                assert extracted is not None  # isfile() members always extract
                files[name] = extracted.read()
    return files


def _read_files(uri: str, names: tuple[str, ...] = (CONFIG_NAME, WEIGHTS_NAME)) -> dict[str, bytes]:
    if uri.endswith((".tar.gz", ".tgz")):
        try:
            raw = _read_bytes(uri)
        except OSError as err:  # smart_open raises a plain OSError for a missing S3 key
            raise ModelError(f"no model at {uri}: {err}") from err
        try:
            return _untar(raw)
        except (tarfile.TarError, EOFError, OSError) as err:
            raise ModelError(f"{uri} is not a readable .tar.gz: {err}") from err
    base = uri.rstrip("/")
    files = {}
    for name in names:
        try:
            files[name] = _read_bytes(f"{base}/{name}")
        except FileNotFoundError:
            continue  # the caller reports what is missing
        except OSError as err:
            # smart_open reports a missing S3 key as a plain OSError; anything else (access
            # denied, throttling, the network) is a real failure and keeps its cause.
            if "NoSuchKey" in str(err) or "404" in str(err):
                continue
            raise ModelError(f"cannot read {base}/{name}: {err}") from err
    return files


def _parse_config(uri: str, files: Mapping[str, bytes], needed: tuple[str, ...]) -> dict[str, Any]:
    missing = [n for n in needed if n not in files]
    if missing:
        raise ModelError(
            f"{uri} is not a batchcast model: missing {missing} (expected a folder or model.tar.gz "
            f"holding {CONFIG_NAME} and {WEIGHTS_NAME}; import GluonTS models with "
            "`batchcast import-gluonts`)"
        )
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


def load_spec(uri: str) -> ModelSpec:
    """A model's signature alone, without its weights (a folder reads only ``config.json``).

    Raises:
        ModelError: as :func:`load_model`, for the configuration.
    """
    names = (CONFIG_NAME,) if not uri.endswith((".tar.gz", ".tgz")) else (CONFIG_NAME, WEIGHTS_NAME)
    return _spec(uri, _parse_config(uri, _read_files(uri, names), (CONFIG_NAME,)))


def load_model(uri: str, *, device: str | torch.device = "cpu") -> LoadedModel:
    """Load a model folder or ``model.tar.gz`` (local or s3://) onto ``device``, in eval mode.

    Raises:
        ModelError: if the artifact is missing, not a batchcast model, or its weights do not
            fit its configuration.
    """
    files = _read_files(uri)
    config = _parse_config(uri, files, (CONFIG_NAME, WEIGHTS_NAME))
    spec = _spec(uri, config)
    try:
        model = DeepAR(spec)
    except (TypeError, ValueError) as err:  # sizes nn.LSTM rejects
        raise ModelError(f"{uri}: invalid model spec: {err}") from err
    try:
        model.load_state_dict(load_safetensors(files[WEIGHTS_NAME]))
    except (RuntimeError, ValueError, SafetensorError) as err:  # shape mismatch, corrupt file
        raise ModelError(f"{uri}: weights do not match the model spec: {err}") from err
    model.to(device).eval()
    return LoadedModel(
        model=model,
        hyperparameters=config.get("hyperparameters"),
        metadata=config.get("metadata") or {},
    )
