"""ErrorLog: the listed errors are the first in input order whatever order shards finish in."""

from __future__ import annotations

from batchcast.errors import RecordError
from batchcast.runner.summary import ErrorLog


def _errors(uri: str, lines: range) -> list[RecordError]:
    return [RecordError(uri, n, "start", "missing") for n in lines]


def test_the_first_errors_in_input_order_are_listed_whatever_arrives_first() -> None:
    log = ErrorLog(5)
    log.add(_errors("b", range(1, 4)), file_index=1)  # file b's shard finished first
    log.add(_errors("a", range(7, 10)), file_index=0)  # then a's second shard
    log.add(_errors("a", range(1, 3)), file_index=0)  # then a's first
    assert [(e["uri"], e["line"]) for e in log.listed] == [
        ("a", 1), ("a", 2), ("a", 7), ("a", 8), ("a", 9),
    ]  # fmt: skip
    assert log.total == 8
    assert log.counts() == {"by_field": {"start": 8}, "by_file": {"b": 3, "a": 5}}


def test_a_limit_of_zero_lists_nothing_and_counts_everything() -> None:
    log = ErrorLog(0)
    log.add(_errors("a", range(1, 4)), file_index=0)
    assert log.listed == []
    assert log.total == 3
