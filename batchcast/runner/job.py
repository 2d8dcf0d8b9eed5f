"""TransformJob: one batch transform, validated, from flags or a CreateTransformJob request body.

A SageMaker ``CreateTransformJob`` request body works as a job file (SPEC.md §4). Values that
have a meaning here are used; values with no meaning here (instance types, KMS keys, tags,
timeouts of an HTTP model server) are accepted and reported in ``ignored``; unknown keys and
invalid values raise :class:`ConfigError` naming the key.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from batchcast.coerce import as_float, as_int
from batchcast.errors import ConfigError
from batchcast.forecast.config import InferenceConfig
from batchcast.forecast.precision import PRECISIONS
from batchcast.io.content import ResponseKeys, check_join, parse_accept, with_response_keys
from batchcast.io.join import Join

__all__ = [
    "MAX_NUM_SAMPLES",
    "ON_ERROR_MODES",
    "TransformJob",
    "available_cpus",
    "inference_from_env_value",
]

ON_ERROR_MODES = ("fail-file", "record", "fail-fast")
CONTENT_TYPES = ("application/jsonlines", "application/x-jsonlines", "application/json")
_X_JSONLINES = "application/x-jsonlines"
_RESPONSE_KEY_VARIABLES = (
    "SAGEMAKER_INFERENCE_OUTPUT",
    "SAGEMAKER_INFERENCE_SUPPORTED",
    "SAGEMAKER_INFERENCE_INPUT",
)
EXECUTORS = ("auto", "local", "ray")  # where the workers run (runner/executor.py)
DEFAULT_SHARD_MB = 4.0
DEFAULT_MAX_ERRORS_LISTED = 1000
# Output bytes the driver may hold at once (shards in flight, estimated, and results waiting
# in the reorder buffer): samples output is num_samples x horizon floats per series, so a
# shard-count window alone does not bound memory (runner/window.py).
DEFAULT_MAX_HELD_MB = 256.0
# SageMaker DeepAR's largest num_samples (docs/inference.md). Checked for jobs here rather
# than in InferenceConfig: the online path (serve, predict) bounds a request by its rows.
MAX_NUM_SAMPLES = 1000
MAX_WORKERS = 4096  # model workers of one job: far past any cluster's CPUs, short of absurd
_INT64 = 1 << 63

# SageMaker's TransformJobName pattern; the name also names the job's Ray actors.
_NAME_RE = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}")

# Top-level CreateTransformJob keys with no meaning for a local/Ray run: accepted, reported.
_IGNORED_TOP = (
    "ModelName",
    "ModelClientConfig",
    "TransformResources",
    "Tags",
    "ExperimentConfig",
    "DataCaptureConfig",
    "BatchDataCaptureConfig",
)
_KNOWN_TOP = (
    *_IGNORED_TOP,
    "TransformJobName",
    "MaxConcurrentTransforms",
    "MaxPayloadInMB",
    "BatchStrategy",
    "Environment",
    "TransformInput",
    "TransformOutput",
    "DataProcessing",
)


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask, as in a container), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class TransformJob:
    """Everything one ``batchcast transform`` run needs.

    Attributes:
        model: model folder or ``model.tar.gz``, local or ``s3://``.
        input: file, folder, glob, ``s3://bucket/prefix``, or a manifest (``data_type``).
        output: local folder or ``s3://bucket/prefix``.
        data_type: ``S3Prefix`` (also for local paths) or ``ManifestFile``.
        batch_strategy: ``SingleRecord`` or ``MultiRecord``; records are always vectorised.
        max_payload_mb: a longer line is a record error (1–100).
        assemble_with: ``Line`` (each output record ends with a newline) or ``None``.
        inference: ``DEEPAR_INFERENCE_CONFIG``.
        workers: model workers; None = ``MODEL_SERVER_WORKERS`` or one per CPU (per GPU).
        gpus_per_worker: GPUs each worker holds (0 = CPU).
        on_error: ``fail-file`` (SageMaker's rule), ``record`` or ``fail-fast``.
        seed: the job's seed; each shard's generator derives from (seed, file, shard).
        join: DataProcessing and forward_fields.
        resume: skip inputs whose ``.out`` already exists; only for a job of the same
            :meth:`configuration` as the one that wrote them.
        force: take the output even when its lock names another job (a killed driver's lock
            on S3; locally a dead job's lock is taken over without it).
        shard_mb: target shard size; part of the output's identity (fixes batch composition).
        pipeline: ``fused`` (a worker reads, decodes, samples and encodes), ``split`` (decode
            and encode in CPU tasks beside the sampling actor), ``auto`` (split with GPUs).
        executor: where the workers run: ``local`` (threads of this process: no Ray
            start-up), ``ray``, or ``auto`` (local for a CPU job of at most 64 MB with no Ray
            cluster to join; :mod:`batchcast.runner.executor`). Never changes the output.
        name: the job's name (``TransformJobName``); empty = generated per run. Names the
            summary and the Ray actors (``<name>.<run>.worker-<i>``).
        max_errors_listed: record errors listed in the summary (the first ones); all of them
            are counted, by field and by file.
        errors_file: also stream every record error to ``<output>/_batchcast_errors.jsonl``.
        shard_timeout_s: a shard still running after this many seconds fails the job with a
            ``ShardError`` naming its URI; None = derived from the S3 timeouts and the shard
            size (:func:`batchcast.runner.window.shard_deadline_s`).
        max_held_mb: output the driver may hold at once, in MB (in flight, estimated, and
            waiting to be written in order); at least one shard is always let through.
        ignored: (key, why) for every accepted key with no effect here.
        accept: the output's content type (``TransformOutput.Accept``): JSON Lines (default),
            JSON (the same lines) or ``text/csv`` (SPEC.md §8).
        response_keys: ``SAGEMAKER_INFERENCE_OUTPUT`` / ``SUPPORTED`` / ``INPUT`` as resolved
            (flag > job file ``Environment`` > environment); already applied to ``inference``.
        precision: the sampler's GEMM precision, ``fp32`` (default) or ``bf16``.

    Decisions where SageMaker and SPEC.md leave room: ``CompressionType`` ``Gzip`` reads every
    object as gzip; ``None`` still reads a ``.gz`` name as gzip. The output of ``x.jsonl.gz``
    is ``x.jsonl.gz.out``, uncompressed, as SageMaker names it (input name + ``.out``).
    ``MaxConcurrentTransforms`` 0 means unset, as in SageMaker; otherwise it is the number of
    model workers unless ``MODEL_SERVER_WORKERS`` is also given, which wins.
    """

    model: str
    input: str
    output: str
    data_type: str = "S3Prefix"
    content_type: str = "application/jsonlines"
    compression: str = "None"
    batch_strategy: str = "MultiRecord"
    max_payload_mb: float = 6.0
    assemble_with: str = "Line"
    accept: str = "application/jsonlines"
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    workers: int | None = None
    gpus_per_worker: float = 0.0
    on_error: str = "fail-file"
    seed: int = 0
    join: Join = field(default_factory=Join)
    resume: bool = False
    force: bool = False
    shard_mb: float = DEFAULT_SHARD_MB
    pipeline: str = "auto"
    executor: str = "auto"
    name: str = ""
    max_errors_listed: int = DEFAULT_MAX_ERRORS_LISTED
    errors_file: bool = False
    shard_timeout_s: float | None = None
    max_held_mb: float = DEFAULT_MAX_HELD_MB
    ignored: tuple[tuple[str, str], ...] = ()
    response_keys: ResponseKeys = field(default_factory=ResponseKeys)
    precision: str = "fp32"

    def __post_init__(self) -> None:
        for name in ("model", "input", "output"):
            if not getattr(self, name):
                raise ConfigError(f"{name} is required")
        _choice("S3DataType", self.data_type, ("S3Prefix", "ManifestFile"))
        _choice("ContentType", self.content_type, CONTENT_TYPES)
        _choice("CompressionType", self.compression, ("None", "Gzip"))
        _choice("BatchStrategy", self.batch_strategy, ("SingleRecord", "MultiRecord"))
        _choice("AssembleWith", self.assemble_with, ("Line", "None"))
        # SageMaker's older name for JSON Lines stays accepted, as for ContentType.
        accept = "application/jsonlines" if self.accept == _X_JSONLINES else self.accept
        object.__setattr__(self, "accept", parse_accept(accept, name="Accept"))
        check_join(
            self.accept, join_source=self.join.join_source, output_filter=self.join.output_filter
        )
        _choice("precision", self.precision, PRECISIONS)
        _choice("on_error", self.on_error, ON_ERROR_MODES)
        _choice("pipeline", self.pipeline, ("auto", "fused", "split"))
        _choice("executor", self.executor, EXECUTORS)
        if self.executor == "local" and (self.gpus_per_worker > 0 or self.pipeline == "split"):
            raise ConfigError(
                "executor 'local' runs fused CPU workers; GPU workers and the split pipeline "
                "need executor 'ray' (or 'auto')"
            )
        # Range errors remember the field, so that the CLI can name the flag the user typed.
        if not 1 <= self.max_payload_mb <= 100:
            expected = f"must be in [1, 100], got {self.max_payload_mb}"
            raise ConfigError.for_key("max_payload_mb", "MaxPayloadInMB", expected)
        if self.workers is not None and not 1 <= self.workers <= MAX_WORKERS:
            expected = f"must be in [1, {MAX_WORKERS}], got {self.workers}"
            raise ConfigError.for_key("workers", "workers", expected)
        if not -_INT64 <= self.seed < _INT64:  # seeds travel as 64-bit integers (JSON, torch)
            expected = f"must be a 64-bit integer, got {self.seed}"
            raise ConfigError.for_key("seed", "seed", expected)
        if self.gpus_per_worker < 0:
            raise ConfigError.for_key(
                "gpus_per_worker", "gpus_per_worker", f"must be >= 0, got {self.gpus_per_worker}"
            )
        if not self.shard_mb > 0:
            raise ConfigError.for_key("shard_mb", "shard_mb", f"must be > 0, got {self.shard_mb}")
        if self.shard_timeout_s is not None and not self.shard_timeout_s > 0:
            expected = f"must be > 0, got {self.shard_timeout_s}"
            raise ConfigError.for_key("shard_timeout_s", "shard_timeout_s", expected)
        if not self.max_held_mb > 0:
            expected = f"must be > 0, got {self.max_held_mb}"
            raise ConfigError.for_key("max_held_mb", "max_held_mb", expected)
        if self.inference.num_samples > MAX_NUM_SAMPLES:
            raise ConfigError.for_key(
                "num_samples",
                "num_samples",
                f"must be <= {MAX_NUM_SAMPLES} (SageMaker DeepAR's maximum), "
                f"got {self.inference.num_samples}",
            )
        if self.max_errors_listed < 0:
            expected = f"must be >= 0, got {self.max_errors_listed}"
            raise ConfigError.for_key("max_errors_listed", "max_errors_listed", expected)
        if self.name and _NAME_RE.fullmatch(self.name) is None:
            raise ConfigError(
                f"TransformJobName must be 1-63 letters, digits or hyphens, starting and ending "
                f"with a letter or digit, got {self.name!r}"
            )

    @classmethod
    def from_request(
        cls, body: Mapping[str, Any], *, model: str | None = None, **overrides: Any
    ) -> TransformJob:
        """Build from a CreateTransformJob request body; ``overrides`` (flags) win.

        ``model`` is required (a CreateTransformJob names a SageMaker model, not an artifact).

        Raises:
            ConfigError: for an unknown key or an invalid value, naming it.
        """
        if not isinstance(body, Mapping):
            raise ConfigError("the job file must hold a JSON object (a CreateTransformJob body)")
        _no_unknown("CreateTransformJob", body, _KNOWN_TOP)
        ignored = [(k, "no meaning for a batchcast run") for k in _IGNORED_TOP if k in body]
        kwargs: dict[str, Any] = {}
        if "TransformJobName" in body:
            kwargs["name"] = _string("TransformJobName", body["TransformJobName"])
        concurrent = body.get("MaxConcurrentTransforms")
        if concurrent not in (None, 0):  # 0: unset, as in SageMaker
            kwargs["workers"] = as_int("MaxConcurrentTransforms", concurrent)
        if "MaxPayloadInMB" in body:
            kwargs["max_payload_mb"] = as_float("MaxPayloadInMB", body["MaxPayloadInMB"])
        if "BatchStrategy" in body:
            kwargs["batch_strategy"] = body["BatchStrategy"]
        kwargs.update(_environment(body.get("Environment") or {}, ignored))
        kwargs.update(_transform_input(body.get("TransformInput"), ignored))
        kwargs.update(_transform_output(body.get("TransformOutput"), ignored))
        if "DataProcessing" in body:
            kwargs["join"] = Join.from_data_processing(
                _mapping("DataProcessing", body["DataProcessing"])
            )
        kwargs["ignored"] = tuple(ignored)
        kwargs["model"] = model or ""
        kwargs.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**kwargs)

    @classmethod
    def create(
        cls,
        model: str,
        input: str | None = None,
        output: str | None = None,
        *,
        body: Mapping[str, Any] | None = None,
        forward_fields: Sequence[str] | None = None,
        environ: Mapping[str, str] | None = None,
        **overrides: Any,
    ) -> TransformJob:
        """A job from arguments, an optional CreateTransformJob body and the environment.

        Precedence, highest first: ``overrides`` (flags, API arguments), the ``body``, the
        environment variables ``DEEPAR_INFERENCE_CONFIG`` and ``MODEL_SERVER_WORKERS`` (as a
        SageMaker container would see them), the defaults.

        Args:
            model: model folder or ``model.tar.gz``.
            input, output: override the body's ``S3Uri`` and ``S3OutputPath``.
            body: a CreateTransformJob request body.
            forward_fields: input fields copied into every output record.
            environ: the environment (default ``os.environ``).
            **overrides: :class:`TransformJob` fields; None values are ignored; ``inference``
                may also be a mapping or JSON text.

        Raises:
            ConfigError: naming the key, for anything invalid.
        """
        environ = os.environ if environ is None else environ
        overrides = {k: v for k, v in overrides.items() if v is not None}
        inference = overrides.get("inference")
        if inference is not None and not isinstance(inference, InferenceConfig):
            overrides["inference"] = inference_from_env_value(inference, where="argument")
        if input is not None:
            overrides["input"] = input
        if output is not None:
            overrides["output"] = output
        if body is not None:
            job = cls.from_request(body, model=model, **overrides)
        else:
            if "input" not in overrides or "output" not in overrides:
                raise ConfigError("input and output are required (or a job body that names them)")
            job = cls(model=model, **overrides)
        if "inference" not in overrides and not _sets_inference(body):
            text = environ.get("DEEPAR_INFERENCE_CONFIG", "")
            if text.strip():
                inference = inference_from_env_value(text, where="environment variable")
                job = replace(job, inference=inference)
        if job.workers is None and environ.get("MODEL_SERVER_WORKERS", "").strip():
            workers = as_int("MODEL_SERVER_WORKERS", environ["MODEL_SERVER_WORKERS"])
            job = replace(job, workers=workers)
        if forward_fields:
            job = replace(job, join=replace(job.join, forward_fields=tuple(forward_fields)))
        return _with_keys(job, body, environ, overrides.get("response_keys"))

    def resolved(self, *, name: str) -> TransformJob:
        """This job as one run sees it: named (``name`` when the job has none) and with local
        paths made absolute, so the summary's paths do not depend on the working folder."""
        return replace(
            self,
            name=self.name or name,
            model=_absolute(self.model),
            input=_absolute(self.input),
            output=_absolute(self.output),
        )

    def resolved_workers(self, available_cpus: int, available_gpus: int) -> int:
        """Workers to start: ``workers``, else one per CPU (per GPU).

        :meth:`create` already filled ``workers`` from ``MaxConcurrentTransforms`` or
        ``MODEL_SERVER_WORKERS``; the environment is read there, once.
        """
        if self.workers is not None:
            return self.workers
        if self.gpus_per_worker > 0:
            return max(1, int(available_gpus / self.gpus_per_worker))
        return max(1, available_cpus)

    def configuration(self, model_digest: str) -> dict[str, Any]:
        """What the output's bytes depend on, for ``--resume``: the model (its files'
        digest), the input, and every setting that changes a ``.out`` (shards fix batch
        composition, so ``shard_mb`` is one). Workers, pipeline and the error listing
        change no byte and are left out.
        """
        described = self.describe()
        keys = (
            "input", "data_type", "compression", "max_payload_mb", "assemble_with", "inference",
            "on_error", "seed", "join", "shard_mb", "accept", "response_keys", "precision",
        )  # fmt: skip
        return {"model": model_digest, **{k: described[k] for k in keys}}

    def describe(self) -> dict[str, Any]:
        """The job as a JSON-ready dict, for the summary."""
        return {
            "model": self.model,
            "input": self.input,
            "output": self.output,
            "data_type": self.data_type,
            "compression": self.compression,
            "batch_strategy": self.batch_strategy,
            "max_payload_mb": self.max_payload_mb,
            "assemble_with": self.assemble_with,
            "inference": self.inference.to_dict(),
            "workers": self.workers,
            "gpus_per_worker": self.gpus_per_worker,
            "on_error": self.on_error,
            "seed": self.seed,
            "join": {
                "input_filter": self.join.input_filter,
                "join_source": self.join.join_source,
                "output_filter": self.join.output_filter,
                "forward_fields": list(self.join.forward_fields),
            },
            "resume": self.resume,
            "force": self.force,
            "shard_mb": self.shard_mb,
            "pipeline": self.pipeline,
            "executor": self.executor,
            "name": self.name,
            "max_errors_listed": self.max_errors_listed,
            "errors_file": self.errors_file,
            "shard_timeout_s": self.shard_timeout_s,
            "max_held_mb": self.max_held_mb,
            "ignored": [{"key": k, "why": why} for k, why in self.ignored],
            "accept": self.accept,
            "response_keys": self.response_keys.to_environment(),
            "precision": self.precision,
        }


# ---------------------------------------------------------------------------------------------
# Parsing helpers for the request body


def _absolute(uri: str) -> str:
    """A local path made absolute (keeping a trailing slash); any ``scheme://`` URI as is."""
    if "://" in uri:
        return uri
    path = os.path.abspath(uri)
    return path + os.sep if uri.endswith(("/", os.sep)) and path != os.sep else path


def _with_keys(
    job: TransformJob,
    body: Mapping[str, Any] | None,
    environ: Mapping[str, str],
    flags: ResponseKeys | None,
) -> TransformJob:
    """The job with its response keys resolved (flag > job file > environment) and applied
    to its inference configuration (SPEC.md §8), checked before any record is read."""
    keys = ResponseKeys.from_environment(environ)
    environment = body.get("Environment") if isinstance(body, Mapping) else None
    if isinstance(environment, Mapping):
        keys = keys.overridden_by(ResponseKeys.from_environment(environment))
    if flags is not None:
        keys = keys.overridden_by(flags)
    return replace(job, response_keys=keys, inference=with_response_keys(job.inference, keys))


def _sets_inference(body: Mapping[str, Any] | None) -> bool:
    environment = body.get("Environment") if isinstance(body, Mapping) else None
    return isinstance(environment, Mapping) and "DEEPAR_INFERENCE_CONFIG" in environment


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {list(allowed)}, got {value!r}")


def _no_unknown(where: str, data: Mapping[str, Any], known: tuple[str, ...]) -> None:
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown} in {where}; known: {sorted(known)}")


def _string(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{name} must be a string, got {value!r}")
    return value


def _mapping(name: str, value: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{name} must be a JSON object, got {value!r}")
    return value


def _environment(env: Any, ignored: list[tuple[str, str]]) -> dict[str, Any]:
    env = _mapping("Environment", env)
    out: dict[str, Any] = {}
    for key, value in env.items():
        if key == "DEEPAR_INFERENCE_CONFIG":
            out["inference"] = inference_from_env_value(value, where="Environment")
        elif key == "MODEL_SERVER_WORKERS":
            out["workers"] = as_int("MODEL_SERVER_WORKERS", value)
        elif key in _RESPONSE_KEY_VARIABLES:
            pass  # response keys: resolved with the flags and the environment (_with_keys)
        elif key == "MODEL_SERVER_TIMEOUT":
            # An HTTP model server's per-request timeout; there is no such server here.
            ignored.append(("Environment.MODEL_SERVER_TIMEOUT", "no model server here"))
        else:
            raise ConfigError(
                f"unknown Environment key {key!r}; known: DEEPAR_INFERENCE_CONFIG, "
                f"MODEL_SERVER_WORKERS, MODEL_SERVER_TIMEOUT, {', '.join(_RESPONSE_KEY_VARIABLES)}"
            )
    return out


def inference_from_env_value(value: Any, *, where: str) -> InferenceConfig:
    """``DEEPAR_INFERENCE_CONFIG`` from its JSON text (or, from Python, a mapping).

    Raises:
        ConfigError: naming ``DEEPAR_INFERENCE_CONFIG``, ``where`` it came from, and the key.
    """
    try:
        if isinstance(value, Mapping):
            return InferenceConfig.from_mapping(value)
        if not isinstance(value, (str, bytes)):
            raise ConfigError(f"must be a JSON string, got {value!r}")
        return InferenceConfig.from_json(value)
    except ConfigError as err:
        message = str(err).removeprefix("DEEPAR_INFERENCE_CONFIG ")
        raise ConfigError(f"DEEPAR_INFERENCE_CONFIG ({where}): {message}") from err


def _transform_input(value: Any, ignored: list[tuple[str, str]]) -> dict[str, Any]:
    data = _mapping("TransformInput", value)
    _no_unknown(
        "TransformInput", data, ("DataSource", "ContentType", "CompressionType", "SplitType")
    )
    source = _mapping("TransformInput.DataSource", data.get("DataSource"))
    _no_unknown("TransformInput.DataSource", source, ("S3DataSource",))
    s3 = _mapping("TransformInput.DataSource.S3DataSource", source.get("S3DataSource"))
    _no_unknown("S3DataSource", s3, ("S3DataType", "S3Uri"))
    if "S3Uri" not in s3:
        raise ConfigError("TransformInput.DataSource.S3DataSource.S3Uri is required")
    split = data.get("SplitType", "Line")
    if split != "Line":
        raise ConfigError(f"SplitType must be 'Line' for JSON Lines input, got {split!r}")
    uri = _uri("TransformInput.DataSource.S3DataSource.S3Uri", s3["S3Uri"])
    out: dict[str, Any] = {"input": uri, "data_type": s3.get("S3DataType", "S3Prefix")}
    if "ContentType" in data:
        out["content_type"] = data["ContentType"]
    if "CompressionType" in data:
        out["compression"] = data["CompressionType"]
    return out


def _uri(key: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{key} must be a non-empty string (a path or s3:// URI), got {value!r}")
    return value


def _transform_output(value: Any, ignored: list[tuple[str, str]]) -> dict[str, Any]:
    data = _mapping("TransformOutput", value)
    _no_unknown("TransformOutput", data, ("S3OutputPath", "Accept", "AssembleWith", "KmsKeyId"))
    if "S3OutputPath" not in data:
        raise ConfigError("TransformOutput.S3OutputPath is required")
    out: dict[str, Any] = {"output": _uri("TransformOutput.S3OutputPath", data["S3OutputPath"])}
    if "Accept" in data:
        out["accept"] = data["Accept"]
    if "AssembleWith" in data:
        out["assemble_with"] = data["AssembleWith"]
    if "KmsKeyId" in data:
        ignored.append(("TransformOutput.KmsKeyId", "encryption is the bucket's default here"))
    return out
