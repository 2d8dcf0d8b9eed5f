"""Integration fixtures: one real local Ray per module, and tiny trained models.

Helpers and constants the test modules import live in ``transform_harness.py``; the plain
``tiny_model`` comes from tests/conftest.py.

Ray is started once per module (``ray.init`` costs seconds and two actors take this
machine's two CPUs), never per test, and shut down after the module, so no module shares
another's Ray. A module that needs S3 asks for ``s3_server`` *before* Ray starts (see
``test_transform_s3.py``): workers inherit the driver's environment when Ray starts them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from transform_harness import (
    CARDINALITY,
    NUM_DYNAMIC_FEAT,
    TINY_HYPERPARAMETERS,
)

from batchcast.synthetic import synthetic_records, write_jsonl


def _train(folder: Path, records: Any) -> str:
    from batchcast.api import train

    data = write_jsonl(folder / "train.jsonl", records)
    model_dir = str(folder / "model")
    train(str(data), hyperparameters=TINY_HYPERPARAMETERS, model_dir=model_dir, seed=0)
    return model_dir


@pytest.fixture(scope="module")
def tiny_feature_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Like ``tiny_model``, trained with ``cat`` (cardinality 3, 2) and 2 ``dynamic_feat``."""
    folder = tmp_path_factory.mktemp("tiny-feature-model")
    records = synthetic_records(
        48,
        freq="H",
        length=(30, 60),
        cardinality=CARDINALITY,
        num_dynamic_feat=NUM_DYNAMIC_FEAT,
        seed=1,
    )
    return _train(folder, records)
