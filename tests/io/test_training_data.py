"""The training channel: SageMaker's auto / ignore / explicit feature resolution."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import orjson
import pytest

from batchcast.errors import ConfigError
from batchcast.forecast import DeepARConfig
from batchcast.io import load_training_data
from batchcast.io.training import load_training_channels


def _write(path: Path, records: list[Any]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    return str(path)


def _rec(target: list[float], **fields: Any) -> dict[str, Any]:
    return {"start": "2021-01-01 00:00:00", "target": target, **fields}


FULL = [
    _rec([1, 2, 3], cat=[0, 4], dynamic_feat=[[1, 2, 3]]),
    _rec([4, None], cat=[2, 1], dynamic_feat=[[5, 6]]),
]


def test_auto_uses_features_present_in_every_record(tmp_path: Path) -> None:
    uri = _write(tmp_path / "train.jsonl", FULL)
    data = load_training_data(
        [uri], prediction_length=2, cardinality="auto", num_dynamic_feat="auto"
    )
    assert data.cardinality == (3, 5)  # max value + 1 per feature
    assert data.num_dynamic_feat == 1
    assert data.batch.cat.tolist() == [[0, 4], [2, 1]]
    # In training a dynamic feature is as long as the target.
    assert data.batch.dynamic_feat[:, 0].tolist() == [1, 2, 3, 5, 6]
    np.testing.assert_array_equal(data.batch.target, np.array([1, 2, 3, 4, np.nan], np.float32))


def test_auto_without_features(tmp_path: Path) -> None:
    uri = _write(tmp_path / "train.jsonl", [_rec([1]), _rec([2, 3])])
    data = load_training_data(
        [uri], prediction_length=2, cardinality="auto", num_dynamic_feat="auto"
    )
    assert (data.cardinality, data.num_dynamic_feat) == ((), 0)
    assert data.batch.cat.shape == (2, 0)


def test_auto_with_a_feature_in_some_records_only(tmp_path: Path) -> None:
    uri = _write(tmp_path / "train.jsonl", [_rec([1], cat=[1]), _rec([2]), _rec([3], cat=[0])])
    with pytest.raises(ConfigError, match="'cat' must be in every record or in none") as info:
        load_training_data([uri], prediction_length=2, cardinality="auto", num_dynamic_feat="auto")
    assert f"{uri}:1 has it, {uri}:2 does not" in str(info.value)


def test_ignore_drops_fields_even_when_malformed(tmp_path: Path) -> None:
    records = [_rec([1, 2], cat="junk", dynamic_feat=[[None]]), _rec([3], cat=[1])]
    uri = _write(tmp_path / "train.jsonl", records)
    data = load_training_data(
        [uri], prediction_length=2, cardinality="ignore", num_dynamic_feat="ignore"
    )
    assert (data.cardinality, data.num_dynamic_feat) == ((), 0)
    assert data.batch.num_series == 2


def test_explicit_settings_are_validated(tmp_path: Path) -> None:
    uri = _write(tmp_path / "train.jsonl", FULL)
    data = load_training_data([uri], prediction_length=2, cardinality=(4, 6), num_dynamic_feat=1)
    assert (data.cardinality, data.num_dynamic_feat) == ((4, 6), 1)
    with pytest.raises(ConfigError, match="bad record") as info:
        load_training_data([uri], prediction_length=2, cardinality=(2, 6), num_dynamic_feat="1")
    message = str(info.value)
    assert f"{uri}:2: field 'cat'" in message
    assert "[0, 2)" in message
    with pytest.raises(ConfigError, match="num_dynamic_feat"):
        load_training_data([uri], prediction_length=2, cardinality="auto", num_dynamic_feat="x")


def test_bad_records_are_all_collected(tmp_path: Path) -> None:
    records: list[Any] = [_rec([1])] + [{"start": "2021-01-01"}] * 25
    uri = _write(tmp_path / "train.jsonl", records)
    with pytest.raises(ConfigError) as info:
        load_training_data([uri], prediction_length=2, cardinality="auto", num_dynamic_feat="auto")
    message = str(info.value)
    assert "25 bad record(s)" in message
    assert f"{uri}:2: field 'target'" in message
    assert f"{uri}:21:" in message
    assert f"{uri}:22:" not in message
    assert "and 5 more" in message


def test_folders_gzip_and_s3(tmp_path: Path, s3_bucket: str) -> None:
    _write(tmp_path / "train" / "a.jsonl", [_rec([1])])
    (tmp_path / "train" / "b.jsonl.gz").write_bytes(
        gzip.compress(orjson.dumps(_rec([2, 2])) + b"\n")
    )
    boto3.session.Session().client("s3").put_object(
        Bucket=s3_bucket, Key="train/c.jsonl", Body=orjson.dumps(_rec([3, 3, 3]))
    )
    data = load_training_data(
        [str(tmp_path / "train"), f"s3://{s3_bucket}/train/"],
        prediction_length=1,
        cardinality="auto",
        num_dynamic_feat="auto",
    )
    assert data.batch.lengths.tolist() == [1, 2, 3]


def test_no_records(tmp_path: Path) -> None:
    uri = tmp_path / "empty.jsonl"
    uri.write_bytes(b"")
    with pytest.raises(ConfigError, match="holds no records"):
        load_training_data(
            [str(uri)], prediction_length=2, cardinality="auto", num_dynamic_feat="auto"
        )
    with pytest.raises(ConfigError, match="non-empty list"):
        load_training_data([], prediction_length=2, cardinality="auto", num_dynamic_feat="auto")


def test_errors_name_the_channel_they_are_in(tmp_path: Path) -> None:
    """A bad or empty test channel is the test data's fault; the message must not send the
    user looking in the training files."""
    train = _write(tmp_path / "train.jsonl", [_rec([1.0] * 12)])
    bad = _write(tmp_path / "bad.jsonl", [_rec([1.0, 2.0, "x"])])
    config = DeepARConfig(time_freq="D", context_length=3, prediction_length=2, epochs=1)
    with pytest.raises(ConfigError, match=r"^the test data has 1 bad record") as caught:
        load_training_channels(train, config=config, test=bad)
    assert "bad.jsonl:1: field 'target'" in str(caught.value)
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    with pytest.raises(ConfigError, match=r"^the test data .* holds no records"):
        load_training_channels(train, config=config, test=str(empty))
    with pytest.raises(ConfigError, match=r"^the training data has 1 bad record"):
        load_training_channels(bad, config=config)
