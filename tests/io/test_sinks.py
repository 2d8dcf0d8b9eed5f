"""Atomic sinks: an output appears whole on commit, and nothing is left after a failure."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import pytest

from batchcast.io import (
    InputObject,
    exists,
    join_uri,
    open_sink,
    output_uri,
    write_bytes_atomic,
)


class WriterFailedError(Exception):
    """Stands for whatever can go wrong while an output is being written."""


def _write_then_fail(uri: str, *chunks: bytes, check: Callable[[], None] = lambda: None) -> None:
    """Write ``chunks`` to a sink, run ``check`` mid-write, then fail inside the ``with``."""
    with open_sink(uri) as sink:
        for chunk in chunks:
            sink.write(chunk)
        check()
        raise WriterFailedError


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


# --- local


def test_local_commit_appears_only_at_the_end(tmp_path: Path) -> None:
    target = tmp_path / "out" / "sub" / "data.jsonl.out"
    with open_sink(str(target)) as sink:
        sink.write(b"line 1\n")
        sink.write(b"line 2\n")
        assert not exists(str(target))  # a reader sees nothing yet
    assert target.read_bytes() == b"line 1\nline 2\n"
    assert _files(tmp_path) == ["out/sub/data.jsonl.out"]  # no temporary left behind


def test_local_exception_mid_write_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "data.jsonl.out"

    def only_the_temporary() -> None:
        [temporary] = _files(tmp_path)
        assert temporary.startswith(".data.jsonl.out.")

    with pytest.raises(WriterFailedError):
        _write_then_fail(str(target), b"partial", check=only_the_temporary)
    assert _files(tmp_path) == []


def test_local_commit_replaces_an_old_output_whole(tmp_path: Path) -> None:
    target = tmp_path / "data.jsonl.out"
    target.write_bytes(b"old")
    with pytest.raises(WriterFailedError):
        _write_then_fail(str(target), b"new but failed")
    assert target.read_bytes() == b"old"
    write_bytes_atomic(str(target), b"new")
    assert target.read_bytes() == b"new"
    assert _files(tmp_path) == ["data.jsonl.out"]


def test_explicit_abort_and_use_after_commit(tmp_path: Path) -> None:
    sink = open_sink(str(tmp_path / "a.out"))
    sink.write(b"x")
    sink.abort()
    sink.abort()  # idempotent
    assert _files(tmp_path) == []
    sink = open_sink(str(tmp_path / "b.out"))
    sink.commit()
    sink.abort()  # a no-op after commit
    assert (tmp_path / "b.out").read_bytes() == b""
    with pytest.raises(ValueError, match="already committed"):
        sink.write(b"late")


def test_local_output_mode_follows_the_umask(tmp_path: Path) -> None:
    mask = os.umask(0o022)
    try:
        write_bytes_atomic(str(tmp_path / "a.out"), b"x")
    finally:
        os.umask(mask)
    assert (tmp_path / "a.out").stat().st_mode & 0o777 == 0o644


# --- S3


@pytest.fixture
def s3(s3_server: str) -> Any:
    return boto3.session.Session().client("s3")


def _keys(s3: Any, bucket: str) -> list[str]:
    return [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]


def _pending_uploads(s3: Any, bucket: str) -> list[Any]:
    return list(s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []))


def test_s3_commit_appears_only_at_the_end(s3: Any, s3_bucket: str) -> None:
    uri = f"s3://{s3_bucket}/out/data.jsonl.out"
    # More than one 16 MiB part, so a part is uploaded before the end.
    body = os.urandom(1 << 20) * 17 + b"tail\n"
    with open_sink(uri) as sink:
        for i in range(0, len(body), 4 << 20):
            sink.write(body[i : i + (4 << 20)])
        assert not exists(uri)
        assert _keys(s3, s3_bucket) == []
        assert len(_pending_uploads(s3, s3_bucket)) == 1
    assert s3.get_object(Bucket=s3_bucket, Key="out/data.jsonl.out")["Body"].read() == body
    assert _pending_uploads(s3, s3_bucket) == []


def test_s3_exception_mid_write_leaves_no_object_and_no_upload(s3: Any, s3_bucket: str) -> None:
    uri = f"s3://{s3_bucket}/out/data.jsonl.out"

    def one_part_uploaded() -> None:
        [upload] = _pending_uploads(s3, s3_bucket)
        parts = s3.list_parts(Bucket=s3_bucket, Key=upload["Key"], UploadId=upload["UploadId"])
        assert len(parts["Parts"]) == 1

    with pytest.raises(WriterFailedError):
        _write_then_fail(uri, os.urandom(17 << 20), check=one_part_uploaded)
    assert _keys(s3, s3_bucket) == []
    assert _pending_uploads(s3, s3_bucket) == []


def test_s3_empty_output_and_small_writes(s3: Any, s3_bucket: str) -> None:
    empty = f"s3://{s3_bucket}/empty.out"
    with open_sink(empty):
        pass
    assert s3.get_object(Bucket=s3_bucket, Key="empty.out")["Body"].read() == b""
    small = f"s3://{s3_bucket}/summary.json"
    write_bytes_atomic(small, b"{}")
    assert exists(small)
    assert not exists(f"s3://{s3_bucket}/other.json")
    assert _pending_uploads(s3, s3_bucket) == []


# --- names


def test_output_uri_and_join_uri() -> None:
    obj = InputObject("s3://b/in/sub/x.jsonl", 1, "sub/x.jsonl", False)
    assert output_uri("s3://out/prefix/", obj) == "s3://out/prefix/sub/x.jsonl.out"
    assert output_uri("/tmp/out", obj) == "/tmp/out/sub/x.jsonl.out"
    assert join_uri("s3://b", "summary.json") == "s3://b/summary.json"
    assert join_uri("out/", "/a") == "out/a"
