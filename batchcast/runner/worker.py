"""The model worker: loads the model once, then turns shards (or parsed records) into output lines.

:class:`ShardProcessor` is plain Python (used in process by ``batchcast predict`` and the
tests); :class:`ModelWorker` is the Ray actor that wraps it. For GPU workers the work is split
so the GPU actor never waits on JSON: :func:`decode_shard` and :func:`encode_shard` run as CPU
tasks beside it and hand numpy arrays through the object store (zero-copy), while the actor
only samples (:meth:`ModelWorker.sample`).
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import orjson
import ray
import torch

from batchcast.errors import RecordError
from batchcast.forecast.artifacts import load_model
from batchcast.forecast.config import InferenceConfig, ModelSpec
from batchcast.forecast.sampling import Forecast, forecast
from batchcast.forecast.series import SeriesBatch
from batchcast.io.join import Join
from batchcast.io.jsonl import encode_error, encode_forecasts, forecast_dicts
from batchcast.io.records import DecodedShard, decode_records
from batchcast.io.shards import Shard, read_shard_lines
from batchcast.io.validation import RecordContract

__all__ = [
    "ModelWorker",
    "ShardProcessor",
    "ShardResult",
    "WorkerOptions",
    "decode_shard",
    "encode_shard",
    "shard_seed",
]


@dataclass(frozen=True)
class WorkerOptions:
    """What every worker needs to know about the job (small; shipped once per worker)."""

    inference: InferenceConfig
    join: Join
    max_payload_mb: float
    seed: int


@dataclass
class ShardResult:
    """One shard's output.

    Attributes:
        file_index, shard_index: where it belongs.
        lines: one output line per input line, each ending with a newline; a bad line's
            slot holds its error record (numbered shard-locally: the driver renumbers).
        num_lines: input lines in the shard.
        num_series: forecasts made.
        errors: record errors with shard-local line numbers (1-based).
        seconds: time spent in read, decode, sample, encode.
    """

    file_index: int
    shard_index: int
    lines: bytes
    num_lines: int
    num_series: int
    errors: list[RecordError]
    seconds: dict[str, float] = field(default_factory=dict)


def shard_seed(seed: int, relpath: str, shard_index: int) -> int:
    """A shard's generator seed from (job seed, file, shard): independent of scheduling."""
    digest = hashlib.blake2b(f"{seed}\0{relpath}\0{shard_index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def _decode_lines(
    lines: Sequence[bytes],
    *,
    uri: str,
    spec: ModelSpec,
    options: WorkerOptions,
    oversize: Mapping[int, int] | None = None,
) -> DecodedShard:
    """Validate lines against the model's record contract, applying the job's InputFilter."""
    return decode_records(
        lines,
        uri=uri,
        contract=RecordContract.for_inference(spec),
        oversize=oversize,
        max_payload_mb=options.max_payload_mb,
        input_filter=options.join.model_input if options.join.needs_records else None,
        keep_records=options.join.needs_records,
    )


def _decode(shard: Shard, spec: ModelSpec, options: WorkerOptions) -> DecodedShard:
    max_bytes = int(options.max_payload_mb * 1024 * 1024)
    lines = read_shard_lines(shard, max_line_bytes=max_bytes)
    return _decode_lines(
        lines.lines, uri=shard.uri, spec=spec, options=options, oversize=lines.oversize
    )


def _encode(
    decoded: DecodedShard, result: Forecast, options: WorkerOptions, *, uri: str
) -> tuple[list[bytes], list[RecordError]]:
    """One output line (no newline) per input line, errors in place.

    Returns:
        The lines, and every record error of the shard (shard-local line numbers, sorted):
        the decoder's, plus one per record whose OutputFilter selects nothing.
    """
    lines: list[bytes] = [b""] * decoded.num_lines
    errors = list(decoded.errors)
    if options.join.needs_records:
        assert decoded.records is not None  # keep_records was set for joins
        outputs = forecast_dicts(
            options.inference, mean=result.mean, quantiles=result.quantiles, samples=result.samples
        )
        for i, out in zip(decoded.good, outputs, strict=True):
            try:
                value = options.join.output(decoded.records[i], out)
            except LookupError as err:  # the OutputFilter: a record error, not a crash
                errors.append(RecordError(uri, int(i) + 1, "$", f"OutputFilter: {err}"))
                continue
            lines[i] = orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY)
        errors.sort(key=lambda e: e.line)
    else:
        encoded = encode_forecasts(
            options.inference, mean=result.mean, quantiles=result.quantiles, samples=result.samples
        )
        for i, line in zip(decoded.good, encoded, strict=True):
            lines[i] = line
    for error in errors:
        lines[error.line - 1] = encode_error(error)
    return lines, errors


