"""The driver: plan -> submit with a bounded window -> reassemble in order -> sink -> summary.

Input bytes never pass through the driver (each worker reads its own byte range); output
bytes do, once, on their way to the one ordered writer of their file.

A shard is the unit of retry. When a worker dies (its process is killed, a node goes away),
every shard it held comes back as a lost-worker error; Ray restarts the actor (which reloads
the model) and the driver resubmits those shards. The output is the same as if it had not
died, because each shard's randomness derives from (seed, file, shard index) alone. An
exception raised *inside* a worker is not a death: it is not retried, and the job fails with
it (a ``ShardError`` for an unreadable shard).

Whatever way the job ends (completed, failed, stopped by ``fail-fast``, an exception, Ctrl-C),
every output still being written is aborted (no partial ``.out``, no pending multipart
upload) and every actor is killed: on a small machine a leaked actor holds a CPU and the next
job waits for it forever.

Memory on the driver is bounded by the window: at most ``IN_FLIGHT_PER_WORKER`` shards in
flight per worker, and at most ``HELD_PER_WORKER`` per worker in flight or finished but held
back by the reorder buffer (a straggler cannot make the buffer grow with the input).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import uuid
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any

import orjson
import ray
from ray.exceptions import (
    ObjectLostError,
    RayActorError,
    RayError,
    WorkerCrashedError,
)

from batchcast.errors import BatchcastError, ConfigError, RecordError, ShardError
from batchcast.forecast.artifacts import load_spec
from batchcast.forecast.config import ModelSpec
from batchcast.io.jsonl import encode_error
from batchcast.io.records import renumber
from batchcast.io.shards import Shard, plan_shards
from batchcast.io.sinks import Sink, exists, join_uri, open_sink, output_uri, write_bytes_atomic
from batchcast.io.sources import InputObject, list_inputs
from batchcast.runner.job import TransformJob
from batchcast.runner.progress import Progress
from batchcast.runner.reassemble import Reassembler
from batchcast.runner.worker import (
    ModelWorker,
    ShardResult,
    WorkerOptions,
    decode_shard,
    encode_shard,
    shard_seed,
)

__all__ = [
    "ACTOR_NAMESPACE",
    "HELD_PER_WORKER",
    "IN_FLIGHT_PER_WORKER",
    "MAX_ATTEMPTS",
    "SUMMARY_NAME",
    "JobSummary",
    "run_transform",
    "worker_actor_names",
]

SUMMARY_NAME = "_batchcast_summary.json"
IN_FLIGHT_PER_WORKER = 2  # one running, one queued: hides the round trip
# In flight plus held in the reorder buffer, per worker: room for a straggler to be overtaken
# a few times (RAY_NOTES: a strict in-order window pays a straggler in full), still bounded.
HELD_PER_WORKER = 8
MAX_ATTEMPTS = 3  # per shard, across worker deaths
# Model workers are named actors in this namespace, ``<job name>.<run id>.worker-<i>``, so a
# job's workers can be found from outside (operations, tests) with ``ray.get_actor``.
ACTOR_NAMESPACE = "batchcast"

# Errors that mean "the process holding the shard went away", not "the shard is bad".
# A task whose argument was lost raises RayTaskError(RayActorError), an instance of both.
_LOST = (RayActorError, WorkerCrashedError, ObjectLostError)


@dataclass
class JobSummary:
    """What a transform did. ``ok`` is False when any file failed or the job stopped early."""

    status: str
    files: list[dict[str, Any]]
    errors: list[dict[str, Any]]
    counts: dict[str, int]
    timings: dict[str, float]
    job: dict[str, Any]
    name: str = ""
    failure_reason: str | None = None
    cluster: dict[str, Any] = field(default_factory=dict)
    summary_uri: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "Completed"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "failure_reason": self.failure_reason,
            "counts": self.counts,
            "timings": self.timings,
            "files": self.files,
            "errors": self.errors,
            "job": self.job,
            "cluster": self.cluster,
        }


def worker_actor_names(job_name: str) -> list[str]:
    """Names of the live model-worker actors of the job ``job_name`` (in ``ACTOR_NAMESPACE``).

    Get a handle with ``ray.get_actor(name, namespace=ACTOR_NAMESPACE)``; each has a ``pid()``
    method.
    """
    prefix = f"{job_name}."
    return sorted(
        a["name"]
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a["namespace"] == ACTOR_NAMESPACE and a["name"].startswith(prefix)
    )


# ---------------------------------------------------------------------------------------------
# One output file


@dataclass
class _FileOutput:
    """The ordered writer of one input file's ``.out``; knows the absolute line numbers."""

    obj: InputObject
    uri: str
    on_error: str
    assemble_with: str
    lines_before: int = 0
    series: int = 0
    errors: list[RecordError] = field(default_factory=list)
    sink: Sink | None = None
    status: str = "pending"

    def append(self, result: ShardResult) -> list[RecordError]:
        """Write one shard's lines (already in order); return its errors, renumbered."""
        errors = renumber(result.errors, self.lines_before)
        self.lines_before += result.num_lines
        self.series += result.num_series  # valid records, whether or not they get written
        self.errors.extend(errors)
        if errors and self.on_error != "record":
            self.abort()  # fail-file and fail-fast: this file gets no .out
        if self.status != "pending":
            return errors  # a failed file: keep counting lines and collecting its errors
        data = _patch_errors(result.lines, result.errors, errors) if errors else result.lines
        if self.assemble_with == "None":
            data = data.replace(b"\n", b"")  # orjson never writes a raw newline inside a line
        if self.sink is None:
            self.sink = open_sink(self.uri)
        self.sink.write(data)
        return errors

    def commit(self) -> None:
        if self.status != "pending":
            return
        sink = self.sink or open_sink(self.uri)  # an empty input gets an empty .out
        self.sink = None
        sink.commit()
        self.status = "committed"

    def abort(self) -> None:
        """Drop what was written (no object appears); a no-op once committed.

        The file's status becomes ``failed`` if it has record errors, else ``aborted``
        (the job stopped before it was done).
        """
        if self.status != "pending":
            return
        self.status = "failed" if self.errors else "aborted"
        if self.sink is not None:
            sink, self.sink = self.sink, None
            sink.abort()

    def describe(self) -> dict[str, Any]:
        return {
            "input": self.obj.uri,
            "output": self.uri if self.status == "committed" else None,
            "status": self.status,
            "lines": self.lines_before,
            "series": self.series,
            "errors": len(self.errors),
        }


