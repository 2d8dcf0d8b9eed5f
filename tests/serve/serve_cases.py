"""Helpers for the serve tests: tiny models, instances, and the two hosts started for real.

A uvicorn host is ``python -m batchcast.serve.command`` as a subprocess (what
``batchcast serve`` runs), on 127.0.0.1 port 0; the URL is read from the line it prints and
its stderr (the access log) is kept. A Ray Serve host runs in this process on a private
2-CPU local Ray (never a cluster found on the machine), on a free port.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import torch

from batchcast.forecast import DeepAR, ModelSpec
from batchcast.models import save_model

P = 5  # prediction_length of the tiny models
# The deployment's DEEPAR_INFERENCE_CONFIG in these tests: not SPEC.md's default, so a test
# can tell that the server read it.
ENV_INFERENCE = {
    "num_samples": 40,
    "output_types": ["mean", "quantiles"],
    "quantiles": ["0.2", "0.8"],
}
MAX_PAYLOAD_MB = 1
ACCESS = "batchcast.serve.access"  # the access log's logger name, in each of its lines
START_TIMEOUT_S = 120.0  # a worker imports torch and loads the model: seconds on a busy box


def save_tiny_model(folder: Path, likelihood: str) -> str:
    """A randomly initialised hourly model with one ``cat`` (cardinality 3) and one
    ``dynamic_feat``, saved to ``folder``; its path."""
    spec = ModelSpec(
        freq="H",
        context_length=6,
        prediction_length=P,
        lags=(1, 2, 3, 24),
        num_time_features=4,
        cardinality=(3,),
        embedding_dims=(2,),
        num_dynamic_feat=1,
        num_cells=8,
        num_layers=2,
        likelihood=likelihood,
        default_scale=5.0,
    )
    torch.manual_seed(0)
    save_model(DeepAR(spec).eval(), str(folder))
    return str(folder)


def instance(i: int, length: int = 30) -> dict[str, Any]:
    """A valid instance; its level (10 * (i + 1)) tells series apart in a forecast."""
    t = np.arange(length + P)
    level = 10.0 * (i + 1)
    return {
        "start": f"2021-0{1 + i % 9}-0{1 + i % 9} 0{i % 10}:00:00",
        "target": [round(float(level + 3 * np.sin(x / 4)), 3) for x in t[:length]],
        "cat": [i % 3],
        "dynamic_feat": [[round(float(np.cos(x)), 4) for x in t]],
        "item_id": f"item-{i}",
    }


def jsonl(records: list[Any]) -> bytes:
    """A JSON Lines body: each record as ``orjson.dumps`` writes it, then a newline."""
    return b"".join(orjson.dumps(r) + b"\n" for r in records)


def lines_of(body: bytes) -> list[bytes]:
    """The lines of a JSON Lines response (each must end with a newline)."""
    assert body.endswith(b"\n"), body[-80:]
    return body[:-1].split(b"\n")


# ---------------------------------------------------------------------------------------------
# Hosts


@dataclass
class Server:
    """A running host: its base URL and (uvicorn) the process and its stderr lines."""

    url: str
    kind: str
    process: subprocess.Popen[bytes] | None = None
    log: list[str] = field(default_factory=list)

    def access_lines(self) -> list[str]:
        return [line for line in self.log if "batchcast.serve.access" in line]


def _pump(stream: Any, sink: list[str], ready: threading.Event, found: list[str]) -> None:
    for raw in iter(stream.readline, b""):
        line = raw.decode(errors="replace").rstrip("\n")
        sink.append(line)
        if "listening on http://" in line and not found:
            found.append(line.split("listening on ", 1)[1].split()[0])
            ready.set()
    ready.set()  # the process ended: wake the waiter either way


def wait_ready(url: str, *, timeout: float = START_TIMEOUT_S) -> None:
    """Poll ``/ping`` until it answers 200 (the model is loaded)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{url}/ping", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url}/ping did not answer 200 in {timeout:.0f} s")
        time.sleep(0.2)


def start_uvicorn(
    model: str, *, workers: int = 2, env: Mapping[str, str] | None = None, args: list[str] = ()
) -> Server:
    """``batchcast serve`` in a subprocess on 127.0.0.1, port 0; returns once /ping is 200."""
    command = [sys.executable, "-m", "batchcast.serve.command", "--model", model]
    command += ["--host", "127.0.0.1", "--port", "0", "--workers", str(workers), *args]
    environment = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    environment.update(env or {})
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=environment
    )
    log: list[str] = []
    ready, found = threading.Event(), []
    threading.Thread(target=_pump, args=(process.stderr, log, ready, found), daemon=True).start()
    if not ready.wait(START_TIMEOUT_S) or not found:
        process.kill()
        raise RuntimeError("batchcast serve did not start:\n" + "\n".join(log[-30:]))
    server = Server(found[0], "uvicorn", process, log)
    wait_ready(server.url)
    return server


