"""``batchcast serve --ray`` (the Ray Serve host) against hostile and careless clients.

The attacks of ``test_serve_adversarial.py`` (the uvicorn host) through Serve's HTTP proxy:
the proxy is a second HTTP stack in front of the app, with its own body handling, request
queueing (``max_ongoing_requests``) and disconnect handling. One Ray Serve for the module (a
private 2-CPU local Ray, one replica, so that what one client does is seen by the next), a
deterministic-L1 model, raw sockets where a client must misbehave below HTTP.
"""

from __future__ import annotations

import socket
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import orjson
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "serve"))
from serve_cases import (  # the serve tests' helpers: tiny model, real host
    ENV_INFERENCE,
    Server,
    address,
    check_lying_content_length,
    good_request,
    instance,
    jsonl,
    lines_of,
    ray_access_lines,
    ray_host,
    read_until_closed,
    request_head,
    save_tiny_model,
)

pytestmark = pytest.mark.slow

JSON = {"content-type": "application/json"}
LINES = {"content-type": "application/jsonlines"}
BODY_TIMEOUT_S = 2.0
MAX_PAYLOAD_MB = 4  # the hang-up test's request (10,000 series, 2.7 MB) must be accepted


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> str:
    return save_tiny_model(tmp_path_factory.mktemp("ray-adversarial") / "point", "deterministic-L1")


@pytest.fixture(scope="module")
def server(model: str) -> Iterator[Server]:
    env = {
        "DEEPAR_INFERENCE_CONFIG": orjson.dumps(ENV_INFERENCE).decode(),
        "SAGEMAKER_MAX_PAYLOAD_IN_MB": str(MAX_PAYLOAD_MB),
    }
    with ray_host(model, workers=1, env=env, body_timeout_s=BODY_TIMEOUT_S) as running:
        yield running


@pytest.fixture
def client(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60) as c:
        yield c


def _error(response: httpx.Response, status: int) -> dict[str, object]:
    assert response.status_code == status, response.text[:300]
    assert response.headers["content-type"] == "application/json"
    error: dict[str, object] = response.json()["error"]
    return error


# ---------------------------------------------------------------------------------------------
# Bodies: too large, not JSON, not UTF-8, nested beyond reason, of the wrong type


def test_a_body_over_max_payload_is_413_whatever_the_client_declares(
    server: Server, client: httpx.Client
) -> None:
    big = b"x" * (3 * MAX_PAYLOAD_MB << 20)
    declared = client.post("/invocations", content=big, headers=JSON)
    assert _error(declared, 413)["field"] == "Content-Length"

    def chunks() -> Iterator[bytes]:  # no Content-Length: chunked, the size is only counted
        for _ in range(3 * MAX_PAYLOAD_MB):
            yield b"y" * (1 << 20)

    streamed = client.post("/invocations", content=chunks(), headers=JSON)
    assert _error(streamed, 413)["field"] == "Content-Length"
    good_request(client)


def test_a_lying_content_length_is_refused_at_once(server: Server, client: httpx.Client) -> None:
    check_lying_content_length(server, client, BODY_TIMEOUT_S)


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        (b'{"instances": [', JSON),
        (b"\xff\xfe{not utf-8}", JSON),
        (b'{"instances": [{"start": "2021-01-01", "target": [1, 2, "\xc3\x28"]}]}', JSON),
        (b"[" * 100_000 + b"]" * 100_000, JSON),
        (b'{"instances": ' + b"[" * 5_000 + b"]" * 5_000 + b"}", JSON),
        (b'{"start": "2021-01-01", "target": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", LINES),
        (b"\xff\xfe\n", LINES),
        (b'{"instances": [], "configuration": {"num_samples": "many"}}', JSON),
        (b'{"instances": [], "configuration": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", JSON),
    ],
    ids=[
        "truncated",
        "invalid-utf8",
        "invalid-utf8-in-a-string",
        "nested-100k",
        "nested-instances",
        "nested-line",
        "invalid-utf8-line",
        "bad-configuration",
        "nested-configuration",
    ],
)
def test_malformed_bodies_are_400_and_the_replica_lives(
    client: httpx.Client, body: bytes, headers: dict[str, str]
) -> None:
    error = _error(client.post("/invocations", content=body, headers=headers), 400)
    assert error["message"]
    good_request(client)