def _patch_errors(blob: bytes, local: list[RecordError], absolute: list[RecordError]) -> bytes:
    """Rewrite the error lines of a shard's output with absolute line numbers (record mode)."""
    lines = blob.split(b"\n")
    for old, new in zip(local, absolute, strict=True):
        lines[old.line - 1] = encode_error(new)
    return b"\n".join(lines)


# ---------------------------------------------------------------------------------------------
# The worker pool


@dataclass
class _Task:
    shard: Shard
    actor: int
    attempt: int
    generation: int  # the actor's restart count when the shard was submitted
    refs: list[ray.ObjectRef] = field(default_factory=list)  # every ref made for it


class _Pool:
    """Model workers with a bounded number of shards in flight each."""

    def __init__(
        self, job: TransformJob, spec: ModelSpec, options: WorkerOptions, size: int, name: str
    ) -> None:
        self.spec, self.options = spec, options
        # Put once: every split-pipeline task reads them from the object store.
        self.spec_ref, self.options_ref = ray.put(spec), ray.put(options)
        self.split = job.gpus_per_worker > 0 or job.pipeline == "split"
        device = "cuda" if job.gpus_per_worker > 0 else "cpu"
        # A split-pipeline actor leaves the CPUs to the decode/encode tasks beside it.
        cpus = 0 if self.split else 1
        run = uuid.uuid4().hex[:8]
        self.names = [f"{name}.{run}.worker-{i}" for i in range(size)]
        self.actor_options = {
            "namespace": ACTOR_NAMESPACE,
            "num_cpus": cpus,
            "num_gpus": job.gpus_per_worker,
            "max_restarts": -1,  # a dead worker comes back (and reloads the model) ...
            "max_task_retries": 0,  # ... and the driver resubmits the shards it held
        }
        self.actor_args = (job.model, options, device)
        self.actors: list[Any] = []
        self.in_flight: dict[ray.ObjectRef, _Task] = {}
        self.load = [0] * size
        self.generation = [0] * size

    def start(self) -> None:
        """Start the workers and wait until every one has loaded the model.

        Raises:
            ShardError: when a worker cannot start (its constructor raised).
        """
        for actor_name in self.names:
            self.actors.append(
                ModelWorker.options(  # type: ignore[attr-defined]  # ray.remote adds .options
                    name=actor_name, **self.actor_options
                ).remote(*self.actor_args)
            )
        try:
            ray.get([actor.pid.remote() for actor in self.actors])
        except RayError as err:
            raise ShardError(f"a model worker could not start: {_cause(err)}") from err

    def submit(
        self,
        shard: Shard,
        relpath: str,
        *,
        attempt: int = 1,
        avoid: int = -1,
        check_only: bool = False,
    ) -> None:
        """Send ``shard`` to the least-loaded worker (not ``avoid``, one just lost, if another
        exists: it is restarting and reloading its model). ``check_only``: validate, do not
        forecast (a shard of a file that already failed)."""
        choices = [i for i in range(len(self.actors)) if i != avoid] or [avoid]
        actor = min(choices, key=self.load.__getitem__)
        handle = self.actors[actor]
        task = _Task(shard, actor, attempt, self.generation[actor])
        if self.split and not check_only:  # checking alone is cheap: the actor does it
            # num_returns=2 gives two refs; Ray's stubs type it as one ref of a tuple.
            refs: Any = decode_shard.remote(shard, self.spec_ref, self.options_ref)
            batch, decoded = refs
            seed = shard_seed(self.options.seed, relpath, shard.index)
            sampled = handle.sample.remote(batch, seed)
            ref = encode_shard.remote(shard, decoded, sampled, self.options_ref)
            task.refs = [batch, decoded, sampled, ref]
        else:
            ref = handle.process.remote(shard, relpath, check_only)
            task.refs = [ref]
        self.in_flight[ref] = task
        self.load[actor] += 1

    def wait(self) -> tuple[_Task, ShardResult | RayError]:
        """The next finished shard, with its result or the error that lost it."""
        [ref], _ = ray.wait(list(self.in_flight), num_returns=1)
        task = self.in_flight.pop(ref)
        self.load[task.actor] -= 1
        try:
            return task, ray.get(ref)
        except RayError as err:
            return task, err

    def died(self, task: _Task) -> bool:
        """Record that ``task``'s actor died; True for the first report of that death."""
        if task.generation != self.generation[task.actor]:
            return False  # the same death, reported by another shard it held
        self.generation[task.actor] += 1
        return True

    def close(self) -> None:
        """Kill the workers (ending their in-flight calls) and cancel every task beside them."""
        for actor in self.actors:
            with contextlib.suppress(RayError):
                ray.kill(actor, no_restart=True)
        if self.split:
            # Plain tasks can be cancelled (actor calls cannot be with force: killing the
            # actor ends them); a finished or already-failed task ignores the cancel.
            for task in self.in_flight.values():
                for ref in (task.refs[0], task.refs[2]):
                    with contextlib.suppress(RayError, ValueError):
                        ray.cancel(ref, force=True)
        self.in_flight.clear()


