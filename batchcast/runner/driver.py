"""The driver: plan -> submit with a bounded window -> reassemble in order -> write -> summary.

Input bytes never pass through the driver (each worker reads its own byte range); output
bytes do, once, on their way to the one ordered writer of their file
(:class:`~batchcast.runner.writer.FileWriter`).

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

Memory on the driver is bounded by the window (:mod:`batchcast.runner.window`): shards in
flight and held back per worker, and the output bytes they hold (``max_held_mb``). A shard
too big to process at once comes back as a piece plan
(:mod:`batchcast.runner.processor`): its pieces go out next, as shards of their own, and
their results take its place in order, so no one result outgrows the piece budget. A shard
that runs past the job's deadline (``shard_timeout_s``) fails the job naming its URI.

Ray is started only when there is a shard to process: a ``--resume`` of a finished job, or a
job of empty files, never starts it.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import orjson

from batchcast.errors import BatchcastError, ConfigError, ShardError
from batchcast.forecast.config import ModelSpec
from batchcast.io.lock import Holder, OutputLock
from batchcast.io.output import EncodedLines
from batchcast.io.shards import CorruptInputError, Shard, plan_shards
from batchcast.io.sinks import (
    exists,
    join_uri,
    open_sink,
    output_uri,
    read_bytes,
    remove_stale_temp,
)
from batchcast.io.sources import InputObject, list_inputs
from batchcast.models import check_model_digest
from batchcast.runner.executor import (
    Executor,
    Outcome,
    Task,
    choose_executor,
    start_local_pool,
)
from batchcast.runner.job import TransformJob
from batchcast.runner.processor import ShardResult, WorkerOptions
from batchcast.runner.progress import Progress
from batchcast.runner.reassemble import Reassembler
from batchcast.runner.summary import (
    ERRORS_NAME,
    SUMMARY_NAME,
    ErrorLog,
    JobSummary,
    write_summary,
)
from batchcast.runner.window import HELD_PER_WORKER, Window, shard_deadline_s
from batchcast.runner.writer import FileWriter

__all__ = ["HELD_PER_WORKER", "MAX_ATTEMPTS", "run_transform"]

MAX_ATTEMPTS = 3  # per shard, across worker deaths

_log = logging.getLogger(__name__)


def _default_name() -> str:
    return f"batchcast-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"


@dataclass
class _Plan:
    objects: list[InputObject]
    outputs: list[str]
    todo: list[int]  # file indices to transform (the others are skipped by resume)
    shards: list[Shard]


def _plan(job: TransformJob, lock_uri: str) -> _Plan:
    objects = list_inputs(job.input, data_type=job.data_type, exclude=_own_output(job))
    # An output that is the input folder excludes nothing, but the job's own lock is no input.
    objects = [o for o in objects if o.uri != lock_uri]
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


def _own_output(job: TransformJob) -> str | None:
    """The job's output, to leave out of its inputs: an output folder inside the input folder
    would otherwise be read back (a rerun would forecast the last run's ``.out`` and summary).

    None when the output is the input or holds it: excluding it would exclude every input.
    """
    output, input = job.output.rstrip("/" + os.sep), job.input.rstrip("/" + os.sep)
    if input == output or input.startswith(output + "/") or input.startswith(output + os.sep):
        return None
    return job.output


def run_transform(job: TransformJob, *, progress: bool | None = None) -> JobSummary:
    """Run one batch transform job to completion (see the module docstring).

    Args:
        job: the validated job.
        progress: show a progress bar; None = only when stderr is a terminal.

    Returns:
        The summary, also written as ``_batchcast_summary.json`` beside the outputs. Record
        errors do not raise: they make ``status`` ``"Failed"`` (``fail-file``, ``fail-fast``)
        and are listed in ``errors``.

    Raises:
        ConfigError, ModelError: before any record is read, for a bad job or model;
            ``OutputInUseError`` (a ConfigError) when another job holds the output, or a
            ``--resume`` whose configuration differs from the job that wrote the output.
        ShardError: when a shard cannot be processed (unreadable, a worker raised, a worker
            lost ``MAX_ATTEMPTS`` times); a summary with status ``Failed`` and the reason is
            written first.
    """
    started = time.perf_counter()
    job = job.resolved(name=_default_name())
    # A bad model (its config against its weights' shapes) fails here, before Ray starts.
    spec, model_digest = check_model_digest(job.model)
    configuration = job.configuration(model_digest)
    holder = Holder(job.name, configuration=configuration)
    lock = OutputLock.acquire(job.output, holder, force=job.force)
    try:
        _prepare_output(job, lock)
        return _run_locked(job, spec, lock, started, progress)
    finally:
        lock.release()


def _prepare_output(job: TransformJob, lock: OutputLock) -> None:
    """Refuse a ``--resume`` of another configuration; clear what a dead run left.

    The previous configuration is in the dead run's lock (a killed driver writes no summary)
    or else in the summary of the run that ended.

    Raises:
        ConfigError: the output was written by a job of another configuration.
        OutputError: the previous summary or the stale files cannot be read or removed.
    """
    if job.resume:
        previous = lock.previous.configuration if lock.previous is not None else None
        if previous is None:
            data = read_bytes(join_uri(job.output, SUMMARY_NAME))
            previous = _summary_configuration(data) if data is not None else None
        _check_same_configuration(job, previous, lock.holder.configuration)
    if job.resume or lock.previous is not None:  # a run died here: its temp files are litter
        for path in remove_stale_temp(job.output):
            _log.info("removed %s, left by a run that died", path)


def _summary_configuration(data: bytes) -> dict[str, Any] | None:
    try:
        value = orjson.loads(data).get("configuration")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return value if isinstance(value, dict) else None


def _check_same_configuration(
    job: TransformJob, previous: dict[str, Any] | None, current: dict[str, Any]
) -> None:
    if previous is None or previous == current:
        return  # nothing to compare with (a first run, an older summary), or the same job
    differ = sorted(k for k in {*previous, *current} if previous.get(k) != current.get(k))
    raise ConfigError(
        f"--resume: {job.output} was written by a job with another configuration "
        f"({', '.join(differ)} differ); resume with that job's settings, or rerun without "
        "--resume to start over"
    )


def _run_locked(
    job: TransformJob, spec: ModelSpec, lock: OutputLock, started: float, progress: bool | None
) -> JobSummary:
    plan = _plan(job, lock.uri)
    files = {
        i: FileWriter(plan.objects[i], plan.outputs[i], job.on_error, job.assemble_with)
        for i in plan.todo
    }
    counts = dict.fromkeys(plan.todo, 0)
    for s in plan.shards:
        counts[s.file_index] += 1
    bar = Progress(
        len(plan.todo),
        total_bytes=sum(s.end - s.start for s in plan.shards),
        total_shards=len(plan.shards),
        enabled=progress,
        started=started,
    )
    state = _Run(job, files, Reassembler(counts), bar, _error_log(job), lock)
    failure: BaseException | None = None
    try:
        if plan.shards:  # else (everything resumed, or only empty files) no worker is needed
            _start_pool(job, spec, state, plan.shards)
        state.drive(deque(plan.shards))
    except BaseException as err:
        failure = err
        raise
    finally:
        summary = _finish(job, plan, state, started, failure)
    return summary


def _finish(
    job: TransformJob, plan: _Plan, state: _Run, started: float, failure: BaseException | None
) -> JobSummary:
    """Whatever happened: nothing half-written stays, no actor outlives the job, and the
    summary is written where the output still works. On the way out of a failure no step
    raises (each is logged instead): the user sees the cause, not a clean-up's error."""
    pool = state.pool
    steps = [("abort the unfinished outputs", state.abort_pending)]
    if pool is not None:
        steps.append(("stop the workers", pool.close))
    steps.append(("close the progress line", state.progress.close))
    for what, step in steps:
        _quietly(what, step, failure)
    state.seconds["total"] = time.perf_counter() - started
    summary = _summarize(job, plan, state, pool.size if pool is not None else 0, failure)
    if failure is not None and not isinstance(failure, BatchcastError):
        _quietly("drop the errors file", lambda: state.errors.close(commit=False), failure)
        return summary  # an interrupt or a bug: no half-told story
    if failure is None:
        state.lock.check()  # a job whose output was taken over must not write over its summary
    elif not _still_owned(state.lock):
        return summary
    # A failed job's errors so far are worth as much as the rest: committed, not dropped.
    _quietly("commit the errors file", lambda: state.errors.close(commit=True), failure)
    write_summary(summary, quiet=failure is not None)
    return summary


def _quietly(what: str, step: Callable[[], None], failure: BaseException | None) -> None:
    """Run a clean-up ``step``; while a ``failure`` is on its way out, log its error instead."""
    if failure is None:
        step()
        return
    try:
        step()
    except Exception as err:
        _log.warning("could not %s: %s: %s", what, type(err).__name__, err)


def _still_owned(lock: OutputLock) -> bool:
    try:
        lock.check()
    except BatchcastError as err:
        _log.warning("no summary written: %s", err)
        return False
    return True


def _error_log(job: TransformJob) -> ErrorLog:
    """The job's record errors: listed up to ``max_errors_listed``, all streamed to the
    errors file when the job asks for one (opened now, so an open error comes first)."""
    sink = open_sink(join_uri(job.output, ERRORS_NAME)) if job.errors_file else None
    return ErrorLog(job.max_errors_listed, sink)


def _start_pool(job: TransformJob, spec: ModelSpec, state: _Run, shards: list[Shard]) -> None:
    """Start the workers into ``state``: threads of this process for a small job on one
    machine, else Ray's (started, or joined in ``RAY_ADDRESS``): see
    :mod:`batchcast.runner.executor`."""
    options = WorkerOptions(
        inference=job.inference,
        join=job.join,
        max_payload_mb=job.max_payload_mb,
        seed=job.seed,
        accept=job.accept,
        precision=job.precision,
    )
    executor = choose_executor(
        job.executor,
        gpus_per_worker=job.gpus_per_worker,
        pipeline=job.pipeline,
        input_bytes=sum(s.end - s.start for s in shards),
    )
    pool: Executor
    phase = state.progress.phase
    if executor == "local":
        pool, state.cluster, seconds = start_local_pool(
            job, options, shards=len(shards), phase=phase
        )
    else:
        from batchcast.runner.pool import start_ray_pool  # Ray is imported only for Ray jobs

        pool, state.cluster, seconds = start_ray_pool(
            job, spec, options, shards=len(shards), phase=phase
        )
    state.pool = pool
    state.seconds.update(seconds)
    state.progress.working()


class _Run:
    """The mutable state of one job's main loop."""

    def __init__(
        self,
        job: TransformJob,
        files: dict[int, FileWriter],
        order: Reassembler[ShardResult],
        progress: Progress,
        errors: ErrorLog,
        lock: OutputLock,
    ) -> None:
        self.job, self.files, self.order, self.progress = job, files, order, progress
        self.lock = lock
        self.pool: Executor | None = None
        self.cluster: dict[str, Any] = {}
        self.errors = errors
        self.series = 0
        self.restarts = 0  # worker deaths
        self.retried = 0  # shards resubmitted after a death
        self.checked_only = 0  # shards (or pieces) of failed files: validated, not forecast
        self.pieces = 0  # pieces of shards too big to process at once
        self.stopped = False
        self.first_output: float | None = None
        self.window: Window | None = None
        # Shown by the progress line: counted as shards arrive, not as they are released.
        self.arrived = {"lines": 0, "series": 0, "shards_done": 0, "bytes_done": 0}
        self.files_done = 0
        self.seconds: dict[str, float] = {}

    def drive(self, queue: deque[Shard]) -> None:
        with_shards = {s.file_index for s in queue}
        for i, f in self.files.items():
            if i not in with_shards:
                self._commit(f)  # no shard: nothing to wait for
        pool = self.pool
        if pool is None:
            return
        relpaths = {i: f.obj.relpath for i, f in self.files.items()}
        budget = int(self.job.max_held_mb * 1024 * 1024)
        window = self.window = Window(pool.size, budget, shard_deadline_s(self.job))
        while (queue or pool.in_flight) and not self.stopped:
            while queue and window.may_submit(
                queue[0], pool.in_flight.values(), self.order.buffered
            ):
                shard = queue.popleft()
                failed = self.files[shard.file_index].status == "failed"
                pool.submit(shard, relpaths[shard.file_index], check_only=failed)
            window.submitted(len(pool.in_flight), self.order.buffered)
            done = pool.wait(window.wait_s(pool.in_flight.values(), time.monotonic()))
            if done is None:  # a shard may be past its deadline: that fails the job
                window.check_deadline(pool.in_flight.values())
                continue
            task, outcome = done
            if isinstance(outcome, ShardResult) and outcome.pieces:
                self._split(task.shard, outcome.pieces, queue)
            elif isinstance(outcome, ShardResult):
                self._accept(task.shard, outcome)
            else:
                self._failed(pool, task, outcome, relpaths[task.shard.file_index])
        if not self.stopped:
            self.order.check_complete()

    def _failed(self, pool: Executor, task: Task, outcome: Outcome, relpath: str) -> None:
        shard = task.shard
        where = f"{shard.uri} bytes [{shard.start}, {shard.end})"
        cause, origin = outcome.cause, outcome.error or outcome.cause
        if not outcome.lost:
            # An exception inside the worker: the shard itself is the problem (or a bug).
            if isinstance(cause, CorruptInputError) and self.job.on_error != "fail-fast":
                self._unreadable(shard, cause)
                return
            if isinstance(cause, BatchcastError):
                raise cause from origin
            raise ShardError(f"{where}: a worker raised {outcome.message}") from origin
        if outcome.died and pool.died(task):
            self.restarts += 1
        if task.attempt >= MAX_ATTEMPTS:
            raise ShardError(f"{where}: lost {task.attempt} times: {outcome.message}") from origin
        self.retried += 1
        failed = self.files[shard.file_index].status == "failed"
        pool.submit(shard, relpath, attempt=task.attempt + 1, avoid=task.actor, check_only=failed)

    def _split(self, shard: Shard, ranges: list[tuple[int, int]], queue: deque[Shard]) -> None:
        """A shard too big to process at once: its pieces go out before anything else (they
        are the earliest work in order), and the reorder buffer expects them in its place."""
        pieces = shard.split(ranges)
        self.order.split(shard.file_index, shard.index, len(pieces))
        queue.extendleft(reversed(pieces))
        self.pieces += len(pieces)
        self.progress.total_shards += len(pieces) - 1  # progress counts the pieces instead

    def _accept(self, shard: Shard, result: ShardResult) -> None:
        if self.first_output is None:
            self.first_output = time.perf_counter()
        for key, value in result.seconds.items():
            self.seconds[key] = self.seconds.get(key, 0.0) + value
        arrived = self.arrived
        arrived["lines"] += result.num_lines
        arrived["series"] += result.num_series
        arrived["shards_done"] += 1
        # Validated, not forecast (its file had already failed): lines in, no lines out.
        self.checked_only += result.num_lines > 0 and result.lines.num_lines == 0
        arrived["bytes_done"] += shard.size
        output = self.files[result.file_index]
        assert self.window is not None  # drive() made it before any shard went out
        self.window.arrived(shard, result)
        released = self.order.add(result.file_index, result.shard_index, result, shard.piece)
        for _, shard_result, last in released:
            self.window.released(shard_result)
            errors = output.append(shard_result)
            if output.status == "failed" and errors and output.errors == len(errors):
                self.files_done += 1  # its first error failed it: it is done
            self.errors.add(errors, file_index=result.file_index)
            if output.status != "failed":  # the job's count: forecasts written
                self.series += shard_result.num_series
            if errors and self.job.on_error == "fail-fast":
                self.stopped = True
                return
            if last:
                self._commit(output)
        self.progress.update(
            series=arrived["series"],
            files_done=self.files_done,
            errors=self.errors.total,
            lines=arrived["lines"],
            shards_done=arrived["shards_done"],
            bytes_done=arrived["bytes_done"],
        )

    def _unreadable(self, shard: Shard, cause: CorruptInputError) -> None:
        """Fail the file of a shard whose bytes are damaged, and go on with the others: the
        object itself is bad, so no retry can help and no other file is affected. An empty
        result stands in for the shard so the file's order completes (a corrupt object is
        gzip, one shard; later lines of a split file would be numbered from here)."""
        self.files[shard.file_index].fail(f"{type(cause).__name__}: {cause}")
        empty = ShardResult(shard.file_index, shard.index, EncodedLines.empty(), 0, 0, [])
        self._accept(shard, empty)

    def _commit(self, output: FileWriter) -> None:
        self.lock.check()  # a second job took the output: stop before mixing files with it
        output.commit()
        self.files_done += 1

    def abort_pending(self) -> None:
        """Abort every output not committed yet (a no-op after a clean run)."""
        for f in self.files.values():
            f.abort()


def _summarize(
    job: TransformJob,
    plan: _Plan,
    state: _Run,
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
    seconds = state.seconds
    elapsed = seconds["total"]
    window = state.window
    counts = {
        "files": len(plan.objects),
        "files_committed": sum(f["status"] == "committed" for f in files),
        "files_failed": sum(f["status"] == "failed" for f in files),
        "files_aborted": sum(f["status"] == "aborted" for f in files),
        "files_skipped": len(plan.objects) - len(plan.todo),
        "shards": len(plan.shards),
        "lines": sum(f.lines for f in state.files.values()),
        "series": state.series,
        "record_errors": state.errors.total,
        "workers": workers,
        "worker_restarts": state.restarts,
        "shards_retried": state.retried,
        "shards_checked_only": state.checked_only,
        "shard_pieces": state.pieces,
        "window_shards": window.held_max if window is not None else 0,
        "peak_shards_held": window.peak_shards if window is not None else 0,
        "window_bytes": window.max_held_bytes if window is not None else 0,
        "peak_bytes_held": window.peak_bytes if window is not None else 0,
    }
    started = state.progress.started
    timings: dict[str, float | None] = {
        "total_s": elapsed,
        "ray_init_s": seconds.get("ray_init", 0.0),
        "first_output_s": None if state.first_output is None else state.first_output - started,
        **{f"{k}_s": v for k, v in seconds.items() if k not in ("total", "ray_init")},
        "series_per_s": state.series / elapsed if elapsed > 0 else 0.0,
    }
    file_errors = [{"uri": f["input"], "message": f["error"]} for f in files if "error" in f]
    reason = None
    if failure is not None:
        reason = f"{type(failure).__name__}: {failure}"
    elif state.stopped:
        reason = "fail-fast: stopped at the first record error"
    elif file_errors:
        reason = f"{len(file_errors)} unreadable file(s), first {file_errors[0]['uri']}: " + str(
            file_errors[0]["message"]
        )
    elif failed:
        reason = f"{counts['files_failed']} file(s) with record errors (fail-file)"
    return JobSummary(
        status="Failed" if failed else "Completed",
        files=files,
        errors=state.errors.listed,
        file_errors=file_errors,
        error_counts=state.errors.counts(),
        errors_uri=join_uri(job.output, ERRORS_NAME) if job.errors_file else None,
        counts=counts,
        timings=timings,
        job=job.describe(),
        name=job.name,
        failure_reason=reason,
        cluster=state.cluster,
        summary_uri=join_uri(job.output, SUMMARY_NAME),
        configuration=state.lock.holder.configuration,
    )
