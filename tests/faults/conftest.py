"""Fixtures of the fault suite: a tiny trained model, shared by a module (``ray_local`` comes
from tests/conftest.py)."""

from __future__ import annotations

import pytest

from batchcast.api import train
from batchcast.synthetic import synthetic_records, write_jsonl

TINY_HYPERPARAMETERS = {
    "time_freq": "H",
    "context_length": "12",
    "prediction_length": "6",
    "epochs": "1",
    "num_cells": "8",
    "num_layers": "1",
    "mini_batch_size": "16",
}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny hourly model (prediction_length 6, context 12) trained for one epoch; its path."""
    folder = tmp_path_factory.mktemp("tiny-model")
    records = synthetic_records(48, freq="H", length=(30, 60), seed=1)
    data = write_jsonl(folder / "train.jsonl", records)
    model_dir = str(folder / "model")
    train(str(data), hyperparameters=TINY_HYPERPARAMETERS, model_dir=model_dir, seed=0)
    return model_dir