def _cause(err: RayError) -> str:
    cause = getattr(err, "cause", None)
    if isinstance(cause, BaseException):
        return f"{type(cause).__name__}: {cause}"
    return f"{type(err).__name__}: {err}"


# ---------------------------------------------------------------------------------------------
# The job


def _ensure_ray() -> float:
    """Join the cluster in ``RAY_ADDRESS``, else start a private local Ray; the seconds taken.

    ``ray job submit`` sets ``RAY_ADDRESS`` for its entrypoint, so a submitted job joins its
    cluster. Without it we start a local Ray rather than let ``ray.init()`` look for one: it
    would join any ``ray start`` cluster on the machine, or fail on the stale address file a
    killed one leaves behind. ``RAY_ADDRESS=auto`` asks for that lookup explicitly.
    """
    if ray.is_initialized():
        return 0.0
    started = time.perf_counter()
    ray.init(
        address=os.environ.get("RAY_ADDRESS") or "local",
        logging_level=logging.WARNING,
        log_to_driver=True,
    )
    return time.perf_counter() - started


def _pool_size(job: TransformJob, available: dict[str, float], total: dict[str, float]) -> int:
    """Workers to start, capped at what the cluster holds: a worker that can never be placed
    would make the job wait forever (``MaxConcurrentTransforms`` may well exceed the CPUs)."""
    size = job.resolved_workers(int(available.get("CPU", 1)), int(available.get("GPU", 0)))
    if job.gpus_per_worker > 0:
        cap = int(total.get("GPU", 0) / job.gpus_per_worker)
    elif job.pipeline == "split":
        cap = size  # zero-CPU sampling actors: any number can be placed
    else:
        cap = int(total.get("CPU", 1))
    if size > cap >= 1:
        logging.getLogger(__name__).warning(
            "%d workers asked for, but the cluster holds %d; starting %d", size, cap, cap
        )
        return cap
    return size


