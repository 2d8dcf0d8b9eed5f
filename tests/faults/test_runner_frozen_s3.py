"""A frozen S3 endpoint fails a whole job within a bound, naming the URI (issue 9.3).

A real moto server runs in its own process and holds the input. ``batchcast transform``
runs as a child process; once it has committed its first output the test freezes the server
with SIGSTOP (its socket still accepts connections, nothing ever answers, as with a hung
endpoint). The job must then end within a bound with exit status 1 and one
``ShardError: ...`` line naming an input's URI, leave no half-written output, and write its
summary (the output folder is local and still works).

Two ways to the error, each with short settings so the test takes seconds:

- the S3 client's own timeouts (``BATCHCAST_S3_*``): the worker's read fails;
- the driver's shard deadline (``--shard-timeout``) with S3 timeouts far longer: the driver
  gives up on the stuck shard. On the local executor its thread cannot be killed: the
  process must exit anyway (its threads are daemons), long before the read's own timeout.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from moto_process import SHORT_S3_TIMEOUTS, child_env, moto_process

from batchcast.synthetic import synthetic_records

_BUCKET = "frozen-job"
_FILES = 300  # the job is still reading when the server freezes
# From the freeze to the child's exit. The S3 case: one read is at most 2 x (1 + 1) + 1 s,
# plus smart_open's re-open; the deadline case: 2 s. Start-up (Ray's included) comes before
# the freeze. A hang would wait for the 60 s read timeout, or forever.
_BOUND_S = 30.0
_LONG_S3 = {
    "BATCHCAST_S3_CONNECT_TIMEOUT": "60",
    "BATCHCAST_S3_READ_TIMEOUT": "60",
    "BATCHCAST_S3_MAX_ATTEMPTS": "1",
}


@pytest.fixture
def s3_process() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A moto server in its own process holding ``_FILES`` small inputs; its endpoint and
    process (to freeze)."""
    with moto_process(_BUCKET) as (endpoint, server, client):
        records = list(synthetic_records(_FILES * 2, freq="H", length=(20, 40), seed=3))
        for i in range(_FILES):
            body = b"".join(json.dumps(r).encode() + b"\n" for r in records[2 * i : 2 * i + 2])
            client.put_object(Bucket=_BUCKET, Key=f"in/a{i:03d}.jsonl", Body=body)
        yield endpoint, server


@pytest.mark.parametrize(
    ("executor", "s3_settings", "flags", "expect"),
    [
        ("local", SHORT_S3_TIMEOUTS, [], "timeout"),
        ("local", _LONG_S3, ["--shard-timeout", "2"], "no result after 2 s"),
        ("ray", _LONG_S3, ["--shard-timeout", "2"], "no result after 2 s"),
    ],
    ids=["s3-timeouts-local", "shard-deadline-local", "shard-deadline-ray"],
)
def test_a_frozen_endpoint_fails_the_job_within_a_bound(
    tiny_model: str,
    tmp_path: Path,
    s3_process: tuple[str, subprocess.Popen[bytes]],
    executor: str,
    s3_settings: dict[str, str],
    flags: list[str],
    expect: str,
) -> None:
    endpoint, server = s3_process
    output = tmp_path / "out"
    env = child_env(endpoint, s3_settings)
    env.pop("RAY_ADDRESS", None)  # a private Ray for the ray case, never a cluster found here
    command = [
        sys.executable, "-m", "batchcast", "transform", "--model", tiny_model,
        "--input", f"s3://{_BUCKET}/in/", "--output", str(output), "--workers", "1",
        "--executor", executor, "--no-progress", *flags,
    ]  # fmt: skip
    job = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 180  # start-up, Ray's included, on a loaded machine
        while not list(output.glob("*.out")):
            assert job.poll() is None, job.communicate()
            assert time.monotonic() < deadline, "the job never wrote an output"
            time.sleep(0.01)
        os.kill(server.pid, signal.SIGSTOP)
        frozen = time.monotonic()
        _, err = job.communicate(timeout=_BOUND_S + 60)  # a hang fails the test here
        took = time.monotonic() - frozen
    finally:
        if job.poll() is None:
            job.kill()
            job.wait()
    stderr = err.decode()
    assert job.returncode == 1, stderr
    assert took < _BOUND_S, f"{took:.1f} s after the freeze"
    assert "Traceback" not in stderr, stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("ShardError: "), stderr
    assert f"s3://{_BUCKET}/in/a" in last, last
    assert expect in last.lower(), last
    # Nothing half-written: no temporary file, and every .out that exists is whole.
    assert [p.name for p in output.iterdir() if p.name.startswith(".")] == []
    outs = list(output.glob("*.out"))
    assert 0 < len(outs) < _FILES
    assert all(len(p.read_bytes().splitlines()) == 2 for p in outs)
    summary = json.loads((output / "_batchcast_summary.json").read_bytes())
    assert summary["status"] == "Failed"
    assert summary["failure_reason"] == last
