"""batchcast: fast, vectorised DeepAR batch transform over JSON Lines, on a laptop or a Ray cluster.

A drop-in for SageMaker Batch Transform with the built-in DeepAR: the same records, the same
``DEEPAR_INFERENCE_CONFIG``, the same output lines in the same order, the same job parameters.

The entry points are imported lazily: ``import batchcast.io`` (in a Ray decode task, say) must
not pay for torch and Ray.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from batchcast.errors import (
    BatchcastError,
    ConfigError,
    ModelError,
    RecordError,
    ShardError,
    TrainingError,
)

if TYPE_CHECKING:
    from batchcast.api import import_gluonts, predict, train, transform
    from batchcast.forecast.config import DeepARConfig, InferenceConfig, ModelSpec
    from batchcast.models import load_model
    from batchcast.runner.job import TransformJob
    from batchcast.runner.summary import JobSummary

__version__ = "0.1.0"

_LAZY = {
    "import_gluonts": "batchcast.api",
    "predict": "batchcast.api",
    "train": "batchcast.api",
    "transform": "batchcast.api",
    "load_model": "batchcast.models",
    "DeepARConfig": "batchcast.forecast.config",
    "InferenceConfig": "batchcast.forecast.config",
    "ModelSpec": "batchcast.forecast.config",
    "JobSummary": "batchcast.runner.summary",
    "TransformJob": "batchcast.runner.job",
}

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
    "TrainingError",
    "TransformJob",
    "__version__",
    "import_gluonts",
    "load_model",
    "predict",
    "train",
    "transform",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'batchcast' has no attribute {name!r}")
