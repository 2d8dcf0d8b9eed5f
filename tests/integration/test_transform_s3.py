"""``batchcast transform`` with S3 input, output and model, through a real HTTP S3 endpoint.

moto's server on loopback (``s3_server``, from tests/conftest.py) stands in for S3; nothing
is patched. The Ray of this module starts only after ``s3_server`` has set the AWS variables,
so the worker processes Ray starts inherit them and reach the same endpoint.
"""

from __future__ import annotations

import concurrent.futures
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import orjson
import pytest
from transform_harness import (
    dumps,
    inference_records,
    read_outputs,
    start_local_ray,
    write_lines,
)

from batchcast.api import transform
from batchcast.models import load_model, save_model
from batchcast.runner import SUMMARY_NAME, JobSummary

SHARD_MB = 0.002


@pytest.fixture(scope="module")
def ray_local(s3_server: str) -> Iterator[str]:
    """This module's Ray, started after the S3 endpoint variables are in the environment."""
    yield from start_local_ray()


pytestmark = pytest.mark.usefixtures("ray_local")


@pytest.fixture(scope="module")
def s3(s3_server: str) -> Any:
    return boto3.session.Session().client("s3", endpoint_url=s3_server)


@pytest.fixture(scope="module")
def bucket(s3: Any) -> str:
    """One bucket for the module (``s3_bucket`` is per test; these tests share a reference)."""
    name = "batchcast-transform-s3"
    s3.create_bucket(Bucket=name)
    return name


def _put_lines(s3: Any, bucket: str, key: str, lines: list[bytes]) -> None:
    s3.put_object(Bucket=bucket, Key=key, Body=b"".join(line + b"\n" for line in lines))


def _objects(s3: Any, bucket: str, prefix: str) -> dict[str, bytes]:
    """Every object under ``prefix``, by key relative to it."""
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    keys = [item["Key"] for page in pages for item in page.get("Contents", ())]
    return {
        key[len(prefix) :]: s3.get_object(Bucket=bucket, Key=key)["Body"].read() for key in keys
    }


def _pending_uploads(s3: Any, bucket: str) -> list[str]:
    return [u["Key"] for u in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]


def _lines(data: bytes) -> list[bytes]:
    return data.split(b"\n")[:-1]


INPUTS = {
    "in/part-1.jsonl": inference_records(300, seed=60),
    "in/partition/x.jsonl": inference_records(40, seed=61),
    "in/other.jsonl": inference_records(5, seed=62),  # not under the prefix "in/part"
}


@pytest.fixture(scope="module")
def prefix_run(tiny_model: str, s3: Any, bucket: str) -> tuple[JobSummary, dict[str, bytes]]:
    """The S3Prefix job ``s3://bucket/in/part`` -> ``s3://bucket/out-prefix/``."""
    for key, records in INPUTS.items():
        _put_lines(s3, bucket, key, dumps(records))
    summary = transform(
        tiny_model,
        f"s3://{bucket}/in/part",
        f"s3://{bucket}/out-prefix/",
        shard_mb=SHARD_MB,
        forward_fields=["item_id"],
    )
    return summary, _objects(s3, bucket, "out-prefix/")


def test_s3_prefix_is_a_raw_key_prefix(prefix_run: tuple[JobSummary, dict[str, bytes]]) -> None:
    summary, objects = prefix_run
    assert summary.ok, summary.failure_reason
    # "in/part" matches in/part-1.jsonl and in/partition/x.jsonl (not in/other.jsonl); the
    # output names are the keys after the prefix's last "/".
    assert sorted(objects) == [SUMMARY_NAME, "part-1.jsonl.out", "partition/x.jsonl.out"]
    for name, source in (
        ("part-1.jsonl", "in/part-1.jsonl"),
        ("partition/x.jsonl", "in/partition/x.jsonl"),
    ):
        lines = _lines(objects[f"{name}.out"])
        assert [orjson.loads(x)["item_id"] for x in lines] == [r["item_id"] for r in INPUTS[source]]
    assert summary.counts["shards"] > 40  # ranged reads of many small shards


def test_s3_input_gives_the_bytes_of_the_same_files_read_locally(
    tiny_model: str, prefix_run: tuple[JobSummary, dict[str, bytes]], tmp_path: Path
) -> None:
    for key in ("in/part-1.jsonl", "in/partition/x.jsonl"):
        write_lines(tmp_path / "in" / key.removeprefix("in/"), dumps(INPUTS[key]))
    local = transform(
        tiny_model,
        str(tmp_path / "in"),
        str(tmp_path / "out"),
        shard_mb=SHARD_MB,
        forward_fields=["item_id"],
    )
    assert local.ok
    expected = {k: v for k, v in prefix_run[1].items() if k != SUMMARY_NAME}
    assert read_outputs(tmp_path / "out") == expected


def test_the_summary_is_written_to_s3(
    prefix_run: tuple[JobSummary, dict[str, bytes]], bucket: str
) -> None:
    summary, objects = prefix_run
    assert summary.summary_uri == f"s3://{bucket}/out-prefix/{SUMMARY_NAME}"
    on_s3 = orjson.loads(objects[SUMMARY_NAME])
    assert on_s3["status"] == "Completed"
    assert on_s3["counts"]["series"] == 340
    assert sorted(f["output"] for f in on_s3["files"]) == [
        f"s3://{bucket}/out-prefix/part-1.jsonl.out",
        f"s3://{bucket}/out-prefix/partition/x.jsonl.out",
    ]


