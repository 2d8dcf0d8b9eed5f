"""The DeepAR training loop, and SageMaker's test-channel metrics.

The rule (GluonTS's ``DeepAREstimator`` defaults where SageMaker's documentation is silent):

* **Windows.** Each mini-batch holds ``mini_batch_size`` windows drawn uniformly over all
  (series, split point) pairs with at least ``context_length`` points of history before the
  split, or a series' last split point when it is shorter than that
  (:class:`~batchcast.forecast.windows.WindowSampler`; GluonTS also draws windows that are
  mostly padding, which cost 1.7-3.4% wQL on M3 monthly). The loss is the observed-weighted
  negative log-likelihood of the last ``C - 1`` context points and the ``P`` future points.
* **Epoch.** ``max(MIN_BATCHES_PER_EPOCH, ceil(num_series / mini_batch_size))`` mini-batches:
  at least GluonTS's 50 optimizer steps, and for a large data set one window per series on
  average (SageMaker's "pass over the training data").
* **Validation.** The last ``P`` points of (up to 2,000) series long enough to spare them are
  held out (:func:`~batchcast.forecast.windows.validation_split`); after every epoch the
  network forecasts them (teacher-forced) and the NLL of those ``P`` points is the
  validation loss. Without any such series the epoch's training loss stands in (GluonTS).
* **Model choice.** The weights of the epoch with the lowest validation loss are handed back
  (GluonTS's checkpoint rule); ``early_stopping_patience`` stops the run after that many
  epochs without a better one (SageMaker's rule).
* **Optimisation.** Adam at ``learning_rate``, gradients clipped at norm 10, and the learning
  rate halved after ``LR_PATIENCE`` epochs without a better validation loss
  (``ReduceLROnPlateau``, GluonTS's schedule).
* **Scaling.** With ``scaling`` "auto" and a location-family likelihood, one network is
  trained per scaling ("mean", then "std"; :data:`~batchcast.forecast.config.SCALINGS`), each
  from the same seed as if it were the only one, and the one with the lower best validation
  loss is kept (the validation loss is the NLL in the series' own units, so the two compare).
  When no series is long enough to hold out (``validation_split``), only "mean" (GluonTS's)
  is trained. Neither scaling is better everywhere (``DeepARConfig.scaling``).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from batchcast.errors import ConfigError, TrainingError
from batchcast.forecast.config import DeepARConfig, InferenceConfig, ModelSpec
from batchcast.forecast.features import build_windows, lags_for_frequency, time_feature_names
from batchcast.forecast.model import DeepAR
from batchcast.forecast.sampling import forecast
from batchcast.forecast.series import SeriesBatch
from batchcast.forecast.windows import (
    WindowSampler,
    validation_candidates,
    validation_split,
)

__all__ = [
    "GRADIENT_CLIP",
    "LR_FACTOR",
    "LR_PATIENCE",
    "MIN_BATCHES_PER_EPOCH",
    "EpochReport",
    "TrainResult",
    "batches_per_epoch",
    "evaluate",
    "make_spec",
    "quantile_metrics",
    "train_model",
]

GRADIENT_CLIP = 10.0  # GluonTS's gradient_clip_val
MIN_BATCHES_PER_EPOCH = 50  # GluonTS's num_batches_per_epoch
LR_PATIENCE = 10  # epochs without a better validation loss before the rate is halved
LR_FACTOR = 0.5
_EVAL_CHUNK = 1024  # validation windows per forward pass (bounds memory, not results)


@dataclass(frozen=True)
class EpochReport:
    """What one epoch did, handed to the progress callback.

    ``loss`` is the mean training loss; ``validation_loss`` the held-out loss (None without a
    validation split); ``best`` whether this epoch is the best so far (the one kept).
    """

    epoch: int
    epochs: int
    loss: float
    seconds: float
    best: bool
    validation_loss: float | None = None
    learning_rate: float = 0.0
    scaling: str | None = None  # the network's scaling, when a run trains one per scaling

    @property
    def label(self) -> str:
        """The prefix of this epoch's progress line: whose epoch it is (``"std scaling: "``)
        when a run trains one network per scaling, else empty."""
        return f"{self.scaling} scaling: " if self.scaling else ""


@dataclass
class TrainResult:
    """The trained network (the best epoch's weights), per-epoch losses and test metrics.

    ``validation_losses`` is empty when no series could be held out; ``steps_per_epoch`` is
    the number of optimizer steps each epoch took; ``validation_series`` how many series
    were held out.
    """

    model: DeepAR
    losses: list[float]
    metrics: dict[str, float] = field(default_factory=dict)
    best_epoch: int = 0
    validation_losses: list[float] = field(default_factory=list)
    steps_per_epoch: int = 0
    validation_series: int = 0
    # scaling -> best validation loss, for every scaling tried when more than one was
    scaling_losses: dict[str, float] = field(default_factory=dict)
    # the epoch whose training loss was NaN or infinite (training stopped there), if any
    diverged_epoch: int | None = None


def batches_per_epoch(num_series: int, mini_batch_size: int) -> int:
    """Optimizer steps in one epoch: ``max(50, ceil(num_series / mini_batch_size))``."""
    return max(MIN_BATCHES_PER_EPOCH, math.ceil(num_series / mini_batch_size))


def make_spec(
    config: DeepARConfig,
    *,
    cardinality: tuple[int, ...],
    num_dynamic_feat: int,
    default_scale: float | None,
    scaling: str = "mean",
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
        scaling=scaling,
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


@torch.no_grad()
def _horizon_loss(model: DeepAR, chunks: list[dict[str, torch.Tensor]]) -> float | None:
    """Observed-weighted loss of the ``P`` held-out points over all validation windows, in
    the series' units (:meth:`Likelihood.held_out_loss`: networks of different scalings
    compare); None when no held-out point is observed (nothing to validate on: a 0 would
    look perfect and freeze the first epoch as the best). Not finite: ``inf``.

    Only the horizon is scored (not the context points the training loss also scores): the
    held-out tail is what a forecast is judged on. Teacher-forced, so one forward pass.
    """
    model.eval()
    p = model.spec.prediction_length
    total, weight = 0.0, 0.0
    for t in chunks:
        params, scale, _, _ = model(
            t["past_target"], t["past_observed"], t["covariates"], t["cat"], t["future_target"]
        )
        future = scale.centre(t["future_target"])
        loss = model.likelihood.held_out_loss(params[:, -p:], future, scale.scale)  # (B, P)
        total += float((loss * t["future_observed"]).sum())
        weight += float(t["future_observed"].sum())
    if weight == 0:
        return None
    return total / weight if math.isfinite(total) else math.inf


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
    min_past: int | None = None,
) -> TrainResult:
    """Train a DeepAR network on ``batch`` (SageMaker's training channel, decoded).

    See the module docstring for the rule (windows, epochs, validation, model choice).

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
        min_past: the history a training window starts with (None: ``context_length``, the
            rule; 1: any split point, GluonTS's sampler). For experiments.

    Returns:
        The network with the best epoch's weights, in eval mode, and the loss history (of
        the scaling kept, when several were tried).

    Raises:
        ConfigError: if no series is long enough to hold a training window, the training data
            has no observed value, or the test data no observed point to score.
        TrainingError: if the loss became NaN or infinite before any epoch finished well.
    """
    p = config.prediction_length
    if not np.any(batch.lengths > p):
        raise ConfigError(
            f"no training series has more than prediction_length={p} points; "
            "each needs at least prediction_length + 1"
        )
    if np.isnan(batch.target).all():
        raise ConfigError("the training data has no observed target value (all null or NaN)")
    # The test channel is cut once, and checked before training rather than after it.
    withheld = None if test is None else _withheld_test(test, p)
    candidates = config.scaling_candidates
    if not _can_validate(batch, p):
        candidates = candidates[:1]  # nothing to validate on, so nothing to choose by: "mean"
    default_scale = _typical_scale(batch)
    results = []
    for scaling in candidates:
        spec = make_spec(
            config,
            cardinality=cardinality,
            num_dynamic_feat=num_dynamic_feat,
            default_scale=default_scale,
            scaling=scaling,
        )
        report = on_epoch
        if on_epoch is not None and len(candidates) > 1:
            report = _labelled(on_epoch, scaling)
        results.append(_fit(config, batch, spec, seed, torch.device(device), report, min_past))
    usable = [r for r in results if r.best_epoch > 0]
    if not usable:
        raise TrainingError(_diverged(results))
    result = min(usable, key=_choice_loss)  # the first ("mean") on a tie
    if len(results) > 1:
        result.scaling_losses = {r.model.spec.scaling: _choice_loss(r) for r in results}
    if withheld is not None:
        result.metrics = _score_withheld(result.model, *withheld, config, seed=seed)
    return result


def _can_validate(batch: SeriesBatch, horizon: int) -> bool:
    """Whether some series can hold out a tail with an observed point in it."""
    return any(
        not np.isnan(batch.series(int(b))[-horizon:]).all()
        for b in validation_candidates(batch.lengths, horizon)
    )


def _diverged(results: list[TrainResult]) -> str:
    """Why no network was kept: each scaling's epoch whose loss was not finite."""
    where = ", ".join(
        f"{r.model.spec.scaling} scaling: "
        + (
            f"training loss not finite at epoch {r.diverged_epoch}"
            if r.diverged_epoch is not None
            else "no finite validation loss"
        )
        for r in results
    )
    return (
        f"no epoch trained to a finite loss ({where}); check the targets for values near "
        "the float32 limit, or lower learning_rate"
    )


def _withheld_test(test: SeriesBatch, horizon: int) -> tuple[SeriesBatch, np.ndarray]:
    """:func:`_withhold` of the test channel, refused when it leaves nothing to score
    (``evaluate`` would report a perfect 0 for points that are all missing)."""
    cut, actual = _withhold(test, horizon)
    if np.isnan(actual).all():
        raise ConfigError(
            f"the test data's last prediction_length={horizon} points are missing (null or "
            "NaN) in every test series: nothing to score"
        )
    return cut, actual


def _choice_loss(result: TrainResult) -> float:
    """The loss the scaling choice compares: the best validation loss (inf without one)."""
    return min(result.validation_losses, default=math.inf)


def _labelled(
    on_epoch: Callable[[EpochReport], None], scaling: str
) -> Callable[[EpochReport], None]:
    return lambda report: on_epoch(dataclasses.replace(report, scaling=scaling))


def _fit(
    config: DeepARConfig,
    batch: SeriesBatch,
    spec: ModelSpec,
    seed: int,
    dev: torch.device,
    on_epoch: Callable[[EpochReport], None] | None,
    min_past: int | None,
) -> TrainResult:
    """One network for ``spec``, trained by the module's rule from ``seed``."""
    p = config.prediction_length
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = DeepAR(spec).to(dev)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=LR_FACTOR, patience=LR_PATIENCE
    )
    dummy = model.likelihood.value_in_support
    held_out = validation_split(batch.lengths, p, rng)
    sampler = WindowSampler(
        held_out.train_end, p, config.context_length if min_past is None else min_past
    )
    validation = [
        _window_tensors(
            batch.take(held_out.series[i : i + _EVAL_CHUNK]),
            spec,
            held_out.split[i : i + _EVAL_CHUNK],
            dummy,
            dev,
        )
        for i in range(0, held_out.series.size, _EVAL_CHUNK)
    ]
    steps = batches_per_epoch(batch.num_series, config.mini_batch_size)

    losses: list[float] = []
    validation_losses: list[float] = []
    best_loss, best_epoch = math.inf, 0
    diverged_epoch: int | None = None
    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    for epoch in range(1, config.epochs + 1):
        started = time.perf_counter()
        model.train()
        total = 0.0
        for _ in range(steps):
            series, split = sampler.draw(config.mini_batch_size, rng)
            tensors = _window_tensors(batch.take(series), spec, split, dummy, dev)
            loss = model.loss(**tensors)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), GRADIENT_CLIP)
            optimizer.step()
            total += float(loss.detach())
        losses.append(total / steps)
        if not math.isfinite(losses[-1]):  # the weights are NaN now: keep the best before
            diverged_epoch = epoch
            break
        validation_loss = _horizon_loss(model, validation) if validation else None
        if validation_loss is not None:
            validation_losses.append(validation_loss)
        monitored = losses[-1] if validation_loss is None else validation_loss
        learning_rate = float(optimizer.param_groups[0]["lr"])
        scheduler.step(monitored)
        improved = monitored < best_loss
        if improved:
            best_loss, best_epoch = monitored, epoch
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if on_epoch is not None:
            on_epoch(
                EpochReport(
                    epoch=epoch,
                    epochs=config.epochs,
                    loss=losses[-1],
                    seconds=time.perf_counter() - started,
                    best=improved,
                    validation_loss=validation_loss,
                    learning_rate=learning_rate,
                )
            )
        patience = config.early_stopping_patience
        if patience is not None and epoch - best_epoch >= patience:
            break
    model.load_state_dict(best_state)
    model.eval()
    return TrainResult(
        model=model,
        losses=losses,
        best_epoch=best_epoch,
        validation_losses=validation_losses,
        steps_per_epoch=steps,
        validation_series=int(held_out.series.size),
        diverged_epoch=diverged_epoch,
    )


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
    return _score_withheld(model, *_withhold(test, config.prediction_length), config, seed=seed)


def _score_withheld(
    model: DeepAR, cut: SeriesBatch, actual: np.ndarray, config: DeepARConfig, *, seed: int
) -> dict[str, Any]:
    """:func:`evaluate` of test series already cut: forecast ``cut``, score against ``actual``."""
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
