"""The scorer of ``batchcast evaluate``: aligned series in, blocks scored, totals folded.

:class:`Scorer` queues aligned series (history, horizon, forecast) and scores them in blocks
of ``BLOCK_SERIES`` with one vectorised call (:func:`batchcast.forecast.metrics.series_metrics`),
folding each block into running totals, so memory is a block's whatever the file's size.
The first forecast fixes the layout (quantile keys, horizon, whether there is a mean); a
later one that differs is skipped with its reason. :class:`Problems` counts skipped lines
exactly and keeps the first ``MAX_PROBLEMS`` with their reason.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from batchcast.errors import ConfigError
from batchcast.forecast.metrics import MetricTotals, seasonal_errors, series_metrics
from batchcast.report.reading import ForecastLine

__all__ = ["BLOCK_SERIES", "MAX_PROBLEMS", "Problems", "RowCallback", "Scorer"]

BLOCK_SERIES = 1024  # series scored together (one vectorised call)
MAX_PROBLEMS = 1000  # skipped lines kept with their reason; the count is always exact

RowCallback = Callable[[dict[str, Any]], None]


class Scorer:
    """Collects aligned series into blocks and folds their metrics into the totals."""

    def __init__(self, seasonality: int, on_series: RowCallback | None) -> None:
        self.seasonality = seasonality
        self.on_series = on_series
        self.keys: tuple[str, ...] | None = None  # fixed by the first forecast
        self.levels: tuple[float, ...] = ()
        self.order: list[str] = []  # keys sorted by level
        self.horizon = 0
        self.with_mean = False
        self.totals: MetricTotals | None = None
        # The block being collected, one entry per series.
        self.rows: list[dict[str, Any]] = []
        self.histories: list[np.ndarray] = []
        self.horizons: list[np.ndarray] = []
        self.quantiles: list[np.ndarray] = []  # (Q, P) each, in level order
        self.means: list[np.ndarray] = []
        self.series = 0
        self.not_forecast = 0  # actual series that no forecast matched (by item_id)

    def _fix_layout(self, f: ForecastLine) -> None:
        assert f.quantiles is not None  # checked by the caller
        keys = tuple(f.quantiles)
        try:
            levels = [float(k) for k in keys]
        except ValueError:
            raise ConfigError(f"quantile keys must be numbers, got {list(keys)}") from None
        if not all(0.0 < q < 1.0 for q in levels):  # NaN fails this too
            raise ConfigError(f"quantile keys must be levels in (0, 1), got {list(keys)}")
        ranked = sorted(zip(levels, keys, strict=True))
        self.levels = tuple(q for q, _ in ranked)
        self.order = [k for _, k in ranked]
        if 0.5 not in self.levels:
            raise ConfigError(
                f"the forecasts' quantiles {list(keys)} lack 0.5: the median is what "
                "abs_error, MASE and sMAPE score (add it to the job's quantiles)"
            )
        self.keys = tuple(self.order)
        self.horizon = len(next(iter(f.quantiles.values())))
        self.with_mean = f.mean is not None
        self.totals = MetricTotals(self.levels, keys=self.keys)

    def check(self, f: ForecastLine) -> str | None:
        """Why this forecast does not fit the layout of the first one, or None."""
        assert f.quantiles is not None
        if self.keys is None:
            self._fix_layout(f)
        if set(f.quantiles) != set(self.order):
            return f"quantile keys {list(f.quantiles)} differ from the first line's {self.order}"
        lengths = {len(v) for v in f.quantiles.values()}
        if f.mean is not None:
            lengths.add(len(f.mean))
        if lengths != {self.horizon}:
            return (
                f"forecast arrays have {sorted(lengths)} points; "
                f"the first line's have {self.horizon}"
            )
        if self.with_mean and f.mean is None:
            return "no mean, unlike the first line (RMSE would mix means and medians)"
        values = np.stack([*f.quantiles.values(), *([f.mean] if f.mean is not None else [])])
        if not np.isfinite(values).all():
            return "the forecast holds NaN or null values"
        return None

    def add(self, row: dict[str, Any], history: np.ndarray, horizon: np.ndarray,
            f: ForecastLine) -> None:  # fmt: skip
        """Queue one aligned series (its forecast passed :meth:`check`)."""
        assert f.quantiles is not None  # checked
        self.rows.append(row)
        self.histories.append(history)
        self.horizons.append(horizon)
        self.quantiles.append(np.stack([f.quantiles[k] for k in self.order]))
        if self.with_mean:
            assert f.mean is not None  # checked
            self.means.append(f.mean)
        if len(self.rows) >= BLOCK_SERIES:
            self.flush()

    def flush(self) -> None:
        """Score the queued series and fold them into the totals."""
        if not self.rows:
            return
        assert self.totals is not None  # set with the first forecast
        rows, histories = self.rows, self.histories
        actual = np.stack(self.horizons)  # (B, P)
        quantiles = np.stack(self.quantiles)  # (B, Q, P)
        mean = np.stack(self.means) if self.with_mean else None
        self.rows, self.histories, self.horizons, self.quantiles, self.means = [], [], [], [], []
        lengths = np.array([h.size for h in histories], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        scale = seasonal_errors(np.concatenate(histories), offsets, self.seasonality)
        metrics = series_metrics(
            actual, quantiles, self.levels, keys=self.keys, mean=mean, seasonal_error=scale
        )
        self.totals.add(metrics)
        self.series += len(rows)
        if self.on_series is not None:
            for b, row in enumerate(rows):
                self.on_series({**row, **{k: float(v[b]) for k, v in metrics.items()}})


class Problems:
    """Skipped lines: an exact count, the first ``MAX_PROBLEMS`` with their reason."""

    def __init__(self) -> None:
        self.count = 0
        self.kept: list[dict[str, Any]] = []

    def add(self, uri: str, line: int, reason: str) -> None:
        self.count += 1
        if len(self.kept) < MAX_PROBLEMS:
            self.kept.append({"uri": uri, "line": line, "reason": reason})
