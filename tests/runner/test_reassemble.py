"""Reassembly: results in any order come out in index order per file; gaps and repeats raise."""

from __future__ import annotations

import random

import pytest

from batchcast.runner import Reassembler


def _drain(order: Reassembler[str], arrivals: list[tuple[int, int]]) -> dict[int, list[str]]:
    """Feed (file, shard) arrivals; collect what is released, per file, in release order."""
    out: dict[int, list[str]] = {}
    for file_index, shard_index in arrivals:
        for released_index, result, last in order.add(
            file_index, shard_index, f"{file_index}:{shard_index}"
        ):
            assert result == f"{file_index}:{released_index}"
            out.setdefault(file_index, []).append(result)
            assert last == (released_index == COUNTS[file_index] - 1)
    return out


COUNTS = {0: 5, 1: 1, 2: 3}
EXPECTED = {f: [f"{f}:{i}" for i in range(n)] for f, n in COUNTS.items()}


def test_reverse_order_comes_out_in_index_order() -> None:
    order: Reassembler[str] = Reassembler(COUNTS)
    arrivals = [(f, i) for f, n in COUNTS.items() for i in range(n)][::-1]
    assert _drain(order, arrivals) == EXPECTED
    order.check_complete()
    assert order.buffered == 0
    assert all(order.done(f) for f in COUNTS)


@pytest.mark.parametrize("seed", range(20))
def test_random_order_comes_out_in_index_order(seed: int) -> None:
    order: Reassembler[str] = Reassembler(COUNTS)
    arrivals = [(f, i) for f, n in COUNTS.items() for i in range(n)]
    random.Random(seed).shuffle(arrivals)
    assert _drain(order, arrivals) == EXPECTED
    order.check_complete()


def test_nothing_is_released_until_the_first_shard_arrives() -> None:
    order: Reassembler[str] = Reassembler({0: 3})
    assert order.add(0, 2, "c") == []
    assert order.add(0, 1, "b") == []
    assert order.buffered == 2
    assert not order.done(0)
    assert order.add(0, 0, "a") == [(0, "a", False), (1, "b", False), (2, "c", True)]
    assert order.buffered == 0
    assert order.done(0)


def test_a_gap_makes_check_complete_raise() -> None:
    order: Reassembler[str] = Reassembler({0: 2, 1: 3})
    order.add(0, 0, "a")
    order.add(0, 1, "b")
    order.add(1, 0, "x")
    order.add(1, 2, "z")  # shard 1 of file 1 never arrives
    with pytest.raises(ValueError, match="file 1: shard 1 never arrived"):
        order.check_complete()


def test_a_file_with_no_result_at_all_is_a_gap() -> None:
    order: Reassembler[str] = Reassembler({0: 1, 1: 1})
    order.add(0, 0, "a")
    with pytest.raises(ValueError, match="file 1: shard 0 never arrived"):
        order.check_complete()


def test_a_file_with_zero_shards_is_complete() -> None:
    Reassembler[str]({0: 0}).check_complete()


@pytest.mark.parametrize("first", [0, 1])
def test_a_duplicate_raises_whether_released_or_still_buffered(first: int) -> None:
    order: Reassembler[str] = Reassembler({0: 3})
    order.add(0, first, "once")  # shard 0 is released at once; shard 1 waits in the buffer
    with pytest.raises(ValueError, match=f"shard {first} arrived twice"):
        order.add(0, first, "twice")


@pytest.mark.parametrize("index", [-1, 3, 100])
def test_a_shard_index_out_of_range_raises(index: int) -> None:
    order: Reassembler[str] = Reassembler({0: 3})
    with pytest.raises(ValueError, match="out of range"):
        order.add(0, index, "x")


def test_an_unknown_file_raises() -> None:
    order: Reassembler[str] = Reassembler({0: 1})
    with pytest.raises(KeyError):
        order.add(7, 0, "x")
