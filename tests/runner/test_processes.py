"""Local workers as forked processes (batchcast/runner/processes.py).

The promises under test: processes are a speed choice only (the same bytes as threads); a
child that dies loses no shard (its shards come back lost, a fresh child takes its place and
the job completes with the same bytes); a child's exception comes back as the shard's
error; no child outlives its parent or the pool. Real forked processes, real model weights,
real files; children are killed with real signals.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from batchcast.api import transform
from batchcast.errors import ShardError
from batchcast.forecast.config import InferenceConfig
from batchcast.io.join import Join
from batchcast.io.shards import Shard
from batchcast.runner.executor import POOL_ENV, Outcome, Task, use_processes
from batchcast.runner.processes import ProcessPool
from batchcast.runner.processor import ShardProcessor, ShardResult, WorkerOptions
from batchcast.synthetic import synthetic_records, write_jsonl

OPTIONS = WorkerOptions(
    inference=InferenceConfig(num_samples=20), join=Join(), max_payload_mb=6.0, seed=7
)


@pytest.fixture(autouse=True)
def local_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)


def _outputs(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.out"))}


def _whole_file(path: Path) -> Shard:
    size = path.stat().st_size
    return Shard(file_index=0, uri=str(path), start=0, end=size, index=0, count=1, compressed=False)


def _result(pool: ProcessPool, timeout: float = 60.0) -> tuple[Task, ShardResult | Outcome]:
    done = pool.wait(timeout)
    assert done is not None, "the pool answered nothing in time"
    return done


def _gone(pid: int) -> bool:
    """The process has exited (a zombie nobody reaped counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "State:\tZ" in state


def test_the_rule_and_its_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(POOL_ENV, "processes")
    assert use_processes()
    monkeypatch.setenv(POOL_ENV, "threads")
    assert not use_processes()
    monkeypatch.delenv(POOL_ENV)
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:  # another thread may hold a lock a fork would copy locked: threads then
        assert not use_processes()
    finally:
        stop.set()
        other.join()


@pytest.mark.parametrize("workers", [1, 2])
def test_processes_and_threads_give_the_same_bytes(
    tiny_model: str, inputs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: int
) -> None:
    runs = {}
    for mode in ("processes", "threads"):
        monkeypatch.setenv(POOL_ENV, mode)
        out = tmp_path / mode
        runs[mode] = transform(tiny_model, str(inputs), str(out), shard_mb=0.01, workers=workers)
        assert runs[mode].cluster["workers"] == mode
        assert runs[mode].status == "Completed"
    assert runs["processes"].counts["shards"] > 4
    assert runs["processes"].counts["series"] == 500
    assert _outputs(tmp_path / "processes") == _outputs(tmp_path / "threads")
    assert set(_outputs(tmp_path / "processes")) == {"a.jsonl.out", "b.jsonl.out"}
    assert multiprocessing.active_children() == []  # the pool left no child behind


def _line_shards(path: Path, lines_each: int, count: int) -> list[Shard]:
    """The first ``count`` shards of ``lines_each`` whole lines of ``path``."""
    ends = [i + 1 for i, byte in enumerate(path.read_bytes()) if byte == ord("\n")]
    cuts = [0, *ends[lines_each - 1 :: lines_each][:count]]
    return [
        Shard(file_index=0, uri=str(path), start=a, end=b, index=i, count=count, compressed=False)
        for i, (a, b) in enumerate(itertools.pairwise(cuts))
    ]


def _idle(pid: int, checks: int = 5) -> bool:
    """The process sleeps (waiting on its pipe) at ``checks`` reads 20 ms apart."""
    for _ in range(checks):
        if "State:\tS" not in Path(f"/proc/{pid}/status").read_text():
            return False
        time.sleep(0.02)
    return True


def test_answers_taken_together_stay_in_flight_until_handed_out(
    tiny_model: str, inputs: Path
) -> None:
    """One poll can take several answers off a child's pipe; each task must stay in
    ``in_flight`` until wait() returns it, since the driver stops when in_flight is empty
    (it did not: a CI run lost a shard, "file 1: shard 5 never arrived")."""
    pool = ProcessPool(tiny_model, OPTIONS, size=1)
    try:
        shards = _line_shards(inputs / "a.jsonl", lines_each=2, count=2)
        for shard in shards:
            pool.submit(shard, "a")
        child = pool._children[0]
        assert child.conn.poll(60), "the child answered nothing in time"
        deadline = time.monotonic() + 60
        while not _idle(child.process.pid):  # both answers written: it waits for more
            assert time.monotonic() < deadline
        handed = []
        while pool.in_flight:
            task, outcome = _result(pool)
            assert isinstance(outcome, ShardResult)
            handed.append(task.shard.index)
            assert len(handed) + len(pool.in_flight) == len(shards)
        assert handed == [0, 1]
    finally:
        pool.close()


def test_a_killed_child_is_replaced_and_its_shard_comes_back_lost(
    tiny_model: str, inputs: Path
) -> None:
    expected = ShardProcessor(tiny_model, OPTIONS).process(_whole_file(inputs / "a.jsonl"), "a")
    pool = ProcessPool(tiny_model, OPTIONS, size=2)
    try:
        victim = pool._children[0].process.pid
        assert victim is not None
        os.kill(victim, signal.SIGKILL)
        pool.submit(_whole_file(inputs / "a.jsonl"), "a")  # to child 0: the first least busy
        task, outcome = _result(pool)
        assert isinstance(outcome, Outcome)
        assert outcome.lost
        assert outcome.died
        assert f"worker process {victim} was killed by SIGKILL" in outcome.message
        assert pool.died(task)  # the first report of that death
        assert not pool.died(task)  # the same death, reported again
        assert pool._children[0].process.pid != victim  # a fresh child took its place
        assert pool.size == 2
        assert not pool.in_flight
        for _ in range(2):  # the replacement and the other child both answer, alike
            pool.submit(_whole_file(inputs / "a.jsonl"), "a", attempt=2)
        answers = [_result(pool)[1] for _ in range(2)]
        for answer in answers:
            assert isinstance(answer, ShardResult)
            assert answer.lines.data == expected.lines.data
            assert answer.num_series == expected.num_series == 300
        assert task.actor == 0
    finally:
        pool.close()
    assert all(_gone(c.process.pid) for c in pool._children if c.process.pid)


def test_a_childs_exception_is_the_shards_error(tiny_model: str, tmp_path: Path) -> None:
    pool = ProcessPool(tiny_model, OPTIONS, size=1)
    missing = tmp_path / "gone.jsonl"
    try:
        shard = Shard(file_index=0, uri=str(missing), start=0, end=10, index=0, count=1,
                      compressed=False)  # fmt: skip
        pool.submit(shard, "gone.jsonl")
        _, outcome = _result(pool)
        assert isinstance(outcome, Outcome)
        assert not outcome.lost  # the shard is the problem, not the worker
        assert isinstance(outcome.cause, ShardError)
        assert str(missing) in outcome.message
        child = pool._children[0].process
        assert child.is_alive()  # and the child carries on
    finally:
        pool.close()
    assert _gone(child.pid or 0)


def test_close_kills_a_busy_child_at_once(tiny_model: str, tmp_path: Path) -> None:
    big = write_jsonl(
        tmp_path / "big.jsonl", synthetic_records(3000, freq="H", length=(200, 300), seed=5)
    )
    pool = ProcessPool(tiny_model, OPTIONS, size=1)
    pid = pool._children[0].process.pid
    pool.submit(_whole_file(Path(big)), "big")
    time.sleep(0.2)  # it is reading and forecasting now
    started = time.monotonic()
    pool.close()
    assert time.monotonic() - started < 5.0
    assert pid is not None
    assert _gone(pid)


def test_a_job_survives_a_child_killed_mid_job(
    tiny_model: str, inputs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(POOL_ENV, "threads")
    transform(tiny_model, str(inputs), str(tmp_path / "threads"), shard_mb=0.01, workers=2)
    monkeypatch.setenv(POOL_ENV, "processes")
    killed: list[int] = []
    real_wait = ProcessPool.wait

    def wait_then_kill(self: ProcessPool, timeout: float | None = None) -> object:
        done = real_wait(self, timeout)
        busy = [c for c in self._children if c.alive and c.tasks]
        if done is not None and not killed and busy:  # after the first answer: a real SIGKILL
            pid = busy[0].process.pid
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        return done

    monkeypatch.setattr(ProcessPool, "wait", wait_then_kill)
    summary = transform(
        tiny_model, str(inputs), str(tmp_path / "processes"), shard_mb=0.01, workers=2
    )
    assert killed
    assert summary.status == "Completed"
    assert summary.counts["worker_restarts"] == 1
    assert summary.counts["shards_retried"] >= 1
    assert _outputs(tmp_path / "processes") == _outputs(tmp_path / "threads")


def test_children_leave_when_their_parent_is_killed(tiny_model: str) -> None:
    script = (
        "import sys, time\n"
        "from batchcast.forecast.config import InferenceConfig\n"
        "from batchcast.io.join import Join\n"
        "from batchcast.runner.processes import ProcessPool\n"
        "from batchcast.runner.processor import WorkerOptions\n"
        "options = WorkerOptions(inference=InferenceConfig(), join=Join(), max_payload_mb=6.0,"
        " seed=0)\n"
        "pool = ProcessPool(sys.argv[1], options, size=2)\n"
        "print(*(c.process.pid for c in pool._children), flush=True)\n"
        "time.sleep(600)\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script, tiny_model], stdout=subprocess.PIPE, text=True
    )
    try:
        assert parent.stdout is not None
        children = [int(p) for p in parent.stdout.readline().split()]
        assert len(children) == 2
        assert not any(_gone(pid) for pid in children)
        parent.send_signal(signal.SIGKILL)  # no clean-up runs: the children must notice
        parent.wait(timeout=10)
        deadline = time.monotonic() + 10
        while not all(_gone(pid) for pid in children) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert all(_gone(pid) for pid in children)
    finally:
        parent.kill()
