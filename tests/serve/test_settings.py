"""The server's settings: SageMaker's environment variables, flags over them, validation, and
the trip to worker processes; the ``serve`` subcommand's parser."""

from __future__ import annotations

import argparse
from typing import Any

import pytest

from batchcast.errors import ConfigError
from batchcast.forecast import InferenceConfig
from batchcast.serve.command import add_parser
from batchcast.serve.settings import BatchPolicy, ServeSettings, available_cpus, parse_range


def test_defaults_are_the_containers() -> None:
    settings = ServeSettings.from_environment({})
    assert settings.model == "/opt/ml/model"
    assert (settings.host, settings.port) == ("0.0.0.0", 8080)
    assert settings.workers == available_cpus()
    assert settings.max_payload_mb == 6
    assert settings.inference == InferenceConfig()
    assert settings.concurrent_transforms == 2 * settings.workers
    assert settings.batch == BatchPolicy()


def test_environment_variables() -> None:
    env = {
        "SAGEMAKER_BIND_TO_PORT": "9001",
        "MODEL_SERVER_WORKERS": "3",
        "SAGEMAKER_MODEL_SERVER_WORKERS": "5",  # MODEL_SERVER_WORKERS wins
        "SAGEMAKER_MAX_PAYLOAD_IN_MB": "12.5",
        "DEEPAR_INFERENCE_CONFIG": '{"num_samples": 7, "quantiles": ["0.5"]}',
        "UNRELATED": "x",
    }
    settings = ServeSettings.from_environment(env)
    assert (settings.port, settings.workers, settings.max_payload_mb) == (9001, 3, 12.5)
    assert settings.inference == InferenceConfig(num_samples=7, quantiles=("0.5",))
    sagemaker_only = ServeSettings.from_environment({"SAGEMAKER_MODEL_SERVER_WORKERS": "5"})
    assert sagemaker_only.workers == 5


def test_flags_override_the_environment() -> None:
    env = {"SAGEMAKER_BIND_TO_PORT": "9001", "MODEL_SERVER_WORKERS": "3"}
    settings = ServeSettings.from_environment(env, port=7000, workers=1, model="m", host=None)
    assert (settings.port, settings.workers, settings.model) == (7000, 1, "m")
    assert settings.host == "0.0.0.0"  # None: not given


@pytest.mark.parametrize(
    ("env", "overrides", "named"),
    [
        ({"SAGEMAKER_BIND_TO_PORT": "http"}, {}, "SAGEMAKER_BIND_TO_PORT"),
        ({"SAGEMAKER_BIND_TO_PORT": "-1"}, {}, "SAGEMAKER_BIND_TO_PORT"),
        ({"MODEL_SERVER_WORKERS": "0"}, {}, "MODEL_SERVER_WORKERS"),
        ({"SAGEMAKER_MAX_PAYLOAD_IN_MB": "six"}, {}, "SAGEMAKER_MAX_PAYLOAD_IN_MB"),
        ({"SAGEMAKER_MAX_PAYLOAD_IN_MB": "101"}, {}, "MaxPayloadInMB"),
        ({"DEEPAR_INFERENCE_CONFIG": '{"num_samples": 0}'}, {}, "num_samples"),
        ({"DEEPAR_INFERENCE_CONFIG": "{"}, {}, "DEEPAR_INFERENCE_CONFIG"),
        ({}, {"port": 70000}, "port"),
        ({}, {"workers": 0}, "workers"),
        ({}, {"model": ""}, "model"),
        ({}, {"autoscale": (3, 1)}, "autoscale"),
        ({}, {"max_ongoing_requests": 0}, "max_ongoing_requests"),
        ({}, {"max_concurrent_transforms": 0}, "MaxConcurrentTransforms"),
        ({}, {"graceful_timeout_s": -1.0}, "graceful_timeout_s"),
        ({}, {"graceful_timeout_s": float("nan")}, "graceful_timeout_s"),
        ({}, {"graceful_timeout_s": float("inf")}, "graceful_timeout_s"),
        ({}, {"body_timeout_s": 0.0}, "body_timeout_s"),
        ({}, {"body_timeout_s": float("nan")}, "body_timeout_s"),
    ],
)
def test_invalid_settings_name_what_is_wrong(
    env: dict[str, str], overrides: dict[str, Any], named: str
) -> None:
    with pytest.raises(ConfigError, match=named):
        ServeSettings.from_environment(env, **overrides)


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [({"max_rows": 0}, "max_rows"), ({"max_wait_ms": -1.0}, "max_wait_ms")],
)
def test_invalid_batch_policy(kwargs: dict[str, Any], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        BatchPolicy(**kwargs)


def test_settings_survive_the_trip_to_a_worker() -> None:
    settings = ServeSettings(
        model="s3://bucket/model.tar.gz",
        host="127.0.0.1",
        port=0,
        workers=3,
        max_payload_mb=2.5,
        max_concurrent_transforms=9,
        inference=InferenceConfig(
            num_samples=11, output_types=("samples", "mean"), supported=("samples", "mean")
        ),
        batch=BatchPolicy(max_rows=999, max_wait_ms=0.5, enabled=False),
        seed=42,
        echo=True,
        graceful_timeout_s=3.0,
        body_timeout_s=7.5,
        autoscale=(1, 4),
        max_ongoing_requests=17,
    )
    assert ServeSettings.from_json(settings.to_json()) == settings


def test_replica_ongoing_requests_is_sized_to_the_batch() -> None:
    # 6,400 rows of 100 paths: 64 single-series requests per batch, two batches' worth.
    assert ServeSettings().replica_ongoing_requests == 128
    small = ServeSettings(inference=InferenceConfig(num_samples=1000))
    assert small.replica_ongoing_requests == 2 * 6
    assert ServeSettings(max_ongoing_requests=5).replica_ongoing_requests == 5


def test_parse_range() -> None:
    assert parse_range("1-4") == (1, 4)
    for bad in ("4", "a-b", "1-"):
        with pytest.raises(ConfigError, match="MIN-MAX"):
            parse_range(bad)


# ---------------------------------------------------------------------------------------------
# The subcommand's parser


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="batchcast")
    add_parser(parser.add_subparsers(dest="command", required=True))
    return parser


def test_serve_parses_every_flag() -> None:
    args = _parser().parse_args(
        [
            "serve",
            "--model", "m", "--host", "127.0.0.1", "--port", "0", "--workers", "2",
            "--ray", "--autoscale", "1-3", "--max-ongoing-requests", "9",
            "--inference-config", "{}", "--max-payload-mb", "3", "--max-concurrent-transforms",
            "4", "--batch-rows", "100", "--batch-wait-ms", "0.5", "--no-batching", "--seed", "1",
            "--device", "cpu", "--graceful-timeout", "5", "--body-timeout", "1.5", "--echo",
        ]
    )  # fmt: skip
    assert (args.model, args.port, args.workers, args.autoscale) == ("m", 0, 2, "1-3")
    assert args.body_timeout == 1.5
    assert (args.ray, args.no_batching, args.echo) == (True, True, True)
    assert callable(args.func)


def test_serve_defaults_come_later_from_the_environment() -> None:
    args = _parser().parse_args(["serve"])
    assert (args.model, args.port, args.workers) == (None, None, None)
    assert not args.ray


@pytest.mark.parametrize("bad", [["--workers", "0"], ["--batch-rows", "x"]])
def test_serve_rejects_bad_numbers(bad: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        _parser().parse_args(["serve", *bad])
    assert "serve: error:" in capsys.readouterr().err
