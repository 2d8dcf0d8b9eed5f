"""Response keys over real HTTP (SPEC.md §8): a deployment whose environment selects the
classification keys, on the uvicorn host, answered in JSON and in CSV.

The server's answers are compared with ``batchcast predict`` in process under the same
environment (one request at a time is forecast alone, so the bytes are the same), and the
class probabilities with the class frequencies of the same answer's sample paths.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator

import httpx
import numpy as np
import orjson
import pytest
from serve_cases import Server, host, instance, jsonl

from batchcast.api import predict

CLASSES = {"aggregate": "sum", "thresholds": [50.0, 150.0], "labels": ["low", "mid", "high"]}
ENV = {
    "DEEPAR_INFERENCE_CONFIG": orjson.dumps({"num_samples": 30, "classes": CLASSES}).decode(),
    "SAGEMAKER_INFERENCE_OUTPUT": "predicted_label, probabilities, samples",
    "SAGEMAKER_INFERENCE_SUPPORTED": "predicted_label,probability,probabilities,samples,mean",
}
KEYS = ["predicted_label", "probabilities", "samples"]
INSTANCES = [instance(0), instance(3)]


@pytest.fixture(scope="module")
def server(model_dir: str) -> Iterator[Server]:
    with host("uvicorn", model_dir, workers=1, env=ENV) as running:
        yield running


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=120) as c:
        yield c


def test_the_environment_selects_the_keys_and_probabilities_follow_the_samples(
    client: httpx.Client, model_dir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = {"instances": INSTANCES}
    answer = client.post("/invocations", json=body)
    assert answer.status_code == 200, answer.text
    predictions = answer.json()["predictions"]
    for prediction in predictions:
        assert list(prediction) == KEYS
        aggregate = np.array(prediction["samples"], dtype=np.float64).sum(axis=1)
        classes = (aggregate[:, None] >= np.array(CLASSES["thresholds"])[None, :]).sum(axis=1)
        expected = np.bincount(classes, minlength=3) / 30
        assert prediction["probabilities"] == pytest.approx(expected.tolist(), abs=1e-6)
        assert prediction["predicted_label"] == CLASSES["labels"][int(np.argmax(expected))]
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    assert predictions == predict(model_dir, body)["predictions"]


def test_csv_rows_hold_the_same_values_in_key_order(client: httpx.Client) -> None:
    lines = jsonl(INSTANCES)
    as_json = client.post(
        "/invocations", content=lines, headers={"Content-Type": "application/jsonlines"}
    )
    as_csv = client.post(
        "/invocations",
        content=lines,
        headers={"Content-Type": "application/jsonlines", "Accept": "text/csv"},
    )
    assert as_csv.status_code == 200, as_csv.text
    assert as_csv.headers["content-type"].startswith("text/csv")
    records = [orjson.loads(x) for x in as_json.content.splitlines()]
    rows = list(csv.reader(io.StringIO(as_csv.text)))
    assert len(rows) == len(records) == 2
    for row, record in zip(rows, records, strict=True):
        assert row[0] == record["predicted_label"]
        assert orjson.loads(row[1]) == pytest.approx(record["probabilities"])
        assert orjson.loads(row[2]) == record["samples"]  # the same float32 shortest reprs


def test_a_request_cannot_ask_for_an_unsupported_key(client: httpx.Client) -> None:
    # The request's configuration overrides DEEPAR_INFERENCE_CONFIG, not the deployment's
    # keys: asking for quantiles changes nothing the response holds.
    body = {"instances": INSTANCES[:1], "configuration": {"output_types": ["quantiles"]}}
    answer = client.post("/invocations", json=body)
    assert answer.status_code == 200, answer.text
    assert list(answer.json()["predictions"][0]) == KEYS


def test_an_answer_of_too_many_sample_values_is_refused_before_sampling(
    client: httpx.Client,
) -> None:
    """The row bound alone let one series x 4M paths through, whose samples (x the horizon)
    took 4 GB to answer; with "samples" among the keys the answer's size is bounded too."""
    body = {"instances": INSTANCES[:1], "configuration": {"num_samples": 4_000_000}}
    answer = client.post("/invocations", json=body)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["field"] == "num_samples"
    assert "values; an answer may hold at most 8388608" in error["message"]
    # the server is unharmed: a normal request is answered
    assert client.post("/invocations", json={"instances": INSTANCES[:1]}).status_code == 200