def test_a_manifest_file_input(
    tiny_model: str, s3: Any, bucket: str, prefix_run: tuple[JobSummary, dict[str, bytes]]
) -> None:
    manifest = [{"prefix": f"s3://{bucket}/in/"}, "part-1.jsonl", "partition/x.jsonl"]
    s3.put_object(Bucket=bucket, Key="manifests/job.manifest", Body=orjson.dumps(manifest))
    summary = transform(
        tiny_model,
        f"s3://{bucket}/manifests/job.manifest",
        f"s3://{bucket}/out-manifest",
        data_type="ManifestFile",
        shard_mb=SHARD_MB,
        forward_fields=["item_id"],
    )
    assert summary.ok
    objects = _objects(s3, bucket, "out-manifest/")
    del objects[SUMMARY_NAME]
    reference = dict(prefix_run[1])
    del reference[SUMMARY_NAME]
    # The same objects under the same relative names: the same bytes.
    assert objects == reference


def test_the_model_loads_from_an_s3_model_tar_gz(
    tiny_model: str,
    s3: Any,
    bucket: str,
    prefix_run: tuple[JobSummary, dict[str, bytes]],
    tmp_path: Path,
) -> None:
    archive = save_model(load_model(tiny_model).model, str(tmp_path / "model.tar.gz"))
    with tarfile.open(archive) as tar:
        assert sorted(tar.getnames()) == ["config.json", "model.safetensors"]
    s3.upload_file(archive, bucket, "models/deepar/model.tar.gz")
    summary = transform(
        f"s3://{bucket}/models/deepar/model.tar.gz",
        f"s3://{bucket}/in/part",
        f"s3://{bucket}/out-s3-model/",
        shard_mb=SHARD_MB,
        forward_fields=["item_id"],
    )
    assert summary.ok, summary.failure_reason
    objects = _objects(s3, bucket, "out-s3-model/")
    reference = dict(prefix_run[1])
    del objects[SUMMARY_NAME], reference[SUMMARY_NAME]
    assert objects == reference


def test_outputs_appear_on_s3_only_when_complete(tiny_model: str, s3: Any, bucket: str) -> None:
    records = inference_records(1500, seed=63)
    _put_lines(s3, bucket, "big/a.jsonl", dumps(records))
    _put_lines(s3, bucket, "big/b.jsonl", dumps(records[:200]))
    seen: list[dict[str, int]] = []  # the .out objects visible at each poll, with their sizes
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as executor:
        job = executor.submit(
            transform,
            tiny_model,
            f"s3://{bucket}/big/",
            f"s3://{bucket}/out-big/",
            shard_mb=SHARD_MB,
        )
        while not job.done():
            listing = s3.list_objects_v2(Bucket=bucket, Prefix="out-big/").get("Contents", [])
            seen.append({o["Key"]: o["Size"] for o in listing if o["Key"].endswith(".out")})
            time.sleep(0.02)
        summary = job.result()
    assert summary.ok
    final = {
        f"out-big/{k}": len(v)
        for k, v in _objects(s3, bucket, "out-big/").items()
        if k.endswith(".out")
    }
    assert final["out-big/a.jsonl.out"] > 0
    assert len(seen) > 5  # the job was watched while it ran
    assert any(not polled for polled in seen)  # ... including before any output appeared
    for polled in seen:  # every object ever visible was already whole
        assert all(size == final[key] for key, size in polled.items()), polled
    assert _pending_uploads(s3, bucket) == []


def _bad_input(s3: Any, bucket: str, prefix: str) -> list[int]:
    """``good.jsonl`` and ``bad.jsonl`` (bad lines across shards) under ``prefix``; the bad
    lines' numbers."""
    _put_lines(s3, bucket, f"{prefix}/good.jsonl", dumps(inference_records(300, seed=64)))
    lines = dumps(inference_records(300, seed=65))
    bad = [5, 120, 299]
    for line in bad:
        lines[line - 1] = b'{"start": "2020-01-01 00:00:00"}'
    _put_lines(s3, bucket, f"{prefix}/bad.jsonl", lines)
    return bad


@pytest.mark.parametrize("on_error", ["fail-file", "fail-fast"])
def test_a_failing_file_leaves_no_object_and_no_pending_upload(
    tiny_model: str, s3: Any, s3_bucket: str, on_error: str
) -> None:
    bad = _bad_input(s3, s3_bucket, "in")
    summary = transform(
        tiny_model,
        f"s3://{s3_bucket}/in/",
        f"s3://{s3_bucket}/out/",
        shard_mb=SHARD_MB,
        on_error=on_error,
    )
    assert summary.status == "Failed"
    objects = _objects(s3, s3_bucket, "out/")
    assert "bad.jsonl.out" not in objects
    assert _pending_uploads(s3, s3_bucket) == []  # every multipart upload was completed or aborted
    on_s3 = orjson.loads(objects[SUMMARY_NAME])
    assert on_s3["status"] == "Failed"
    errors = [(e["uri"], e["line"], e["field"]) for e in on_s3["errors"]]
    uri = f"s3://{s3_bucket}/in/bad.jsonl"
    if on_error == "fail-file":
        assert errors == [(uri, line, "target") for line in bad]
        assert len(_lines(objects["good.jsonl.out"])) == 300
    else:
        assert errors[:1] == [(uri, bad[0], "target")]
        assert len(errors) == 1
        if "good.jsonl.out" in objects:  # committed before the stop: then it is whole
            assert len(_lines(objects["good.jsonl.out"])) == 300
