"""``batchcast demo``: train a small model on generated data and transform a sample file.

What the README's first command runs on a fresh machine: it needs no data and no network.
"""

from __future__ import annotations

import sys
from pathlib import Path

from batchcast.api import train, transform
from batchcast.synthetic import synthetic_records, write_jsonl

__all__ = ["run_demo"]

HYPERPARAMETERS = {
    "time_freq": "H",
    "context_length": "24",
    "prediction_length": "24",
    "epochs": "20",
    "mini_batch_size": "64",
    "num_cells": "40",
    "num_layers": "2",
}


def run_demo(root: Path, *, workers: int | None = None) -> Path:
    """Write ``root/train.jsonl`` and ``root/input/sample.jsonl``, train ``root/model``, transform.

    Returns:
        The output folder.
    """
    log = sys.stderr
    train_file = write_jsonl(root / "train.jsonl", synthetic_records(300, freq="H", seed=1))
    sample = write_jsonl(root / "input" / "sample.jsonl", synthetic_records(2000, freq="H", seed=2))
    print(f"generated {train_file} (300 series) and {sample} (2,000 series)", file=log)
    model_dir = str(root / "model")
    train(
        str(train_file),
        hyperparameters=HYPERPARAMETERS,
        model_dir=model_dir,
        test=str(train_file),
        on_epoch=lambda r: print(
            f"  {r.label}epoch {r.epoch}/{r.epochs} loss {r.loss:.3f}", file=log
        ),
    )
    print(f"trained {model_dir}", file=log)
    output = root / "output"
    summary = transform(
        model_dir,
        str(root / "input"),
        str(output),
        workers=workers,
        progress=None,
        forward_fields=["item_id"],
    )
    out_file = output / "sample.jsonl.out"
    print(
        f"transformed {summary.counts['series']:,} series in {summary.timings['total_s']:.1f}s "
        f"({summary.timings['series_per_s']:,.0f} series/s incl. Ray start-up)",
        file=log,
    )
    print(f"output: {out_file}")
    print(f"summary: {summary.summary_uri}")
    with out_file.open("rb") as f:
        print("first line:", f.readline()[:200].decode() + "...")
    return output
