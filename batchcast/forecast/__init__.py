"""DeepAR forecasting: configuration, features, the network, sampling, training, artifacts.

Pure tensor and array math, no I/O: a model's files come and go as bytes
(``artifacts``); ``batchcast.models`` loads and saves them through ``io``. Names are imported
lazily so that ``io`` can use the torch-free ``config`` and ``series`` modules without torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from batchcast.forecast.artifacts import LoadedModel
    from batchcast.forecast.config import DeepARConfig, InferenceConfig, ModelSpec
    from batchcast.forecast.features import build_windows, lags_for_frequency, time_feature_names
    from batchcast.forecast.frequency import Frequency
    from batchcast.forecast.likelihoods import get_likelihood
    from batchcast.forecast.model import DeepAR
    from batchcast.forecast.sampling import Forecast, forecast, sample_paths, summarize
    from batchcast.forecast.series import SeriesBatch

_LAZY = {
    "LoadedModel": "artifacts",
    "DeepARConfig": "config",
    "Frequency": "frequency",
    "InferenceConfig": "config",
    "ModelSpec": "config",
    "build_windows": "features",
    "lags_for_frequency": "features",
    "time_feature_names": "features",
    "get_likelihood": "likelihoods",
    "DeepAR": "model",
    "Forecast": "sampling",
    "forecast": "sampling",
    "sample_paths": "sampling",
    "summarize": "sampling",
    "SeriesBatch": "series",
}

__all__ = [
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
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"batchcast.forecast.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'batchcast.forecast' has no attribute {name!r}")
