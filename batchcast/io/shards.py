"""Byte-range shards of input objects, and reading a shard's lines.

Planning is a pure function of object sizes: no object is opened to find line boundaries.
Reading follows the Hadoop rule, so shards meet on line boundaries by themselves: a line
belongs to the shard in which it starts. A reader whose range starts at ``start > 0`` opens
at ``start - 1`` and skips through the first ``\\n`` it sees (if byte ``start - 1`` is itself a
newline, a line starts exactly at ``start`` and is kept); it then reads every line that starts
before ``end``, finishing the last one past ``end``. In bytes: a shard owns everything after
the first newline at or after ``start - 1``, up to and including the first newline at or
after ``end - 1``. Neighbouring shards therefore share each boundary newline exactly once.

Lines are split on ``b"\\n"`` only (never ``str.splitlines``, which also splits on U+2028
and friends that JSON strings may hold); a trailing ``b"\\r"`` is stripped.

Two decisions at a file's edges (issue 9), both made here so that transform, training and
every other reader see the same lines:

- A UTF-8 byte order mark at the start of a file is dropped, as SageMaker's containers
  accept it (Windows tools write one); anywhere else those bytes stay data (and an error).
  A first line too long to be held keeps it in its reported length.
- An empty last line, which a file ending in two newlines has, is no record and gets no
  output line. Only the last one: a blank line anywhere else stays a record error (SPEC.md
  §1), and so does a last line of spaces. The shard the line starts in sees that the object
  ends after it (one byte read past the shard when its last line is empty), so this does
  not depend on how the object is sharded.

A shard can be too big to process at once: a gzip object is always one shard, whatever its
decompressed size, and with ``samples`` one short line can forecast into megabytes. Given a
:class:`PieceBudget`, reading a whole shard holds its lines only while they fit one *piece*
(their bytes, and an estimate of their output); past it, the reader stops holding lines,
counts on, and returns the shard's piece plan instead: line ranges, cut greedily where the
next line would overflow the budget. The plan is a pure function of the shard's lines and the
budget's fixed constants, never of how the bytes arrived, so a piece (a :class:`Shard` with
``piece >= 0``) is read again by line range and its output is the same on every run.

A corrupt or truncated gzip stream raises :class:`CorruptInputError` (a :class:`ShardError`
naming the URI), distinct from a failed read, so a caller can fail that file alone.
"""

from __future__ import annotations

import gzip
import itertools
import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, BinaryIO

from batchcast.errors import ConfigError, ShardError
from batchcast.io.sources import READ_ERRORS, InputObject, open_range

__all__ = [
    "CHUNK_BYTES",
    "CorruptInputError",
    "PieceBudget",
    "Shard",
    "ShardLines",
    "plan_shards",
    "read_shard_lines",
]

# Read size: large enough that per-chunk Python overhead vanishes next to the bytes, small
# enough that a worker's transient memory stays a few MiB per shard.
CHUNK_BYTES = 1 << 20

UTF8_BOM = b"\xef\xbb\xbf"

# What a damaged gzip stream raises (bad header or CRC, bad deflate data, cut short).
_CORRUPT_GZIP = (gzip.BadGzipFile, zlib.error, EOFError)


class CorruptInputError(ShardError):
    """An input object's bytes are damaged: a corrupt or truncated gzip stream.

    Unlike other read failures this says nothing about the storage or the network: the
    object itself is bad, so retrying cannot help and the other files of a job are not
    affected (the runner fails that file alone in ``record`` and ``fail-file`` modes).

    Args:
        uri: the damaged object.
        reason: what is wrong with it.
    """

    def __init__(self, uri: str, reason: str) -> None:
        self.uri = uri
        self.reason = reason
        super().__init__(f"{uri!r} is not a readable gzip stream: {reason}")

    def __reduce__(self) -> tuple[Any, ...]:
        # Keep the fields when the error crosses a process boundary (Ray pickles it).
        return (CorruptInputError, (self.uri, self.reason))


@dataclass(frozen=True, kw_only=True)
class Shard:
    """A byte range ``[start, end)`` of one input object (built with keyword arguments).

    Attributes:
        file_index: the object's position in the listed inputs.
        uri: the object's URI.
        start: first byte of the range.
        end: one past its last byte (for a compressed object: the compressed size; the
            whole decompressed stream is read).
        index: this shard's number within its object (0-based).
        count: how many shards the object has.
        compressed: gzip object (always one shard).
        piece: -1 for the whole shard; else which piece of it this is (lines
            ``[line_start, line_stop)`` of the shard, numbered from 0), of ``pieces``.
    """

    file_index: int
    uri: str
    start: int
    end: int
    index: int
    count: int
    compressed: bool
    piece: int = -1
    pieces: int = 1
    line_start: int = 0
    line_stop: int = 0

    @property
    def size(self) -> int:
        """The input bytes this shard stands for (a piece: its share of the range, the shares
        adding up to the range)."""
        if self.piece < 0:
            return self.end - self.start
        n, p = self.end - self.start, self.piece
        return (p + 1) * n // self.pieces - p * n // self.pieces

    def split(self, ranges: Sequence[tuple[int, int]]) -> list[Shard]:
        """This shard's pieces, one per line range of its piece plan."""
        return [
            replace(self, piece=p, pieces=len(ranges), line_start=a, line_stop=b)
            for p, (a, b) in enumerate(ranges)
        ]