@pytest.mark.parametrize(
    ("headers", "status", "field"),
    [
        ({"content-type": "text/csv"}, 415, "Content-Type"),
        ({"content-type": "application/x-www-form-urlencoded"}, 415, "Content-Type"),
        ({"content-type": "application/json-seq; ;;"}, 415, "Content-Type"),
        ({**JSON, "accept": "application/xml"}, 406, "Accept"),
        ({**JSON, "accept": "text/csv;q=0, image/*"}, 406, "Accept"),
    ],
)
def test_wrong_content_types_and_accepts(
    client: httpx.Client, headers: dict[str, str], status: int, field: str
) -> None:
    body = orjson.dumps({"instances": [instance(0)]})
    assert _error(client.post("/invocations", content=body, headers=headers), status)["field"] == (
        field
    )
    good_request(client)


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("GET", "/invocations", 405), ("POST", "/ping", 405), ("GET", "/nope", 404)],
)
def test_unknown_routes_and_methods_answer_the_documented_error(
    client: httpx.Client, method: str, path: str, status: int
) -> None:
    error = _error(client.request(method, path, content=b"{}"), status)
    assert method in str(error["message"])


# ---------------------------------------------------------------------------------------------
# Requests that ask for too much


@pytest.mark.parametrize(
    ("instances", "num_samples"),
    [(1, 1_000_000_000), (1, 2**70), (5_000, 1_000)],
    ids=["one-series-1e9-paths", "beyond-int64", "5000-series-1000-paths"],
)
def test_a_request_for_too_many_sample_paths_is_400_and_the_replica_lives(
    client: httpx.Client, instances: int, num_samples: int
) -> None:
    records = orjson.dumps([instance(i % 50, length=10) for i in range(instances)])
    body = b'{"instances": %s, "configuration": {"num_samples": %d}}' % (records, num_samples)
    error = _error(client.post("/invocations", content=body, headers=JSON), 400)
    assert error["field"] == "num_samples"
    assert f"{instances} series x {num_samples} sample paths" in str(error["message"])
    good_request(client)


# ---------------------------------------------------------------------------------------------
# Slow and vanishing clients


def test_a_body_that_stalls_or_trickles_is_408_and_others_are_served_meanwhile(
    server: Server, client: httpx.Client
) -> None:
    # Through the proxy, a stalled body holds one of the replica's max_ongoing_requests slots.
    body = orjson.dumps({"instances": [instance(0)]})
    stalled = [socket.create_connection(address(server)) for _ in range(3)]
    for sock in stalled:
        sock.sendall(request_head(len(body)) + body[:10])
    trickler = socket.create_connection(address(server))
    trickler.sendall(request_head(len(body)))
    start = time.monotonic()
    for i in range(6):
        trickler.sendall(body[i : i + 1])
        began = time.monotonic()
        good_request(client, i)
        assert time.monotonic() - began < BODY_TIMEOUT_S / 2
        time.sleep(BODY_TIMEOUT_S / 8)
    answers = [read_until_closed(sock, 4 * BODY_TIMEOUT_S) for sock in [*stalled, trickler]]
    waited = time.monotonic() - start
    for sock in [*stalled, trickler]:
        sock.close()
    for answer in answers:
        head, _, payload = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408 "), answer[:300]
        error = orjson.loads(payload)["error"]
        assert f"within {BODY_TIMEOUT_S:g} s" in error["message"], error
    assert BODY_TIMEOUT_S * 0.9 < waited < BODY_TIMEOUT_S * 4


def _access_lines_after(mark: int, *, count: int, timeout: float = 15.0) -> list[str]:
    """The replica's access lines after the first ``mark``, once there are ``count``."""
    deadline = time.monotonic() + timeout
    while True:
        lines = ray_access_lines()[mark:]
        if len(lines) >= count or time.monotonic() > deadline:
            return lines
        time.sleep(0.1)


