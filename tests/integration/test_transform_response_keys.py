"""Response keys, event probabilities and CSV through a real transform (SPEC.md §8): flags,
the job file's Environment and TransformOutput.Accept, on a real local Ray."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from transform_harness import PREDICTION_LENGTH, dumps, inference_records, write_lines

from batchcast.api import transform
from batchcast.errors import ConfigError

pytestmark = pytest.mark.usefixtures("ray_local")

SHARD_MB = 0.002
CLASSES = {"aggregate": "sum", "thresholds_field": "stock", "labels": ["short", "covered"]}
INFERENCE = {"num_samples": 40, "classes": CLASSES}


def _records(n: int) -> list[dict[str, Any]]:
    records = inference_records(n, seed=81)
    for i, r in enumerate(records):
        level = float(np.mean([x for x in r["target"] if isinstance(x, (int, float))] or [1.0]))
        r["stock"] = round(level * PREDICTION_LENGTH * (0.6 + 0.1 * (i % 8)), 2)
    return records


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    lines = dumps(_records(30))
    lines[7] = b'{"start": "2021-01-01 00:00:00", "target": [1, 2, 3], "item_id": "no-stock"}'
    return write_lines(tmp_path_factory.mktemp("keys") / "in" / "part.jsonl", lines)


def _lines(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(x) for x in path.read_bytes().splitlines()]


def _job(source: Path, output: Path, accept: str, keys: str) -> dict[str, Any]:
    return {
        "TransformInput": {"DataSource": {"S3DataSource": {"S3Uri": str(source)}}},
        "TransformOutput": {"S3OutputPath": str(output), "Accept": accept},
        "Environment": {
            "DEEPAR_INFERENCE_CONFIG": orjson.dumps(INFERENCE).decode(),
            "SAGEMAKER_INFERENCE_OUTPUT": keys,
        },
    }


def test_probabilities_match_the_samples_of_the_same_run(
    tiny_model: str, source: Path, tmp_path: Path
) -> None:
    output = tmp_path / "out"
    body = _job(source, output, "application/jsonlines", "samples, probability, predicted_label")
    summary = transform(
        tiny_model, job=body, on_error="record", forward_fields=["item_id"], shard_mb=SHARD_MB
    )
    assert summary.ok, summary.failure_reason
    assert summary.job["response_keys"] == {
        "SAGEMAKER_INFERENCE_OUTPUT": "samples,probability,predicted_label"
    }
    records = _records(30)
    lines = _lines(output / "part.jsonl.out")
    assert len(lines) == 30
    for i, (line, record) in enumerate(zip(lines, records, strict=True)):
        if i == 7:  # no stock field: a record error naming it, forwarded fields kept
            assert line["item_id"] == "no-stock"
            assert line["error"]["field"] == "stock"
            assert line["error"]["line"] == 8
            continue
        assert list(line) == ["item_id", "samples", "probability", "predicted_label"]
        reached = np.array(line["samples"], dtype=np.float64).sum(axis=1) >= record["stock"]
        assert line["probability"] == pytest.approx(float(reached.mean()), abs=1e-6)
        label = "covered" if reached.mean() > 0.5 else "short"
        assert line["predicted_label"] == label


def test_csv_output_parses_back_to_the_json_output(
    tiny_model: str, source: Path, tmp_path: Path
) -> None:
    keys = "predicted_label,probabilities,mean"
    as_json = transform(
        tiny_model, job=_job(source, tmp_path / "json", "application/json", keys),
        on_error="record", forward_fields=["item_id"], shard_mb=SHARD_MB,
    )  # fmt: skip
    as_csv = transform(
        tiny_model, job=_job(source, tmp_path / "csv", "text/csv", keys),
        on_error="record", forward_fields=["item_id"], shard_mb=SHARD_MB,
    )  # fmt: skip
    assert as_json.ok
    assert as_csv.ok
    records = _lines(tmp_path / "json" / "part.jsonl.out")
    rows = list(csv.reader(io.StringIO((tmp_path / "csv" / "part.jsonl.out").read_text())))
    assert len(rows) == len(records) == 30
    for row, record in zip(rows, records, strict=True):
        assert row[0] == record["item_id"]
        if "error" in record:
            assert orjson.loads(row[1]) == {"error": record["error"]}
            continue
        assert row[1] == record["predicted_label"]
        assert orjson.loads(row[2]) == record["probabilities"]
        assert orjson.loads(row[3]) == record["mean"]


def test_unset_keys_leave_the_output_unchanged(
    tiny_model: str, source: Path, tmp_path: Path
) -> None:
    plain = transform(tiny_model, str(source), str(tmp_path / "a"), on_error="record",
                      shard_mb=SHARD_MB)  # fmt: skip
    with_supported = transform(
        tiny_model, str(source), str(tmp_path / "b"), on_error="record", shard_mb=SHARD_MB,
        job={"TransformInput": {"DataSource": {"S3DataSource": {"S3Uri": str(source)}}},
             "TransformOutput": {"S3OutputPath": str(tmp_path / "b")},
             "Environment": {"SAGEMAKER_INFERENCE_SUPPORTED": "mean,quantiles"}},
    )  # fmt: skip
    assert plain.ok
    assert with_supported.ok
    a = (tmp_path / "a" / "part.jsonl.out").read_bytes()
    assert (tmp_path / "b" / "part.jsonl.out").read_bytes() == a


def test_an_unsupported_key_fails_before_any_record_is_read(
    tiny_model: str, source: Path, tmp_path: Path
) -> None:
    body = _job(source, tmp_path / "out", "application/jsonlines", "samples")
    body["Environment"]["SAGEMAKER_INFERENCE_SUPPORTED"] = "mean,probability"
    with pytest.raises(ConfigError, match=r"Requested inference output keys \[samples\]"):
        transform(tiny_model, job=body)
    assert not (tmp_path / "out").exists()


def test_csv_with_an_input_join_is_refused(tiny_model: str, source: Path, tmp_path: Path) -> None:
    body = _job(source, tmp_path / "out", "text/csv", "mean")
    body["DataProcessing"] = {"JoinSource": "Input"}
    with pytest.raises(ConfigError, match="JoinSource 'Input'"):
        transform(tiny_model, job=body)


def test_cli_flags_win_over_the_environment(tiny_model: str, source: Path, tmp_path: Path) -> None:
    env = {**os.environ, "RAY_ADDRESS": "local",
           "DEEPAR_INFERENCE_CONFIG": orjson.dumps(INFERENCE).decode(),
           "SAGEMAKER_INFERENCE_OUTPUT": "samples"}  # fmt: skip
    output = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "batchcast", "transform", "--model", tiny_model,
         "--input", str(source), "--output", str(output), "--on-error", "record",
         "--output-keys", "Predicted_Label , PROBABILITY", "--accept", "text/csv"],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = list(csv.reader(io.StringIO((output / "part.jsonl.out").read_text())))
    good = [r for i, r in enumerate(rows) if i != 7]
    assert {r[0] for r in good} <= {"short", "covered"}
    assert all(0.0 <= float(r[1]) <= 1.0 for r in good)
    assert all(len(r) == 2 for r in good)
