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
* On CPU the elementwise half of each LSTM step is one pass of a small C kernel
  (:mod:`batchcast.forecast.native`) instead of ~10 torch kernels, and the chunk's rows go
  through the GEMMs and the kernel in tiles of ``tile_rows`` that keep the gate buffer in
  cache (:mod:`batchcast.forecast.tuning` picks the size from this CPU's L2).
* ``precision="bf16"`` runs the GEMMs in bfloat16 where the CPU has bf16 units
  (:mod:`batchcast.forecast.precision`); state and sampling stay fp32.

Output identity. Randomness comes from an explicit ``torch.Generator`` and is consumed in
GluonTS's order. Its unit of work is the chunk of ``forecast(max_rows=...)``: each step draws
once for all of a chunk's rows, after every tile has produced its distribution parameters,
so the generator sees the same calls whatever the tiling. Tiles only split the deterministic
arithmetic, and each row is computed by the same code in any tile (quantum-aligned GEMM
rows, a row-by-row kernel). Hence the same job and seed give the same bytes on one machine
whatever ``tile_rows`` is (tested), while ``max_rows``, like the seed, is part of the
output's identity. Without the C kernel (no compiler, ``BATCHCAST_NATIVE=0``, CUDA) the
sampler runs the earlier all-torch path untiled, byte for byte as before issue 11; the fused
path differs from it in the last bits (~1e-6 relative).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from batchcast.forecast.config import InferenceConfig
from batchcast.forecast.features import Windows, build_windows
from batchcast.forecast.fused import Chunk, run_steps
from batchcast.forecast.model import DeepAR
from batchcast.forecast.native import lstm_kernel
from batchcast.forecast.precision import resolve_precision
from batchcast.forecast.series import SeriesBatch
from batchcast.forecast.tuning import rule_tile_rows

__all__ = [
    "Forecast",
    "class_probabilities",
    "forecast",
    "quantile_indices",
    "sample_paths",
    "summarize",
]

# Rows (series x paths) per sampling step. Large enough for efficient GEMMs, small enough that
# the per-step buffers (rows x 4 x num_cells floats) stay in the CPU's L2/L3 cache.
DEFAULT_MAX_ROWS = 6400


@dataclass(frozen=True)
class Forecast:
    """Summaries of ``B`` forecasts, as numpy float32 arrays (None where not asked for).

    Attributes:
        mean: (B, P). quantiles: (B, Q, P) in the configured order. samples: (B, S, P).
        probabilities: (B, K + 1) the fraction of paths in each class (``classes``, SPEC §8).
        predicted: (B,) int64 the most probable class (ties: the lower class).
    """

    mean: np.ndarray | None
    quantiles: np.ndarray | None
    samples: np.ndarray | None
    probabilities: np.ndarray | None = None
    predicted: np.ndarray | None = None


def quantile_indices(num_samples: int, levels: Sequence[float]) -> list[int]:
    """Sorted-sample index of each quantile: ``round((S - 1) * q)``, half to even (as GluonTS)."""
    return [round((num_samples - 1) * q) for q in levels]


class _LayerWeights:
    """One LSTM layer's weights, transposed for ``x @ W``, biases summed.

    With ``reorder`` (the torch-ops path) the gate rows are i, f, o, g with the g rows doubled,
    so that ``sigmoid`` of them gives ``tanh`` after ``2s - 1``; without, PyTorch's own order
    i, f, g, o, as the fused kernel reads it.
    """

    def __init__(self, rnn: torch.nn.LSTM, layer: int, *, reorder: bool) -> None:
        h = rnn.hidden_size
        w_ih = getattr(rnn, f"weight_ih_l{layer}")  # (4H, D)
        w_hh = getattr(rnn, f"weight_hh_l{layer}")  # (4H, H)
        bias = getattr(rnn, f"bias_ih_l{layer}") + getattr(rnn, f"bias_hh_l{layer}")
        if reorder:
            order = torch.cat(
                [torch.arange(0, 2 * h), torch.arange(3 * h, 4 * h), torch.arange(2 * h, 3 * h)]
            ).to(w_ih.device)
            gain = torch.ones(4 * h, dtype=w_ih.dtype, device=w_ih.device)
            gain[3 * h :] = 2.0
            w_ih = w_ih[order] * gain[:, None]
            w_hh = w_hh[order] * gain[:, None]
            bias = bias[order] * gain
        self.w_ih_t = w_ih.t().contiguous()  # (D, 4H)
        self.w_hh_t = w_hh.t().contiguous()  # (H, 4H)
        self.bias = bias.contiguous()  # (4H,)


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
    tile_rows: int | None = None,
    precision: str = "fp32",
) -> torch.Tensor:
    """Draw ``num_samples`` paths per series by ancestral sampling.

    Args:
        model: the network (its device is used).
        past_target: (B, L); past_observed: (B, L); covariates: (B, C + P - 1, F);
            cat: (B, n_cat) int64 — as :func:`batchcast.forecast.features.build_windows` cuts them.
        num_samples: S, paths per series.
        generator: the source of randomness (on the model's device).
        tile_rows: rows per physical step of the fused path (None: the cache rule of
            :mod:`batchcast.forecast.tuning`). A performance knob: the paths do not depend on it.
        precision: ``"fp32"`` or ``"bf16"`` (see :mod:`batchcast.forecast.precision`).

    Returns:
        (B, S, P) sample paths in target units.

    Raises:
        ConfigError: for an unknown precision.
    """
    spec = model.spec
    lik = model.likelihood
    b, s, p = past_target.shape[0], num_samples, spec.prediction_length
    n = b * s
    device = past_target.device
    resolved = resolve_precision(precision, device)
    kernel = lstm_kernel() if device.type == "cpu" else None

    params, scale, (h0, c0), static = model(past_target, past_observed, covariates, cat)
    rows = scale.rows(s)  # (B*S, 1)
    # Step-major (P, N): a step writes contiguous rows, and lags gather whole rows.
    samples = torch.empty(p, n, dtype=past_target.dtype, device=device)
    scaled = torch.empty_like(samples)  # draws in the network's units: what lags read
    state = _State(
        h=[x.repeat_interleave(s, dim=0) for x in h0.unbind(0)],  # layer -> (B*S, H)
        c=[x.repeat_interleave(s, dim=0) for x in c0.unbind(0)],
        samples=samples,
        scaled=scaled,
        rows_scale=rows.scale.squeeze(1),
        rows_loc=None if rows.loc is None else rows.loc.squeeze(1),
    )
    first = lik.sample(params[:, -1].repeat_interleave(s, dim=0), state.rows_scale, generator)
    state.store(first, 0)
    if p == 1:
        return samples.t().contiguous().view(b, s, p)
    z_past = scale.normalize(past_target)
    if kernel is None:
        _steps_torch(model, state, z_past, static, covariates, b, s, generator)
    else:
        if tile_rows is None:
            tile_rows = rule_tile_rows(spec.num_cells, spec.num_layers, resolved)
        layers = [_LayerWeights(model.rnn, i, reorder=False) for i in range(spec.num_layers)]
        fixed_gates = _fixed_gates(model, layers[0], z_past, static, covariates)
        chunk = Chunk(
            h=state.h,
            c=state.c,
            scaled=state.scaled,
            fixed_gates=fixed_gates.transpose(0, 1).contiguous(),  # (P-1, B, 4H)
            sampled_cols=_sampled_cols(model),
            paths=s,
        )
        run_steps(
            model,
            kernel,
            layers,
            chunk,
            tile_rows,
            resolved,
            lambda raw, k: _draw(model, state, raw, k, generator),
        )
    return samples.t().contiguous().view(b, s, p)


