"""Put shard results back in order: pure, Ray-free.

Results arrive in any order; each file's shards are released strictly by index, so output line
*i* always answers input line *i* whatever the workers' timing (SPEC.md §4).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, TypeVar

__all__ = ["Reassembler"]

T = TypeVar("T")


@dataclass
class _FileState(Generic[T]):
    count: int
    next_index: int = 0
    waiting: dict[int, T] = field(default_factory=dict)


class Reassembler(Generic[T]):
    """Buffers out-of-order shard results and yields each file's results in index order.

    Args:
        shard_counts: for every file index, how many shards it has.
    """

    def __init__(self, shard_counts: dict[int, int]) -> None:
        self._files = {f: _FileState[T](count) for f, count in shard_counts.items()}
        self._buffered = 0  # kept as a count: the driver asks after every shard

    def add(self, file_index: int, shard_index: int, result: T) -> list[tuple[int, T, bool]]:
        """Record one result; return ``(shard_index, result, is_last)`` for each shard now in order.

        Raises:
            KeyError: for an unknown file.
            ValueError: for a shard index out of range or seen before (a duplicate).
        """
        state = self._files[file_index]
        if not 0 <= shard_index < state.count:
            raise ValueError(
                f"file {file_index}: shard {shard_index} out of range 0..{state.count - 1}"
            )
        if shard_index < state.next_index or shard_index in state.waiting:
            raise ValueError(f"file {file_index}: shard {shard_index} arrived twice")
        state.waiting[shard_index] = result
        self._buffered += 1
        released = []
        while state.next_index in state.waiting:
            index = state.next_index
            state.next_index += 1
            released.append((index, state.waiting.pop(index), state.next_index == state.count))
        self._buffered -= len(released)
        return released

    def done(self, file_index: int) -> bool:
        """Whether every shard of the file has been released."""
        state = self._files[file_index]
        return state.next_index == state.count

    def check_complete(self) -> None:
        """Raise if any file still has a gap (a shard that never arrived).

        Raises:
            ValueError: naming the file and the first missing shard.
        """
        for file_index, state in self._files.items():
            if state.next_index != state.count:
                raise ValueError(f"file {file_index}: shard {state.next_index} never arrived")

    @property
    def buffered(self) -> int:
        """Results held back waiting for an earlier shard."""
        return self._buffered
