"""Forecast accuracy metrics with GluonTS's ``Evaluator`` definitions, in plain numpy.

Array-level and vectorised over series: :func:`series_metrics` takes ``(B, P)`` actuals and
``(B, Q, P)`` quantile forecasts and returns one ``(B,)`` array per metric;
:class:`MetricTotals` folds such batches into the aggregate in O(metrics) memory, so a stream
of any length is evaluated batch by batch, and two totals merge (evaluation can be split over
files or processes and summed).

The definitions are GluonTS's (``gluonts.evaluation.Evaluator`` with
``ignore_invalid_values=True`` and ``aggregation_strategy=aggregate_no_nan``, its defaults),
checked against it in ``tests/forecast/test_metrics.py``. Per series, over the horizon's
*observed* points only (a NaN actual is left out of every sum, mean and count):

- ``MSE``: mean of (y - mean forecast)^2 (the median when no mean is given, as GluonTS's
  ``QuantileForecast.mean`` falls back to it);
- ``abs_error``: sum of |y - median|; ``abs_target_sum``, ``abs_target_mean``: of |y|;
- ``seasonal_error``: mean of |y[t] - y[t-m]| over the in-sample history (both points
  observed), with ``m`` the seasonality, or 1 when the history is not longer than ``m``;
- ``MASE``: mean |y - median| / seasonal_error;
- ``MAPE``: mean of |y - median| / |y|; ``sMAPE``: 2 * mean of |y - median| / (|y| + |median|),
  where a term with a zero denominator is left out (numpy's masked division, as in GluonTS);
- ``MSIS`` (interval ``[L, U]`` = the widest symmetric pair of quantiles ``(a/2, 1 - a/2)``):
  mean of U - L + 2/a (L - y) 1{y < L} + 2/a (y - U) 1{y > U}, over seasonal_error;
- ``QuantileLoss[q]``: 2 * sum of |(Q_q - y)(1{y <= Q_q} - q)|;
- ``Coverage[q]``: mean of 1{y <= Q_q};
- ``ND``: abs_error / abs_target_sum.

A metric with no observed point is NaN. Aggregated over series, skipping NaN (``inf`` is
kept): sums for ``abs_error``, ``abs_target_sum``, ``QuantileLoss[q]`` and
``num_masked_target_values``, means for the others; then ``RMSE`` = sqrt(mean MSE),
``NRMSE`` = RMSE / mean abs_target_mean, ``ND`` = sum abs_error / sum abs_target_sum,
``wQuantileLoss[q]`` = sum QuantileLoss[q] / sum abs_target_sum, ``mean_wQuantileLoss`` and
``mean_absolute_QuantileLoss`` their means over q, ``MAE_Coverage`` = mean over q of
|Coverage[q] - q|.

Two differences from GluonTS, on purpose: the median must be one of the quantiles (GluonTS
interpolates, or extrapolates exponential tails, which invents a forecast nobody made); and
``MAE_Coverage`` is mean |Coverage[q] - q| as documented, where GluonTS 0.17 subtracts every q
from the coverage of its last quantile (a loop variable that leaks; the test pins both).

This module imports numpy only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

__all__ = [
    "DEFAULT_SEASONALITIES",
    "MetricTotals",
    "evaluate_arrays",
    "msis_pair",
    "seasonal_error",
    "seasonal_errors",
    "seasonality",
    "series_metrics",
]

# gluonts.time_feature.DEFAULT_SEASONALITIES, by pandas offset alias: points per natural
# cycle (a day for minutes and hours, a year for months and quarters). Daily and weekly data
# get 1 (GluonTS's choice: a naive "yesterday" scale, not "same day last week").
DEFAULT_SEASONALITIES: Mapping[str, int] = {
    "S": 3600,
    "min": 1440,
    "T": 1440,
    "H": 24,
    "h": 24,
    "D": 1,
    "B": 5,
    "W": 1,
    "M": 12,
    "Q": 4,
}

# numpy's masked division leaves out a term when |numerator| * tiny >= |denominator|
# (numpy.ma's _DomainSafeDivide); GluonTS divides masked arrays, so sMAPE and MAPE skip those.
_TINY = np.finfo(np.float64).tiny

# Aggregation over series of each per-series metric (GluonTS's agg_funs).
_SUMMED = ("abs_error", "abs_target_sum", "num_masked_target_values")
_AVERAGED = ("MSE", "abs_target_mean", "seasonal_error", "MASE", "MAPE", "sMAPE", "MSIS")


def seasonality(unit: str, multiple: int = 1) -> int:
    """The default seasonality of a frequency, as ``gluonts.time_feature.get_seasonality``.

    Args:
        unit: the base unit: SageMaker's ``min``, ``H``, ``D``, ``W``, ``M`` (or a pandas
            alias in :data:`DEFAULT_SEASONALITIES`); an unknown unit gets 1.
        multiple: the frequency's multiple (``5min`` -> 5).

    Returns:
        The unit's seasonality divided by ``multiple``, or 1 when ``multiple`` does not
        divide it (``5min`` -> 288, ``2H`` -> 12, ``7H`` -> 1, ``D`` -> 1, ``M`` -> 12).

    Raises:
        ValueError: for ``multiple`` < 1.
    """
    if multiple < 1:
        raise ValueError(f"multiple must be >= 1, got {multiple}")
    base = DEFAULT_SEASONALITIES.get(unit, 1)
    cycles, remainder = divmod(base, multiple)
    return 1 if remainder else cycles


def seasonal_errors(values: np.ndarray, offsets: np.ndarray, seasonality: int) -> np.ndarray:
    """The in-sample seasonal-naive error of many histories at once (MASE's and MSIS's scale).

    Series ``b`` is ``values[offsets[b]:offsets[b + 1]]`` (the CSR layout of ``SeriesBatch``).
    Its error is the mean of ``|x[t] - x[t - m]|`` over the pairs where both points are
    observed, with ``m = seasonality`` if ``seasonality < len(x)`` else 1.

    Args:
        values: (N,) the histories concatenated; NaN marks a missing point.
        offsets: (B + 1,) int64 start of each history in ``values``, then N.
        seasonality: m >= 1.

    Returns:
        (B,) float64; NaN for a history with no observed pair (empty, one point, all NaN).

    Raises:
        ValueError: for ``seasonality`` < 1.
    """
    if seasonality < 1:
        raise ValueError(f"seasonality must be >= 1, got {seasonality}")
    offsets = np.asarray(offsets, dtype=np.int64)
    x = np.asarray(values, dtype=np.float64)
    lengths = np.diff(offsets)
    b = lengths.size
    lag = np.where(seasonality < lengths, seasonality, 1)  # (B,)
    pairs = np.maximum(lengths - lag, 0)  # (B,) pairs (x[t], x[t + m]) per series
    owner = np.repeat(np.arange(b), pairs)  # (n_pairs,) the series of each pair
    first_pair = np.cumsum(pairs) - pairs  # (B,) index of each series' first pair
    left = offsets[:-1][owner] + np.arange(owner.size) - first_pair[owner]
    diff = np.abs(x[left] - x[left + lag[owner]])
    valid = np.isfinite(diff)
    total = np.bincount(owner, weights=np.where(valid, diff, 0.0), minlength=b)
    count = np.bincount(owner, weights=valid, minlength=b)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / count, np.nan)


def seasonal_error(past: np.ndarray, seasonality: int) -> float:
    """:func:`seasonal_errors` of one history ``past`` (T,); NaN when it has no observed pair."""
    past = np.asarray(past, dtype=np.float64).reshape(-1)
    return float(seasonal_errors(past, np.array([0, past.size]), seasonality)[0])


def msis_pair(levels: Sequence[float]) -> tuple[int, int] | None:
    """The widest symmetric pair of quantile levels, ``(q, 1 - q)`` with q < 0.5.

    Returns:
        The indices of the lower and upper level in ``levels``, or None when no pair is
        symmetric (then MSIS is not computed). MSIS's ``alpha`` is ``2 * levels[lower]``.
    """
    best: tuple[int, int] | None = None
    for i, lo in enumerate(levels):
        if lo >= 0.5:
            continue
        for j, hi in enumerate(levels):
            if abs(lo + hi - 1.0) < 1e-9 and (best is None or lo < levels[best[0]]):
                best = (i, j)
    return best


def _masked_sum(x: np.ndarray, where: np.ndarray) -> np.ndarray:
    """(B,) sums of ``x`` (B, P) over ``where``; NaN where nothing counts (a masked sum over
    no point is masked in GluonTS)."""
    n = where.sum(axis=1)
    with np.errstate(invalid="ignore"):
        return np.where(n > 0, np.where(where, x, 0.0).sum(axis=1), np.nan)


def _masked_mean(x: np.ndarray, where: np.ndarray) -> np.ndarray:
    """(B,) means of ``x`` (B, P) over ``where``; NaN where nothing counts."""
    n = where.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, np.where(where, x, 0.0).sum(axis=1) / n, np.nan)


def _check_inputs(
    actual: np.ndarray,
    quantiles: np.ndarray,
    levels: Sequence[float],
    mean: np.ndarray | None,
    scale: np.ndarray | None,
) -> int:
    """Validate shapes and values; return the index of the 0.5 level."""
    if actual.ndim != 2:
        raise ValueError(f"actual must be (B, P), got shape {actual.shape}")
    b, p = actual.shape
    if quantiles.shape != (b, len(levels), p):
        raise ValueError(
            f"quantiles must be (B, Q, P) = ({b}, {len(levels)}, {p}), got {quantiles.shape}"
        )
    if mean is not None and mean.shape != (b, p):
        raise ValueError(f"mean must be (B, P) = ({b}, {p}), got {mean.shape}")
    if scale is not None and scale.shape != (b,):
        raise ValueError(f"seasonal_error must be (B,) = ({b},), got {scale.shape}")
    bad = [q for q in levels if not 0.0 < q < 1.0]
    if bad:
        raise ValueError(f"quantile levels must be in (0, 1), got {bad}")
    if not np.isfinite(quantiles).all() or (mean is not None and not np.isfinite(mean).all()):
        raise ValueError("forecasts must be finite (GluonTS rejects a NaN forecast too)")
    medians = [i for i, q in enumerate(levels) if q == 0.5]
    if not medians:
        raise ValueError(
            f"the quantiles must include 0.5 (the median, for abs_error, MASE, sMAPE), "
            f"got {list(levels)}"
        )
    return medians[0]


def series_metrics(
    actual: np.ndarray,
    quantiles: np.ndarray,
    levels: Sequence[float],
    *,
    keys: Sequence[str] | None = None,
    mean: np.ndarray | None = None,
    seasonal_error: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Per-series metrics (the module docstring has the definitions).

    Args:
        actual: (B, P) the observed horizon; NaN (or inf) marks a missing point.
        quantiles: (B, Q, P) the forecast quantiles, level ``levels[i]`` at ``[:, i]``.
        levels: the Q quantile levels, each in (0, 1); one must be 0.5.
        keys: the Q names used in ``QuantileLoss[key]`` and ``Coverage[key]`` (default
            ``str(level)``); pass the output's keys (``"0.1"``) to keep them as configured.
        mean: (B, P) the forecast mean; None scores the median as the mean (GluonTS's
            fallback).
        seasonal_error: (B,) each series' in-sample scale (:func:`seasonal_errors`); None
            makes MASE and MSIS NaN.

    Returns:
        ``{name: (B,) float64}``: ``MSE``, ``abs_error``, ``abs_target_sum``,
        ``abs_target_mean``, ``seasonal_error``, ``MASE``, ``MAPE``, ``sMAPE``, ``ND``,
        ``num_masked_target_values``, ``MSIS`` (only when the levels hold a symmetric pair,
        :func:`msis_pair`), ``QuantileLoss[k]`` and ``Coverage[k]`` for each key.

    Raises:
        ValueError: for inconsistent shapes, levels outside (0, 1), no 0.5 level, or a
            non-finite forecast.
    """
    y = np.asarray(actual, dtype=np.float64)
    qs = np.asarray(quantiles, dtype=np.float64)
    mu = None if mean is None else np.asarray(mean, dtype=np.float64)
    scale = None if seasonal_error is None else np.asarray(seasonal_error, dtype=np.float64)
    median_at = _check_inputs(y, qs, levels, mu, scale)
    names = [str(q) for q in levels] if keys is None else [str(k) for k in keys]
    if len(names) != len(levels):
        raise ValueError(f"keys must name each of the {len(levels)} levels, got {names}")
    b, p = y.shape
    observed = np.isfinite(y)  # GluonTS's masked_invalid
    count = observed.sum(axis=1).astype(np.float64)  # (B,)
    y0 = np.where(observed, y, 0.0)
    median = qs[:, median_at]
    scale = np.full(b, np.nan) if scale is None else scale

    with np.errstate(invalid="ignore", divide="ignore"):
        error = np.abs(y0 - median)  # (B, P)
        target = np.abs(y0)
        point = median if mu is None else mu
        out: dict[str, np.ndarray] = {
            "MSE": _masked_mean((y0 - point) ** 2, observed),
            "abs_error": _masked_sum(error, observed),
            "abs_target_sum": _masked_sum(target, observed),
            "abs_target_mean": _masked_mean(target, observed),
            "seasonal_error": scale,
            "MASE": _masked_mean(error, observed) / scale,
        }
        ape = observed & ~(error * _TINY >= target)
        out["MAPE"] = _masked_mean(error / target, ape)
        sum_abs = target + np.abs(median)
        sape = observed & ~(error * _TINY >= sum_abs)
        out["sMAPE"] = 2.0 * _masked_mean(error / sum_abs, sape)
        out["ND"] = out["abs_error"] / out["abs_target_sum"]
        out["num_masked_target_values"] = p - count
        pair = msis_pair(levels)
        if pair is not None:
            alpha = 2.0 * levels[pair[0]]
            lower, upper = qs[:, pair[0]], qs[:, pair[1]]
            width = (
                upper
                - lower
                + 2.0 / alpha * (lower - y0) * (y0 < lower)
                + 2.0 / alpha * (y0 - upper) * (y0 > upper)
            )
            out["MSIS"] = _masked_mean(width, observed) / scale
        for i, (q, name) in enumerate(zip(levels, names, strict=True)):
            forecast = qs[:, i]
            below = y0 <= forecast
            loss = np.abs((forecast - y0) * (below - q))
            out[f"QuantileLoss[{name}]"] = 2.0 * _masked_sum(loss, observed)
            out[f"Coverage[{name}]"] = _masked_mean(below.astype(np.float64), observed)
    return out


