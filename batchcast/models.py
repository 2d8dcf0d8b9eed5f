"""Models on storage: where io's bytes meet forecast's network.

``forecast`` turns a model into its files and back (:mod:`batchcast.forecast.artifacts`, no
I/O); ``io`` moves files between storage and memory (:mod:`batchcast.io.model_files`: a folder
or a ``model.tar.gz``, local or S3, atomic writes, S3 timeouts). This module composes the two
and is the one place that imports both for models: the API, the runner, serving and the
report load and save models through it. It imports no Ray.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import torch

from batchcast.forecast.artifacts import (
    CONFIG_NAME,
    MODEL_FILES,
    WEIGHTS_NAME,
    LoadedModel,
    check_weights,
    decode_model,
    decode_spec,
    encode_model,
)
from batchcast.forecast.config import ModelSpec
from batchcast.forecast.model import DeepAR
from batchcast.io.model_files import is_archive, read_model_files, write_model_files

__all__ = ["LoadedModel", "check_model", "import_gluonts", "load_model", "load_spec", "save_model"]


def load_model(uri: str, *, device: str | torch.device = "cpu") -> LoadedModel:
    """Load a model folder or ``model.tar.gz`` (local or s3://) onto ``device``, in eval mode.

    Raises:
        ModelError: if the artifact is missing or unreadable, not a batchcast model, an
            unsafe archive, or its weights do not fit its configuration.
    """
    return decode_model(read_model_files(uri, MODEL_FILES), uri=uri, device=device)


def load_spec(uri: str) -> ModelSpec:
    """A model's signature alone, from its ``config.json`` (a folder's weights are not read).

    Raises:
        ModelError: as :func:`load_model`, for the configuration.
    """
    names = MODEL_FILES if is_archive(uri) else (CONFIG_NAME,)
    return decode_spec(read_model_files(uri, names), uri=uri)


def check_model(uri: str) -> ModelSpec:
    """The model's signature, checked against its weights' tensor shapes without building it.

    What a job runs before it starts workers: a broken artifact (a corrupt ``num_cells``, a
    weights file from another model) fails here as one ModelError, not in every worker.

    Raises:
        ModelError: as :func:`load_model`.
    """
    return check_model_digest(uri)[0]


def check_model_digest(uri: str) -> tuple[ModelSpec, str]:
    """:func:`check_model`, and the sha256 of the model's configuration and weights: the
    model's identity in a job's configuration digest (a model retrained into the same folder
    is another model, whatever its name).

    Raises:
        ModelError: as :func:`load_model`.
    """
    files = read_model_files(uri, MODEL_FILES)
    spec = decode_spec(files, uri=uri)
    if WEIGHTS_NAME not in files:
        decode_model(files, uri=uri)  # raises the "missing" error with the whole message
    check_weights(spec, files[WEIGHTS_NAME], uri=uri)
    digest = hashlib.sha256()
    for name in MODEL_FILES:
        digest.update(hashlib.sha256(files[name]).digest())
    return spec, digest.hexdigest()


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

    Raises:
        OutputError: when a file cannot be written.
    """
    files = encode_model(model, hyperparameters=hyperparameters, metadata=metadata)
    return write_model_files(uri, files)


def import_gluonts(src: str, model_dir: str | None = None) -> LoadedModel:
    """Convert a serialized GluonTS torch DeepAR predictor into a batchcast model.

    Args:
        src: the folder ``predictor.serialize(path)`` wrote (local or s3://).
        model_dir: where to save the converted model (folder or ``.tar.gz``, local or s3://);
            None to only return it.

    Returns:
        The model in eval mode on the CPU.

    Raises:
        ModelError: see :func:`batchcast.forecast.gluonts.convert_gluonts`.
    """
    from batchcast.forecast.gluonts import GLUONTS_FILES, convert_gluonts  # an optional path

    loaded = convert_gluonts(read_model_files(src, GLUONTS_FILES), src=src)
    if model_dir is not None:
        save_model(loaded.model, model_dir, metadata=loaded.metadata)
    return loaded
