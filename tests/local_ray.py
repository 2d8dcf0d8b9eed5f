"""A private local Ray for one test module (the ``ray_local`` fixture of tests/conftest.py)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator


def start_local_ray() -> Iterator[str]:
    """``ray.init`` a private 2-CPU Ray for one module, yield its GCS address (for a
    subprocess to join through ``RAY_ADDRESS``); shut it down afterwards."""
    import ray

    if ray.is_initialized():  # a module before this one leaked its Ray: do not share it
        ray.shutdown()
    # RAY_ADDRESS would make ray.init join some other cluster instead of starting its own.
    saved = os.environ.pop("RAY_ADDRESS", None)
    try:
        # address="local": a new Ray of our own, never one found on the machine (ray.init()
        # alone would join a `ray start` cluster, or fail on the address file of a dead one).
        ray.init(
            address="local", num_cpus=2, include_dashboard=False, logging_level=logging.WARNING
        )
        yield str(ray.get_runtime_context().gcs_address)
    finally:
        ray.shutdown()
        if saved is not None:
            os.environ["RAY_ADDRESS"] = saved
