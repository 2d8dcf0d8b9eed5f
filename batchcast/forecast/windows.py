"""Where training and validation windows are cut: the sampler and the validation split.

A window is a split point ``s`` in a series: the network reads the points before ``s`` and
is scored on ``s .. s + P - 1``. Training split points are drawn uniformly over all valid
(series, split) pairs, which is what GluonTS's ``ExpectedNumInstanceSampler`` does in
expectation: a series contributes windows in proportion to its number of split points, so a
long series is not under-sampled and a short one is not over-sampled.

A valid split point leaves ``min_past`` points of history before it (the trainer passes
``context_length``), or is the series' last one when the series is too short for that. GluonTS
draws from the first point on, so many windows of a short series are mostly padding: a
"cold start" the network never meets when it forecasts the end of a series, which it reads
with all its history. On M3 monthly those windows taught the network to revert to the
context's mean, a forecast that sits below a trending series (benchmarks/RESULTS.md,
2026-12-06): starting windows at ``context_length`` cut the mean wQL by 1.7-3.4% (two seeds).

The validation split holds out the last ``P`` points of up to ``MAX_VALIDATION_SERIES``
series (the newest data, the thing a forecast is judged on). Training windows of those series
end before their held-out tail, so the validation loss is measured on points the optimizer
never saw.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "MAX_VALIDATION_SERIES",
    "ValidationSplit",
    "WindowSampler",
    "validation_candidates",
    "validation_split",
]

# Enough windows for a validation loss whose noise is well below the differences between
# epochs; more only costs time (the split is evaluated after every epoch).
MAX_VALIDATION_SERIES = 2000


@dataclass(frozen=True)
class ValidationSplit:
    """Which series are validated, where, and how much of each series training may use.

    Attributes:
        series: (V,) indices of the validated series.
        split: (V,) their split points, ``length - P`` (the held-out tail starts there).
        train_end: (B,) per series, the end of the part training windows may read (exclusive).
    """

    series: np.ndarray
    split: np.ndarray
    train_end: np.ndarray


def validation_candidates(lengths: np.ndarray, prediction_length: int) -> np.ndarray:
    """The series that can hold out their last ``prediction_length`` points and still have a
    training window (``length > 2 * prediction_length``), as indices."""
    return np.flatnonzero(np.asarray(lengths, dtype=np.int64) > 2 * prediction_length)


def validation_split(
    lengths: np.ndarray, prediction_length: int, rng: np.random.Generator
) -> ValidationSplit:
    """Hold out the last ``prediction_length`` points of series long enough to spare them.

    A series qualifies when, after its tail is held out, it still has a training window
    (``length > 2 * prediction_length``). When more than ``MAX_VALIDATION_SERIES`` qualify, a
    random subset (from ``rng``) is held out; the others train on their whole length.

    Args:
        lengths: (B,) series lengths.
        prediction_length: P.
        rng: source of the subset choice.

    Returns:
        The split; empty when no series qualifies.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    candidates = validation_candidates(lengths, prediction_length)
    if candidates.size > MAX_VALIDATION_SERIES:
        candidates = np.sort(rng.choice(candidates, MAX_VALIDATION_SERIES, replace=False))
    train_end = lengths.copy()
    train_end[candidates] -= prediction_length
    return ValidationSplit(
        series=candidates,
        split=lengths[candidates] - prediction_length,
        train_end=train_end,
    )


class WindowSampler:
    """Draws training windows uniformly over all valid (series, split point) pairs.

    Series ``b`` has split points ``first[b] .. end[b] - P`` (``P`` future points inside the
    readable part), where ``first[b] = min_past``, or ``end[b] - P`` (its one last window) when
    the series is too short for that, and at least 1. Shorter history than the network's
    window is fine: it is padded and masked.

    Args:
        end: (B,) the readable length of each series (``ValidationSplit.train_end``).
        prediction_length: P.
        min_past: the history a window starts with (1: any split point, GluonTS's rule).

    Raises:
        ValueError: if no series has a split point.
    """

    def __init__(self, end: np.ndarray, prediction_length: int, min_past: int = 1) -> None:
        self._p = prediction_length
        last = np.asarray(end, dtype=np.int64) - prediction_length  # the last split point
        # the first split point: min_past, or the last one for a series too short for it
        self._first = np.maximum(np.minimum(min_past, last), 1)
        counts = np.maximum(last - self._first + 1, 0)
        self._cumulative = np.cumsum(counts)
        if self.num_split_points == 0:
            raise ValueError("no series has a training window")
        self.num_series_with_windows = int(np.count_nonzero(counts))

    @property
    def num_split_points(self) -> int:
        """How many distinct training windows there are."""
        return int(self._cumulative[-1]) if self._cumulative.size else 0

    def draw(self, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``size`` windows drawn with replacement: (series indices, split points)."""
        flat = rng.integers(0, self.num_split_points, size=size)
        series = np.searchsorted(self._cumulative, flat, side="right")
        before = np.where(series > 0, self._cumulative[series - 1], 0)
        split = self._first[series] + flat - before
        return series.astype(np.int64), split.astype(np.int64)