@dataclass
class _State:
    """The per-row sampler state of one chunk: LSTM h and c per layer, draws so far."""

    h: list[torch.Tensor]
    c: list[torch.Tensor]
    samples: torch.Tensor  # (P, N) draws in target units
    scaled: torch.Tensor  # (P, N) draws in the network's units: what later steps read as lags
    rows_scale: torch.Tensor  # (N,)
    rows_loc: torch.Tensor | None  # (N,) for "std" scaling, None for "mean"

    def store(self, draw: torch.Tensor, k: int) -> None:
        """Step k's draws (N,) from the likelihood, which scales but does not shift them."""
        if self.rows_loc is None:
            self.samples[k] = draw
            self.scaled[k] = draw / self.rows_scale
            return
        draw = draw + self.rows_loc
        self.samples[k] = draw
        self.scaled[k] = (draw - self.rows_loc) / self.rows_scale


def _sampled_cols(model: DeepAR) -> list[torch.Tensor]:
    """Step k reads sampled values for the lags l <= k: rows ``k - l`` of ``scaled``."""
    spec = model.spec
    cols = [model.lags[: bisect.bisect_right(spec.lags, k)] for k in range(spec.prediction_length)]
    return [k - c for k, c in enumerate(cols)]


def _draw(
    model: DeepAR, state: _State, raw: torch.Tensor, k: int, gen: torch.Generator | None
) -> None:
    """Step k's draw for every row of the chunk at once (one generator call per kind of draw,
    in row order: the generator's unit of work is the chunk, never the tile)."""
    state.store(model.likelihood.draw(raw, state.rows_scale, gen), k)


