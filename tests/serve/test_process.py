"""``batchcast serve`` as a process: SIGTERM drains and exits 0; start-up failures are one line.

Each server here is its own subprocess (the signal is the test), with one worker (the model
in the supervising process) and with two (uvicorn's supervisor and spawned workers).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any

import httpx
import orjson
import pytest
from serve_cases import Server, instance, start_uvicorn

# About 4 s of sampling on this machine (1,000 series x 2,000 paths of the tiny model):
# long enough to be surely in flight when the signal comes a second after it is sent.
SLOW_REQUEST = {
    "instances": [instance(i) for i in range(1000)],
    "configuration": {"num_samples": 2000, "output_types": ["mean"]},
}


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_finishes_the_request_in_flight_and_exits_0(model_dir: str, workers: int) -> None:
    _assert_sigterm_drains(start_uvicorn(model_dir, workers=workers))


def test_sigterm_on_the_ray_host_finishes_the_request_in_flight_and_exits_0(
    model_dir: str,
) -> None:
    # `batchcast serve --ray` as a process, on its own private local Ray: SIGTERM deletes the
    # application, whose replica answers what it holds first, then Ray is shut down.
    _assert_sigterm_drains(start_uvicorn(model_dir, workers=1, args=["--ray"]))


def _assert_sigterm_drains(server: Server) -> None:
    assert server.process is not None
    result: dict[str, Any] = {}

    def slow() -> None:
        try:
            result["response"] = httpx.post(
                f"{server.url}/invocations",
                content=orjson.dumps(SLOW_REQUEST),
                headers={"Content-Type": "application/json"},
                timeout=120,
            )
        except httpx.HTTPError as err:  # reported by the assertion below
            result["error"] = err

    client = threading.Thread(target=slow)
    client.start()
    time.sleep(1.0)  # the request is sent and being forecast
    assert server.process.poll() is None
    server.process.send_signal(signal.SIGTERM)
    status = server.process.wait(timeout=30)
    client.join(timeout=30)
    assert "error" not in result, result.get("error")
    response = result["response"]
    assert response.status_code == 200
    predictions = response.json()["predictions"]
    assert len(predictions) == 1000
    assert all(list(p) == ["mean"] for p in predictions)
    assert status == 0, "\n".join(server.log[-20:])
    host, port = server.url.removeprefix("http://").split(":")
    with pytest.raises(ConnectionRefusedError):  # nothing listens any more
        socket.create_connection((host, int(port)), timeout=5).close()


def _serve(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "batchcast.serve.command", "--host", "127.0.0.1", *args]
    environment = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    environment.update(env or {})
    return subprocess.run(
        command, capture_output=True, text=True, timeout=120, env=environment, check=False
    )


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_model_that_cannot_load_is_one_line(tmp_path: Any, workers: str) -> None:
    run = _serve("--model", str(tmp_path / "missing"), "--port", "0", "--workers", workers)
    assert run.returncode == 1
    assert run.stderr.startswith("ModelError: ")
    assert len(run.stderr.strip().splitlines()) == 1
    assert "Traceback" not in run.stderr


def test_a_busy_port_is_one_line(model_dir: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = _serve("--model", model_dir, "--port", str(port), "--workers", "1")
    assert run.returncode == 1
    assert run.stderr.startswith(f"ConfigError: cannot listen on 127.0.0.1:{port}: ")
    assert "Traceback" not in run.stderr


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({"MODEL_SERVER_WORKERS": "0"}, "MODEL_SERVER_WORKERS"),
        ({"SAGEMAKER_BIND_TO_PORT": "http"}, "SAGEMAKER_BIND_TO_PORT"),
        ({"SAGEMAKER_MAX_PAYLOAD_IN_MB": "500"}, "MaxPayloadInMB"),
        ({"DEEPAR_INFERENCE_CONFIG": '{"num_samples": 0}'}, "DEEPAR_INFERENCE_CONFIG"),
        # valid alone, but not for this model or any request: it used to start and then
        # answer every request 400
        (
            {"DEEPAR_INFERENCE_CONFIG": '{"classes": {"thresholds": [1], "steps": [1, 9999]}}'},
            "classes.steps",
        ),
        ({"DEEPAR_INFERENCE_CONFIG": '{"num_samples": 5000000}'}, "num_samples must be <="),
    ],
)
def test_a_bad_environment_is_one_line(model_dir: str, env: dict[str, str], name: str) -> None:
    run = _serve("--model", model_dir, env=env)
    assert run.returncode == 1
    assert run.stderr.startswith("ConfigError: ")
    assert name in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("device", "message"),
    [("foo", "device must be a torch device"), ("cuda", "torch sees no CUDA device")],
)
def test_a_device_that_cannot_serve_is_one_line(model_dir: str, device: str, message: str) -> None:
    import torch

    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    run = _serve("--model", model_dir, "--port", "0", "--workers", "1", "--device", device)
    assert run.returncode == 1
    assert run.stderr.startswith("ConfigError: ")
    assert message in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1


def test_sigint_on_one_worker_drains_and_exits_0_without_a_traceback(model_dir: str) -> None:
    """Ctrl-C: uvicorn shuts down, then raises the signal again; Python's default SIGINT
    handler turned that into a KeyboardInterrupt traceback and exit status 130."""
    server = start_uvicorn(model_dir, workers=1)
    try:
        answer = httpx.post(server.url + "/invocations", json={"instances": [instance(0)]})
        assert answer.status_code == 200
        server.process.send_signal(signal.SIGINT)
        status = server.process.wait(timeout=30)
    finally:
        if server.process.poll() is None:
            server.process.kill()
    time.sleep(0.2)  # the log reader's last lines
    log = "\n".join(server.log)
    assert status == 0, log[-2000:]
    assert "Traceback" not in log
    assert "KeyboardInterrupt" not in log
