"""The SageMaker inference-container contract as one ASGI application (SPEC.md §9).

Routes:

- ``GET /ping``: 200, empty body, once the model is loaded (the app only starts serving
  after its lifespan has loaded it).
- ``GET /execution-parameters``: ``{"MaxConcurrentTransforms": N, "BatchStrategy":
  "MultiRecord", "MaxPayloadInMB": M}``.
- ``POST /invocations``: ``application/json`` (the endpoint form, ``{"instances",
  "configuration"}`` -> ``{"predictions"}``) or ``application/jsonlines`` (one record per
  line, configured by ``DEEPAR_INFERENCE_CONFIG``; one output line per input line, in
  order). ``Accept`` picks the encoding (:data:`~batchcast.runner.online.RESPONSE_TYPES`).

Errors are ``{"error": {"line"|"instance": N, "field": ..., "message": ...}}`` (the number
only for a bad record): 400 bad body or record, 413 body over ``MaxPayloadInMB``, 415
content type, 406 accept, 408 a body that did not arrive within ``body_timeout_s`` (the
connection is closed after it), 500 an internal error (logged with its traceback). None of
them stops the server.

Decisions where SageMaker leaves room: a missing ``Content-Type`` is JSON Lines (SPEC.md §8's
default input); a missing ``Accept``, ``*/*`` or ``application/*`` answers in the request's
own type, so ``curl`` (which sends ``Accept: */*``) gets ``{"predictions"}`` back for a JSON
request; ``text/*`` is CSV. Header parameters (``; charset=utf-8``) are ignored: bodies are
UTF-8 JSON.

The same application runs under uvicorn (:mod:`batchcast.serve.local`) and on Ray Serve
(:mod:`batchcast.serve.ray_host`); each worker process (replica) holds one model and one
:class:`~batchcast.serve.batcher.MicroBatcher`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from batchcast.errors import BatchcastError, ConfigError, RecordError
from batchcast.io.content import parse_content_type
from batchcast.runner.online import (
    ENDPOINT,
    JSON,
    LINES,
    RESPONSE_TYPES,
    OnlineRequest,
    encode_response,
    parse_endpoint_body,
    parse_lines,
)
from batchcast.serve.access_log import CLIENT_GONE, AccessLog
from batchcast.serve.batcher import Answer, MicroBatcher
from batchcast.serve.settings import ServeSettings

if TYPE_CHECKING:  # loading a model imports torch; the echo host never does
    from batchcast.forecast.config import InferenceConfig
    from batchcast.forecast.sampling import Forecast
    from batchcast.forecast.series import SeriesBatch
    from batchcast.runner.processor import ShardProcessor

__all__ = ["ServeState", "create_app", "negotiate"]

logger = logging.getLogger("batchcast.serve")

MIB = 1 << 20
# The most rows (series x sample paths) one request may ask for. The sampler holds a chunk of
# max(num_samples, batch rows) rows at once, and "samples" answers hold every row: without a
# bound, one request with {"num_samples": 1000000000} had its worker killed for memory, and
# the requests in flight there with it. 4M rows is a 6 MB body of 40,000 small series at 100
# paths, or one series at 4M paths: tens of seconds of sampling, a few hundred MB at most.
MAX_REQUEST_ROWS = 1 << 22
# Sample paths are answered whole, so with "samples" asked for, the answer's size bounds the
# request too: rows x prediction_length values. Measured: ~40 bytes per value at the worker's
# peak (the paths, their JSON and its copies), so 8M values are ~330 MB; 4M rows x 24 steps
# (within the row bound) peaked at 4 GB.
MAX_SAMPLE_VALUES = 1 << 23
# A body over MaxPayloadInMB is read and dropped up to this many times the limit before its
# 413, and refused at once (connection closed) beyond: see _read_body.
DRAIN_FACTOR = 4


class _RefusedError(Exception):
    """A request the server will not answer: becomes an error response (never raised out)."""

    def __init__(self, status: int, message: str, *, field: str = "$", close: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.field = field
        self.message = message
        # The connection cannot carry another request (the body's end never came): say so,
        # and the host closes it after the answer.
        self.close = close


@dataclass
class ServeState:
    """What one worker holds while it serves: the settings, the model and the batcher.

    Attributes:
        settings: the deployment.
        processor: the loaded model (None in echo mode).
        batcher: the micro-batcher in front of it (None in echo mode).
    """

    settings: ServeSettings
    processor: ShardProcessor | None = None
    batcher: MicroBatcher | None = None

    @classmethod
    def load(cls, settings: ServeSettings) -> ServeState:
        """Load the model (one torch thread: one worker process per core serves best).

        Raises:
            ModelError: when the model cannot be loaded.
        """
        if settings.echo:
            return cls(settings)
        import torch

        from batchcast.io.join import Join
        from batchcast.runner.processor import ShardProcessor, WorkerOptions

        torch.set_num_threads(1)
        options = WorkerOptions(
            inference=settings.inference,
            join=Join(),
            max_payload_mb=settings.max_payload_mb,
            seed=settings.seed,
        )
        _check_device(settings.device)
        processor = ShardProcessor(settings.model, options, device=settings.device)
        # What a transform checks before reading a record, checked before serving one: a
        # configuration no request can satisfy must stop the server, not fail every client.
        settings.inference.check_horizon(processor.spec.prediction_length)
        if settings.inference.num_samples > MAX_REQUEST_ROWS:
            raise ConfigError(
                f"num_samples must be <= {MAX_REQUEST_ROWS} (the rows one request may ask "
                f"for), got {settings.inference.num_samples}"
            )

        def run(batch: SeriesBatch, inference: InferenceConfig, seed: int) -> Forecast:
            return processor.sample(batch, seed, inference=inference)

        batcher = MicroBatcher(run, policy=settings.batch, seed=settings.seed)
        return cls(settings, processor, batcher)


def _check_device(device: str) -> None:
    """A device name torch knows, and a CUDA device that exists (else one ConfigError line,
    not torch's traceback at the first tensor)."""
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError) as err:
        raise ConfigError(f"device must be a torch device such as cpu or cuda: {err}") from None
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r}: torch sees no CUDA device on this machine")


