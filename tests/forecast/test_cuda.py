"""The sampler on CUDA: the same model gives forecasts within Monte-Carlo noise of the CPU path.

Skipped where there is no CUDA device (see tests/conftest.py); run on a GPU machine with
``pytest -m cuda``. CPU and CUDA generators produce different streams, so the comparison is
statistical: medians of many paths agree within a bound derived from their spread.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from batchcast.forecast import InferenceConfig, SeriesBatch, forecast
from batchcast.forecast.features import build_windows
from batchcast.forecast.sampling import sample_paths

pytestmark = pytest.mark.cuda


def _batch(num_series: int = 6, length: int = 60) -> SeriesBatch:
    rng = np.random.default_rng(0)
    t = np.arange(length)
    targets = [10 + 5 * np.sin(t / 3 + i) + rng.normal(0, 1, length) for i in range(num_series)]
    return SeriesBatch.from_lists(
        start=np.full(num_series, 1_577_836_800),
        targets=targets,
        cat=[[i % 3, i % 2] for i in range(num_series)],
        dynamic=[rng.normal(size=(length + 4, 1)) for _ in range(num_series)],
        num_dynamic_feat=1,
    )


def test_cuda_medians_within_monte_carlo_noise_of_cpu(tiny_model_dir) -> None:
    from batchcast.models import load_model

    cpu = load_model(str(tiny_model_dir), device="cpu").model
    gpu = load_model(str(tiny_model_dir), device="cuda").model
    batch = _batch()
    config = InferenceConfig(num_samples=2000, output_types=("samples",))
    a = forecast(cpu, batch, config, generator=torch.Generator().manual_seed(0)).samples
    b = forecast(
        gpu, batch, config, generator=torch.Generator(device="cuda").manual_seed(0)
    ).samples
    assert a is not None
    assert b is not None
    assert a.shape == b.shape
    # A sample median's standard error is about 1.25 * sigma / sqrt(S) for a normal-like
    # spread; IQR/1.35 estimates sigma. Two medians differ by at most ~5 standard errors.
    iqr = np.subtract(*np.percentile(a, [75, 25], axis=1))
    bound = 5 * 1.25 * np.sqrt(2) * (iqr / 1.35) / np.sqrt(config.num_samples)
    diff = np.abs(np.median(a, axis=1) - np.median(b, axis=1))
    assert (diff <= bound + 1e-6).all(), float((diff - bound).max())


def test_cuda_summaries_are_computed_on_device_and_match_the_host_rule(tiny_model_dir) -> None:
    from batchcast.models import load_model

    model = load_model(str(tiny_model_dir), device="cuda").model
    windows = build_windows(_batch(), model.spec, dummy_value=0.0)
    tensors = {
        "past_target": torch.from_numpy(windows.past_target).cuda(),
        "past_observed": torch.from_numpy(windows.past_observed).cuda(),
        "covariates": torch.from_numpy(windows.covariates).cuda(),
        "cat": torch.from_numpy(windows.cat).cuda(),
    }
    paths = sample_paths(
        model, **tensors, num_samples=100, generator=torch.Generator(device="cuda").manual_seed(1)
    )
    assert paths.is_cuda
    host = paths.cpu().numpy()
    config = InferenceConfig()
    result = forecast(
        model, _batch(), config, generator=torch.Generator(device="cuda").manual_seed(1)
    )
    assert result.quantiles is not None
    assert result.mean is not None
    # Same generator seed and chunking: the summaries are those of the same paths.
    ordered = np.sort(host, axis=1)
    np.testing.assert_allclose(result.quantiles[:, 4], ordered[:, 50], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(result.mean, host.mean(axis=1), rtol=1e-4, atol=1e-4)
