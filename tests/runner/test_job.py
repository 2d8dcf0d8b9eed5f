"""TransformJob from a CreateTransformJob request body, flags and the environment (SPEC.md §4)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import orjson
import pytest

from batchcast.errors import ConfigError
from batchcast.forecast.config import InferenceConfig
from batchcast.runner import TransformJob

BODY_FILE = Path(__file__).parents[1] / "data" / "create_transform_job.json"
NO_ENV: dict[str, str] = {}


@pytest.fixture
def body() -> dict[str, Any]:
    """The full request body of tests/data/create_transform_job.json (a fresh copy)."""
    return orjson.loads(BODY_FILE.read_bytes())


def _with(body: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    """A copy of ``body`` with the key at ``path`` set to ``value``."""
    out = copy.deepcopy(body)
    node = out
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return out


def test_the_full_documented_body_is_accepted_and_every_meaningful_key_is_used(
    body: dict[str, Any],
) -> None:
    job = TransformJob.create("model-dir", body=body, environ=NO_ENV)
    assert job.name == "deepar-electricity-batch-2026-11-21"
    assert job.input == "s3://my-bucket/deepar/electricity/test/"
    assert job.data_type == "S3Prefix"
    assert job.content_type == "application/jsonlines"
    assert job.compression == "None"
    assert job.output == "s3://my-bucket/deepar/electricity/batch-output/"
    assert job.accept == "application/jsonlines"
    assert job.assemble_with == "Line"
    assert job.batch_strategy == "MultiRecord"
    assert job.max_payload_mb == 6
    # MODEL_SERVER_WORKERS (2) wins over MaxConcurrentTransforms (4).
    assert job.workers == 2
    assert job.inference == InferenceConfig(
        num_samples=20, output_types=("mean", "quantiles"), quantiles=("0.1", "0.5", "0.9")
    )
    assert job.join.input_filter == "$"
    assert job.join.join_source == "Input"
    assert job.join.output_filter == "$['item_id','SageMakerOutput']"
    assert job.model == "model-dir"


def test_keys_without_meaning_here_are_reported_as_ignored(body: dict[str, Any]) -> None:
    job = TransformJob.create("m", body=body, environ=NO_ENV)
    assert sorted(key for key, _ in job.ignored) == [
        "ModelClientConfig",
        "ModelName",
        "Tags",
        "TransformResources",
    ]
    assert all(why for _, why in job.ignored)
    described = orjson.loads(orjson.dumps(job.describe()))  # JSON-ready, for the summary
    assert {d["key"] for d in described["ignored"]} == {k for k, _ in job.ignored}
    assert described["inference"]["num_samples"] == 20


def test_more_ignored_keys_are_reported(body: dict[str, Any]) -> None:
    body = _with(body, ("TransformOutput", "KmsKeyId"), "arn:aws:kms:us-east-1:1:key/x")
    body = _with(body, ("Environment", "MODEL_SERVER_TIMEOUT"), "3600")
    body["DataCaptureConfig"] = {"DestinationS3Uri": "s3://b/capture"}
    keys = {key for key, _ in TransformJob.create("m", body=body, environ=NO_ENV).ignored}
    assert {
        "TransformOutput.KmsKeyId",
        "Environment.MODEL_SERVER_TIMEOUT",
        "DataCaptureConfig",
    } <= keys


def test_a_minimal_body_takes_the_defaults() -> None:
    body = {
        "TransformInput": {"DataSource": {"S3DataSource": {"S3Uri": "s3://b/in"}}},
        "TransformOutput": {"S3OutputPath": "s3://b/out"},
    }
    job = TransformJob.create("m", body=body, environ=NO_ENV)
    assert (job.input, job.output, job.data_type) == ("s3://b/in", "s3://b/out", "S3Prefix")
    assert (job.max_payload_mb, job.assemble_with, job.workers) == (6.0, "Line", None)
    assert job.inference == InferenceConfig()
    assert job.ignored == ()
    assert job.name == ""


@pytest.mark.parametrize(
    ("path", "key"),
    [
        (("Foo",), "Foo"),
        (("TransformInput", "Bar"), "Bar"),
        (("TransformInput", "DataSource", "S3DataSource", "S3Region"), "S3Region"),
        (("TransformInput", "DataSource", "FileSystemDataSource"), "FileSystemDataSource"),
        (("TransformOutput", "Compression"), "Compression"),
        (("DataProcessing", "JoinType"), "JoinType"),
        (("Environment", "OMP_NUM_THREADS"), "OMP_NUM_THREADS"),
    ],
)
def test_an_unknown_key_raises_naming_it(
    body: dict[str, Any], path: tuple[str, ...], key: str
) -> None:
    with pytest.raises(ConfigError, match=key):
        TransformJob.create("m", body=_with(body, path, "x"), environ=NO_ENV)


@pytest.mark.parametrize(
    ("path", "value", "key"),
    [
        (("BatchStrategy",), "AllAtOnce", "BatchStrategy"),
        (("TransformInput", "SplitType"), "None", "SplitType"),
        (("TransformInput", "SplitType"), "RecordIO", "SplitType"),
        (("TransformInput", "CompressionType"), "Zip", "CompressionType"),
        (("TransformInput", "ContentType"), "text/csv", "ContentType"),
        (("TransformInput", "DataSource", "S3DataSource", "S3DataType"), "Augmented", "S3DataType"),
        (("MaxPayloadInMB",), 0, "MaxPayloadInMB"),
        (("MaxPayloadInMB",), 101, "MaxPayloadInMB"),
        (("MaxPayloadInMB",), "six", "MaxPayloadInMB"),
        (("MaxPayloadInMB",), True, "MaxPayloadInMB"),
        (("MaxConcurrentTransforms",), -1, "MaxConcurrentTransforms"),
        (("MaxConcurrentTransforms",), 1.5, "MaxConcurrentTransforms"),
        (("TransformOutput", "AssembleWith"), "Newline", "AssembleWith"),
        (("TransformOutput", "Accept"), "text/csv", "Accept"),
        (("Environment", "DEEPAR_INFERENCE_CONFIG"), "{num_samples: 5", "DEEPAR_INFERENCE_CONFIG"),
        (("Environment", "DEEPAR_INFERENCE_CONFIG"), '{"num_samples": 0}', "num_samples"),
        (("Environment", "DEEPAR_INFERENCE_CONFIG"), '{"output_types": ["p50"]}', "output_types"),
        (("Environment", "DEEPAR_INFERENCE_CONFIG"), '{"quantiles": ["1.5"]}', "quantiles"),
        (("Environment", "DEEPAR_INFERENCE_CONFIG"), 42, "DEEPAR_INFERENCE_CONFIG"),
        (("Environment", "MODEL_SERVER_WORKERS"), "x", "MODEL_SERVER_WORKERS"),
        (("Environment", "MODEL_SERVER_WORKERS"), "0", "MODEL_SERVER_WORKERS"),
        (("DataProcessing", "JoinSource"), "Output", "JoinSource"),
        (("DataProcessing", "OutputFilter"), "item_id", "JSONPath"),
        (("TransformJobName",), "bad name!", "TransformJobName"),
        (("TransformInput",), "s3://b/in", "TransformInput"),
        (("Environment",), ["DEEPAR_INFERENCE_CONFIG"], "Environment"),
        # not strings: these ended as TypeErrors naming no key
        (("TransformInput", "DataSource", "S3DataSource", "S3Uri"), 5, "S3Uri"),
        (("TransformInput", "DataSource", "S3DataSource", "S3Uri"), ["s3://b/in"], "S3Uri"),
        (("TransformOutput", "S3OutputPath"), 5, "S3OutputPath"),
        (("TransformOutput", "S3OutputPath"), "", "S3OutputPath"),
    ],
)
def test_an_invalid_value_raises_naming_the_key(
    body: dict[str, Any], path: tuple[str, ...], value: Any, key: str
) -> None:
    with pytest.raises(ConfigError, match=key):
        TransformJob.create("m", body=_with(body, path, value), environ=NO_ENV)


@pytest.mark.parametrize(
    ("section", "key"),
    [("TransformInput", "DataSource"), ("TransformOutput", "S3OutputPath")],
)
def test_a_missing_required_key_raises_naming_it(
    body: dict[str, Any], section: str, key: str
) -> None:
    del body[section][key]
    with pytest.raises(ConfigError, match=key):
        TransformJob.create("m", body=body, environ=NO_ENV)


def test_a_body_that_is_not_an_object_raises() -> None:
    with pytest.raises(ConfigError, match="JSON object"):
        TransformJob.create("m", body=["TransformInput"], environ=NO_ENV)  # type: ignore[arg-type]  # on purpose


def test_max_concurrent_transforms_zero_means_unset(body: dict[str, Any]) -> None:
    del body["Environment"]["MODEL_SERVER_WORKERS"]
    assert TransformJob.create("m", body=body, environ=NO_ENV).workers == 4
    body["MaxConcurrentTransforms"] = 0
    assert TransformJob.create("m", body=body, environ=NO_ENV).workers is None


def test_flags_override_the_body(body: dict[str, Any]) -> None:
    job = TransformJob.create(
        "m",
        "/data/in",
        "/data/out",
        body=body,
        environ=NO_ENV,
        workers=1,
        max_payload_mb=2,
        assemble_with="None",
        batch_strategy="SingleRecord",
        on_error="record",
        name="override",
        inference='{"num_samples": 7, "output_types": ["samples"]}',
        forward_fields=["item_id"],
        seed=None,  # None means "not given": the default stays
    )
    assert (job.input, job.output) == ("/data/in", "/data/out")
    assert (job.workers, job.max_payload_mb, job.assemble_with) == (1, 2, "None")
    assert (job.batch_strategy, job.on_error, job.name, job.seed) == (
        "SingleRecord",
        "record",
        "override",
        0,
    )
    assert job.inference.num_samples == 7
    assert job.inference.output_types == ("samples",)
    assert job.join.forward_fields == ("item_id",)
    assert job.join.join_source == "Input"  # not overridden: still the body's


def test_deepar_inference_config_precedence_argument_body_environment() -> None:
    env = {"DEEPAR_INFERENCE_CONFIG": '{"num_samples": 3}'}
    body = {
        "TransformInput": {"DataSource": {"S3DataSource": {"S3Uri": "in"}}},
        "TransformOutput": {"S3OutputPath": "out"},
    }
    assert TransformJob.create("m", "in", "out", environ=NO_ENV).inference == InferenceConfig()
    assert TransformJob.create("m", "in", "out", environ=env).inference.num_samples == 3
    assert TransformJob.create("m", body=body, environ=env).inference.num_samples == 3
    in_body = _with(body, ("Environment",), {"DEEPAR_INFERENCE_CONFIG": '{"num_samples": 4}'})
    assert TransformJob.create("m", body=in_body, environ=env).inference.num_samples == 4
    argument = {"num_samples": 5}
    job = TransformJob.create("m", body=in_body, environ=env, inference=argument)
    assert job.inference.num_samples == 5


def test_a_bad_deepar_inference_config_environment_variable_raises_naming_it() -> None:
    env = {"DEEPAR_INFERENCE_CONFIG": '{"num_samples": -1}'}
    with pytest.raises(ConfigError, match=r"DEEPAR_INFERENCE_CONFIG \(environment variable\)"):
        TransformJob.create("m", "in", "out", environ=env)


def test_model_server_workers_environment_variable_is_the_default() -> None:
    env = {"MODEL_SERVER_WORKERS": "3"}
    job = TransformJob.create("m", "in", "out", environ=env)
    assert job.workers == 3
    assert job.resolved_workers(available_cpus=8, available_gpus=0) == 3
    assert TransformJob.create("m", "in", "out", environ=env, workers=1).workers == 1
    with pytest.raises(ConfigError, match="MODEL_SERVER_WORKERS"):
        TransformJob.create("m", "in", "out", environ={"MODEL_SERVER_WORKERS": "x"})


def test_resolved_workers_takes_workers_then_counts_devices(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The environment is read once, by TransformJob.create: a job built directly ignores it.
    monkeypatch.setenv("MODEL_SERVER_WORKERS", "5")
    job = TransformJob(model="m", input="in", output="out")
    assert job.resolved_workers(available_cpus=6, available_gpus=0) == 6
    assert job.resolved_workers(available_cpus=0, available_gpus=0) == 1
    gpu_job = TransformJob(model="m", input="in", output="out", gpus_per_worker=0.5)
    assert gpu_job.resolved_workers(available_cpus=16, available_gpus=2) == 4
    created = TransformJob.create("m", "in", "out")
    assert created.resolved_workers(available_cpus=6, available_gpus=0) == 5
    explicit = TransformJob(model="m", input="in", output="out", workers=2)
    assert explicit.resolved_workers(available_cpus=6, available_gpus=0) == 2


def test_input_and_output_are_required_without_a_body() -> None:
    with pytest.raises(ConfigError, match="input and output"):
        TransformJob.create("m", "in", environ=NO_ENV)


@pytest.mark.parametrize(
    ("field", "value", "key"),
    [
        ("on_error", "ignore", "on_error"),
        ("pipeline", "gpu", "pipeline"),
        ("workers", 0, "workers"),
        ("workers", 99999999999999999999, "workers must be in"),
        ("seed", 99999999999999999999999, "seed must be a 64-bit integer"),
        ("shard_mb", 0, "shard_mb"),
        ("gpus_per_worker", -1, "gpus_per_worker"),
        ("model", "", "model"),
    ],
)
def test_invalid_direct_fields_raise_naming_them(field: str, value: Any, key: str) -> None:
    kwargs: dict[str, Any] = {"model": "m", "input": "in", "output": "out", field: value}
    with pytest.raises(ConfigError, match=key):
        TransformJob(**kwargs)


# ---------------------------------------------------------------------------------------------
# Accept, response keys, precision (SPEC.md §8; issue "Speed on any CPU")


def _body(**environment: str) -> dict[str, Any]:
    return {
        "TransformInput": {"DataSource": {"S3DataSource": {"S3Uri": "in/"}}},
        "TransformOutput": {"S3OutputPath": "out/", "Accept": "text/csv"},
        "Environment": {
            "DEEPAR_INFERENCE_CONFIG": '{"classes": {"thresholds": [1]}}',
            **environment,
        },
    }


def test_response_keys_resolve_flag_over_job_over_environment() -> None:
    from batchcast.io.content import ResponseKeys

    env = {"SAGEMAKER_INFERENCE_OUTPUT": "mean", "SAGEMAKER_INFERENCE_INPUT": "mean"}
    job = TransformJob.create(
        "m", body=_body(SAGEMAKER_INFERENCE_OUTPUT="probability"), environ=env
    )
    assert job.accept == "text/csv"
    assert job.inference.output_keys == ("probability",)
    assert job.response_keys.input == ("mean",)  # the environment's, unchanged by the job
    flagged = TransformJob.create(
        "m", body=_body(), environ=env, response_keys=ResponseKeys(output="labels, Mean")
    )
    assert flagged.inference.output_keys == ("labels", "mean")
    assert flagged.describe()["response_keys"]["SAGEMAKER_INFERENCE_OUTPUT"] == "labels,mean"


def test_no_response_keys_leave_the_inference_configuration_as_it_is() -> None:
    job = TransformJob.create("m", "in/", "out/", environ={})
    assert job.inference == TransformJob(model="m", input="in/", output="out/").inference
    assert job.inference.keys is None


def test_accept_is_normalised_and_checked() -> None:
    assert (
        TransformJob(model="m", input="i", output="o", accept="text/csv; charset=utf-8").accept
        == "text/csv"
    )
    assert TransformJob(
        model="m", input="i", output="o", accept="application/x-jsonlines"
    ).accept == ("application/jsonlines")
    with pytest.raises(ConfigError, match="Accept 'application/xml'"):
        TransformJob(model="m", input="i", output="o", accept="application/xml")


def test_precision_is_checked() -> None:
    assert TransformJob(model="m", input="i", output="o", precision="bf16").precision == "bf16"
    with pytest.raises(ConfigError, match="precision must be one of"):
        TransformJob(model="m", input="i", output="o", precision="fp8")
