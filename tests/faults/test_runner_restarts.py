"""One worker death is one restart (issue 9.8): ``worker_restarts`` once counted every shard
the dead worker held as a death of its own. Now a death counts once, and
``shards_retried`` counts the shards resubmitted, at most what one worker holds.

A real local Ray with two workers; one is killed with SIGKILL mid-job.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
import ray

from batchcast.api import transform
from batchcast.runner.pool import ACTOR_NAMESPACE, IN_FLIGHT_PER_WORKER, worker_actor_names
from batchcast.runner.summary import JobSummary
from batchcast.synthetic import synthetic_records, write_jsonl

_SHARD_MB = 0.004  # ~40 shards: the job is still working when the worker dies


@pytest.mark.usefixtures("ray_local")
def test_one_worker_death_is_one_restart(tiny_model: str, tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "in" / "a.jsonl", synthetic_records(600, length=(20, 60)))
    output, name = tmp_path / "out", "restart-count"
    result: dict[str, JobSummary] = {}

    def job() -> None:
        result["summary"] = transform(
            tiny_model, str(data), str(output), workers=2, shard_mb=_SHARD_MB, name=name
        )

    thread = threading.Thread(target=job)
    thread.start()
    deadline = time.monotonic() + 120
    while not list(output.glob(".*")):  # writing: both workers hold shards
        assert time.monotonic() < deadline, "the job never started writing"
        assert thread.is_alive(), "the job ended too soon"
        time.sleep(0.01)
    victim = ray.get_actor(worker_actor_names(name)[0], namespace=ACTOR_NAMESPACE)
    os.kill(ray.get(victim.pid.remote()), signal.SIGKILL)
    thread.join(timeout=300)
    summary = result["summary"]
    assert summary.ok, summary.failure_reason
    assert summary.counts["worker_restarts"] == 1
    assert 1 <= summary.counts["shards_retried"] <= IN_FLIGHT_PER_WORKER
    clean = transform(tiny_model, str(data), str(tmp_path / "clean"), shard_mb=_SHARD_MB)
    assert clean.counts["worker_restarts"] == clean.counts["shards_retried"] == 0
    assert (output / "a.jsonl.out").read_bytes() == (tmp_path / "clean/a.jsonl.out").read_bytes()
