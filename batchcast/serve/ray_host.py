"""The cluster host: the same application on Ray Serve (``@serve.ingress``).

Each replica is a Ray actor (one CPU, or one GPU with ``device="cuda"``) that builds the
application of :mod:`batchcast.serve.app` from the settings it is given, so it loads the model
once and runs one micro-batcher, exactly as a uvicorn worker does. Serve's HTTP proxy (one
per node) routes requests to replicas; Serve's scheduler spreads the replicas over the
cluster's nodes (its default SPREAD strategy).

Sizing (RAY_NOTES.md): Serve's default ``max_ongoing_requests`` of 5 per replica starves a
batcher (at 32 concurrent clients requests queue in the proxy and the median reaches 3 s),
so it is set to two batches' worth of single-series requests
(:attr:`ServeSettings.replica_ongoing_requests`). With ``autoscale=(MIN, MAX)`` Serve
scales the replicas to keep one batch's worth in flight per replica.

Three ways in:

- ``batchcast serve --ray`` (or any ``batchcast serve`` with ``RAY_ADDRESS`` set):
  :func:`serve_ray` deploys the application, serves until SIGTERM, then deletes it.
- ``serve run examples/serve_config.yaml`` / ``serve deploy``: the config names
  :func:`app_builder` as its ``import_path`` and passes the settings as ``args``.
- Python: ``serve.run(build_application(settings))``.
"""

from __future__ import annotations

import logging.config
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

import ray
from ray import serve
from ray.serve import Application

from batchcast.errors import ConfigError
from batchcast.serve.access_log import log_config
from batchcast.serve.app import create_app
from batchcast.serve.settings import BatchPolicy, ServeSettings, parse_range

__all__ = ["APP_NAME", "BatchcastReplica", "app_builder", "build_application", "serve_ray"]

APP_NAME = "batchcast"


@serve.ingress()
class BatchcastReplica:
    """One Serve replica: the application of :func:`batchcast.serve.app.create_app`.

    Args:
        settings_json: :meth:`ServeSettings.to_json` (plain bytes travel to any node).
    """

    def __init__(self, settings_json: bytes) -> None:
        self.settings = ServeSettings.from_json(settings_json)
        # A replica's stderr goes to its Ray log file (and to the driver's console): give the
        # access lines a handler there, as the uvicorn host does.
        logging.config.dictConfig(log_config())

    def __serve_build_asgi_app__(self) -> Any:
        # Called by Serve in the replica after __init__; the app's lifespan loads the model.
        return create_app(self.settings)


