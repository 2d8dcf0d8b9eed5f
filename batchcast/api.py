"""The Python API behind the CLI: train, transform, predict, import.

Each function composes the rooms (``io`` reads and writes, ``forecast`` computes, ``runner``
distributes) and holds no logic of its own beyond that wiring.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson

from batchcast.forecast.config import DeepARConfig, InferenceConfig
from batchcast.forecast.train import EpochReport, TrainResult, train_model
from batchcast.io.join import Join
from batchcast.io.sinks import join_uri, write_bytes_atomic
from batchcast.io.training import load_training_channels
from batchcast.models import LoadedModel, save_model
from batchcast.runner.job import TransformJob
from batchcast.runner.online import predict_request
from batchcast.runner.processor import ShardProcessor, WorkerOptions
from batchcast.runner.summary import JobSummary

__all__ = ["METRICS_NAME", "import_gluonts", "predict", "predict_body", "train", "transform"]

METRICS_NAME = "metrics.json"


def train(
    train: str | Sequence[str],
    *,
    hyperparameters: Mapping[str, Any],
    model_dir: str,
    test: str | Sequence[str] | None = None,
    seed: int = 0,
    on_epoch: Callable[[EpochReport], None] | None = None,
) -> TrainResult:
    """Train on SageMaker-format JSON Lines and save the model (and test metrics) to ``model_dir``.

    Args:
        train: training channel file(s), local or s3://.
        hyperparameters: SageMaker DeepAR hyperparameters (values may be strings).
        model_dir: where the model folder (or ``.tar.gz``) goes.
        test: optional test channel; reports ``test:RMSE`` and ``test:mean_wQuantileLoss``.
        seed: makes training deterministic.
        on_epoch: progress callback.
    """
    config = DeepARConfig.from_hyperparameters(hyperparameters)
    channels = load_training_channels(train, config=config, test=test)
    result = train_model(
        config,
        channels.train.batch,
        cardinality=channels.train.cardinality,
        num_dynamic_feat=channels.train.num_dynamic_feat,
        test=channels.test,
        seed=seed,
        on_epoch=on_epoch,
    )
    metadata: dict[str, Any] = {
        "seed": seed,
        "epochs_run": len(result.losses),
        "best_epoch": result.best_epoch,
    }
    if result.scaling_losses:  # "auto" scaling: each scaling's best validation loss
        metadata["scaling_validation_losses"] = result.scaling_losses
    save_model(
        result.model, model_dir, hyperparameters=config.to_hyperparameters(), metadata=metadata
    )
    if result.metrics and not model_dir.endswith(".tar.gz"):
        write_bytes_atomic(
            join_uri(model_dir, METRICS_NAME),
            orjson.dumps(result.metrics, option=orjson.OPT_INDENT_2),
        )
    return result


def transform(
    model: str,
    input: str | None = None,
    output: str | None = None,
    *,
    job: Mapping[str, Any] | None = None,
    forward_fields: Sequence[str] | None = None,
    progress: bool | None = False,
    **options: Any,
) -> JobSummary:
    """Run a batch transform job (local Ray, or the cluster in ``RAY_ADDRESS``).

    The inference configuration comes from, in this order: the ``inference`` argument, the
    job body's ``Environment.DEEPAR_INFERENCE_CONFIG``, the ``DEEPAR_INFERENCE_CONFIG``
    environment variable, SPEC.md §2's defaults. The worker count likewise: ``workers``,
    the body (``MODEL_SERVER_WORKERS``, ``MaxConcurrentTransforms``), the
    ``MODEL_SERVER_WORKERS`` environment variable, one per CPU (GPU).

    Args:
        model: model folder or model.tar.gz, local or s3://.
        input: file, folder, glob or s3:// prefix (or a manifest with ``data_type="ManifestFile"``);
            may come from ``job`` instead.
        output: local folder or s3:// prefix; may come from ``job`` instead.
        job: an optional CreateTransformJob request body; arguments override it.
        forward_fields: input fields copied into every output record (e.g. ``["item_id"]``).
        progress: draw a progress bar (None: when stderr is a terminal).
        **options: any :class:`TransformJob` field (``workers``, ``on_error``, ``seed``, ...);
            ``inference`` may be an :class:`InferenceConfig`, a mapping or JSON text in
            ``DEEPAR_INFERENCE_CONFIG`` form.

    Returns:
        The job summary (``summary.ok`` is False if any file failed).

    Raises:
        ConfigError: for an invalid job, before any record is read.
        ModelError: for a model that cannot be loaded, before any record is read.
        ShardError: when a shard cannot be processed (see :func:`run_transform`).
    """
    from batchcast.runner.driver import run_transform  # Ray: only for a transform

    spec = TransformJob.create(
        model, input, output, body=job, forward_fields=forward_fields, **options
    )
    return run_transform(spec, progress=progress)


def predict(
    model: str | ShardProcessor,
    request: Mapping[str, Any],
    *,
    inference: InferenceConfig | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Answer one online request ``{"instances": [...], "configuration": {...}}`` in process.

    Args:
        model: a model folder/``model.tar.gz``, or a :class:`ShardProcessor` already loaded.
        request: the parsed request.
        inference: the base configuration (default SPEC.md §2's); the request's
            ``configuration`` overrides it key by key.
        seed: the generator seed.
    """
    result: dict[str, Any] = orjson.loads(
        predict_body(model, request, inference=inference, seed=seed)
    )
    return result


def predict_body(
    model: str | ShardProcessor,
    request: Mapping[str, Any],
    *,
    inference: InferenceConfig | None = None,
    seed: int = 0,
    accept: str | None = None,
) -> bytes:
    """:func:`predict`'s answer as the response body an endpoint sends: ``accept`` as an
    ``Accept`` header (default ``application/json``: ``{"predictions": [...]}``;
    ``application/jsonlines``: one object per instance; ``text/csv``: one row per instance)."""
    processor = (
        model
        if isinstance(model, ShardProcessor)
        else ShardProcessor(
            model,
            WorkerOptions(
                inference=InferenceConfig(),
                join=Join(),
                max_payload_mb=TransformJob.max_payload_mb,
                seed=seed,
            ),
        )
    )
    return predict_request(processor, request, seed=seed, inference=inference, accept=accept)


def import_gluonts(src: str, *, model_dir: str) -> LoadedModel:
    """Convert a serialized GluonTS torch DeepAR predictor into a batchcast model folder."""
    from batchcast.models import import_gluonts as _import

    return _import(src, model_dir)