def _default_name() -> str:
    return f"batchcast-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"


@dataclass
class _Plan:
    objects: list[InputObject]
    outputs: list[str]
    todo: list[int]  # file indices to transform (the others are skipped by resume)
    shards: list[Shard]


def _plan(job: TransformJob) -> _Plan:
    objects = list_inputs(job.input, data_type=job.data_type)
    if job.compression == "Gzip":
        # SageMaker decompresses every object when CompressionType is Gzip, whatever its
        # name; with None, a ".gz" name still reads transparently (SPEC.md §4).
        objects = [replace(o, compressed=True) for o in objects]
    outputs = [output_uri(job.output, obj) for obj in objects]
    todo = [i for i, out in enumerate(outputs) if not (job.resume and exists(out))]
    wanted = set(todo)
    target = max(1, int(job.shard_mb * 1024 * 1024))
    shards = [s for s in plan_shards(objects, target_bytes=target) if s.file_index in wanted]
    return _Plan(objects, outputs, todo, shards)


def run_transform(job: TransformJob, *, progress: bool | None = None) -> JobSummary:
    """Run one batch transform job to completion (see the module docstring).

    Args:
        job: the validated job.
        progress: show a progress bar; None = only when stderr is a terminal.

    Returns:
        The summary, also written as ``_batchcast_summary.json`` beside the outputs. Record
        errors do not raise: they make ``status`` ``"Failed"`` (``fail-file``, ``fail-fast``)
        and are all listed in ``errors``.

    Raises:
        ConfigError, ModelError: before any record is read, for a bad job or model.
        ShardError: when a shard cannot be processed (unreadable, a worker raised, a worker
            lost ``MAX_ATTEMPTS`` times); a summary with status ``Failed`` and the reason is
            written first.
    """
    started = time.perf_counter()
    name = job.name or _default_name()
    spec = load_spec(job.model)  # fail fast on a bad model, before starting workers
    plan = _plan(job)
    ray_init = _ensure_ray()
    resources = ray.available_resources()
    if job.gpus_per_worker > 0 and resources.get("GPU", 0) < job.gpus_per_worker:
        raise ConfigError(f"gpus_per_worker={job.gpus_per_worker} but the cluster has no free GPU")
    total = ray.cluster_resources()
    size = _pool_size(job, resources, total)
    cluster = {
        "address": ray.get_runtime_context().gcs_address,
        "nodes": sum(1 for node in ray.nodes() if node.get("Alive")),
        "cpus": total.get("CPU", 0.0),
        "gpus": total.get("GPU", 0.0),
    }
    options = WorkerOptions(job.inference, job.join, job.max_payload_mb, job.seed)
    files = {
        i: _FileOutput(plan.objects[i], plan.outputs[i], job.on_error, job.assemble_with)
        for i in plan.todo
    }
    counts = dict.fromkeys(plan.todo, 0)
    for s in plan.shards:
        counts[s.file_index] += 1
    state = _Run(job, files, Reassembler(counts), Progress(len(plan.todo), enabled=progress))
    failure: BaseException | None = None
    pool: _Pool | None = None
    try:
        pool = _Pool(job, spec, options, size, name)
        if plan.shards:  # else (everything resumed, or only empty files) no worker is needed
            t0 = time.perf_counter()
            pool.start()
            state.seconds["workers_ready"] = time.perf_counter() - t0
        state.drive(pool, deque(plan.shards))
    except BaseException as err:
        failure = err
        raise
    finally:
        # Whatever happened: nothing half-written stays, no actor outlives the job.
        state.abort_pending()
        if pool is not None:
            pool.close()
        state.progress.close()
        timings = {
            "total_s": time.perf_counter() - started,
            "ray_init_s": ray_init,
            "first_output_s": state.first_output - started if state.first_output else 0.0,
            **{f"{k}_s": v for k, v in state.seconds.items()},
        }
        summary = _summarize(job, name, plan, state, timings, size, failure)
        summary.cluster = cluster
        if failure is None or isinstance(failure, BatchcastError):
            _write_summary(summary, job, quiet=failure is not None)
    return summary