def _steps_torch(
    model: DeepAR,
    state: _State,
    z_past: torch.Tensor,
    static: torch.Tensor,
    covariates: torch.Tensor,
    b: int,
    s: int,
    generator: torch.Generator | None,
) -> None:
    """Steps 1..P-1 with torch ops on the whole chunk (CUDA, or no C compiler).

    This is the sampler as it was before the fused cell, kept byte for byte: gate rows
    reordered i, f, o, g with tanh through sigmoid (one sigmoid over all four gates).
    """
    spec = model.spec
    n, hidden = b * s, spec.num_cells
    layers = [_LayerWeights(model.rnn, i, reorder=True) for i in range(spec.num_layers)]
    fixed_gates = _fixed_gates(model, layers[0], z_past, static, covariates)
    gates = torch.empty(n, 4 * hidden, dtype=state.samples.dtype, device=state.samples.device)
    tmp = torch.empty(n, hidden, dtype=state.samples.dtype, device=state.samples.device)
    head_w_t = model.head.weight.t().contiguous()
    w_lag_t = layers[0].w_ih_t[: len(spec.lags)]  # (K, 4H)
    sampled_cols = _sampled_cols(model)
    h, c = state.h, state.c
    for k in range(1, spec.prediction_length):
        # Layer 0: recurrent part + precomputed fixed part + lags that read sampled values.
        torch.mm(h[0], layers[0].w_hh_t, out=gates)
        gates.view(b, s, -1).add_(fixed_gates[:, k - 1, None, :])
        m = len(sampled_cols[k])
        if m:
            # (B*S, m) @ (m, 4H), the lags made contiguous as before the step-major layout
            lagged = state.scaled[sampled_cols[k]].t().contiguous()
            gates.addmm_(lagged, w_lag_t[:m])
        _cell(gates, c[0], h[0], tmp)
        for layer in range(1, spec.num_layers):
            w = layers[layer]
            torch.addmm(w.bias, h[layer - 1], w.w_ih_t, out=gates)
            gates.addmm_(h[layer], w.w_hh_t)
            _cell(gates, c[layer], h[layer], tmp)
        _draw(model, state, torch.addmm(model.head.bias, h[-1], head_w_t), k, generator)


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


def summarize(
    samples: torch.Tensor, config: InferenceConfig, *, thresholds: torch.Tensor | None = None
) -> Forecast:
    """Mean, quantiles, samples and/or class probabilities of ``samples`` (B, S, P), on its device.

    Quantiles are order statistics (GluonTS's rule, no interpolation): the sorted sample at
    :func:`quantile_indices`. Only the asked-for summaries cross to the host: the samples
    only when ``samples`` is an output key.

    Args:
        samples: (B, S, P) sample paths.
        config: what to return (``config.output_keys``) and the ``classes``.
        thresholds: (B, k) per-record class thresholds (``classes.thresholds_field``), or
            None to use ``config.classes.thresholds`` for every series.
    """
    wanted = set(config.output_keys)
    mean = samples.mean(dim=1) if "mean" in wanted else None
    quantiles = None
    if "quantiles" in wanted:
        quantiles = _order_statistics(
            samples, quantile_indices(samples.shape[1], config.quantile_levels)
        )
    probabilities = predicted = None
    if config.wants_classes:
        probabilities, predicted = class_probabilities(samples, config, thresholds=thresholds)
    return Forecast(
        mean=None if mean is None else mean.cpu().numpy(),
        quantiles=None if quantiles is None else quantiles.cpu().numpy(),
        samples=samples.cpu().numpy() if "samples" in wanted else None,
        probabilities=None if probabilities is None else probabilities.cpu().numpy(),
        predicted=None if predicted is None else predicted.cpu().numpy(),
    )


def _order_statistics(samples: torch.Tensor, idx: list[int]) -> torch.Tensor:
    """(B, len(idx), P): the ``idx``-th smallest of each series' paths at each step.

    On the CPU numpy sorts: its SIMD sort of each step's contiguous paths took 0.27 ms for
    64 x 24 x 100 where torch's sort along the strided path axis took 5.5 ms (~4% of a
    worker's time). Sorted values are the same whoever sorts them, so the bytes are too.
    """
    if samples.device.type != "cpu":
        return samples.sort(dim=1).values[:, torch.tensor(idx, device=samples.device)]
    paths = np.ascontiguousarray(samples.numpy().transpose(0, 2, 1))  # (B, P, S)
    paths.sort(axis=-1)
    return torch.from_numpy(np.ascontiguousarray(paths[..., idx].transpose(0, 2, 1)))


_AGGREGATE = {
    "sum": lambda x: x.sum(dim=-1),
    "mean": lambda x: x.mean(dim=-1),
    "max": lambda x: x.amax(dim=-1),
    "min": lambda x: x.amin(dim=-1),
    "last": lambda x: x[..., -1],
}


