"""Reassembler.split: a shard's pieces take its slot, in order, whatever the arrival."""

from __future__ import annotations

import random

import pytest

from batchcast.runner.reassemble import Reassembler


def test_pieces_take_the_shards_slot_in_order_whatever_the_arrival() -> None:
    """Shard 0 split while next, shard 2 split while later; shard 1 whole, shard 3 one piece."""
    rng = random.Random(3)
    for _ in range(200):
        r: Reassembler[str] = Reassembler({0: 4})
        r.split(0, 0, 3)
        arrivals = [(0, 0), (0, 1), (0, 2), (1, -1), (2, 0), (2, 1), (3, 0)]
        rng.shuffle(arrivals)
        split_later = False
        out: list[tuple[int, str, bool]] = []
        for shard, piece in arrivals:
            if shard in (2, 3) and not split_later:
                r.split(0, 2, 2)
                r.split(0, 3, 1)
                split_later = True
            out += r.add(0, shard, f"{shard}.{piece}", piece)
            assert r.buffered == len(arrivals[: arrivals.index((shard, piece)) + 1]) - len(out)
        assert [x[1] for x in out] == ["0.0", "0.1", "0.2", "1.-1", "2.0", "2.1", "3.0"]
        assert [x[0] for x in out] == [0, 0, 0, 1, 2, 2, 3]
        assert [x[2] for x in out] == [False] * 6 + [True]  # only the very last is last
        assert r.done(0)
        assert r.buffered == 0
        r.check_complete()


def test_a_split_shard_is_a_gap_until_its_last_piece() -> None:
    r: Reassembler[str] = Reassembler({0: 1})
    r.split(0, 0, 2)
    assert r.add(0, 0, "a", 0) == [(0, "a", False)]
    assert not r.done(0)
    with pytest.raises(ValueError, match="shard 0 never arrived"):
        r.check_complete()
    assert r.add(0, 0, "b", 1) == [(0, "b", True)]
    r.check_complete()


@pytest.mark.parametrize(
    ("setup", "call"),
    [
        # a whole result for a split shard, a piece out of range, a piece of an unsplit shard
        (lambda r: r.split(0, 0, 2), lambda r: r.add(0, 0, "x")),
        (lambda r: r.split(0, 0, 2), lambda r: r.add(0, 0, "x", 2)),
        (lambda r: None, lambda r: r.add(0, 1, "x", 0)),
        # a duplicate piece, released or buffered
        (lambda r: (r.split(0, 0, 2), r.add(0, 0, "x", 0)), lambda r: r.add(0, 0, "x", 0)),
        (lambda r: (r.split(0, 1, 2), r.add(0, 1, "x", 1)), lambda r: r.add(0, 1, "x", 1)),
        # splitting twice, into none, a shard already released or with a result waiting
        (lambda r: r.split(0, 1, 2), lambda r: r.split(0, 1, 3)),
        (lambda r: None, lambda r: r.split(0, 1, 0)),
        (lambda r: r.add(0, 0, "x"), lambda r: r.split(0, 0, 2)),
        (lambda r: r.add(0, 1, "x"), lambda r: r.split(0, 1, 2)),
        (lambda r: None, lambda r: r.split(0, 2, 2)),
    ],
)
def test_misuse_of_split_and_pieces_raises_and_changes_nothing(setup, call) -> None:  # type: ignore[no-untyped-def]
    r: Reassembler[str] = Reassembler({0: 2})
    setup(r)
    before = r.buffered
    with pytest.raises(ValueError, match=r"file 0: shard \d"):
        call(r)
    assert r.buffered == before