class _Run:
    """The mutable state of one job's main loop."""

    def __init__(
        self,
        job: TransformJob,
        files: dict[int, _FileOutput],
        order: Reassembler[ShardResult],
        progress: Progress,
    ) -> None:
        self.job, self.files, self.order, self.progress = job, files, order, progress
        self.errors: list[RecordError] = []
        self.series = 0
        self.restarts = 0  # worker deaths
        self.retried = 0  # shards resubmitted after a death
        self.checked_only = 0  # shards of already-failed files: validated, not forecast
        self.stopped = False
        self.first_output = 0.0
        self.peak_held = 0
        self.window = 0
        self.seconds: dict[str, float] = {}

    def drive(self, pool: _Pool, queue: deque[Shard]) -> None:
        relpaths = {i: f.obj.relpath for i, f in self.files.items()}
        with_shards = {s.file_index for s in queue}
        for i, f in self.files.items():
            if i not in with_shards:
                f.commit()  # no shard: nothing to wait for
        in_flight_max = len(pool.actors) * IN_FLIGHT_PER_WORKER
        self.window = len(pool.actors) * HELD_PER_WORKER
        while (queue or pool.in_flight) and not self.stopped:
            while (
                queue
                and len(pool.in_flight) < in_flight_max
                and len(pool.in_flight) + self.order.buffered < self.window
            ):
                shard = queue.popleft()
                failed = self.files[shard.file_index].status == "failed"
                self.checked_only += failed
                pool.submit(shard, relpaths[shard.file_index], check_only=failed)
            self.peak_held = max(self.peak_held, len(pool.in_flight) + self.order.buffered)
            task, outcome = pool.wait()
            if isinstance(outcome, RayError):
                self._lost(pool, task, outcome, relpaths[task.shard.file_index])
                continue
            self._accept(outcome)
        if not self.stopped:
            self.order.check_complete()

    def _lost(self, pool: _Pool, task: _Task, err: RayError, relpath: str) -> None:
        shard = task.shard
        where = f"{shard.uri} bytes [{shard.start}, {shard.end})"
        if not isinstance(err, _LOST):
            # An exception inside the worker: the shard itself is the problem (or a bug).
            cause = getattr(err, "cause", None)
            if isinstance(cause, BatchcastError):
                raise cause from err
            raise ShardError(f"{where}: a worker raised {_cause(err)}") from err
        if isinstance(err, RayActorError) and pool.died(task):
            self.restarts += 1
        if task.attempt >= MAX_ATTEMPTS:
            raise ShardError(f"{where}: lost {task.attempt} times: {_cause(err)}") from err
        self.retried += 1
        failed = self.files[shard.file_index].status == "failed"
        pool.submit(shard, relpath, attempt=task.attempt + 1, avoid=task.actor, check_only=failed)

    def _accept(self, result: ShardResult) -> None:
        if not self.first_output:
            self.first_output = time.perf_counter()
        for key, value in result.seconds.items():
            self.seconds[key] = self.seconds.get(key, 0.0) + value
        output = self.files[result.file_index]
        for _, shard_result, last in self.order.add(result.file_index, result.shard_index, result):
            errors = output.append(shard_result)
            self.errors.extend(errors)
            if output.status != "failed":  # the job's count: forecasts written
                self.series += shard_result.num_series
            if errors and self.job.on_error == "fail-fast":
                self.stopped = True
                return
            if last:
                output.commit()
        if self.progress.enabled:  # counting files is O(files): only for the display
            done = sum(f.status != "pending" for f in self.files.values())
            self.progress.update(series=self.series, files_done=done, errors=len(self.errors))

    def abort_pending(self) -> None:
        """Abort every output not committed yet (a no-op after a clean run)."""
        for f in self.files.values():
            f.abort()


