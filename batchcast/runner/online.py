"""The online request path: ``batchcast predict`` and ``batchcast serve`` both answer through it.

Three steps, kept apart so that the server can batch the middle one across requests:

1. parse: a request becomes an :class:`OnlineRequest` (records validated into a
   :class:`~batchcast.forecast.series.SeriesBatch`, the configuration merged):
   :func:`parse_endpoint` for the endpoint form ``{"instances", "configuration"}``
   (SPEC.md §3), :func:`parse_lines` for a JSON Lines body (what batch transform sends);
2. forecast: ``processor.sample(request.batch, request_seed(seed, [request.digest]),
   inference=request.inference)``, or one call for many requests
   (:class:`batchcast.serve.batcher.MicroBatcher`);
3. encode: :func:`encode_response`.

:func:`predict_request` runs the three for one endpoint-form request (``batchcast predict``).

Decisions where SageMaker and SPEC.md leave room:

- Like SageMaker's endpoint, a request with a bad record fails as a whole: the
  :class:`RecordError` names the first bad instance (or line), 1-based, its field and what
  was expected, and counts the others. A JSON Lines request is one mini-batch of a batch
  transform, so this is SageMaker's ``fail-file`` rule at the request's scale.
- A request's ``configuration`` overrides the base configuration key by key. The base is the
  ``inference`` argument, else ``DEEPAR_INFERENCE_CONFIG`` from the environment (as in the
  container), else the processor's.
- Seeds: a forecast call's generator is seeded from the server's (or ``predict``'s) seed and
  the *content digest* of each request in the call (:func:`request_seed`), never from a
  clock or a counter. So a request forecast on its own gives the same bytes every time, in
  ``predict`` and in ``serve`` alike, on any worker; different requests draw from different
  streams (no common random numbers across requests). The digest covers the records only,
  not the configuration: asking for more output keys does not change the draws.
- Joins and forwarded fields (SPEC.md §5) are batch transform features, applied outside the
  container in SageMaker too: the online path ignores a processor's ``join``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Final, Literal

import numpy as np
import orjson

from batchcast.errors import ConfigError, RecordError
from batchcast.forecast.config import InferenceConfig, ModelSpec
from batchcast.forecast.series import SeriesBatch
from batchcast.io import RecordContract, decode_records
from batchcast.io.content import (
    CSV,
    JSON,
    JSON_LINES,
    ResponseKeys,
    encoder_for,
    parse_accept,
    with_response_keys,
)
from batchcast.io.join import Join
from batchcast.io.jsonl import forecast_dicts
from batchcast.io.output import encode_output, non_finite_errors
from batchcast.io.shards import UTF8_BOM

if TYPE_CHECKING:  # the processor is only passed through here; keep torch out of the import
    from batchcast.forecast.sampling import Forecast
    from batchcast.runner.processor import ShardProcessor

__all__ = [
    "CSV",
    "ENDPOINT",
    "JSON",
    "JSON_LINES",
    "LINES",
    "REQUEST_URI",
    "RESPONSE_TYPES",
    "OnlineRequest",
    "encode_response",
    "environment_inference",
    "parse_endpoint",
    "parse_endpoint_body",
    "parse_lines",
    "predict_request",
    "request_seed",
]

Form = Literal["endpoint", "lines"]
ENDPOINT: Final = "endpoint"
LINES: Final = "lines"

# The response encodings (SPEC.md §8), each request form's default first.
RESPONSE_TYPES = (JSON_LINES, JSON, CSV)

# What a record error names as its source: the request, not a file.
REQUEST_URI = "request"
_NO_JOIN = Join()
_KNOWN_KEYS = ("configuration", "instances")


@dataclass(frozen=True)
class OnlineRequest:
    """One parsed request, ready to forecast.

    Attributes:
        form: ``"endpoint"`` (``{"instances": ...}``) or ``"lines"`` (a JSON Lines body).
        inference: the configuration it is answered with (the base merged with its own).
        batch: its records, all valid, in request order.
        digest: 16 bytes identifying the records' content (the seed's input, see the module
            docstring).
    """

    form: Form
    inference: InferenceConfig
    batch: SeriesBatch
    digest: bytes

    def __post_init__(self) -> None:
        if self.form not in (ENDPOINT, LINES):
            raise ValueError(f"form must be {ENDPOINT!r} or {LINES!r}, got {self.form!r}")
        if len(self.digest) != 16:
            raise ValueError(f"digest must be 16 bytes, got {len(self.digest)}")

    @property
    def num_series(self) -> int:
        return self.batch.num_series

    @property
    def rows(self) -> int:
        """Series x sample paths: what the request costs the sampler."""
        return self.batch.num_series * self.inference.num_samples

    @property
    def default_type(self) -> str:
        """The response encoding when the client does not choose one: the request's own."""
        return JSON if self.form == ENDPOINT else JSON_LINES


