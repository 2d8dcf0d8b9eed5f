"""The server's configuration: flags over the SageMaker container's environment variables.

One frozen :class:`ServeSettings` describes a deployment; both hosts (uvicorn worker
processes, Ray Serve replicas) receive it whole (:meth:`ServeSettings.to_json`), so a worker
never reads the environment of the machine it lands on.

Environment variables (SPEC.md §2, §9), each overridden by its flag:

=================================== ======================================================
``SAGEMAKER_BIND_TO_PORT``          port (default 8080)
``MODEL_SERVER_WORKERS``            worker processes (also ``SAGEMAKER_MODEL_SERVER_WORKERS``;
                                    default one per CPU available to this process)
``SAGEMAKER_MAX_PAYLOAD_IN_MB``     the largest request body (default 6; 1 to 100)
``DEEPAR_INFERENCE_CONFIG``         the configuration of JSON Lines requests, and the base of
                                    endpoint-form requests
=================================== ======================================================
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import orjson

from batchcast.errors import ConfigError
from batchcast.forecast.config import InferenceConfig
from batchcast.runner.job import available_cpus

__all__ = [
    "DEFAULT_MODEL",
    "DEFAULT_PORT",
    "BatchPolicy",
    "ServeSettings",
    "available_cpus",
    "parse_range",
]

DEFAULT_MODEL = "/opt/ml/model"  # where SageMaker unpacks a model's artifact
DEFAULT_PORT = 8080
# SageMaker kills a container 30 s after SIGTERM; leave time for the process to exit.
DEFAULT_GRACEFUL_TIMEOUT_S = 25.0
# SageMaker's invocation timeout: a request body that has not arrived by then never will in
# time for SageMaker to take the answer.
DEFAULT_BODY_TIMEOUT_S = 60.0
# One forecast chunk of the sampler (batchcast.forecast.sampling.DEFAULT_MAX_ROWS): 64 series
# of 100 paths. A larger batch only adds latency to the small requests in it.
DEFAULT_BATCH_ROWS = 6400


@dataclass(frozen=True, kw_only=True)
class BatchPolicy:
    """How the micro-batcher gathers concurrent requests into one forecast call.

    Attributes:
        max_rows: the row budget: series x sample paths per call. A request over it runs
            alone (a request is never split).
        max_wait_ms: how long the first request of a batch waits for others once the
            sampler is free; requests that arrive while it is busy join the next batch
            without waiting.
        enabled: False forecasts each request in a call of its own (the baseline).
    """

    max_rows: int = DEFAULT_BATCH_ROWS
    max_wait_ms: float = 2.0
    enabled: bool = True

    def __post_init__(self) -> None:
        if self.max_rows < 1:
            raise ConfigError(f"batch max_rows must be >= 1, got {self.max_rows}")
        if not 0.0 <= self.max_wait_ms <= 1000.0:
            raise ConfigError(f"batch max_wait_ms must be in [0, 1000], got {self.max_wait_ms}")


@dataclass(frozen=True, kw_only=True)
class ServeSettings:
    """A deployment of ``batchcast serve``.

    Attributes:
        model: model folder or ``model.tar.gz`` (local or s3://), loaded by every worker.
        host: the interface to listen on (all by default, as a container must).
        port: the TCP port (0: any free port; the server prints the one it got).
        workers: model worker processes (uvicorn) or replicas (Ray Serve); each holds one
            model and runs one torch thread.
        max_payload_mb: ``MaxPayloadInMB``: a larger body is refused with 413.
        max_concurrent_transforms: what ``/execution-parameters`` advertises; None: two
            requests per worker (one forecasting, one being decoded), because a
            ``MultiRecord`` request of several MB fills a batch on its own.
        inference: ``DEEPAR_INFERENCE_CONFIG``.
        batch: the micro-batcher's policy.
        seed: the root of every forecast call's seed (see :mod:`batchcast.runner.online`).
        device: ``cpu`` or ``cuda``.
        echo: diagnostics: answer ``/invocations`` with its body, without a model; measures
            a deployment's HTTP ceiling.
        graceful_timeout_s: after SIGTERM, how long requests in flight may take.
        body_timeout_s: how long a request's body may take to arrive, from the handler's
            first read; then 408 and the connection closes. Bounds a client that sends its
            headers and then trickles (or stops sending) its body, which would otherwise
            hold a connection (uvicorn) or a replica's request slot (Ray Serve) forever:
            uvicorn's timeouts cover idle connections only.
        autoscale: Ray Serve only: (min, max) replicas, scaled on requests in flight; None:
            a fixed ``workers`` replicas.
        max_ongoing_requests: Ray Serve only: requests a replica takes at once; None: two
            batches' worth of single-series requests, so that the batcher is never starved
            by Serve's default of 5.
    """

    model: str = DEFAULT_MODEL
    host: str = "0.0.0.0"
    port: int = DEFAULT_PORT
    workers: int = 1
    max_payload_mb: float = 6.0
    max_concurrent_transforms: int | None = None
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    batch: BatchPolicy = field(default_factory=BatchPolicy)
    seed: int = 0
    device: str = "cpu"
    echo: bool = False
    graceful_timeout_s: float = DEFAULT_GRACEFUL_TIMEOUT_S
    body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S
    autoscale: tuple[int, int] | None = None
    max_ongoing_requests: int | None = None

    def __post_init__(self) -> None:
        if not self.model:
            raise ConfigError("model must name a model folder or model.tar.gz, got ''")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be in [0, 65535], got {self.port}")
        if self.workers < 1:
            raise ConfigError(f"workers must be >= 1, got {self.workers}")
        if not 1 <= self.max_payload_mb <= 100:
            raise ConfigError(f"MaxPayloadInMB must be in [1, 100], got {self.max_payload_mb:g}")
        if self.max_concurrent_transforms is not None and self.max_concurrent_transforms < 1:
            raise ConfigError(
                f"MaxConcurrentTransforms must be >= 1, got {self.max_concurrent_transforms}"
            )
        # Written so that NaN fails too (every comparison with it is False), and infinity:
        # uvicorn turns the drain's limit into an integer.
        if not 0 <= self.graceful_timeout_s < math.inf:
            got = self.graceful_timeout_s
            raise ConfigError(f"graceful_timeout_s must be a number of seconds >= 0, got {got}")
        if not 0 < self.body_timeout_s < math.inf:
            raise ConfigError(
                f"body_timeout_s must be a number of seconds > 0, got {self.body_timeout_s}"
            )
        if self.autoscale is not None:
            lo, hi = self.autoscale
            if not 0 <= lo <= hi or hi < 1:
                raise ConfigError(f"autoscale must be MIN-MAX with 0 <= MIN <= MAX, got {lo}-{hi}")
        if self.max_ongoing_requests is not None and self.max_ongoing_requests < 1:
            raise ConfigError(f"max_ongoing_requests must be >= 1, got {self.max_ongoing_requests}")

    @property
    def concurrent_transforms(self) -> int:
        """``MaxConcurrentTransforms`` as advertised."""
        return self.max_concurrent_transforms or 2 * self.workers

    @property
    def replica_ongoing_requests(self) -> int:
        """Ray Serve's ``max_ongoing_requests`` per replica (see the attribute)."""
        if self.max_ongoing_requests is not None:
            return self.max_ongoing_requests
        per_batch = max(1, self.batch.max_rows // self.inference.num_samples)
        return max(8, 2 * per_batch)

    @classmethod
    def from_environment(
        cls, environ: Mapping[str, str] | None = None, **overrides: Any
    ) -> ServeSettings:
        """Settings from the environment, each overridden by a non-None keyword.

        Args:
            environ: the environment (default ``os.environ``).
            **overrides: :class:`ServeSettings` fields (flags); None values are ignored.

        Raises:
            ConfigError: naming the variable or field, for anything invalid.
        """
        from batchcast.runner.online import environment_inference

        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        port = _env_int(env, "SAGEMAKER_BIND_TO_PORT", minimum=0)
        if port is not None:
            values["port"] = port
        for name in ("MODEL_SERVER_WORKERS", "SAGEMAKER_MODEL_SERVER_WORKERS"):
            workers = _env_int(env, name, minimum=1)
            if workers is not None:
                values["workers"] = workers
                break
        else:
            values["workers"] = available_cpus()
        payload = env.get("SAGEMAKER_MAX_PAYLOAD_IN_MB", "").strip()
        if payload:
            try:
                values["max_payload_mb"] = float(payload)
            except ValueError:
                raise ConfigError(
                    f"SAGEMAKER_MAX_PAYLOAD_IN_MB must be a number of MB, got {payload!r}"
                ) from None
        inference = environment_inference(env)
        if inference is not None:
            values["inference"] = inference
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def to_json(self) -> bytes:
        """The settings as JSON (for worker processes; :meth:`from_json` reads it back)."""
        data = asdict(self)
        data["inference"] = {
            "config": self.inference.to_dict(),
            "keys": self.inference.keys,
            "supported": self.inference.supported,
        }
        return orjson.dumps(data)

    @classmethod
    def from_json(cls, text: bytes | str) -> ServeSettings:
        """Settings written by :meth:`to_json`."""
        data = orjson.loads(text)
        inference = data.pop("inference")
        batch = BatchPolicy(**data.pop("batch"))
        autoscale = data.pop("autoscale")
        return cls(
            **data,
            inference=replace(
                InferenceConfig.from_mapping(inference["config"], keys=inference["keys"]),
                supported=inference["supported"],
            ),
            batch=batch,
            autoscale=None if autoscale is None else (int(autoscale[0]), int(autoscale[1])),
        )

    def with_port(self, port: int) -> ServeSettings:
        """The same settings on another port (the one a port-0 socket was given)."""
        return replace(self, port=port)


def _env_int(env: Mapping[str, str], name: str, *, minimum: int) -> int | None:
    text = env.get(name, "").strip()
    if not text:
        return None
    try:
        value = int(text)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {text!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}")
    return value


def parse_range(text: str) -> tuple[int, int]:
    """``"1-4"`` -> (1, 4).

    Raises:
        ConfigError: for anything else.
    """
    lo, sep, hi = text.partition("-")
    try:
        if not sep:
            raise ValueError
        return int(lo), int(hi)
    except ValueError:
        raise ConfigError(f"autoscale must be MIN-MAX replicas like 1-4, got {text!r}") from None
