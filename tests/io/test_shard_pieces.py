"""Shard pieces at the edges: a blank last line, sizes, where a piece read stops.

The random read-back property (plain and gzip) is in test_shards.py; these are the cases it
leaves open."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from batchcast.io import (
    CorruptInputError,
    PieceBudget,
    Shard,
    list_inputs,
    plan_shards,
    read_shard_lines,
)

_LINE = b'{"start": "2020-01-01 00:00:00", "target": [1, 2, 3]}'


def _write(path: Path, data: bytes, compressed: bool) -> Path:
    path.write_bytes(gzip.compress(data) if compressed else data)
    return path


@pytest.mark.parametrize("compressed", [False, True])
def test_an_empty_last_line_leaves_a_shard_that_fits_whole(
    tmp_path: Path, compressed: bool
) -> None:
    """A file ending in two newlines has the same lines as the file ending in one (the empty
    last line is no record). When those lines fit one piece exactly, the empty line's own
    estimated output must not make the shard a one-piece "split": that would re-read the
    shard and forecast it with the piece-0 seed instead of the whole shard's seed, so adding
    a blank line at the end of a file would change every forecast in its last shard."""
    n = 5
    budget = PieceBudget(input_bytes=1 << 20, output_bytes=n * (100 + len(_LINE)), line_output=100)
    name = "f.jsonl.gz" if compressed else "f.jsonl"
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    body = b"\n".join([_LINE] * n) + b"\n"
    fits = _write(tmp_path / "one" / name, body, compressed)
    blank = _write(tmp_path / "two" / name, body + b"\n", compressed)
    [shard_fits] = plan_shards(list_inputs(str(fits)), target_bytes=1 << 20)
    [shard_blank] = plan_shards(list_inputs(str(blank)), target_bytes=1 << 20)
    a = read_shard_lines(shard_fits, max_line_bytes=1 << 20, budget=budget)
    assert a.pieces == []
    assert a.lines == [_LINE] * n
    b = read_shard_lines(shard_blank, max_line_bytes=1 << 20, budget=budget)
    assert b.pieces == [], b.pieces  # got [(0, 5)]: one piece, the whole shard
    assert b.lines == a.lines


def test_the_pieces_sizes_add_up_to_the_shard_size() -> None:
    """``Shard.size`` is what the driver adds to ``bytes_done`` per result: a split shard's
    pieces stand for all of its bytes (progress reaches the planned total), even when there
    are more pieces than bytes. The window expects a piece's output from the piece budget,
    never from its size (see tests/runner/test_window.py)."""
    shard = Shard(
        file_index=0, uri="/x.jsonl.gz", start=0, end=10, index=0, count=1, compressed=True
    )
    pieces = shard.split([(0, 1), (1, 2), (2, 3)])
    assert sum(p.size for p in pieces) == shard.size  # got 9 of 10
    many = shard.split([(i, i + 1) for i in range(12)])  # more pieces than compressed bytes
    assert sum(p.size for p in many) == shard.size  # got 0 of 10


def test_a_piece_stops_reading_at_its_last_line(tmp_path: Path) -> None:
    """Reading on past a piece's lines is wasted work (for a gzip object, decompression of
    the rest of the stream): a truncated stream shows where the reader stopped."""
    data = b"".join(b'{"i": %d}\n' % i for i in range(2000))
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(gzip.compress(data)[:-2000])  # the stream's tail is missing
    [shard] = plan_shards(list_inputs(str(path)), target_bytes=1 << 20)
    first, last = shard.split([(0, 10), (10, 2000)])
    assert read_shard_lines(first, max_line_bytes=100, chunk_bytes=64).lines == [
        b'{"i": %d}' % i for i in range(10)
    ]
    with pytest.raises(CorruptInputError):
        read_shard_lines(last, max_line_bytes=100, chunk_bytes=64)
