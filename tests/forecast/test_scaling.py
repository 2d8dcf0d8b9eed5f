"""How a window's targets become the network's units: GluonTS's "mean" and batchcast's "std".

"std" scaling feeds ``(y - mean) / std`` of the context and shifts the forecast back by the
mean. What must hold: the location and scale are the context's; the vectorised sampler still
matches the step-by-step reference; a forecast moves with its series when the series is
shifted; tiles never change its bytes; and the hyperparameter resolves, validates and
survives a save and a load.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from reference import naive_sample_paths

from batchcast.errors import ConfigError
from batchcast.forecast import (
    DeepAR,
    DeepARConfig,
    InferenceConfig,
    ModelSpec,
    SeriesBatch,
    build_windows,
    forecast,
    get_likelihood,
    sample_paths,
)
from batchcast.forecast.config import LOCATION_FAMILIES
from batchcast.forecast.train import train_model
from batchcast.models import load_model, save_model

Tensors = Callable[..., dict[str, torch.Tensor]]


def _context() -> tuple[torch.Tensor, torch.Tensor]:
    # C = 4 of a 6-point window (lags 1..3): the first two points are outside the context.
    nan = float("nan")
    rows = [
        [100.0, 100.0, 1.0, -3.0, nan, 5.0],  # observed context 1, -3, 5
        [7.0, 7.0, nan, nan, nan, nan],  # no observed context point
        [9.0, 9.0, 4.0, 4.0, 4.0, 4.0],  # flat: the floor
    ]
    values = torch.tensor(rows)
    return values.nan_to_num(0.0), (~values.isnan()).float()


def test_std_scaling_is_the_contexts_mean_and_deviation(
    make_model: Callable[..., DeepAR],
) -> None:
    model = make_model(lags=(1, 2, 3), context_length=4, default_scale=7.5, scaling="std")
    scale = model.scaling(*_context())
    assert scale.loc is not None
    torch.testing.assert_close(scale.loc, torch.tensor([[1.0], [0.0], [4.0]]))
    # population deviation of 1, -3, 5 (mean 1): sqrt(32 / 3); the floor adds (1e-3 * 3)^2
    first = math.sqrt(32.0 / 3.0 + (1e-3 * 3.0) ** 2)
    # a context with no observed point: the spec's default scale, no shift;
    # a flat context: 0.1% of its mean absolute value
    expected = torch.tensor([[first], [7.5], [4e-3]])
    torch.testing.assert_close(scale.scale, expected)
    window = torch.tensor([[1.0, 4.0], [7.5, 0.0], [4.0, 4.5]])
    torch.testing.assert_close(
        scale.normalize(window), torch.tensor([[0.0, 3.0 / first], [1.0, 0.0], [0.0, 125.0]])
    )


def test_std_scaling_stays_finite_for_every_target_a_record_may_hold(
    make_model: Callable[..., DeepAR],
) -> None:
    """Squared deviations overflow float32 from ~1.8e19, far inside the 1e30 a record's target
    may reach; the deviation is taken in units of the mean absolute value instead."""
    model = make_model(lags=(1, 2, 3), context_length=4, scaling="std")
    rows = np.array(
        [
            [1e30] * 6,  # flat at the limit: the floor
            [0.0, 0.0, 1e30, -1e30, 1e30, -1e30],  # swings of 2e30
            [1e20, 1e20, 1e20, 1.2e20, 0.8e20, 1.1e20],  # moves of 2e19
        ]
    )
    target = torch.tensor(rows, dtype=torch.float32)
    scale = model.scaling(target, torch.ones_like(target))
    assert scale.loc is not None
    context = rows[:, -4:].astype(np.float32).astype(np.float64)  # what the model reads
    floor = 1e-3 * np.abs(context).mean(axis=1)
    expected = np.sqrt(context.var(axis=1) + floor**2)  # float64 reference
    np.testing.assert_allclose(scale.scale.squeeze(1).numpy(), expected, rtol=1e-5)
    np.testing.assert_allclose(scale.loc.squeeze(1).numpy(), context.mean(axis=1), rtol=1e-5)


def test_a_std_model_forecasts_series_near_the_limit_to_finite_numbers(
    make_model: Callable[..., DeepAR],
) -> None:
    model = make_model(scaling="std", prediction_length=6)
    rng = np.random.default_rng(2)
    targets = [
        (1e29 + 1e26 * rng.standard_normal(40)).astype(np.float32),
        (1e20 + 2e19 * rng.standard_normal(40)).astype(np.float32),
        np.tile(np.float32([1e30, -1e30]), 20),
    ]
    samples = _samples(model, targets)
    assert np.isfinite(samples).all()
    # and near each series' level: within a few hundred of its deviations
    for b, target in enumerate(targets):
        spread = float(np.std(target[-model.spec.context_length :].astype(np.float64)))
        level = float(np.mean(target[-model.spec.context_length :].astype(np.float64)))
        assert np.abs(samples[b] - level).max() < 1e3 * max(spread, 1e-3 * abs(level))


def test_the_held_out_loss_is_in_the_series_units_whatever_the_scale() -> None:
    """What "auto" compares across scalings: the same forecast in target units scores the
    same under any scale. The L1 loss the network trains on is in scaled units, so its
    held-out loss multiplies the scale back (it used to compare the scaled numbers, which
    favoured whichever scaling had the larger scale)."""
    target = torch.tensor([110.0])
    for name, params_at in (
        ("deterministic-L1", lambda s: [100.0 / s]),
        ("gaussian", lambda s: [100.0 / s, 20.0 / s]),
        ("student-T", lambda s: [5.0, 100.0 / s, 20.0 / s]),
    ):
        likelihood = get_likelihood(name)
        losses = [
            likelihood.held_out_loss(torch.tensor([params_at(s)]), target, torch.tensor([s])).item()
            for s in (10.0, 1000.0)
        ]
        assert losses[0] == pytest.approx(losses[1], rel=1e-5), name
    l1 = get_likelihood("deterministic-L1")
    assert l1.held_out_loss(torch.tensor([[10.0]]), target, torch.tensor([10.0])).item() == (
        pytest.approx(10.0)
    )


def test_mean_scaling_has_no_location(make_model: Callable[..., DeepAR]) -> None:
    model = make_model(lags=(1, 2, 3), context_length=4, default_scale=7.5)
    scale = model.scaling(*_context())
    assert model.spec.scaling == "mean"
    assert scale.loc is None
    torch.testing.assert_close(scale.scale, torch.tensor([[3.0], [7.5], [4.0]]))


@pytest.mark.parametrize("likelihood", LOCATION_FAMILIES)
def test_std_scaled_sampler_matches_the_reference(
    likelihood: str,
    make_model: Callable[..., DeepAR],
    make_batch: Callable[..., SeriesBatch],
    to_tensors: Tensors,
) -> None:
    model = make_model(likelihood=likelihood, scaling="std", prediction_length=6)
    batch = make_batch(prediction_length=6)
    windows = build_windows(batch, model.spec, dummy_value=model.likelihood.value_in_support)
    inputs = to_tensors(windows)
    fast, naive = (
        sampler(model, **inputs, num_samples=20, generator=torch.Generator().manual_seed(3))
        for sampler in (sample_paths, naive_sample_paths)
    )
    assert torch.isfinite(fast).all()
    relative = ((fast - naive).abs() / naive.abs().clamp_min(1.0)).max().item()
    assert relative < 1e-4, relative


def _samples(model: DeepAR, targets: list[np.ndarray]) -> np.ndarray:
    batch = SeriesBatch.from_lists(start=[0] * len(targets), targets=targets)
    config = InferenceConfig(num_samples=50, output_types=("samples",))
    out = forecast(model, batch, config, generator=torch.Generator().manual_seed(8))
    assert out.samples is not None
    return out.samples


@pytest.mark.parametrize("scaling", ["mean", "std"])
def test_a_shifted_series_gets_a_shifted_forecast_only_with_std(
    scaling: str, make_model: Callable[..., DeepAR]
) -> None:
    """The property "std" scaling exists for: the network sees the same inputs for a series
    and the series plus a constant, so the forecast moves by that constant (up to float
    rounding and the floor's 1e-3 of the level). Under "mean" the level changes what the
    network sees."""
    model = make_model(scaling=scaling, prediction_length=6)
    rng = np.random.default_rng(0)
    base = [50.0 + 20.0 * rng.standard_normal(40) for _ in range(3)]
    shift = 30.0
    plain = _samples(model, [x.astype(np.float32) for x in base])
    moved = _samples(model, [(x + shift).astype(np.float32) for x in base])
    close = np.allclose(moved - shift, plain, rtol=0, atol=2e-3 * np.abs(plain).max())
    assert close == (scaling == "std")


@pytest.mark.parametrize(
    ("likelihood", "candidates"),
    [
        ("student-T", ("mean", "std")),
        ("gaussian", ("mean", "std")),
        ("deterministic-L1", ("mean", "std")),
        ("negative-binomial", ("mean",)),
        ("beta", ("mean",)),
    ],
)
def test_auto_scaling_tries_std_for_location_families_only(
    likelihood: str, candidates: tuple[str, ...]
) -> None:
    config = DeepARConfig.from_hyperparameters(
        {
            "time_freq": "D",
            "context_length": 5,
            "prediction_length": 3,
            "epochs": 1,
            "likelihood": likelihood,
        }
    )
    assert config.scaling == "auto"
    assert config.scaling_candidates == candidates
    chosen = DeepARConfig(
        time_freq="D", context_length=5, prediction_length=3, epochs=1, scaling="std"
    )
    assert chosen.scaling_candidates == ("std",)
    assert chosen.to_hyperparameters()["scaling"] == "std"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"scaling": "robust"}, "scaling must be one of ['auto', 'mean', 'std']"),
        (
            {"scaling": "std", "likelihood": "negative-binomial"},
            "scaling 'std' needs a location family",
        ),
    ],
)
def test_bad_scaling_is_a_config_error(overrides: dict[str, Any], message: str) -> None:
    base = {"time_freq": "D", "context_length": 5, "prediction_length": 3, "epochs": 1}
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        DeepARConfig.from_hyperparameters({**base, **overrides})


def test_model_spec_rejects_auto_and_shifted_counts(make_spec: Callable[..., ModelSpec]) -> None:
    with pytest.raises(ConfigError, match="scaling must be one of"):
        make_spec(scaling="auto")
    with pytest.raises(ConfigError, match="needs a location family"):
        make_spec(scaling="std", likelihood="beta")


def test_a_spec_saved_without_scaling_loads_as_mean(make_spec: Callable[..., ModelSpec]) -> None:
    data = make_spec(scaling="std").to_dict()
    assert data["scaling"] == "std"
    assert ModelSpec.from_dict(data).scaling == "std"
    del data["scaling"]  # a model saved before the field existed
    assert ModelSpec.from_dict(data).scaling == "mean"


def _trending(n: int, length: int) -> SeriesBatch:
    rng = np.random.default_rng(1)
    targets = [
        (500.0 + 5.0 * np.arange(length) + rng.normal(0, 3, length)).astype(np.float32)
        for _ in range(n)
    ]
    return SeriesBatch.from_lists(start=[0] * n, targets=targets)


def _config(**overrides: Any) -> DeepARConfig:
    base = {"time_freq": "D", "context_length": 7, "prediction_length": 3, "epochs": 2}
    return DeepARConfig(**{**base, "num_cells": 8, **overrides})


def test_auto_keeps_the_scaling_with_the_lower_validation_loss() -> None:
    batch = _trending(6, 40)
    result = train_model(_config(), batch, seed=0)
    losses = result.scaling_losses
    assert set(losses) == {"mean", "std"}
    assert losses["mean"] != losses["std"]
    assert result.model.spec.scaling == min(losses, key=losses.__getitem__)
    assert min(result.validation_losses) == losses[result.model.spec.scaling]
    # each candidate is trained as if it were the only one: the kept network is exactly the
    # one the explicit choice trains
    alone = train_model(_config(scaling=result.model.spec.scaling), batch, seed=0)
    assert alone.scaling_losses == {}
    for name, weights in alone.model.state_dict().items():
        assert torch.equal(weights, result.model.state_dict()[name]), name


def test_auto_trains_one_mean_network_when_nothing_can_be_held_out() -> None:
    # 5 points with prediction_length 3: no series can spare its tail for validation
    result = train_model(_config(), _trending(4, 5), seed=0)
    assert result.model.spec.scaling == "mean"
    assert result.scaling_losses == {}
    assert result.validation_losses == []


def test_a_std_model_forecasts_the_same_after_saving_and_loading(tmp_path: Path) -> None:
    batch = _trending(4, 60)
    result = train_model(_config(scaling="std"), batch, seed=0)
    assert result.model.spec.scaling == "std"
    path = save_model(result.model, str(tmp_path / "model"))
    loaded = load_model(path).model
    assert loaded.spec == result.model.spec
    targets = [batch.series(0)]
    before, after = (_samples(m, targets) for m in (result.model, loaded))
    assert np.array_equal(before, after)
