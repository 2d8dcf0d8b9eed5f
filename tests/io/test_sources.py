"""Listing inputs (every form SPEC.md §4 names) and opening byte ranges, local and on S3."""

from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import Any

import boto3
import orjson
import pytest

from batchcast.errors import ConfigError, ShardError
from batchcast.io import InputObject, list_inputs, open_range


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.fixture
def s3(s3_server: str) -> Any:
    return boto3.session.Session().client("s3")


# --- local


def test_local_file(tmp_path: Path) -> None:
    path = _write(tmp_path / "in" / "data.jsonl", b"abc\n")
    assert list_inputs(str(path)) == [
        InputObject(uri=str(path), size=4, relpath="data.jsonl", compressed=False)
    ]
    assert list_inputs(f"file://{path}")[0].relpath == "data.jsonl"


def test_local_gz_file_is_compressed(tmp_path: Path) -> None:
    path = _write(tmp_path / "data.jsonl.gz", gzip.compress(b"abc\n"))
    [obj] = list_inputs(str(path))
    assert obj.compressed
    assert obj.size == path.stat().st_size


def test_local_folder_is_recursive_and_skips_hidden_and_success(tmp_path: Path) -> None:
    for rel in ["b.jsonl", "a/x.jsonl", "a/c/y.jsonl.gz", "z/empty.jsonl"]:
        _write(tmp_path / rel, b"1\n" if "empty" not in rel else b"")
    for rel in [".hidden.jsonl", ".dir/x.jsonl", "_SUCCESS", "a/_SUCCESS", "a/.crc"]:
        _write(tmp_path / rel, b"skip\n")
    objects = list_inputs(str(tmp_path))
    assert [o.relpath for o in objects] == [
        "a/c/y.jsonl.gz",
        "a/x.jsonl",
        "b.jsonl",
        "z/empty.jsonl",
    ]
    assert [o.compressed for o in objects] == [True, False, False, False]
    assert all(os.path.isabs(o.uri) and os.path.isfile(o.uri) for o in objects)
    assert objects[-1].size == 0


def test_local_glob(tmp_path: Path) -> None:
    for rel in ["one.jsonl", "two.jsonl", "notes.txt", ".hidden.jsonl", "sub/three.jsonl"]:
        _write(tmp_path / rel, b"1\n")
    flat = list_inputs(str(tmp_path / "*.jsonl"))
    assert [o.relpath for o in flat] == ["one.jsonl", "two.jsonl"]
    deep = list_inputs(str(tmp_path / "**" / "*.jsonl"))
    assert [o.relpath for o in deep] == ["one.jsonl", "sub/three.jsonl", "two.jsonl"]
    # relpath is taken from the folder before the first wildcard component
    nested = list_inputs(str(tmp_path / "s*" / "*.jsonl"))
    assert [o.relpath for o in nested] == ["sub/three.jsonl"]