def test_clients_that_hang_up_do_not_hold_up_the_next(server: Server, client: httpx.Client) -> None:
    # Each costs the replica about a second of sampling: a client that sends one and leaves
    # (mid-body or after the body) must not make the next client wait for it.
    big = jsonl([instance(i % 50, length=10) for i in range(10_000)])
    good_request(client)
    mark = len(_access_lines_after(0, count=0))
    for i, cut in enumerate((len(big) // 2, len(big), len(big), len(big))):
        with socket.create_connection(address(server)) as sock:
            sock.sendall(request_head(len(big), "application/jsonlines") + big[:cut])
            if i == 1:
                # This client stays until the replica is surely running its handler, so its
                # hang-up cancels a started request (a 499). The others may leave before
                # theirs reach the replica (no line): a race that once left no 499 at all.
                time.sleep(0.3)
    time.sleep(0.5)
    began = time.monotonic()
    good_request(client, 1)
    # The first may already be in the sampler when its client leaves; not four of them.
    assert time.monotonic() - began < 2.5
    good_request(client, 2)
    # Serve cancels the handler of a client that disconnects: that is a 499 in the access
    # log, like the uvicorn host's, not a 500 (which it was before). A request cancelled in
    # the proxy before it reached the replica leaves no line.
    lines = _access_lines_after(mark, count=6)
    text = "\n".join(lines)
    assert len([line for line in lines if "POST /invocations 200 " in line]) == 2, text
    assert not [line for line in lines if " 500 " in line or " 413 " in line], text
    assert [line for line in lines if "POST /invocations 499 " in line], text


def test_many_paths_for_one_series_are_still_served(client: httpx.Client) -> None:
    body = {"instances": [instance(0)], "configuration": {"num_samples": 100_000}}
    response = client.post("/invocations", content=orjson.dumps(body), headers=JSON)
    assert response.status_code == 200, response.text[:300]


# ---------------------------------------------------------------------------------------------
# Many clients at once


def test_mixed_good_and_bad_concurrent_clients_get_their_own_answers(
    server: Server, client: httpx.Client
) -> None:
    # Good requests of distinct series, interleaved with bad records, bad JSON and 413s: each
    # good one gets its own series' forecasts back (no cross-talk), each bad one its error.
    # The model is deterministic-L1: a series' forecast depends on that series alone.
    everyone = client.post("/invocations", json={"instances": [instance(i) for i in range(66)]})
    expected = [p["mean"] for p in everyone.json()["predictions"]]

    def call(i: int) -> tuple[int, httpx.Response]:
        with httpx.Client(base_url=server.url, timeout=60) as c:
            kind = i % 4
            if kind == 0:
                body = jsonl([instance(i), instance(i + 1)])
                return i, c.post("/invocations", content=body, headers=LINES)
            if kind == 1:
                bad = {**instance(i), "target": "x"}
                return i, c.post("/invocations", json={"instances": [instance(i), bad]})
            if kind == 2:
                junk = b"{oops" if i % 8 == 2 else b"z" * ((MAX_PAYLOAD_MB << 20) + 1)
                return i, c.post("/invocations", content=junk, headers=JSON)
            return i, c.post("/invocations", json={"instances": [instance(i)]})

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(call, range(64)))
    for i, response in results:
        kind = i % 4
        if kind == 0:
            assert response.status_code == 200, response.text
            means = [orjson.loads(line)["mean"] for line in lines_of(response.content)]
            for got, want in zip(means, expected[i : i + 2], strict=True):
                assert got == pytest.approx(want, rel=1e-4), i
        elif kind == 1:
            error = _error(response, 400)
            assert (error["instance"], error["field"]) == (2, "target")
        elif kind == 2:
            _error(response, 400 if i % 8 == 2 else 413)
        else:
            assert response.status_code == 200, response.text
            [prediction] = response.json()["predictions"]
            assert prediction["mean"] == pytest.approx(expected[i], rel=1e-4), i


def test_many_concurrent_requests_are_all_answered(server: Server) -> None:
    # More clients than the replica takes at once (max_ongoing_requests): the rest queue in
    # the proxy and are answered, none refused or lost.
    n = 300
    results: list[int] = []
    lock = threading.Lock()

    def one(i: int) -> None:
        with httpx.Client(base_url=server.url, timeout=120) as c:
            status = c.post("/invocations", json={"instances": [instance(i % 50)]}).status_code
        with lock:
            results.append(status)

    with ThreadPoolExecutor(64) as pool:
        list(pool.map(one, range(n)))
    assert results == [200] * n