def build_application(settings: ServeSettings) -> Application:
    """The Serve application of a deployment.

    Args:
        settings: the deployment; ``workers`` is the number of replicas (unless
            ``autoscale`` is set).

    Returns:
        A bound application for ``serve.run``.
    """
    gpu = settings.device.startswith("cuda")
    options: dict[str, Any] = {
        "name": APP_NAME,
        "ray_actor_options": {"num_cpus": 0 if gpu else 1, "num_gpus": 1 if gpu else 0},
        "max_ongoing_requests": settings.replica_ongoing_requests,
        # Drain on shutdown like the uvicorn host: in-flight requests are answered.
        "graceful_shutdown_timeout_s": settings.graceful_timeout_s,
        # The app writes its own access lines (with series counts); Serve's would double them.
        "logging_config": {"enable_access_log": False},
    }
    if settings.autoscale is not None:
        lo, hi = settings.autoscale
        per_batch = max(1, settings.batch.max_rows // settings.inference.num_samples)
        options["autoscaling_config"] = {
            "min_replicas": lo,
            "max_replicas": hi,
            "target_ongoing_requests": per_batch,
        }
    else:
        options["num_replicas"] = settings.workers
    deployment = serve.deployment(**options)(BatchcastReplica)
    return deployment.bind(settings.to_json())


_BUILDER_ARGS = {
    "model": str,
    "workers": int,
    "max_payload_mb": float,
    "max_concurrent_transforms": int,
    "seed": int,
    "device": str,
    "max_ongoing_requests": int,
    "batch_rows": int,
    "batch_wait_ms": float,
    "autoscale": str,
    "body_timeout_s": float,
}


def app_builder(args: Mapping[str, Any]) -> Application:
    """The application builder named by a Serve config (``import_path``).

    Args:
        args: the config's ``args``: ``model`` (required), ``workers``, ``max_payload_mb``,
            ``max_concurrent_transforms``, ``seed``, ``device``, ``max_ongoing_requests``,
            ``batch_rows``, ``batch_wait_ms``, ``autoscale`` (``"MIN-MAX"``),
            ``body_timeout_s``. The rest comes
            from the environment, as for ``batchcast serve`` (``DEEPAR_INFERENCE_CONFIG``,
            ``SAGEMAKER_MAX_PAYLOAD_IN_MB``; set them in the config's ``runtime_env``).

    Raises:
        ConfigError: for an unknown or invalid argument, naming it.
    """
    unknown = sorted(set(args) - set(_BUILDER_ARGS))
    if unknown:
        raise ConfigError(f"unknown Serve config arg(s) {unknown}; known: {sorted(_BUILDER_ARGS)}")
    values: dict[str, Any] = {}
    for key, value in args.items():
        try:
            values[key] = _BUILDER_ARGS[key](value)
        except (TypeError, ValueError):
            raise ConfigError(f"Serve config arg {key!r}: cannot read {value!r}") from None
    if "model" not in values:
        raise ConfigError("Serve config args must name the model: args: {model: ...}")
    batch = BatchPolicy(
        max_rows=values.pop("batch_rows", BatchPolicy.max_rows),
        max_wait_ms=values.pop("batch_wait_ms", BatchPolicy.max_wait_ms),
    )
    autoscale = values.pop("autoscale", None)
    settings = ServeSettings.from_environment(
        **values, batch=batch, autoscale=None if autoscale is None else parse_range(autoscale)
    )
    return build_application(settings)


def _free_port(host: str) -> int:
    # Serve's proxy cannot be given port 0, so ask the kernel for a free one (a race with
    # another process binding it meanwhile is possible, and then fails loudly at start).
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def serve_ray(
    settings: ServeSettings,
    *,
    replicas_per_cpu: bool = False,
    announce: Callable[[str], None] | None = None,
) -> int:
    """Deploy on Ray Serve and serve until SIGTERM or SIGINT; then delete the application.

    Joins the cluster in ``RAY_ADDRESS`` when set, else starts a private local Ray (never
    one found on the machine by chance). Serve's HTTP proxy listens on ``settings.host`` /
    ``settings.port``; if Serve already runs on the cluster, its proxies keep their own.

    Args:
        settings: the deployment.
        replicas_per_cpu: one replica per CPU of the cluster (in place of
            ``settings.workers``): the default when no worker count was given.
        announce: called once with a line naming the URL (default: stderr).

    Returns:
        0 after a clean shutdown.
    """
    port = settings.port or _free_port(settings.host)
    address = os.environ.get("RAY_ADDRESS") or "local"
    started_ray = not ray.is_initialized()
    if started_ray:
        ray.init(address=address, include_dashboard=False, log_to_driver=True)
    if replicas_per_cpu:
        cpus = int(ray.cluster_resources().get("CPU", 1))
        settings = replace(settings, workers=max(1, cpus))
    stop = threading.Event()
    previous = {
        sig: signal.signal(sig, lambda signum, frame: stop.set())
        for sig in (signal.SIGTERM, signal.SIGINT)
    }
    try:
        serve.start(http_options={"host": settings.host, "port": port})
        serve.run(build_application(settings), name=APP_NAME, route_prefix="/")
        message = (
            f"batchcast serve: listening on http://{settings.host}:{port} (Ray Serve, "
            f"{_replicas(settings)} replica(s), model {settings.model})"
        )
        (announce or _announce)(message)
        stop.wait()
        serve.delete(APP_NAME)  # replicas finish their requests in flight first
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if started_ray:
            if address == "local":
                serve.shutdown()
            ray.shutdown()
    return 0


def _replicas(settings: ServeSettings) -> str:
    if settings.autoscale is None:
        return str(settings.workers)
    return f"{settings.autoscale[0]}-{settings.autoscale[1]}"


def _announce(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
