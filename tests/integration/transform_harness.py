"""Helpers and constants for the integration tests (imported by conftest and the test modules).

``start_local_ray`` is re-exported from tests/local_ray.py for the modules that start their
Ray after a fixture of their own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from local_ray import start_local_ray as start_local_ray  # re-exported

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
