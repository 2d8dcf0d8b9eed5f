"""``batchcast transform --gpus-per-worker 1``: the CUDA path end to end.

Skipped where there is no CUDA device (tests/conftest.py); run on a GPU machine with
``pytest -m cuda``. The GPU worker samples while CPU tasks decode and encode (the split
pipeline); its forecasts must agree with a CPU run within Monte-Carlo noise, line by line.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import orjson
import pytest
from transform_harness import (
    dumps,
    inference_records,
    start_local_ray,
    write_lines,
)

import batchcast

pytestmark = pytest.mark.cuda

CONFIG = {"num_samples": 1000, "output_types": ["quantiles"], "quantiles": ["0.25", "0.5", "0.75"]}


@pytest.fixture(scope="module")
def ray_gpu() -> Iterator[None]:
    yield from start_local_ray()


def _quantiles(path: Path) -> np.ndarray:
    rows = [orjson.loads(line)["quantiles"] for line in path.read_bytes().splitlines()]
    return np.array([[r["0.25"], r["0.5"], r["0.75"]] for r in rows])  # (B, 3, P)


def test_gpu_worker_forecasts_agree_with_cpu(
    ray_gpu: None, tiny_model: str, tmp_path: Path
) -> None:
    records = inference_records(40, seed=5)
    write_lines(tmp_path / "in" / "a.jsonl", dumps(records))
    runs = {}
    for name, gpus in (("cpu", 0.0), ("gpu", 1.0)):
        summary = batchcast.transform(
            tiny_model,
            str(tmp_path / "in"),
            str(tmp_path / name),
            inference=CONFIG,
            workers=1,
            gpus_per_worker=gpus,
        )
        assert summary.ok, summary.errors
        runs[name] = _quantiles(tmp_path / name / "a.jsonl.out")
    cpu, gpu = runs["cpu"], runs["gpu"]
    assert cpu.shape == gpu.shape == (len(records), 3, cpu.shape[-1])
    # Median standard error ~ 1.25 * sigma / sqrt(S), sigma ~ IQR / 1.35; allow 5 of them
    # for the difference of two independent medians.
    iqr = cpu[:, 2] - cpu[:, 0]
    bound = 5 * 1.25 * np.sqrt(2) * (iqr / 1.35) / np.sqrt(CONFIG["num_samples"])
    assert (np.abs(cpu[:, 1] - gpu[:, 1]) <= bound + 1e-5).all()
