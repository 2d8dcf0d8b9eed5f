"""The driver's window: how a piece's output is expected (pure, no workers)."""

from __future__ import annotations

from batchcast.io.output import LineBuilder
from batchcast.io.shards import Shard
from batchcast.runner.executor import Task
from batchcast.runner.processor import PIECE_OUTPUT_BYTES, ShardResult
from batchcast.runner.window import Window

_GZIP = Shard(file_index=0, uri="/a.jsonl.gz", start=0, end=10, index=0, count=1, compressed=True)
_PLAIN = Shard(file_index=1, uri="/b.jsonl", start=0, end=1000, index=0, count=1, compressed=False)


def _result(shard: Shard, output_bytes: int) -> ShardResult:
    builder = LineBuilder()
    builder.add(b"x" * output_bytes)
    return ShardResult(shard.file_index, shard.index, builder.build(), 1, 1, [])


def test_a_piece_is_expected_to_make_the_piece_budget_whatever_its_input_share() -> None:
    window = Window(workers=2, max_held_bytes=3 * PIECE_OUTPUT_BYTES, deadline_s=60)
    window.arrived(_PLAIN, _result(_PLAIN, 2000))  # a ratio of about 2 output bytes a byte
    pieces = _GZIP.split([(i, i + 1) for i in range(12)])  # more pieces than gzip bytes
    assert {window.expected_bytes(p) for p in pieces} == {PIECE_OUTPUT_BYTES}
    assert window.expected_bytes(_PLAIN) > 0
    # So the byte bound holds pieces back: three in flight fill the budget, a fourth waits.
    in_flight = [_task(p) for p in pieces[:3]]
    assert not window.may_submit(pieces[3], in_flight, buffered=0)


def test_a_piece_does_not_teach_the_window_an_output_ratio() -> None:
    window = Window(workers=2, max_held_bytes=1 << 30, deadline_s=60)
    [piece, _] = _GZIP.split([(0, 1), (1, 2)])
    window.arrived(piece, _result(piece, 50_000_000))  # 5 MB per compressed byte
    assert window.ratio is None
    window.arrived(_PLAIN, _result(_PLAIN, 2000))
    assert window.ratio is not None
    assert window.ratio < 3


def _task(shard: Shard) -> Task:
    return Task(shard, actor=0, attempt=1, generation=0, submitted=0.0, started=0.0)
