"""The micro-batcher in process: gathering, the row budget, configurations, isolation, drain.

Requests are parsed by the shared request path and forecast by a real model
(``ShardProcessor.sample``) on a real event loop; only the failure test wraps the forecast
call, to make it fail for one marked series as a bug in the model would.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest
from serve_cases import instance

from batchcast.forecast import InferenceConfig
from batchcast.forecast.sampling import Forecast
from batchcast.forecast.series import SeriesBatch
from batchcast.io import Join
from batchcast.runner.online import OnlineRequest, parse_endpoint, request_seed
from batchcast.runner.processor import ShardProcessor, WorkerOptions
from batchcast.serve.batcher import Answer, MicroBatcher, concat_batches, split_forecast
from batchcast.serve.settings import BatchPolicy

BASE = InferenceConfig(num_samples=10)


@pytest.fixture(scope="module")
def processor(model_dir: str) -> ShardProcessor:
    options = WorkerOptions(inference=BASE, join=Join(), max_payload_mb=6, seed=0)
    return ShardProcessor(model_dir, options)


def parsed(processor: ShardProcessor, ids: list[int], **configuration: Any) -> OnlineRequest:
    request = {"instances": [instance(i) for i in ids], "configuration": configuration}
    return parse_endpoint(request, spec=processor.spec, base=BASE)


def run_batched(
    processor: ShardProcessor,
    requests: list[OnlineRequest],
    policy: BatchPolicy,
    *,
    run: Any = None,
) -> list[Answer | BaseException]:
    """Submit every request at once to a fresh batcher; the answers (or errors) in order."""

    def sample(batch: SeriesBatch, inference: InferenceConfig, seed: int) -> Forecast:
        return processor.sample(batch, seed, inference=inference)

    async def main() -> list[Answer | BaseException]:
        batcher = MicroBatcher(run or sample, policy=policy, seed=0)
        await batcher.start()
        try:
            return await asyncio.gather(
                *(batcher.forecast(r) for r in requests), return_exceptions=True
            )
        finally:
            await batcher.close()

    return asyncio.run(main())


def alone(processor: ShardProcessor, request: OnlineRequest) -> Forecast:
    seed = request_seed(0, [request.digest])
    return processor.sample(request.batch, seed, inference=request.inference)


def assert_forecasts_equal(a: Forecast, b: Forecast) -> None:
    for name in ("mean", "quantiles", "samples"):
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None), name
        if x is not None:
            np.testing.assert_array_equal(x, y)


# ---------------------------------------------------------------------------------------------
# concat and split


def test_concat_then_split_gives_back_each_request(processor: ShardProcessor) -> None:
    requests = [parsed(processor, [0, 1]), parsed(processor, [2]), parsed(processor, [3, 4, 5])]
    combined = concat_batches([r.batch for r in requests])
    assert combined.num_series == 6
    flat = [(r, b) for r in requests for b in range(r.num_series)]
    for row, (request, b) in enumerate(flat):
        np.testing.assert_array_equal(combined.series(row), request.batch.series(b))
        np.testing.assert_array_equal(combined.dynamic(row), request.batch.dynamic(b))
        np.testing.assert_array_equal(combined.cat[row], request.batch.cat[b])
        assert combined.start[row] == request.batch.start[b]
    result = processor.sample(combined, 1, inference=BASE)
    parts = split_forecast(result, [r.num_series for r in requests])
    assert [p.mean.shape[0] for p in parts] == [2, 1, 3]  # type: ignore[union-attr]
    np.testing.assert_array_equal(np.concatenate([p.mean for p in parts]), result.mean)  # type: ignore[misc]


def test_a_single_batch_is_not_copied(processor: ShardProcessor) -> None:
    request = parsed(processor, [0, 1])
    assert concat_batches([request.batch]) is request.batch


# ---------------------------------------------------------------------------------------------
# Gathering


def test_concurrent_requests_share_one_call(processor: ShardProcessor) -> None:
    requests = [parsed(processor, [i]) for i in range(8)]
    answers = run_batched(processor, requests, BatchPolicy(max_wait_ms=200))
    assert all(isinstance(a, Answer) and a.batch_requests == 8 for a in answers)
    # The call's seed is the rule's: the batch's digests in arrival order.
    combined = concat_batches([r.batch for r in requests])
    seed = request_seed(0, [r.digest for r in requests])
    whole = processor.sample(combined, seed, inference=BASE)
    for part, answer in zip(split_forecast(whole, [1] * 8), answers, strict=True):
        assert isinstance(answer, Answer)
        assert_forecasts_equal(answer.forecast, part)


def test_a_request_alone_is_answered_as_the_seed_rule_says(processor: ShardProcessor) -> None:
    request = parsed(processor, [3, 4])
    [answer] = run_batched(processor, [request], BatchPolicy(max_wait_ms=0))
    assert isinstance(answer, Answer)
    assert answer.batch_requests == 1
    assert_forecasts_equal(answer.forecast, alone(processor, request))


def test_row_budget_bounds_a_batch(processor: ShardProcessor) -> None:
    # 10 paths per series: a budget of 30 rows holds three one-series requests.
    requests = [parsed(processor, [i]) for i in range(7)] + [parsed(processor, [7, 8, 9, 10])]
    answers = run_batched(processor, requests, BatchPolicy(max_rows=30, max_wait_ms=50))
    sizes = [a.batch_requests for a in answers if isinstance(a, Answer)]
    assert len(sizes) == 8
    assert max(sizes[:7]) == 3
    assert sizes[-1] == 1  # over the budget on its own: never split, runs alone
    assert_forecasts_equal(answers[-1].forecast, alone(processor, requests[-1]))  # type: ignore[union-attr]


def test_batching_off_runs_every_request_alone(processor: ShardProcessor) -> None:
    requests = [parsed(processor, [i]) for i in range(5)]
    answers = run_batched(processor, requests, BatchPolicy(enabled=False))
    for request, answer in zip(requests, answers, strict=True):
        assert isinstance(answer, Answer)
        assert answer.batch_requests == 1
        assert_forecasts_equal(answer.forecast, alone(processor, request))


def test_requests_batch_with_their_own_configuration(processor: ShardProcessor) -> None:
    samples = {"num_samples": 4, "output_types": ["samples"]}
    requests = [
        parsed(processor, [i], **(samples if i % 2 else {})) for i in range(6)
    ]  # alternating: two groups of three
    answers = run_batched(processor, requests, BatchPolicy(max_wait_ms=200))
    for i, answer in enumerate(answers):
        assert isinstance(answer, Answer)
        assert answer.batch_requests == 3
        if i % 2:
            assert answer.forecast.samples is not None
            assert answer.forecast.samples.shape == (1, 4, processor.spec.prediction_length)
            assert answer.forecast.mean is None
        else:
            assert answer.forecast.samples is None
            assert answer.forecast.quantiles is not None
            assert answer.forecast.quantiles.shape[1] == len(BASE.quantiles)


# ---------------------------------------------------------------------------------------------
# Isolation, cancellation, drain


def test_a_failing_call_fails_only_its_culprit(processor: ShardProcessor) -> None:
    marked = parsed(processor, [99])
    marker = int(marked.batch.start[0])

    def fragile(batch: SeriesBatch, inference: InferenceConfig, seed: int) -> Forecast:
        if marker in batch.start.tolist():
            raise FloatingPointError("the model broke on this series")
        return processor.sample(batch, seed, inference=inference)

    others = [parsed(processor, [i]) for i in range(5)]
    requests = [*others[:2], marked, *others[2:]]
    answers = run_batched(processor, requests, BatchPolicy(max_wait_ms=200), run=fragile)
    assert isinstance(answers[2], FloatingPointError)
    for request, answer in zip(requests, answers, strict=True):
        if request is marked:
            continue
        assert isinstance(answer, Answer)
        # Retried on its own after the batch failed: the lone answer, byte for byte.
        assert answer.batch_requests == 1
        assert_forecasts_equal(answer.forecast, alone(processor, request))


def test_a_cancelled_request_is_dropped(processor: ShardProcessor) -> None:
    requests = [parsed(processor, [i]) for i in range(4)]

    def sample(batch: SeriesBatch, inference: InferenceConfig, seed: int) -> Forecast:
        return processor.sample(batch, seed, inference=inference)

    async def main() -> list[Any]:
        batcher = MicroBatcher(sample, policy=BatchPolicy(max_wait_ms=100), seed=0)
        await batcher.start()
        tasks = [asyncio.create_task(batcher.forecast(r)) for r in requests]
        await asyncio.sleep(0)  # all four are queued, the batch still gathering
        tasks[1].cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        await batcher.close()
        return results

    results = asyncio.run(main())
    assert isinstance(results[1], asyncio.CancelledError)
    kept = [requests[i] for i in (0, 2, 3)]
    seed = request_seed(0, [r.digest for r in kept])
    whole = processor.sample(concat_batches([r.batch for r in kept]), seed, inference=BASE)
    for part, result in zip(
        split_forecast(whole, [1, 1, 1]), [results[0], *results[2:]], strict=True
    ):
        assert isinstance(result, Answer)
        assert result.batch_requests == 3
        assert_forecasts_equal(result.forecast, part)


def test_close_answers_what_is_queued_then_refuses(processor: ShardProcessor) -> None:
    requests = [parsed(processor, [i]) for i in range(6)]

    def sample(batch: SeriesBatch, inference: InferenceConfig, seed: int) -> Forecast:
        return processor.sample(batch, seed, inference=inference)

    async def main() -> tuple[list[Any], BaseException | None]:
        batcher = MicroBatcher(sample, policy=BatchPolicy(max_rows=20, max_wait_ms=0), seed=0)
        await batcher.start()
        tasks = [asyncio.create_task(batcher.forecast(r)) for r in requests]
        await asyncio.sleep(0)
        await batcher.close()  # three batches of two are still queued or running
        refused = None
        try:
            await batcher.forecast(requests[0])
        except RuntimeError as err:
            refused = err
        return [t.result() for t in tasks], refused

    answers, refused = asyncio.run(main())
    assert all(isinstance(a, Answer) for a in answers)
    assert refused is not None
    assert "not running" in str(refused)
