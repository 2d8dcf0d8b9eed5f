"""Running transform jobs: the job description, the shard processor, the Ray workers and
pool, the driver, reassembly, the output writer and the summary.

With ``serve/``, the only room that imports Ray, and only in ``worker``, ``pool`` and
``driver``: the names here are imported lazily, so ``from batchcast.runner import
ShardProcessor`` (``batchcast predict``, the serving room) does not import Ray.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from batchcast.runner.driver import run_transform
    from batchcast.runner.job import ON_ERROR_MODES, TransformJob
    from batchcast.runner.online import predict_request
    from batchcast.runner.processor import ShardProcessor, ShardResult, WorkerOptions, shard_seed
    from batchcast.runner.reassemble import Reassembler
    from batchcast.runner.summary import SUMMARY_NAME, JobSummary

_LAZY = {
    "ON_ERROR_MODES": "batchcast.runner.job",
    "SUMMARY_NAME": "batchcast.runner.summary",
    "JobSummary": "batchcast.runner.summary",
    "Reassembler": "batchcast.runner.reassemble",
    "ShardProcessor": "batchcast.runner.processor",
    "ShardResult": "batchcast.runner.processor",
    "TransformJob": "batchcast.runner.job",
    "WorkerOptions": "batchcast.runner.processor",
    "predict_request": "batchcast.runner.online",
    "run_transform": "batchcast.runner.driver",
    "shard_seed": "batchcast.runner.processor",
}

__all__ = [
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
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'batchcast.runner' has no attribute {name!r}")
