"""Output faults (issue 9.4, 9.8): a full disk, a read-only folder, a lost S3 upload, and what a
killed writer leaves behind. Each failure is one OutputError naming the URI and the cause;
aborting never replaces the cause; stale temporary files and uploads can be removed.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import boto3
import pytest

from batchcast.io.sinks import TEMP_SUFFIX, OutputError, open_sink, remove_stale_temp


def _freeze(folder: Path) -> None:
    """Make ``folder`` refuse new, renamed and removed entries, even for root."""
    if os.geteuid() == 0:
        if shutil.which("chattr") is None:
            pytest.skip("root ignores permissions and chattr is not installed")
        subprocess.run(["chattr", "+i", str(folder)], check=True)
    else:
        folder.chmod(0o555)


def _thaw(folder: Path) -> None:
    if os.geteuid() == 0:
        subprocess.run(["chattr", "-i", str(folder)], check=True)
    else:
        folder.chmod(0o755)


def _write_through(uri: str, chunks: list[bytes]) -> None:
    with open_sink(uri) as sink:
        for chunk in chunks:
            sink.write(chunk)


def test_disk_full_is_one_output_error_and_leaves_nothing(tiny_disk: Path) -> None:
    target = tiny_disk / "out" / "data.jsonl.out"
    with pytest.raises(OutputError) as info:
        _write_through(str(target), [b"x" * (64 << 10)] * 40)  # 2.5 MiB into 1 MiB
    message = str(info.value)
    assert str(target) in message
    assert "No space left on device" in message
    assert "\n" not in message
    assert isinstance(info.value.__cause__, OSError)
    assert info.value.__cause__.errno == errno.ENOSPC
    assert os.listdir(target.parent) == []  # the temporary file is gone too


def test_read_only_folder_at_commit_keeps_the_cause_and_logs_the_failed_cleanup(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "out"
    target = folder / "data.jsonl.out"
    sink = open_sink(str(target))
    sink.write(b"line\n")
    _freeze(folder)
    try:
        with caplog.at_level(logging.WARNING, logger="batchcast.io.sinks"):
            with pytest.raises(OutputError) as info:
                sink.commit()  # the rename fails, then so does removing the temporary
            sink.abort()  # a no-op after the failed commit, and never raises
    finally:
        _thaw(folder)
    message = str(info.value)
    assert str(target) in message
    assert "PermissionError" in message
    assert not target.exists()
    assert "could not clean up" in caplog.text
    assert str(target) in caplog.text


def _fail_inside(target: Path) -> None:
    with open_sink(str(target)) as sink:
        sink.write(b"partial")
        _freeze(target.parent)  # abort's unlink will fail
        raise RuntimeError("the real cause")


def test_an_error_inside_the_with_block_survives_a_failing_abort(tmp_path: Path) -> None:
    target = tmp_path / "out" / "data.jsonl.out"
    try:
        with pytest.raises(RuntimeError, match="the real cause"):
            _fail_inside(target)
    finally:
        _thaw(target.parent)


def test_read_only_folder_at_open(tmp_path: Path) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    _freeze(folder)
    try:
        with pytest.raises(OutputError, match="PermissionError") as info:
            open_sink(str(folder / "x.out"))
    finally:
        _thaw(folder)
    assert str(folder / "x.out") in str(info.value)


def test_missing_bucket_is_an_output_error(s3_server: str) -> None:
    uri = "s3://no-such-bucket-here/out/x.out"
    with pytest.raises(OutputError) as info:
        open_sink(uri).commit()
    assert uri in str(info.value)
    assert "\n" not in str(info.value)


# --- temporary names and what a killed writer leaves


def test_temporary_names_are_unique_and_recognisable(tmp_path: Path) -> None:
    target = tmp_path / "data.jsonl.out"
    first, second = open_sink(str(target)), open_sink(str(target))
    names = sorted(os.listdir(tmp_path))
    assert len(names) == 2
    for name in names:
        assert name.startswith(".data.jsonl.out.")
        assert name.endswith(TEMP_SUFFIX)
    first.abort()
    second.abort()
    assert os.listdir(tmp_path) == []


_KILLED_WRITER = r"""
import os, sys
from batchcast.io import open_sink
sink = open_sink(sys.argv[1])
sink.write(b"half of it")
os._exit(9)  # killed: no abort, no commit
"""


def _kill_a_writer(uri: str) -> None:
    done = subprocess.run([sys.executable, "-c", _KILLED_WRITER, uri], check=False)
    assert done.returncode == 9


def test_remove_stale_temp_locally_removes_only_what_killed_writers_left(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _kill_a_writer(str(out / "a.jsonl.out"))
    _kill_a_writer(str(out / "sub" / "b.jsonl.out"))
    keep = [out / ".keep", out / "a.tmp", out / "done.jsonl.out", out / ".x.batchcast-tmp"]
    for path in keep:
        path.write_bytes(b"mine")
    stale = sorted(str(p) for p in out.rglob("*") if p.name.endswith(TEMP_SUFFIX) and p not in keep)
    assert len(stale) == 2
    assert remove_stale_temp(str(out)) == stale
    assert sorted(p for p in out.rglob("*") if p.is_file()) == sorted(keep)
    assert remove_stale_temp(str(out)) == []
    assert remove_stale_temp(str(tmp_path / "never-written")) == []


def test_remove_stale_temp_on_s3_aborts_pending_uploads(s3_bucket: str) -> None:
    client = boto3.session.Session().client("s3")
    _kill_a_writer(f"s3://{s3_bucket}/out/a.jsonl.out")
    _kill_a_writer(f"s3://{s3_bucket}/elsewhere/b.jsonl.out")
    uploads = client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", [])
    assert sorted(u["Key"] for u in uploads) == ["elsewhere/b.jsonl.out", "out/a.jsonl.out"]
    assert remove_stale_temp(f"s3://{s3_bucket}/out") == [f"s3://{s3_bucket}/out/a.jsonl.out"]
    left = client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", [])
    assert [u["Key"] for u in left] == ["elsewhere/b.jsonl.out"]  # outside the prefix
