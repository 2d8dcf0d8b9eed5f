"""The micro-batcher: concurrent requests gathered into one vectorised forecast call.

SageMaker's DeepAR container forecasts the series of a request one after another. Here the
requests in flight in one worker are concatenated into one
:class:`~batchcast.forecast.series.SeriesBatch`, forecast by one call (in a thread, so the
event loop keeps reading requests into the next batch), and the result is cut back into
one :class:`~batchcast.forecast.sampling.Forecast` per request.

Gathering: the first waiting request opens a batch; requests with the same inference
configuration join it in arrival order until the row budget (series x sample paths) is
spent or ``max_wait_ms`` has passed since it opened. Requests that arrive while the sampler
is busy simply queue, so under load batches fill without waiting. A request is never split:
one over the budget runs alone. Requests with another configuration keep their place for a
later batch (a call samples one ``num_samples`` and writes one set of outputs).

Isolation: a request that fails to parse never reaches the batcher. If a batched call
raises, each of its requests is retried on its own, so an error lands on the request that
caused it and its batch-mates are still answered. A request whose client has gone (its
future cancelled) is dropped before its batch is formed.

Determinism (see :mod:`batchcast.runner.online`): a call's seed is a function of the
server's seed and the digests of its requests, in order. A request forecast alone gives the
same bytes as ``batchcast predict`` with that seed. In a batch its draws depend on its
batch-mates (they share one generator stream), so with a random likelihood a batched answer
is a different, equally valid draw; with ``deterministic-L1`` (no randomness) it equals the
lone answer up to float32 rounding, whatever the batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from batchcast.forecast.config import InferenceConfig
from batchcast.forecast.sampling import Forecast
from batchcast.forecast.series import SeriesBatch
from batchcast.runner.online import OnlineRequest, request_seed
from batchcast.serve.settings import BatchPolicy

__all__ = ["Answer", "MicroBatcher", "RunForecast", "concat_batches", "split_forecast"]

# The blocking forecast call: (batch, configuration, seed) -> forecast, run in a thread.
RunForecast = Callable[[SeriesBatch, InferenceConfig, int], Forecast]


@dataclass(frozen=True)
class Answer:
    """One request's share of a forecast call.

    Attributes:
        forecast: its rows, in request order.
        batch_requests: how many requests the call answered (1: it ran alone).
    """

    forecast: Forecast
    batch_requests: int


@dataclass
class _Pending:
    request: OnlineRequest
    future: asyncio.Future[Answer]


def concat_batches(batches: Sequence[SeriesBatch]) -> SeriesBatch:
    """The series of ``batches`` one after another, as one batch.

    Args:
        batches: at least one batch; all with the same ``cat`` and ``dynamic_feat`` widths
            and either all or none with ``thresholds`` (true of requests with one
            configuration and one model).

    Returns:
        The concatenation (``batches[0]`` itself when there is one).
    """
    if len(batches) == 1:
        return batches[0]

    def offsets(name: str) -> np.ndarray:
        parts = [getattr(b, name) for b in batches]
        shifts = np.cumsum([0] + [int(p[-1]) for p in parts[:-1]])
        joined = [parts[0]] + [p[1:] + s for p, s in zip(parts[1:], shifts[1:], strict=True)]
        return np.concatenate(joined)

    thresholds = [b.thresholds for b in batches]
    return SeriesBatch(
        start=np.concatenate([b.start for b in batches]),
        target=np.concatenate([b.target for b in batches]),
        target_offsets=offsets("target_offsets"),
        cat=np.concatenate([b.cat for b in batches]),
        dynamic_feat=np.concatenate([b.dynamic_feat for b in batches]),
        dynamic_offsets=offsets("dynamic_offsets"),
        thresholds=None if thresholds[0] is None else np.concatenate(thresholds),  # type: ignore[arg-type]  # all set, as documented
    )


def split_forecast(result: Forecast, sizes: Sequence[int]) -> list[Forecast]:
    """Cut a forecast's rows into consecutive parts of ``sizes`` series (views, no copy)."""
    bounds = np.cumsum([0, *sizes]).tolist()
    arrays = {f.name: getattr(result, f.name) for f in dataclasses.fields(result)}
    return [
        Forecast(**{k: None if a is None else a[lo:hi] for k, a in arrays.items()})
        for lo, hi in itertools.pairwise(bounds)
    ]