def _result(
    shard: Shard,
    decoded: DecodedShard,
    lines: Sequence[bytes],
    errors: list[RecordError],
    seconds: dict[str, float],
) -> ShardResult:
    blob = b"\n".join(lines) + b"\n" if lines else b""
    return ShardResult(
        file_index=shard.file_index,
        shard_index=shard.index,
        lines=blob,
        num_lines=decoded.num_lines,
        # Records rejected only by the OutputFilter were forecast but not written.
        num_series=decoded.batch.num_series - (len(errors) - len(decoded.errors)),
        errors=errors,
        seconds=seconds,
    )


class ShardProcessor:
    """Loads a model once; forecasts shards or parsed records on its device.

    Args:
        model_uri: model folder or ``model.tar.gz`` (local or s3://).
        options: the job's inference configuration, join, payload limit and seed.
        device: ``"cpu"``, ``"cuda"``...
    """

    def __init__(self, model_uri: str, options: WorkerOptions, *, device: str = "cpu") -> None:
        self.loaded = load_model(model_uri, device=device)
        self.options = options
        self.device = torch.device(device)

    @property
    def spec(self) -> ModelSpec:
        return self.loaded.spec

    def sample(
        self, batch: SeriesBatch, seed: int, *, inference: InferenceConfig | None = None
    ) -> Forecast:
        """Forecast a shard's good records with a generator seeded by ``seed``."""
        generator = torch.Generator(device=self.device).manual_seed(seed)
        config = inference or self.options.inference
        return forecast(self.loaded.model, batch, config, generator=generator)

    def process(self, shard: Shard, relpath: str, *, check_only: bool = False) -> ShardResult:
        """Read, decode, forecast and encode one shard.

        With ``check_only`` (a shard of a file that already failed under ``fail-file``), only
        read and validate it: its record errors are still listed, but nothing is forecast.
        """
        t0 = time.perf_counter()
        decoded = _decode(shard, self.spec, self.options)
        t1 = time.perf_counter()
        if check_only:  # num_series still counts the shard's valid records
            return _result(shard, decoded, [], list(decoded.errors), {"decode": t1 - t0})
        result = self.sample(decoded.batch, shard_seed(self.options.seed, relpath, shard.index))
        t2 = time.perf_counter()
        lines, errors = _encode(decoded, result, self.options, uri=shard.uri)
        t3 = time.perf_counter()
        seconds = {"decode": t1 - t0, "sample": t2 - t1, "encode": t3 - t2}
        return _result(shard, decoded, lines, errors, seconds)

    def predict_lines(
        self,
        lines: Sequence[bytes],
        *,
        uri: str,
        seed: int,
        inference: InferenceConfig | None = None,
    ) -> tuple[list[bytes], list[RecordError]]:
        """Forecast in-memory JSON lines (the online form).

        Returns:
            One output line (no newline) per input line, errors in place, and the record
            errors (sorted by line).
        """
        options = self.options if inference is None else replace(self.options, inference=inference)
        decoded = _decode_lines(lines, uri=uri, spec=self.spec, options=options)
        result = self.sample(decoded.batch, seed, inference=options.inference)
        return _encode(decoded, result, options, uri=uri)


# ---------------------------------------------------------------------------------------------
# Ray: the actor and the CPU tasks beside a GPU actor


@ray.remote
class ModelWorker:
    """A Ray actor holding one :class:`ShardProcessor` (the model is loaded once)."""

    def __init__(self, model_uri: str, options: WorkerOptions, device: str) -> None:
        # One torch thread per worker process: one process per core beats one process with
        # many threads, and OpenMP spin-waiting collapses under contention (RAY_NOTES.md).
        torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))
        self.processor = ShardProcessor(model_uri, options, device=device)

    def pid(self) -> int:
        return os.getpid()

    def process(self, shard: Shard, relpath: str, check_only: bool) -> ShardResult:
        return self.processor.process(shard, relpath, check_only=check_only)

    def sample(self, batch: SeriesBatch, seed: int) -> Forecast:
        return self.processor.sample(batch, seed)


@ray.remote(num_returns=2)
def decode_shard(
    shard: Shard, spec: ModelSpec, options: WorkerOptions
) -> tuple[SeriesBatch, DecodedShard]:
    """CPU task: read and decode one shard for a GPU worker.

    Returns the batch apart (a second object ref) so the sampling actor receives only the
    numpy arrays it needs, zero-copy, never the parsed records kept for joins.
    """
    decoded = _decode(shard, spec, options)
    return decoded.batch, decoded


@ray.remote
def encode_shard(
    shard: Shard, decoded: DecodedShard, result: Forecast, options: WorkerOptions
) -> ShardResult:
    """CPU task: encode a GPU worker's forecasts into output lines."""
    t0 = time.perf_counter()
    lines, errors = _encode(decoded, result, options, uri=shard.uri)
    return _result(shard, decoded, lines, errors, {"encode": time.perf_counter() - t0})