@dataclass(frozen=True)
class PieceBudget:
    """The most one piece of a shard may hold (see the module docstring).

    Attributes:
        input_bytes: the lines' bytes.
        output_bytes: their estimated output: ``line_output`` plus the line's own length per
            line (forwarded fields can echo a record whole).
        line_output: the estimated output of one record: its forecast's numbers at their
            longest.
    """

    input_bytes: int
    output_bytes: int
    line_output: int


@dataclass
class ShardLines:
    """The lines of one shard.

    Attributes:
        lines: each line without its ``\\n`` (and trailing ``\\r``), in order.
        oversize: local 0-based line index -> byte length, for lines longer than the
            limit; they were streamed past, never held, and their slot in ``lines`` is ``b""``.
        pieces: the shard's piece plan when it does not fit one piece (then ``lines`` is
            empty: the pieces are read one by one); empty otherwise.
    """

    lines: list[bytes]
    oversize: dict[int, int] = field(default_factory=dict)
    pieces: list[tuple[int, int]] = field(default_factory=list)


def plan_shards(objects: Sequence[InputObject], *, target_bytes: int) -> list[Shard]:
    """Split each object into ``ceil(size / target_bytes)`` contiguous byte ranges.

    Pure: depends only on the objects' sizes. Ranges are as equal as integer division allows
    and cover every byte exactly once. An empty object is one (empty) shard; a gzip object is
    one shard, since a gzip stream cannot be entered in the middle.

    Args:
        objects: the listed inputs; ``file_index`` is the position in this sequence.
        target_bytes: the largest shard wanted, in bytes (>= 1).

    Returns:
        The shards, ordered by ``(file_index, index)``.

    Raises:
        ConfigError: when ``target_bytes`` < 1.
    """
    if target_bytes < 1:
        raise ConfigError(f"shard size must be >= 1 byte, got {target_bytes}")
    shards: list[Shard] = []
    for file_index, obj in enumerate(objects):
        count = 1 if obj.compressed else max(1, math.ceil(obj.size / target_bytes))
        bounds = [obj.size * i // count for i in range(count + 1)]
        shards.extend(
            Shard(
                file_index=file_index,
                uri=obj.uri,
                start=bounds[i],
                end=bounds[i + 1],
                index=i,
                count=count,
                compressed=obj.compressed,
            )
            for i in range(count)
        )
    return shards


def read_shard_lines(
    shard: Shard,
    *,
    max_line_bytes: int,
    chunk_bytes: int = CHUNK_BYTES,
    budget: PieceBudget | None = None,
) -> ShardLines:
    """Read the lines of a shard (the Hadoop rule; see the module docstring).

    Args:
        shard: the byte range to read; a piece (``shard.piece >= 0``) holds only its lines.
        max_line_bytes: lines longer than this (without ``\\r\\n``) are streamed past and
            reported in ``oversize`` instead of being held in memory.
        chunk_bytes: how much to read at a time (memory held is about this plus
            ``max_line_bytes``).
        budget: a whole shard that does not fit one piece of this budget gets a piece plan
            and no lines (memory held is then about one piece); None: no limit.

    Returns:
        The shard's lines, numbered locally from 0 (a leading byte order mark and an empty
        last line of the object left out, see the module docstring).

    Raises:
        CorruptInputError: for a corrupt or truncated gzip object.
        ShardError: when the object cannot be read (I/O error, missing object, timeout).
        ValueError: for ``chunk_bytes`` < 1 or ``max_line_bytes`` < 0.
    """
    if chunk_bytes < 1 or max_line_bytes < 0:
        raise ValueError(
            f"need chunk_bytes >= 1 and max_line_bytes >= 0, got {chunk_bytes}, {max_line_bytes}"
        )
    collector = _LineCollector(max_line_bytes)
    if shard.piece >= 0:
        collector.keep = (shard.line_start, shard.line_stop)
    elif budget is not None:
        collector.planner = _Planner(budget)
    ends_object = False
    if shard.compressed or shard.end > shard.start:
        try:
            ends_object = _read_range(shard, collector, chunk_bytes)
        except _CORRUPT_GZIP as err:
            if not shard.compressed:  # EOFError from a plain read is a transport failure
                raise ShardError(f"cannot read {shard.uri!r}: {err}") from err
            raise CorruptInputError(shard.uri, str(err) or type(err).__name__) from err
        except READ_ERRORS as err:
            raise ShardError(
                f"cannot read {shard.uri!r} bytes [{shard.start}, {shard.end}): {err}"
            ) from err
    if ends_object and collector.last_is_empty():
        collector.drop_last()  # the empty last line of a file ending in two newlines
    lines, oversize = collector.lines, collector.oversize
    if collector.planner is not None and collector.planner.split:
        ranges = collector.planner.ranges(collector.count)
        if len(ranges) > 1:
            return ShardLines([], {}, ranges)
        # Only the empty last line, costed before it was known to be last, overflowed: the
        # shard fits after all, and is read again to be processed whole (its own seed).
        return read_shard_lines(shard, max_line_bytes=max_line_bytes, chunk_bytes=chunk_bytes)
    first = (shard.start == 0 or shard.compressed) and shard.line_start == 0
    if first and lines[:1] and lines[0].startswith(UTF8_BOM):
        lines[0] = lines[0][len(UTF8_BOM) :]
    return ShardLines(lines, oversize)


def _read_range(shard: Shard, collector: _LineCollector, chunk: int) -> bool:
    """Feed the shard's lines to ``collector``; whether its last line ends the object."""
    if shard.compressed:
        with open_range(shard.uri, compressed=True) as stream:
            while data := stream.read(chunk):
                collector.feed(data)
                if collector.full:
                    return False  # a piece before the last: the rest is other pieces'
        collector.finish()
        return True
    with open_range(shard.uri, max(shard.start - 1, 0), compressed=False) as stream:
        first = _skip_partial_line(stream, shard.start, shard.end, chunk)
        if first is None:  # no newline at or after start - 1: no line starts here
            return False
        data, position = first
        return _collect_until(
            stream, data, position=position, end=shard.end, out=collector, size=chunk
        )


def _skip_partial_line(
    stream: BinaryIO, start: int, end: int, size: int
) -> tuple[bytes, int] | None:
    """Consume through the first newline in ``[start - 1, end - 1]`` (the stream is at start - 1).

    Returns:
        The bytes read past that newline and their absolute offset, or None when there is no
        such newline: then no line starts in this shard, and reading stops at ``end`` instead
        of scanning the rest of a long line that other shards skip too. At ``start == 0``
        nothing is skipped.
    """
    if start == 0:
        return stream.read(size), 0
    position = start - 1
    while position < end and (chunk := stream.read(min(size, end - position))):
        newline = chunk.find(b"\n", 0, end - position)
        if newline >= 0:
            return chunk[newline + 1 :], position + newline + 1
        position += len(chunk)
    return None


def _collect_until(
    stream: BinaryIO, chunk: bytes, *, position: int, end: int, out: _LineCollector, size: int
) -> bool:
    """Feed lines from ``chunk`` (whose first byte is at absolute ``position``) on, through
    the first newline at or after ``end - 1``, or to the end of the object.

    Returns:
        Whether the last line fed ends the object. Only asked of the stream (one more byte
        read) when that line is empty, the one case a caller needs it for.
    """
    if position >= end:  # the skipped newline was at or after end - 1: no line starts here
        return False
    while True:
        if chunk:
            last = end - 1 - position  # from this index on, a newline closes the shard
            if last < len(chunk):
                newline = chunk.find(b"\n", max(last, 0))
                if newline >= 0:
                    out.feed(chunk[: newline + 1])
                    out.finish()
                    rest = chunk[newline + 1 :]
                    return out.last_is_empty() and not rest and not stream.read(1)
            out.feed(chunk)
            if out.full:
                return False  # a piece before the last: the rest is other pieces'
            position += len(chunk)
        chunk = stream.read(size)
        if not chunk:
            break
    out.finish()
    return True


class _LineCollector:
    """Splits a byte stream fed in chunks into lines, never holding an oversize one.

    Only a partial line spanning chunks is buffered, and only up to the limit: past it the
    line's bytes are counted and dropped.
    """

    def __init__(self, max_line_bytes: int) -> None:
        self.max = max_line_bytes
        self.lines: list[bytes] = []
        self.oversize: dict[int, int] = {}
        # A piece holds only its line range; a planner stops holding lines once the shard
        # proves too big for one piece. ``count`` counts every line, held or not.
        self.keep: tuple[int, int] | None = None
        self.planner: _Planner | None = None
        self.count = 0
        self._accounted = 0  # lines of self.lines already seen by _account
        self._last_empty = False
        self._parts: list[bytes] = []  # the partial line carried over from earlier chunks
        self._size = 0  # its length so far
        self._dropping = False  # it was too long: its bytes are counted, not kept
        self._cr = False  # its last byte so far is b"\r" (only tracked while dropping)

    def feed(self, chunk: bytes) -> None:
        pieces = chunk.split(b"\n")
        tail = pieces.pop()  # bytes after the chunk's last newline: a partial line
        first = 0
        if pieces and (self._size or self._dropping):
            self._extend(pieces[0])
            self._end_line()
            first = 1
        limit, lines = self.max, self.lines
        for line in pieces[first:] if first else pieces:
            if line[-1:] == b"\r":
                line = line[:-1]
            if len(line) > limit:
                self.oversize[len(lines)] = len(line)
                line = b""
            lines.append(line)
        if tail:
            self._extend(tail)
        self._account()

    def last_is_empty(self) -> bool:
        """Whether the last line so far is empty (and not an oversize line's empty slot)."""
        return self._last_empty

    @property
    def full(self) -> bool:
        """A piece has all its lines: reading on is wasted (for a gzip object, each piece
        decompresses the stream only up to its own lines)."""
        return self.keep is not None and self.count >= self.keep[1]

    def drop_last(self) -> None:
        """Forget the last line (the empty last line of the object), held or only counted."""
        held = self.planner is None or not self.planner.split
        if self.keep is not None:
            held = self.keep[0] <= self.count - 1 < self.keep[1]
        if held and self.lines:
            self.lines.pop()
            self._accounted = len(self.lines)
        self.count -= 1
        self._last_empty = False

    def finish(self) -> None:
        """End of the range: a non-empty partial line is the last line (no final newline)."""
        if self._size or self._dropping:
            self._end_line()
        self._account()

    def _account(self) -> None:
        """After new lines: note the last one's emptiness, let the planner cost them, and
        drop the ones not to be held."""
        lines, seen = self.lines, self._accounted
        new = len(lines) - seen
        if new <= 0:
            return
        self._last_empty = lines[-1] == b"" and len(lines) - 1 not in self.oversize
        first = self.count  # the shard line number of lines[seen]
        self.count += new
        if self.planner is not None:
            self.planner.cost(lines, seen)
            if self.planner.split:  # too big to hold: only count from here
                lines.clear()
                self.oversize.clear()
        elif self.keep is not None:
            lo = seen + min(new, max(0, self.keep[0] - first))
            hi = seen + min(new, max(0, self.keep[1] - first))
            hi = max(lo, hi)
            self.oversize = {
                k if k < seen else k - (lo - seen): v
                for k, v in self.oversize.items()
                if k < seen or lo <= k < hi
            }
            del lines[hi:]
            del lines[seen:lo]
        self._accounted = len(lines)

    def _extend(self, piece: bytes) -> None:
        if not piece:
            return
        self._size += len(piece)
        if self._dropping:
            self._cr = piece[-1:] == b"\r"
            return
        self._parts.append(piece)
        if self._size > self.max + 1:  # +1: a final b"\r" is not part of the line
            self._cr = self._parts[-1][-1:] == b"\r"
            self._parts.clear()
            self._dropping = True

    def _end_line(self) -> None:
        if self._dropping:
            self.oversize[len(self.lines)] = self._size - self._cr
            self.lines.append(b"")
        else:
            line = b"".join(self._parts)
            if line[-1:] == b"\r":
                line = line[:-1]
            if len(line) > self.max:
                self.oversize[len(self.lines)] = len(line)
                line = b""
            self.lines.append(line)
        self._parts.clear()
        self._size = 0
        self._dropping = False
        self._cr = False


class _Planner:
    """Cuts a shard's lines into pieces of a :class:`PieceBudget`, greedily: a piece takes
    lines until the next one would overflow either bound (a piece has at least one line)."""

    def __init__(self, budget: PieceBudget) -> None:
        self.budget = budget
        self.starts = [0]  # each piece's first line
        self._line = 0  # the next line's number
        self._input = 0  # the current piece's bytes
        self._output = 0  # and its estimated output

    @property
    def split(self) -> bool:
        return len(self.starts) > 1

    def cost(self, lines: list[bytes], start: int) -> None:
        """Account for ``lines[start:]``, the next lines of the shard."""
        budget, per_line = self.budget, self.budget.line_output
        for line in lines[start:] if start else lines:
            size = len(line)
            if self._line > self.starts[-1] and (
                self._input + size > budget.input_bytes
                or self._output + per_line + size > budget.output_bytes
            ):
                self.starts.append(self._line)
                self._input = self._output = 0
            self._input += size
            self._output += per_line + size
            self._line += 1

    def ranges(self, total: int) -> list[tuple[int, int]]:
        """The pieces' line ranges once the shard's ``total`` lines are known (an empty last
        line the reader dropped may leave the last piece empty: it goes)."""
        bounds = [s for s in self.starts if s < total] + [total]
        return list(itertools.pairwise(bounds))
