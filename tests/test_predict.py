"""The online form (SPEC.md §3): ``{"instances", "configuration"}`` -> ``{"predictions"}``.

Through ``batchcast.api.predict`` in process and through ``python -m batchcast predict`` as
a real subprocess (a file argument and stdin). The models are tiny random networks saved
once per module: the format, not the forecast quality, is under test.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import torch

from batchcast.api import predict
from batchcast.errors import ConfigError, RecordError
from batchcast.forecast import DeepAR, InferenceConfig, ModelSpec
from batchcast.io import Join
from batchcast.models import save_model
from batchcast.runner import ShardProcessor, WorkerOptions

P = 5
# SPEC.md §2's default quantile keys, by hand.
DEFAULT_KEYS = ["0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7", "0.8", "0.9"]


def _save(folder: Path, likelihood: str) -> str:
    spec = ModelSpec(
        freq="H",
        context_length=6,
        prediction_length=P,
        lags=(1, 2, 3, 24),
        num_time_features=4,
        cardinality=(3,),
        embedding_dims=(2,),
        num_dynamic_feat=1,
        num_cells=8,
        num_layers=2,
        likelihood=likelihood,
        default_scale=5.0,
    )
    torch.manual_seed(0)
    save_model(DeepAR(spec).eval(), str(folder))
    return str(folder)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return _save(tmp_path_factory.mktemp("predict") / "student-t", "student-T")


@pytest.fixture(scope="module")
def point_model_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A deterministic-L1 model: no randomness, so each forecast depends on its instance only."""
    return _save(tmp_path_factory.mktemp("predict") / "point", "deterministic-L1")


def _instance(i: int, length: int = 30) -> dict[str, Any]:
    t = np.arange(length + P)
    level = 10.0 * (i + 1)
    return {
        "start": f"2021-0{1 + i % 9}-0{1 + i % 9} 0{i % 10}:00:00",
        "target": [round(float(level + 3 * np.sin(x / 4)), 3) for x in t[:length]],
        "cat": [i % 3],
        "dynamic_feat": [[round(float(np.cos(x)), 4) for x in t]],
        "item_id": f"item-{i}",
    }


INSTANCES = [_instance(0), _instance(1, length=2), _instance(2, length=0), _instance(3)]


def _arrays(prediction: dict[str, Any]) -> Iterator[list[float]]:
    for value in prediction.values():
        if isinstance(value, dict):
            yield from value.values()
        elif value and isinstance(value[0], list):
            yield from value
        else:
            yield value


# ---------------------------------------------------------------------------------------------
# The response


def test_default_configuration(model_dir: str) -> None:
    response = predict(model_dir, {"instances": INSTANCES})
    assert list(response) == ["predictions"]
    predictions = response["predictions"]
    assert len(predictions) == len(INSTANCES)
    for prediction in predictions:
        assert sorted(prediction) == ["mean", "quantiles"]
        assert list(prediction["quantiles"]) == DEFAULT_KEYS
        arrays = list(_arrays(prediction))
        assert len(arrays) == 1 + 9
        assert all(len(a) == P for a in arrays)
        assert all(isinstance(x, float) and np.isfinite(x) for a in arrays for x in a)
        q = np.array([prediction["quantiles"][k] for k in DEFAULT_KEYS])
        assert (np.diff(q, axis=0) >= 0).all()  # quantiles are ordered


def test_empty_configuration_is_the_default(model_dir: str) -> None:
    plain = predict(model_dir, {"instances": INSTANCES})
    assert predict(model_dir, {"instances": INSTANCES, "configuration": {}}) == plain
    assert predict(model_dir, {"instances": INSTANCES, "configuration": None}) == plain
    spelled_out = {
        "num_samples": 100,
        "output_types": ["mean", "quantiles"],
        "quantiles": DEFAULT_KEYS,
    }
    assert predict(model_dir, {"instances": INSTANCES, "configuration": spelled_out}) == plain


