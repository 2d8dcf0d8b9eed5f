"""The driver's window: how much work may be in flight or held back, and for how long.

Three bounds, checked before each submission and while waiting for results:

- **Shards.** At most ``IN_FLIGHT_PER_WORKER`` shards in flight per worker (one running, one
  queued: hides the round trip), and at most ``HELD_PER_WORKER`` per worker in flight or
  finished but held back by the reorder buffer: a straggler can be overtaken a few times
  (RAY_NOTES: a strict in-order window pays a straggler in full), and the buffer cannot grow
  with the input.
- **Output bytes.** A shard's output is its series × the output's width, and with
  ``samples`` that is ``num_samples × prediction_length`` numbers a series: a handful of
  shards can be gigabytes, so counting shards bounds nothing. The bytes held (results in
  the reorder buffer, exactly) plus the bytes expected of the shards in flight (their input
  bytes × the largest output/input ratio seen so far) stay within ``max_held_mb``. Until a
  first result gives the ratio, one shard per worker goes out. One shard is always let
  through when nothing is in flight, so a budget smaller than one shard's output slows the
  job but never stops it: the peak is then one shard's output, which the piece budget
  bounds (:data:`~batchcast.runner.processor.PIECE_OUTPUT_BYTES`: a bigger shard is
  processed in pieces).
- **Time.** A shard running longer than the job's deadline fails the job with a
  ``ShardError`` naming its URI: a frozen storage endpoint, or a worker stuck for any
  reason, can no longer hang a job. Its clock starts when its worker starts it (a worker
  runs its shards in order, so when the shard before it on that worker finished).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

from batchcast.errors import ShardError
from batchcast.io.shards import Shard
from batchcast.io.sources import s3_request_bound_s
from batchcast.runner.executor import IN_FLIGHT_PER_WORKER, Task
from batchcast.runner.job import DEFAULT_SHARD_MB, TransformJob
from batchcast.runner.processor import PIECE_OUTPUT_BYTES, ShardResult

__all__ = [
    "HELD_PER_WORKER",
    "PROCESSING_ALLOWANCE_S",
    "Window",
    "shard_deadline_s",
]

HELD_PER_WORKER = 8
# A default-size shard (4 MB, some thousands of series) takes seconds to a few minutes even
# at num_samples 1000 on one slow core: half an hour is a deadline no healthy shard meets,
# scaled with the shard size so that --shard-mb alone never needs --shard-timeout.
PROCESSING_ALLOWANCE_S = 1800.0


def shard_deadline_s(job: TransformJob) -> float:
    """Seconds a shard may run: ``job.shard_timeout_s``, else the bound of its S3 reads (its
    ranged GET and smart_open's one re-open, each at most :func:`s3_request_bound_s`) plus
    :data:`PROCESSING_ALLOWANCE_S` per 4 MB of shard (1956 s, about 33 min, with the defaults)."""
    if job.shard_timeout_s is not None:
        return job.shard_timeout_s
    scale = max(1.0, job.shard_mb / DEFAULT_SHARD_MB)
    return 2 * s3_request_bound_s() + PROCESSING_ALLOWANCE_S * scale


@dataclass
class Window:
    """The bounds of one job's main loop, and what it reports (peaks).

    Args:
        workers: the pool's size.
        max_held_bytes: the output-byte budget.
        deadline_s: seconds a shard may run.
    """

    workers: int
    max_held_bytes: int
    deadline_s: float
    ratio: float | None = None  # output bytes per input byte: the largest seen
    held_bytes: int = 0  # results in the reorder buffer
    peak_bytes: int = 0
    peak_shards: int = 0

    @property
    def in_flight_max(self) -> int:
        return self.workers * IN_FLIGHT_PER_WORKER

    @property
    def held_max(self) -> int:
        return self.workers * HELD_PER_WORKER

    def expected_bytes(self, shard: Shard) -> int:
        """The output ``shard`` is expected to make (0 before any ratio is known). A piece
        is expected to make what the piece budget allows: its input bytes say nothing of
        its output (a gzip object's pieces share its compressed bytes)."""
        if shard.piece >= 0:
            return PIECE_OUTPUT_BYTES
        return int(shard.size * (self.ratio or 0.0))

    def may_submit(self, shard: Shard, in_flight: Iterable[Task], buffered: int) -> bool:
        """Whether ``shard`` may go out now, with ``in_flight`` out and ``buffered`` results
        held for order."""
        tasks = list(in_flight)
        if not tasks:
            return True  # progress: a buffered result waits for a shard in flight, never this
        if len(tasks) >= self.in_flight_max or len(tasks) + buffered >= self.held_max:
            return False
        if self.ratio is None:
            return len(tasks) < self.workers  # no output size known yet: one per worker
        expected = sum(self.expected_bytes(t.shard) for t in tasks) + self.expected_bytes(shard)
        return self.held_bytes + expected <= self.max_held_bytes

    def submitted(self, in_flight: int, buffered: int) -> None:
        self.peak_shards = max(self.peak_shards, in_flight + buffered)

    def arrived(self, shard: Shard, result: ShardResult) -> None:
        """A result came back: it is held until the writer takes it (:meth:`released`)."""
        size = result.lines.nbytes
        if result.lines.num_lines != 0 and shard.piece < 0:  # nor a checked-only shard
            ratio = size / max(1, shard.size)
            self.ratio = ratio if self.ratio is None else max(self.ratio, ratio)
        self.held_bytes += size
        self.peak_bytes = max(self.peak_bytes, self.held_bytes)

    def released(self, result: ShardResult) -> None:
        self.held_bytes -= result.lines.nbytes

    def wait_s(self, in_flight: Iterable[Task], now: float) -> float:
        """How long to wait for a result before a shard in flight is past its deadline."""
        starts = [t.started for t in in_flight if t.started is not None]
        if not starts:
            return self.deadline_s
        return max(0.0, min(starts) + self.deadline_s - now)

    def check_deadline(self, in_flight: Iterable[Task], now: float | None = None) -> None:
        """Raise for the first shard in flight past its deadline.

        Raises:
            ShardError: naming the shard's URI and byte range, and the deadline.
        """
        now = time.monotonic() if now is None else now
        for task in in_flight:
            if task.started is not None and now - task.started > self.deadline_s:
                shard = task.shard
                raise ShardError(
                    f"{shard.uri} bytes [{shard.start}, {shard.end}): no result after "
                    f"{self.deadline_s:g} s (the shard deadline, --shard-timeout): its storage "
                    "or its worker is stuck"
                )
