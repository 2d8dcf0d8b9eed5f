"""Where a job's shards run: on Ray (:mod:`batchcast.runner.pool`) or in this process.

The driver talks to either through the same five calls (``submit``, ``wait``, ``died``,
``close``, ``size``), and a finished shard comes back as a :class:`ShardResult` or an
:class:`Outcome` that says what went wrong in words the driver understands without Ray: the
worker was *lost* (its process died: resubmit) or it *raised* (the shard itself is the
problem). This module never imports Ray, so a job that runs locally never pays for it.

**Why a local executor.** On one machine Ray costs a fixed 5-10 s (``ray.init``, worker
processes importing torch, teardown: measured in ``benchmarks/startup.py``), which is most of
a small job. Locally the same :class:`ShardProcessor` runs in processes forked from this one
(:mod:`batchcast.runner.processes`: one core each, a dead child replaced as Ray would) or,
where forking is not safe, in :class:`LocalPool`'s threads: torch and the fused cell release
the GIL for the GEMMs and the cell, and the Python between them costs two threads ~17%.
Output bytes are the same as on Ray, because each shard's randomness derives from (seed,
file, shard) alone (:func:`~batchcast.runner.processor.shard_seed`) and the sampler's bytes
never depend on scheduling. What threads give up is process isolation: a crash ends the job
(``--resume`` continues it).

A thread cannot be killed: a shard past its deadline (a frozen S3 read) fails the job, and
its thread is abandoned, still blocked. The threads are daemons, so the process exits
anyway (``concurrent.futures``' own pool joins its threads at exit, which would make the
job's failure wait for the stuck read); an abandoned thread ends with its read's own timeout.
"""

from __future__ import annotations

import concurrent.futures as cf
import os
import queue
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from batchcast.io.shards import Shard
from batchcast.runner.job import EXECUTORS, TransformJob, available_cpus
from batchcast.runner.processor import ShardProcessor, ShardResult, WorkerOptions

__all__ = [
    "EXECUTORS",
    "IN_FLIGHT_PER_WORKER",
    "LOCAL_MAX_MB",
    "POOL_ENV",
    "Executor",
    "LocalPool",
    "Outcome",
    "Task",
    "choose_executor",
    "local_workers",
    "start_local_pool",
    "use_processes",
]

IN_FLIGHT_PER_WORKER = 2  # one running, one queued: hides the round trip
# Where local workers must be threads (see use_processes), ``auto`` runs a job locally up to
# this much input: Ray's fixed start-up and teardown (5-10 s on 2 cores) is then a large share
# of the job, and past it Ray's process isolation (a crashed worker is restarted, its shards
# rerun) is worth its start-up. At ~400 series/s per core, 64 MB is about a minute of work.
# Local worker processes have that isolation themselves, and no size limit.
LOCAL_MAX_MB = 64.0
POOL_ENV = "BATCHCAST_LOCAL_POOL"


def use_processes() -> bool:
    """Whether a local job's workers are forked processes (else threads of this process).

    ``BATCHCAST_LOCAL_POOL`` (``threads`` or ``processes``) decides when set; otherwise
    processes on Linux while this is the process's only thread: a fork copies only the
    calling thread, and a lock another thread held would stay locked in the child
    (:mod:`batchcast.runner.processes`).
    """
    choice = os.environ.get(POOL_ENV, "").strip().lower()
    if choice in ("threads", "processes"):
        return choice == "processes"
    return sys.platform.startswith("linux") and threading.active_count() == 1


@dataclass
class Task:
    """One shard in flight."""

    shard: Shard
    actor: int  # the worker holding it
    attempt: int
    generation: int  # the worker's restart count when the shard was submitted
    submitted: float  # time.monotonic() at submission
    # time.monotonic() when its worker started it (None while it waits behind another
    # shard): the shard deadline counts from here (runner/window.py).
    started: float | None = None
    refs: list[Any] = field(default_factory=list)  # Ray: every object ref made for it