def test_predictions_follow_instance_order(point_model_dir: str) -> None:
    # The point model draws nothing at random, so instance i's forecast is a function of
    # instance i alone: reordering the request must reorder the predictions.
    alone = [predict(point_model_dir, {"instances": [x]})["predictions"][0] for x in INSTANCES]
    together = predict(point_model_dir, {"instances": INSTANCES})["predictions"]
    reverse = predict(point_model_dir, {"instances": INSTANCES[::-1]})["predictions"]
    for i in range(len(INSTANCES)):
        np.testing.assert_allclose(together[i]["mean"], alone[i]["mean"], rtol=1e-6)
        np.testing.assert_allclose(reverse[-1 - i]["mean"], alone[i]["mean"], rtol=1e-6)
    # and the forecasts do differ between instances (the check above has teeth)
    assert len({tuple(p["mean"]) for p in alone}) == len(INSTANCES)


def test_samples_output_and_num_samples(model_dir: str) -> None:
    configuration = {"num_samples": 7, "output_types": ["samples"]}
    response = predict(model_dir, {"instances": INSTANCES, "configuration": configuration})
    for prediction in response["predictions"]:
        assert list(prediction) == ["samples"]
        assert len(prediction["samples"]) == 7
        assert all(len(path) == P for path in prediction["samples"])


def test_quantiles_and_mean_come_from_the_samples(model_dir: str) -> None:
    configuration = {"num_samples": 100, "output_types": ["mean", "quantiles", "samples"]}
    response = predict(model_dir, {"instances": INSTANCES, "configuration": configuration})
    for prediction in response["predictions"]:
        samples = np.array(prediction["samples"], dtype=np.float32)  # (S, P)
        ordered = np.sort(samples, axis=0)
        for key, values in prediction["quantiles"].items():
            index = int(np.round(99 * float(key)))  # A.12: no interpolation, half to even
            np.testing.assert_array_equal(np.float32(values), ordered[index])
        np.testing.assert_allclose(prediction["mean"], samples.mean(axis=0), rtol=1e-5, atol=1e-5)


def test_quantile_keys_are_the_configured_strings(model_dir: str) -> None:
    configuration = {"quantiles": ["0.05", "0.50", 0.25, "0.9"]}
    response = predict(model_dir, {"instances": INSTANCES[:1], "configuration": configuration})
    [prediction] = response["predictions"]
    assert list(prediction["quantiles"]) == ["0.05", "0.50", "0.25", "0.9"]
    q = prediction["quantiles"]
    assert np.all(np.array(q["0.05"]) <= np.array(q["0.25"]))
    assert np.all(np.array(q["0.25"]) <= np.array(q["0.50"]))


def test_job_configuration_is_overridden_key_by_key(model_dir: str) -> None:
    job = InferenceConfig(num_samples=4, output_types=("samples",))
    request = {"instances": INSTANCES[:2], "configuration": {"output_types": ["samples", "mean"]}}
    for prediction in predict(model_dir, request, inference=job)["predictions"]:
        assert sorted(prediction) == ["mean", "samples"]
        assert len(prediction["samples"]) == 4  # num_samples kept from the job


def test_empty_request(model_dir: str) -> None:
    assert predict(model_dir, {"instances": []}) == {"predictions": []}


def test_same_seed_same_bytes(model_dir: str) -> None:
    request = {"instances": INSTANCES, "configuration": {"output_types": ["samples"]}}
    first = orjson.dumps(predict(model_dir, request, seed=4))
    assert orjson.dumps(predict(model_dir, request, seed=4)) == first
    assert orjson.dumps(predict(model_dir, request, seed=5)) != first


def test_loaded_processor_gives_the_same_answer(model_dir: str) -> None:
    processor = ShardProcessor(
        model_dir,
        WorkerOptions(inference=InferenceConfig(), join=Join(), max_payload_mb=6.0, seed=0),
    )
    request = {"instances": INSTANCES}
    assert predict(processor, request, seed=2) == predict(model_dir, request, seed=2)
    assert predict(processor, request, seed=2) == predict(processor, request, seed=2)


