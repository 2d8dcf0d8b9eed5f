"""Running transform jobs on Ray: the job description, workers, the driver, reassembly.

The only room that imports Ray.
"""

from batchcast.runner.driver import SUMMARY_NAME, JobSummary, run_transform
from batchcast.runner.job import ON_ERROR_MODES, TransformJob
from batchcast.runner.online import predict_request
from batchcast.runner.reassemble import Reassembler
from batchcast.runner.worker import ShardProcessor, ShardResult, WorkerOptions, shard_seed

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
