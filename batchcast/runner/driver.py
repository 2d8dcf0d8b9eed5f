"""The driver: plan -> submit with a bounded window -> reassemble in order -> sink -> summary.

Input bytes never pass through the driver (each worker reads its own byte range); output
bytes do, once, on their way to the one ordered writer of their file. A shard is the unit of
retry: when a worker dies, its in-flight shards are resubmitted (Ray restarts the actor, which
reloads the model) and the output is the same as if it had not died, because each shard's
randomness derives from (seed, file, shard index) alone.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import orjson
import ray
from ray.exceptions import RayError

from batchcast.errors import ConfigError, RecordError, ShardError
from batchcast.forecast.artifacts import load_model
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

__all__ = ["SUMMARY_NAME", "JobSummary", "run_transform"]

SUMMARY_NAME = "_batchcast_summary.json"
IN_FLIGHT_PER_WORKER = 2  # one running, one queued: hides the round trip, bounds memory
MAX_ATTEMPTS = 3  # per shard, across worker deaths


@dataclass
class JobSummary:
    """What a transform did. ``ok`` is False when any file failed or the job stopped early."""

    status: str
    files: list[dict[str, Any]]
    errors: list[dict[str, Any]]
    counts: dict[str, int]
    timings: dict[str, float]
    job: dict[str, Any]
    summary_uri: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "Completed"

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "counts": self.counts,
            "timings": self.timings,
            "files": self.files,
            "errors": self.errors,
            "job": self.job,
        }


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
        self.series += result.num_series
        self.errors.extend(errors)
        if errors and self.on_error != "record":
            self.abort()  # fail-file and fail-fast: this file gets no .out
        if self.status == "failed":
            return errors
        data = _patch_errors(result.lines, result.errors, errors) if errors else result.lines
        if self.assemble_with == "None":
            data = data.replace(b"\n", b"")  # orjson never writes a raw newline inside a line
        if self.sink is None:
            self.sink = open_sink(self.uri)
        self.sink.write(data)
        return errors

    def commit(self) -> None:
        if self.status == "failed":
            return
        sink = self.sink or open_sink(self.uri)  # an empty input gets an empty .out
        sink.commit()
        self.sink, self.status = None, "committed"

    def abort(self) -> None:
        if self.sink is not None:
            self.sink.abort()
            self.sink = None
        self.status = "failed"

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


class _Pool:
    """Model workers with a bounded number of shards in flight each."""

    def __init__(self, job: TransformJob, spec: ModelSpec, options: WorkerOptions, size: int) -> None:
        self.job, self.spec, self.options = job, spec, options
        self.split = job.gpus_per_worker > 0 or job.pipeline == "split"
        device = "cuda" if job.gpus_per_worker > 0 else "cpu"
        # A GPU actor leaves the CPUs to the decode/encode tasks beside it.
        cpus = 0 if self.split else 1
        self.actors = [
            ModelWorker.options(  # type: ignore[attr-defined]  # ray.remote adds .options
                num_cpus=cpus,
                num_gpus=job.gpus_per_worker,
                max_restarts=-1,
                max_task_retries=0,
            ).remote(job.model, options, device)
            for _ in range(size)
        ]
        self.in_flight: dict[ray.ObjectRef, tuple[Shard, int, int]] = {}  # ref -> shard, actor, attempt
        self.load = [0] * size

    @property
    def capacity(self) -> bool:
        return len(self.in_flight) < len(self.actors) * IN_FLIGHT_PER_WORKER

    def submit(self, shard: Shard, relpath: str, attempt: int = 1) -> None:
        actor = min(range(len(self.actors)), key=self.load.__getitem__)
        handle = self.actors[actor]
        if self.split:
            decoded = decode_shard.remote(shard, self.spec, self.options)
            sampled = handle.sample.remote(decoded, shard_seed(self.options.seed, relpath, shard.index))
            ref = encode_shard.remote(shard, decoded, sampled, self.options)
        else:
            ref = handle.process.remote(shard, relpath)
        self.in_flight[ref] = (shard, actor, attempt)
        self.load[actor] += 1

    def wait(self) -> tuple[Shard, int, ShardResult | RayError]:
        """The next finished shard, with its result or the error that lost it."""
        [ref], _ = ray.wait(list(self.in_flight), num_returns=1)
        shard, actor, attempt = self.in_flight.pop(ref)
        self.load[actor] -= 1
        try:
            return shard, attempt, ray.get(ref)
        except RayError as err:
            return shard, attempt, err

    def close(self) -> None:
        for ref in self.in_flight:
            ray.cancel(ref, force=True)
        for actor in self.actors:
            ray.kill(actor)


# ---------------------------------------------------------------------------------------------
# The job


def _ensure_ray() -> float:
    """Join the cluster in ``RAY_ADDRESS`` (or the ``ray job submit`` one), else start a local Ray."""
    if ray.is_initialized():
        return 0.0
    started = time.perf_counter()
    ray.init(
        address=os.environ.get("RAY_ADDRESS") or None,
        logging_level=logging.WARNING,
        log_to_driver=True,
    )
    return time.perf_counter() - started


def _plan(job: TransformJob) -> tuple[list[InputObject], list[str], list[int], list[Shard]]:
    objects = list_inputs(job.input, data_type=job.data_type)
    outputs = [output_uri(job.output, obj) for obj in objects]
    todo = [i for i, out in enumerate(outputs) if not (job.resume and exists(out))]
    wanted = set(todo)
    shards = [
        s for s in plan_shards(objects, target_bytes=int(job.shard_mb * 1024 * 1024)) if s.file_index in wanted
    ]
    return objects, outputs, todo, shards


def run_transform(job: TransformJob, *, progress: bool | None = None) -> JobSummary:
    """Run one batch transform job to completion (see the module docstring).

    Args:
        job: the validated job.
        progress: show a progress bar; None = only when stderr is a terminal.

    Returns:
        The summary, also written as ``_batchcast_summary.json`` beside the outputs.

    Raises:
        ConfigError, ModelError: before any record is read, for a bad job or model.
        ShardError: when a shard cannot be processed (I/O, a worker lost ``MAX_ATTEMPTS`` times).
    """
    started = time.perf_counter()
    spec = load_model(job.model).spec  # fail fast on a bad model, before starting workers
    objects, outputs, todo, shards = _plan(job)
    ray_init = _ensure_ray()
    resources = ray.available_resources()
    size = job.resolved_workers(int(resources.get("CPU", 1)), int(resources.get("GPU", 0)))
    if job.gpus_per_worker > 0 and resources.get("GPU", 0) < job.gpus_per_worker:
        raise ConfigError(f"gpus_per_worker={job.gpus_per_worker} but the cluster has no free GPU")
    options = WorkerOptions(job.inference, job.join, job.max_payload_mb, job.seed)
    files = {
        i: _FileOutput(objects[i], outputs[i], job.on_error, job.assemble_with) for i in todo
    }
    counts = {i: 0 for i in todo}
    for s in shards:
        counts[s.file_index] += 1
    state = _Run(job, files, Reassembler(counts), Progress(len(todo), enabled=progress))
    pool = _Pool(job, spec, options, size)
    try:
        state.drive(pool, deque(shards))
    finally:
        pool.close()
        state.progress.close()
    timings = {
        "total_s": time.perf_counter() - started,
        "ray_init_s": ray_init,
        "first_output_s": state.first_output - started if state.first_output else 0.0,
        **{f"{k}_s": v for k, v in state.seconds.items()},
    }
    return _summarize(job, objects, outputs, todo, state, timings, size)


class _Run:
    """The mutable state of one job's main loop."""

    def __init__(
        self, job: TransformJob, files: dict[int, _FileOutput], order: Reassembler[ShardResult], progress: Progress
    ) -> None:
        self.job, self.files, self.order, self.progress = job, files, order, progress
        self.errors: list[RecordError] = []
        self.series = 0
        self.restarts = 0
        self.stopped = False
        self.first_output = 0.0
        self.seconds: dict[str, float] = {}

    def drive(self, pool: _Pool, queue: deque[Shard]) -> None:
        relpaths = {i: f.obj.relpath for i, f in self.files.items()}
        for i, f in self.files.items():
            if not any(True for s in queue if s.file_index == i):
                f.commit()  # no shard: nothing to wait for
        while (queue or pool.in_flight) and not self.stopped:
            while queue and pool.capacity:
                shard = queue.popleft()
                pool.submit(shard, relpaths[shard.file_index])
            shard, attempt, outcome = pool.wait()
            if isinstance(outcome, RayError):
                self._retry(pool, shard, attempt, outcome, relpaths[shard.file_index])
                continue
            self._accept(outcome)
        if self.stopped:
            for f in self.files.values():
                if f.status == "pending":
                    f.abort()

    def _retry(self, pool: _Pool, shard: Shard, attempt: int, err: RayError, relpath: str) -> None:
        if attempt >= MAX_ATTEMPTS:
            for f in self.files.values():
                f.abort()
            raise ShardError(f"{shard.uri} bytes {shard.start}-{shard.end}: failed {attempt} times: {err}") from err
        self.restarts += 1
        pool.submit(shard, relpath, attempt + 1)

    def _accept(self, result: ShardResult) -> None:
        if not self.first_output:
            self.first_output = time.perf_counter()
        for key, value in result.seconds.items():
            self.seconds[key] = self.seconds.get(key, 0.0) + value
        output = self.files[result.file_index]
        for _, shard_result, last in self.order.add(result.file_index, result.shard_index, result):
            errors = output.append(shard_result)
            self.errors.extend(errors)
            self.series += shard_result.num_series
            if errors and self.job.on_error == "fail-fast":
                self.stopped = True
                return
            if last:
                output.commit()
        done = sum(f.status != "pending" for f in self.files.values())
        self.progress.update(series=self.series, files_done=done, errors=len(self.errors))