def test_the_workers_timed_tile_changes_no_byte(model_dir: str) -> None:
    """A processor times its tile at start (speed only): forcing the rule's tile, or no
    tiling at all, gives the same answer byte for byte."""
    from batchcast.forecast.tuning import rule_tile_rows

    processor = ShardProcessor(
        model_dir,
        WorkerOptions(
            inference=InferenceConfig(num_samples=50, output_types=("samples", "mean")),
            join=Join(),
            max_payload_mb=6.0,
            seed=0,
        ),
    )
    lines = [orjson.dumps(i) for i in INSTANCES]
    timed = processor.predict_lines(lines, uri="request", seed=3)
    spec = processor.spec
    for forced in (rule_tile_rows(spec.num_cells, spec.num_layers), 48, 1 << 20):
        processor.tile_rows = forced
        assert processor.predict_lines(lines, uri="request", seed=3) == timed, forced


# ---------------------------------------------------------------------------------------------
# Errors


def _with(i: int, **changes: Any) -> dict[str, Any]:
    instance = _instance(i)
    for key, value in changes.items():
        if value is None:
            instance.pop(key)
        else:
            instance[key] = value
    return instance


BAD_INSTANCES = [
    ("target", _with(1, target="x")),
    ("target", _with(1, target=[1.0, True])),
    ("start", _with(1, start=None)),
    ("start", _with(1, start="2021-01-01T00:00:00")),
    ("start", _with(1, start="2021-01-01 00:00:00+01:00")),
    ("cat", _with(1, cat=[3])),
    ("cat", _with(1, cat=None)),
    ("dynamic_feat", _with(1, dynamic_feat=[[0.0] * 30])),  # no future values
    ("dynamic_feat", _with(1, dynamic_feat=[[0.0] * 34 + [None]])),
    ("$", [1, 2, 3]),
]


@pytest.mark.parametrize(("field", "bad"), BAD_INSTANCES)
def test_bad_instance_names_instance_and_field(model_dir: str, field: str, bad: Any) -> None:
    request = {"instances": [INSTANCES[0], bad, INSTANCES[3]]}
    with pytest.raises(RecordError) as info:
        predict(model_dir, request)
    error = info.value
    assert (error.uri, error.line, error.field) == ("request", 2, field)
    assert str(error).startswith(f"request:2: field {field!r}: ")


def test_several_bad_instances_are_counted(model_dir: str) -> None:
    request = {"instances": [INSTANCES[0], _with(1, target="x"), _with(2, cat=[9])]}
    with pytest.raises(RecordError, match=r"request:2: .*and 1 more bad instance") as info:
        predict(model_dir, request)
    assert info.value.line == 2


