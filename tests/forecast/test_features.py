"""Lags, time features, the age feature and windows, against GluonTS and hand-computed values.

GluonTS (``gluonts.time_feature``) is the reference for lags and time features; windows are
checked on arange targets, where every value names its own position, and against a naive
per-series loop written from DEEPAR_REFERENCE.md A.5-A.7.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from batchcast.forecast import (
    ModelSpec,
    SeriesBatch,
    build_windows,
    lags_for_frequency,
    time_feature_names,
)
from batchcast.forecast.features import age_feature, period_index, time_features

# Our time_freq -> the pandas period alias and the GluonTS offset alias ("ME": pandas 2.2
# deprecated "M" for offsets, and GluonTS treats them alike).
_PANDAS_UNIT = {"min": "min", "H": "h", "D": "D", "W": "W", "M": "M"}
_GLUONTS_UNIT = {"min": "min", "H": "h", "D": "D", "W": "W", "M": "ME"}


def _split(freq: str) -> tuple[int, str]:
    unit = next(u for u in ("min", "H", "D", "W", "M") if freq.endswith(u))
    digits = freq[: -len(unit)]
    return (int(digits) if digits else 1), unit


def _alias(freq: str, table: dict[str, str]) -> str:
    n, unit = _split(freq)
    return f"{n}{table[unit]}" if n > 1 else table[unit]


def _seconds(text: str) -> int:
    return int(np.datetime64(text, "s").astype(np.int64))


def _ranges(text: str) -> list[int]:
    """'1-3, 7, 10-11' -> [1, 2, 3, 7, 10, 11] (the tables of DEEPAR_REFERENCE A.4)."""
    out: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.strip().partition("-")
        out.extend(range(int(lo), int(hi or lo) + 1))
    return out


# ---------------------------------------------------------------------------------------------
# Lags

# DEEPAR_REFERENCE.md A.4, copied by hand from its table.
REFERENCE_LAGS = {
    "H": "1-7, 23-25, 47-49, 71-73, 95-97, 119-121, 143-145, 167-169, 335-337, 503-505, "
    "671-673, 719-721",
    "D": "1-8, 13-15, 20-22, 27-31, 56, 84, 363-365, 727-729, 1091-1093",
    "W": "1-8, 12, 51-53, 103-105, 155-157",
    "M": "1-7, 11-13, 23-25, 35-37",
    "min": "1-7, 58-62, 118-122, 178-182",
    "5min": "1-7, 10-14, 22-26, 34-38, 287-289, 575-577, 863-865, 1151-1153",
    "15min": "1-14, 95-97, 191-193, 287-289, 383-385, 479-481, 575-577, 671-673",
    "30min": "1-8, 47-49, 95-97, 143-145, 191-193, 239-241, 287-289, 335-337, 671-673, 1007-1009",
}
REFERENCE_COUNTS = {
    "H": (40, 721),
    "D": (30, 1093),
    "W": (18, 157),
    "M": (16, 37),
    "min": (22, 182),
    "5min": (34, 1153),
    "15min": (35, 673),
    "30min": (35, 1009),
}


@pytest.mark.parametrize("freq", sorted(REFERENCE_LAGS))
def test_lags_match_reference_table(freq: str) -> None:
    lags = lags_for_frequency(freq)
    assert list(lags) == _ranges(REFERENCE_LAGS[freq])
    assert (len(lags), lags[-1]) == REFERENCE_COUNTS[freq]


def test_lags_2h_float_floor_division() -> None:
    # A.4: 4 // (2/168) == 336.0 in float arithmetic (an integer rewrite gives 335 or so).
    lags = lags_for_frequency("2H")
    assert (len(lags), lags[-1]) == (42, 1008)
    assert {359, 360, 361, 672, 1008} <= set(lags)


LAG_FREQS = [
    f"{n}{unit}" if n > 1 else unit
    for unit, multiples in {
        "min": (1, 2, 3, 5, 10, 15, 20, 30, 45, 60, 90),
        "H": (1, 2, 3, 4, 6, 8, 12, 24),
        "D": (1, 2, 3, 5, 7, 14),
        "W": (1, 2, 4),
        "M": (1, 2, 3, 6, 12),
    }.items()
    for n in multiples
]


@pytest.mark.parametrize("freq", LAG_FREQS)
def test_lags_equal_gluonts(freq: str) -> None:
    lag_module = pytest.importorskip("gluonts.time_feature")
    expected = lag_module.get_lags_for_frequency(_alias(freq, _GLUONTS_UNIT))
    assert list(lags_for_frequency(freq)) == list(expected)


# ---------------------------------------------------------------------------------------------
# Time features


@pytest.mark.parametrize(
    ("freq", "names"),
    [
        ("M", ("month_of_year",)),
        ("W", ("day_of_month", "week_of_year")),
        ("D", ("day_of_week", "day_of_month", "day_of_year")),
        ("2H", ("hour_of_day", "day_of_week", "day_of_month", "day_of_year")),
        (
            "5min",
            ("minute_of_hour", "hour_of_day", "day_of_week", "day_of_month", "day_of_year"),
        ),
    ],
)
def test_time_feature_names_per_frequency(freq: str, names: tuple[str, ...]) -> None:
    assert time_feature_names(freq) == names


def _ours(start: str, freq: str, periods: int) -> np.ndarray:
    n, _ = _split(freq)
    index = period_index(np.array([_seconds(start)]), freq)[0]
    return time_features(index + np.arange(periods) * n, freq)


def _gluonts_time_features(start: pd.Timestamp, freq: str, periods: int) -> np.ndarray:
    time_feature = pytest.importorskip("gluonts.time_feature")
    pandas_freq = _alias(freq, _PANDAS_UNIT)
    index = pd.period_range(pd.Period(start, pandas_freq), periods=periods, freq=pandas_freq)
    functions = time_feature.time_features_from_frequency_str(_alias(freq, _GLUONTS_UNIT))
    return np.stack([f(index) for f in functions], axis=-1).astype(np.float32)


@pytest.mark.parametrize(
    "freq", ["min", "5min", "15min", "H", "2H", "6H", "D", "3D", "W", "2W", "M", "3M"]
)
def test_time_features_equal_gluonts_on_random_starts(freq: str) -> None:
    rng = np.random.default_rng(sum(map(ord, freq)))
    # Random starts over 1990-2039, to the second, plus calendar edges (before 1970 too).
    seconds = list(rng.integers(_seconds("1990-01-01"), _seconds("2040-01-01"), size=12))
    edges = ("2020-12-31 23:59:59", "2021-01-01", "2020-02-29 12:34:56", "1969-12-31 23:59:59",
             "1960-02-29 06:07:08")  # fmt: skip
    seconds += [_seconds(s) for s in edges]
    for second in seconds:
        start = pd.Timestamp(int(second), unit="s")
        ours = _ours(str(start), freq, 80)
        expected = _gluonts_time_features(start, freq, 80)
        np.testing.assert_array_equal(ours, expected, err_msg=f"{freq} from {start}")
        assert ours.dtype == np.float32


def test_hourly_row_by_hand() -> None:
    # 2020-01-01 00:00 was a Wednesday (Mon = 0): A.5's formulas, by hand.
    rows = _ours("2020-01-01 00:00:00", "H", 2)
    np.testing.assert_allclose(
        rows[0], [0 / 23 - 0.5, 2 / 6 - 0.5, 0 / 30 - 0.5, 0 / 365 - 0.5], atol=1e-7
    )
    np.testing.assert_allclose(rows[1], [1 / 23 - 0.5, 2 / 6 - 0.5, -0.5, -0.5], atol=1e-7)


def test_hourly_start_is_truncated_to_the_hour() -> None:
    rows = _ours("2020-01-01 05:30:00", "H", 3)
    np.testing.assert_allclose(rows[:, 0], np.array([5, 6, 7]) / 23 - 0.5, atol=1e-7)


def test_minutes_follow_an_unaligned_start() -> None:
    rows = _ours("2020-01-01 00:03:00", "5min", 3)
    np.testing.assert_allclose(rows[:, 0], np.array([3, 8, 13]) / 59 - 0.5, atol=1e-7)


def test_weekly_period_uses_closing_sunday() -> None:
    # 2020-01-01 is in the week 2019-12-30 .. 2020-01-05: the Sunday is the 5th, ISO week 1.
    rows = _ours("2020-01-01", "W", 2)
    np.testing.assert_allclose(rows[0], [(5 - 1) / 30 - 0.5, (1 - 1) / 52 - 0.5], atol=1e-7)
    np.testing.assert_allclose(rows[1], [(12 - 1) / 30 - 0.5, (2 - 1) / 52 - 0.5], atol=1e-7)
    # 2021-01-01 (a Friday) closes on Sunday 2021-01-03, which is ISO week 53 of 2020.
    np.testing.assert_allclose(
        _ours("2021-01-01", "W", 1)[0], [(3 - 1) / 30 - 0.5, (53 - 1) / 52 - 0.5], atol=1e-7
    )


def test_daily_and_monthly_rows_by_hand() -> None:
    # 2020 is a leap year: Dec 31 is day 366 -> day_of_year = 365/365 - 0.5 = 0.5.
    np.testing.assert_allclose(
        _ours("2020-12-31", "D", 1)[0], [3 / 6 - 0.5, 30 / 30 - 0.5, 0.5], atol=1e-7
    )
    # Monday 2021-01-04
    np.testing.assert_allclose(
        _ours("2021-01-04", "D", 1)[0], [-0.5, 3 / 30 - 0.5, 3 / 365 - 0.5], atol=1e-7
    )
    np.testing.assert_allclose(
        _ours("2020-03-15", "M", 11)[:, 0], (np.arange(2, 13) % 12) / 11 - 0.5, atol=1e-7
    )


def test_time_features_range() -> None:
    index = np.arange(0, 200_000, 7)
    for freq in ("min", "H", "D", "W", "M"):
        values = time_features(index, freq)
        assert values.min() >= -0.5
        assert values.max() <= 0.5
        assert values.min() == -0.5
        assert values.max() == 0.5


def test_age_feature() -> None:
    np.testing.assert_allclose(age_feature(np.arange(5)), np.log10(2.0 + np.arange(5)), rtol=1e-6)
    assert age_feature(np.arange(3)).dtype == np.float32


# ---------------------------------------------------------------------------------------------
# Windows

FREQ = "H"
C, P = 3, 2
LAGS = (1, 2, 4)
L = C + max(LAGS) - 1  # 6
DUMMY = -1.0  # a dummy value that cannot be mistaken for data


def _spec(**overrides: Any) -> ModelSpec:
    fields: dict[str, Any] = {
        "freq": FREQ,
        "context_length": C,
        "prediction_length": P,
        "lags": LAGS,
        "num_time_features": 4,
    }
    return ModelSpec(**{**fields, **overrides})


def _one(target: list[float], *, start: str = "2021-03-01 00:00:00", **kwargs: Any) -> Any:
    batch = SeriesBatch.from_lists(start=[_seconds(start)], targets=[np.asarray(target, float)])
    return build_windows(batch, _spec(), dummy_value=DUMMY, **kwargs)


def _time_rows(start: str, positions: np.ndarray) -> np.ndarray:
    return time_features(period_index(np.array([_seconds(start)]), FREQ)[0] + positions, FREQ)


def test_long_arange_target() -> None:
    w = _one(list(range(10)))
    np.testing.assert_array_equal(w.past_target, [[4, 5, 6, 7, 8, 9]])
    np.testing.assert_array_equal(w.past_observed, np.ones((1, L)))
    # Covariate rows are the points at positions split - C + 1 .. split + P - 1 = 8..11.
    rows = np.arange(8, 12)
    assert w.covariates.shape == (1, C + P - 1, 4 + 1)
    np.testing.assert_array_equal(w.covariates[0, :, :4], _time_rows("2021-03-01", rows))
    np.testing.assert_allclose(w.covariates[0, :, 4], np.log10(2.0 + rows), rtol=1e-6)
    assert w.cat.shape == (1, 0)
    assert w.future_target is None
    assert w.future_observed is None


def test_short_target_is_left_padded() -> None:
    w = _one([0.0, 1.0, 2.0, 3.0])
    np.testing.assert_array_equal(w.past_target, [[DUMMY, DUMMY, 0, 1, 2, 3]])
    np.testing.assert_array_equal(w.past_observed, [[0, 0, 1, 1, 1, 1]])
    assert w.past_target.dtype == np.float32
    assert w.past_observed.dtype == np.float32


def test_nan_is_unobserved_and_holds_the_dummy() -> None:
    w = _one([0, 1, 2, 3, np.nan, 5, 6, np.nan])
    np.testing.assert_array_equal(w.past_target, [[2, 3, DUMMY, 5, 6, DUMMY]])
    np.testing.assert_array_equal(w.past_observed, [[1, 1, 0, 1, 1, 0]])


def test_rows_before_the_start_are_zero() -> None:
    # T = 1: covariate rows are positions -1, 0, 1, 2; position -1 is before the start.
    w = _one([7.0])
    np.testing.assert_array_equal(w.covariates[0, 0], np.zeros(5))
    rows = np.arange(0, 3)
    np.testing.assert_array_equal(w.covariates[0, 1:, :4], _time_rows("2021-03-01", rows))
    np.testing.assert_allclose(w.covariates[0, 1:, 4], np.log10(2.0 + rows), rtol=1e-6)
    np.testing.assert_array_equal(w.past_target, [[DUMMY] * 5 + [7.0]])
    np.testing.assert_array_equal(w.past_observed, [[0] * 5 + [1]])


def test_empty_target() -> None:
    w = _one([])
    np.testing.assert_array_equal(w.past_target, np.full((1, L), DUMMY))
    np.testing.assert_array_equal(w.past_observed, np.zeros((1, L)))
    # rows -2, -1 (zero), then the P future points 0, 1 with age log10(2), log10(3)
    np.testing.assert_array_equal(w.covariates[0, :2], np.zeros((2, 5)))
    np.testing.assert_allclose(w.covariates[0, 2:, 4], np.log10([2.0, 3.0]), rtol=1e-6)


def test_split_points_and_future() -> None:
    batch = SeriesBatch.from_lists(
        start=[_seconds("2021-03-01"), _seconds("2021-03-02")],
        targets=[np.arange(10.0), np.arange(100.0, 110.0)],
    )
    w = build_windows(batch, _spec(), split=np.array([5, 9]), dummy_value=DUMMY, with_future=True)
    np.testing.assert_array_equal(
        w.past_target, [[DUMMY, 0, 1, 2, 3, 4], [103, 104, 105, 106, 107, 108]]
    )
    np.testing.assert_array_equal(w.past_observed, [[0, 1, 1, 1, 1, 1], np.ones(L)])
    # The future runs past the end of the second series: unobserved there.
    np.testing.assert_array_equal(w.future_target, [[5, 6], [109, DUMMY]])
    np.testing.assert_array_equal(w.future_observed, [[1, 1], [1, 0]])
    np.testing.assert_allclose(
        w.covariates[:, :, 4], np.log10(2.0 + np.array([[3, 4, 5, 6], [7, 8, 9, 10]])), rtol=1e-6
    )


def test_dynamic_features_sit_at_their_rows() -> None:
    n_dyn, t_len = 2, 6
    positions = np.arange(t_len + P)
    # Feature j at position i holds 100 * i + j: every cell names its own place.
    dynamic = 100.0 * positions[:, None] + np.arange(n_dyn)[None, :]
    batch = SeriesBatch.from_lists(
        start=[0],
        targets=[np.arange(float(t_len))],
        dynamic=[dynamic],
        num_dynamic_feat=n_dyn,
    )
    w = build_windows(batch, _spec(num_dynamic_feat=n_dyn), dummy_value=DUMMY)
    rows = np.arange(t_len - C + 1, t_len + P)
    np.testing.assert_array_equal(w.covariates[0, :, -n_dyn:], dynamic[rows])
    assert w.covariates.shape == (1, C + P - 1, 4 + 1 + n_dyn)
    # with a short series the rows before the start are zero for the dynamic features too
    short = SeriesBatch.from_lists(
        start=[0], targets=[[1.0]], dynamic=[dynamic[: 1 + P]], num_dynamic_feat=n_dyn
    )
    w = build_windows(short, _spec(num_dynamic_feat=n_dyn), dummy_value=DUMMY)
    np.testing.assert_array_equal(w.covariates[0, 0], np.zeros(4 + 1 + n_dyn))
    np.testing.assert_array_equal(w.covariates[0, 1:, -n_dyn:], dynamic[: 1 + P])


def test_lag_inputs_read_target_minus_lag(make_model: Any) -> None:
    """GluonTS's check: with an arange window, lag column l at position t equals t - l."""
    model = make_model(lags=LAGS, context_length=C, prediction_length=P)
    w = _one(list(range(10)))
    z = torch.from_numpy(w.past_target)  # scaling left out on purpose: z is the raw window
    static = torch.zeros(1, 1)
    covariates = torch.from_numpy(w.covariates[:, :C])
    x = model.rnn_input(z, static, covariates, first=max(LAGS))
    # Window position t = max_lag + j predicts target index 4 + t (the window starts at 4).
    predicted = 4 + max(LAGS) + np.arange(C)
    expected = predicted[:, None] - np.array(LAGS)[None, :]
    np.testing.assert_array_equal(x[0, :, : len(LAGS)].numpy(), expected)
    np.testing.assert_array_equal(x[0, :, len(LAGS) + 1 :].numpy(), w.covariates[0, :C])