def negotiate(accept: str | None, *, default: str, supported: tuple[str, ...]) -> str | None:
    """The response type for an ``Accept`` header.

    The highest ``q`` that can be served wins, the earlier range on equal weights; ``*/*``
    means ``default``, ``type/*`` ``default`` if it is of that type, else the first supported
    type that is (``text/*``: CSV); ``q=0`` excludes a range, wildcards included
    (``application/json;q=0, */*`` is answered in another type).

    Args:
        accept: the header (None or blank: ``default``).
        default: the request's own type.
        supported: what can be written.

    Returns:
        The chosen type, or None when nothing listed can be served (406).
    """
    if accept is None or not accept.strip():
        return default
    ranges: list[tuple[float, int, str]] = []
    excluded: set[str] = set()
    for position, part in enumerate(accept.split(",")):
        kind, *params = part.split(";")
        weight = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    weight = float(value.strip())
                except ValueError:
                    weight = 0.0  # an unreadable weight: ignore the range
        kind = kind.strip().lower()
        if kind and weight > 0:
            ranges.append((-weight, position, kind))
        elif kind:
            excluded.add(kind)
    allowed = [t for t in supported if t not in excluded]
    for _, _, kind in sorted(ranges):
        if kind in allowed:
            return kind
        if kind.endswith("/*"):  # the request's own type if it matches, else the first that does
            main = "" if kind == "*/*" else kind[: -len("*")]
            if default in allowed and default.startswith(main):
                return default
            match = next((t for t in allowed if t.startswith(main)), None)
            if match is not None:
                return match
    return None


def _error_body(error: RecordError | _RefusedError | BatchcastError, form: str | None) -> bytes:
    if isinstance(error, RecordError):
        number = "instance" if form == ENDPOINT else "line"
        payload = {number: error.line, "field": error.field, "message": error.message}
    elif isinstance(error, _RefusedError):
        payload = {"field": error.field, "message": error.message}
    else:
        payload = {"field": "$", "message": str(error)}
    return orjson.dumps({"error": payload})


def _error(status: int, body: bytes, *, close: bool = False) -> Response:
    headers = {"connection": "close"} if close else None
    return Response(body, status_code=status, media_type=JSON, headers=headers)