def test_missing_and_empty_local_inputs_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        list_inputs(str(tmp_path / "nope.jsonl"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="names no object") as info:
        list_inputs(str(tmp_path / "empty"))
    assert str(tmp_path / "empty") in str(info.value)
    with pytest.raises(ConfigError, match="names no object"):
        list_inputs(str(tmp_path / "*.csv"))


def test_unknown_data_type(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="S3DataType"):
        list_inputs(str(tmp_path), data_type="AugmentedManifestFile")


# --- S3


def test_s3_prefix_is_a_raw_key_prefix(s3: Any, s3_bucket: str) -> None:
    keys = {
        "data/part-1.jsonl": b"a\n",
        "data/partition/x.jsonl": b"bb\n",
        "data/other.jsonl": b"c\n",
        "data/folder/": b"",
        "data2/y.jsonl.gz": gzip.compress(b"d\n"),
    }
    for key, body in keys.items():
        s3.put_object(Bucket=s3_bucket, Key=key, Body=body)

    # A prefix that is not a folder matches like SageMaker's: by raw key prefix.
    part = list_inputs(f"s3://{s3_bucket}/data/part")
    assert [(o.uri, o.relpath, o.size) for o in part] == [
        (f"s3://{s3_bucket}/data/part-1.jsonl", "part-1.jsonl", 2),
        (f"s3://{s3_bucket}/data/partition/x.jsonl", "partition/x.jsonl", 3),
    ]
    folder = list_inputs(f"s3://{s3_bucket}/data/")
    assert [o.relpath for o in folder] == ["other.jsonl", "part-1.jsonl", "partition/x.jsonl"]
    # "data" also matches "data2/..."; keys ending in '/' are not objects to transform
    bare = list_inputs(f"s3://{s3_bucket}/data")
    assert [o.relpath for o in bare] == [
        "data/other.jsonl",
        "data/part-1.jsonl",
        "data/partition/x.jsonl",
        "data2/y.jsonl.gz",
    ]
    assert [o.compressed for o in bare] == [False, False, False, True]
    whole = list_inputs(f"s3://{s3_bucket}")
    assert len(whole) == 4


def test_s3_empty_prefix_and_missing_bucket(s3_bucket: str) -> None:
    with pytest.raises(ConfigError, match="names no object"):
        list_inputs(f"s3://{s3_bucket}/nothing/")
    with pytest.raises(ConfigError, match="cannot list"):
        list_inputs("s3://no-such-bucket-batchcast/x")


def _manifest(prefix: str, *keys: str) -> bytes:
    return orjson.dumps([{"prefix": prefix}, *keys])


def test_manifest_local_and_on_s3(tmp_path: Path, s3: Any, s3_bucket: str) -> None:
    for key, body in {"p/a.jsonl": b"1\n", "p/sub/b.jsonl": b"22\n", "p/c.jsonl": b"x\n"}.items():
        s3.put_object(Bucket=s3_bucket, Key=key, Body=body)
    body = _manifest(f"s3://{s3_bucket}/p/", "sub/b.jsonl", "a.jsonl")
    expected = [
        InputObject(f"s3://{s3_bucket}/p/sub/b.jsonl", 3, "sub/b.jsonl", False),
        InputObject(f"s3://{s3_bucket}/p/a.jsonl", 2, "a.jsonl", False),
    ]
    local = _write(tmp_path / "input.manifest", body)
    assert list_inputs(str(local), data_type="ManifestFile") == expected  # manifest order
    s3.put_object(Bucket=s3_bucket, Key="m/input.manifest", Body=body)
    remote = list_inputs(f"s3://{s3_bucket}/m/input.manifest", data_type="ManifestFile")
    assert remote == expected


def test_manifest_with_local_prefix(tmp_path: Path) -> None:
    _write(tmp_path / "d" / "a.jsonl", b"1\n")
    manifest = _write(tmp_path / "m.json", _manifest(f"{tmp_path}/d/", "a.jsonl"))
    [obj] = list_inputs(str(manifest), data_type="ManifestFile")
    assert obj.uri == str(tmp_path / "d" / "a.jsonl")
    assert obj.relpath == "a.jsonl"


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b"not json", "cannot read manifest"),
        (b'{"prefix": "s3://b/"}', "must be a JSON array"),
        (b'["a.jsonl"]', "must be a JSON array"),
        (b'[{"prefix": "s3://b/"}, 3]', "keys must be non-empty strings"),
        (b'[{"prefix": "s3://b/"}]', "names no object"),
    ],
)
def test_malformed_manifest(tmp_path: Path, body: bytes, match: str) -> None:
    manifest = _write(tmp_path / "m.json", body)
    with pytest.raises(ConfigError, match=match):
        list_inputs(str(manifest), data_type="ManifestFile")


def test_manifest_naming_a_missing_object(tmp_path: Path, s3_bucket: str) -> None:
    manifest = _write(tmp_path / "m.json", _manifest(f"s3://{s3_bucket}/p/", "gone.jsonl"))
    with pytest.raises(ConfigError, match=r"gone\.jsonl"):
        list_inputs(str(manifest), data_type="ManifestFile")
    with pytest.raises(ConfigError, match="cannot read manifest"):
        list_inputs(str(tmp_path / "missing.json"), data_type="ManifestFile")


# --- open_range


def test_open_range_local_and_s3(tmp_path: Path, s3: Any, s3_bucket: str) -> None:
    data = bytes(range(256)) * 10
    path = _write(tmp_path / "f.bin", data)
    s3.put_object(Bucket=s3_bucket, Key="f.bin", Body=data)
    for uri in (str(path), f"s3://{s3_bucket}/f.bin"):
        for start in (0, 1, 1000, len(data) - 1, len(data)):
            with open_range(uri, start) as stream:
                assert stream.read() == data[start:], (uri, start)


def test_open_range_gzip_is_decompressed(tmp_path: Path, s3: Any, s3_bucket: str) -> None:
    data = b"line one\nline two\n" * 100
    path = _write(tmp_path / "f.jsonl.gz", gzip.compress(data))
    s3.put_object(Bucket=s3_bucket, Key="f.jsonl.gz", Body=gzip.compress(data))
    for uri in (str(path), f"s3://{s3_bucket}/f.jsonl.gz"):
        with open_range(uri) as stream:
            assert stream.read() == data
        with pytest.raises(ValueError, match="compressed"):
            open_range(uri, 5)
    # An explicit flag wins over the name (CompressionType=Gzip on a file without .gz).
    plain = _write(tmp_path / "gz-without-suffix", gzip.compress(data))
    with open_range(str(plain), compressed=True) as stream:
        assert stream.read() == data


def test_open_range_missing_object_is_a_shard_error(tmp_path: Path) -> None:
    with pytest.raises(ShardError, match="missing"):
        open_range(str(tmp_path / "missing.jsonl"))
