"""Output encoding (SPEC.md §3): keys, order, exact float32 values, error lines, assembly."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from batchcast.errors import ConfigError, RecordError
from batchcast.forecast.config import InferenceConfig
from batchcast.io import encode_error, encode_forecasts, forecast_dicts, join_lines


def _arrays(b: int = 4, q: int = 3, s: int = 5, p: int = 6) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "mean": (rng.standard_normal((b, p)) * 100).astype(np.float32),
        "quantiles": (rng.standard_normal((b, q, p)) * 1e-3).astype(np.float32),
        "samples": (rng.standard_normal((b, s, p)) * 1e6).astype(np.float32),
    }


def test_round_trip_keys_order_and_exact_values() -> None:
    config = InferenceConfig(
        num_samples=5,
        output_types=("mean", "samples", "quantiles"),
        quantiles=("0.10", "0.5", "0.9"),
    )
    arrays = _arrays()
    lines = encode_forecasts(config, **arrays)
    assert len(lines) == 4
    for b, line in enumerate(lines):
        assert b"\n" not in line
        record = orjson.loads(line)
        # SPEC.md's order whatever the order of output_types; quantile keys exactly as configured
        assert list(record) == ["quantiles", "samples", "mean"]
        assert list(record["quantiles"]) == ["0.10", "0.5", "0.9"]
        # float32 shortest repr reads back to the very same float32
        assert np.array_equal(np.float32(record["mean"]), arrays["mean"][b])
        assert np.array_equal(np.float32(record["samples"]), arrays["samples"][b])
        for i, key in enumerate(config.quantiles):
            assert np.array_equal(np.float32(record["quantiles"][key]), arrays["quantiles"][b, i])


def test_only_requested_outputs() -> None:
    arrays = _arrays()
    lines = encode_forecasts(
        InferenceConfig(output_types=("mean",)), mean=arrays["mean"], quantiles=None, samples=None
    )
    assert all(list(orjson.loads(line)) == ["mean"] for line in lines)


def test_default_output_is_about_2_4_kb_per_series() -> None:
    rng = np.random.default_rng(1)
    mean = (rng.random((50, 24)) * 1000).astype(np.float32)
    quantiles = np.sort((rng.random((50, 9, 24)) * 1000).astype(np.float32), axis=1)
    lines = encode_forecasts(InferenceConfig(), mean=mean, quantiles=quantiles, samples=None)
    size = np.mean([len(line) for line in lines])
    assert 2000 < size < 2800, size  # SPEC.md §7: "about 2.4 KB"


def test_non_contiguous_and_float64_inputs_are_accepted() -> None:
    mean64 = np.arange(12, dtype=np.float64).reshape(3, 4) / 3
    strided = np.asfortranarray(mean64)
    [first, *_] = encode_forecasts(
        InferenceConfig(output_types=("mean",)), mean=strided, quantiles=None, samples=None
    )
    assert np.array_equal(np.float32(orjson.loads(first)["mean"]), mean64[0].astype(np.float32))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mean": None}, "no mean array"),
        ({"mean": np.zeros((4,), np.float32)}, "2 dimensions"),
        ({"quantiles": np.zeros((4, 2, 6), np.float32)}, "2 levels"),
        ({"mean": np.zeros((4, 7), np.float32)}, "shape"),
    ],
)
def test_shape_mismatches_are_caller_bugs(kwargs: dict[str, np.ndarray | None], match: str) -> None:
    arrays: dict[str, np.ndarray | None] = {**_arrays(), **kwargs}
    config = InferenceConfig(output_types=("mean", "quantiles"), quantiles=("0.1", "0.5", "0.9"))
    with pytest.raises(ValueError, match=match):
        encode_forecasts(config, mean=arrays["mean"], quantiles=arrays["quantiles"], samples=None)


def test_forecast_dicts_encode_the_same() -> None:
    arrays = _arrays()
    config = InferenceConfig(output_types=("quantiles", "mean"), quantiles=("0.1", "0.5", "0.9"))
    dicts = forecast_dicts(config, mean=arrays["mean"], quantiles=arrays["quantiles"], samples=None)
    encoded = encode_forecasts(
        config, mean=arrays["mean"], quantiles=arrays["quantiles"], samples=None
    )
    assert [orjson.dumps(d, option=orjson.OPT_SERIALIZE_NUMPY) for d in dicts] == encoded


def test_encode_error() -> None:
    error = RecordError("s3://b/k.jsonl", 12, "target", 'target[0]: expected a number, found "x"')
    assert orjson.loads(encode_error(error)) == {
        "error": {
            "line": 12,
            "field": "target",
            "message": 'target[0]: expected a number, found "x"',
        }
    }


def test_join_lines() -> None:
    assert join_lines([b"a", b"{}"], assemble_with="Line") == b"a\n{}\n"
    assert join_lines([b"a", b"{}"], assemble_with="None") == b"a{}"
    assert join_lines([], assemble_with="Line") == b""
    with pytest.raises(ConfigError, match="AssembleWith"):
        join_lines([b"a"], assemble_with="line")
