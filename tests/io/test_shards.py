"""Shard planning (pure, exact cover) and reading (the Hadoop rule), local and on S3."""

from __future__ import annotations

import gzip
import itertools
import math
import random
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from batchcast.errors import ConfigError, ShardError
from batchcast.io import (
    InputObject,
    PieceBudget,
    Shard,
    list_inputs,
    plan_shards,
    read_shard_lines,
    s3_client,
)


def _expected_lines(data: bytes) -> list[bytes]:
    """The reference: split on b"\\n" only, no trailing empty remainder, one \\r stripped,
    and an empty last line (a file ending in two newlines) dropped."""
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    lines = [line[:-1] if line.endswith(b"\r") else line for line in lines]
    if lines and lines[-1] == b"":
        lines.pop()
    return lines


def _read_all(shards: list[Shard], **kwargs: Any) -> tuple[list[bytes], dict[int, int]]:
    """Concatenate every shard's lines in order; oversize indices made file-global."""
    lines: list[bytes] = []
    oversize: dict[int, int] = {}
    for shard in shards:
        got = read_shard_lines(shard, **kwargs)
        oversize.update({len(lines) + i: n for i, n in got.oversize.items()})
        lines.extend(got.lines)
    return lines, oversize


def _random_jsonl(rng: random.Random) -> bytes:
    """Lines of every awkward kind: empty, long, \\r\\n-ended, U+2028/U+0085 inside strings."""
    pieces = []
    for _ in range(rng.randint(0, 12)):
        kind = rng.random()
        if kind < 0.15:
            line = b""
        elif kind < 0.3:
            line = b'{"k": "' + b"x" * rng.randint(40, 120) + b'"}'
        elif kind < 0.45:
            line = '{"s": "a\u2028b\u0085c\x0bd\x1ce"}'.encode()
        else:
            line = bytes(rng.choice(b'ab{}":,\r') for _ in range(rng.randint(1, 10)))
        if rng.random() < 0.2:
            line += b"\r"
        pieces.append(line)
    data = b"\n".join(pieces)
    if pieces and rng.random() < 0.5:
        data += b"\n"
    return data


# --- planning


def test_plan_covers_every_byte_once_and_is_pure() -> None:
    rng = random.Random(1)
    # Objects that do not exist: planning must not open anything.
    objects = [
        InputObject(f"/nowhere/{i}.jsonl", rng.choice([0, 1, 7, 100, 4096, 10_001]), f"{i}", False)
        for i in range(30)
    ]
    for target in (1, 3, 64, 1000, 5000, 1 << 30):
        shards = plan_shards(objects, target_bytes=target)
        assert shards == plan_shards(objects, target_bytes=target)
        assert [(s.file_index, s.index) for s in shards] == sorted(
            (s.file_index, s.index) for s in shards
        )
        for file_index, obj in enumerate(objects):
            mine = [s for s in shards if s.file_index == file_index]
            assert len(mine) == max(1, math.ceil(obj.size / target))
            assert all(s.count == len(mine) and s.uri == obj.uri for s in mine)
            assert [s.index for s in mine] == list(range(len(mine)))
            assert mine[0].start == 0
            assert mine[-1].end == obj.size
            assert all(a.end == b.start for a, b in itertools.pairwise(mine))
            assert all(s.end - s.start <= target for s in mine)


def test_gzip_objects_are_one_shard() -> None:
    objects = [InputObject("/x/a.jsonl.gz", 10_000, "a.jsonl.gz", True)]
    assert plan_shards(objects, target_bytes=10) == [
        Shard(
            file_index=0,
            uri="/x/a.jsonl.gz",
            start=0,
            end=10_000,
            index=0,
            count=1,
            compressed=True,
        )
    ]


def test_plan_rejects_a_zero_target() -> None:
    with pytest.raises(ConfigError, match="shard size"):
        plan_shards([], target_bytes=0)


# --- reading, local


