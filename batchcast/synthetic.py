"""Synthetic series in SageMaker's JSON Lines format, for the demo, the tests and the benchmarks.

Each series is a daily-and-weekly seasonal pattern with a level, a slow trend and noise, made
non-negative; optional categorical and dynamic features and a fraction of missing points.
Fully determined by the seed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from batchcast.forecast.frequency import parse_frequency

__all__ = ["synthetic_records", "write_jsonl"]


def _start_string(rng: np.random.Generator, freq: str) -> str:
    f = parse_frequency(freq)
    base = dt.datetime(2020, 1, 1) + dt.timedelta(days=int(rng.integers(0, 365)))
    if f.unit in ("min", "H"):
        return (base + dt.timedelta(hours=int(rng.integers(0, 24)))).strftime("%Y-%m-%d %H:%M:%S")
    return base.strftime("%Y-%m-%d")


def _period(freq: str) -> float:
    """Points per season: a day for sub-daily data, a week for daily, a year for W and M."""
    f = parse_frequency(freq)
    points_per_unit = {"min": 1440.0, "H": 24.0, "D": 7.0, "W": 52.0, "M": 12.0}[f.unit]
    return max(2.0, points_per_unit / f.multiple)


def synthetic_records(
    n: int,
    *,
    freq: str = "H",
    length: tuple[int, int] = (200, 400),
    cardinality: tuple[int, ...] = (),
    num_dynamic_feat: int = 0,
    future_length: int = 0,
    nan_fraction: float = 0.0,
    seed: int = 0,
) -> Iterator[dict[str, Any]]:
    """Yield ``n`` records ``{"start", "target", ["cat"], ["dynamic_feat"], "item_id"}``.

    Args:
        n: number of series.
        freq: SageMaker ``time_freq``.
        length: inclusive range of target lengths.
        cardinality: one categorical feature per entry, values in ``[0, c)``.
        num_dynamic_feat: dynamic features per record.
        future_length: extra dynamic-feature points past the target (``prediction_length``
            for inference input, 0 for training data).
        nan_fraction: share of target points written as ``"NaN"``.
        seed: the random seed.
    """
    rng = np.random.default_rng(seed)
    season = _period(freq)
    for i in range(n):
        t_len = int(rng.integers(length[0], length[1] + 1))
        t = np.arange(t_len + future_length)
        level = rng.uniform(5, 100)
        phase = rng.uniform(0, 2 * np.pi)
        pattern = 1 + 0.5 * np.sin(2 * np.pi * t / season + phase) + 0.0005 * t
        dynamic = rng.normal(size=(num_dynamic_feat, t.size))
        values = level * pattern + 0.1 * level * rng.normal(size=t.size)
        if num_dynamic_feat:
            values += 0.2 * level * dynamic[0]
        target: list[Any] = np.maximum(values[:t_len], 0).round(3).tolist()
        for j in np.flatnonzero(rng.random(t_len) < nan_fraction):
            target[j] = "NaN"
        record: dict[str, Any] = {"start": _start_string(rng, freq), "target": target}
        if cardinality:
            record["cat"] = [int(rng.integers(0, c)) for c in cardinality]
        if num_dynamic_feat:
            record["dynamic_feat"] = dynamic.round(4).tolist()
        record["item_id"] = f"item-{i}"
        yield record


def write_jsonl(path: str | Path, records: Iterator[dict[str, Any]]) -> Path:
    """Write records as JSON Lines; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        for record in records:
            f.write(orjson.dumps(record))
            f.write(b"\n")
    return path
