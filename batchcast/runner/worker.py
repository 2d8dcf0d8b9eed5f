"""The Ray side of a model worker: the actor around a :class:`ShardProcessor`, and the CPU
tasks beside a GPU actor.

:class:`ModelWorker` loads the model once and processes shards (the fused pipeline). For GPU
workers the work is split so the GPU actor never waits on JSON: :func:`decode_shard` and
:func:`encode_shard` run as CPU tasks beside it and hand numpy arrays through the object
store (zero-copy), while the actor only samples (:meth:`ModelWorker.sample`).
"""

from __future__ import annotations

import os

import ray
import torch

from batchcast.forecast.config import ModelSpec
from batchcast.forecast.sampling import Forecast
from batchcast.forecast.series import SeriesBatch
from batchcast.io.records import DecodedShard
from batchcast.io.shards import Shard
from batchcast.runner.processor import (
    ShardProcessor,
    ShardResult,
    WorkerOptions,
    decode_shard_lines,
    encode_result,
    split_result,
)

__all__ = ["ModelWorker", "decode_shard", "encode_shard"]


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
) -> tuple[SeriesBatch, DecodedShard | list[tuple[int, int]]]:
    """CPU task: read and decode one shard for a GPU worker (or find its piece plan).

    Returns the batch apart (a second object ref) so the sampling actor receives only the
    numpy arrays it needs, zero-copy, never the parsed records kept for joins.
    """
    decoded = decode_shard_lines(shard, spec, options)
    if isinstance(decoded, list):  # too big to process at once: its piece plan goes on
        return SeriesBatch.from_lists(start=[], targets=[]), decoded  # nothing to sample
    return decoded.batch, decoded


@ray.remote
def encode_shard(
    shard: Shard,
    decoded: DecodedShard | list[tuple[int, int]],
    result: Forecast,
    options: WorkerOptions,
) -> ShardResult:
    """CPU task: encode a GPU worker's forecasts into output lines (or hand on a piece plan)."""
    if isinstance(decoded, list):
        return split_result(shard, decoded)
    return encode_result(shard, decoded, result, options, {})
