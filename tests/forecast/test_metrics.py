"""forecast.metrics: hand-computed values, and equality with GluonTS's Evaluator.

The GluonTS comparison builds ``QuantileForecast`` objects from the very numbers given to
``series_metrics`` and checks every metric, per series and aggregated, to 1e-6, on data with
the edge cases: NaN actuals in the history and the horizon (one horizon all NaN), zeros (the
masked divisions of sMAPE and MAPE), empty and one-point histories, histories shorter than the
seasonality, a constant history (seasonal error 0: MASE inf).
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import pytest

from batchcast.forecast.metrics import (
    MetricTotals,
    evaluate_arrays,
    msis_pair,
    seasonal_error,
    seasonal_errors,
    seasonality,
    series_metrics,
)

DEFAULT_KEYS = ["0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7", "0.8", "0.9"]


# ---------------------------------------------------------------------------------------------
# Hand-computed values


@pytest.mark.parametrize(
    ("unit", "multiple", "expected"),
    [("H", 1, 24), ("H", 2, 12), ("H", 7, 1), ("min", 5, 288), ("D", 1, 1), ("W", 1, 1),
     ("M", 1, 12), ("M", 3, 4), ("Q", 1, 4), ("unknown", 1, 1)],
)  # fmt: skip
def test_seasonality_follows_gluonts_table(unit: str, multiple: int, expected: int) -> None:
    assert seasonality(unit, multiple) == expected


def test_seasonality_matches_gluonts_get_seasonality() -> None:
    pytest.importorskip("gluonts")
    from gluonts.time_feature import get_seasonality

    for alias, unit, multiple in [("h", "H", 1), ("2h", "H", 2), ("5min", "min", 5),
                                  ("D", "D", 1), ("W", "W", 1), ("ME", "M", 1)]:  # fmt: skip
        assert seasonality(unit, multiple) == get_seasonality(alias), alias


@pytest.mark.parametrize(
    ("past", "m", "expected"),
    [
        ([1.0, 2.0, 4.0, 7.0], 1, (1 + 2 + 3) / 3),
        ([1.0, 2.0, 4.0, 7.0], 2, (3 + 5) / 2),
        ([1.0, 2.0, 4.0, 7.0], 4, (1 + 2 + 3) / 3),  # m >= length: falls back to 1
        ([1.0, np.nan, 4.0, 7.0], 1, 3.0),  # only the pair (4, 7) is fully observed
        ([5.0, 5.0, 5.0], 1, 0.0),
        ([3.0], 1, math.nan),
        ([], 24, math.nan),
        ([np.nan, np.nan], 1, math.nan),
    ],
)
def test_seasonal_error_hand_values(past: list[float], m: int, expected: float) -> None:
    got = seasonal_error(np.array(past), m)
    assert got == pytest.approx(expected, nan_ok=True)


def test_seasonal_errors_vectorised_equals_one_by_one() -> None:
    rng = np.random.default_rng(3)
    pasts = [rng.normal(size=n) for n in (0, 1, 2, 5, 24, 25, 60)]
    pasts[5][[0, 3, 10]] = np.nan
    flat = np.concatenate(pasts)
    offsets = np.concatenate([[0], np.cumsum([p.size for p in pasts])])
    together = seasonal_errors(flat, offsets, 24)
    alone = [seasonal_error(p, 24) for p in pasts]
    np.testing.assert_allclose(together, alone, rtol=1e-12, equal_nan=True)


def test_series_metrics_hand_values() -> None:
    # One series, horizon 4, the third point missing; quantiles 0.1 / 0.5 / 0.9.
    actual = np.array([[2.0, 0.0, np.nan, 4.0]])
    q = np.array([[[1.0, 1.0, 1.0, 1.0], [2.0, 0.0, 9.0, 3.0], [3.0, 3.0, 3.0, 3.0]]])
    mean = np.array([[2.0, 1.0, 0.0, 4.0]])
    m = series_metrics(actual, q, [0.1, 0.5, 0.9], mean=mean, seasonal_error=np.array([2.0]))
    assert m["MSE"][0] == pytest.approx((0 + 1 + 0) / 3)
    assert m["abs_error"][0] == pytest.approx(0 + 0 + 1)
    assert m["abs_target_sum"][0] == pytest.approx(6.0)
    assert m["MASE"][0] == pytest.approx((1 / 3) / 2.0)
    # sMAPE/MAPE: the 0/0 term (actual 0, median 0) is left out, as numpy.ma does.
    assert m["sMAPE"][0] == pytest.approx(2 * (0 + 1 / 7) / 2)
    assert m["MAPE"][0] == pytest.approx((0 + 1 / 4) / 2)
    # QuantileLoss[0.1] = 2 * sum |(Q - y)(1{y <= Q} - 0.1)| over y = 2, 0, 4 with Q = 1
    assert m["QuantileLoss[0.1]"][0] == pytest.approx(2 * (0.1 * 1 + 0.9 * 1 + 0.1 * 3))
    assert m["Coverage[0.9]"][0] == pytest.approx(2 / 3)
    assert m["Coverage[0.1]"][0] == pytest.approx(1 / 3)
    # MSIS with alpha 0.2 on [1, 3]: width 2 each, plus 2/0.2 * (1 - 0) for y=0 below L,
    # plus 2/0.2 * (4 - 3) for y=4 above U; scaled by 2.
    assert m["MSIS"][0] == pytest.approx(((2 + 0) + (2 + 10) + (2 + 10)) / 3 / 2.0)
    assert m["num_masked_target_values"][0] == 1


def test_all_nan_horizon_is_nan_and_skipped_in_aggregate() -> None:
    actual = np.array([[np.nan, np.nan], [1.0, 3.0]])
    q = np.repeat(np.array([[[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]]]), 2, axis=0)
    aggregate, per = evaluate_arrays(actual, q, [0.1, 0.5, 0.9], past=[[1.0, 2.0], [1.0, 2.0]])
    assert np.isnan(per["MSE"][0])
    assert np.isnan(per["Coverage[0.5]"][0])
    assert aggregate["MSE"] == pytest.approx(1.0)
    assert aggregate["abs_target_sum"] == pytest.approx(4.0)
    assert aggregate["wQuantileLoss[0.5]"] == pytest.approx(2 * 0.5 * 2 / 4)
    assert aggregate["num_masked_target_values"] == 2


def test_msis_pair_picks_the_widest_symmetric_pair() -> None:
    assert msis_pair([0.1, 0.2, 0.5, 0.8, 0.9]) == (0, 4)
    assert msis_pair([0.9, 0.5, 0.1, 0.25, 0.75]) == (2, 0)
    assert msis_pair([0.1, 0.5, 0.8]) is None


def test_no_symmetric_pair_no_msis() -> None:
    q = np.ones((1, 2, 3))
    m = series_metrics(np.ones((1, 3)), q, [0.5, 0.8])
    assert "MSIS" not in m
    totals = MetricTotals([0.5, 0.8])
    totals.add(m)
    assert "MSIS" not in totals.result()


def test_totals_merge_equals_one_pass() -> None:
    rng = np.random.default_rng(5)
    actual = rng.normal(10, 2, size=(30, 5))
    actual[4, :] = np.nan
    q = np.sort(rng.normal(10, 2, size=(30, 3, 5)), axis=1)
    levels = [0.1, 0.5, 0.9]
    per = series_metrics(actual, q, levels, seasonal_error=rng.uniform(0.5, 2, 30))
    one = MetricTotals(levels)
    one.add(per)
    left, right = MetricTotals(levels), MetricTotals(levels)
    left.add({k: v[:11] for k, v in per.items()})
    right.add({k: v[11:] for k, v in per.items()})
    left.merge(right)
    assert left.num_series == one.num_series == 30
    for name, value in one.result().items():
        assert left.result()[name] == pytest.approx(value, rel=1e-12, nan_ok=True), name


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"levels": [0.1, 0.9]}, "must include 0.5"),
        ({"levels": [0.5, 1.0]}, r"in \(0, 1\)"),
        ({"quantiles": np.full((2, 2, 3), np.nan)}, "finite"),
        ({"quantiles": np.ones((2, 3, 3))}, r"\(B, Q, P\)"),
    ],
)
def test_invalid_inputs_are_named(kwargs: dict[str, Any], message: str) -> None:
    args: dict[str, Any] = {
        "actual": np.ones((2, 3)),
        "quantiles": np.ones((2, 2, 3)),
        "levels": [0.5, 0.9],
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        series_metrics(args["actual"], args["quantiles"], args["levels"])


# ---------------------------------------------------------------------------------------------
# Against GluonTS


def _edge_case_data(
    p: int, keys: list[str], seed: int
) -> tuple[list[np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
    """Histories, actual horizons (B, P), sorted quantiles (B, Q, P) and means (B, P)."""
    rng = np.random.default_rng(seed)
    lengths = [0, 1, 2, 5, 23, 24, 25, 40, 60, 80, 33, 50]
    pasts = [np.round(rng.gamma(2.0, 5.0, size=n), 2) for n in lengths]
    pasts[7][[0, 5, 6, 20]] = np.nan  # NaN history points
    pasts[8][:] = 3.0  # constant history: seasonal error 0, MASE inf
    pasts[9][rng.random(80) < 0.3] = 0.0  # intermittent
    b = len(pasts)
    actual = np.round(rng.gamma(2.0, 5.0, size=(b, p)), 2)
    actual[2, :] = np.nan  # the whole horizon missing
    actual[3, [1, 4]] = np.nan
    actual[9, :3] = 0.0  # zeros: masked divisions in sMAPE/MAPE
    actual[10, :] = 0.0
    centre = rng.gamma(2.0, 5.0, size=(b, 1, p))
    spread = np.sort(rng.normal(0, 3, size=(b, len(keys), p)), axis=1)
    quantiles = np.maximum(centre + spread, 0.0)  # ties at zero are kept in order
    quantiles[10] = 0.0  # a forecast of zeros against actual zeros
    mean = centre[:, 0] + rng.normal(0, 0.5, size=(b, p))
    return pasts, actual, quantiles, mean


def _gluonts_metrics(
    pasts: list[np.ndarray],
    actual: np.ndarray,
    quantiles: np.ndarray,
    mean: np.ndarray | None,
    keys: list[str],
    m: int,
    alpha: float,
) -> tuple[dict[str, float], Any]:
    import pandas as pd
    from gluonts.evaluation import Evaluator
    from gluonts.model.forecast import QuantileForecast

    series, forecasts = [], []
    for b, past in enumerate(pasts):
        full = np.concatenate([past, actual[b]])
        index = pd.period_range("2021-03-01 00:00", periods=full.size, freq="h")
        series.append(pd.DataFrame(full, index=index))
        arrays = quantiles[b] if mean is None else np.vstack([quantiles[b], mean[b]])
        forecast_keys = keys if mean is None else [*keys, "mean"]
        forecasts.append(QuantileForecast(arrays, index[past.size], forecast_keys, item_id=str(b)))
    evaluator = Evaluator(quantiles=keys, seasonality=m, alpha=alpha, num_workers=0)
    # GluonTS and numpy.ma warn about the masked and zero divisions this data is built to
    # hit; those are exactly the cases under test, not problems of ours.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        aggregate, per_series = evaluator(series, forecasts, num_series=len(series))
    return aggregate, per_series


@pytest.mark.gluonts
@pytest.mark.parametrize(
    ("keys", "m", "with_mean"),
    [
        (DEFAULT_KEYS, 24, True),
        (DEFAULT_KEYS, 1, False),
        (["0.05", "0.25", "0.5", "0.75", "0.95"], 12, True),
    ],
)
def test_equals_gluonts_evaluator(keys: list[str], m: int, with_mean: bool) -> None:
    pytest.importorskip("gluonts")
    levels = [float(k) for k in keys]
    pasts, actual, quantiles, mean = _edge_case_data(6, keys, seed=len(keys) + m)
    pair = msis_pair(levels)
    assert pair is not None
    alpha = 2 * levels[pair[0]]
    ours, ours_per = evaluate_arrays(
        actual,
        quantiles,
        levels,
        keys=keys,
        mean=mean if with_mean else None,
        past=pasts,
        seasonality=m,
    )
    theirs, theirs_per = _gluonts_metrics(
        pasts, actual, quantiles, mean if with_mean else None, keys, m, alpha
    )
    # Per series: every metric we compute, for every series.
    assert set(ours_per) <= set(theirs_per.columns)
    for name, values in ours_per.items():
        np.testing.assert_allclose(
            values, theirs_per[name].to_numpy(dtype=float), rtol=1e-6, atol=1e-12,
            equal_nan=True, err_msg=name,
        )  # fmt: skip
    # Aggregates: every one of ours, and every GluonTS aggregate but OWA (not computed).
    assert set(theirs) - {"OWA"} == set(ours)
    # GluonTS 0.17's MAE_Coverage reads Coverage of its *last* quantile for every q (a loop
    # variable leaks out of the loop before it); ours is mean |Coverage[q] - q|, built here
    # from GluonTS's own per-quantile coverages.
    last = theirs[f"Coverage[{keys[-1]}]"]
    assert theirs["MAE_Coverage"] == pytest.approx(np.mean([abs(last - q) for q in levels]))
    theirs["MAE_Coverage"] = np.mean([abs(theirs[f"Coverage[{k}]"] - float(k)) for k in keys])
    for name, value in ours.items():
        assert value == pytest.approx(float(theirs[name]), rel=1e-6, abs=1e-12, nan_ok=True), name
    # The data did reach the edge cases it was built for.
    assert np.isinf(ours_per["MASE"][8])
    assert np.isnan(ours_per["MSE"][2])
    assert np.isnan(ours_per["seasonal_error"][:2]).all()
