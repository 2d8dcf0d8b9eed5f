"""The one-node host: the app under uvicorn, in ``workers`` processes on one port.

What a SageMaker container runs. Each worker process loads the model once, runs one torch
thread and one micro-batcher. One process per core beats one process with many threads here
(RAY_NOTES.md), and the proxy hop of Ray Serve costs about half of a small box, so a single
node is served best like this.

Each worker listens on its own ``SO_REUSEPORT`` socket bound to the same port, and the kernel
spreads new connections over them by hash. With one socket shared by all workers (uvicorn's
own ``--workers``) the worker that wakes first accepts every connection waiting, so keep-alive
clients that connect together (a batch transform's ``MaxConcurrentTransforms``, a load
balancer's pool) pile onto one process while the others idle: measured here, 32 clients all
landed on one of two workers.

With one worker the model is loaded in this process before the socket opens, so a model that
cannot be loaded is one ``ModelError: ...`` line and exit status 1. With more, this process
loads the model once first, for the same clear failure, then only supervises: it holds the
port (bound, not listening), starts the workers (``spawn``), restarts one that dies, and
stops them all on SIGTERM or SIGINT.

Slow clients: a request's headers, like its body (:mod:`batchcast.serve.app`), must arrive
within ``body_timeout_s``, else the connection is closed (:func:`header_timeout_protocol`).

SIGTERM (what ``docker stop`` and SageMaker send): each worker closes its listening socket,
answers the requests in flight (the batcher drains its queue), closes idle keep-alive
connections and exits; the supervisor exits 0 within ``graceful_timeout_s`` (25 s; SageMaker
kills after 30 s).
"""

from __future__ import annotations

import asyncio
import logging
import logging.config
import multiprocessing
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

from batchcast.errors import ConfigError
from batchcast.serve.access_log import log_config
from batchcast.serve.app import ServeState, create_app
from batchcast.serve.settings import ServeSettings

__all__ = ["bind", "serve_local"]

logger = logging.getLogger("batchcast.serve")

STARTUP_FAILURE = 3  # a worker's exit status when it cannot start (uvicorn's convention)
_RESTART_POLL_S = 0.5


