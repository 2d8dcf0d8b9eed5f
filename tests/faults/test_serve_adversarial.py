"""``batchcast serve`` (uvicorn host) against hostile and careless clients.

One real server for the module (``python -m batchcast.serve.command``, one worker, so that
what one client does is seen by the next), a deterministic-L1 model, raw sockets where a
client must misbehave below HTTP (hang up mid-body, leave after sending).
"""

from __future__ import annotations

import signal
import socket
import sys
import time
from collections.abc import Iterator
from datetime import datetime
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
    read_until_closed,
    request_head,
    save_tiny_model,
    start_uvicorn,
    stop_uvicorn,
)

pytestmark = pytest.mark.slow

JSON = {"content-type": "application/json"}
BODY_TIMEOUT_S = 2.0
LINES = {"content-type": "application/jsonlines"}


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> str:
    return save_tiny_model(tmp_path_factory.mktemp("adversarial") / "point", "deterministic-L1")


@pytest.fixture(scope="module")
def server(model: str) -> Iterator[Server]:
    env = {"DEEPAR_INFERENCE_CONFIG": orjson.dumps(ENV_INFERENCE).decode()}
    # A short body timeout, so that the slow-client tests see it; the others send promptly.
    running = start_uvicorn(model, workers=1, env=env, args=["--body-timeout", str(BODY_TIMEOUT_S)])
    yield running
    assert stop_uvicorn(running) == 0


@pytest.fixture
def client(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60) as c:
        yield c


def _send_and_leave(server: Server, head: bytes, body: bytes) -> None:
    """A client that sends (part of) a request and hangs up without reading the answer."""
    with socket.create_connection(address(server)) as sock:
        sock.sendall(head + body)


