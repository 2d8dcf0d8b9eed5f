"""The container contract over real HTTP, on both hosts (uvicorn workers, Ray Serve).

Each host is started once for the module (the ``server`` fixture is parametrized by host, so
pytest runs every test on uvicorn, then every test on Ray Serve) with the deployment
environment of a SageMaker container: ``DEEPAR_INFERENCE_CONFIG`` (not the default, so the
tests see that it is read) and ``SAGEMAKER_MAX_PAYLOAD_IN_MB=1``.

Answers are checked against ``batchcast predict``'s in-process answer, byte for byte: the
tests send one request at a time, so each is forecast alone and the seed rule of the shared
request path makes the two identical.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from serve_cases import ENV_INFERENCE, MAX_PAYLOAD_MB, P, Server, host, instance, jsonl, lines_of

from batchcast.api import predict
from batchcast.forecast import InferenceConfig
from batchcast.io import Join
from batchcast.runner.processor import ShardProcessor, WorkerOptions

ENV = {
    "DEEPAR_INFERENCE_CONFIG": orjson.dumps(ENV_INFERENCE).decode(),
    "SAGEMAKER_MAX_PAYLOAD_IN_MB": str(MAX_PAYLOAD_MB),
}
JSON, LINES, CSV = "application/json", "application/jsonlines", "text/csv"
INSTANCES = [instance(0), instance(1, length=2), instance(2, length=0), instance(3)]


@pytest.fixture(scope="module", params=["uvicorn", "ray"])
def server(request: pytest.FixtureRequest, model_dir: str) -> Iterator[Server]:
    with host(request.param, model_dir, workers=2, env=ENV) as running:
        yield running


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=120) as c:
        yield c


@pytest.fixture(scope="module")
def processor(model_dir: str) -> ShardProcessor:
    """The same model in process, configured as the deployment is."""
    options = WorkerOptions(
        inference=InferenceConfig.from_mapping(ENV_INFERENCE),
        join=Join(),
        max_payload_mb=MAX_PAYLOAD_MB,
        seed=0,
    )
    return ShardProcessor(model_dir, options)


def expected(processor: ShardProcessor, request: dict[str, Any]) -> dict[str, Any]:
    """``batchcast predict``'s answer with the deployment's configuration and seed 0."""
    return predict(processor, request, seed=0, inference=processor.options.inference)


def post(client: httpx.Client, body: bytes, content_type: str | None, **headers: str) -> Any:
    if content_type is not None:
        headers["Content-Type"] = content_type
    return client.post("/invocations", content=body, headers=headers)


def assert_still_serving(client: httpx.Client, processor: ShardProcessor) -> None:
    request = {"instances": INSTANCES[:1]}
    response = post(client, orjson.dumps(request), JSON)
    assert response.status_code == 200
    assert response.json() == expected(processor, request)


# ---------------------------------------------------------------------------------------------
# GET routes


def test_ping_answers_200_with_an_empty_body(client: httpx.Client) -> None:
    response = client.get("/ping")
    assert response.status_code == 200
    assert response.content == b""


def test_execution_parameters(client: httpx.Client) -> None:
    response = client.get("/execution-parameters")
    assert response.status_code == 200
    assert response.headers["content-type"] == JSON
    assert response.json() == {
        "MaxConcurrentTransforms": 4,  # two per worker, two workers
        "BatchStrategy": "MultiRecord",
        "MaxPayloadInMB": MAX_PAYLOAD_MB,
    }


# ---------------------------------------------------------------------------------------------
# POST /invocations: the endpoint form


def test_endpoint_form_answers_as_predict_does(
    client: httpx.Client, processor: ShardProcessor
) -> None:
    request = {"instances": INSTANCES, "configuration": {"quantiles": ["0.1", "0.5"]}}
    response = post(client, orjson.dumps(request), JSON)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == JSON
    body = response.json()
    assert body == expected(processor, request)
    assert [list(p["quantiles"]) for p in body["predictions"]] == [["0.1", "0.5"]] * 4
    assert all(len(p["mean"]) == P for p in body["predictions"])


def test_endpoint_form_takes_its_base_from_the_environment(client: httpx.Client) -> None:
    response = post(client, orjson.dumps({"instances": INSTANCES[:2]}), JSON)
    assert response.status_code == 200
    for prediction in response.json()["predictions"]:
        assert list(prediction["quantiles"]) == ENV_INFERENCE["quantiles"]


def test_empty_instances(client: httpx.Client) -> None:
    response = post(client, b'{"instances": []}', JSON)
    assert response.status_code == 200
    assert response.json() == {"predictions": []}


def test_unknown_headers_are_ignored(client: httpx.Client, processor: ShardProcessor) -> None:
    request = {"instances": INSTANCES[:2]}
    response = post(
        client,
        orjson.dumps(request),
        f"{JSON}; charset=utf-8",
        **{"X-Amzn-SageMaker-Custom-Attributes": "trace=1", "X-Other": "x"},
    )
    assert response.status_code == 200
    assert response.json() == expected(processor, request)


# ---------------------------------------------------------------------------------------------
# POST /invocations: JSON Lines


def test_json_lines_answer_line_for_line(client: httpx.Client, processor: ShardProcessor) -> None:
    records = [instance(i) for i in range(6)]
    response = post(client, jsonl(records), LINES)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == LINES
    # Each input line is the bytes orjson writes for the instance, so the request digests
    # agree and the endpoint form gives the same draws: line i is prediction i.
    predictions = expected(processor, {"instances": records})["predictions"]
    assert lines_of(response.content) == [orjson.dumps(p) for p in predictions]


@pytest.mark.parametrize("content_type", [JSON, LINES])
def test_a_leading_byte_order_mark_is_dropped(
    client: httpx.Client, processor: ShardProcessor, content_type: str
) -> None:
    """Windows tools write a UTF-8 BOM first; a transform's input drops it, so a request
    does too (it was a 400 at line 1)."""
    records = [instance(1), instance(2)]
    body = orjson.dumps({"instances": records}) if content_type == JSON else jsonl(records)
    plain = post(client, body, content_type)
    marked = post(client, b"\xef\xbb\xbf" + body, content_type)
    assert marked.status_code == 200, marked.text
    assert marked.content == plain.content


@pytest.mark.parametrize("final_newline", [True, False])
def test_one_line(client: httpx.Client, processor: ShardProcessor, final_newline: bool) -> None:
    body = jsonl([instance(5)])
    response = post(client, body if final_newline else body[:-1], LINES)
    assert response.status_code == 200
    [prediction] = expected(processor, {"instances": [instance(5)]})["predictions"]
    assert response.content == orjson.dumps(prediction) + b"\n"


def test_a_thousand_lines_answer_in_order(client: httpx.Client, processor: ShardProcessor) -> None:
    records = [instance(i, length=8) for i in range(1000)]
    body = jsonl(records)
    assert len(body) < MAX_PAYLOAD_MB * 2**20
    response = post(client, body, LINES)
    assert response.status_code == 200
    lines = lines_of(response.content)
    assert len(lines) == 1000
    predictions = expected(processor, {"instances": records})["predictions"]
    assert lines == [orjson.dumps(p) for p in predictions]


def test_an_empty_body_has_no_lines(client: httpx.Client) -> None:
    response = post(client, b"", LINES)
    assert response.status_code == 200
    assert response.content == b""


def test_no_content_type_is_json_lines(client: httpx.Client, processor: ShardProcessor) -> None:
    response = post(client, jsonl([instance(1)]), None)
    assert response.status_code == 200
    assert response.headers["content-type"] == LINES
    [prediction] = expected(processor, {"instances": [instance(1)]})["predictions"]
    assert response.content == orjson.dumps(prediction) + b"\n"


# ---------------------------------------------------------------------------------------------
# Accept


@pytest.mark.parametrize(
    ("content_type", "accept", "answered", "wrapped"),
    [
        (JSON, None, JSON, True),
        (JSON, "*/*", JSON, True),  # curl's default
        (JSON, "application/*", JSON, True),
        (JSON, LINES, LINES, False),
        (JSON, "application/xml, application/jsonlines;q=0.5", LINES, False),
        (JSON, "application/jsonlines;q=0.4, application/json;q=0.9", JSON, True),
        (LINES, None, LINES, False),
        (LINES, "*/*", LINES, False),
        (LINES, JSON, JSON, False),  # JSON Lines records are JSON objects, one per line
        # q=0 excludes a type even where a wildcard would have chosen it
        (JSON, "application/json;q=0, */*", LINES, False),
        (LINES, "application/jsonlines;q=0, application/*", JSON, False),
    ],
)
def test_accept_picks_the_encoding(
    client: httpx.Client,
    processor: ShardProcessor,
    content_type: str,
    accept: str | None,
    answered: str,
    wrapped: bool,
) -> None:
    records = INSTANCES[:2]
    body = orjson.dumps({"instances": records}) if content_type == JSON else jsonl(records)
    headers = {} if accept is None else {"Accept": accept}
    response = post(client, body, content_type, **headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == answered
    predictions = expected(processor, {"instances": records})["predictions"]
    if wrapped:
        assert response.json() == {"predictions": predictions}
    else:
        assert lines_of(response.content) == [orjson.dumps(p) for p in predictions]


@pytest.mark.parametrize("content_type", [JSON, LINES])
@pytest.mark.parametrize("accept", [CSV, "text/*", "application/xml, text/csv;q=0.1"])
def test_csv_has_one_row_per_record(
    client: httpx.Client, processor: ShardProcessor, content_type: str, accept: str
) -> None:
    records = INSTANCES
    body = orjson.dumps({"instances": records}) if content_type == JSON else jsonl(records)
    response = post(client, body, content_type, Accept=accept)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith(CSV)
    rows = list(csv.reader(io.StringIO(response.text)))
    predictions = expected(processor, {"instances": records})["predictions"]
    assert len(rows) == len(predictions)
    for row, prediction in zip(rows, predictions, strict=True):
        # No header; quantiles expand to one cell each, in the configured order, then mean.
        cells = [prediction["quantiles"][q] for q in ENV_INFERENCE["quantiles"]]
        assert [orjson.loads(cell) for cell in row] == [*cells, prediction["mean"]]


@pytest.mark.parametrize(
    "accept", ["application/xml", "image/*, application/json;q=0", "application/json;q=0"]
)
def test_unservable_accept_is_406(
    client: httpx.Client, processor: ShardProcessor, accept: str
) -> None:
    response = post(client, orjson.dumps({"instances": INSTANCES}), JSON, Accept=accept)
    assert response.status_code == 406
    assert response.headers["content-type"] == JSON
    error = response.json()["error"]
    assert error["field"] == "Accept"
    assert accept in error["message"]
    assert LINES in error["message"]  # names what is accepted
    assert_still_serving(client, processor)


@pytest.mark.parametrize(
    "content_type", ["text/plain", "text/csv", "application/x-www-form-urlencoded"]
)
def test_unsupported_content_type_is_415(
    client: httpx.Client, processor: ShardProcessor, content_type: str
) -> None:
    response = post(client, jsonl(INSTANCES), content_type)
    assert response.status_code == 415
    error = response.json()["error"]
    assert error["field"] == "Content-Type"
    assert content_type in error["message"]
    assert_still_serving(client, processor)


# ---------------------------------------------------------------------------------------------
# 413 and 400


@pytest.mark.parametrize("chunked", [False, True])
def test_body_over_max_payload_is_413(
    client: httpx.Client, processor: ShardProcessor, chunked: bool
) -> None:
    body = b" " * (MAX_PAYLOAD_MB * 2**20 + 1)
    # A generator body goes chunked: no Content-Length, so the limit is found while reading.
    content: Any = iter([body[: len(body) // 2], body[len(body) // 2 :]]) if chunked else body
    response = client.post("/invocations", content=content, headers={"Content-Type": LINES})
    assert response.status_code == 413
    error = response.json()["error"]
    assert f"MaxPayloadInMB is {MAX_PAYLOAD_MB}" in error["message"]
    assert_still_serving(client, processor)


def _with(i: int, **changes: Any) -> dict[str, Any]:
    record = instance(i)
    record.update(changes)
    return record


@pytest.mark.parametrize(
    ("content_type", "body", "error"),
    [
        (JSON, b"{nope", {"field": "$", "in_message": "not valid JSON"}),
        (JSON, b"[1, 2]", {"field": "$"}),
        (JSON, b'{"instances": {}}', {"field": "$"}),
        (JSON, b'{"instances": [], "extra": 1}', {"field": "$", "in_message": "extra"}),
        (
            JSON,
            orjson.dumps({"instances": [instance(0), _with(1, target="x")]}),
            {"instance": 2, "field": "target"},
        ),
        (
            JSON,
            orjson.dumps({"instances": [_with(0, cat=[7]), instance(1), _with(2, start=None)]}),
            {"instance": 1, "field": "cat"},
        ),
        (
            JSON,
            orjson.dumps({"instances": INSTANCES, "configuration": {"num_samples": 0}}),
            {"field": "$", "in_message": "num_samples"},
        ),
        (LINES, jsonl([instance(0), _with(1, target=[1, True])]), {"line": 2, "field": "target"}),
        (LINES, jsonl([instance(0)]) + b"\n" + jsonl([instance(1)]), {"line": 2, "field": "$"}),
        (LINES, b"not json\n", {"line": 1, "field": "$"}),
        (LINES, jsonl([_with(0, start="2021-01-01T00:00:00Z")]), {"line": 1, "field": "start"}),
    ],
)
def test_bad_body_or_record_is_400(
    client: httpx.Client,
    processor: ShardProcessor,
    content_type: str,
    body: bytes,
    error: dict[str, Any],
) -> None:
    response = post(client, body, content_type)
    assert response.status_code == 400
    assert response.headers["content-type"] == JSON
    [(key, got)] = response.json().items()
    assert key == "error"
    for name, value in error.items():
        if name == "in_message":
            assert value in got["message"]
        else:
            assert got[name] == value
    assert got["message"]
    assert_still_serving(client, processor)


def test_several_bad_instances_are_counted(client: httpx.Client) -> None:
    request = {"instances": [instance(0), _with(1, target="x"), _with(2, cat=[9])]}
    response = post(client, orjson.dumps(request), JSON)
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["instance"], error["field"]) == (2, "target")
    assert "and 1 more bad instance" in error["message"]


# ---------------------------------------------------------------------------------------------
# The access log (the uvicorn host's stderr; Serve keeps replica logs in its own files)


def test_access_log_has_one_line_per_request_and_no_ping(
    server: Server, client: httpx.Client
) -> None:
    if server.kind != "uvicorn":
        pytest.skip("Ray Serve writes replica logs to its session folder")
    # The lines arrive through a pipe: let the earlier tests' last lines land first (on a
    # loaded machine one arrived after this snapshot and was counted as this test's).
    before = len(server.access_lines())
    settle = time.monotonic() + 10
    while time.monotonic() < settle:
        time.sleep(0.3)
        if len(server.access_lines()) == before:
            break
        before = len(server.access_lines())
    for _ in range(3):
        assert client.get("/ping").status_code == 200
    response = post(client, orjson.dumps({"instances": INSTANCES[:3]}), JSON)
    assert response.status_code == 200
    bad = post(client, b"x", "text/plain")
    assert bad.status_code == 415
    deadline = time.monotonic() + 10  # the lines arrive through a pipe, a moment later
    while len(server.access_lines()) < before + 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    new = server.access_lines()[before:]
    assert len(new) == 2, new
    assert "POST /invocations 200 " in new[0]
    assert " series=3 " in new[0]
    assert "ms " in new[0]
    assert "POST /invocations 415 " in new[1]
    assert not any("/ping" in line for line in server.access_lines())