class MetricTotals:
    """Running aggregate of per-series metrics; O(number of metrics) memory.

    Args:
        levels: the quantile levels, in the order of ``keys``.
        keys: their names as in :func:`series_metrics` (default ``str(level)``).
    """

    def __init__(self, levels: Sequence[float], *, keys: Sequence[str] | None = None) -> None:
        self.levels = tuple(float(q) for q in levels)
        self.keys = tuple(str(q) for q in self.levels) if keys is None else tuple(keys)
        if len(self.keys) != len(self.levels):
            raise ValueError(f"keys must name each of the {len(self.levels)} levels")
        self.num_series = 0
        self._sum: dict[str, float] = {}
        self._count: dict[str, int] = {}

    def add(self, metrics: Mapping[str, np.ndarray]) -> None:
        """Fold in one batch of :func:`series_metrics` output (NaN values are skipped)."""
        sizes = {np.asarray(v).shape for v in metrics.values()}
        if len(sizes) > 1:
            raise ValueError(f"per-series metrics must all be (B,), got shapes {sizes}")
        for name, values in metrics.items():
            v = np.asarray(values, dtype=np.float64)
            keep = ~np.isnan(v)  # aggregate_no_nan: NaN skipped, inf kept
            self._sum[name] = self._sum.get(name, 0.0) + float(v[keep].sum())
            self._count[name] = self._count.get(name, 0) + int(keep.sum())
        if sizes:
            self.num_series += int(next(iter(sizes))[0])

    def merge(self, other: MetricTotals) -> None:
        """Add another total (e.g. of another file) into this one."""
        if other.levels != self.levels or other.keys != self.keys:
            raise ValueError("cannot merge totals of different quantile levels")
        for name, value in other._sum.items():
            self._sum[name] = self._sum.get(name, 0.0) + value
            self._count[name] = self._count.get(name, 0) + other._count[name]
        self.num_series += other.num_series

    def _mean(self, name: str) -> float:
        n = self._count.get(name, 0)
        return self._sum[name] / n if n else math.nan

    def result(self) -> dict[str, float]:
        """The aggregate metrics, with GluonTS's names (the module docstring lists them).

        Returns:
            ``{name: value}``; a metric no series defines is NaN; ``MSIS`` only when the
            levels hold a symmetric pair.
        """
        out: dict[str, float] = {}
        for name in _SUMMED:
            out[name] = self._sum.get(name, 0.0)  # pandas: a sum over nothing is 0
        for name in _AVERAGED:
            if name in self._sum:
                out[name] = self._mean(name)
        for name in ("MSE", "abs_target_mean", "seasonal_error", "MASE", "MAPE", "sMAPE"):
            out.setdefault(name, math.nan)
        with np.errstate(invalid="ignore", divide="ignore"):
            target_sum = np.float64(out["abs_target_sum"])
            out["RMSE"] = float(np.sqrt(out["MSE"]))
            out["NRMSE"] = float(np.float64(out["RMSE"]) / out["abs_target_mean"])
            out["ND"] = float(np.float64(out["abs_error"]) / target_sum)
            losses, weighted, coverage_gaps = [], [], []
            for q, key in zip(self.levels, self.keys, strict=True):
                loss = self._sum.get(f"QuantileLoss[{key}]", 0.0)
                coverage = self._mean(f"Coverage[{key}]") if self.num_series else math.nan
                out[f"QuantileLoss[{key}]"] = loss
                out[f"Coverage[{key}]"] = coverage
                out[f"wQuantileLoss[{key}]"] = float(np.float64(loss) / target_sum)
                losses.append(loss)
                weighted.append(out[f"wQuantileLoss[{key}]"])
                coverage_gaps.append(abs(coverage - q))
        out["mean_absolute_QuantileLoss"] = float(np.mean(losses)) if losses else math.nan
        out["mean_wQuantileLoss"] = float(np.mean(weighted)) if weighted else math.nan
        out["MAE_Coverage"] = float(np.mean(coverage_gaps)) if coverage_gaps else math.nan
        return out