def _log_since(
    server: Server, mark: int, *, until: str, count: int = 1, timeout: float = 30.0
) -> list[str]:
    """The server's log lines after ``mark``, once ``count`` of them contain ``until`` (the
    access log reaches us through a pipe, after the client has its answer)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = server.log[mark:]
        if sum(until in line for line in lines) >= count:
            return lines
        time.sleep(0.05)
    raise AssertionError(f"no log line with {until!r}:\n" + "\n".join(server.log[mark:][-20:]))


# ---------------------------------------------------------------------------------------------
# Clients that hang up


def test_a_client_that_hangs_up_mid_body_is_not_an_internal_error(
    server: Server, client: httpx.Client
) -> None:
    mark = len(server.log)
    body = orjson.dumps({"instances": [instance(0)]})
    for _ in range(3):
        _send_and_leave(server, request_head(len(body) + 1000), body[:20])
    time.sleep(0.5)
    good_request(client)  # still serving
    lines = _log_since(server, mark, until="series=1")
    text = "\n".join(lines)
    assert "Traceback" not in text, text
    assert "internal error" not in text, text
    gone = [line for line in lines if "POST /invocations" in line and " 499 " in line]
    assert len(gone) == 3, text


def test_requests_whose_clients_left_are_not_forecast(server: Server, client: httpx.Client) -> None:
    # Each of these costs the single worker about a second of sampling; a client that sends
    # one and leaves must not make the next client wait for it.
    big = jsonl([instance(i % 50, length=10) for i in range(10_000)])
    good_request(client)  # warm
    mark = len(server.log)
    for _ in range(4):
        _send_and_leave(server, request_head(len(big), "application/jsonlines"), big)
    time.sleep(0.5)
    good_request(client, 1)
    lines = _log_since(server, mark, until="series=1 ")
    time.sleep(0.5)
    lines = server.log[mark:]
    forecast = [line for line in lines if "series=10000" in line and " 200 " in line]
    dropped = [line for line in lines if "POST /invocations 499" in line]
    # The first may already be in the sampler when its client leaves; the rest are dropped.
    assert len(forecast) <= 1, "\n".join(lines)
    assert len(dropped) >= 3, "\n".join(lines)


def test_a_body_that_stalls_or_trickles_is_408_and_others_are_served_meanwhile(
    server: Server, client: httpx.Client
) -> None:
    # Slowloris: headers, then part of the body, then nothing (or a byte now and then). Before
    # the body timeout, each held its connection and its handler for ever; on Ray Serve, one
    # of a replica's max_ongoing_requests slots.
    body = orjson.dumps({"instances": [instance(0)]})
    mark = len(server.log)
    stalled = [socket.create_connection(address(server)) for _ in range(3)]
    for sock in stalled:
        sock.sendall(request_head(len(body)) + body[:10])
    trickler = socket.create_connection(address(server))
    trickler.sendall(request_head(len(body)))
    start = time.monotonic()
    served = 0
    for i in range(6):  # while they hang, the server answers others at once
        if i < len(body) - 10:
            trickler.sendall(body[i : i + 1])
        began = time.monotonic()
        good_request(client, i)
        served += 1
        assert time.monotonic() - began < BODY_TIMEOUT_S / 2
        time.sleep(BODY_TIMEOUT_S / 8)
    answers = [read_until_closed(sock, 3 * BODY_TIMEOUT_S) for sock in [*stalled, trickler]]
    waited = time.monotonic() - start
    for sock in [*stalled, trickler]:
        sock.close()
    for answer in answers:
        head, _, payload = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408 "), answer[:200]
        assert b"connection: close" in head.lower()
        error = orjson.loads(payload)["error"]
        assert f"within {BODY_TIMEOUT_S:g} s" in error["message"], error
    assert BODY_TIMEOUT_S * 0.9 < waited < BODY_TIMEOUT_S * 3
    assert served == 6
    logged = _log_since(server, mark, until="POST /invocations 408", count=4)
    timed_out = [line for line in logged if "POST /invocations 408" in line]
    assert len(timed_out) == 4, "\n".join(logged)


def test_clients_that_stall_before_their_headers_end_are_disconnected(
    server: Server, client: httpx.Client
) -> None:
    # uvicorn bounds only the idle time between requests, and any byte cancels that: these
    # held their connections (file descriptors) for ever, a few thousand of them the worker.
    silent = socket.create_connection(address(server))  # connects, never sends
    partial = [socket.create_connection(address(server)) for _ in range(3)]
    for sock in partial:
        sock.sendall(b"POST /invocations HTTP/1.1\r\nHost: test\r\nContent-Ty")
    trickler = socket.create_connection(address(server))
    trickler.sendall(b"POST /invocations HTTP/1.1\r\n")
    reused = socket.create_connection(address(server))  # answered once, then stalls
    reused.sendall(b"GET /ping HTTP/1.1\r\nHost: test\r\n\r\n")
    reused.settimeout(10)
    assert reused.recv(1 << 16).startswith(b"HTTP/1.1 200 ")
    reused.sendall(b"GET /pi")
    start = time.monotonic()
    for i in range(6):
        trickler.sendall(b"X-Slow-%d: 1\r\n" % i)
        good_request(client, i)
        time.sleep(BODY_TIMEOUT_S / 8)
    everyone = [silent, *partial, trickler, reused]
    assert [read_until_closed(sock, 4 * BODY_TIMEOUT_S) for sock in everyone] == [b""] * 6
    assert time.monotonic() - start < 3 * BODY_TIMEOUT_S
    for sock in everyone:
        sock.close()
    good_request(client)


def test_a_lying_content_length_is_refused_at_once(server: Server, client: httpx.Client) -> None:
    check_lying_content_length(server, client, BODY_TIMEOUT_S)


def test_a_body_that_arrives_within_the_timeout_is_served(server: Server) -> None:
    # Slow but steady: the whole body within the limit is answered (the limit is not per chunk).
    body = orjson.dumps({"instances": [instance(0)]})
    with socket.create_connection(address(server)) as sock:
        sock.sendall(request_head(len(body)).replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"))
        for part in (body[: len(body) // 2], body[len(body) // 2 :]):
            time.sleep(BODY_TIMEOUT_S / 3)
            sock.sendall(part)
        answer = read_until_closed(sock, 10)
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]


# ---------------------------------------------------------------------------------------------
# Requests that ask for too much


@pytest.mark.parametrize(
    ("instances", "num_samples"),
    [(1, 1_000_000_000), (1, 2**70), (5_000, 1_000)],
    ids=["one-series-1e9-paths", "beyond-int64", "5000-series-1000-paths"],
)
def test_a_request_for_too_many_sample_paths_is_400_and_the_worker_lives(
    server: Server, client: httpx.Client, instances: int, num_samples: int
) -> None:
    # {"num_samples": 1e9} used to get the worker killed for memory (exit -9): this client
    # saw a dropped connection, and so did every request in flight on that worker.
    records = orjson.dumps([instance(i % 50, length=10) for i in range(instances)])
    body = b'{"instances": %s, "configuration": {"num_samples": %d}}' % (records, num_samples)
    response = client.post("/invocations", content=body, headers=JSON)
    assert response.status_code == 400, response.text[:300]
    error = response.json()["error"]
    assert error["field"] == "num_samples"
    assert f"{instances} series x {num_samples} sample paths" in error["message"]
    assert server.process is not None
    assert server.process.poll() is None
    good_request(client)


def test_many_paths_for_one_series_are_still_served(client: httpx.Client) -> None:
    body = {"instances": [instance(0)], "configuration": {"num_samples": 100_000}}
    response = client.post("/invocations", content=orjson.dumps(body), headers=JSON)
    assert response.status_code == 200, response.text[:300]
    assert len(response.json()["predictions"]) == 1


# ---------------------------------------------------------------------------------------------
# SIGTERM


def test_sigterm_with_requests_in_flight_answers_them_and_exits_0_promptly(model: str) -> None:
    # Its own host: two worker processes (the container's default is one per CPU), killed.
    host = start_uvicorn(model, workers=2)
    assert host.process is not None
    body = jsonl([instance(i % 50, length=10) for i in range(2_000)])
    head = request_head(len(body), "application/jsonlines").replace(
        b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"
    )
    sockets = [socket.create_connection(address(host)) for _ in range(8)]
    for sock in sockets:
        sock.sendall(head + body)
    time.sleep(0.5)  # read by the workers: in flight, not in the kernel's backlog
    start = time.monotonic()
    host.process.send_signal(signal.SIGTERM)
    status = host.process.wait(30)
    took = time.monotonic() - start
    exited = time.time()
    answers = []
    for sock in sockets:
        with sock:
            answers.append(read_until_closed(sock, 30))
    assert status == 0
    assert [a.split(b"\r\n", 1)[0] for a in answers] == [b"HTTP/1.1 200 OK"] * 8
    assert [a.split(b"\r\n\r\n", 1)[1].count(b"\n") for a in answers] == [2_000] * 8
    # After its drain ("Finished server process"), a worker used to spend seconds more in the
    # interpreter's teardown (garbage collection of torch's objects; 2-10 s on a busy box),
    # on top of the drain, with SageMaker's kill 30 s after SIGTERM.
    finished = [
        datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
        for line in host.log
        if "Finished server process" in line
    ]
    assert len(finished) == 2, "\n".join(host.log[-20:])
    assert exited - max(finished) < 1.5, f"exited {exited - max(finished):.1f} s after the drain"
    assert took < 30.0


def test_a_request_arriving_at_sigterm_is_answered_before_the_exit(model: str) -> None:
    # Its headers had begun to arrive when the signal came: uvicorn closed such a connection as
    # idle, and the client saw a reset (as did one whose request sat unread in the socket).
    host = start_uvicorn(model, workers=1)
    assert host.process is not None
    body = orjson.dumps({"instances": [instance(3)]})
    head = request_head(len(body)).replace(b"\r\n\r\n", b"\r\nConnection: keep-alive\r\n\r\n")
    idle = socket.create_connection(address(host))  # connected, nothing sent: closed at once
    with socket.create_connection(address(host)) as sock:
        sock.sendall(head[:30])
        time.sleep(0.3)  # read by the worker: the head is arriving
        host.process.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        sock.sendall(head[30:] + body)
        answer = read_until_closed(sock, 30)  # closed after the answer, keep-alive or not
    assert host.process.wait(30) == 0
    assert read_until_closed(idle, 5) == b""
    idle.close()
    response_head, _, payload = answer.partition(b"\r\n\r\n")
    assert response_head.startswith(b"HTTP/1.1 200 "), answer[:300]
    assert len(orjson.loads(payload)["predictions"]) == 1


# ---------------------------------------------------------------------------------------------
# Routes that do not exist


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/invocations", 405),
        ("PUT", "/invocations", 405),
        ("POST", "/ping", 405),
        ("GET", "/nope", 404),
        ("POST", "/invocations/../admin", 404),
    ],
)
def test_unknown_routes_and_methods_answer_the_documented_error(
    client: httpx.Client, method: str, path: str, status: int
) -> None:
    response = client.request(method, path, content=b"{}")
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["field"] == "$"
    assert method in error["message"]
    if status == 405:
        assert response.headers["allow"]
