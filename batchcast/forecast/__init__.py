"""DeepAR forecasting: configuration, features, the network, sampling, training, artifacts.

Pure tensor and array math; the only files it touches are model artifacts.
"""

from batchcast.forecast.artifacts import LoadedModel, load_model, save_model
from batchcast.forecast.config import DeepARConfig, Frequency, InferenceConfig, ModelSpec
from batchcast.forecast.features import build_windows, lags_for_frequency, time_feature_names
from batchcast.forecast.likelihoods import get_likelihood
from batchcast.forecast.model import DeepAR
from batchcast.forecast.sampling import Forecast, forecast, sample_paths, summarize
from batchcast.forecast.series import SeriesBatch

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
    "load_model",
    "sample_paths",
    "save_model",
    "summarize",
    "time_feature_names",
]