# --- the vectorised batch against a naive per-series loop


def _naive_window(
    target: np.ndarray,
    start: str,
    dynamic: np.ndarray | None,
    cat: list[int],
    spec: ModelSpec,
    dummy: float,
) -> dict[str, np.ndarray]:
    """One series, point by point, the way DEEPAR_REFERENCE A.5-A.7 describe it (pandas
    periods and GluonTS's time-feature functions)."""
    c, p, past = spec.context_length, spec.prediction_length, spec.past_length
    t_len = len(target)
    past_target = np.full(past, dummy, np.float32)
    observed = np.zeros(past, np.float32)
    for k in range(past):
        i = t_len - past + k
        if 0 <= i < t_len and not np.isnan(target[i]):
            past_target[k], observed[k] = target[i], 1.0
    features = _gluonts_time_features(pd.Timestamp(start), spec.freq, t_len + p)
    n_dyn = spec.num_dynamic_feat
    covariates = np.zeros((c + p - 1, features.shape[1] + 1 + n_dyn), np.float32)
    for r in range(c + p - 1):
        i = t_len - c + 1 + r
        if i < 0:
            continue  # before the start: a zero row
        covariates[r, : features.shape[1]] = features[i]
        covariates[r, features.shape[1]] = np.log10(2.0 + i)
        if n_dyn:
            assert dynamic is not None
            covariates[r, features.shape[1] + 1 :] = dynamic[i]
    return {
        "past_target": past_target,
        "past_observed": observed,
        "covariates": covariates,
        "cat": np.asarray(cat, np.int64),
    }


