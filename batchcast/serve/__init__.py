"""Serving: the SageMaker inference-container contract over HTTP, batched (SPEC.md §9).

::

    settings.py    ServeSettings (flags over the container's environment), BatchPolicy
    app.py         the FastAPI application: routes, status codes, content negotiation
    batcher.py     MicroBatcher: concurrent requests -> one forecast call
    access_log.py  one line per request (latency, series, batch), /ping not logged
    local.py       the one-node host: uvicorn, N worker processes on one socket
    ray_host.py    the cluster host: the same app on Ray Serve (@serve.ingress)
    command.py     the ``batchcast serve`` subcommand

The request path itself (parse, seed, encode) is :mod:`batchcast.runner.online`, shared with
``batchcast predict``. Names are imported lazily, so ``import batchcast.serve`` (and the CLI's
registration of ``serve``) loads neither FastAPI, torch nor Ray.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from batchcast.serve.app import ServeState, create_app
    from batchcast.serve.batcher import Answer, MicroBatcher
    from batchcast.serve.command import add_parser
    from batchcast.serve.local import serve_local
    from batchcast.serve.ray_host import app_builder, build_application, serve_ray
    from batchcast.serve.settings import BatchPolicy, ServeSettings

__all__ = [
    "Answer",
    "BatchPolicy",
    "MicroBatcher",
    "ServeSettings",
    "ServeState",
    "add_parser",
    "app_builder",
    "build_application",
    "create_app",
    "serve_local",
    "serve_ray",
]

_HOME = {
    "Answer": "batcher",
    "BatchPolicy": "settings",
    "MicroBatcher": "batcher",
    "ServeSettings": "settings",
    "ServeState": "app",
    "add_parser": "command",
    "app_builder": "ray_host",
    "build_application": "ray_host",
    "create_app": "app",
    "serve_local": "local",
    "serve_ray": "ray_host",
}


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module 'batchcast.serve' has no attribute {name!r}")
    return getattr(importlib.import_module(f"batchcast.serve.{_HOME[name]}"), name)