def test_shards_reassemble_to_the_file_for_random_files_and_sizes(tmp_path: Path) -> None:
    rng = random.Random(7)
    path = tmp_path / "f.jsonl"
    for _ in range(400):
        data = _random_jsonl(rng)
        path.write_bytes(data)
        objects = list_inputs(str(path))
        target = rng.randint(1, max(1, len(data)))
        max_line = rng.choice([8, 64, 1 << 20])
        chunk = rng.choice([1, 2, 5, 17, 1 << 20])
        lines, oversize = _read_all(
            plan_shards(objects, target_bytes=target), max_line_bytes=max_line, chunk_bytes=chunk
        )
        expected = _expected_lines(data)
        want_oversize = {i: len(line) for i, line in enumerate(expected) if len(line) > max_line}
        assert oversize == want_oversize, (data, target, chunk)
        assert lines == [b"" if i in want_oversize else x for i, x in enumerate(expected)], (
            data,
            target,
            chunk,
        )


def test_line_longer_than_several_shards(tmp_path: Path) -> None:
    data = b"a\n" + b"L" * 1000 + b"\nb\nc"
    path = tmp_path / "f.jsonl"
    path.write_bytes(data)
    shards = plan_shards(list_inputs(str(path)), target_bytes=100)
    per_shard = [read_shard_lines(s, max_line_bytes=10_000).lines for s in shards]
    assert per_shard[0] == [b"a", b"L" * 1000]  # the long line belongs where it starts
    assert all(lines == [] for lines in per_shard[1:-1])
    assert per_shard[-1] == [b"b", b"c"]


def test_shard_starting_exactly_at_a_line_keeps_it(tmp_path: Path) -> None:
    path = tmp_path / "f.jsonl"
    path.write_bytes(b"aaaa\nbbbb\ncccc\n")  # lines start at 0, 5, 10
    objects = list_inputs(str(path))
    shards = [
        Shard(file_index=0, uri=objects[0].uri, start=0, end=5, index=0, count=2, compressed=False),
        Shard(
            file_index=0, uri=objects[0].uri, start=5, end=15, index=1, count=2, compressed=False
        ),
    ]
    assert [read_shard_lines(s, max_line_bytes=100).lines for s in shards] == [
        [b"aaaa"],
        [b"bbbb", b"cccc"],
    ]


def test_split_is_on_newline_only(tmp_path: Path) -> None:
    data = '{"a": "x\u2028y\u0085z"}\r\n\n{"b": 1}'.encode()
    path = tmp_path / "f.jsonl"
    path.write_bytes(data)
    [shard] = plan_shards(list_inputs(str(path)), target_bytes=1 << 20)
    assert read_shard_lines(shard, max_line_bytes=100).lines == [
        '{"a": "x\u2028y\u0085z"}'.encode(),
        b"",
        b'{"b": 1}',
    ]


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "f.jsonl"
    path.write_bytes(b"")
    [shard] = plan_shards(list_inputs(str(path)), target_bytes=10)
    assert read_shard_lines(shard, max_line_bytes=10).lines == []


def test_gzip_is_read_whole(tmp_path: Path) -> None:
    data = b"".join(b'{"i": %d}\n' % i for i in range(5000))
    path = tmp_path / "f.jsonl.gz"
    path.write_bytes(gzip.compress(data))
    shards = plan_shards(list_inputs(str(path)), target_bytes=100)
    assert len(shards) == 1
    lines, _ = _read_all(shards, max_line_bytes=100, chunk_bytes=4096)
    assert lines == _expected_lines(data)


def test_oversize_line_is_streamed_not_held(tmp_path: Path) -> None:
    huge = 24 << 20
    data = b'{"a": 1}\n' + b"x" * huge + b"\r\n" + b'{"b": 2}\n'
    path = tmp_path / "f.jsonl"
    path.write_bytes(data)
    [shard] = plan_shards(list_inputs(str(path)), target_bytes=1 << 30)
    del data
    tracemalloc.start()
    try:
        got = read_shard_lines(shard, max_line_bytes=1 << 20, chunk_bytes=1 << 20)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert got.lines == [b'{"a": 1}', b"", b'{"b": 2}']
    assert got.oversize == {1: huge}
    # A chunk, its split pieces and at most one limit's worth of partial line: far below 24 MiB.
    assert peak < 6 << 20, peak


