"""Helpers and constants for the integration tests (imported by conftest and the test modules)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from batchcast.synthetic import synthetic_records

PREDICTION_LENGTH = 6
CONTEXT_LENGTH = 12
# A tiny network: these tests check the plumbing around the model, not its accuracy.
TINY_HYPERPARAMETERS = {
    "time_freq": "H",
    "context_length": str(CONTEXT_LENGTH),
    "prediction_length": str(PREDICTION_LENGTH),
    "epochs": "1",
    "num_cells": "8",
    "num_layers": "1",
    "mini_batch_size": "16",
}
CARDINALITY = (3, 2)
NUM_DYNAMIC_FEAT = 2


def inference_records(n: int, *, seed: int, features: bool = False) -> list[dict[str, Any]]:
    """``n`` valid inference records with ``item_id`` ``item-0``...; with ``features``, the
    ``cat`` and ``dynamic_feat`` (len(target) + prediction_length) the feature model needs."""
    if not features:
        return list(synthetic_records(n, freq="H", length=(20, 50), seed=seed))
    return list(
        synthetic_records(
            n,
            freq="H",
            length=(20, 50),
            cardinality=CARDINALITY,
            num_dynamic_feat=NUM_DYNAMIC_FEAT,
            future_length=PREDICTION_LENGTH,
            seed=seed,
        )
    )


def write_lines(path: Path, lines: list[bytes]) -> Path:
    """Write raw lines, each ending with a newline."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return path


def dumps(records: list[dict[str, Any]]) -> list[bytes]:
    return [orjson.dumps(r) for r in records]


def read_outputs(folder: Path) -> dict[str, bytes]:
    """Every output object under ``folder`` (the summary aside), by relative path."""
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != "_batchcast_summary.json"
    }


def hidden_files(folder: Path) -> list[Path]:
    """Dot-files under ``folder``: a writer's temporary files, which must never stay behind."""
    return list(folder.rglob(".*"))


def start_local_ray() -> Iterator[None]:
    """``ray.init`` a private 2-CPU Ray for one module; shut it down afterwards."""
    import ray

    if ray.is_initialized():  # a module before this one leaked its Ray: do not share it
        ray.shutdown()
    # RAY_ADDRESS would make ray.init join some other cluster instead of starting its own.
    saved = os.environ.pop("RAY_ADDRESS", None)
    try:
        # address="local": a new Ray of our own, never one found on the machine (ray.init()
        # alone would join a `ray start` cluster, or fail on the address file of a dead one).
        ray.init(
            address="local", num_cpus=2, include_dashboard=False, logging_level=logging.WARNING
        )
        yield
    finally:
        ray.shutdown()
        if saved is not None:
            os.environ["RAY_ADDRESS"] = saved
