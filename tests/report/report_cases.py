"""Files like a transform's, written from known numbers, for the report tests (imported by
conftest and the test modules; a unique name, since ``conftest`` is not).

``write_case`` writes full series (the actuals), the same series with the horizon cut (the
input) and forecast lines (quantiles and mean, as a transform writes them), and returns the
numbers, so a test can compute the expected metrics on its own (with GluonTS, or
``forecast.metrics`` on arrays) and compare with what ``evaluate`` reads from the files.
Actual targets are compared as float32, the precision ``io`` decodes them at.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

KEYS = ("0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7", "0.8", "0.9")


@dataclass
class Case:
    """What ``write_case`` wrote, and the numbers behind it."""

    actuals: Path
    input: Path
    forecasts: Path
    history: list[np.ndarray]  # (T_b,) float32-exact history per series
    horizon: np.ndarray  # (B, P) actual horizon (NaN: missing)
    quantiles: np.ndarray  # (B, Q, P), in KEYS order
    mean: np.ndarray  # (B, P)
    item_ids: list[str]


def write_case(
    folder: Path,
    *,
    n: int = 24,
    horizon: int = 5,
    seed: int = 0,
    forward_item_id: bool = False,
    shuffle_forecasts: bool = False,
    keys: tuple[str, ...] = KEYS,
    name: str = "data.jsonl",
) -> Case:
    """Write ``actuals/<name>``, ``input/<name>`` and ``output/<name>.out`` under ``folder``.

    Series lengths vary (0, 1, 2 and longer histories); a few history and horizon points
    are NaN (one horizon entirely), written as ``"NaN"`` and ``null`` as SageMaker allows.
    """
    rng = np.random.default_rng(seed)
    levels = np.array([float(k) for k in keys])
    history, horizons, quantiles, means, ids = [], [], [], [], []
    actual_lines, input_lines, output_lines = [], [], []
    for b in range(n):
        length = [0, 1, 2][b] if b < 3 else int(rng.integers(10, 60))
        level = rng.uniform(5, 50)
        full = np.round(level + rng.normal(0, level / 4, size=length + horizon), 2)
        full = full.astype(np.float32).astype(np.float64)  # what io decodes
        if length > 8:
            full[rng.integers(0, length, size=2)] = np.nan
        if b == 5:
            full[length:] = np.nan  # the whole horizon missing
        if b == 6:
            full[length + 1] = np.nan
        target: list[Any] = [None if np.isnan(v) else float(v) for v in full]
        if b % 2:
            target = ["NaN" if v is None else v for v in target]
        item_id = f"item-{b}"
        start = f"2021-01-{1 + b % 28:02d} 00:00:00"
        actual_lines.append({"start": start, "target": target, "item_id": item_id})
        input_lines.append({"start": start, "target": target[:length], "item_id": item_id})
        centre = level + rng.normal(0, 1, size=horizon)
        spread = rng.uniform(0.5, 2.0) * level / 4
        q = centre[None, :] + spread * 2.5 * (levels - 0.5)[:, None]  # (Q, P), increasing in q
        mean = centre + rng.normal(0, 0.2, size=horizon)
        record: dict[str, Any] = {
            "quantiles": {k: q[i].tolist() for i, k in enumerate(keys)},
            "mean": mean.tolist(),
        }
        if forward_item_id:
            record["item_id"] = item_id
        output_lines.append(record)
        history.append(full[:length])
        horizons.append(full[length:])
        quantiles.append(q)
        means.append(mean)
        ids.append(item_id)
    if shuffle_forecasts:
        order = rng.permutation(n)
        output_lines = [output_lines[i] for i in order]
    paths = {
        "actuals": folder / "actuals" / name,
        "input": folder / "input" / name,
        "forecasts": folder / "output" / f"{name}.out",
    }
    for key, lines in (
        ("actuals", actual_lines),
        ("input", input_lines),
        ("forecasts", output_lines),
    ):
        paths[key].parent.mkdir(parents=True, exist_ok=True)
        paths[key].write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in lines))
    return Case(
        actuals=paths["actuals"],
        input=paths["input"],
        forecasts=paths["forecasts"],
        history=history,
        horizon=np.stack(horizons),
        quantiles=np.stack(quantiles),
        mean=np.stack(means),
        item_ids=ids,
    )


def gluonts_metrics(
    case: Case, *, seasonality: int, alpha: float = 0.2, keys: tuple[str, ...] = KEYS
) -> tuple[dict[str, float], Any]:
    """GluonTS's Evaluator on the case's numbers (aggregate, per-series DataFrame)."""
    pd = pytest.importorskip("pandas")
    pytest.importorskip("gluonts")
    from gluonts.evaluation import Evaluator
    from gluonts.model.forecast import QuantileForecast

    series, forecasts = [], []
    for b, past in enumerate(case.history):
        full = np.concatenate([past, case.horizon[b]])
        index = pd.period_range("2021-01-01 00:00", periods=full.size, freq="h")
        series.append(pd.DataFrame(full, index=index))
        arrays = np.vstack([case.quantiles[b], case.mean[b]])
        forecasts.append(
            QuantileForecast(arrays, index[past.size], [*keys, "mean"], item_id=case.item_ids[b])
        )
    evaluator = Evaluator(quantiles=keys, seasonality=seasonality, alpha=alpha, num_workers=0)
    with warnings.catch_warnings():  # masked/zero divisions on the NaN cases, by design
        warnings.simplefilter("ignore")
        return evaluator(series, forecasts, num_series=len(series))
