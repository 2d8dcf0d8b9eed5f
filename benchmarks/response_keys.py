"""What do the response keys cost? Default output vs class probabilities vs CSV, end to end.

Question (issue "Response keys, event probabilities and CSV"): classification must not cost
more than 5% over the default output. On the default work unit (hourly, 2 x 40, student-T,
100 paths, series of ~1,000 points), the same input is transformed on one local Ray with:

* ``default``: mean + 9 quantiles (SPEC.md's default output), JSON Lines;
* ``classes``: ``predicted_label,probabilities`` over the sum of each path (3 classes), with
  the default output's keys too (``mean,quantiles,predicted_label,probabilities``), so the
  figure is the classification's own cost on top of the default;
* ``classes only``: ``predicted_label,probabilities`` alone;
* ``csv``: the default keys as ``text/csv``.

The variants run interleaved, ``--repeats`` rounds, the median series/s of each reported with
its ratio to ``default`` from the same rounds (so a busy box slows all of them alike).

    python -m benchmarks.response_keys --series 5k       # about 2 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import tempfile
from pathlib import Path
from typing import Any

import torch

from batchcast.io.content import ResponseKeys
from batchcast.models import save_model
from benchmarks.common import WorkUnit, count, emit
from benchmarks.data import DataSpec, ensure_jsonl
from benchmarks.sampling import default_model

CLASSES = {"aggregate": "sum", "thresholds": [300.0, 1200.0], "labels": ["low", "mid", "high"]}
VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "classes": {
        "inference": {"num_samples": 100, "classes": CLASSES},
        "response_keys": ResponseKeys(
            output=("mean", "quantiles", "predicted_label", "probabilities")
        ),
    },
    "classes only": {
        "inference": {"num_samples": 100, "classes": CLASSES},
        "response_keys": ResponseKeys(output=("predicted_label", "probabilities")),
    },
    "csv": {"accept": "text/csv"},
}


def _run(model: str, source: Path, out: Path, workers: int, options: dict[str, Any]) -> float:
    from batchcast.api import transform

    shutil.rmtree(out, ignore_errors=True)
    summary = transform(model, str(source), str(out), workers=workers, progress=False, **options)
    if not summary.ok:
        raise SystemExit(f"transform failed: {summary.failure_reason}")
    series = summary.counts["series"]
    shutil.rmtree(out, ignore_errors=True)
    total = summary.timings["total_s"]
    assert total is not None  # a finished job has a total
    return float(series / total)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=count, default=5000)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "bc-keys")
    args = parser.parse_args()
    import ray

    unit = WorkUnit()
    args.workdir.mkdir(parents=True, exist_ok=True)
    source = ensure_jsonl(DataSpec(series=args.series, length=unit.length), args.workdir)
    torch.manual_seed(0)
    model = save_model(default_model(unit, seed=0), str(args.workdir / "model"))
    ray.init(address="local", logging_level=logging.WARNING)
    out = args.workdir / "out"
    _run(model, source, out, args.workers, {})  # warm-up: workers' imports, the cell's build
    rates: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for _ in range(args.repeats):
        for name, options in VARIANTS.items():
            rates[name].append(_run(model, source, out, args.workers, options))
    base = statistics.median(rates["default"])
    for name, runs in rates.items():
        rate = statistics.median(runs)
        emit(
            "response_keys",
            name,
            {"series": args.series, "workers": args.workers, "series_per_s": rate,
             "runs": runs, "vs_default": rate / base},
        )  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