# ---------------------------------------------------------------------------------------------
# Step 1: parse


def _digest(lines: Sequence[bytes]) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    for line in lines:
        h.update(line)
        h.update(b"\n")
    return h.digest()


def _decode(
    lines: Sequence[bytes],
    *,
    form: Form,
    spec: ModelSpec,
    inference: InferenceConfig,
    max_payload_mb: float,
) -> OnlineRequest:
    decoded = decode_records(
        lines,
        uri=REQUEST_URI,
        contract=RecordContract.for_inference(spec, inference.classes),
        max_payload_mb=max_payload_mb,
    )
    if decoded.errors:
        raise _first_error(decoded.errors, form)
    return OnlineRequest(form, inference, decoded.batch, _digest(lines))


def _first_error(errors: Sequence[RecordError], form: Form) -> RecordError:
    first = errors[0]
    if len(errors) == 1:
        return first
    what = "instance" if form == ENDPOINT else "line"
    more = f" (and {len(errors) - 1} more bad {what}(s))"
    return RecordError(first.uri, first.line, first.field, first.message + more)


def parse_endpoint(
    request: Any, *, spec: ModelSpec, base: InferenceConfig, max_payload_mb: float = 6
) -> OnlineRequest:
    """Parse an endpoint-form request ``{"instances": [...], "configuration": {...}}``.

    Args:
        request: the parsed request body.
        spec: the model's signature (what each instance must hold).
        base: the configuration that the request's ``configuration`` overrides key by key.
        max_payload_mb: the largest instance, in MiB, once serialised.

    Returns:
        The request, ready to forecast.

    Raises:
        ConfigError: for a malformed request or configuration (checked before any instance).
        RecordError: for the first bad instance (1-based); the others are counted.
    """
    if not isinstance(request, Mapping):
        raise ConfigError("the request must be a JSON object with 'instances'")
    unknown = sorted(set(request) - set(_KNOWN_KEYS))
    if unknown:
        raise ConfigError(f"unknown request key(s) {unknown}; known: {list(_KNOWN_KEYS)}")
    instances = request.get("instances")
    if not isinstance(instances, list):
        raise ConfigError(f"'instances' must be a JSON array, got {type(instances).__name__}")
    inference = base.merged(request.get("configuration"))
    # Each instance becomes the JSON line a batch transform would read: one decoder and one
    # set of record rules for both (SPEC.md §1), and the digest of canonical bytes.
    lines = [orjson.dumps(instance) for instance in instances]
    return _decode(
        lines, form=ENDPOINT, spec=spec, inference=inference, max_payload_mb=max_payload_mb
    )


def parse_endpoint_body(
    body: bytes, *, spec: ModelSpec, base: InferenceConfig, max_payload_mb: float = 6
) -> OnlineRequest:
    """:func:`parse_endpoint` of a request body's bytes.

    Raises:
        ConfigError: for a body that is not JSON, and as :func:`parse_endpoint`.
        RecordError: as :func:`parse_endpoint`.
    """
    try:
        request = orjson.loads(body.removeprefix(UTF8_BOM))  # as a transform's input drops it
    except orjson.JSONDecodeError as err:
        raise ConfigError(f"the request body is not valid JSON: {err}") from None
    return parse_endpoint(request, spec=spec, base=base, max_payload_mb=max_payload_mb)


def parse_lines(
    body: bytes, *, spec: ModelSpec, inference: InferenceConfig, max_payload_mb: float = 6
) -> OnlineRequest:
    """Parse a JSON Lines body: one record per line (SPEC.md §1), configured by ``inference``.

    A final newline ends the last line (it does not start an empty one); any other blank line
    is a record error, as in a transform's input. An empty body holds no records.

    Args:
        body: the request body.
        spec: the model's signature.
        inference: the deployment's configuration (``DEEPAR_INFERENCE_CONFIG``).
        max_payload_mb: the largest line, in MiB.

    Returns:
        The request, ready to forecast.

    Raises:
        RecordError: for the first bad line (1-based); the others are counted.
    """
    body = body.removeprefix(UTF8_BOM)  # as a transform's input drops it
    # Split on b"\n" only: str.splitlines() would also split inside strings (RAY_NOTES.md).
    lines = body.split(b"\n") if body else []
    if lines and not lines[-1]:
        lines.pop()
    return _decode(lines, form=LINES, spec=spec, inference=inference, max_payload_mb=max_payload_mb)


