"""A moto S3 server in its own process, for the fault tests that freeze it (SIGSTOP).

The session-wide ``s3_server`` of tests/conftest.py runs in this process's threads and cannot
be frozen without freezing the test; these tests need an endpoint that hangs as a whole.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import boto3

# Dummy credentials only: nothing here may reach a real account.
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
# Per call at most 2 attempts x (1 s connect + 1 s read) + 1 s backoff: seconds, not minutes.
SHORT_S3_TIMEOUTS = {
    "BATCHCAST_S3_CONNECT_TIMEOUT": "1",
    "BATCHCAST_S3_READ_TIMEOUT": "1",
    "BATCHCAST_S3_MAX_ATTEMPTS": "2",
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def child_env(endpoint: str, settings: dict[str, str]) -> dict[str, str]:
    """This environment for a child that talks to ``endpoint``: no AWS or S3-timeout
    variable of the machine's, the dummy credentials, and ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "BATCHCAST_S3"))}
    env.update({**CREDENTIALS, **settings, "AWS_ENDPOINT_URL_S3": endpoint})
    return env


@contextmanager
def moto_process(bucket: str) -> Iterator[tuple[str, subprocess.Popen[bytes], Any]]:
    """Start moto's server in a process of its own with ``bucket`` created; yield its endpoint,
    the process (to freeze with SIGSTOP) and an S3 client. Thawed and ended on exit."""
    endpoint = f"http://127.0.0.1:{_free_port()}"
    host, port = endpoint.removeprefix("http://").split(":")
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", host, "-p", port],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        client = boto3.session.Session(
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            region_name=CREDENTIALS["AWS_DEFAULT_REGION"],
        ).client("s3", endpoint_url=endpoint)
        for _ in range(300):  # start-up takes a few seconds on a busy machine
            try:
                client.create_bucket(Bucket=bucket)
                break
            except Exception:  # not listening yet
                time.sleep(0.1)
        yield endpoint, server, client
    finally:
        os.kill(server.pid, signal.SIGCONT)
        server.terminate()
        server.wait(timeout=30)
