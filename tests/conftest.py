"""Shared fixtures: a real S3 endpoint on loopback (moto's HTTP server), never patched boto.

``ray_local`` is a private 2-CPU local Ray for the module that asks for it (yielding its GCS
address), never a cluster found on the machine. ``s3_server`` starts once per session and
points the standard AWS variables at it in ``os.environ``, so everything (boto3, smart_open,
Ray workers started later) reaches it the way it would reach real S3. ``s3_bucket`` gives
each test a fresh, empty bucket. ``tiny_model`` is a tiny hourly model trained for one epoch,
once per module that asks for it (the fault suite and the runner tests).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from local_ray import start_local_ray

_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """Start moto's S3 server on 127.0.0.1 (a free port); yield its endpoint URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    saved = {k: os.environ.get(k) for k in [*_AWS_ENV, "AWS_ENDPOINT_URL_S3"]}
    # Dummy credentials only: nothing here may reach a real account.
    os.environ.update(_AWS_ENV)
    os.environ["AWS_ENDPOINT_URL_S3"] = endpoint
    for key in ("AWS_SESSION_TOKEN", "AWS_PROFILE"):
        saved[key] = os.environ.pop(key, None)
    try:
        yield endpoint
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture
def s3_bucket(s3_server: str) -> str:
    """A fresh bucket on the ``s3_server`` endpoint; its name."""
    import boto3

    name = f"test-{uuid.uuid4().hex[:12]}"
    client = boto3.session.Session().client("s3", endpoint_url=s3_server)
    client.create_bucket(Bucket=name)
    return name  # no teardown: moto keeps buckets in memory, gone with the server


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip ``cuda``-marked tests where there is no CUDA device (they run on a GPU machine)."""
    if not any(item.get_closest_marker("cuda") for item in items):
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if item.get_closest_marker("cuda"):
            item.add_marker(skip)


TINY_HYPERPARAMETERS = {
    "time_freq": "H",
    "context_length": "12",
    "prediction_length": "6",
    "epochs": "1",
    "num_cells": "8",
    "num_layers": "1",
    "mini_batch_size": "16",
}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny hourly model (prediction_length 6, context 12) trained for one epoch; its path."""
    from batchcast.api import train
    from batchcast.synthetic import synthetic_records, write_jsonl

    folder = tmp_path_factory.mktemp("tiny-model")
    records = synthetic_records(48, freq="H", length=(30, 60), seed=1)
    data = write_jsonl(folder / "train.jsonl", records)
    model_dir = str(folder / "model")
    train(str(data), hyperparameters=TINY_HYPERPARAMETERS, model_dir=model_dir, seed=0)
    return model_dir


@pytest.fixture(scope="module")
def ray_local() -> Iterator[str]:
    """A private 2-CPU local Ray shared by the tests of one module; its GCS address."""
    yield from start_local_ray()
