"""Map a function over items as Ray tasks, results in order, a bounded number in flight.

For work that splits into independent, picklable pieces whose results are small (one file's
metric totals, say): ``evaluate --workers N`` scores each pair of files in its own task. The
caller's module stays Ray-free; only this module (and the transform's pool) imports Ray.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import ray

from batchcast.errors import BatchcastError, ShardError
from batchcast.runner.pool import ensure_ray

__all__ = ["map_ordered"]

T = TypeVar("T")
R = TypeVar("R")


@ray.remote(num_cpus=1, max_retries=2)
def _call(fn: Callable[[Any], Any], item: Any) -> Any:
    # A BatchcastError is returned, not raised: Ray would wrap it in a RayTaskError and
    # retrying a bad file would only fail again.
    try:
        return fn(item)
    except BatchcastError as err:
        return err


def map_ordered(fn: Callable[[T], R], items: Iterable[T], *, workers: int) -> Iterator[R]:
    """``fn(item)`` for each item, in Ray tasks, yielded in the items' order.

    At most ``2 * workers`` tasks are in flight (so at most that many results wait in the
    driver), each taking one CPU. Starts a private local Ray unless one is running or
    ``RAY_ADDRESS`` names a cluster (as a transform does).

    Raises:
        BatchcastError: the first error a task raised, as the task raised it.
        ShardError: when a task's worker died past its retries.
    """
    ensure_ray()
    window = max(1, 2 * workers)
    pending: list[ray.ObjectRef] = []
    for item in items:
        pending.append(_call.remote(fn, item))
        if len(pending) >= window:
            yield _result(pending.pop(0))
    while pending:
        yield _result(pending.pop(0))


def _result(ref: ray.ObjectRef) -> Any:
    try:
        value = ray.get(ref)
    except ray.exceptions.RayError as err:
        raise ShardError(f"a task failed: {type(err).__name__}: {err}") from err
    if isinstance(value, BatchcastError):
        raise value
    return value
