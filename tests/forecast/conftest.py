"""Small shared pieces for the forecasting tests: tiny specs, tiny networks, a saved model.

Everything is deliberately small (a handful of lags, 8 LSTM cells) so a test can build and
run a network in milliseconds; the networks are randomly initialised from a fixed seed (no
training), which is all that sampling, artifacts and windows need.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from batchcast.forecast import DeepAR, ModelSpec, SeriesBatch
from batchcast.forecast.features import Windows
from batchcast.models import save_model

SpecFactory = Callable[..., ModelSpec]
ModelFactory = Callable[..., DeepAR]

# Small lags: 1 and 2 read sampled values from the second forecast step on, 4 and 9 still
# reach into the observed past for a few steps (so both halves of the sampler are exercised).
SMALL_LAGS = (1, 2, 4, 9)


def _spec(**overrides: Any) -> ModelSpec:
    fields: dict[str, Any] = {
        "freq": "H",
        "context_length": 5,
        "prediction_length": 4,
        "lags": SMALL_LAGS,
        "num_time_features": 4,  # hour_of_day, day_of_week, day_of_month, day_of_year
        "num_cells": 8,
        "num_layers": 2,
    }
    fields.update(overrides)
    return ModelSpec(**fields)


@pytest.fixture(scope="session")
def make_spec() -> SpecFactory:
    """``make_spec(**overrides)``: a tiny hourly :class:`ModelSpec`."""
    return _spec


@pytest.fixture(scope="session")
def make_model() -> ModelFactory:
    """``make_model(seed=0, **spec_overrides)``: a randomly initialised network in eval mode."""

    def build(seed: int = 0, **overrides: Any) -> DeepAR:
        torch.manual_seed(seed)
        return DeepAR(_spec(**overrides)).eval()

    return build


def window_tensors(windows: Windows) -> dict[str, torch.Tensor]:
    """The model inputs of ``windows`` as tensors (the keyword arguments of the samplers)."""
    return {
        "past_target": torch.from_numpy(windows.past_target),
        "past_observed": torch.from_numpy(windows.past_observed),
        "covariates": torch.from_numpy(windows.covariates),
        "cat": torch.from_numpy(windows.cat),
    }


@pytest.fixture(scope="session")
def to_tensors() -> Callable[[Windows], dict[str, torch.Tensor]]:
    return window_tensors


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved model folder: categorical (3, 2) and one dynamic feature, student-T."""
    torch.manual_seed(0)
    model = DeepAR(
        _spec(cardinality=(3, 2), embedding_dims=(2, 1), num_dynamic_feat=1, default_scale=5.0)
    ).eval()
    path = tmp_path_factory.mktemp("tiny-model") / "model"
    save_model(model, str(path), hyperparameters={"time_freq": "H"}, metadata={"seed": 0})
    return path


def mixed_batch(
    *,
    prediction_length: int,
    num_dynamic_feat: int = 0,
    cardinality: tuple[int, ...] = (),
    unit_interval: bool = False,
    seed: int = 0,
) -> SeriesBatch:
    """Series with the edge cases: long with NaNs, shorter than the context, empty, one point.

    Args:
        unit_interval: targets in (0, 1) (for the beta likelihood) instead of counts.
    """
    rng = np.random.default_rng(seed)
    lengths = [40, 3, 0, 1, 15, 9]
    targets = []
    for n in lengths:
        t = rng.uniform(0.05, 0.95, n) if unit_interval else rng.poisson(20.0, n).astype(float)
        targets.append(t)
    targets[0][[2, 17, 38]] = np.nan
    targets[4][-2] = np.nan
    dynamic = [rng.normal(size=(n + prediction_length, num_dynamic_feat)) for n in lengths]
    return SeriesBatch.from_lists(
        start=[3600 * 7 * i + 86400 * 40 * i for i in range(len(lengths))],
        targets=targets,
        cat=[[i % c for c in cardinality] for i in range(len(lengths))] if cardinality else None,
        dynamic=dynamic if num_dynamic_feat else None,
        num_dynamic_feat=num_dynamic_feat,
    )


@pytest.fixture(scope="session")
def make_batch() -> Callable[..., SeriesBatch]:
    """``make_batch(prediction_length=..., ...)``: see :func:`mixed_batch`."""
    return mixed_batch