def _summarize(
    job: TransformJob,
    name: str,
    plan: _Plan,
    state: _Run,
    timings: dict[str, float],
    workers: int,
    failure: BaseException | None,
) -> JobSummary:
    files = []
    for i, obj in enumerate(plan.objects):
        if i in state.files:
            files.append(state.files[i].describe())
        else:
            files.append({"input": obj.uri, "output": plan.outputs[i], "status": "skipped"})
    failed = (
        failure is not None
        or state.stopped
        or any(f["status"] not in ("committed", "skipped") for f in files)
    )
    elapsed = timings["total_s"]
    counts = {
        "files": len(plan.objects),
        "files_committed": sum(f["status"] == "committed" for f in files),
        "files_failed": sum(f["status"] == "failed" for f in files),
        "files_aborted": sum(f["status"] == "aborted" for f in files),
        "files_skipped": len(plan.objects) - len(plan.todo),
        "shards": len(plan.shards),
        "lines": sum(f.lines_before for f in state.files.values()),
        "series": state.series,
        "record_errors": len(state.errors),
        "workers": workers,
        "worker_restarts": state.restarts,
        "shards_retried": state.retried,
        "shards_checked_only": state.checked_only,
        "window_shards": state.window,
        "peak_shards_held": state.peak_held,
    }
    timings["series_per_s"] = state.series / elapsed if elapsed > 0 else 0.0
    reason = None
    if failure is not None:
        reason = f"{type(failure).__name__}: {failure}"
    elif state.stopped:
        reason = "fail-fast: stopped at the first record error"
    elif failed:
        reason = f"{counts['files_failed']} file(s) with record errors (fail-file)"
    return JobSummary(
        status="Failed" if failed else "Completed",
        files=files,
        errors=[e.to_dict() for e in state.errors],
        counts=counts,
        timings=timings,
        job=job.describe(),
        name=name,
        failure_reason=reason,
        summary_uri=join_uri(job.output, SUMMARY_NAME),
    )


def _write_summary(summary: JobSummary, job: TransformJob, *, quiet: bool) -> None:
    assert summary.summary_uri is not None  # set by _summarize
    data = orjson.dumps(summary.to_dict(), option=orjson.OPT_INDENT_2)
    if not quiet:
        write_bytes_atomic(summary.summary_uri, data)
        return
    # On the way out of a failed job: the job's own error matters more than this one.
    try:
        write_bytes_atomic(summary.summary_uri, data)
    except Exception as err:
        logging.getLogger(__name__).warning("cannot write %s: %s", summary.summary_uri, err)