@pytest.mark.parametrize(
    ("configuration", "key"),
    [
        ({"num_samples": 0}, "num_samples"),
        ({"num_samples": "many"}, "num_samples"),
        ({"output_types": []}, "output_types"),
        ({"output_types": ["median"]}, "output_types"),
        ({"output_types": ["mean", "mean"]}, "output_types"),
        ({"quantiles": ["1.5"]}, "quantiles"),
        ({"quantiles": "0.5"}, "quantiles"),
        ({"num_sample": 10}, "num_sample"),
        ([1], "configuration"),
        # empty or false, but not objects: they used to pass as "no configuration"
        ([], "configuration must be a JSON object"),
        (0, "configuration must be a JSON object"),
        (False, "configuration must be a JSON object"),
        ("", "configuration must be a JSON object"),
    ],
)
def test_bad_configuration_names_the_key(model_dir: str, configuration: Any, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        predict(model_dir, {"instances": INSTANCES, "configuration": configuration})


@pytest.mark.parametrize(
    ("request_body", "message"),
    [
        ([INSTANCES[0]], "JSON object"),
        ({"configuration": {}}, "instances"),
        ({"instances": INSTANCES[0]}, "instances"),
        ({"instances": [], "extra": 1}, "extra"),
    ],
)
def test_bad_request(model_dir: str, request_body: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        predict(model_dir, request_body)


# ---------------------------------------------------------------------------------------------
# The CLI (real subprocesses, started together: each spends most of its time importing)

GOOD_REQUEST = {"instances": INSTANCES, "configuration": {"quantiles": ["0.05", "0.50"]}}
# DEEPAR_INFERENCE_CONFIG as a container would have it: the base that a request overrides.
ENV_CONFIG = {"num_samples": 9, "output_types": ["samples", "mean"]}
CLI_CASES: dict[str, tuple[list[str], Any, bool]] = {
    # name: (extra arguments, request, through stdin?)
    "file": (["--seed", "3"], GOOD_REQUEST, False),
    "stdin": (["--seed", "3", "-"], GOOD_REQUEST, True),
    "bad_instance": ([], {"instances": [INSTANCES[0], _with(1, target="x")]}, False),
    "bad_configuration": ([], {"instances": INSTANCES, "configuration": {"num_samples": 0}}, True),
    "environment": ([], {"instances": INSTANCES[:2], "configuration": {"num_samples": 4}}, True),
}
CLI_ENV = {"environment": {"DEEPAR_INFERENCE_CONFIG": orjson.dumps(ENV_CONFIG).decode()}}


@pytest.fixture(scope="module")
def cli(
    model_dir: str, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, subprocess.CompletedProcess[bytes]]:
    folder = tmp_path_factory.mktemp("cli")
    running: dict[str, tuple[subprocess.Popen[bytes], bytes]] = {}
    for name, (extra, request, stdin) in CLI_CASES.items():
        body = orjson.dumps(request)
        command = [sys.executable, "-m", "batchcast", "predict", "--model", model_dir, *extra]
        if not stdin:
            path = folder / f"{name}.json"
            path.write_bytes(body)
            command.append(str(path))
        env = {k: v for k, v in os.environ.items() if k != "DEEPAR_INFERENCE_CONFIG"}
        env.update(CLI_ENV.get(name, {}))
        process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
        )
        running[name] = (process, body if stdin else b"")
    done = {}
    for name, (process, body) in running.items():
        stdout, stderr = process.communicate(body, timeout=120)
        done[name] = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    return done


@pytest.mark.parametrize("name", ["file", "stdin"])
def test_cli_predict(
    cli: dict[str, subprocess.CompletedProcess[bytes]], model_dir: str, name: str
) -> None:
    run = cli[name]
    assert run.returncode == 0, run.stderr.decode()
    assert run.stdout.endswith(b"\n")
    response = orjson.loads(run.stdout)
    assert response == predict(model_dir, GOOD_REQUEST, seed=3)
    assert [list(p["quantiles"]) for p in response["predictions"]] == [["0.05", "0.50"]] * 4


def test_cli_bad_instance(cli: dict[str, subprocess.CompletedProcess[bytes]]) -> None:
    run = cli["bad_instance"]
    assert run.returncode == 1
    assert run.stdout == b""
    assert run.stderr.decode().startswith("RecordError: request:2: field 'target': ")


def test_cli_bad_configuration(cli: dict[str, subprocess.CompletedProcess[bytes]]) -> None:
    run = cli["bad_configuration"]
    assert run.returncode == 1
    assert run.stdout == b""
    assert run.stderr.decode().startswith("ConfigError: ")
    assert "num_samples" in run.stderr.decode()


def test_configuration_is_checked_before_the_instances(model_dir: str) -> None:
    request = {"instances": [_with(1, target="x")], "configuration": {"num_samples": 0}}
    with pytest.raises(ConfigError, match="num_samples"):
        predict(model_dir, request)


def test_inference_argument_is_the_base_for_a_loaded_processor_too(model_dir: str) -> None:
    processor = ShardProcessor(
        model_dir, WorkerOptions(inference=InferenceConfig(), join=Join(), max_payload_mb=6, seed=0)
    )
    base = InferenceConfig(output_types=("quantiles",), quantiles=("0.3",))
    request = {"instances": [_instance(0)], "configuration": {"num_samples": 7}}
    for model in (model_dir, processor):
        [prediction] = predict(model, request, inference=base)["predictions"]
        assert list(prediction) == ["quantiles"]
        assert list(prediction["quantiles"]) == ["0.3"]


# ---------------------------------------------------------------------------------------------
# DEEPAR_INFERENCE_CONFIG: the container's base configuration, honoured as the server does


def test_cli_honours_the_environment(cli: dict[str, subprocess.CompletedProcess[bytes]]) -> None:
    run = cli["environment"]
    assert run.returncode == 0, run.stderr.decode()
    for prediction in orjson.loads(run.stdout)["predictions"]:
        assert list(prediction) == ["samples", "mean"]  # the environment's output_types
        assert len(prediction["samples"]) == 4  # the request's num_samples over it


def test_environment_is_the_base(model_dir: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEEPAR_INFERENCE_CONFIG", orjson.dumps(ENV_CONFIG).decode())
    request = {"instances": INSTANCES[:2], "configuration": {"num_samples": 4}}
    for prediction in predict(model_dir, request)["predictions"]:
        assert list(prediction) == ["samples", "mean"]
        assert len(prediction["samples"]) == 4
    # an explicit base wins over the environment
    explicit = InferenceConfig(output_types=("mean",))
    for prediction in predict(model_dir, request, inference=explicit)["predictions"]:
        assert list(prediction) == ["mean"]


def test_a_request_is_held_to_the_supported_keys(
    model_dir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ``SAGEMAKER_INFERENCE_SUPPORTED`` set and ``..._OUTPUT`` not, a request's
    ``output_types`` choose the keys: they must stay within the supported ones (a request for
    the raw paths of a deployment that allows only summaries was answered with them)."""
    monkeypatch.setenv("SAGEMAKER_INFERENCE_SUPPORTED", "mean,quantiles")
    asking = {"instances": INSTANCES[:1], "configuration": {"output_types": ["samples"]}}
    with pytest.raises(ConfigError, match=r"Requested inference output keys \[samples\]"):
        predict(model_dir, asking)
    allowed = {"instances": INSTANCES[:1], "configuration": {"output_types": ["mean"]}}
    assert list(predict(model_dir, allowed)["predictions"][0]) == ["mean"]


def test_bad_environment_names_the_variable(
    model_dir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DEEPAR_INFERENCE_CONFIG", '{"num_samples": -1}')
    with pytest.raises(ConfigError, match=r"DEEPAR_INFERENCE_CONFIG .*num_samples"):
        predict(model_dir, {"instances": INSTANCES[:1]})


def test_the_seed_rule_follows_the_content(model_dir: str) -> None:
    """A call's seed comes from the seed and the request's records: the same records give the
    same draws in any configuration, other records other draws (no shared noise)."""
    samples = {"output_types": ["samples"], "num_samples": 5}
    first = predict(model_dir, {"instances": INSTANCES[:1], "configuration": samples})
    both = {"output_types": ["samples", "mean"], "num_samples": 5}
    again = predict(model_dir, {"instances": INSTANCES[:1], "configuration": both})
    assert again["predictions"][0]["samples"] == first["predictions"][0]["samples"]
    # the same series under another item_id is another record: its paths are drawn afresh
    other = predict(model_dir, {"instances": [_with(0, item_id="other")], "configuration": samples})
    assert other["predictions"][0]["samples"] != first["predictions"][0]["samples"]


# ---------------------------------------------------------------------------------------------
# Response keys (SPEC.md §8) from the deployment's environment


CLASSES = {"aggregate": "sum", "steps": [2, 4], "thresholds": [60.0, 80.0]}


def _class_of(paths: np.ndarray, thresholds: list[float]) -> np.ndarray:
    """Per path, the class of its aggregate over steps 2..4, recomputed from the samples."""
    aggregate = paths[:, 1:4].astype(np.float64).sum(axis=1)
    return (aggregate[:, None] >= np.array(thresholds)[None, :]).sum(axis=1)


def test_probabilities_are_the_class_frequencies_of_the_same_runs_samples(
    model_dir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "DEEPAR_INFERENCE_CONFIG", orjson.dumps({"num_samples": 50, "classes": CLASSES}).decode()
    )
    monkeypatch.setenv("SAGEMAKER_INFERENCE_OUTPUT", " Samples, predicted_label ,PROBABILITIES")
    predictions = predict(model_dir, {"instances": INSTANCES[:3]})["predictions"]
    for prediction in predictions:
        assert list(prediction) == ["samples", "predicted_label", "probabilities"]
        classes = _class_of(np.array(prediction["samples"]), CLASSES["thresholds"])
        expected = np.bincount(classes, minlength=3) / 50
        assert prediction["probabilities"] == pytest.approx(expected.tolist(), abs=1e-6)
        # ties go to the lower class; the default labels are "0", "1", "2"
        assert prediction["predicted_label"] == str(int(np.argmax(expected)))


def test_unset_response_keys_leave_the_output_byte_identical(
    model_dir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    request = {"instances": INSTANCES[:2]}
    before = predict(model_dir, request)
    monkeypatch.setenv("SAGEMAKER_INFERENCE_SUPPORTED", "mean,quantiles,samples")
    monkeypatch.setenv("SAGEMAKER_INFERENCE_INPUT", "mean")
    assert orjson.dumps(predict(model_dir, request)) == orjson.dumps(before)


def test_an_unsupported_key_gets_the_sdks_error(
    model_dir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SAGEMAKER_INFERENCE_OUTPUT", "mean,probability")
    monkeypatch.setenv("SAGEMAKER_INFERENCE_SUPPORTED", "mean,quantiles")
    with pytest.raises(
        ConfigError,
        match=r"Requested inference output keys \[probability\] are unsupported\. "
        r"The supported inference keys are \[mean, quantiles\]",
    ):
        predict(model_dir, {"instances": INSTANCES[:1]})


def test_a_classification_key_without_classes_names_both(
    model_dir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SAGEMAKER_INFERENCE_OUTPUT", "probability")
    with pytest.raises(ConfigError, match=r"\['probability'\].*'classes'"):
        predict(model_dir, {"instances": INSTANCES[:1]})


def test_per_record_thresholds_through_predict(
    model_dir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    classes = {"aggregate": "max", "thresholds_field": "stock", "labels": ["no", "yes"]}
    monkeypatch.setenv(
        "DEEPAR_INFERENCE_CONFIG", orjson.dumps({"num_samples": 40, "classes": classes}).decode()
    )
    monkeypatch.setenv("SAGEMAKER_INFERENCE_OUTPUT", "samples,probability,predicted_label")
    instances = [{**INSTANCES[i], "stock": [10.0 * (i + 2)]} for i in range(2)]
    for i, prediction in enumerate(predict(model_dir, {"instances": instances})["predictions"]):
        paths = np.array(prediction["samples"])
        reached = float((paths.max(axis=1) >= 10.0 * (i + 2)).mean())
        assert prediction["probability"] == pytest.approx(reached, abs=1e-6)
        assert prediction["predicted_label"] == ("yes" if reached > 0.5 else "no")
    missing = [dict(INSTANCES[0])]
    with pytest.raises(RecordError, match="stock"):
        predict(model_dir, {"instances": missing})


def test_cli_accept_csv_gives_the_json_answers_values(model_dir: str, tmp_path: Path) -> None:
    import csv
    import io

    request = tmp_path / "request.json"
    request.write_bytes(orjson.dumps({"instances": INSTANCES[:3]}))
    runs = {
        accept: subprocess.run(
            [
                sys.executable,
                "-m",
                "batchcast",
                "predict",
                "--model",
                model_dir,
                str(request),
                "--accept",
                accept,
            ],
            capture_output=True,
            timeout=300,
            check=False,
        )
        for accept in ("application/json", "text/csv")
    }
    assert all(r.returncode == 0 for r in runs.values()), runs["text/csv"].stderr
    predictions = orjson.loads(runs["application/json"].stdout)["predictions"]
    rows = list(csv.reader(io.StringIO(runs["text/csv"].stdout.decode())))
    assert len(rows) == len(predictions) == 3
    for row, prediction in zip(rows, predictions, strict=True):
        quantiles = list(prediction["quantiles"].values())
        assert [orjson.loads(c) for c in row[: len(quantiles)]] == quantiles
        assert orjson.loads(row[-1]) == prediction["mean"]
