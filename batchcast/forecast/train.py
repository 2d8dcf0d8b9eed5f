"""A plain DeepAR training loop, and SageMaker's test-channel metrics.

Training windows are drawn at random, as GluonTS's ``ExpectedNumInstanceSampler`` does: a
series uniformly, then a split point uniformly among those that leave ``prediction_length``
points after it (the history before may be short: it is padded and masked). An epoch is
``ceil(num_series / mini_batch_size)`` mini-batches, i.e. one window per series on average.
The loss is the observed-weighted negative log-likelihood of the last ``C - 1`` context
points and the ``P`` future points (GluonTS's). Gradients are clipped at norm 10 (GluonTS's
default). With ``early_stopping_patience`` the loop stops after that many epochs without a
better epoch loss and keeps the best weights, as SageMaker does.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from batchcast.errors import ConfigError
from batchcast.forecast.config import DeepARConfig, InferenceConfig, ModelSpec
from batchcast.forecast.features import build_windows, lags_for_frequency, time_feature_names
from batchcast.forecast.model import DeepAR
from batchcast.forecast.sampling import forecast
from batchcast.forecast.series import SeriesBatch

__all__ = [
    "EpochReport",
    "TrainResult",
    "evaluate",
    "make_spec",
    "quantile_metrics",
    "train_model",
]

GRADIENT_CLIP = 10.0


@dataclass(frozen=True)
class EpochReport:
    """What one epoch did, handed to the progress callback."""

    epoch: int
    epochs: int
    loss: float
    seconds: float
    best: bool


@dataclass
class TrainResult:
    """The trained network, its per-epoch losses and (with a test set) the test metrics."""

    model: DeepAR
    losses: list[float]
    metrics: dict[str, float] = field(default_factory=dict)
    best_epoch: int = 0


def make_spec(
    config: DeepARConfig,
    *,
    cardinality: tuple[int, ...],
    num_dynamic_feat: int,
    default_scale: float | None,
) -> ModelSpec:
    """The model signature for ``config`` with the data-dependent choices resolved."""
    return ModelSpec(
        freq=config.time_freq.strip(),
        context_length=config.context_length,
        prediction_length=config.prediction_length,
        lags=lags_for_frequency(config.time_freq),
        num_time_features=len(time_feature_names(config.time_freq)),
        cardinality=tuple(cardinality),
        embedding_dims=tuple(config.embedding_dimension for _ in cardinality),
        num_dynamic_feat=num_dynamic_feat,
        num_cells=config.num_cells,
        num_layers=config.num_layers,
        dropout_rate=config.dropout_rate,
        likelihood=config.likelihood,
        default_scale=default_scale,
    )


def _typical_scale(batch: SeriesBatch) -> float:
    """Mean over series of their mean absolute observed value: the scale for a blank context."""
    scales = []
    for b in range(batch.num_series):
        values = batch.series(b)
        values = values[~np.isnan(values)]
        if values.size:
            scales.append(float(np.abs(values).mean()))
    return float(np.mean(scales)) if scales else 1.0


def _window_tensors(
    batch: SeriesBatch, spec: ModelSpec, split: np.ndarray, dummy: float, device: torch.device
) -> dict[str, torch.Tensor]:
    w = build_windows(batch, spec, split=split, dummy_value=dummy, with_future=True)
    # with_future=True guarantees both
    assert w.future_target is not None
    assert w.future_observed is not None
    arrays = {
        "past_target": w.past_target,
        "past_observed": w.past_observed,
        "covariates": w.covariates,
        "cat": w.cat,
        "future_target": w.future_target,
        "future_observed": w.future_observed,
    }
    return {k: torch.from_numpy(v).to(device) for k, v in arrays.items()}


def train_model(
    config: DeepARConfig,
    batch: SeriesBatch,
    *,
    cardinality: tuple[int, ...] = (),
    num_dynamic_feat: int = 0,
    test: SeriesBatch | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
    on_epoch: Callable[[EpochReport], None] | None = None,
) -> TrainResult:
    """Train a DeepAR network on ``batch`` (SageMaker's training channel, decoded).

    Args:
        config: the hyperparameters.
        batch: training series (dynamic features as long as the target).
        cardinality: resolved categorical cardinalities (empty: no ``cat``).
        num_dynamic_feat: resolved number of dynamic features.
        test: optional test channel; its last ``prediction_length`` points are withheld and
            forecast to compute :func:`evaluate`'s metrics.
        seed: makes the run deterministic (weights, window draws, evaluation samples).
        device: where to train.
        on_epoch: called after every epoch (progress display).

    Raises:
        ConfigError: if no series is long enough to hold a training window.
    """
    p = config.prediction_length
    eligible = np.flatnonzero(batch.lengths > p)
    if eligible.size == 0:
        raise ConfigError(
            f"no training series has more than prediction_length={p} points; "
            "each needs at least prediction_length + 1"
        )
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    spec = make_spec(
        config,
        cardinality=cardinality,
        num_dynamic_feat=num_dynamic_feat,
        default_scale=_typical_scale(batch),
    )
    dev = torch.device(device)
    model = DeepAR(spec).to(dev)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    dummy = model.likelihood.value_in_support
    batches_per_epoch = max(1, math.ceil(batch.num_series / config.mini_batch_size))

    losses: list[float] = []
    best_loss, best_epoch, best_state = math.inf, 0, None
    for epoch in range(1, config.epochs + 1):
        started = time.perf_counter()
        model.train()
        total = 0.0
        for _ in range(batches_per_epoch):
            series = rng.choice(eligible, size=config.mini_batch_size)
            # split in [1, T - P]: at least one past point, P future points inside the series
            split = 1 + (rng.random(series.size) * (batch.lengths[series] - p)).astype(np.int64)
            tensors = _window_tensors(batch.take(series), spec, split, dummy, dev)
            loss = model.loss(**tensors)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), GRADIENT_CLIP)
            optimizer.step()
            total += float(loss.detach())
        epoch_loss = total / batches_per_epoch
        losses.append(epoch_loss)
        improved = epoch_loss < best_loss
        if improved:
            best_loss, best_epoch = epoch_loss, epoch
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if on_epoch is not None:
            on_epoch(
                EpochReport(
                    epoch, config.epochs, epoch_loss, time.perf_counter() - started, improved
                )
            )
        patience = config.early_stopping_patience
        if patience is not None and epoch - best_epoch >= patience:
            break
    if best_state is not None and config.early_stopping_patience is not None:
        model.load_state_dict(best_state)
    model.eval()
    result = TrainResult(model=model, losses=losses, best_epoch=best_epoch)
    if test is not None:
        result.metrics = evaluate(model, test, config, seed=seed)
    return result


def _withhold(batch: SeriesBatch, horizon: int) -> tuple[SeriesBatch, np.ndarray]:
    """The test series minus their last ``horizon`` points, and those points (B, horizon)."""
    eligible = np.flatnonzero(batch.lengths > horizon)
    if eligible.size == 0:
        raise ConfigError(f"no test series has more than prediction_length={horizon} points")
    targets, actual = [], []
    for b in eligible:
        series = batch.series(int(b))
        targets.append(series[:-horizon])
        actual.append(series[-horizon:])
    n_dyn = batch.dynamic_feat.shape[1]
    dynamic = [batch.dynamic(int(b)) for b in eligible]
    cut = SeriesBatch.from_lists(
        start=batch.start[eligible],
        targets=targets,
        cat=batch.cat[eligible],
        dynamic=dynamic if n_dyn else None,
        num_dynamic_feat=n_dyn,
    )
    return cut, np.stack(actual)


def evaluate(
    model: DeepAR, test: SeriesBatch, config: DeepARConfig, *, seed: int = 0
) -> dict[str, Any]:
    """SageMaker's test metrics: ``test:RMSE``, ``test:mean_wQuantileLoss`` and per quantile.

    The last ``prediction_length`` points of each test series are withheld and forecast with
    ``num_eval_samples`` paths. RMSE compares the forecast mean with them; the weighted quantile
    loss of level q is ``2 * sum(pinball_q) / sum(|y|)`` over all series and steps (observed
    points only).
    """
    cut, actual = _withhold(test, config.prediction_length)
    levels = [repr(float(q)) for q in config.test_quantiles]
    inference = InferenceConfig(
        num_samples=config.num_eval_samples,
        output_types=("mean", "quantiles"),
        quantiles=tuple(levels),
    )
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    result = forecast(model, cut, inference, generator=generator)
    assert result.mean is not None  # asked for above
    assert result.quantiles is not None
    return quantile_metrics(actual, result.mean, result.quantiles, config.test_quantiles)


def quantile_metrics(
    actual: np.ndarray, mean: np.ndarray, quantiles: np.ndarray, levels: tuple[float, ...]
) -> dict[str, Any]:
    """RMSE of ``mean`` (B, P) and weighted quantile losses of ``quantiles`` (B, Q, P).

    NaN points of ``actual`` are left out.
    """
    observed = ~np.isnan(actual)
    y = np.where(observed, actual, 0.0).astype(np.float64)
    metrics: dict[str, Any] = {
        "test:RMSE": float(np.sqrt(np.sum(((mean - y) ** 2) * observed) / max(observed.sum(), 1)))
    }
    denominator = max(float(np.abs(y).sum()), 1e-12)
    losses = []
    for i, q in enumerate(levels):
        pred = quantiles[:, i].astype(np.float64)
        pinball = np.where(y >= pred, q * (y - pred), (1 - q) * (pred - y)) * observed
        loss = 2.0 * float(pinball.sum()) / denominator
        metrics[f"test:wQuantileLoss[{q}]"] = loss
        losses.append(loss)
    metrics["test:mean_wQuantileLoss"] = float(np.mean(losses))
    return metrics