def stop_uvicorn(server: Server, *, timeout: float = 30.0) -> int:
    """SIGTERM the server and wait for it; its exit status."""
    assert server.process is not None
    server.process.send_signal(signal.SIGTERM)
    try:
        return server.process.wait(timeout)
    finally:
        if server.process.poll() is None:
            server.process.kill()


@contextmanager
def uvicorn_host(model: str, **kwargs: Any) -> Iterator[Server]:
    server = start_uvicorn(model, **kwargs)
    try:
        yield server
    finally:
        stop_uvicorn(server)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def ray_host(
    model: str, *, workers: int = 2, env: Mapping[str, str] | None = None, **overrides: Any
) -> Iterator[Server]:
    """The Ray Serve host in this process: a private local Ray, the app deployed on it
    (``overrides``: :class:`ServeSettings` fields, as the flags would set them)."""
    import ray
    from ray import serve

    from batchcast.serve.ray_host import APP_NAME, build_application
    from batchcast.serve.settings import ServeSettings

    if ray.is_initialized():  # a module before this one leaked its Ray: do not share it
        ray.shutdown()
    saved = os.environ.pop("RAY_ADDRESS", None)
    port = free_port()
    settings = ServeSettings.from_environment(
        {**(env or {})}, model=model, host="127.0.0.1", port=port, workers=workers, **overrides
    )
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_application(settings), name=APP_NAME, route_prefix="/")
        server = Server(f"http://127.0.0.1:{port}", "ray")
        wait_ready(server.url)
        yield server
    finally:
        serve.shutdown()
        ray.shutdown()
        if saved is not None:
            os.environ["RAY_ADDRESS"] = saved


def ray_access_lines() -> list[str]:
    """The access-log lines the replicas of this process's Ray have written so far (read from
    the workers' stderr files in the session's log folder: the driver's copy is deduplicated
    and arrives late)."""
    from ray._private import worker

    node = worker._global_node
    assert node is not None, "no Ray in this process"
    lines: list[str] = []
    for path in sorted(Path(node.get_logs_dir_path()).glob("worker-*.err")):
        lines += [ln for ln in path.read_text(errors="replace").splitlines() if ACCESS in ln]
    return sorted(lines)  # each starts with its timestamp


@contextmanager
def host(kind: str, model: str, **kwargs: Any) -> Iterator[Server]:
    """Either host, by name (``"uvicorn"`` or ``"ray"``)."""
    manager = uvicorn_host if kind == "uvicorn" else ray_host
    with manager(model, **kwargs) as server:
        yield server


# Raw HTTP on a socket, for the clients httpx will not impersonate: slow, lying, hanging up.


def address(server: Server) -> tuple[str, int]:
    """(host, port) of a server's URL."""
    host_name, port = server.url.removeprefix("http://").rsplit(":", 1)
    return host_name, int(port)


def request_head(
    length: int, content_type: str = "application/json", *, close: bool = False
) -> bytes:
    """The head of a ``POST /invocations`` declaring ``length`` body bytes."""
    connection = "Connection: close\r\n" if close else ""
    return (
        f"POST /invocations HTTP/1.1\r\nHost: test\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {length}\r\n{connection}\r\n"
    ).encode()


def read_until_closed(sock: socket.socket, timeout: float) -> bytes:
    """Everything the server sends until it closes the connection (fails past ``timeout``)."""
    sock.settimeout(timeout)
    return b"".join(iter(lambda: sock.recv(1 << 16), b""))


def good_request(client: httpx.Client, i: int = 0) -> httpx.Response:
    """A valid one-instance request, answered 200 with its forecast: the server still serves."""
    response = client.post("/invocations", json={"instances": [instance(i)]})
    assert response.status_code == 200, response.text
    [prediction] = response.json()["predictions"]
    assert len(prediction["mean"]) == P
    return response


def check_lying_content_length(server: Server, client: httpx.Client, body_timeout_s: float) -> None:
    """A client claims 1 GB, sends a little and waits: answered 413 at once, not drained for a
    gigabyte (nor left to the body timeout, which answered 408 before), and others served."""
    with socket.create_connection(address(server)) as sock:
        sock.sendall(request_head(1 << 30) + b'{"instances": [')
        began = time.monotonic()
        answer = read_until_closed(sock, 10)
    assert time.monotonic() - began < body_timeout_s / 2
    head, _, payload = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413 "), answer[:200]
    assert orjson.loads(payload)["error"]["field"] == "Content-Length"
    good_request(client)