def test_missing_file_is_a_shard_error(tmp_path: Path) -> None:
    shard = Shard(
        file_index=0,
        uri=str(tmp_path / "gone.jsonl"),
        start=0,
        end=10,
        index=0,
        count=1,
        compressed=False,
    )
    with pytest.raises(ShardError, match=r"gone\.jsonl"):
        read_shard_lines(shard, max_line_bytes=100)


# --- reading, S3


@pytest.fixture
def get_requests(s3_server: str) -> Iterator[list[str]]:
    """The Range header of every GetObject request sent by the client batchcast uses.

    A botocore event hook on the real client: it observes requests, changes nothing.
    """
    ranges: list[str] = []

    def record(request: Any, **_: Any) -> None:
        ranges.append(
            request.headers.get("Range", b"").decode() if request.headers.get("Range") else ""
        )

    events = s3_client().meta.events
    events.register("before-send.s3.GetObject", record)
    try:
        yield ranges
    finally:
        events.unregister("before-send.s3.GetObject", record)


def test_s3_shards_reassemble_with_one_ranged_get_each(
    s3_bucket: str, get_requests: list[str]
) -> None:
    rng = random.Random(3)
    client = boto3.session.Session().client("s3")
    blobs = [_random_jsonl(rng) * 20 for _ in range(5)]
    for i, data in enumerate(blobs):
        client.put_object(Bucket=s3_bucket, Key=f"in/{i}.jsonl", Body=data)
    objects = list_inputs(f"s3://{s3_bucket}/in/")
    shards = plan_shards(objects, target_bytes=97)
    assert len(shards) > 2 * len(objects)
    for i, data in enumerate(blobs):
        mine = [s for s in shards if s.file_index == i]
        lines, _ = _read_all(mine, max_line_bytes=1 << 20, chunk_bytes=13)
        assert lines == _expected_lines(data)
    nonempty = [s for s in shards if s.end > s.start]
    assert sorted(get_requests) == sorted(f"bytes={max(s.start - 1, 0)}-" for s in nonempty)


def test_s3_gzip_and_missing_key(s3_bucket: str, get_requests: list[str]) -> None:
    data = b"".join(b'{"i": %d}\n' % i for i in range(3000))
    boto3.session.Session().client("s3").put_object(
        Bucket=s3_bucket, Key="f.jsonl.gz", Body=gzip.compress(data)
    )
    [shard] = plan_shards(list_inputs(f"s3://{s3_bucket}/f.jsonl.gz"), target_bytes=64)
    assert read_shard_lines(shard, max_line_bytes=100).lines == _expected_lines(data)
    assert len(get_requests) == 1
    gone = Shard(
        file_index=0,
        uri=f"s3://{s3_bucket}/gone.jsonl",
        start=0,
        end=10,
        index=0,
        count=1,
        compressed=False,
    )
    with pytest.raises(ShardError, match=r"gone\.jsonl"):
        read_shard_lines(gone, max_line_bytes=100)


# --- pieces: a shard too big to hold at once


def _pieces_of(shard: Shard, budget: PieceBudget, **kwargs: Any) -> list[tuple[int, int]]:
    return read_shard_lines(shard, budget=budget, **kwargs).pieces


