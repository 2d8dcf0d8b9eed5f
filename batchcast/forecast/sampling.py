"""Vectorised ancestral sampling: many series x num_samples paths per step, summaries on device.

The sampler follows GluonTS's ``DeepARModel.forward`` (DEEPAR_REFERENCE.md A.11): unroll the
context once per series, fold the ``S`` sample paths into the batch (row ``b * S + k`` is path
``k`` of series ``b``), then loop over the horizon only, feeding each draw back as lag 1, 2, ...
It computes the same function in far fewer operations:

* The part of layer 0's input that does not depend on the sampled path — lags that still
  reach into the observed past, the static features and the covariates — is the same for all
  ``S`` paths of a series. Its contribution to the gates is precomputed for every step with one
  matmul over ``B`` rows instead of ``B * S`` (``fixed_gates``), so each step multiplies only the
  few lag columns that read sampled values (1..7 early in the horizon).
* Sampled values live in one preallocated ``(B * S, P)`` buffer; lags are gathered from it with
  precomputed indices. No per-step concatenation of the 744-point history (31% of GluonTS's
  forward) and no per-step allocation of large buffers (its page-fault churn).
* LSTM cells run in place on preallocated gate buffers, with the gate rows reordered to
  ``i, f, o, g`` and tanh computed through sigmoid, so one sigmoid covers all four gates.

Randomness comes from an explicit ``torch.Generator`` and is consumed in GluonTS's order, so
the same generator state gives the same paths on any batch split into the same chunks.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from batchcast.forecast.config import InferenceConfig
from batchcast.forecast.features import Windows, build_windows
from batchcast.forecast.model import DeepAR
from batchcast.forecast.series import SeriesBatch

__all__ = ["Forecast", "forecast", "quantile_indices", "sample_paths", "summarize"]

# Rows (series x paths) per sampling step. Large enough for efficient GEMMs, small enough that
# the per-step buffers (rows x 4 x num_cells floats) stay in the CPU's L2/L3 cache.
DEFAULT_MAX_ROWS = 6400


@dataclass(frozen=True)
class Forecast:
    """Summaries of ``B`` forecasts, as numpy float32 arrays (None where not asked for).

    Attributes:
        mean: (B, P). quantiles: (B, Q, P) in the configured order. samples: (B, S, P).
    """

    mean: np.ndarray | None
    quantiles: np.ndarray | None
    samples: np.ndarray | None


def quantile_indices(num_samples: int, levels: Sequence[float]) -> list[int]:
    """Sorted-sample index of each quantile: ``round((S - 1) * q)``, half to even (as GluonTS)."""
    return [round((num_samples - 1) * q) for q in levels]


class _LayerWeights:
    """One LSTM layer's weights, transposed for ``x @ W``, gate rows as i, f, o, g, g doubled.

    The g rows are multiplied by 2 so that ``sigmoid`` of them gives ``tanh`` after ``2s - 1``.
    """

    def __init__(self, rnn: torch.nn.LSTM, layer: int) -> None:
        h = rnn.hidden_size
        order = torch.cat(
            [torch.arange(0, 2 * h), torch.arange(3 * h, 4 * h), torch.arange(2 * h, 3 * h)]
        ).to(getattr(rnn, f"weight_ih_l{layer}").device)
        w_ih = getattr(rnn, f"weight_ih_l{layer}")[order]  # (4H, D)
        w_hh = getattr(rnn, f"weight_hh_l{layer}")[order]  # (4H, H)
        bias = getattr(rnn, f"bias_ih_l{layer}")[order] + getattr(rnn, f"bias_hh_l{layer}")[order]
        gain = torch.ones(4 * h, dtype=w_ih.dtype, device=w_ih.device)
        gain[3 * h :] = 2.0
        self.w_ih_t = (w_ih * gain[:, None]).t().contiguous()  # (D, 4H)
        self.w_hh_t = (w_hh * gain[:, None]).t().contiguous()  # (H, 4H)
        self.bias = (bias * gain).contiguous()  # (4H,)


def _cell(gates: torch.Tensor, c: torch.Tensor, h: torch.Tensor, tmp: torch.Tensor) -> None:
    """One LSTM cell update in place: gates (N, 4H) as i, f, o, 2g; c, h, tmp (N, H).

    tanh is computed as ``2 * sigmoid(2x) - 1``: torch's CPU tanh kernel costs about six
    times its sigmoid here (2.6 vs 0.43 ns/element, measured), and the cell is mostly
    elementwise work. The g rows of the weights are pre-doubled (see ``_LayerWeights``), so
    a single sigmoid over all four gates suffices.
    """
    hidden = c.shape[1]
    gates.sigmoid_()
    i, f, o, g = gates.split(hidden, dim=1)
    g.mul_(2.0).sub_(1.0)  # tanh of the g pre-activation
    c.mul_(f).addcmul_(i, g)
    torch.mul(c, 2.0, out=tmp)
    tmp.sigmoid_().mul_(2.0).sub_(1.0)  # tanh(c)
    torch.mul(o, tmp, out=h)


@torch.inference_mode()
def sample_paths(
    model: DeepAR,
    *,
    past_target: torch.Tensor,
    past_observed: torch.Tensor,
    covariates: torch.Tensor,
    cat: torch.Tensor,
    num_samples: int,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """Draw ``num_samples`` paths per series by ancestral sampling.

    Args:
        model: the network (its device is used).
        past_target: (B, L); past_observed: (B, L); covariates: (B, C + P - 1, F);
            cat: (B, n_cat) int64 — as :func:`batchcast.forecast.features.build_windows` cuts them.
        num_samples: S, paths per series.
        generator: the source of randomness (on the model's device).

    Returns:
        (B, S, P) sample paths in target units.
    """
    spec = model.spec
    lik = model.likelihood
    b, s, p = past_target.shape[0], num_samples, spec.prediction_length
    n, hidden = b * s, spec.num_cells
    lags = model.lags
    k_lags = len(spec.lags)

    params, scale, (h0, c0), static = model(past_target, past_observed, covariates, cat)
    rows_scale = scale.repeat_interleave(s, dim=0).squeeze(1)  # (B*S,)
    samples = torch.empty(n, p, dtype=past_target.dtype, device=past_target.device)
    scaled = torch.empty_like(samples)  # draws / scale: what later steps read as lags
    first = lik.sample(params[:, -1].repeat_interleave(s, dim=0), rows_scale, generator)
    samples[:, 0] = first
    scaled[:, 0] = first / rows_scale
    if p == 1:
        return samples.view(b, s, p)

    layers = [_LayerWeights(model.rnn, i) for i in range(spec.num_layers)]
    fixed_gates = _fixed_gates(model, layers[0], past_target / scale, static, covariates)
    h = [x.repeat_interleave(s, dim=0) for x in h0.unbind(0)]  # layer -> (B*S, H)
    c = [x.repeat_interleave(s, dim=0) for x in c0.unbind(0)]
    gates = torch.empty(n, 4 * hidden, dtype=samples.dtype, device=samples.device)
    tmp = torch.empty(n, hidden, dtype=samples.dtype, device=samples.device)
    head_w_t = model.head.weight.t().contiguous()
    head_b = model.head.bias
    w_lag_t = layers[0].w_ih_t[:k_lags]  # (K, 4H)
    # Step k reads sampled values for the lags l <= k: columns k - l of ``scaled``.
    sampled_cols = [lags[: bisect.bisect_right(spec.lags, k)] for k in range(p)]
    sampled_cols = [k - cols for k, cols in enumerate(sampled_cols)]

    for k in range(1, p):
        # Layer 0: recurrent part + precomputed fixed part + lags that read sampled values.
        torch.mm(h[0], layers[0].w_hh_t, out=gates)
        gates.view(b, s, -1).add_(fixed_gates[:, k - 1, None, :])
        m = len(sampled_cols[k])
        if m:
            gates.addmm_(scaled[:, sampled_cols[k]], w_lag_t[:m])  # (B*S, m) @ (m, 4H)
        _cell(gates, c[0], h[0], tmp)
        for layer in range(1, spec.num_layers):
            w = layers[layer]
            torch.addmm(w.bias, h[layer - 1], w.w_ih_t, out=gates)
            gates.addmm_(h[layer], w.w_hh_t)
            _cell(gates, c[layer], h[layer], tmp)
        step_params = lik.domain_map(torch.addmm(head_b, h[-1], head_w_t))
        draw = lik.sample(step_params, rows_scale, generator)
        samples[:, k] = draw
        scaled[:, k] = draw / rows_scale
    return samples.view(b, s, p)


def _fixed_gates(
    model: DeepAR,
    layer0: _LayerWeights,
    z_past: torch.Tensor,
    static: torch.Tensor,
    covariates: torch.Tensor,
) -> torch.Tensor:
    """Layer 0's gate pre-activations from everything that is the same for all paths of a series.

    For step ``k = 1 .. P-1`` (predicting window position ``L + k``), lag ``l > k`` reads the
    observed past ``z_past[L + k - l]``; lags ``l <= k`` read sampled values and are left at 0
    here. Static features and covariate row ``C - 1 + k`` are the same for every path.

    Returns:
        (B, P - 1, 4H), biases included, gate rows ordered i, f, o, g.
    """
    spec = model.spec
    past, p, c = spec.past_length, spec.prediction_length, spec.context_length
    steps = torch.arange(1, p, device=z_past.device)  # (P-1,)
    index = past + steps[:, None] - model.lags[None, :]  # (P-1, K)
    reads_past = index < past
    lagged = z_past[:, index.clamp(max=past - 1)] * reads_past  # (B, P-1, K)
    n_steps = p - 1
    x = torch.cat(
        (lagged, static[:, None, :].expand(-1, n_steps, -1), covariates[:, c : c + n_steps]),
        dim=-1,
    )  # (B, P-1, D)
    return torch.matmul(x, layer0.w_ih_t) + layer0.bias


def summarize(samples: torch.Tensor, config: InferenceConfig) -> Forecast:
    """Mean, quantiles and/or samples of ``samples`` (B, S, P), computed on its device.

    Quantiles are order statistics (GluonTS's rule, no interpolation): the sorted sample at
    :func:`quantile_indices`. Only the asked-for summaries cross to the host.
    """
    wanted = set(config.output_types)
    mean = samples.mean(dim=1) if "mean" in wanted else None
    quantiles = None
    if "quantiles" in wanted:
        idx = quantile_indices(samples.shape[1], config.quantile_levels)
        ordered = samples.sort(dim=1).values
        quantiles = ordered[:, torch.tensor(idx, device=samples.device)]  # (B, Q, P)
    return Forecast(
        mean=None if mean is None else mean.cpu().numpy(),
        quantiles=None if quantiles is None else quantiles.cpu().numpy(),
        samples=samples.cpu().numpy() if "samples" in wanted else None,
    )


def _to_tensors(windows: Windows, device: torch.device) -> dict[str, torch.Tensor]:
    return {
        "past_target": torch.from_numpy(windows.past_target).to(device, non_blocking=True),
        "past_observed": torch.from_numpy(windows.past_observed).to(device, non_blocking=True),
        "covariates": torch.from_numpy(windows.covariates).to(device, non_blocking=True),
        "cat": torch.from_numpy(windows.cat).to(device, non_blocking=True),
    }


def forecast(
    model: DeepAR,
    batch: SeriesBatch,
    config: InferenceConfig,
    *,
    generator: torch.Generator | None,
    max_rows: int = DEFAULT_MAX_ROWS,
) -> Forecast:
    """Forecast every series of ``batch``: windows, sampling and summaries, chunk by chunk.

    Args:
        model: the network, in eval mode, on its device.
        batch: the series.
        config: num_samples and what to return.
        generator: randomness, on the model's device; consumed chunk by chunk in series order,
            so a batch gives the same output whatever calls came before with other generators.
        max_rows: the most series x num_samples rows sampled in one step.

    Returns:
        The concatenated :class:`Forecast` of all series, in batch order.
    """
    device = next(model.parameters()).device
    per_chunk = max(1, max_rows // config.num_samples)
    parts: list[Forecast] = []
    for lo in range(0, batch.num_series, per_chunk):
        chunk = batch.slice(lo, min(lo + per_chunk, batch.num_series))
        windows = build_windows(chunk, model.spec, dummy_value=model.likelihood.value_in_support)
        paths = sample_paths(
            model,
            **_to_tensors(windows, device),
            num_samples=config.num_samples,
            generator=generator,
        )
        parts.append(summarize(paths, config))
    return _concat(parts, config, model.spec.prediction_length)


def _concat(parts: list[Forecast], config: InferenceConfig, horizon: int) -> Forecast:
    def cat(name: str, empty_shape: tuple[int, ...]) -> np.ndarray | None:
        arrays = [getattr(f, name) for f in parts]
        if any(a is None for a in arrays):
            return None
        if not arrays:
            return np.zeros(empty_shape, dtype=np.float32)
        return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)

    wanted = set(config.output_types)
    return Forecast(
        mean=cat("mean", (0, horizon)) if "mean" in wanted else None,
        quantiles=cat("quantiles", (0, len(config.quantiles), horizon))
        if "quantiles" in wanted
        else None,
        samples=cat("samples", (0, config.num_samples, horizon)) if "samples" in wanted else None,
    )
