"""The online form in process: ``{"instances", "configuration"}`` -> ``{"predictions"}``.

SageMaker's DeepAR endpoint format (SPEC.md §3). A request's ``configuration`` overrides the
worker's inference configuration key by key; absent keys keep SPEC.md §2's defaults. Like the
endpoint, a request with a bad instance fails as a whole: the error names the instance
(1-based, as a line number of the pseudo-file ``request``), the field and the expectation.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from batchcast.errors import ConfigError, RecordError
from batchcast.forecast.config import InferenceConfig
from batchcast.runner.worker import ShardProcessor

__all__ = ["predict_request"]


def predict_request(
    processor: ShardProcessor,
    request: Mapping[str, Any],
    *,
    seed: int = 0,
    inference: InferenceConfig | None = None,
) -> bytes:
    """Answer one request.

    Args:
        processor: a loaded model.
        request: the parsed request body.
        seed: the generator seed (the same request and seed give the same bytes).
        inference: the base configuration (default: the processor's); the request's
            ``configuration`` overrides it key by key.

    Returns:
        The response body, ``{"predictions": [...]}`` as JSON bytes.

    Raises:
        ConfigError: for a malformed request or configuration.
        RecordError: for the first bad instance (all bad instances are counted in its message).
    """
    if not isinstance(request, Mapping):
        raise ConfigError("the request must be a JSON object with 'instances'")
    unknown = sorted(set(request) - {"instances", "configuration"})
    if unknown:
        raise ConfigError(
            f"unknown request key(s) {unknown}; known: ['configuration', 'instances']"
        )
    instances = request.get("instances")
    if not isinstance(instances, list):
        raise ConfigError(f"'instances' must be a JSON array, got {type(instances).__name__}")
    base = inference or processor.options.inference
    inference = base.merged(request.get("configuration"))
    lines = [orjson.dumps(instance) for instance in instances]
    outputs, errors = processor.predict_lines(lines, uri="request", seed=seed, inference=inference)
    if errors:
        first = errors[0]
        if len(errors) > 1:
            more = f" (and {len(errors) - 1} more bad instance(s))"
            raise RecordError(first.uri, first.line, first.field, first.message + more)
        raise first
    return b'{"predictions":[' + b",".join(outputs) + b"]}"
