"""A frozen S3 endpoint fails every io call within a bound, naming the URI (issue 9.3).

A real moto server runs in its own process; the test fills a bucket, then freezes the server
with SIGSTOP: its socket still accepts connections (the kernel's backlog), but nothing ever
answers, as with a hung endpoint. A child process then makes each kind of S3 call io makes
with short timeouts (``BATCHCAST_S3_*``); each must come back as a batchcast error naming the
URI. Without timeouts botocore waits 60 s per read and retries, smart_open retries on top:
the child would outlive the deadline below (the test would fail with TimeoutExpired).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest
from moto_process import SHORT_S3_TIMEOUTS, child_env, moto_process

_DEADLINE_S = 120

_CHILD = r"""
import json, sys
from batchcast.errors import BatchcastError
from batchcast.io import Shard, list_inputs, open_sink, read_shard_lines, write_bytes_atomic
from batchcast.io.sinks import exists

bucket = sys.argv[1]
data = f"s3://{bucket}/in/a.jsonl"
calls = {
    "list": lambda: list_inputs(f"s3://{bucket}/in/"),
    "read": lambda: read_shard_lines(
        Shard(file_index=0, uri=data, start=0, end=10, index=0, count=1, compressed=False),
        max_line_bytes=1 << 20,
    ),
    "put": lambda: write_bytes_atomic(f"s3://{bucket}/out/summary.json", b"{}"),
    "upload": lambda: open_sink(f"s3://{bucket}/out/a.jsonl.out").commit(),
    "head": lambda: exists(f"s3://{bucket}/out/a.jsonl.out"),
}
for name, call in calls.items():
    try:
        call()
        result = {"call": name, "error": None}
    except BatchcastError as err:
        result = {"call": name, "error": type(err).__name__, "message": str(err)}
    print(json.dumps(result), flush=True)
"""


@pytest.fixture
def frozen_s3() -> Iterator[tuple[str, str]]:
    """A moto server in its own process with one bucket and object, then frozen (SIGSTOP)."""
    with moto_process("frozen") as (endpoint, server, client):
        client.put_object(Bucket="frozen", Key="in/a.jsonl", Body=b'{"a": 1}\n')
        os.kill(server.pid, signal.SIGSTOP)
        yield endpoint, "frozen"


def test_every_s3_call_fails_within_a_bound_naming_the_uri(frozen_s3: tuple[str, str]) -> None:
    endpoint, bucket = frozen_s3
    env = child_env(endpoint, SHORT_S3_TIMEOUTS)
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, bucket],
        env=env,
        capture_output=True,
        text=True,
        timeout=_DEADLINE_S,  # a hang fails the test here
        check=False,
    )
    assert done.returncode == 0, done.stderr
    results = {r["call"]: r for r in map(json.loads, done.stdout.splitlines())}
    expected = {
        "list": ("ConfigError", f"s3://{bucket}/in/"),
        "read": ("ShardError", f"s3://{bucket}/in/a.jsonl"),
        "put": ("OutputError", f"s3://{bucket}/out/summary.json"),
        "upload": ("OutputError", f"s3://{bucket}/out/a.jsonl.out"),
        "head": ("OutputError", f"s3://{bucket}/out/a.jsonl.out"),
    }
    for call, (error, uri) in expected.items():
        result = results[call]
        assert result["error"] == error, result
        assert uri in result["message"], result
        assert "\n" not in result["message"]  # one line for the user
        assert "timeout" in result["message"].lower(), result
