"""Training windows: uniform over (series, split point) pairs; validation tails held out."""

from __future__ import annotations

import numpy as np
import pytest

from batchcast.forecast.windows import MAX_VALIDATION_SERIES, WindowSampler, validation_split

P = 3


def test_sampler_is_uniform_over_split_points() -> None:
    # readable lengths 4, 13, 3: split points 1..1, 1..10, none
    sampler = WindowSampler(np.array([4, 13, 3]), P)
    assert sampler.num_split_points == 11
    assert sampler.num_series_with_windows == 2
    series, split = sampler.draw(110_000, np.random.default_rng(0))
    assert set(np.unique(series)) == {0, 1}
    assert split.min() == 1
    assert np.all(split + P <= np.array([4, 13, 3])[series])  # the future stays inside
    pairs, counts = np.unique(series * 100 + split, return_counts=True)
    assert len(pairs) == 11  # every split point drawn ...
    assert counts.min() > 0.9 * 10_000
    assert counts.max() < 1.1 * 10_000


def test_sampler_is_deterministic_for_a_generator() -> None:
    sampler = WindowSampler(np.array([50, 20]), P)
    a = sampler.draw(64, np.random.default_rng(7))
    b = sampler.draw(64, np.random.default_rng(7))
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_sampler_without_windows() -> None:
    with pytest.raises(ValueError, match="no series"):
        WindowSampler(np.array([3, 2]), P)


def test_validation_split_holds_out_tails_of_long_enough_series() -> None:
    lengths = np.array([7, 6, 20, 0])
    split = validation_split(lengths, P, np.random.default_rng(0))
    assert split.series.tolist() == [0, 2]  # 7 and 20 > 2P; 6 is not
    assert split.split.tolist() == [4, 17]
    assert split.train_end.tolist() == [4, 6, 17, 0]
    # training windows of a validated series end where its tail starts
    series, cut = WindowSampler(split.train_end, P).draw(1000, np.random.default_rng(1))
    assert np.all(cut + P <= split.train_end[series])


def test_validation_split_is_capped() -> None:
    lengths = np.full(MAX_VALIDATION_SERIES + 500, 10)
    split = validation_split(lengths, P, np.random.default_rng(0))
    assert split.series.size == MAX_VALIDATION_SERIES
    assert np.all(np.diff(split.series) > 0)
    assert int((split.train_end == 10 - P).sum()) == MAX_VALIDATION_SERIES


def test_min_past_starts_windows_after_that_much_history() -> None:
    # readable lengths 4, 13, 3, 40 with min_past 8: split points 1 (too short for 8: only its
    # last split point), 8..10, none, 8..37
    sampler = WindowSampler(np.array([4, 13, 3, 40]), P, min_past=8)
    assert sampler.num_split_points == 1 + 3 + 30
    series, split = sampler.draw(68_000, np.random.default_rng(0))
    pairs, counts = np.unique(series * 100 + split, return_counts=True)
    expected = [1] + [100 + s for s in range(8, 11)] + [300 + s for s in range(8, 38)]
    assert pairs.tolist() == expected  # every allowed split point, and no other
    assert counts.min() > 0.85 * 2_000
    assert counts.max() < 1.15 * 2_000
    # min_past 1 is the plain sampler
    plain = WindowSampler(np.array([4, 13, 3, 40]), P, min_past=1)
    default = WindowSampler(np.array([4, 13, 3, 40]), P)
    a = plain.draw(64, np.random.default_rng(3))
    b = default.draw(64, np.random.default_rng(3))
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
