"""Lags, time features, the age feature and model windows, vectorised over a batch of series.

Numpy only. Everything here reproduces GluonTS exactly (DEEPAR_REFERENCE.md A.4–A.7): the lag
lists of ``get_lags_for_frequency``, the time features of ``time_features_from_frequency_str``
(evaluated on pandas periods, so a weekly period's calendar attributes are those of its
closing Sunday), the age feature ``log10(2 + i)`` counted from the series start, and the
InstanceSplitter's left padding (padded rows are 0, padded points unobserved).

Time is handled as integer *period indices*: a series' start is truncated to the frequency's
base unit (minute, hour, day, week ending Sunday, month) exactly as ``pd.Period`` does, and
point ``i`` sits at ``start_index + i * multiple``. No pandas, no per-series Python.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from batchcast.forecast.config import ModelSpec
from batchcast.forecast.frequency import Frequency, parse_frequency
from batchcast.forecast.series import SeriesBatch

__all__ = [
    "Windows",
    "age_feature",
    "build_windows",
    "lags_for_frequency",
    "period_index",
    "time_feature_names",
    "time_features",
]

# 1970-01-01 was a Thursday; with Monday = 0 its weekday is 3, and the first Sunday is day 3.
_EPOCH_WEEKDAY = 3


def _as_frequency(freq: str | Frequency) -> Frequency:
    return freq if isinstance(freq, Frequency) else parse_frequency(freq)


# ---------------------------------------------------------------------------------------------
# Lags (gluonts.time_feature.lag.get_lags_for_frequency, lag_ub=1200, num_default_lags=7)


def _cycles(middle: float, delta: int) -> list[float]:
    # GluonTS builds these with np.arange on a float middle, then truncates with int().
    return [middle + d for d in range(-delta, delta + 1)]


def _minute_lags(multiple: float) -> list[list[float]]:
    return [_cycles(k * 60 // multiple, 2) for k in range(1, 4)]


def _hour_lags(multiple: float) -> list[list[float]]:
    return [_cycles(k * 24 // multiple, 1) for k in range(1, 8)]


def _day_lags(multiple: float) -> list[list[float]]:
    return [_cycles(k * 7 // multiple, 1) for k in range(1, 5)] + [_cycles(30 // multiple, 1)]


def _week_lags(multiple: float) -> list[list[float]]:
    return [_cycles(k * 52 // multiple, 1) for k in range(1, 4)] + [
        [4 // multiple, 8 // multiple, 12 // multiple]
    ]


def _month_lags(multiple: float) -> list[list[float]]:
    return [_cycles(k * 12 // multiple, 1) for k in range(1, 4)]


def lags_for_frequency(freq: str | Frequency, *, lag_ub: int = 1200) -> tuple[int, ...]:
    """The 1-based lags GluonTS picks for ``freq``: 1..7 then seasonal cycles in ``(7, lag_ub]``.

    The multiples are Python float floor-divisions, reproduced as GluonTS writes them (an
    integer rewrite changes some lags, e.g. ``4 // (2/168) == 336.0``).
    """
    f = _as_frequency(freq)
    n = f.multiple
    groups: list[list[float]]
    if f.unit == "M":
        groups = _month_lags(n)
    elif f.unit == "W":
        groups = _week_lags(n)
    elif f.unit == "D":
        groups = _day_lags(n) + _week_lags(n / 7.0)
    elif f.unit == "H":
        groups = _hour_lags(n) + _day_lags(n / 24) + _week_lags(n / (24 * 7))
    else:  # min
        groups = (
            _minute_lags(n)
            + _hour_lags(n / 60)
            + _day_lags(n / (60 * 24))
            + _week_lags(n / (60 * 24 * 7))
        )
    seasonal = {int(lag) for group in groups for lag in group if 7 < lag <= lag_ub}
    return tuple(range(1, 8)) + tuple(sorted(seasonal))


# ---------------------------------------------------------------------------------------------
# Time features


_FEATURES_BY_UNIT: dict[str, tuple[str, ...]] = {
    "M": ("month_of_year",),
    "W": ("day_of_month", "week_of_year"),
    "D": ("day_of_week", "day_of_month", "day_of_year"),
    "H": ("hour_of_day", "day_of_week", "day_of_month", "day_of_year"),
    "min": ("minute_of_hour", "hour_of_day", "day_of_week", "day_of_month", "day_of_year"),
}


def time_feature_names(freq: str | Frequency) -> tuple[str, ...]:
    """The names of the time features for ``freq``, in GluonTS's order."""
    return _FEATURES_BY_UNIT[_as_frequency(freq).unit]


def period_index(start_seconds: np.ndarray, freq: str | Frequency) -> np.ndarray:
    """Base-unit period index of each start, truncated the way ``pd.Period(start, freq)`` is.

    Args:
        start_seconds: (B,) int64 seconds since 1970-01-01 (naive time).

    Returns:
        (B,) int64: minutes, hours, days, weeks (ending on Sunday) or months since the epoch.
        Point ``i`` of a series is at ``index + i * multiple``.
    """
    f = _as_frequency(freq)
    s = np.asarray(start_seconds, dtype=np.int64)
    if f.unit == "min":
        return s // 60
    if f.unit == "H":
        return s // 3600
    days = s // 86400
    if f.unit == "D":
        return days
    if f.unit == "W":
        # Week k ends on day 3 + 7k (Sunday); a day belongs to the week that ends on or after it.
        return (days + _EPOCH_WEEKDAY) // 7
    return s.astype("datetime64[s]").astype("datetime64[M]").astype(np.int64)


def _calendar(days: np.ndarray) -> dict[str, np.ndarray]:
    """Weekday (Mon=0), day of month, day of year and ISO week of day numbers since the epoch."""
    d = days.astype("datetime64[D]")
    weekday = (days + _EPOCH_WEEKDAY) % 7
    day_of_month = (d - d.astype("datetime64[M]")).astype(np.int64) + 1
    day_of_year = (d - d.astype("datetime64[Y]")).astype(np.int64) + 1
    # ISO week: the week's Thursday decides the ISO year; count weeks from that year's start.
    thursday = (days - weekday + 3).astype("datetime64[D]")
    iso_week = (thursday - thursday.astype("datetime64[Y]")).astype(np.int64) // 7 + 1
    return {"dow": weekday, "dom": day_of_month, "doy": day_of_year, "week": iso_week}


def time_features(index: np.ndarray, freq: str | Frequency) -> np.ndarray:
    """GluonTS time features of the periods at base-unit ``index``.

    Args:
        index: (...) int64 period indices (see :func:`period_index`).

    Returns:
        (..., F) float32, each feature in [-0.5, 0.5], F = ``len(time_feature_names(freq))``.
    """
    f = _as_frequency(freq)
    idx = np.asarray(index, dtype=np.int64)
    values: dict[str, np.ndarray] = {}
    if f.unit == "M":
        values["month_of_year"] = (idx % 12) / 11.0 - 0.5
    else:
        if f.unit == "min":
            values["minute_of_hour"] = (idx % 60) / 59.0 - 0.5
            hours = idx // 60
        else:
            hours = idx
        if f.unit in ("min", "H"):
            values["hour_of_day"] = (hours % 24) / 23.0 - 0.5
            days = hours // 24
        elif f.unit == "D":
            days = idx
        else:  # W: calendar attributes of the period's closing Sunday (pandas uses the end)
            days = idx * 7 + _EPOCH_WEEKDAY
        cal = _calendar(days)
        values["day_of_week"] = cal["dow"] / 6.0 - 0.5
        values["day_of_month"] = (cal["dom"] - 1) / 30.0 - 0.5
        values["day_of_year"] = (cal["doy"] - 1) / 365.0 - 0.5
        values["week_of_year"] = (cal["week"] - 1) / 52.0 - 0.5
    names = _FEATURES_BY_UNIT[f.unit]
    # Computed in float64 then cast, as GluonTS does.
    return np.stack([values[n] for n in names], axis=-1).astype(np.float32)


def age_feature(position: np.ndarray) -> np.ndarray:
    """``log10(2 + i)`` for point ``i`` counted from the series start; range [log10 2, ∞).

    Computed in float32, as GluonTS's ``AddAgeFeature`` does, so the bits match.
    """
    return np.log10(np.float32(2.0) + np.asarray(position, dtype=np.float32))


# ---------------------------------------------------------------------------------------------
# Windows


@dataclass(frozen=True)
class Windows:
    """Model inputs for ``B`` series, cut at one split point each (numpy, float32).

    Attributes:
        past_target: (B, L) target before the split; missing or padded points hold the
            likelihood's dummy value. ``L = context_length + max_lag - 1``.
        past_observed: (B, L) 1.0 where the point was given and not NaN, else 0.0.
        covariates: (B, C + P - 1, F) features of the points at absolute positions
            ``split - C + 1 .. split + P - 1`` (time features, age, dynamic features);
            rows before the series start are 0.
        cat: (B, n_cat) int64.
        future_target: (B, P) the target from the split on (training only), else None.
        future_observed: (B, P) its observed mask (training only), else None.
    """

    past_target: np.ndarray
    past_observed: np.ndarray
    covariates: np.ndarray
    cat: np.ndarray
    future_target: np.ndarray | None = None
    future_observed: np.ndarray | None = None


def _gather(
    flat: np.ndarray, offsets: np.ndarray, positions: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Values at per-series ``positions`` (B, N) of a flat CSR array, and their validity mask."""
    lengths = np.diff(offsets)[:, None]
    valid = (positions >= 0) & (positions < lengths)
    index = np.where(valid, offsets[:-1, None] + positions, 0)
    if flat.shape[0] == 0:
        values = np.zeros(positions.shape + flat.shape[1:], dtype=flat.dtype)
    else:
        values = flat[index]
    return values, valid


def build_windows(
    batch: SeriesBatch,
    spec: ModelSpec,
    *,
    split: np.ndarray | None = None,
    dummy_value: float = 0.0,
    with_future: bool = False,
) -> Windows:
    """Cut every series at ``split`` into the arrays the network reads.

    Args:
        batch: the series.
        spec: the model signature (lags, lengths, frequency, feature counts).
        split: (B,) absolute index of the first predicted point; default the end of each target.
        dummy_value: what missing and padded target points hold (the likelihood's
            ``value_in_support``: 0.0, or 0.5 for beta).
        with_future: also return the ``P`` target points from the split on (training).
    """
    freq = spec.frequency
    b = batch.num_series
    c, p, past = spec.context_length, spec.prediction_length, spec.past_length
    cut = batch.lengths if split is None else np.asarray(split, dtype=np.int64)

    positions = cut[:, None] - past + np.arange(past)  # (B, L)
    values, valid = _gather(batch.target, batch.target_offsets, positions)
    observed = valid & ~np.isnan(values)
    past_target = np.where(observed, values, dummy_value).astype(np.float32)

    rows = cut[:, None] - c + 1 + np.arange(c + p - 1)  # (B, C+P-1) absolute positions
    in_series = rows >= 0
    start = period_index(batch.start, freq)
    covariate_blocks = [
        time_features(start[:, None] + rows * freq.multiple, freq),
        age_feature(np.maximum(rows, 0))[..., None],
    ]
    if spec.num_dynamic_feat:
        dyn, _ = _gather(batch.dynamic_feat, batch.dynamic_offsets, rows)
        covariate_blocks.append(dyn)  # (B, C+P-1, n_dyn)
    covariates = np.concatenate(covariate_blocks, axis=-1)
    covariates[~in_series] = 0.0  # GluonTS pads every time-series field, time features too

    windows = Windows(
        past_target=past_target,
        past_observed=observed.astype(np.float32),
        covariates=covariates.astype(np.float32, copy=False),
        cat=batch.cat[:, : len(spec.cardinality)]
        if spec.cardinality
        else np.zeros((b, 0), np.int64),
    )
    if not with_future:
        return windows
    future, fvalid = _gather(batch.target, batch.target_offsets, cut[:, None] + np.arange(p))
    fobs = fvalid & ~np.isnan(future)
    return Windows(
        past_target=windows.past_target,
        past_observed=windows.past_observed,
        covariates=windows.covariates,
        cat=windows.cat,
        future_target=np.where(fobs, future, dummy_value).astype(np.float32),
        future_observed=fobs.astype(np.float32),
    )
