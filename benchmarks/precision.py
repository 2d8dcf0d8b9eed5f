"""What does ``--precision bf16`` cost in accuracy and buy in speed, on a trained model?

Question (issue "Speed on any CPU"): bf16 GEMMs with fp32 state and sampling. On a model
trained here (the demo's hyperparameters: hourly, 2 x 40 cells, student-T, 20 epochs on 300
generated series), over ``--series`` generated series, 100 paths, in one process:

* **path error**: with the same seed, bf16 and fp32 draw from the same random numbers, so
  the difference of their paths at step k is the bf16 rounding of the distribution
  parameters, fed back through the sampled lags: reported as the median and 99th
  percentile over series and paths of ``|bf16 - fp32| / max(|fp32|, 1)``, per horizon step.
* **quantile shift in Monte-Carlo standard errors**: the standard error of each forecast
  quantile is the spread of that quantile over ``--seeds`` fp32 runs with different seeds;
  the shift is ``|q_bf16 - q_fp32| / se`` (same seed) per series, step and level. A shift
  well under 1 means bf16 moves the forecast by less than sampling noise already does.
* **speed**: ``forecast()`` series/s, fp32 and bf16 interleaved, median of ``--repeats``.

bf16 is forced on (``BATCHCAST_BF16=force``) so the figures exist on any CPU; the JSON line
says whether this CPU has bf16 units (``bf16_hardware``): without them torch emulates bf16
and the speed row is not what a user gets (they get fp32, with one log line).

    python -m benchmarks.precision            # about 2 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from batchcast.api import train
from batchcast.demo import HYPERPARAMETERS
from batchcast.forecast.config import InferenceConfig
from batchcast.forecast.model import DeepAR
from batchcast.forecast.precision import bf16_hardware
from batchcast.forecast.sampling import forecast
from batchcast.forecast.series import SeriesBatch
from batchcast.io import RecordContract, decode_records
from batchcast.models import load_model
from batchcast.synthetic import synthetic_records, write_jsonl
from benchmarks.common import emit

LEVELS = (0.1, 0.5, 0.9)


def _trained(folder: Path) -> str:
    model_dir = folder / "model"
    if not (model_dir / "config.json").exists():
        data = write_jsonl(folder / "train.jsonl", synthetic_records(300, freq="H", seed=1))
        train(str(data), hyperparameters=HYPERPARAMETERS, model_dir=str(model_dir))
    return str(model_dir)


def _paths(model: DeepAR, batch: SeriesBatch, seed: int, precision: str) -> np.ndarray:
    config = InferenceConfig(num_samples=100, output_types=("samples",))
    out = forecast(
        model,
        batch,
        config,
        generator=torch.Generator().manual_seed(seed),
        precision=precision,
    )
    assert out.samples is not None
    return np.asarray(out.samples, dtype=np.float64)  # (B, S, P)


def _rates(model: DeepAR, batch: SeriesBatch, repeats: int) -> dict[str, float]:
    config = InferenceConfig(num_samples=100)
    seconds: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for _ in range(repeats):
        for precision in seconds:  # interleaved: a change in load hits both
            started = time.perf_counter()
            gen = torch.Generator().manual_seed(0)
            forecast(model, batch, config, generator=gen, precision=precision)
            seconds[precision].append(time.perf_counter() - started)
    return {k: batch.num_series / statistics.median(v) for k, v in seconds.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=256)
    parser.add_argument("--seeds", type=int, default=8, help="fp32 runs for the standard errors")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "bc-bf16")
    args = parser.parse_args()
    torch.set_num_threads(1)
    os.environ["BATCHCAST_BF16"] = "force"
    args.workdir.mkdir(parents=True, exist_ok=True)
    loaded = load_model(_trained(args.workdir))
    model = loaded.model
    lines = [
        __import__("orjson").dumps(r) for r in synthetic_records(args.series, freq="H", seed=7)
    ]
    batch = decode_records(
        lines, uri="bench", contract=RecordContract.for_inference(loaded.spec)
    ).batch

    fp32 = _paths(model, batch, 0, "fp32")
    bf16 = _paths(model, batch, 0, "bf16")
    relative = np.abs(bf16 - fp32) / np.maximum(np.abs(fp32), 1.0)  # (B, S, P)
    per_step = relative.reshape(-1, relative.shape[-1])
    runs = np.stack([_paths(model, batch, seed, "fp32") for seed in range(args.seeds)])
    q = np.asarray(LEVELS)
    q_runs = np.quantile(runs, q, axis=2)  # (Q, seeds, B, P)
    se = q_runs.std(axis=1, ddof=1)  # (Q, B, P)
    shift = np.abs(np.quantile(bf16, q, axis=1) - np.quantile(fp32, q, axis=1)) / np.maximum(
        se, 1e-12
    )
    rates = _rates(model, batch, args.repeats)
    emit(
        "precision",
        f"bf16 vs fp32, {args.series} series, trained demo network",
        {
            "bf16_hardware": bf16_hardware(),
            "path_rel_error_median_by_step": np.median(per_step, axis=0).round(6).tolist(),
            "path_rel_error_p99_by_step": np.quantile(per_step, 0.99, axis=0).round(5).tolist(),
            "path_rel_error_median": float(np.median(relative)),
            "quantile_shift_se_median": float(np.median(shift)),
            "quantile_shift_se_p95": float(np.quantile(shift, 0.95)),
            "quantile_shift_se_by_level_median": dict(
                zip(map(str, LEVELS), np.median(shift, axis=(1, 2)).round(4).tolist(), strict=True)
            ),
            "fp32_series_per_s": rates["fp32"],
            "bf16_series_per_s": rates["bf16"],
            "bf16_speedup": rates["bf16"] / rates["fp32"],
            "seeds_for_se": args.seeds,
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