def environment_inference(environ: Mapping[str, str] | None = None) -> InferenceConfig | None:
    """The deployment's inference configuration from the environment: ``DEEPAR_INFERENCE_CONFIG``
    with the response keys of ``SAGEMAKER_INFERENCE_OUTPUT`` / ``SUPPORTED`` / ``INPUT``
    applied (SPEC.md §8); None when none of them is set.

    Raises:
        ConfigError: naming ``DEEPAR_INFERENCE_CONFIG`` and the bad key, or the response
            keys' error (the SDK's text for an unsupported key).
    """
    from batchcast.runner.job import inference_from_env_value

    env = os.environ if environ is None else environ
    text = env.get("DEEPAR_INFERENCE_CONFIG", "")
    keys = ResponseKeys.from_environment(env)
    if not text.strip() and keys == ResponseKeys():
        return None
    base = inference_from_env_value(text, where="environment variable") if text.strip() else None
    return with_response_keys(base or InferenceConfig(), keys)


# ---------------------------------------------------------------------------------------------
# Step 2: the seed of a forecast call


def request_seed(seed: int, digests: Sequence[bytes]) -> int:
    """The generator seed of one forecast call over requests with these digests, in order.

    Args:
        seed: the server's (or ``predict``'s) seed.
        digests: :attr:`OnlineRequest.digest` of each request in the call, in call order.

    Returns:
        A seed in [0, 2**63): a function of its arguments only.
    """
    h = hashlib.blake2b(b"%d\0" % seed, digest_size=8)
    for digest in digests:
        h.update(digest)
    return int.from_bytes(h.digest(), "little") & ((1 << 63) - 1)


# ---------------------------------------------------------------------------------------------
# Step 3: encode


def encode_response(request: OnlineRequest, result: Forecast | None, *, media_type: str) -> bytes:
    """The response body of a forecast request, in one of :data:`RESPONSE_TYPES`.

    Records are encoded by :mod:`batchcast.io.content`'s encoders, as a transform writes them
    (SPEC.md §3, §8): JSON Lines and JSON write each record as the same JSON object, and
    differ in the endpoint form only, JSON wrapping it as ``{"predictions": [...]}``; CSV
    writes one row per record, no header. Otherwise the body is one record per input line
    (instance), in order, each followed by a newline.

    Args:
        request: the parsed request.
        result: its forecast, rows in request order (None for a request with no records).
        media_type: one of :data:`RESPONSE_TYPES`.

    Returns:
        The body.

    Raises:
        ConfigError: for another media type.
        RecordError: for a record whose forecast is not finite (a target that overflows
            float32), numbered like a bad record.
    """
    if media_type not in RESPONSE_TYPES:
        raise ConfigError(f"response type {media_type!r}; accepted: {list(RESPONSE_TYPES)}")
    encoder = encoder_for(media_type)
    records: list[bytes] = []
    n = request.num_series
    if n and result is not None:
        good = np.arange(n, dtype=np.int64)
        if media_type == CSV:
            _, errors = non_finite_errors(result, good, uri=REQUEST_URI)
            if errors:
                raise _first_error(errors, request.form)
            arrays = {f.name: getattr(result, f.name) for f in fields(result)}
            records = encoder.encode_all(forecast_dicts(request.inference, **arrays))
        else:
            encoded, errors = encode_output(
                num_lines=n,
                good=good,
                result=result,
                errors=[],
                inference=request.inference,
                join=_NO_JOIN,
                records=None,
                uri=REQUEST_URI,
            )
            if errors:
                raise _first_error(errors, request.form)
            records = encoded.render(1)
    return encoder.body(records, endpoint=request.form == ENDPOINT)


# ---------------------------------------------------------------------------------------------
# The three steps for one request (batchcast predict)


def predict_request(
    processor: ShardProcessor,
    request: Mapping[str, Any],
    *,
    seed: int = 0,
    inference: InferenceConfig | None = None,
    accept: str | None = None,
) -> bytes:
    """Answer one endpoint-form request in process.

    Args:
        processor: a loaded model.
        request: the parsed request body.
        seed: the seed (the same request and seed give the same bytes, here and from a
            server with that seed that forecasts the request on its own).
        inference: the base configuration; default ``DEEPAR_INFERENCE_CONFIG`` from the
            environment, else the processor's. The request's ``configuration`` overrides it
            key by key.
        accept: the response's type, as an ``Accept`` header (default ``application/json``):
            JSON gives ``{"predictions": [...]}``, JSON Lines one object per instance, CSV one
            row per instance (SPEC.md §8).

    Returns:
        The response body.

    Raises:
        ConfigError: for a malformed request or configuration.
        RecordError: for the first bad instance (all bad instances are counted in its message).
    """
    base = inference or environment_inference() or processor.options.inference
    parsed = parse_endpoint(
        request, spec=processor.spec, base=base, max_payload_mb=processor.options.max_payload_mb
    )
    result = None
    if parsed.num_series:
        call_seed = request_seed(seed, [parsed.digest])
        result = processor.sample(parsed.batch, call_seed, inference=parsed.inference)
    media_type = JSON if accept is None else parse_accept(accept)
    return encode_response(parsed, result, media_type=media_type)