async def _read_body(request: Request, limit_mb: float, timeout_s: float) -> bytes:
    """The body, or an error: 413 past ``limit_mb`` MiB, 408 when it has not all arrived
    within ``timeout_s`` (a slow or stalled sender).

    A body a little over the limit is read and dropped before the 413, so that the client,
    still sending, sees the answer instead of a reset connection. One declared (or grown) past
    :data:`DRAIN_FACTOR` times the limit is refused at once and its connection closed:
    draining a client that claims a gigabyte would cost the gigabyte, or the whole timeout.
    """
    limit = int(limit_mb * MIB)
    drain_limit = DRAIN_FACTOR * limit
    declared = request.headers.get("content-length", "")
    size = int(declared) if declared.isdigit() else 0
    if size > drain_limit:
        raise _too_big(size, limit_mb, limit, close=True)
    too_big = size > limit
    chunks: list[bytes] = []
    received = 0
    try:
        # One deadline for the whole body, not one per chunk: a client trickling a byte
        # every few seconds would reset a per-chunk timer forever (slowloris).
        async with asyncio.timeout(timeout_s):
            async for chunk in request.stream():
                received += len(chunk)
                if received > limit:
                    too_big = True
                    if received > drain_limit:
                        raise _too_big(received, limit_mb, limit, close=True, at_least=True)
                if not too_big:
                    chunks.append(chunk)
    except TimeoutError:
        if too_big:  # its answer is known; what is left of it will not be read
            raise _too_big(
                max(size, received), limit_mb, limit, close=True, at_least=not size
            ) from None
        raise _RefusedError(
            408,
            f"the request body did not arrive within {timeout_s:g} s ({received} bytes of "
            f"{declared or 'an unknown length'} received)",
            field="$",
            close=True,
        ) from None
    if too_big:
        raise _too_big(max(size, received), limit_mb, limit)
    return b"".join(chunks)


def _too_big(
    size: int, limit_mb: float, limit: int, *, close: bool = False, at_least: bool = False
) -> _RefusedError:
    return _RefusedError(
        413,
        f"the request body is {'at least ' if at_least else ''}{size} bytes; "
        f"MaxPayloadInMB is {limit_mb:g} ({limit} bytes)",
        field="Content-Length",
        close=close,
    )


