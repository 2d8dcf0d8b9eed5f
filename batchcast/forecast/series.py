"""SeriesBatch: the columnar batch of series that crosses from ``io`` to ``forecast``.

Numpy only (no torch), so ``io`` can build it. Variable-length fields are stored flat with
offsets (CSR style) so a whole batch is a handful of contiguous arrays: cheap to build, cheap
to move through Ray's object store (zero-copy for numpy), and vectorisable downstream.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["SeriesBatch"]


@dataclass(frozen=True)
class SeriesBatch:
    """``B`` series in columnar form.

    Attributes:
        start: (B,) int64 seconds since 1970-01-01 of each series' first point (naive time).
        target: (sum T_b,) float32, all targets concatenated; NaN marks a missing value.
        target_offsets: (B + 1,) int64; series b is ``target[offsets[b]:offsets[b + 1]]``.
        cat: (B, n_cat) int64 categorical features (n_cat may be 0).
        dynamic_feat: (sum D_b, n_dyn) float32, each series' dynamic features stacked in time.
        dynamic_offsets: (B + 1,) int64, like ``target_offsets`` for ``dynamic_feat``'s rows.
        thresholds: (B, k) float64 per-record class thresholds (``classes.thresholds_field``,
            SPEC.md §8), or None when the records bring none.
    """

    start: np.ndarray
    target: np.ndarray
    target_offsets: np.ndarray
    cat: np.ndarray
    dynamic_feat: np.ndarray
    dynamic_offsets: np.ndarray
    thresholds: np.ndarray | None = None

    def __post_init__(self) -> None:
        # Internal invariants: io builds these arrays; users never do.
        b = len(self.start)
        assert self.target_offsets.shape == (b + 1,), "target_offsets must be (B+1,)"
        assert self.dynamic_offsets.shape == (b + 1,), "dynamic_offsets must be (B+1,)"
        assert self.cat.ndim == 2, "cat must be (B, n_cat)"
        assert self.cat.shape[0] == b, "cat must be (B, n_cat)"
        assert self.dynamic_feat.ndim == 2, "dynamic_feat must be (rows, n_dyn)"
        if self.thresholds is not None:
            assert self.thresholds.ndim == 2, "thresholds must be (B, k)"
            assert self.thresholds.shape[0] == b, "thresholds must be (B, k)"

    @property
    def num_series(self) -> int:
        return len(self.start)

    @property
    def lengths(self) -> np.ndarray:
        """(B,) int64 target lengths T_b."""
        return np.diff(self.target_offsets)

    def series(self, b: int) -> np.ndarray:
        """The target of series ``b`` (a view)."""
        return self.target[self.target_offsets[b] : self.target_offsets[b + 1]]

    def dynamic(self, b: int) -> np.ndarray:
        """The dynamic features of series ``b``, (D_b, n_dyn) (a view)."""
        return self.dynamic_feat[self.dynamic_offsets[b] : self.dynamic_offsets[b + 1]]

    def slice(self, lo: int, hi: int) -> SeriesBatch:
        """Series ``lo .. hi - 1`` as a new batch of views (no copy of the values)."""
        if lo == 0 and hi == self.num_series:
            return self
        t0, t1 = self.target_offsets[lo], self.target_offsets[hi]
        d0, d1 = self.dynamic_offsets[lo], self.dynamic_offsets[hi]
        return SeriesBatch(
            start=self.start[lo:hi],
            target=self.target[t0:t1],
            target_offsets=self.target_offsets[lo : hi + 1] - t0,
            cat=self.cat[lo:hi],
            dynamic_feat=self.dynamic_feat[d0:d1],
            dynamic_offsets=self.dynamic_offsets[lo : hi + 1] - d0,
            thresholds=None if self.thresholds is None else self.thresholds[lo:hi],
        )

    def take(self, index: Sequence[int] | np.ndarray) -> SeriesBatch:
        """A new batch of the series at ``index``, in that order."""
        index = np.asarray(index, dtype=np.int64)
        return SeriesBatch.from_lists(
            start=self.start[index],
            targets=[self.series(int(b)) for b in index],
            cat=self.cat[index],
            dynamic=[self.dynamic(int(b)) for b in index],
            num_dynamic_feat=self.dynamic_feat.shape[1],
            num_cat=self.cat.shape[1],
            thresholds=None if self.thresholds is None else self.thresholds[index],
        )

    @staticmethod
    def from_lists(
        *,
        start: Sequence[int] | np.ndarray,
        targets: Sequence[Sequence[float] | np.ndarray],
        cat: Sequence[Sequence[int]] | np.ndarray | None = None,
        dynamic: Sequence[np.ndarray | Sequence[Sequence[float]]] | None = None,
        num_dynamic_feat: int = 0,
        num_cat: int | None = None,
        thresholds: Sequence[Sequence[float]] | np.ndarray | None = None,
    ) -> SeriesBatch:
        """Build from per-series lists.

        Args:
            start: (B,) seconds since epoch.
            targets: B arrays of floats (NaN for missing).
            cat: (B, n_cat) ints, or None for no categorical features.
            dynamic: B arrays of shape (D_b, n_dyn) (time-major), or None.
            num_dynamic_feat: n_dyn, needed when ``dynamic`` is None or empty.
            num_cat: n_cat, to keep the width of ``cat`` for a batch of zero series;
                None infers it from ``cat``.
            thresholds: (B, k) per-record class thresholds, or None.
        """
        b = len(targets)
        lengths = np.fromiter((len(t) for t in targets), dtype=np.int64, count=b)
        offsets = np.zeros(b + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        flat = (
            np.concatenate([np.asarray(t, dtype=np.float32) for t in targets])
            if b and offsets[-1]
            else np.zeros(0, dtype=np.float32)
        )
        if cat is None or num_cat == 0:
            cat_arr = np.zeros((b, 0), dtype=np.int64)
        elif num_cat is not None:
            cat_arr = np.asarray(cat, dtype=np.int64).reshape(b, num_cat)
        else:
            cat_arr = np.asarray(cat, dtype=np.int64)
            if cat_arr.ndim != 2:  # no rows: no width to infer, so no features
                cat_arr = cat_arr.reshape(b, -1) if b else np.zeros((0, 0), dtype=np.int64)
        if dynamic is None or num_dynamic_feat == 0:
            dyn = np.zeros((0, num_dynamic_feat), dtype=np.float32)
            dyn_offsets = np.zeros(b + 1, dtype=np.int64)
        else:
            blocks = [
                np.asarray(d, dtype=np.float32).reshape(-1, num_dynamic_feat) for d in dynamic
            ]
            dyn_offsets = np.zeros(b + 1, dtype=np.int64)
            np.cumsum([len(x) for x in blocks], out=dyn_offsets[1:])
            dyn = np.concatenate(blocks) if blocks else np.zeros((0, num_dynamic_feat), np.float32)
        return SeriesBatch(
            start=np.asarray(start, dtype=np.int64).reshape(b),
            target=flat,
            target_offsets=offsets,
            cat=cat_arr,
            dynamic_feat=dyn,
            dynamic_offsets=dyn_offsets,
            thresholds=None if thresholds is None else _thresholds(thresholds, b),
        )


def _thresholds(thresholds: Sequence[Sequence[float]] | np.ndarray, b: int) -> np.ndarray:
    array = np.asarray(thresholds, dtype=np.float64)
    # (0, k) stays as it is; an empty list for no series has no k to infer: (0, 0).
    return (
        array.reshape(b, -1) if b else array.reshape(0, array.shape[-1] if array.ndim == 2 else 0)
    )