@dataclass(frozen=True)
class Outcome:
    """A shard that did not produce a result.

    Attributes:
        lost: the worker's process went away (resubmit the shard); else the worker raised.
        cause: the exception behind it, when there is one to re-raise or inspect.
        message: ``Type: message`` of the cause.
        died: ``lost`` and the report of a worker death (not a lost object or task).
        error: the executor's own error (a Ray error), chained as the ``__cause__``.
    """

    lost: bool
    cause: BaseException | None
    message: str
    died: bool = False
    error: BaseException | None = None

    @classmethod
    def raised(cls, err: BaseException) -> Outcome:
        """A local worker's exception: the shard is the problem, not the worker."""
        return cls(lost=False, cause=err, message=f"{type(err).__name__}: {err}")


class Executor(Protocol):
    """What the driver needs of a pool of model workers."""

    # Every submitted task whose outcome wait() has not returned yet, answered or not: the
    # driver's loop ends when this is empty, so a pool must not drop a task before then.
    in_flight: dict[Any, Task]

    @property
    def size(self) -> int: ...

    def submit(
        self,
        shard: Shard,
        relpath: str,
        *,
        attempt: int = 1,
        avoid: int = -1,
        check_only: bool = False,
    ) -> None: ...

    def wait(self, timeout: float | None = None) -> tuple[Task, ShardResult | Outcome] | None: ...

    def died(self, task: Task) -> bool: ...

    def close(self) -> None: ...


def _ray_running() -> bool:
    """A Ray is initialised in this process already (without importing Ray to ask)."""
    ray = sys.modules.get("ray")
    return bool(ray is not None and ray.is_initialized())


def choose_executor(
    executor: str, *, gpus_per_worker: float, pipeline: str, input_bytes: int
) -> str:
    """``"local"`` or ``"ray"`` for a job.

    ``auto`` picks Ray whenever there is a cluster to use (``RAY_ADDRESS`` set, or a Ray
    already initialised in this process), and for GPU workers and the split pipeline;
    otherwise this machine's own worker processes, whatever the input's size (measured at
    100k series: 1,102 series/s against Ray's 1,021, and no 5-10 s start-up). Where the
    local workers would be threads (:func:`use_processes`), inputs over
    :data:`LOCAL_MAX_MB` go to Ray, for its isolation of a crashing worker.
    """
    if executor != "auto":
        return executor
    if os.environ.get("RAY_ADDRESS") or _ray_running():
        return "ray"
    if gpus_per_worker > 0 or pipeline == "split":
        return "ray"
    if use_processes() or input_bytes <= LOCAL_MAX_MB * 1024 * 1024:
        return "local"
    return "ray"


def local_workers(job: TransformJob, *, shards: int) -> int:
    """Threads for a local job: what the job asks for (:meth:`TransformJob.resolved_workers`),
    never more than the CPUs this process may use (a thread per core is the fastest; more
    only contend) nor than the shards."""
    cpus = available_cpus()
    return max(1, min(job.resolved_workers(cpus, 0), cpus, shards))


class _DaemonThreads:
    """A fixed set of daemon threads taking calls from one queue, each answered through a
    ``concurrent.futures.Future`` (so ``cf.wait`` applies). Unlike ``ThreadPoolExecutor``,
    nothing joins them at exit (see the module docstring)."""

    def __init__(self, size: int, *, name: str) -> None:
        self._calls: queue.SimpleQueue[tuple[cf.Future[Any], Any, tuple[Any, ...]] | None]
        self._calls = queue.SimpleQueue()
        self._size = size
        for i in range(size):
            threading.Thread(target=self._serve, name=f"{name}-{i}", daemon=True).start()

    def submit(self, fn: Any, *args: Any) -> cf.Future[Any]:
        future: cf.Future[Any] = cf.Future()
        self._calls.put((future, fn, args))
        return future

    def _serve(self) -> None:
        while (call := self._calls.get()) is not None:
            future, fn, args = call
            if not future.set_running_or_notify_cancel():
                continue  # cancelled while queued
            try:
                future.set_result(fn(*args))
            except BaseException as err:  # handed to the driver through the future
                future.set_exception(err)

    def shutdown(self) -> None:
        """Cancel queued calls and let each thread end after its current one."""
        while True:
            try:
                call = self._calls.get_nowait()
            except queue.Empty:
                break
            if call is not None:
                call[0].cancel()
        for _ in range(self._size):
            self._calls.put(None)