def _summarize(
    job: TransformJob,
    objects: list[InputObject],
    outputs: list[str],
    todo: list[int],
    state: _Run,
    timings: dict[str, float],
    workers: int,
) -> JobSummary:
    files = []
    for i, obj in enumerate(objects):
        if i in state.files:
            files.append(state.files[i].describe())
        else:
            files.append({"input": obj.uri, "output": outputs[i], "status": "skipped (resume)"})
    failed = any(f["status"] == "failed" for f in files) or state.stopped
    elapsed = timings["total_s"]
    counts = {
        "files": len(objects),
        "files_committed": sum(f["status"] == "committed" for f in files),
        "files_failed": sum(f["status"] == "failed" for f in files),
        "files_skipped": len(objects) - len(todo),
        "lines": sum(f.lines_before for f in state.files.values()),
        "series": state.series,
        "record_errors": len(state.errors),
        "workers": workers,
        "worker_restarts": state.restarts,
    }
    timings["series_per_s"] = state.series / elapsed if elapsed > 0 else 0.0
    summary = JobSummary(
        status="Failed" if failed else "Completed",
        files=files,
        errors=[e.to_dict() for e in state.errors],
        counts=counts,
        timings=timings,
        job=job.describe(),
    )
    summary.summary_uri = join_uri(job.output, SUMMARY_NAME)
    write_bytes_atomic(summary.summary_uri, orjson.dumps(summary.to_dict(), option=orjson.OPT_INDENT_2))
    return summary