def bind(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """A TCP socket bound to ``host:port`` (port 0: a free one), not yet listening.

    Args:
        host: the interface.
        port: the port.
        reuse_port: set ``SO_REUSEPORT``, so that several processes can listen on the port.

    Raises:
        ConfigError: when the address cannot be bound (in use, not this machine's).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {err.strerror}") from None
    return sock


# uvicorn's HTTP protocol with a bound on how long a request's headers may take.
#
# uvicorn arms a timer only between requests on a keep-alive connection (timeout_keep_alive),
# and cancels it as soon as any byte arrives. A client that connects and sends nothing, or
# sends part of a request line or its headers and then a byte now and then (slowloris), held
# its connection and file descriptor for ever; a few thousand such clients exhaust a worker's
# descriptors and it stops accepting. The body is bounded by the application (body_timeout_s
# in batchcast.serve.app); this bounds the head the same way: from a connection's start, or
# from the first byte of the next request on a keep-alive connection, the headers must be
# complete within the timeout, else the connection is closed (no request exists yet to answer).
# Only the httptools protocol (uvicorn's default when httptools is installed, as with
# uvicorn[standard]) is extended; without httptools uvicorn's own h11 protocol is used,
# unbounded. Ray Serve's proxy is Ray's uvicorn, not this one.


def header_timeout_protocol(timeout_s: float) -> type[asyncio.Protocol] | None:
    """uvicorn's httptools protocol with the head of each request bounded by ``timeout_s``.

    Returns:
        The protocol class for ``uvicorn.Config(http=...)``, or None without httptools.
    """
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:  # no httptools: uvicorn's h11 protocol, unbounded
        return None

    class HeaderTimeoutProtocol(HttpToolsProtocol):
        _header_timer: asyncio.TimerHandle | None = None
        _head_arriving = False  # bytes of a request whose headers are not complete yet
        _draining = False

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm()  # a connection that never sends a byte is bounded too

        def data_received(self, data: bytes) -> None:
            # Between requests (none yet, or the last one answered) bytes are a new head.
            if self.cycle is None or self.cycle.response_complete:
                self._head_arriving = True
                if self._header_timer is None:
                    self._arm()
            super().data_received(data)

        def on_headers_complete(self) -> None:
            self._disarm()
            self._head_arriving = False
            super().on_headers_complete()
            if self._draining:  # the request that was arriving at SIGTERM: answer, then close
                self.cycle.keep_alive = False

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def shutdown(self) -> None:
            # uvicorn closes every connection without a request in progress, including one
            # whose request has arrived (in the socket, or its headers part read) but is not
            # parsed yet: a worker busy decoding a large body at SIGTERM reset such clients.
            # Answer that request first (bounded by the header timeout and the drain's).
            idle = self.cycle is None or self.cycle.response_complete
            if idle and not self._draining and (self._head_arriving or self._unread()):
                self._draining = True
                if self._header_timer is None:
                    self._arm()
                return
            super().shutdown()

        def _unread(self) -> bool:
            """Whether the client has sent bytes not yet read from the socket."""
            sock = self.transport.get_extra_info("socket")
            if sock is None:
                return False
            try:  # a duplicate: uvloop's transport socket cannot recv
                with socket.socket(fileno=os.dup(sock.fileno())) as peek:
                    return bool(peek.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
            except OSError:  # nothing waiting (EAGAIN), or the socket is gone
                return False

        def _arm(self) -> None:
            self._header_timer = self.loop.call_later(timeout_s, self._expire)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _expire(self) -> None:
            self._header_timer = None
            if not self.transport.is_closing():
                self.transport.close()

    return HeaderTimeoutProtocol


def _keep_running(signum: int, frame: FrameType | None) -> None:
    """SIGTERM or SIGINT after the drain: uvicorn re-raises the signal it shut down on;
    ending the process by it would exit 143 (or 130, with a traceback), and SageMaker
    expects 0."""


def _run_server(settings: ServeSettings, sock: socket.socket, state: ServeState | None) -> bool:
    """Serve on ``sock`` until SIGTERM/SIGINT; whether the server started."""
    import uvicorn

    config = uvicorn.Config(
        create_app(settings, state=state),
        host=settings.host,
        port=settings.port,
        # A request's headers are bounded like its body (a slowloris client held its
        # connection for ever): see batchcast.serve.protocol.
        http=header_timeout_protocol(settings.body_timeout_s) or "auto",
        access_log=False,  # AccessLog writes the lines, with latency and series
        log_config=log_config(),
        lifespan="on",
        # uvicorn types it int, and awaits it with asyncio.wait_for, which takes any float
        timeout_graceful_shutdown=settings.graceful_timeout_s,  # type: ignore[arg-type]
        server_header=False,
    )
    server = uvicorn.Server(config)
    # uvicorn shuts down on either signal, then raises it again once it has restored the
    # handler it found: ours swallow it, so a drained server exits 0 (SIGINT's default
    # handler would end it with a KeyboardInterrupt traceback, SIGTERM's with 143).
    signal.signal(signal.SIGTERM, _keep_running)
    signal.signal(signal.SIGINT, _keep_running)
    server.run(sockets=[sock])
    return bool(server.started)


def _worker(settings_json: bytes) -> None:
    """A worker process (spawned): its own SO_REUSEPORT socket on the shared port."""
    settings = ServeSettings.from_json(settings_json)
    logging.config.dictConfig(log_config())
    sock = bind(settings.host, settings.port, reuse_port=True)
    status = 0 if _run_server(settings, sock, None) else STARTUP_FAILURE
    # Served and drained: skip the interpreter's teardown. Its garbage collection over the
    # model's and torch's objects took 5-10 s per worker here, on top of the drain, and
    # SageMaker kills the container 30 s after SIGTERM.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def serve_local(settings: ServeSettings, *, announce: Callable[[str], None] | None = None) -> int:
    """Serve until SIGTERM or SIGINT.

    Args:
        settings: the deployment.
        announce: called once with the line naming the URL, when it listens (default: a line
            on stderr, ``batchcast serve: listening on http://HOST:PORT ...``).

    Returns:
        The exit status: 0 after a clean shutdown, 1 when a worker could not start.

    Raises:
        ConfigError: for an address that cannot be bound.
        ModelError: for a model that cannot be loaded.
    """
    logging.config.dictConfig(log_config())
    state = ServeState.load(settings)  # fails here, once, with a one-line error
    sock = bind(settings.host, settings.port, reuse_port=settings.workers > 1)
    settings = settings.with_port(sock.getsockname()[1])
    message = (
        f"batchcast serve: listening on http://{settings.host}:{settings.port} "
        f"({settings.workers} worker(s), model {settings.model}"
        f"{', echo' if settings.echo else ''})"
    )
    if settings.workers == 1:
        (announce or _announce)(message)
        return 0 if _run_server(settings, sock, state) else 1
    del state  # the workers load their own
    # Spawned workers inherit this: one OpenMP thread from their first torch import on.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        (announce or _announce)(message)
        return _supervise(settings)
    finally:
        sock.close()  # held (bound, not listening) so that the port stays ours meanwhile


def _supervise(settings: ServeSettings) -> int:
    """Run ``settings.workers`` worker processes; restart one that dies; stop on a signal."""
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked torch
    payload = settings.to_json()

    def start() -> Any:
        process = context.Process(target=_worker, args=(payload,), name="batchcast-serve")
        process.start()
        return process

    stop = threading.Event()
    previous = {
        sig: signal.signal(sig, lambda signum, frame: stop.set())
        for sig in (signal.SIGTERM, signal.SIGINT)
    }
    workers = [start() for _ in range(settings.workers)]
    status = 0
    try:
        while not stop.wait(_RESTART_POLL_S):
            for i, process in enumerate(workers):
                if process.is_alive():
                    continue
                if process.exitcode == STARTUP_FAILURE:
                    logger.error("worker [%d] could not start; stopping", process.pid)
                    status = 1
                    stop.set()
                    break
                logger.warning(
                    "worker [%d] died (exit status %s); restarting", process.pid, process.exitcode
                )
                workers[i] = start()
    finally:
        for process in workers:
            if process.is_alive():
                os.kill(process.pid, signal.SIGTERM)
        for process in workers:
            process.join(settings.graceful_timeout_s + 5.0)
            if process.is_alive():  # past the drain's limit: SageMaker would kill it too
                process.kill()
                process.join()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return status


def _announce(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
