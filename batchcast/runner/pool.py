"""The model-worker pool on Ray: start-up, submission with a bounded load, deaths, shutdown.

Ray Core with our own bookkeeping rather than ``ray.util.ActorPool``: that keeps one call per
actor and frees an actor only when its result is taken in order, so one straggler stalls it
(RAY_NOTES.md). Here each worker holds up to ``IN_FLIGHT_PER_WORKER`` shards and results are
taken in whatever order they finish; the driver puts them back in order.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import ray
from ray.exceptions import ObjectLostError, RayActorError, RayError, WorkerCrashedError

from batchcast.errors import ConfigError, ShardError
from batchcast.forecast.config import ModelSpec
from batchcast.io.shards import Shard
from batchcast.runner.executor import IN_FLIGHT_PER_WORKER, Outcome, Task
from batchcast.runner.job import TransformJob
from batchcast.runner.processor import ShardResult, WorkerOptions, shard_seed
from batchcast.runner.worker import ModelWorker, decode_shard, encode_shard

__all__ = [
    "ACTOR_NAMESPACE",
    "IN_FLIGHT_PER_WORKER",
    "LOST",
    "WorkerPool",
    "cause_of",
    "ensure_ray",
    "outcome_of",
    "pool_size",
    "start_ray_pool",
    "worker_actor_names",
]

# Model workers are named actors in this namespace, ``<job name>.<run id>.worker-<i>``, so a
# job's workers can be found from outside (operations, tests) with ``ray.get_actor``.
ACTOR_NAMESPACE = "batchcast"

# Errors that mean "the process holding the shard went away", not "the shard is bad".
# A task whose argument was lost raises RayTaskError(RayActorError), an instance of both.
LOST = (RayActorError, WorkerCrashedError, ObjectLostError)

_log = logging.getLogger(__name__)


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


class _DropTokenAuthNotice(logging.Filter):
    """Drops Ray's "token authentication is enabled" notice, printed on every local start.

    The notice says what Ray does by default for a local cluster; a batchcast user did not
    choose it and can do nothing about it. Other warnings pass.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "Token authentication is enabled" not in record.getMessage()


@contextlib.contextmanager
def _quiet_token_notice() -> Iterator[None]:
    logger = logging.getLogger("ray._private.authentication.authentication_token_setup")
    notice = _DropTokenAuthNotice()
    logger.addFilter(notice)
    try:
        yield
    finally:
        logger.removeFilter(notice)


def ensure_ray() -> float:
    """Join the cluster in ``RAY_ADDRESS``, else start a private local Ray; the seconds taken.

    ``ray job submit`` sets ``RAY_ADDRESS`` for its entrypoint, so a submitted job joins its
    cluster. Without it we start a local Ray rather than let ``ray.init()`` look for one: it
    would join any ``ray start`` cluster on the machine, or fail on the stale address file a
    killed one leaves behind. ``RAY_ADDRESS=auto`` asks for that lookup explicitly.
    """
    if ray.is_initialized():
        return 0.0
    started = time.perf_counter()
    with _quiet_token_notice():
        ray.init(
            address=os.environ.get("RAY_ADDRESS") or "local",
            logging_level=logging.WARNING,
            log_to_driver=True,
        )
    return time.perf_counter() - started


def pool_size(
    job: TransformJob, available: dict[str, float], total: dict[str, float], *, shards: int
) -> int:
    """Workers to start: what the job asks for, capped at what the cluster holds (a worker
    that can never be placed would make the job wait forever: ``MaxConcurrentTransforms``
    may well exceed the CPUs) and at the number of shards (a worker with no shard only costs
    its start-up)."""
    size = job.resolved_workers(int(available.get("CPU", 1)), int(available.get("GPU", 0)))
    if job.gpus_per_worker > 0:
        cap = int(total.get("GPU", 0) / job.gpus_per_worker)
    elif job.pipeline == "split":
        cap = size  # zero-CPU sampling actors: any number can be placed
    else:
        cap = int(total.get("CPU", 1))
    if size > cap >= 1:
        _log.warning("%d workers asked for, but the cluster holds %d; starting %d", size, cap, cap)
        size = cap
    return max(1, min(size, shards))


