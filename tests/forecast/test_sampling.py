"""The vectorised sampler against the naive GluonTS-style loop, and forecast()/summarize().

``tests/forecast/reference.py`` follows GluonTS's ``DeepARModel.forward`` literally (whole
history re-concatenated every step, one ``nn.LSTM`` call per step). Under the same generator
seed both must draw the same paths, up to float rounding of the reordered arithmetic.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from reference import naive_sample_paths

from batchcast.forecast import (
    DeepAR,
    InferenceConfig,
    SeriesBatch,
    build_windows,
    forecast,
    lags_for_frequency,
    sample_paths,
    summarize,
)
from batchcast.forecast.sampling import quantile_indices

ALL = ("student-T", "gaussian", "negative-binomial", "beta", "deterministic-L1")
Tensors = Callable[..., dict[str, torch.Tensor]]


def _inputs(model: DeepAR, batch: SeriesBatch, to_tensors: Tensors) -> dict[str, torch.Tensor]:
    windows = build_windows(batch, model.spec, dummy_value=model.likelihood.value_in_support)
    return to_tensors(windows)


def _both(model: DeepAR, inputs: dict[str, torch.Tensor], num_samples: int, seed: int) -> Any:
    fast = sample_paths(
        model, **inputs, num_samples=num_samples, generator=torch.Generator().manual_seed(seed)
    )
    naive = naive_sample_paths(
        model, **inputs, num_samples=num_samples, generator=torch.Generator().manual_seed(seed)
    )
    return fast, naive


def _assert_close_relative(fast: torch.Tensor, naive: torch.Tensor) -> None:
    """max |fast - naive| / max(1, |naive|) < 1e-4 (DEEPAR_REFERENCE B.4's anchor)."""
    assert fast.shape == naive.shape
    assert torch.isfinite(fast).all()
    relative = ((fast - naive).abs() / naive.abs().clamp_min(1.0)).max().item()
    assert relative < 1e-4, relative


# ---------------------------------------------------------------------------------------------
# Against the naive sampler


@pytest.mark.parametrize("num_layers", [1, 3])
@pytest.mark.parametrize("likelihood", ALL)
def test_matches_naive_sampler(
    likelihood: str,
    num_layers: int,
    make_model: Callable[..., DeepAR],
    make_batch: Callable[..., SeriesBatch],
    to_tensors: Tensors,
) -> None:
    p = 6
    model = make_model(
        seed=num_layers,
        likelihood=likelihood,
        num_layers=num_layers,
        prediction_length=p,
        cardinality=(3, 2),
        embedding_dims=(2, 1),
        num_dynamic_feat=2,
    )
    # lengths 40 (with NaNs), 3 (< context), 0 (empty), 1, 15, 9
    batch = make_batch(
        prediction_length=p,
        num_dynamic_feat=2,
        cardinality=(3, 2),
        unit_interval=likelihood == "beta",
    )
    fast, naive = _both(model, _inputs(model, batch, to_tensors), 30, seed=5)
    assert fast.shape == (batch.num_series, 30, p)
    _assert_close_relative(fast, naive)


def test_matches_naive_sampler_with_hourly_lags(
    make_model: Callable[..., DeepAR], make_batch: Callable[..., SeriesBatch], to_tensors: Tensors
) -> None:
    # GluonTS's real hourly lags (max 721): lags reach far into the past for the whole horizon.
    model = make_model(lags=lags_for_frequency("H"), context_length=24, prediction_length=24)
    batch = make_batch(prediction_length=24)
    fast, naive = _both(model, _inputs(model, batch, to_tensors), 10, seed=1)
    _assert_close_relative(fast, naive)


@pytest.mark.parametrize("likelihood", ["student-T", "negative-binomial"])
def test_matches_naive_sampler_prediction_length_1(
    likelihood: str,
    make_model: Callable[..., DeepAR],
    make_batch: Callable[..., SeriesBatch],
    to_tensors: Tensors,
) -> None:
    model = make_model(likelihood=likelihood, prediction_length=1)
    batch = make_batch(prediction_length=1)
    fast, naive = _both(model, _inputs(model, batch, to_tensors), 25, seed=2)
    assert fast.shape == (batch.num_series, 25, 1)
    _assert_close_relative(fast, naive)


# ---------------------------------------------------------------------------------------------
# Shapes, seeds, independence


@pytest.mark.parametrize(("num_samples", "horizon"), [(1, 4), (3, 1), (17, 7)])
def test_shapes(
    num_samples: int,
    horizon: int,
    make_model: Callable[..., DeepAR],
    make_batch: Callable[..., SeriesBatch],
    to_tensors: Tensors,
) -> None:
    model = make_model(prediction_length=horizon)
    batch = make_batch(prediction_length=horizon)
    paths = sample_paths(
        model,
        **_inputs(model, batch, to_tensors),
        num_samples=num_samples,
        generator=torch.Generator().manual_seed(0),
    )
    assert paths.shape == (6, num_samples, horizon)
    assert paths.dtype == torch.float32


def test_same_seed_same_bytes_different_seed_different(
    make_model: Callable[..., DeepAR], make_batch: Callable[..., SeriesBatch], to_tensors: Tensors
) -> None:
    model = make_model()
    inputs = _inputs(model, make_batch(prediction_length=4), to_tensors)

    def draw(seed: int) -> np.ndarray:
        generator = torch.Generator().manual_seed(seed)
        return sample_paths(model, **inputs, num_samples=20, generator=generator).numpy()

    first = draw(3)
    assert first.tobytes() == draw(3).tobytes()
    other = draw(4)
    assert (other != first).mean() > 0.99


def test_paths_are_independent_across_series_and_samples(
    make_model: Callable[..., DeepAR], to_tensors: Tensors
) -> None:
    """Two identical series, many paths: draws must not repeat across rows or paths.

    With n = 2000 independent pairs the sample correlation has SE 1/sqrt(n) = 0.022; the
    bound 0.1 is ~4.5 SE.
    """
    model = make_model(likelihood="gaussian", prediction_length=3)
    target = 10 + np.sin(np.arange(30.0))
    batch = SeriesBatch.from_lists(start=[0, 0], targets=[target, target])
    paths = sample_paths(
        model,
        **_inputs(model, batch, to_tensors),
        num_samples=2000,
        generator=torch.Generator().manual_seed(9),
    ).numpy()
    for step in range(3):
        a, b = paths[0, :, step], paths[1, :, step]
        assert abs(np.corrcoef(a, b)[0, 1]) < 0.1  # across series, same path index
        assert abs(np.corrcoef(a[:-1], a[1:])[0, 1]) < 0.1  # across neighbouring paths
        assert np.unique(a).size == a.size  # no path is a copy of another
    # identical inputs give identically distributed paths: the means agree within 5 SE
    spread = paths[:, :, 0].std()
    assert abs(paths[0, :, 0].mean() - paths[1, :, 0].mean()) < 5 * spread * np.sqrt(2 / 2000)


# ---------------------------------------------------------------------------------------------
# The scale rule (DEEPAR_REFERENCE A.8)


def _scale_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    # C = 4 of a 6-point window (lags 1..3). The first two points are outside the context.
    nan = float("nan")
    rows = [
        [100.0, 100.0, 1.0, -3.0, nan, 5.0],  # context |1| + |-3| + |5| over 3 observed = 3
        [7.0, 7.0, nan, nan, nan, nan],  # no observed context point
        [9.0, 9.0, 0.0, 0.0, 0.0, 0.0],  # all zeros
    ]
    values = torch.tensor(rows)
    observed = (~values.isnan()).float()
    return values.nan_to_num(0.0), observed


def test_scale_uses_context_only_and_batch_default(make_model: Callable[..., DeepAR]) -> None:
    model = make_model(lags=(1, 2, 3), context_length=4, default_scale=None)
    scale = model.scaling(*_scale_inputs()).scale
    assert scale.shape == (3, 1)
    # the all-NaN context gets the batch's sum|y| / count over all contexts: (9 + 0) / (3 + 4)
    expected = torch.tensor([[3.0], [9.0 / 7.0], [1e-10]])
    torch.testing.assert_close(scale, expected)


def test_scale_spec_default(make_model: Callable[..., DeepAR]) -> None:
    model = make_model(lags=(1, 2, 3), context_length=4, default_scale=7.5)
    scale = model.scaling(*_scale_inputs()).scale
    torch.testing.assert_close(scale, torch.tensor([[3.0], [7.5], [1e-10]]))


def test_beta_is_unscaled(make_model: Callable[..., DeepAR]) -> None:
    model = make_model(likelihood="beta", lags=(1, 2, 3), context_length=4)
    scale = model.scaling(*_scale_inputs())
    assert torch.equal(scale.scale, torch.ones(3, 1))
    assert scale.loc is None


def test_all_zero_context_forecasts_about_zero(make_model: Callable[..., DeepAR]) -> None:
    model = make_model(lags=(1, 2, 3), context_length=4)
    batch = SeriesBatch.from_lists(start=[0], targets=[np.zeros(10)])
    result = forecast(
        model,
        batch,
        InferenceConfig(num_samples=50, output_types=("samples",)),
        generator=torch.Generator().manual_seed(0),
    )
    assert result.samples is not None
    assert np.abs(result.samples).max() < 1e-6  # s = 1e-10 times a Student-T draw


# ---------------------------------------------------------------------------------------------
# summarize


def _known_order_samples(num_samples: int, seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    """(B=3, S, P=4) samples whose sorted values are ``offset + arange(S)`` at every (b, p)."""
    rng = np.random.default_rng(seed)
    offsets = 1000.0 * np.arange(3)[:, None] + 10_000.0 * np.arange(4)[None, :]  # (B, P)
    samples = np.empty((3, num_samples, 4), np.float32)
    for b in range(3):
        for p in range(4):
            samples[b, :, p] = offsets[b, p] + rng.permutation(num_samples)
    return torch.from_numpy(samples), offsets


def test_summarize_quantiles_are_order_statistics() -> None:
    samples, offsets = _known_order_samples(100)
    result = summarize(samples, InferenceConfig())
    assert result.quantiles is not None
    assert result.samples is None
    # A.12: round(99 q), half to even -> 10, 20, 30, 40, 50, 59, 69, 79, 89
    indices = np.array([10, 20, 30, 40, 50, 59, 69, 79, 89])
    expected = offsets[:, None, :] + indices[None, :, None]  # (B, Q, P)
    np.testing.assert_array_equal(result.quantiles, expected)
    assert quantile_indices(100, InferenceConfig().quantile_levels) == list(indices)


def test_cpu_quantiles_equal_torchs_sort_with_ties_and_extremes() -> None:
    # The CPU path sorts with numpy; it must pick the same values as torch's sort would,
    # ties, infinities and huge magnitudes included, and leave ``samples`` untouched.
    gen = torch.Generator().manual_seed(3)
    samples = torch.randn(5, 100, 7, generator=gen) * 1e30
    samples[:, ::7] = 2.5  # ties
    samples[1, 3, 2], samples[2, 4, 0] = float("inf"), float("-inf")
    before = samples.clone()
    config = InferenceConfig(quantiles=("0.01", "0.1", "0.5", "0.9", "0.99"))
    result = summarize(samples, config)
    idx = quantile_indices(100, config.quantile_levels)
    expected = samples.sort(dim=1).values[:, idx].numpy()
    assert result.quantiles is not None
    assert result.quantiles.shape == (5, 5, 7)
    np.testing.assert_array_equal(result.quantiles, expected)
    assert torch.equal(samples, before)


def test_summarize_rounds_half_to_even() -> None:
    samples, offsets = _known_order_samples(5)
    # (S - 1) q = 4 q: 0.4 -> 0, 1.0 -> 1, 2.5 -> 2 (even), 3.5 -> 4 (even), 3.6 -> 4
    config = InferenceConfig.from_mapping({"quantiles": ["0.1", "0.25", "0.625", "0.875", "0.9"]})
    result = summarize(samples, config)
    assert result.quantiles is not None
    expected = offsets[:, None, :] + np.array([0, 1, 2, 4, 4])[None, :, None]
    np.testing.assert_array_equal(result.quantiles, expected)


def test_summarize_mean_and_samples() -> None:
    samples = torch.randn(4, 37, 5, generator=torch.Generator().manual_seed(0)) * 100
    config = InferenceConfig.from_mapping({"output_types": ["samples", "mean"]})
    result = summarize(samples, config)
    assert result.quantiles is None
    assert result.mean is not None
    assert result.samples is not None
    np.testing.assert_allclose(result.mean, samples.numpy().mean(axis=1), rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(result.samples, samples.numpy())


# ---------------------------------------------------------------------------------------------
# forecast()


def test_forecast_equals_summarize_of_sample_paths(
    make_model: Callable[..., DeepAR], make_batch: Callable[..., SeriesBatch], to_tensors: Tensors
) -> None:
    model = make_model()
    batch = make_batch(prediction_length=4)
    config = InferenceConfig.from_mapping(
        {"num_samples": 40, "output_types": ["mean", "quantiles", "samples"]}
    )
    result = forecast(model, batch, config, generator=torch.Generator().manual_seed(1))
    paths = sample_paths(
        model,
        **_inputs(model, batch, to_tensors),
        num_samples=40,
        generator=torch.Generator().manual_seed(1),
    )
    assert result.samples is not None
    assert result.mean is not None
    assert result.quantiles is not None
    np.testing.assert_array_equal(result.samples, paths.numpy())
    order = np.sort(paths.numpy(), axis=1)
    levels = np.array(config.quantile_levels)
    np.testing.assert_array_equal(result.quantiles, order[:, np.round(39 * levels).astype(int)])
    np.testing.assert_allclose(result.mean, paths.numpy().mean(axis=1), rtol=1e-5, atol=1e-4)
    assert result.mean.shape == (6, 4)
    assert result.quantiles.shape == (6, 9, 4)


def test_forecast_chunks_consume_one_generator_in_series_order(
    make_model: Callable[..., DeepAR], make_batch: Callable[..., SeriesBatch]
) -> None:
    """With chunks of 2 series, the batch's output is the concatenation of forecasting the
    chunks one after another with the same generator."""
    model = make_model(default_scale=5.0)
    batch = make_batch(prediction_length=4)
    config = InferenceConfig.from_mapping({"num_samples": 10, "output_types": ["samples"]})
    chunked = forecast(
        model, batch, config, generator=torch.Generator().manual_seed(2), max_rows=20
    )
    generator = torch.Generator().manual_seed(2)
    parts = [
        forecast(model, batch.slice(lo, lo + 2), config, generator=generator).samples
        for lo in range(0, batch.num_series, 2)
    ]
    assert chunked.samples is not None
    np.testing.assert_array_equal(chunked.samples, np.concatenate(parts))  # type: ignore[arg-type]


@pytest.mark.parametrize("max_rows", [1, 35, 6400])
def test_forecast_is_deterministic_for_fixed_max_rows(
    max_rows: int, make_model: Callable[..., DeepAR], make_batch: Callable[..., SeriesBatch]
) -> None:
    model = make_model()
    batch = make_batch(prediction_length=4)
    config = InferenceConfig(num_samples=12)

    def run(seed: int) -> bytes:
        out = forecast(
            model, batch, config, generator=torch.Generator().manual_seed(seed), max_rows=max_rows
        )
        assert out.mean is not None
        assert out.quantiles is not None
        assert out.samples is None
        assert out.mean.shape == (6, 4)
        assert out.quantiles.shape == (6, 9, 4)
        return out.mean.tobytes() + out.quantiles.tobytes()

    assert run(0) == run(0)
    assert run(0) != run(1)


def test_deterministic_forecast_does_not_depend_on_chunking(
    make_model: Callable[..., DeepAR], make_batch: Callable[..., SeriesBatch]
) -> None:
    # No randomness and a fixed default scale: chunking is invisible in the output.
    model = make_model(likelihood="deterministic-L1", default_scale=5.0)
    batch = make_batch(prediction_length=4)
    config = InferenceConfig(num_samples=3)
    results = [
        forecast(model, batch, config, generator=torch.Generator().manual_seed(0), max_rows=rows)
        for rows in (1, 7, 6400)
    ]
    for other in results[1:]:
        np.testing.assert_allclose(other.mean, results[0].mean, rtol=1e-6)  # type: ignore[arg-type]


def test_forecast_empty_batch(make_model: Callable[..., DeepAR]) -> None:
    model = make_model()
    empty = SeriesBatch.from_lists(start=[], targets=[])
    config = InferenceConfig.from_mapping(
        {"num_samples": 5, "output_types": ["mean", "quantiles", "samples"], "quantiles": ["0.5"]}
    )
    out = forecast(model, empty, config, generator=torch.Generator().manual_seed(0))
    assert out.mean is not None
    assert out.quantiles is not None
    assert out.samples is not None
    assert (out.mean.shape, out.quantiles.shape, out.samples.shape) == (
        (0, 4),
        (0, 1, 4),
        (0, 5, 4),
    )


# ---------------------------------------------------------------------------------------------
# Tiles, the fused cell, precision (issue 11)


def _fused_kernel_available() -> bool:
    from batchcast.forecast.native import lstm_kernel

    return lstm_kernel() is not None


needs_kernel = pytest.mark.skipif(
    not _fused_kernel_available(), reason="no fused cell (no C compiler, or BATCHCAST_NATIVE=0)"
)


@needs_kernel
@pytest.mark.parametrize(
    ("num_cells", "num_layers", "num_samples", "scaling"),
    [(8, 2, 12, "mean"), (13, 3, 7, "std")],
)
def test_tile_rows_never_change_output_bytes(
    num_cells: int,
    num_layers: int,
    num_samples: int,
    scaling: str,
    make_model: Callable[..., DeepAR],
    make_batch: Callable[..., SeriesBatch],
) -> None:
    """Rows per physical step is a speed knob: tiles of whole series, of parts of a series and
    the untiled chunk give the same bytes for the same seed (13 cells: rows not a multiple of
    the vector width; 7 samples: series straddle tile boundaries)."""
    model = make_model(
        num_cells=num_cells, num_layers=num_layers, prediction_length=5, scaling=scaling
    )
    batch = make_batch(prediction_length=5)
    config = InferenceConfig.from_mapping(
        {"num_samples": num_samples, "output_types": ["samples", "mean", "quantiles"]}
    )

    def run(tile_rows: int) -> bytes:
        out = forecast(
            model, batch, config, generator=torch.Generator().manual_seed(4), tile_rows=tile_rows
        )
        assert out.samples is not None
        assert out.mean is not None
        assert out.quantiles is not None
        return out.samples.tobytes() + out.mean.tobytes() + out.quantiles.tobytes()

    reference = run(10_000)  # one tile: the whole chunk
    for tile_rows in (16, 3 * num_samples, 5 * num_samples + 1, 8):
        assert run(tile_rows) == reference, tile_rows
    # ...and the output still depends on the seed
    other = forecast(model, batch, config, generator=torch.Generator().manual_seed(5))
    assert other.samples is not None
    assert other.samples.tobytes() != reference[: other.samples.nbytes]


@needs_kernel
def test_fused_cell_matches_torch_ops(
    make_model: Callable[..., DeepAR],
    make_batch: Callable[..., SeriesBatch],
    to_tensors: Tensors,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The fused kernel and the torch-op fallback draw the same paths up to float rounding."""
    from batchcast.forecast import native

    model = make_model(num_layers=2, prediction_length=6)
    inputs = _inputs(model, make_batch(prediction_length=6), to_tensors)
    fused = sample_paths(
        model, **inputs, num_samples=30, generator=torch.Generator().manual_seed(6)
    )
    monkeypatch.setattr(native, "lstm_kernel", lambda: None)
    monkeypatch.setattr("batchcast.forecast.sampling.lstm_kernel", lambda: None)
    plain = sample_paths(
        model, **inputs, num_samples=30, generator=torch.Generator().manual_seed(6)
    )
    assert not torch.equal(fused, plain)  # two real code paths
    _assert_close_relative(fused, plain)


@needs_kernel
@pytest.mark.parametrize("num_layers", [1, 2, 3])
def test_bf16_is_within_its_tolerance_of_fp32(
    num_layers: int,
    make_model: Callable[..., DeepAR],
    make_batch: Callable[..., SeriesBatch],
    to_tensors: Tensors,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """bf16 GEMMs (forced on, whatever this CPU has) move the paths by bf16 rounding only.

    The same seed couples both runs draw by draw, so the paths differ only through the
    distribution parameters. Tolerance: benchmarks/RESULTS.md measures a median relative
    parameter error of ~2e-3 (bf16 has 8 significand bits: 2^-9 = 2e-3 per rounding); 2e-2
    on every path value (relative to max(1, |fp32|)) leaves room for a few roundings to add
    up over 6 steps, and is 10x below what an fp32-vs-bf16 mix-up of the weights gives.
    """
    monkeypatch.setenv("BATCHCAST_BF16", "force")
    model = make_model(num_layers=num_layers, num_cells=16, prediction_length=6)
    inputs = _inputs(model, make_batch(prediction_length=6), to_tensors)

    def draw(precision: str) -> torch.Tensor:
        return sample_paths(
            model,
            **inputs,
            num_samples=40,
            generator=torch.Generator().manual_seed(7),
            precision=precision,
        )

    fp32, bf16 = draw("fp32"), draw("bf16")
    relative = (fp32 - bf16).abs() / fp32.abs().clamp_min(1.0)
    assert torch.isfinite(bf16).all()
    assert relative.max().item() < 2e-2
    assert relative.max().item() > 0  # bf16 really ran
    # and bf16 with other tiles gives the same bytes as bf16 untiled
    again = sample_paths(
        model,
        **inputs,
        num_samples=40,
        generator=torch.Generator().manual_seed(7),
        precision="bf16",
        tile_rows=16,
    )
    assert torch.equal(again, bf16)


def test_bf16_without_hardware_says_so_and_runs_fp32(
    make_model: Callable[..., DeepAR],
    make_batch: Callable[..., SeriesBatch],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from batchcast.forecast import precision as precision_module

    monkeypatch.delenv("BATCHCAST_BF16", raising=False)
    monkeypatch.setattr(precision_module, "bf16_hardware", lambda: False)
    precision_module._warn_once.cache_clear()
    model = make_model(prediction_length=4)
    batch = make_batch(prediction_length=4)
    config = InferenceConfig(num_samples=10)
    with caplog.at_level("WARNING", logger="batchcast.forecast.precision"):
        bf16 = forecast(
            model, batch, config, generator=torch.Generator().manual_seed(8), precision="bf16"
        )
    fp32 = forecast(model, batch, config, generator=torch.Generator().manual_seed(8))
    assert [r.getMessage() for r in caplog.records if "bf16" in r.getMessage()] == [
        "precision 'bf16' asked for, but this CPU has no bf16 matrix units "
        "(AMX or AVX512-BF16): running fp32"
    ]
    assert bf16.mean is not None
    assert fp32.mean is not None
    assert bf16.mean.tobytes() == fp32.mean.tobytes()


def test_unknown_precision_is_a_config_error(
    make_model: Callable[..., DeepAR], make_batch: Callable[..., SeriesBatch]
) -> None:
    from batchcast.errors import ConfigError

    model = make_model()
    with pytest.raises(
        ConfigError, match=r"precision must be one of \['fp32', 'bf16'\], got 'fp16'"
    ):
        forecast(
            model,
            make_batch(prediction_length=4),
            InferenceConfig(num_samples=5),
            generator=torch.Generator().manual_seed(0),
            precision="fp16",
        )


def test_tile_rule_follows_the_cache_size() -> None:
    from batchcast.forecast.tuning import calibrate_tile_rows, l2_bytes, rule_tile_rows

    assert l2_bytes() >= 64 * 1024
    small, large = rule_tile_rows(40, 2, cache=256 * 1024), rule_tile_rows(40, 2, cache=2 << 20)
    assert small % 16 == 0
    assert large % 16 == 0
    assert 64 <= small < large <= 8192
    assert rule_tile_rows(40, 2, "bf16", cache=2 << 20) < large  # bf16 rows carry more bytes
    seen: list[int] = []
    chosen, seconds = calibrate_tile_rows(seen.append, [64, 128], repeats=1)
    assert chosen in (64, 128)
    assert set(seconds) == {64, 128}
    assert seen[0] == 64  # the warm-up ran first


@needs_kernel
def test_a_worker_times_its_tile_once_and_picks_a_candidate(
    make_model: Callable[..., DeepAR], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The worker-start calibration: one of the rule's candidates, timed once per process and
    network shape (the second call is a lookup), and no timing where tiles are the rule's."""
    from batchcast.forecast.tuning import candidate_tiles, rule_tile_rows, tile_rows_for

    monkeypatch.setenv("BATCHCAST_CACHE_DIR", str(tmp_path))  # nothing remembered yet
    model = make_model(num_cells=11, num_layers=2, prediction_length=4)  # a shape of its own
    cpu = torch.device("cpu")
    started = time.perf_counter()
    chosen = tile_rows_for(model, "fp32", cpu)
    first = time.perf_counter() - started
    assert chosen in candidate_tiles(rule_tile_rows(11, 2))
    started = time.perf_counter()
    assert tile_rows_for(model, "fp32", cpu) == chosen
    assert time.perf_counter() - started < first / 10  # looked up, not timed again
    assert tile_rows_for(model, "bf16", cpu) is None  # bf16 tiles stay the rule's


@needs_kernel
def test_a_timed_tile_is_remembered_on_disk_for_the_next_process(
    make_model: Callable[..., DeepAR], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A fresh process (here: the in-process memo cleared) reads the tile this machine timed
    before instead of timing again; an unreadable record is timed again and rewritten."""
    from batchcast.forecast import tuning

    monkeypatch.setenv("BATCHCAST_CACHE_DIR", str(tmp_path))
    model = make_model(num_cells=13, num_layers=1, prediction_length=3)
    cpu = torch.device("cpu")
    chosen = tuning.tile_rows_for(model, "fp32", cpu)
    (record,) = (tmp_path / "tiles").glob("*.json")
    saved = json.loads(record.read_text())
    assert saved["tile_rows"] == chosen
    assert {int(k) for k in saved["seconds"]} == set(
        tuning.candidate_tiles(tuning.rule_tile_rows(13, 1))
    )  # what was timed, for whoever wonders why
    # What the next process finds: a tile no timing here would pick, proving it was read.
    candidates = tuning.candidate_tiles(tuning.rule_tile_rows(13, 1))
    odd = next(rows for rows in (4112, 4128) if rows not in candidates)
    record.write_text(json.dumps({"tile_rows": odd}))
    monkeypatch.setattr(tuning, "_calibrated", {})
    assert tuning.tile_rows_for(model, "fp32", cpu) == odd
    record.write_text("{not json")
    monkeypatch.setattr(tuning, "_calibrated", {})
    again = tuning.tile_rows_for(model, "fp32", cpu)
    assert again in candidates
    assert json.loads(record.read_text())["tile_rows"] == again
    # Another thread count is another measurement.
    monkeypatch.setattr(tuning, "_calibrated", {})
    threads = torch.get_num_threads()
    torch.set_num_threads(threads + 1)
    try:
        tuning.tile_rows_for(model, "fp32", cpu)
    finally:
        torch.set_num_threads(threads)
    assert len(list((tmp_path / "tiles").glob("*.json"))) == 2


@needs_kernel
def test_the_tile_can_be_forced_for_measuring(
    make_model: Callable[..., DeepAR], monkeypatch: pytest.MonkeyPatch
) -> None:
    from batchcast.errors import ConfigError
    from batchcast.forecast.tuning import TILE_ROWS_ENV, tile_rows_for

    model = make_model(num_cells=9, num_layers=1, prediction_length=3)
    cpu = torch.device("cpu")
    monkeypatch.setenv(TILE_ROWS_ENV, "rule")
    assert tile_rows_for(model, "fp32", cpu) is None  # the sampler's rule, no timing
    monkeypatch.setenv(TILE_ROWS_ENV, "96")
    assert tile_rows_for(model, "fp32", cpu) == 96
    monkeypatch.setenv(TILE_ROWS_ENV, "many")
    with pytest.raises(ConfigError, match="BATCHCAST_TILE_ROWS must be 'rule' or a number"):
        tile_rows_for(model, "fp32", cpu)