def create_app(settings: ServeSettings, *, state: ServeState | None = None) -> FastAPI:
    """The application of one worker: loads the model on startup, drains on shutdown.

    Args:
        settings: the deployment.
        state: a model already loaded (:meth:`ServeState.load`); None loads it on startup.

    Returns:
        The ASGI application, access log included.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        serving = state or ServeState.load(settings)
        if serving.batcher is not None:
            await serving.batcher.start()
        app.state.serve = serving
        try:
            yield
        finally:
            if serving.batcher is not None:
                await serving.batcher.close()  # answers what is queued: the drain

    app = FastAPI(
        title="batchcast",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    execution_parameters = orjson.dumps(
        {
            "MaxConcurrentTransforms": settings.concurrent_transforms,
            "BatchStrategy": "MultiRecord",
            "MaxPayloadInMB": int(settings.max_payload_mb)
            if float(settings.max_payload_mb).is_integer()
            else settings.max_payload_mb,
        }
    )

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        # An unknown route or method answers in the documented error form too, not FastAPI's
        # {"detail": ...}; a 405 keeps its Allow header.
        message = f"{request.method} {request.url.path}: {exc.detail}"
        body = orjson.dumps({"error": {"field": "$", "message": message}})
        return Response(body, status_code=exc.status_code, media_type=JSON, headers=exc.headers)

    @app.get("/ping")
    async def ping() -> Response:
        return Response(status_code=200)

    @app.get("/execution-parameters")
    async def parameters() -> Response:
        return Response(execution_parameters, media_type=JSON)

    @app.post("/invocations")
    async def invocations(request: Request) -> Response:
        state: ServeState = request.app.state.serve
        form: str | None = None
        try:
            try:
                content_type = parse_content_type(
                    request.headers.get("content-type"), name="Content-Type"
                )
            except ConfigError as err:
                raise _RefusedError(415, str(err), field="Content-Type") from None
            form = ENDPOINT if content_type == JSON else LINES
            accept = negotiate(
                request.headers.get("accept"), default=content_type, supported=RESPONSE_TYPES
            )
            if accept is None:
                raise _RefusedError(
                    406,
                    f"Accept {request.headers.get('accept')!r} cannot be served; "
                    f"accepted: {list(RESPONSE_TYPES)}",
                    field="Accept",
                )
            try:
                body = await _read_body(request, settings.max_payload_mb, settings.body_timeout_s)
            except ClientDisconnect:  # the client hung up mid-body: nothing to answer
                return Response(status_code=CLIENT_GONE)
            if state.batcher is None:  # echo: the HTTP ceiling, no model
                return Response(body, media_type=content_type)
            parsed = _parse(state, body, form)
            request.state.series = parsed.num_series
            if parsed.rows > MAX_REQUEST_ROWS:
                raise _RefusedError(
                    400,
                    f"the request asks for {parsed.num_series} series x "
                    f"{parsed.inference.num_samples} sample paths = {parsed.rows} rows; a "
                    f"request may ask for at most {MAX_REQUEST_ROWS} (lower num_samples, or "
                    "send fewer records per request)",
                    field="num_samples",
                )
            _check_answer_size(parsed, state)
            answer = None
            if parsed.num_series:
                answer = await _forecast_while_connected(request, state.batcher, parsed)
                if answer is None:  # dropped from its batch: nobody to answer
                    return Response(status_code=CLIENT_GONE)
                request.state.batch = answer.batch_requests
            # Off the event loop: a large answer takes a while to encode, and /ping (the
            # health check) must not wait for it.
            payload = await run_in_threadpool(
                encode_response,
                parsed,
                None if answer is None else answer.forecast,
                media_type=accept,
            )
            return Response(payload, media_type=accept)
        except _RefusedError as refused:
            return _error(refused.status, _error_body(refused, form), close=refused.close)
        except BatchcastError as err:  # a bad body, configuration or record: the client's
            return _error(400, _error_body(err, form))
        except Exception as err:
            logger.exception("internal error answering /invocations")
            message = f"internal error ({type(err).__name__}); see the server log"
            return _error(500, _error_body(_RefusedError(500, message), form))

    app.add_middleware(AccessLog)
    return app


def _check_answer_size(parsed: OnlineRequest, state: ServeState) -> None:
    """Refuse a request whose sample paths would exceed :data:`MAX_SAMPLE_VALUES`."""
    if "samples" not in parsed.inference.output_keys:
        return
    assert state.processor is not None  # only the echo host has no model, and it never parses
    horizon = state.processor.spec.prediction_length
    values = parsed.rows * horizon
    if values > MAX_SAMPLE_VALUES:
        raise _RefusedError(
            400,
            f"the request asks for the samples of {parsed.rows} rows x {horizon} steps = "
            f"{values} values; an answer may hold at most {MAX_SAMPLE_VALUES} (lower "
            "num_samples, send fewer records per request, or ask for quantiles instead)",
            field="num_samples",
        )


async def _until_disconnected(request: Request) -> None:
    """Return when the client has gone (the body is read: the next message is the end)."""
    try:
        while (await request.receive())["type"] != "http.disconnect":
            pass
    except Exception:  # a host whose receive cannot tell: never report a disconnect
        await asyncio.get_running_loop().create_future()


async def _forecast_while_connected(
    request: Request, batcher: MicroBatcher, parsed: OnlineRequest
) -> Answer | None:
    """The request's forecast, or None when its client hangs up first.

    uvicorn does not cancel a handler whose client has gone; it only says so on ``receive``.
    Without watching for it, a client that sends a large request and leaves still costs its
    forecast, and the requests queued behind it wait for that. Cancelling the wait cancels
    the batcher's future, so a request still queued is dropped before its batch is formed.
    """
    forecast = asyncio.ensure_future(batcher.forecast(parsed))
    gone = asyncio.ensure_future(_until_disconnected(request))
    try:
        await asyncio.wait((forecast, gone), return_when=asyncio.FIRST_COMPLETED)
    finally:  # one of them is done; the other is of no use (and on cancellation, neither)
        for task in (forecast, gone):
            if not task.done():
                task.cancel()
                with suppress(asyncio.CancelledError, ClientDisconnect):
                    await task
    if forecast.cancelled():
        return None
    return forecast.result()


def _parse(state: ServeState, body: bytes, form: str) -> OnlineRequest:
    settings = state.settings
    assert state.processor is not None  # only the echo host has no model, and it never parses
    spec = state.processor.spec
    if form == ENDPOINT:
        return parse_endpoint_body(
            body, spec=spec, base=settings.inference, max_payload_mb=settings.max_payload_mb
        )
    return parse_lines(
        body, spec=spec, inference=settings.inference, max_payload_mb=settings.max_payload_mb
    )