def evaluate_arrays(
    actual: np.ndarray,
    quantiles: np.ndarray,
    levels: Sequence[float],
    *,
    keys: Sequence[str] | None = None,
    mean: np.ndarray | None = None,
    past: Sequence[np.ndarray] | None = None,
    seasonality: int = 1,
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Aggregate and per-series metrics of one batch held in memory (the trainer's test set).

    Args:
        actual: (B, P) observed horizon (NaN: missing).
        quantiles: (B, Q, P) forecast quantiles.
        levels: the Q levels (one must be 0.5).
        keys: the Q names in the metric names (default ``str(level)``).
        mean: (B, P) forecast mean, or None (the median is scored as the mean).
        past: B in-sample histories for MASE and MSIS's scale; None leaves those NaN.
        seasonality: the seasonal-naive lag m for the scale.

    Returns:
        ``(aggregate, per_series)`` as :meth:`MetricTotals.result` and :func:`series_metrics`.

    Raises:
        ValueError: as :func:`series_metrics`, or when ``past`` does not hold B histories.
    """
    scale = None
    if past is not None:
        if len(past) != np.shape(actual)[0]:
            raise ValueError(f"past must hold {np.shape(actual)[0]} histories, got {len(past)}")
        lengths = np.fromiter((np.size(x) for x in past), dtype=np.int64, count=len(past))
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        flat = (
            np.concatenate([np.asarray(x, dtype=np.float64).reshape(-1) for x in past])
            if len(past)
            else np.zeros(0)
        )
        scale = seasonal_errors(flat, offsets, seasonality)
    per_series = series_metrics(
        actual, quantiles, levels, keys=keys, mean=mean, seasonal_error=scale
    )
    totals = MetricTotals(levels, keys=keys)
    totals.add(per_series)
    return totals.result(), per_series
