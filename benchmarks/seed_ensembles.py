"""Would seed ensembles pay for themselves? Mixtures of DeepARs trained with different seeds.

Question (issue 12): is a mixture of k networks trained on the same data with seeds 0..k-1
(each forecasting ``num_samples / k`` paths, so the forecast costs what one network's does)
accurate enough to be worth k times the training? Trains each seed as
``benchmarks.accuracy`` does (its hyperparameters, save and load), keeps the models in
``--workdir`` (a seed already there is not trained again), then scores, mean wQL over
q = 0.1...0.9 as ``benchmarks.accuracy``:

* every seed alone (``num_samples`` paths);
* every combination of k seeds for k = 2..n, ``num_samples // k`` paths from each
  (``mean`` and ``min``/``max`` over the combinations);
* all n seeds with ``num_samples`` paths each (n times the forecast cost).

Reproduce (two cores: two processes, then one to score)::

    python -m benchmarks.seed_ensembles --seeds 0,2,4 --train-only &
    python -m benchmarks.seed_ensembles --seeds 1,3,5 --train-only; wait
    python -m benchmarks.seed_ensembles --seeds 0,1,2,3,4,5
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from batchcast.forecast.config import DeepARConfig, InferenceConfig
from batchcast.forecast.sampling import forecast, quantile_indices
from batchcast.forecast.train import quantile_metrics, train_model
from batchcast.models import load_model, save_model
from benchmarks.accuracy import (
    DATASETS,
    LEVELS,
    Dataset,
    default_hyperparameters,
    load,
    machine,
    series_batch,
)


def _seeds(text: str) -> list[int]:
    """``0,1,2`` -> [0, 1, 2] (seeds may be 0)."""
    try:
        seeds = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers like 0,1,2, got {text!r}") from None
    if len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"a seed is repeated in {text!r}")
    return seeds


def train_seed(
    dataset: Dataset, train: list[np.ndarray], horizon: int, seed: int, folder: Path, epochs: int
) -> dict[str, object]:
    """Train one seed with ``benchmarks.accuracy``'s hyperparameters; save it in ``folder``."""
    hyperparameters = default_hyperparameters(dataset, horizon, epochs)
    config = DeepARConfig.from_hyperparameters(hyperparameters)
    started = time.perf_counter()
    result = train_model(config, series_batch(train), seed=seed)
    seconds = time.perf_counter() - started
    save_model(result.model, str(folder), hyperparameters=config.to_hyperparameters())
    return {"seed": seed, "train_s": round(seconds, 1), "best_epoch": result.best_epoch}


def wql(samples: np.ndarray, actual: np.ndarray) -> float:
    """Mean wQL over LEVELS of (B, S, P) paths, quantiles as batchcast's order statistics."""
    ordered = np.sort(samples, axis=1)
    quantiles = ordered[:, quantile_indices(samples.shape[1], LEVELS)]
    metrics = quantile_metrics(actual, samples.mean(axis=1), quantiles, LEVELS)
    return round(float(metrics["test:mean_wQuantileLoss"]), 5)


def score(
    train: list[np.ndarray], actual: np.ndarray, folders: dict[int, Path], num_samples: int
) -> list[dict[str, object]]:
    """The rows described in the module docstring."""
    batch = series_batch(train)
    config = InferenceConfig(num_samples=num_samples, output_types=("samples",))
    paths: dict[int, np.ndarray] = {}
    for seed, folder in folders.items():
        model = load_model(str(folder)).model
        fc = forecast(model, batch, config, generator=torch.Generator().manual_seed(seed))
        assert fc.samples is not None
        paths[seed] = fc.samples
    rows: list[dict[str, object]] = [
        {"members": [seed], "paths_each": num_samples, "wql": wql(paths[seed], actual)}
        for seed in paths
    ]
    seeds = sorted(paths)
    for k in range(2, len(seeds) + 1):
        each = num_samples // k
        scores = [
            wql(np.concatenate([paths[s][:, :each] for s in combo], axis=1), actual)
            for combo in itertools.combinations(seeds, k)
        ]
        rows.append(
            {
                "members": k,
                "paths_each": each,
                "combinations": len(scores),
                "wql_mean": round(statistics.mean(scores), 5),
                "wql_min": min(scores),
                "wql_max": max(scores),
            }
        )
    every = np.concatenate([paths[s] for s in seeds], axis=1)
    rows.append({"members": seeds, "paths_each": num_samples, "wql": wql(every, actual)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--dataset", choices=list(DATASETS), default="m3-monthly")
    parser.add_argument("--seeds", type=_seeds, default=[0, 1, 2, 3, 4, 5])
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--num-samples", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/batchcast-seed-ensembles"))
    parser.add_argument("--train-only", action="store_true", help="train missing seeds, stop")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dataset = DATASETS[args.dataset]
    folders = {s: args.workdir / f"{dataset.name}-seed{s}-epochs{args.epochs}" for s in args.seeds}
    train, actual, horizon = load(dataset)
    for seed, folder in folders.items():
        if not (folder / "config.json").exists():
            trained = train_seed(dataset, train, horizon, seed, folder, args.epochs)
            print(json.dumps({"dataset": dataset.name, **trained, "machine": machine()}))
    if args.train_only:
        return
    machine_info = machine()
    for row in score(train, actual, folders, args.num_samples):
        print(json.dumps({"dataset": dataset.name, **row, "machine": machine_info}))


if __name__ == "__main__":
    main()
