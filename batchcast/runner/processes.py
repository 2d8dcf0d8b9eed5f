"""Local model workers as forked processes: one core each, no Ray.

**Why processes.** Two worker threads of one process lose ~17% to each other on 2 cores
(measured in ``benchmarks/RESULTS.md``: 751 series/s for one process with two threads, 905
for two processes with one each): torch and the fused cell release the GIL, but decoding,
windows and the draws' bookkeeping are Python that holds it. A process per core loses
nothing to its neighbour.

**Why fork, and when it is safe.** A forked child shares the parent's loaded model and
imported torch: it is ready in milliseconds, where a spawned one would import torch again
(~1 s). Forking is what torch's own ``DataLoader`` does. Two hazards, both avoided:

* *OpenMP after fork.* GNU OpenMP's thread team does not survive a fork, and a child that
  enters a parallel region with more than one thread can hang. A child runs with one torch
  thread (set before anything else), and torch runs a one-thread region inline, without the
  team. The parent loads the model with one thread too.
* *Locks held by other threads.* Only the forking thread is copied; a lock another thread
  held at that moment stays locked in the child. So processes are used only while this is
  the process's only thread (:func:`~batchcast.runner.executor.use_processes`), as the CLI
  is; a library caller with threads of its own gets worker threads instead. Both give the
  same bytes: each shard's randomness derives from (seed, file, shard) alone.

Only Linux forks (macOS's system libraries are not fork-safe, and Python spawns there).
``BATCHCAST_LOCAL_POOL`` = ``threads`` or ``processes`` overrides the rule (a speed knob;
never part of the output's identity).

**Failure.** A child that dies (killed, out of memory) is reported like a Ray worker's death:
its shards come back *lost*, a fresh child is forked from the parent, and the driver
resubmits them (up to its attempt limit). A child's exception comes back as the shard's
error. A child that outlives its parent sees its pipe close and exits.
"""

from __future__ import annotations

import contextlib
import itertools
import multiprocessing as mp
import os
import pickle
import signal
import sys
import time
from collections import deque
from multiprocessing.connection import Connection, wait
from typing import Any

import torch

from batchcast.errors import ShardError
from batchcast.io.shards import Shard
from batchcast.runner.executor import Outcome, Task
from batchcast.runner.processor import ShardProcessor, ShardResult, WorkerOptions

__all__ = ["ProcessPool"]

_PARENT_CHECK_S = 1.0  # how often an idle child checks that its parent is still there
_CLOSE_GRACE_S = 1.0  # how long close() lets idle children leave before killing them


class _Child:
    """One worker process, the parent's end of its pipe, and the shards it holds in order."""

    def __init__(self, index: int, generation: int, process: Any, conn: Connection) -> None:
        self.index = index
        self.generation = generation
        self.process = process
        self.conn = conn
        self.tasks: deque[int] = deque()  # task ids, in the order the child runs them
        self.alive = True


