"""One access-log line per request, with its latency and series count; ``/ping`` is not logged.

A pure ASGI middleware (no per-request task or body copy, unlike Starlette's
``BaseHTTPMiddleware``), so it costs a few microseconds at thousands of requests per second.
A handler reports what it did through the request's state (``request.state.series`` and
``request.state.batch``); the line is written when the response has been sent:

    POST /invocations 200 12.4ms series=3 batch=5 in=2048B out=7310B

``batch`` is the number of requests answered by the same forecast call (1: alone).
The lines go to the ``batchcast.serve.access`` logger at INFO.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

__all__ = ["ACCESS_LOGGER", "CLIENT_GONE", "AccessLog", "log_config"]

ACCESS_LOGGER = "batchcast.serve.access"
# The status logged for a request whose client went away before its answer (nginx's "client
# closed request"): never sent, there is no one to send it to.
CLIENT_GONE = 499
# Health checks arrive every few seconds from SageMaker and load balancers: not logged.
_QUIET_PATHS = frozenset({"/ping"})

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class AccessLog:
    """Wraps an ASGI app; logs each HTTP request it answers (module docstring).

    Args:
        app: the application.
        logger: where the lines go (default the ``batchcast.serve.access`` logger).
    """

    def __init__(self, app: ASGIApp, *, logger: logging.Logger | None = None) -> None:
        self.app = app
        self.logger = logger or logging.getLogger(ACCESS_LOGGER)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in _QUIET_PATHS:
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # what the client sees if the app fails before starting a response
        received = sent = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            return message

        async def watching_send(message: Message) -> None:
            nonlocal status, sent, started
            if message["type"] == "http.response.start":
                status, started = message["status"], True
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, counting_receive, watching_send)
        except asyncio.CancelledError:
            # The host gave up on the request: Ray Serve cancels a replica's handler when its
            # client disconnects (uvicorn lets it run and says so on receive). Not a 500.
            if not started:
                status = CLIENT_GONE
            raise
        finally:
            if self.logger.isEnabledFor(logging.INFO):
                state = scope.get("state") or {}
                extra = "".join(
                    f" {key}={state[key]}" for key in ("series", "batch") if key in state
                )
                self.logger.info(
                    "%s %s %d %.1fms%s in=%dB out=%dB",
                    scope["method"],
                    scope["path"],
                    status,
                    1000.0 * (time.perf_counter() - start),
                    extra,
                    received,
                    sent,
                )


def log_config(level: str = "INFO") -> dict[str, Any]:
    """Logging for a server process: one line per record on stderr, with the process id
    (several workers write to the same stream)."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "line": {
                "format": "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s",
            }
        },
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "line",
                "stream": "ext://sys.stderr",
            }
        },
        "loggers": {
            "uvicorn": {"handlers": ["stderr"], "level": level, "propagate": False},
            "uvicorn.error": {"level": level},
            # uvicorn's own access log is off: AccessLog writes the lines, with latency.
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
            "batchcast.serve": {"handlers": ["stderr"], "level": level, "propagate": False},
            ACCESS_LOGGER: {"level": level},
        },
    }
