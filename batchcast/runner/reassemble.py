"""Put shard results back in order: pure, Ray-free.

Results arrive in any order; each file's shards are released strictly by index, so output line
*i* always answers input line *i* whatever the workers' timing (SPEC.md §4). A shard too big
to process at once is split into pieces (:meth:`Reassembler.split`): its slot then takes
one result per piece, released in piece order.
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
    next_piece: int = -1  # -1: the next shard comes whole
    pieces: dict[int, int] = field(default_factory=dict)  # a split shard -> its pieces
    waiting: dict[tuple[int, int], T] = field(default_factory=dict)

    def advance(self) -> None:
        """Past the result just released: the next piece, or the next shard."""
        pieces = self.pieces.get(self.next_index)
        if pieces is not None and self.next_piece + 1 < pieces:
            self.next_piece += 1
            return
        self.next_index += 1
        self.next_piece = 0 if self.next_index in self.pieces else -1


class Reassembler(Generic[T]):
    """Buffers out-of-order shard results and yields each file's results in index order.

    Args:
        shard_counts: for every file index, how many shards it has.
    """

    def __init__(self, shard_counts: dict[int, int]) -> None:
        self._files = {f: _FileState[T](count) for f, count in shard_counts.items()}
        self._buffered = 0  # kept as a count: the driver asks after every shard

    def split(self, file_index: int, shard_index: int, pieces: int) -> None:
        """Shard ``shard_index`` comes as ``pieces`` results (pieces ``0..pieces-1``).

        Raises:
            KeyError: for an unknown file.
            ValueError: for a shard out of range, already split or with a result, or
                ``pieces`` < 1.
        """
        state = self._files[file_index]
        self._check_index(file_index, state, shard_index)
        taken = shard_index < state.next_index or any(k[0] == shard_index for k in state.waiting)
        if pieces < 1 or shard_index in state.pieces or taken:
            raise ValueError(
                f"file {file_index}: shard {shard_index} cannot be split into {pieces} pieces"
            )
        state.pieces[shard_index] = pieces
        if state.next_index == shard_index:
            state.next_piece = 0

    def add(
        self, file_index: int, shard_index: int, result: T, piece: int = -1
    ) -> list[tuple[int, T, bool]]:
        """Record one result (of a whole shard, or of ``piece`` of a split one); return
        ``(shard_index, result, is_last)`` for each result now in order.

        Raises:
            KeyError: for an unknown file.
            ValueError: for a shard index out of range, a piece that does not match the
                shard's split, or a result seen before (a duplicate).
        """
        state = self._files[file_index]
        self._check_index(file_index, state, shard_index)
        pieces = state.pieces.get(shard_index)
        if (piece != -1) if pieces is None else not 0 <= piece < pieces:
            raise ValueError(f"file {file_index}: shard {shard_index} has no piece {piece}")
        key = (shard_index, piece)
        if key < (state.next_index, state.next_piece) or key in state.waiting:
            raise ValueError(f"file {file_index}: shard {shard_index} arrived twice")
        state.waiting[key] = result
        self._buffered += 1
        released = []
        while (key := (state.next_index, state.next_piece)) in state.waiting:
            state.advance()
            released.append((key[0], state.waiting.pop(key), state.next_index == state.count))
        self._buffered -= len(released)
        return released

    @staticmethod
    def _check_index(file_index: int, state: _FileState[T], shard_index: int) -> None:
        if not 0 <= shard_index < state.count:
            raise ValueError(
                f"file {file_index}: shard {shard_index} out of range 0..{state.count - 1}"
            )

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