def class_probabilities(
    samples: torch.Tensor, config: InferenceConfig, *, thresholds: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The fraction of paths in each class, and the most probable class (SPEC.md §8).

    A path's aggregate ``a`` over ``classes.steps`` is in class ``j`` = the number of
    thresholds ``<= a``. The aggregate is taken in float64 so that a path's class does not
    depend on the summation order (a check recomputing it from the written samples agrees).

    Args:
        samples: (B, S, P) sample paths.
        config: holds ``classes`` (must not be None).
        thresholds: (B, k) per-record thresholds, or None for ``classes.thresholds``.

    Returns:
        probabilities: (B, K + 1) float32; predicted: (B,) int64, ties to the lower class.
    """
    classes = config.classes
    assert classes is not None  # InferenceConfig checks that classification keys have classes
    lo, hi = classes.step_range(samples.shape[-1])
    window = samples[..., lo:hi].to(torch.float64)  # (B, S, steps)
    aggregate = _AGGREGATE[classes.aggregate](window)  # (B, S)
    if thresholds is None:
        thresholds = torch.tensor(classes.thresholds, dtype=torch.float64, device=samples.device)
        thresholds = thresholds.expand(samples.shape[0], -1)
    edges = thresholds.to(samples.device, torch.float64)  # (B, k)
    cls = (edges[:, None, :] <= aggregate[:, :, None]).sum(dim=-1)  # (B, S) class of each path
    counts = torch.zeros(samples.shape[0], edges.shape[1] + 1, device=samples.device)
    counts.scatter_add_(1, cls, torch.ones_like(cls, dtype=counts.dtype))
    probabilities = (counts / samples.shape[1]).to(torch.float32)  # (B, K + 1)
    return probabilities, counts.argmax(dim=1)  # argmax: the first (lower) class on a tie


def _tensor(array: np.ndarray, device: torch.device) -> torch.Tensor:
    # Arrays that came through Ray's object store are read-only views; torch warns on those
    # (it cannot promise not to write), so they are copied, which only the small ones are.
    if not array.flags.writeable:
        array = array.copy()
    return torch.from_numpy(array).to(device, non_blocking=True)


def _to_tensors(windows: Windows, device: torch.device) -> dict[str, torch.Tensor]:
    return {
        "past_target": _tensor(windows.past_target, device),
        "past_observed": _tensor(windows.past_observed, device),
        "covariates": _tensor(windows.covariates, device),
        "cat": _tensor(windows.cat, device),
    }


def forecast(
    model: DeepAR,
    batch: SeriesBatch,
    config: InferenceConfig,
    *,
    generator: torch.Generator | None,
    max_rows: int = DEFAULT_MAX_ROWS,
    tile_rows: int | None = None,
    precision: str = "fp32",
) -> Forecast:
    """Forecast every series of ``batch``: windows, sampling and summaries, chunk by chunk.

    Args:
        model: the network, in eval mode, on its device.
        batch: the series.
        config: num_samples and what to return.
        generator: randomness, on the model's device; consumed chunk by chunk in series order,
            so a batch gives the same output whatever calls came before with other generators.
        max_rows: the most series x num_samples rows sampled together: the generator's unit
            of work, and part of the output's identity like the seed (see the module doc).
        tile_rows: rows per physical step (None: this CPU's cache rule); speed only.
        precision: ``"fp32"`` (default) or ``"bf16"`` (see :mod:`batchcast.forecast.precision`).

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
            tile_rows=tile_rows,
            precision=precision,
        )
        thresholds = None if chunk.thresholds is None else torch.from_numpy(chunk.thresholds)
        parts.append(summarize(paths, config, thresholds=thresholds))
    return _concat(parts, config, model.spec.prediction_length)


def _concat(parts: list[Forecast], config: InferenceConfig, horizon: int) -> Forecast:
    def cat(name: str, empty_shape: tuple[int, ...]) -> np.ndarray | None:
        arrays = [getattr(f, name) for f in parts]
        if any(a is None for a in arrays):
            return None
        if not arrays:
            return np.zeros(empty_shape, dtype=np.float32)
        return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)

    wanted = set(config.output_keys)
    classes = config.classes.num_thresholds + 1 if config.classes is not None else 0
    probabilities = cat("probabilities", (0, classes)) if config.wants_classes else None
    predicted = None
    if config.wants_classes:
        arrays = [f.predicted for f in parts if f.predicted is not None]
        predicted = np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.int64)
    return Forecast(
        mean=cat("mean", (0, horizon)) if "mean" in wanted else None,
        quantiles=cat("quantiles", (0, len(config.quantiles), horizon))
        if "quantiles" in wanted
        else None,
        samples=cat("samples", (0, config.num_samples, horizon)) if "samples" in wanted else None,
        probabilities=probabilities,
        predicted=predicted,
    )
