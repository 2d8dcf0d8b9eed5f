"""Input faults and edge decisions (issue 9.6, 9.8, 9.9): byte order marks, a file's last empty
line, duplicate keys, numbers beyond float64 or beyond the scale bound, corrupt gzip files,
and a job's own output folder inside its input folder.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import orjson
import pytest

from batchcast.errors import ShardError
from batchcast.io import (
    CorruptInputError,
    RecordContract,
    Shard,
    decode_records,
    list_inputs,
    plan_shards,
    read_shard_lines,
)
from batchcast.io.validation import MAX_ABS_TARGET

URI = "/data/in.jsonl"
PLAIN = RecordContract(prediction_length=2, future_length=2)
BOM = b"\xef\xbb\xbf"


def _record(target: list[Any]) -> bytes:
    return orjson.dumps({"start": "2020-01-01", "target": target})


def _lines_of(path: Path, *, target_bytes: int) -> list[bytes]:
    lines = []
    for shard in plan_shards(list_inputs(str(path)), target_bytes=target_bytes):
        lines += read_shard_lines(shard, max_line_bytes=1 << 20, chunk_bytes=2).lines
    return lines


# --- a UTF-8 byte order mark at a file's start is dropped (SageMaker accepts it)


@pytest.mark.parametrize("name", ["in.jsonl", "in.jsonl.gz"])
def test_a_leading_byte_order_mark_is_dropped(tmp_path: Path, name: str) -> None:
    data = BOM + _record([1]) + b"\n" + _record([2]) + b"\n"
    path = tmp_path / name
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    for target_bytes in (1, 7, 1 << 20):  # the first line may end in a later shard
        lines = _lines_of(path, target_bytes=target_bytes)
        assert lines == [_record([1]), _record([2])]
        assert decode_records(lines, uri=URI, contract=PLAIN).errors == []


def test_a_byte_order_mark_inside_the_file_stays_an_error(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(_record([1]) + b"\n" + BOM + _record([2]) + b"\n")
    lines = _lines_of(path, target_bytes=1 << 20)
    [error] = decode_records(lines, uri=URI, contract=PLAIN).errors
    assert (error.line, error.field) == (2, "$")


# --- an empty last line is not a record; other blank lines stay errors (SPEC.md §1)


@pytest.mark.parametrize("target_bytes", [1, 3, 5, 1 << 20])
def test_an_empty_last_line_is_ignored_whatever_the_sharding(
    tmp_path: Path, target_bytes: int
) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(_record([1]) + b"\n\n")
    assert _lines_of(path, target_bytes=target_bytes) == [_record([1])]
    path.write_bytes(_record([1]) + b"\r\n\r\n")  # Windows line ends
    assert _lines_of(path, target_bytes=target_bytes) == [_record([1])]


def test_only_the_last_empty_line_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(_record([1]) + b"\n\n" + _record([2]) + b"\n\n\n")
    lines = _lines_of(path, target_bytes=1 << 20)
    assert lines == [_record([1]), b"", _record([2]), b""]
    errors = decode_records(lines, uri=URI, contract=PLAIN).errors
    assert [(e.line, e.field) for e in errors] == [(2, "$"), (4, "$")]
    assert all("blank line" in e.message for e in errors)


# --- duplicate keys: the last one wins, as in Python's json and JavaScript's JSON.parse


def test_a_duplicate_key_takes_its_last_value() -> None:
    line = b'{"start": "2020-01-01", "target": "junk", "target": [1, 2]}'
    out = decode_records([line], uri=URI, contract=PLAIN)
    assert out.errors == []
    np.testing.assert_array_equal(out.batch.series(0), [1, 2])
    bad_last = b'{"start": "2020-01-01", "target": [1, 2], "target": "junk"}'
    [error] = decode_records([bad_last], uri=URI, contract=PLAIN).errors
    assert error.field == "target"


# --- numbers: beyond float64 (1e400), beyond the scale bound (1e38)


def test_a_number_beyond_float64_names_its_target_index() -> None:
    line = b'{"start": "2020-01-01", "target": [1, 2, 1e400]}'
    [error] = decode_records([line], uri=URI, contract=PLAIN).errors
    assert error.field == "target"
    assert "target[2]" in error.message
    assert "1e400" in error.message


def test_a_number_beyond_float64_elsewhere_names_its_place() -> None:
    rich = RecordContract(prediction_length=1, num_dynamic_feat=1, future_length=1)
    line = b'{"start": "2020-01-01", "target": [1], "dynamic_feat": [[0, -1e999]]}'
    [error] = decode_records([line], uri=URI, contract=rich).errors
    assert (error.field, error.line) == ("dynamic_feat", 1)
    assert "dynamic_feat[0][1]" in error.message
    line = b'{"start": "2020-01-01", "target": [1], "price": {"list": [3, 2e308]}}'
    [error] = decode_records([line], uri=URI, contract=PLAIN).errors
    assert error.field == "$"
    assert "price.list[1]" in error.message
    assert "2e308" in error.message


@pytest.mark.parametrize(("field", "where"), [("target", "target[1]"), ("cat", "cat[0]")])
def test_a_number_of_a_million_digits_is_not_echoed_whole(field: str, where: str) -> None:
    """The error names the number, but a line of megabytes of digits must not make every
    listed error (and the summary holding them) as large."""
    digits = b"9" * 1_000_000
    values = b"[1, " + digits + b"]" if field == "target" else b"[" + digits + b"]"
    line = b'{"start": "2020-01-01", "target": [1, 2], "' + field.encode() + b'": ' + values + b"}"
    if field == "target":
        line = b'{"start": "2020-01-01", "target": ' + values + b"}"
    rich = RecordContract(prediction_length=1, cardinality=(3,), future_length=1)
    [error] = decode_records([line], uri=URI, contract=rich).errors
    assert error.field == field
    assert where in error.message
    assert "(1000000 characters)" in error.message
    assert len(error.message) < 300


@pytest.mark.parametrize("value", [1e38, -3.0e38, 2e30])
def test_a_target_beyond_the_scale_bound_is_a_record_error(value: float) -> None:
    out = decode_records([_record([1.0, value])], uri=URI, contract=PLAIN)
    [error] = out.errors
    assert error.field == "target"
    assert "target[1]" in error.message
    assert "1e+30" in error.message or "1e30" in error.message
    assert out.batch.num_series == 0


def test_the_scale_bound_itself_is_accepted() -> None:
    out = decode_records([_record([1.0, MAX_ABS_TARGET, -MAX_ABS_TARGET])], uri=URI, contract=PLAIN)
    assert out.errors == []


# --- a corrupt or truncated gzip file is a CorruptInputError naming it


def _gzip_variants() -> dict[str, bytes]:
    good = gzip.compress(b"".join(_record([i]) + b"\n" for i in range(200)))
    crc = bytearray(good)
    crc[-8] ^= 0xFF  # the CRC-32 of the trailer
    deflate = bytearray(good)
    deflate[20] ^= 0xFF
    return {
        "truncated": good[: len(good) // 2],
        "bad crc": bytes(crc),
        "bad deflate data": bytes(deflate),
        "not gzip at all": b"plain text, named .gz\n",
    }


@pytest.mark.parametrize("kind", sorted(_gzip_variants()))
def test_a_damaged_gzip_file_is_a_corrupt_input_error(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "in.jsonl.gz"
    path.write_bytes(_gzip_variants()[kind])
    [shard] = plan_shards(list_inputs(str(path)), target_bytes=1 << 20)
    with pytest.raises(CorruptInputError) as info:
        read_shard_lines(shard, max_line_bytes=1 << 20)
    assert info.value.uri == str(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value.__cause__, (EOFError, OSError, zlib.error))


def test_a_damaged_gzip_object_on_s3(s3_bucket: str) -> None:
    uri = f"s3://{s3_bucket}/in/a.jsonl.gz"
    boto3.session.Session().client("s3").put_object(
        Bucket=s3_bucket, Key="in/a.jsonl.gz", Body=_gzip_variants()["truncated"]
    )
    shard = Shard(file_index=0, uri=uri, start=0, end=10, index=0, count=1, compressed=True)
    with pytest.raises(CorruptInputError) as info:
        read_shard_lines(shard, max_line_bytes=1 << 20)
    assert info.value.uri == uri


def test_a_missing_gzip_object_is_not_called_corrupt(tmp_path: Path) -> None:
    uri = str(tmp_path / "gone.jsonl.gz")
    shard = Shard(file_index=0, uri=uri, start=0, end=10, index=0, count=1, compressed=True)
    with pytest.raises(ShardError, match="No such file") as info:
        read_shard_lines(shard, max_line_bytes=1 << 20)
    assert not isinstance(info.value, CorruptInputError)


# --- a job's own output inside its input is never read back


def test_exclude_keeps_the_output_folder_out_of_a_local_input(tmp_path: Path) -> None:
    data = tmp_path / "data"
    for rel in ("a.jsonl", "out/a.jsonl.out", "out/sub/b.jsonl.out", "outline.jsonl"):
        (data / rel).parent.mkdir(parents=True, exist_ok=True)
        (data / rel).write_bytes(b"{}\n")
    everything = [o.relpath for o in list_inputs(str(data))]
    assert "out/a.jsonl.out" in everything
    for exclude in (str(data / "out"), str(data / "out") + "/"):
        kept = [o.relpath for o in list_inputs(str(data), exclude=exclude)]
        assert kept == ["a.jsonl", "outline.jsonl"]
    only_output = str(data / "out" / "*.out")
    with pytest.raises(Exception, match="names no object"):
        list_inputs(only_output, exclude=str(data / "out"))


def test_exclude_on_s3(s3_bucket: str) -> None:
    client = boto3.session.Session().client("s3")
    for key in ("data/a.jsonl", "data/out/a.jsonl.out", "data/outline.jsonl"):
        client.put_object(Bucket=s3_bucket, Key=key, Body=b"{}\n")
    kept = list_inputs(f"s3://{s3_bucket}/data/", exclude=f"s3://{s3_bucket}/data/out")
    assert [o.relpath for o in kept] == ["a.jsonl", "outline.jsonl"]
