"""The shard processor: read -> decode -> forecast -> encode, in plain Python (no Ray).

:class:`ShardProcessor` loads a model once and is called many times: by the Ray actor of
:mod:`batchcast.runner.worker` for a transform, in process by ``batchcast predict`` and by
the serving room. Importing this module does not import Ray, so ``batchcast train`` and
``batchcast predict`` never pay for it.

A shard too big to process at once (a gzip object is one shard whatever it decompresses to;
``samples`` can turn a short line into megabytes) is not processed: its result is its piece
plan (:data:`PIECE_INPUT_BYTES` of lines and :data:`PIECE_OUTPUT_BYTES` of estimated output
at most, :mod:`batchcast.io.shards`), and the driver sends each piece out as a shard of its
own. A worker's memory, and a result's size, are then bounded by the budget, not the input.

The steps are also available one by one (:func:`decode_shard_lines`, :func:`encode_result`)
for the split pipeline, where decoding and encoding run in CPU tasks beside a GPU actor.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import torch

from batchcast.errors import ConfigError, RecordError
from batchcast.forecast.config import InferenceConfig, ModelSpec
from batchcast.forecast.precision import PRECISIONS
from batchcast.forecast.sampling import Forecast, forecast
from batchcast.forecast.series import SeriesBatch
from batchcast.forecast.tuning import tile_rows_for
from batchcast.io import DecodedShard, RecordContract, decode_records
from batchcast.io.content import JSON_LINES
from batchcast.io.join import Join
from batchcast.io.output import EncodedLines, encode_output
from batchcast.io.shards import PieceBudget, Shard, read_shard_lines
from batchcast.models import load_model

__all__ = [
    "PIECE_INPUT_BYTES",
    "PIECE_OUTPUT_BYTES",
    "ShardProcessor",
    "ShardResult",
    "WorkerOptions",
    "decode_shard_lines",
    "encode_result",
    "piece_budget",
    "shard_seed",
    "split_result",
]

# The most one piece of a shard holds: its lines' bytes, and the estimated bytes of its output.
# Fixed, not a tuning knob: the piece plan is part of the output's identity (each piece has
# its own seed), so it may not follow the machine or a flag. 64 MiB of output is ~6,000
# series of 24 steps x 100 samples; a default 4 MB shard of quantiles never comes near.
PIECE_INPUT_BYTES = 64 << 20
PIECE_OUTPUT_BYTES = 64 << 20
# A number of an output line at its longest (a float32 as JSON, "-1.2345678e-38", and a
# separator), and a line's fixed part (keys, an error object) at its longest.
_NUMBER_BYTES = 16
_LINE_BYTES = 512


@dataclass(frozen=True, kw_only=True)
class WorkerOptions:
    """What every worker needs to know about the job (small; shipped once per worker).

    Attributes:
        inference: the job's ``DEEPAR_INFERENCE_CONFIG``.
        join: DataProcessing and forwarded fields.
        max_payload_mb: a longer line is a record error.
        seed: the job's seed; each shard's generator derives from it.
        accept: the output's content type (``TransformOutput.Accept``, SPEC.md §8).
        precision: the sampler's GEMM precision, ``"fp32"`` (default) or ``"bf16"``
            (:mod:`batchcast.forecast.precision`: fp32, with one log line, where the CPU has
            no bf16 units).
    """

    inference: InferenceConfig
    join: Join
    max_payload_mb: float
    seed: int
    accept: str = JSON_LINES
    precision: str = "fp32"

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ConfigError(
                f"precision must be one of {list(PRECISIONS)}, got {self.precision!r}"
            )


@dataclass
class ShardResult:
    """One shard's output.

    Attributes:
        file_index, shard_index: where it belongs.
        lines: one encoded output line per input line, a bad line's slot holding its error
            line (numbered by the writer); empty for a shard that was only checked.
        num_lines: input lines in the shard.
        num_series: valid records (forecast, unless the shard was only checked); a record
            rejected after forecasting (OutputFilter, a non-finite forecast) is not counted.
        errors: record errors with shard-local line numbers (1-based), sorted.
        seconds: time spent in decode, sample, encode.
        pieces: a shard too big to process at once: its piece plan (line ranges), and
            nothing else is set.
    """

    file_index: int
    shard_index: int
    lines: EncodedLines
    num_lines: int
    num_series: int
    errors: list[RecordError]
    seconds: dict[str, float] = field(default_factory=dict)
    pieces: list[tuple[int, int]] = field(default_factory=list)


def shard_seed(seed: int, relpath: str, shard_index: int, piece: int = -1) -> int:
    """A shard's generator seed from (job seed, file, shard, piece): independent of
    scheduling. A whole shard (``piece`` -1) keeps the seed it had before pieces existed."""
    key = f"{seed}\0{relpath}\0{shard_index}" + (f"\0{piece}" if piece >= 0 else "")
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def piece_budget(spec: ModelSpec, inference: InferenceConfig) -> PieceBudget:
    """The piece budget of a job: its fixed bounds, and one record's output at its longest
    (every number it asks for, at :data:`_NUMBER_BYTES`)."""
    keys = inference.output_keys
    per_step = (
        ("mean" in keys)
        + (len(inference.quantiles) if "quantiles" in keys else 0)
        + (inference.num_samples if "samples" in keys else 0)
    )
    classes = inference.classes.num_thresholds + 1 if inference.classes is not None else 0
    numbers = per_step * spec.prediction_length + 2 * classes
    return PieceBudget(PIECE_INPUT_BYTES, PIECE_OUTPUT_BYTES, numbers * _NUMBER_BYTES + _LINE_BYTES)


def _decode_lines(
    lines: Sequence[bytes],
    *,
    uri: str,
    spec: ModelSpec,
    options: WorkerOptions,
    oversize: Mapping[int, int] | None = None,
) -> DecodedShard:
    """Validate lines against the model's record contract, applying the job's InputFilter."""
    join = options.join
    return decode_records(
        lines,
        uri=uri,
        contract=RecordContract.for_inference(spec, options.inference.classes),
        oversize=oversize,
        max_payload_mb=options.max_payload_mb,
        input_filter=join.model_input if join.needs_records else None,
        keep_records=join.needs_records,
    )


def decode_shard_lines(
    shard: Shard, spec: ModelSpec, options: WorkerOptions
) -> DecodedShard | list[tuple[int, int]]:
    """Read one shard and decode its lines; for a shard too big to process at once, its
    piece plan instead (see the module docstring).

    Raises:
        ShardError: when the shard cannot be read.
    """
    max_bytes = int(options.max_payload_mb * 1024 * 1024)
    budget = piece_budget(spec, options.inference)
    lines = read_shard_lines(shard, max_line_bytes=max_bytes, budget=budget)
    if lines.pieces:
        return lines.pieces
    return _decode_lines(
        lines.lines, uri=shard.uri, spec=spec, options=options, oversize=lines.oversize
    )


def split_result(shard: Shard, pieces: list[tuple[int, int]]) -> ShardResult:
    """The result of a shard too big to process at once: its piece plan."""
    empty = EncodedLines.empty()
    return ShardResult(shard.file_index, shard.index, empty, 0, 0, [], pieces=pieces)


def _encode(
    decoded: DecodedShard, result: Forecast, options: WorkerOptions, *, uri: str
) -> tuple[EncodedLines, list[RecordError]]:
    return encode_output(
        num_lines=decoded.num_lines,
        good=decoded.good,
        result=result,
        errors=decoded.errors,
        inference=options.inference,
        join=options.join,
        records=decoded.records,
        uri=uri,
        accept=options.accept,
    )


def encode_result(
    shard: Shard,
    decoded: DecodedShard,
    result: Forecast | None,
    options: WorkerOptions,
    seconds: dict[str, float],
) -> ShardResult:
    """The :class:`ShardResult` of a decoded shard and its forecast (None: only checked).

    Args:
        shard: where the lines came from.
        decoded: the shard's decoded records.
        result: the forecast of ``decoded.batch``; None for a shard only validated.
        options: the job's options.
        seconds: timings so far; the encoding time is added.
    """
    t0 = time.perf_counter()
    if result is None:
        lines, errors = EncodedLines.empty(), list(decoded.errors)
        num_series = decoded.batch.num_series
    else:
        lines, errors = _encode(decoded, result, options, uri=shard.uri)
        # Records rejected after forecasting (OutputFilter, non-finite) are not written.
        num_series = decoded.batch.num_series - (len(errors) - len(decoded.errors))
        seconds = {**seconds, "encode": time.perf_counter() - t0}
    return ShardResult(
        file_index=shard.file_index,
        shard_index=shard.index,
        lines=lines,
        num_lines=decoded.num_lines,
        num_series=num_series,
        errors=errors,
        seconds=seconds,
    )


class ShardProcessor:
    """Loads a model once; forecasts shards or in-memory lines on its device.

    Args:
        model_uri: model folder or ``model.tar.gz`` (local or s3://).
        options: the job's inference configuration, join, payload limit and seed.
        device: ``"cpu"``, ``"cuda"``...

    Raises:
        ModelError: when the model cannot be loaded.
    """

    def __init__(self, model_uri: str, options: WorkerOptions, *, device: str = "cpu") -> None:
        self.loaded = load_model(model_uri, device=device)
        self.options = options
        self.device = torch.device(device)
        # Rows per sampling step for this CPU, timed once per process: speed only, never bytes.
        self.tile_rows = tile_rows_for(self.loaded.model, options.precision, self.device)

    @property
    def spec(self) -> ModelSpec:
        return self.loaded.spec

    def sample(
        self, batch: SeriesBatch, seed: int, *, inference: InferenceConfig | None = None
    ) -> Forecast:
        """Forecast a batch with a generator seeded by ``seed``.

        Args:
            batch: the good records of a shard (or request).
            seed: the generator's seed.
            inference: the configuration (default: the job's).
        """
        generator = torch.Generator(device=self.device).manual_seed(seed)
        config = inference or self.options.inference
        return forecast(
            self.loaded.model,
            batch,
            config,
            generator=generator,
            tile_rows=self.tile_rows,
            precision=self.options.precision,
        )

    def process(self, shard: Shard, relpath: str, *, check_only: bool = False) -> ShardResult:
        """Read, decode, forecast and encode one shard.

        Args:
            shard: the byte range to process.
            relpath: the input's relative path (part of the shard's seed).
            check_only: only read and validate (a shard of a file that already failed under
                ``fail-file``): its record errors are still listed, nothing is forecast.

        Raises:
            ShardError: when the shard cannot be read.
        """
        t0 = time.perf_counter()
        decoded = decode_shard_lines(shard, self.spec, self.options)
        if isinstance(decoded, list):
            return split_result(shard, decoded)
        t1 = time.perf_counter()
        if check_only:
            return encode_result(shard, decoded, None, self.options, {"decode": t1 - t0})
        seed = shard_seed(self.options.seed, relpath, shard.index, shard.piece)
        result = self.sample(decoded.batch, seed)
        t2 = time.perf_counter()
        seconds = {"decode": t1 - t0, "sample": t2 - t1}
        return encode_result(shard, decoded, result, self.options, seconds)

    def predict_lines(
        self,
        lines: Sequence[bytes],
        *,
        uri: str,
        seed: int,
        inference: InferenceConfig | None = None,
    ) -> tuple[list[bytes], list[RecordError]]:
        """Forecast in-memory JSON lines (the online form).

        Args:
            lines: one JSON record per entry, without newlines.
            uri: what the errors name as the source (``"request"``).
            seed: the generator's seed.
            inference: the configuration (default: the job's).

        Returns:
            One output line (no newline) per input line, errors in place (numbered from 1),
            and the record errors (sorted by line).
        """
        options = self.options if inference is None else replace(self.options, inference=inference)
        decoded = _decode_lines(lines, uri=uri, spec=self.spec, options=options)
        result = self.sample(decoded.batch, seed, inference=options.inference)
        encoded, errors = _encode(decoded, result, options, uri=uri)
        return encoded.render(1), errors