@pytest.mark.parametrize(("compressed", "at_least_split"), [(False, 50), (True, 100)])
def test_pieces_read_back_to_the_shard_for_random_files_and_budgets(
    tmp_path: Path, compressed: bool, at_least_split: int
) -> None:
    """Plain files cut into shards of every size, and gzip objects (always one shard, the case
    pieces exist for): each piece plan reads back, piece by piece, to the whole shard's lines,
    with a byte order mark, \\r\\n, oversize lines and an empty last line at the file's end."""
    rng = random.Random(11)
    path = tmp_path / ("f.jsonl.gz" if compressed else "f.jsonl")
    split = 0
    for _ in range(300):
        data = _random_jsonl(rng) + rng.choice([b"", b"\n", b"\r\n\r\n"])
        if rng.random() < 0.3:
            data = b"\xef\xbb\xbf" + data  # a byte order mark stays the first piece's to strip
        path.write_bytes(gzip.compress(data) if compressed else data)
        objects = list_inputs(str(path))
        max_line = rng.choice([8, 64, 1 << 20])
        budget = PieceBudget(rng.randint(1, 200), rng.randint(1, 400), rng.randint(0, 40))
        for shard in plan_shards(objects, target_bytes=rng.randint(1, max(1, len(data)))):
            whole = read_shard_lines(shard, max_line_bytes=max_line)
            plans = {
                tuple(_pieces_of(shard, budget, max_line_bytes=max_line, chunk_bytes=chunk))
                for chunk in (1, 3, 1 << 20)
            }
            assert len(plans) == 1, plans  # the plan depends on the lines, not on the reads
            ranges = list(plans.pop())
            if not ranges:  # it fits one piece: read whole
                got = read_shard_lines(shard, max_line_bytes=max_line, budget=budget)
                assert (got.lines, got.oversize) == (whole.lines, whole.oversize)
                continue
            split += 1
            assert ranges[0][0] == 0
            assert ranges[-1][1] == len(whole.lines)
            assert all(a < b == c for (a, b), (c, _) in itertools.pairwise(ranges))
            lines: list[bytes] = []
            oversize: dict[int, int] = {}
            for piece in shard.split(ranges):
                got = read_shard_lines(
                    piece, max_line_bytes=max_line, chunk_bytes=rng.choice([2, 1 << 20])
                )
                assert len(got.lines) == piece.line_stop - piece.line_start
                oversize.update({len(lines) + i: n for i, n in got.oversize.items()})
                lines.extend(got.lines)
                sizes = [len(x) for x in got.lines]
                if len(sizes) > 1:  # a piece of several lines keeps within the budget
                    assert sum(sizes) <= budget.input_bytes
                    assert sum(sizes) + budget.line_output * len(sizes) <= budget.output_bytes
            assert (lines, oversize) == (whole.lines, whole.oversize), (data, ranges)
    assert split > at_least_split  # the budgets were small enough to split many shards


def test_a_gzip_bomb_is_planned_in_bounded_memory(tmp_path: Path) -> None:
    """A 100 KB gzip object of 48 MB of lines: the reader holds one piece, never the stream."""
    line = b'{"start": "2020-01-01 00:00:00", "target": [1, 2, 3]}\n'
    path = tmp_path / "bomb.jsonl.gz"
    with gzip.open(path, "wb", compresslevel=9) as out:
        for _ in range(48):
            out.write(line * ((1 << 20) // len(line)))
    count = 48 * ((1 << 20) // len(line))
    [shard] = plan_shards(list_inputs(str(path)), target_bytes=1 << 20)
    budget = PieceBudget(input_bytes=1 << 20, output_bytes=4 << 20, line_output=64)
    tracemalloc.start()
    try:
        ranges = _pieces_of(shard, budget, max_line_bytes=1 << 20)
        _, peak = tracemalloc.get_traced_memory()
        last = shard.split(ranges)[-1]
        got = read_shard_lines(last, max_line_bytes=1 << 20)
        _, peak_piece = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    per_piece = (1 << 20) // (len(line) - 1)  # the input bound binds first here
    assert ranges[0] == (0, per_piece)
    assert ranges[-1][1] == count
    assert len(ranges) == math.ceil(count / per_piece)
    assert got.lines == [line[:-1]] * (count - ranges[-1][0])
    assert peak < 8 << 20, peak
    assert peak_piece < 8 << 20, peak_piece
