"""Concurrent clients get their own answers: no cross-talk inside a batch, on both hosts.

The model is deterministic-L1 (no randomness), so a series' forecast is a function of that
series alone: an answer given inside a batch must equal the answer ``predict`` gives for the
request on its own (to float32 rounding, the batch changing the shapes of the matrix
products). Instances have distinct levels, so a swapped or shifted row would show.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
from serve_cases import Server, host, instance, jsonl, lines_of

from batchcast.api import predict
from batchcast.forecast import InferenceConfig
from batchcast.io import Join
from batchcast.runner.processor import ShardProcessor, WorkerOptions

CLIENTS = 48


@pytest.fixture(scope="module", params=["uvicorn", "ray"])
def server(request: pytest.FixtureRequest, point_model_dir: str) -> Iterator[Server]:
    with host(request.param, point_model_dir, workers=2) as running:
        yield running


@pytest.fixture(scope="module")
def processor(point_model_dir: str) -> ShardProcessor:
    options = WorkerOptions(inference=InferenceConfig(), join=Join(), max_payload_mb=6, seed=0)
    return ShardProcessor(point_model_dir, options)


def _request(i: int) -> dict[str, Any]:
    """Request i: 1 to 3 series of distinct levels, and its own configuration."""
    configurations = [
        None,
        {"quantiles": ["0.25", "0.75"]},
        {"num_samples": 7, "output_types": ["samples", "mean"]},
    ]
    request: dict[str, Any] = {"instances": [instance(3 * i + k) for k in range(1 + i % 3)]}
    if configurations[i % 3] is not None:
        request["configuration"] = configurations[i % 3]
    return request


async def _post_all(url: str, bodies: list[tuple[bytes, str]]) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=len(bodies))
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        return await asyncio.gather(
            *(
                client.post("/invocations", content=body, headers={"Content-Type": kind})
                for body, kind in bodies
            )
        )


def _assert_same(got: dict[str, Any], alone: dict[str, Any]) -> None:
    assert list(got) == list(alone)
    for key, value in alone.items():
        if key == "quantiles":
            assert list(got[key]) == list(value)
            for q in value:
                np.testing.assert_allclose(got[key][q], value[q], rtol=1e-5, atol=1e-5)
        else:
            np.testing.assert_allclose(got[key], value, rtol=1e-5, atol=1e-5)


def test_concurrent_requests_get_their_own_answers(
    server: Server, processor: ShardProcessor
) -> None:
    requests = [_request(i) for i in range(CLIENTS)]
    responses = asyncio.run(
        _post_all(server.url, [(orjson.dumps(r), "application/json") for r in requests])
    )
    means = set()
    for request, response in zip(requests, responses, strict=True):
        assert response.status_code == 200, response.text
        got = response.json()["predictions"]
        alone = predict(processor, request)["predictions"]
        assert len(got) == len(request["instances"])
        for g, a in zip(got, alone, strict=True):
            _assert_same(g, a)
            means.add(round(float(np.mean(g["mean"])), 3))
    # The check has teeth: every series has its own forecast.
    assert len(means) == sum(len(r["instances"]) for r in requests)


def test_concurrent_json_lines_answer_in_their_own_order(
    server: Server, processor: ShardProcessor
) -> None:
    batches = [
        [instance(100 + 5 * i + k) for k in range(5)][:: 1 if i % 2 else -1] for i in range(16)
    ]
    responses = asyncio.run(
        _post_all(server.url, [(jsonl(records), "application/jsonlines") for records in batches])
    )
    for records, response in zip(batches, responses, strict=True):
        assert response.status_code == 200
        lines = [orjson.loads(line) for line in lines_of(response.content)]
        alone = predict(processor, {"instances": records})["predictions"]
        assert len(lines) == len(records)
        for g, a in zip(lines, alone, strict=True):
            _assert_same(g, a)


def test_bad_requests_do_not_disturb_their_neighbours(
    server: Server, processor: ShardProcessor
) -> None:
    good = [_request(i) for i in range(24)]
    bad = [{"instances": [instance(0), {**instance(1), "target": "x"}]}, {"instances": 3}]
    bodies = [(orjson.dumps(r), "application/json") for r in good]
    for i, request in enumerate(bad * 6):
        bodies.insert(4 * i + 1, (orjson.dumps(request), "application/json"))
    bodies.insert(7, (b"{broken", "application/json"))
    responses = asyncio.run(_post_all(server.url, bodies))
    answers = iter(good)
    for (body, _), response in zip(bodies, responses, strict=True):
        if body in {orjson.dumps(r) for r in bad} or body == b"{broken":
            assert response.status_code == 400
            continue
        assert response.status_code == 200
        request = next(answers)
        for g, a in zip(
            response.json()["predictions"], predict(processor, request)["predictions"], strict=True
        ):
            _assert_same(g, a)


def test_concurrent_requests_share_forecast_calls(server: Server) -> None:
    """The access log says how many requests each forecast call answered."""
    if server.kind != "uvicorn":
        pytest.skip("Ray Serve writes replica logs to its session folder")
    before = len(server.access_lines())
    requests = [{"instances": [instance(i)]} for i in range(CLIENTS)]
    responses = asyncio.run(
        _post_all(server.url, [(orjson.dumps(r), "application/json") for r in requests])
    )
    assert all(r.status_code == 200 for r in responses)
    deadline = time.monotonic() + 10  # the lines arrive through a pipe, a moment later
    while len(server.access_lines()) < before + CLIENTS and time.monotonic() < deadline:
        time.sleep(0.05)
    lines = server.access_lines()[before:]
    assert len(lines) == CLIENTS
    batches = [int(m.group(1)) for line in lines if (m := re.search(r" batch=(\d+) ", line))]
    assert len(batches) == CLIENTS
    assert max(batches) > 1  # some requests were answered together