def cause_of(err: RayError) -> str:
    """``Type: message`` of the exception behind a Ray error (the error itself if none)."""
    cause = getattr(err, "cause", None)
    if isinstance(cause, BaseException):
        return f"{type(cause).__name__}: {cause}"
    return f"{type(err).__name__}: {err}"


def outcome_of(err: RayError) -> Outcome:
    """A Ray error in the driver's terms: the worker was lost (resubmit) or raised."""
    cause = getattr(err, "cause", None)
    return Outcome(
        lost=isinstance(err, LOST),
        cause=cause if isinstance(cause, BaseException) else None,
        message=cause_of(err),
        died=isinstance(err, RayActorError),
        error=err,
    )


class WorkerPool:
    """Model workers with a bounded number of shards in flight each.

    Args:
        job: the job (model, GPUs per worker, pipeline).
        spec: the model's spec (for the split pipeline's decode tasks).
        options: what every worker needs.
        size: how many workers.
        name: the job's name (the actors are ``<name>.<run>.worker-<i>``).
    """

    def __init__(
        self,
        job: TransformJob,
        spec: ModelSpec,
        options: WorkerOptions,
        *,
        size: int,
        name: str,
    ) -> None:
        self.options = options
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
        self.in_flight: dict[ray.ObjectRef, Task] = {}
        self.load = [0] * size
        self.generation = [0] * size  # deaths counted per worker
        # Workers whose death was counted and whose restart is not yet confirmed: a pid()
        # call sent after the death, answered once Ray has brought the actor back.
        self.restarting: dict[int, ray.ObjectRef] = {}

    @property
    def size(self) -> int:
        return len(self.names)

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
            raise ShardError(f"a model worker could not start: {cause_of(err)}") from err

    def submit(
        self,
        shard: Shard,
        relpath: str,
        *,
        attempt: int = 1,
        avoid: int = -1,
        check_only: bool = False,
    ) -> None:
        """Send ``shard`` to the least-loaded worker.

        Args:
            shard: the shard.
            relpath: its input's relative path (part of its seed).
            attempt: 1 for the first submission, then one more per worker death.
            avoid: a worker just lost (restarting and reloading its model), used only when
                no other exists.
            check_only: validate, do not forecast (a shard of a file that already failed).
        """
        self._check_restarts()
        others = [i for i in range(len(self.actors)) if i != avoid]
        # A restarting worker only when nothing else is left: a call sent before Ray has
        # marked the actor restarting fails with the death already counted.
        choices = [i for i in others if i not in self.restarting] or others or [avoid]
        actor = min(choices, key=self.load.__getitem__)
        handle = self.actors[actor]
        # A shard sent to a worker still restarting belongs to the death already counted:
        # if it is lost, that is the same death again (see died()).
        generation = self.generation[actor] - (actor in self.restarting)
        now = time.monotonic()
        # A worker runs its calls in order: a shard starts now on an idle worker, else when
        # the one before it finishes (wait()).
        task = Task(shard, actor, attempt, generation, now, now if self.load[actor] == 0 else None)
        if self.split and not check_only:  # checking alone is cheap: the actor does it
            # num_returns=2 gives two refs; Ray's stubs type it as one ref of a tuple.
            refs: Any = decode_shard.remote(shard, self.spec_ref, self.options_ref)
            batch, decoded = refs
            seed = shard_seed(self.options.seed, relpath, shard.index, shard.piece)
            sampled = handle.sample.remote(batch, seed)
            ref = encode_shard.remote(shard, decoded, sampled, self.options_ref)
            task.refs = [batch, decoded, sampled, ref]
        else:
            ref = handle.process.remote(shard, relpath, check_only)
            task.refs = [ref]
        self.in_flight[ref] = task
        self.load[actor] += 1

    def wait(self, timeout: float | None = None) -> tuple[Task, ShardResult | Outcome] | None:
        """The next finished shard, with its result or what went wrong.

        Args:
            timeout: seconds to wait at most (None: until one finishes).

        Returns:
            None when nothing finished within ``timeout``.
        """
        ready, _ = ray.wait(list(self.in_flight), num_returns=1, timeout=timeout)
        if not ready:
            return None
        task = self.in_flight.pop(ready[0])
        self.load[task.actor] -= 1
        queued = [t for t in self.in_flight.values() if t.actor == task.actor and t.started is None]
        if queued:  # the next shard of that worker starts now (submission order)
            min(queued, key=lambda t: t.submitted).started = time.monotonic()
        try:
            return task, ray.get(ready[0])
        except RayError as err:
            return task, outcome_of(err)

    def died(self, task: Task) -> bool:
        """Record that ``task``'s actor died; True for the first report of that death.

        A death is reported by every shard the worker held, and also by shards sent to it
        after the first report but before Ray restarted it (the driver's calls can still go
        to the dead process's address). Each task carries the worker's death count when it
        was sent, one less while the worker's restart is unconfirmed, so every report of one
        death finds the count already past it.
        """
        if task.generation != self.generation[task.actor]:
            return False  # the same death, reported by another shard it held
        self.generation[task.actor] += 1
        self.restarting[task.actor] = self.actors[task.actor].pid.remote()
        return True

    def _check_restarts(self) -> None:
        """Forget the restarting mark of every worker that answered its pid() call; a call
        that failed (sent before Ray saw the death) is sent again."""
        if not self.restarting:
            return
        refs = list(self.restarting.values())
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
        for actor, ref in list(self.restarting.items()):
            if ref not in ready:
                continue
            try:
                ray.get(ref)
            except RayError:  # the same death (or a restart in progress): ask again
                self.restarting[actor] = self.actors[actor].pid.remote()
            else:
                del self.restarting[actor]

    def close(self) -> None:
        """Kill the workers (ending their in-flight calls) and cancel every task beside them.

        Never raises: it runs on the way out of a job that may be failing already.
        """
        for actor in self.actors:
            with contextlib.suppress(Exception):
                ray.kill(actor, no_restart=True)
        if self.split:
            # Plain tasks can be cancelled (actor calls cannot be with force: killing the
            # actor ends them); a finished or already-failed task ignores the cancel.
            for task in self.in_flight.values():
                for ref in (task.refs[0], task.refs[3]):  # the decode and encode tasks
                    with contextlib.suppress(Exception):
                        ray.cancel(ref, force=True)
        self.in_flight.clear()
        self.restarting.clear()


