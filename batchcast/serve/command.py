"""The ``serve`` subcommand: argument parsing only.

``cli.py`` registers it with :func:`add_parser`; the parser sets ``func``, which returns the
exit status (a :class:`~batchcast.errors.BatchcastError` it raises becomes ``Type: message``
in ``cli.main``). Registering costs nothing at start-up: uvicorn, FastAPI, torch and Ray are
imported by the command when it runs.

``batchcast serve`` is also what a SageMaker container runs: with ``ENTRYPOINT
["batchcast"]``, SageMaker's ``docker run IMAGE serve`` is this command with the defaults
(model ``/opt/ml/model``, port ``SAGEMAKER_BIND_TO_PORT`` or 8080, all interfaces).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from batchcast.errors import BatchcastError

__all__ = ["add_parser", "main", "run_serve"]

_DESCRIPTION = """\
Serve forecasts over HTTP: the SageMaker inference-container contract (GET /ping,
GET /execution-parameters, POST /invocations with application/json or application/jsonlines).
Concurrent requests are batched into one vectorised forecast per worker.

Hosts: uvicorn with --workers processes (the default, and the container path), or Ray Serve
with --ray or whenever RAY_ADDRESS is set (replicas spread over the cluster).

Environment: SAGEMAKER_BIND_TO_PORT, MODEL_SERVER_WORKERS (or SAGEMAKER_MODEL_SERVER_WORKERS),
SAGEMAKER_MAX_PAYLOAD_IN_MB, DEEPAR_INFERENCE_CONFIG; flags override them. SIGTERM answers the
requests in flight and exits 0.
"""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``serve`` on ``subparsers`` (from ``parser.add_subparsers()``).

    Returns:
        The subcommand's parser (its ``func`` default is set).
    """
    p: argparse.ArgumentParser = subparsers.add_parser(
        "serve",
        help="serve forecasts over HTTP (the SageMaker container contract), batched",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--model", help="model folder or model.tar.gz, local or s3:// (default /opt/ml/model)"
    )
    p.add_argument("--host", help="interface to listen on (default 0.0.0.0: all)")
    p.add_argument(
        "--port", type=int, help="TCP port (default SAGEMAKER_BIND_TO_PORT or 8080; 0: any free)"
    )
    p.add_argument(
        "--workers",
        type=_positive_int,
        help="worker processes (Ray: replicas), each one model and one torch thread "
        "(default MODEL_SERVER_WORKERS or SAGEMAKER_MODEL_SERVER_WORKERS, else one per CPU)",
    )
    p.add_argument(
        "--ray", action="store_true", help="host on Ray Serve (implied when RAY_ADDRESS is set)"
    )
    p.add_argument("--autoscale", metavar="MIN-MAX", help="Ray Serve: autoscale the replicas")
    p.add_argument(
        "--max-ongoing-requests",
        type=_positive_int,
        help="Ray Serve: requests per replica at once (default: two batches' worth)",
    )
    p.add_argument(
        "--inference-config",
        help="DEEPAR_INFERENCE_CONFIG as JSON; overrides the environment",
    )
    p.add_argument(
        "--max-payload-mb", type=float, help="largest request body (default 6, or the env)"
    )
    p.add_argument(
        "--max-concurrent-transforms",
        type=_positive_int,
        help="what /execution-parameters advertises (default 2 x workers)",
    )
    p.add_argument(
        "--batch-rows",
        type=_positive_int,
        help="row budget of one forecast call, series x samples (default 6400)",
    )
    p.add_argument(
        "--batch-wait-ms",
        type=float,
        help="how long a batch waits for more requests when the sampler is free (default 2)",
    )
    p.add_argument(
        "--no-batching", action="store_true", help="forecast each request alone (a baseline)"
    )
    p.add_argument("--seed", type=int, help="root of every forecast's seed (default 0)")
    p.add_argument("--device", help="cpu (default) or cuda")
    p.add_argument(
        "--graceful-timeout", type=float, help="seconds requests may take after SIGTERM (25)"
    )
    p.add_argument(
        "--body-timeout",
        type=float,
        help="seconds a request body may take to arrive, then 408 (default 60: SageMaker's "
        "invocation timeout); uvicorn host: its headers too, then the connection is closed",
    )
    p.add_argument(
        "--echo",
        action="store_true",
        help="diagnostics: answer /invocations with its body, no model (the HTTP ceiling)",
    )
    p.set_defaults(func=run_serve)
    return p


def run_serve(args: argparse.Namespace) -> int:
    """Run the server the arguments describe.

    Returns:
        The exit status.

    Raises:
        ConfigError: for invalid settings, before the model is loaded.
        ModelError: for a model that cannot be loaded.
    """
    from batchcast.serve.settings import BatchPolicy, ServeSettings, parse_range

    batch = BatchPolicy(
        max_rows=args.batch_rows or BatchPolicy.max_rows,
        max_wait_ms=BatchPolicy.max_wait_ms if args.batch_wait_ms is None else args.batch_wait_ms,
        enabled=not args.no_batching,
    )
    inference = None
    if args.inference_config is not None:
        from batchcast.runner.job import inference_from_env_value

        inference = inference_from_env_value(args.inference_config, where="--inference-config")
    settings = ServeSettings.from_environment(
        model=args.model,
        host=args.host,
        port=args.port,
        workers=args.workers,
        max_payload_mb=args.max_payload_mb,
        max_concurrent_transforms=args.max_concurrent_transforms,
        inference=inference,
        batch=batch,
        seed=args.seed,
        device=args.device,
        echo=args.echo or None,
        graceful_timeout_s=args.graceful_timeout,
        body_timeout_s=args.body_timeout,
        autoscale=None if args.autoscale is None else parse_range(args.autoscale),
        max_ongoing_requests=args.max_ongoing_requests,
    )
    if args.ray or os.environ.get("RAY_ADDRESS", "").strip():
        from batchcast.serve.ray_host import serve_ray

        given = args.workers is not None or any(
            os.environ.get(name, "").strip()
            for name in ("MODEL_SERVER_WORKERS", "SAGEMAKER_MODEL_SERVER_WORKERS")
        )
        return serve_ray(settings, replicas_per_cpu=not given)
    from batchcast.serve.local import serve_local

    return serve_local(settings)


def main(argv: Sequence[str] | None = None) -> int:
    """``batchcast serve`` on its own (``python -m batchcast.serve.command ...``), with the
    CLI's error rule: a :class:`BatchcastError` is one ``Type: message`` line, exit 1."""
    parser = argparse.ArgumentParser(prog="batchcast")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["serve", *(sys.argv[1:] if argv is None else argv)])
    try:
        status: int = args.func(args)
    except BatchcastError as err:
        print(f"{type(err).__name__}: {err}", file=sys.stderr)
        return 1
    return status


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