def test_batch_equals_naive_per_series_loop() -> None:
    rng = np.random.default_rng(5)
    spec = _spec(
        freq="2H", context_length=4, prediction_length=3, lags=(1, 3, 5),
        cardinality=(4, 3), embedding_dims=(1, 1), num_dynamic_feat=2,
    )  # fmt: skip
    lengths = [20, 0, 1, 3, 7, 12, 2]
    starts = ["2021-01-01 00:00:00", "2020-02-28 23:00:00", "2019-12-31 22:00:00",
              "2022-06-15 05:30:00", "2021-03-28 01:00:00", "2000-01-01 00:00:00",
              "2024-02-29 13:59:59"]  # fmt: skip
    targets = [rng.normal(size=n) for n in lengths]
    targets[0][[0, 5, 19]] = np.nan
    targets[4][:] = np.nan
    dynamic = [rng.normal(size=(n + 3, 2)) for n in lengths]
    cats = [[i % 4, (i * 2) % 3] for i in range(len(lengths))]
    batch = SeriesBatch.from_lists(
        start=[_seconds(s) for s in starts],
        targets=targets,
        cat=cats,
        dynamic=dynamic,
        num_dynamic_feat=2,
    )
    w = build_windows(batch, spec, dummy_value=0.5)
    for b in range(len(lengths)):
        expected = _naive_window(targets[b], starts[b], dynamic[b], cats[b], spec, 0.5)
        for name, value in expected.items():
            np.testing.assert_allclose(
                getattr(w, name)[b], value, rtol=1e-6, err_msg=f"series {b}: {name}"
            )
        alone = build_windows(batch.slice(b, b + 1), spec, dummy_value=0.5)
        for name in ("past_target", "past_observed", "covariates", "cat"):
            np.testing.assert_array_equal(getattr(alone, name)[0], getattr(w, name)[b])