class ProcessPool:
    """Model workers as forked child processes, each with the parent's :class:`ShardProcessor`.

    The parent loads the model once (and times its tile once, with one torch thread); each
    child inherits it. A shard goes to the child holding the fewest, which runs its shards in
    the order they came.

    Args:
        model: the model's URI.
        options: what every worker needs.
        size: how many processes.
    """

    def __init__(self, model: str, options: WorkerOptions, *, size: int) -> None:
        self._torch_threads = torch.get_num_threads()
        torch.set_num_threads(1)  # the tile is timed for one thread, as the children run
        self._processor = ShardProcessor(model, options)
        self._context = mp.get_context("fork")
        self._ids = itertools.count()
        self._children: list[_Child] = []
        # A task stays in flight until wait() hands its outcome out: the driver stops when
        # in_flight is empty, and one poll can take several answers off a child's pipe.
        self.in_flight: dict[Any, Task] = {}
        self._ready: deque[tuple[Any, ShardResult | Outcome]] = deque()  # keys, answered
        self._counted: set[tuple[int, int]] = set()  # (child, generation) deaths reported
        for index in range(size):
            self._children.append(self._fork(index, generation=0))

    @property
    def size(self) -> int:
        return len(self._children)

    def _fork(self, index: int, *, generation: int) -> _Child:
        # Buffered text would be written twice: once by the parent, once by the child.
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        parent_end, child_end = self._context.Pipe(duplex=True)
        # The child closes every parent end it inherits, or its own pipe would never report
        # the parent's exit (another copy of the parent's end would keep it open).
        inherited = [c.conn for c in self._children if c.alive] + [parent_end]
        process = self._context.Process(
            target=_child_main,
            args=(child_end, self._processor, inherited),
            name=f"batchcast-worker-{index}",
            daemon=True,
        )
        process.start()
        child_end.close()
        return _Child(index, generation, process, parent_end)

    def submit(
        self,
        shard: Shard,
        relpath: str,
        *,
        attempt: int = 1,
        avoid: int = -1,
        check_only: bool = False,
    ) -> None:
        """Send ``shard`` to the live child holding the fewest (not ``avoid`` if another is
        as free)."""
        child = min(
            (c for c in self._children if c.alive),
            key=lambda c: (len(c.tasks), c.index == avoid, c.index),
        )
        key = next(self._ids)
        now = time.monotonic()
        task = Task(shard, child.index, attempt, child.generation, now)
        task.started = None if child.tasks else now
        self.in_flight[key] = task
        child.tasks.append(key)
        # A child that died meanwhile refuses the send: wait() reports it through its sentinel.
        with contextlib.suppress(OSError):
            child.conn.send((key, shard, relpath, check_only))

    def wait(self, timeout: float | None = None) -> tuple[Task, ShardResult | Outcome] | None:
        """The next finished (or lost) shard; None when nothing finished within ``timeout``."""
        if not self._ready:
            self._poll(timeout)
        if not self._ready:
            return None
        key, outcome = self._ready.popleft()
        return self.in_flight.pop(key), outcome

    def _poll(self, timeout: float | None) -> None:
        busy = [c for c in self._children if c.alive and c.tasks]
        if not busy:
            return
        # Each child's pipe (an answer) and its process's sentinel (an int: its exit).
        watched: dict[Any, _Child] = {c.conn: c for c in busy}
        watched.update({c.process.sentinel: c for c in busy})
        for ready in wait(list(watched), timeout):
            child = watched[ready]
            if child.alive:
                # A ready sentinel means the process is exiting: its descriptors close before
                # the kernel lets it be reaped, so is_alive() may still say True for a moment.
                self._drain(child, ended=isinstance(ready, int))

    def _drain(self, child: _Child, *, ended: bool) -> None:
        """Take every answer the child has sent; if its process has ended, its other shards
        are lost and a fresh child takes its place."""
        try:
            while child.tasks and child.conn.poll():
                self._answer(child, child.conn.recv())
        except (EOFError, OSError):
            ended = True  # its end of the pipe closed: the process is on its way out
        if not ended and child.process.is_alive():
            return
        child.process.join(timeout=_CLOSE_GRACE_S)
        message = f"WorkerDied: worker process {child.process.pid} {_exit_words(child)}"
        for key in child.tasks:
            self._ready.append((key, Outcome(lost=True, cause=None, message=message, died=True)))
        child.alive = False
        child.conn.close()
        self._children[child.index] = self._fork(child.index, generation=child.generation + 1)

    def _answer(self, child: _Child, message: tuple[int, bool, Any]) -> None:
        key, ok, value = message
        assert child.tasks, "an answer without a shard"
        assert child.tasks[0] == key, "a child answers its shards in order"
        child.tasks.popleft()
        if child.tasks:  # its next shard starts now: the deadline counts from here
            self.in_flight[child.tasks[0]].started = time.monotonic()
        self._ready.append((key, value if ok else Outcome.raised(value)))

    def died(self, task: Task) -> bool:
        """True for the first report of a child's death (its replacement is already forked)."""
        death = (task.actor, task.generation)
        if death in self._counted:
            return False
        self._counted.add(death)
        return True

    def close(self) -> None:
        """Stop every child: idle ones leave when their pipe closes; one still busy (a job
        that failed mid-shard) is killed. Never raises."""
        for child in self._children:
            child.conn.close()
        deadline = time.monotonic() + _CLOSE_GRACE_S
        for child in self._children:
            child.process.join(timeout=max(0.0, deadline - time.monotonic()))
            if child.process.is_alive():
                child.process.kill()
                child.process.join(timeout=_CLOSE_GRACE_S)
        self.in_flight.clear()
        torch.set_num_threads(self._torch_threads)


def _exit_words(child: _Child) -> str:
    code = child.process.exitcode
    if code is None:
        return "stopped answering"
    if code < 0:
        return f"was killed by {signal.Signals(-code).name}"
    return f"exited with status {code}"


def _child_main(conn: Connection, processor: ShardProcessor, inherited: list[Connection]) -> None:
    """A worker process: shards in, results out, until the parent's end closes."""
    torch.set_num_threads(1)  # first: see the module docstring (OpenMP after fork)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    for end in inherited:
        end.close()
    parent = os.getppid()
    while True:
        try:
            if not conn.poll(_PARENT_CHECK_S):
                if os.getppid() != parent:
                    return  # the parent died without closing the pipe
                continue
            message = conn.recv()
        except (EOFError, OSError):
            return
        key, shard, relpath, check_only = message
        try:
            reply: tuple[int, bool, Any] = (
                key,
                True,
                processor.process(shard, relpath, check_only=check_only),
            )
        except Exception as err:  # the shard's error, handed to the driver
            reply = (key, False, _portable(err))
        try:
            conn.send(reply)
        except (OSError, pickle.PicklingError, TypeError, AttributeError) as err:
            if isinstance(err, OSError):
                return  # the parent is gone
            conn.send((key, False, ShardError(f"its result could not be sent back: {err}")))


def _portable(err: Exception) -> Exception:
    """``err`` itself when it survives pickling, else a ShardError carrying its words."""
    try:
        pickle.loads(pickle.dumps(err))
    except Exception:
        return ShardError(f"{type(err).__name__}: {err}")
    return err