def start_ray_pool(
    job: TransformJob,
    spec: ModelSpec,
    options: WorkerOptions,
    *,
    shards: int,
    phase: Callable[[str], None],
) -> tuple[WorkerPool, dict[str, Any], dict[str, float]]:
    """Start Ray (or join the cluster in ``RAY_ADDRESS``) and the job's workers.

    Args:
        job, spec, options: the job, its model's spec, what every worker needs.
        shards: how many shards the job has (no more workers than that).
        phase: told what is starting (the progress line).

    Returns:
        The started pool, the cluster's description for the summary, and the seconds taken
        (``ray_init``, ``workers_ready``).

    Raises:
        ConfigError: GPU workers asked of a cluster without a free GPU.
        ShardError: a worker could not start (nothing is left running).
    """
    phase("starting Ray")
    seconds = {"ray_init": ensure_ray()}
    resources = ray.available_resources()
    if job.gpus_per_worker > 0 and resources.get("GPU", 0) < job.gpus_per_worker:
        raise ConfigError(f"gpus_per_worker={job.gpus_per_worker} but the cluster has no free GPU")
    total = ray.cluster_resources()
    size = pool_size(job, resources, total, shards=shards)
    cluster = {
        "executor": "ray",
        "address": ray.get_runtime_context().gcs_address,
        "nodes": sum(1 for node in ray.nodes() if node.get("Alive")),
        "cpus": total.get("CPU", 0.0),
        "gpus": total.get("GPU", 0.0),
    }
    pool = WorkerPool(job, spec, options, size=size, name=job.name)
    phase(f"starting {size} worker(s)")
    started = time.perf_counter()
    try:
        pool.start()
    except BaseException:
        pool.close()  # what did start must not outlive the job
        raise
    seconds["workers_ready"] = time.perf_counter() - started
    return pool, cluster, seconds
