"""Job limits checked before any record is read (hardening issue, runner item 2):
``num_samples`` above SageMaker DeepAR's maximum (1000) is a ``ConfigError`` naming the key
and the limit, from every source of the inference configuration, and no output appears.
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from batchcast.api import transform
from batchcast.cli import main
from batchcast.errors import ConfigError
from batchcast.runner.job import MAX_NUM_SAMPLES, TransformJob

LIMIT = r"num_samples must be <= 1000 \(SageMaker DeepAR's maximum\), got 1001"


def _inputs(tmp_path: Path) -> Path:
    path = tmp_path / "in.jsonl"
    path.write_bytes(orjson.dumps({"start": "2020-01-01 00:00:00", "target": [1.0, 2.0]}) + b"\n")
    return path


def test_the_limit_is_sagemakers() -> None:
    assert MAX_NUM_SAMPLES == 1000
    job = TransformJob.create("m", "in", "out", inference={"num_samples": 1000})
    assert job.inference.num_samples == 1000  # the maximum itself is allowed


def test_an_argument_above_the_limit_fails_before_anything_is_read(tmp_path: Path) -> None:
    # The model does not exist: the job must fail on num_samples before it looks at it.
    with pytest.raises(ConfigError, match=LIMIT) as caught:
        transform(
            str(tmp_path / "no-model"),
            str(_inputs(tmp_path)),
            str(tmp_path / "out"),
            inference={"num_samples": 1001},
        )
    assert caught.value.key == "num_samples"
    assert not (tmp_path / "out").exists()


def test_the_environment_and_the_job_file_are_held_to_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DEEPAR_INFERENCE_CONFIG", '{"num_samples": 1001}')
    with pytest.raises(ConfigError, match=LIMIT):
        TransformJob.create("m", "in", "out")
    monkeypatch.delenv("DEEPAR_INFERENCE_CONFIG")
    body = {
        "Environment": {"DEEPAR_INFERENCE_CONFIG": '{"num_samples": "1001"}'},
        "TransformInput": {"DataSource": {"S3DataSource": {"S3Uri": "in"}}},
        "TransformOutput": {"S3OutputPath": "out"},
    }
    with pytest.raises(ConfigError, match=LIMIT):
        TransformJob.create("m", body=body)


def test_the_cli_says_it_in_one_line_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["transform", "--model", str(tmp_path / "no-model"), "--input", str(_inputs(tmp_path))]
    status = main([*argv, "--output", str(tmp_path / "out"), "--inference-config",
                   '{"num_samples": 1001}'])  # fmt: skip
    assert status == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("ConfigError: ")
    assert "num_samples must be <= 1000" in err[0]
    assert not (tmp_path / "out").exists()