class LocalPool:
    """Model workers as threads of this process, each with its own :class:`ShardProcessor`.

    Args:
        model: the model's URI.
        options: what every worker needs.
        size: how many threads.
    """

    def __init__(self, model: str, options: WorkerOptions, *, size: int) -> None:
        # One torch intra-op thread while the pool lives: each worker thread is a core's
        # worth of work, and intra-op threads on top would contend. Restored by close(), so
        # a library caller's setting survives the job.
        self._torch_threads = torch.get_num_threads()
        torch.set_num_threads(1)
        # One processor per thread: a loaded model is a few MB, and nothing is shared
        # between threads but read-only weights' files.
        self._processors = [ShardProcessor(model, options) for _ in range(size)]
        self._free = list(range(size))
        self._mine = threading.local()
        self._lock = threading.Lock()
        self._threads = _DaemonThreads(size, name="batchcast-worker")
        self.in_flight: dict[Any, Task] = {}

    @property
    def size(self) -> int:
        return len(self._processors)

    def _processor(self) -> ShardProcessor:
        index = getattr(self._mine, "index", None)
        if index is None:
            # OpenMP's thread count is per calling thread: a new thread starts at one per
            # CPU whatever the main thread set, and then every small GEMM forks a team that
            # fights the other workers for the cores (measured: 7.5 ms instead of 0.11 ms
            # for the LSTM's 800 x 40 x 160 GEMM). So each worker thread sets its own.
            torch.set_num_threads(1)
            with self._lock:
                index = self._mine.index = self._free.pop()
        return self._processors[index]

    def _process(self, task: Task, relpath: str, check_only: bool) -> ShardResult:
        task.started = time.monotonic()
        return self._processor().process(task.shard, relpath, check_only=check_only)

    def submit(
        self,
        shard: Shard,
        relpath: str,
        *,
        attempt: int = 1,
        avoid: int = -1,
        check_only: bool = False,
    ) -> None:
        """Queue ``shard``; the first free thread takes it (``avoid`` has no meaning here)."""
        task = Task(shard, 0, attempt, 0, time.monotonic())
        self.in_flight[self._threads.submit(self._process, task, relpath, check_only)] = task

    def wait(self, timeout: float | None = None) -> tuple[Task, ShardResult | Outcome] | None:
        """The next finished shard; None when nothing finished within ``timeout``."""
        done, _ = cf.wait(self.in_flight, timeout=timeout, return_when=cf.FIRST_COMPLETED)
        if not done:
            return None
        future = next(iter(done))
        task = self.in_flight.pop(future)
        err = future.exception()
        if err is None:
            return task, future.result()
        return task, Outcome.raised(err)

    def died(self, task: Task) -> bool:
        """Threads do not die on their own: a crash ends the whole process."""
        return False

    def close(self) -> None:
        """Drop queued shards; a shard being processed finishes in its thread (threads cannot
        be killed: a stuck one is abandoned) and its result is discarded. Never raises."""
        self._threads.shutdown()
        self.in_flight.clear()
        torch.set_num_threads(self._torch_threads)


def start_local_pool(
    job: TransformJob, options: WorkerOptions, *, shards: int, phase: Callable[[str], None]
) -> tuple[Executor, dict[str, Any], dict[str, float]]:
    """The local twin of :func:`batchcast.runner.pool.start_ray_pool`: the pool (forked
    processes where :func:`use_processes` allows, else threads),
    the summary's description of where it ran, and the seconds taken (``workers_ready``)."""
    # Imported here: processes.py builds on this module's Task and Outcome.
    from batchcast.runner.processes import ProcessPool

    size = local_workers(job, shards=shards)
    phase(f"starting {size} worker(s)")
    started = time.perf_counter()
    forked = use_processes()
    pool: Executor = (ProcessPool if forked else LocalPool)(job.model, options, size=size)
    seconds = {"workers_ready": time.perf_counter() - started}
    cluster = {
        "executor": "local",
        "workers": "processes" if forked else "threads",
        "nodes": 1,
        "cpus": float(size),
        "gpus": 0.0,
    }
    return pool, cluster, seconds
