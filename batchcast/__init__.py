"""batchcast: fast, vectorised DeepAR batch transform over JSON Lines, on one machine or a Ray cluster.

A drop-in for SageMaker Batch Transform with the built-in DeepAR: the same records, the same
``DEEPAR_INFERENCE_CONFIG``, the same output lines in the same order, the same job parameters.
"""

from batchcast.api import import_gluonts, predict, train, transform
from batchcast.errors import BatchcastError, ConfigError, ModelError, RecordError, ShardError
from batchcast.forecast.artifacts import load_model
from batchcast.forecast.config import DeepARConfig, InferenceConfig, ModelSpec
from batchcast.runner.driver import JobSummary
from batchcast.runner.job import TransformJob

__version__ = "0.1.0"

__all__ = [
    "BatchcastError",
    "ConfigError",
    "DeepARConfig",
    "InferenceConfig",
    "JobSummary",
    "ModelError",
    "ModelSpec",
    "RecordError",
    "ShardError",
    "TransformJob",
    "__version__",
    "import_gluonts",
    "load_model",
    "predict",
    "train",
    "transform",
]
