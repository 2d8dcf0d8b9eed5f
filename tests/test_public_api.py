"""The public API, pinned (httpx's practice): a change to any ``__all__`` must be deliberate."""

from __future__ import annotations

import importlib
import importlib.metadata

import pytest

import batchcast
from batchcast import errors

EXPECTED = {
    "batchcast": [
        "BatchcastError",
        "ConfigError",
        "DeepARConfig",
        "InferenceConfig",
        "JobSummary",
        "ModelError",
        "ModelSpec",
        "RecordError",
        "ShardError",
        "TrainingError",
        "TransformJob",
        "__version__",
        "import_gluonts",
        "load_model",
        "predict",
        "train",
        "transform",
    ],
    "batchcast.forecast": [
        "DeepAR",
        "DeepARConfig",
        "Forecast",
        "Frequency",
        "InferenceConfig",
        "LoadedModel",
        "ModelSpec",
        "SeriesBatch",
        "build_windows",
        "forecast",
        "get_likelihood",
        "lags_for_frequency",
        "sample_paths",
        "summarize",
        "time_feature_names",
    ],
    "batchcast.io": [
        "CorruptInputError",
        "DecodedShard",
        "InputObject",
        "Join",
        "JsonPath",
        "OutputError",
        "RecordContract",
        "Shard",
        "PieceBudget",
        "ShardLines",
        "Sink",
        "TrainingChannels",
        "TrainingData",
        "compile_path",
        "decode_records",
        "encode_error",
        "encode_forecasts",
        "exists",
        "forecast_dicts",
        "join_lines",
        "join_uri",
        "list_inputs",
        "load_training_channels",
        "load_training_data",
        "open_range",
        "open_sink",
        "output_uri",
        "plan_shards",
        "read_model_files",
        "read_shard_lines",
        "remove_stale_temp",
        "renumber",
        "s3_client",
        "write_bytes_atomic",
        "write_model_files",
    ],
    "batchcast.models": [
        "LoadedModel",
        "check_model",
        "import_gluonts",
        "load_model",
        "load_spec",
        "save_model",
    ],
    "batchcast.runner": [
        "ON_ERROR_MODES",
        "SUMMARY_NAME",
        "JobSummary",
        "Reassembler",
        "ShardProcessor",
        "ShardResult",
        "TransformJob",
        "WorkerOptions",
        "predict_request",
        "run_transform",
        "shard_seed",
    ],
    "batchcast.errors": [
        "BatchcastError",
        "ConfigError",
        "ModelError",
        "RecordError",
        "ShardError",
        "TrainingError",
    ],
}


@pytest.mark.parametrize("module_name", sorted(EXPECTED))
def test_all_is_pinned(module_name: str) -> None:
    module = importlib.import_module(module_name)
    assert sorted(module.__all__) == sorted(EXPECTED[module_name])
    assert len(set(module.__all__)) == len(module.__all__)
    for name in module.__all__:
        assert hasattr(module, name), f"{module_name}.{name} is exported but missing"


def test_top_level_names_are_the_same_objects() -> None:
    from batchcast.api import predict, train, transform
    from batchcast.forecast import DeepARConfig, InferenceConfig, ModelSpec
    from batchcast.models import load_model

    assert batchcast.predict is predict
    assert batchcast.train is train
    assert batchcast.transform is transform
    assert batchcast.DeepARConfig is DeepARConfig
    assert batchcast.InferenceConfig is InferenceConfig
    assert batchcast.ModelSpec is ModelSpec
    assert batchcast.load_model is load_model
    assert batchcast.ConfigError is errors.ConfigError


def test_version_matches_the_installed_distribution() -> None:
    assert batchcast.__version__ == importlib.metadata.version("batchcast")


def test_error_tree() -> None:
    for name in ("ConfigError", "RecordError", "ShardError", "ModelError"):
        assert issubclass(getattr(errors, name), errors.BatchcastError)
    assert issubclass(errors.ConfigError, ValueError)  # a bad value, for callers that catch it
    error = errors.RecordError("s3://b/in.jsonl", 7, "target", "expected an array")
    assert str(error) == "s3://b/in.jsonl:7: field 'target': expected an array"
    assert error.to_dict() == {
        "uri": "s3://b/in.jsonl",
        "line": 7,
        "field": "target",
        "message": "expected an array",
    }