class MicroBatcher:
    """Gathers requests into forecast calls (module docstring for the rules).

    Args:
        run: the blocking forecast call, e.g. ``processor.sample`` with the seed and the
            configuration passed through.
        policy: the row budget, the wait, on or off.
        seed: the server's seed.

    Use inside a running event loop: :meth:`start`, then :meth:`forecast` from request
    handlers, then :meth:`close`.
    """

    def __init__(self, run: RunForecast, *, policy: BatchPolicy, seed: int) -> None:
        self._run = run
        self.policy = policy
        self.seed = seed
        self._queue: deque[_Pending] = deque()
        self._arrived = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        # One sampling thread per worker: torch runs one thread (RAY_NOTES.md), and the
        # event loop must stay free to read the next batch's requests meanwhile.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="forecast")

    async def start(self) -> None:
        """Start gathering (call once, from the event loop that will serve requests)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def close(self) -> None:
        """Answer every request already queued, then stop; requests after this are refused."""
        self._closing = True
        self._arrived.set()
        if self._task is not None:
            await self._task
        self._executor.shutdown(wait=True)

    async def forecast(self, request: OnlineRequest) -> Answer:
        """Forecast one parsed request, batched with others.

        Raises:
            RuntimeError: when the batcher is closed or not started.
            Exception: whatever the forecast call raised for this request when run alone.
        """
        if self._closing or self._task is None:
            raise RuntimeError("the micro-batcher is not running")
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(request, future))
        self._arrived.set()
        return await future

    # -----------------------------------------------------------------------------------------

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._drop_abandoned()
            if not self._queue:
                if self._closing:
                    return
                self._arrived.clear()
                await self._arrived.wait()
                continue
            if self.policy.enabled and self.policy.max_wait_ms > 0:
                await self._gather(loop.time() + self.policy.max_wait_ms / 1000.0)
            batch = self._take()
            if batch:
                await self._answer(batch)

    async def _gather(self, deadline: float) -> None:
        """Wait for more requests until the head's batch is full or the deadline passes."""
        loop = asyncio.get_running_loop()
        while not self._closing and self._rows_like_head() < self.policy.max_rows:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), remaining)

    def _rows_like_head(self) -> int:
        key = self._queue[0].request.inference
        return sum(p.request.rows for p in self._queue if p.request.inference == key)

    def _drop_abandoned(self) -> None:
        if any(p.future.done() for p in self._queue):
            self._queue = deque(p for p in self._queue if not p.future.done())

    def _take(self) -> list[_Pending]:
        """The head request and those that fit its batch, in arrival order."""
        self._drop_abandoned()
        if not self._queue:
            return []
        head = self._queue.popleft()
        batch, rows = [head], head.request.rows
        if not self.policy.enabled:
            return batch
        kept: deque[_Pending] = deque()
        while self._queue:
            pending = self._queue.popleft()
            fits = rows + pending.request.rows <= self.policy.max_rows
            if fits and pending.request.inference == head.request.inference:
                batch.append(pending)
                rows += pending.request.rows
            else:
                kept.append(pending)
                if rows >= self.policy.max_rows:
                    break
        kept.extend(self._queue)
        self._queue = kept
        return batch

    async def _call(self, batch: SeriesBatch, inference: InferenceConfig, seed: int) -> Forecast:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._run, batch, inference, seed)

    async def _answer(self, pending: list[_Pending]) -> None:
        requests = [p.request for p in pending]
        seed = request_seed(self.seed, [r.digest for r in requests])
        try:
            combined = concat_batches([r.batch for r in requests])
            result = await self._call(combined, requests[0].inference, seed)
        except Exception as err:  # handed to the request(s) that caused it, never swallowed
            if len(pending) == 1:
                _settle(pending[0].future, error=err)
                return
            for one in pending:  # isolate the culprit: every request on its own
                await self._answer([one])
            return
        parts = split_forecast(result, [r.num_series for r in requests])
        for one, part in zip(pending, parts, strict=True):
            _settle(one.future, answer=Answer(part, len(pending)))


def _settle(
    future: asyncio.Future[Answer],
    *,
    answer: Answer | None = None,
    error: BaseException | None = None,
) -> None:
    if future.done():  # the client went away meanwhile
        return
    if error is not None:
        future.set_exception(error)
    else:
        assert answer is not None
        future.set_result(answer)
