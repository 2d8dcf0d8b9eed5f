"""Failures a job meets, end to end (issue 9.4, 9.6): a full disk and a read-only output
give one ``Type: message`` line naming the URI and the cause, exit status 1, nothing half
written, no lock left, and a summary where the output still takes one; a target of
``1e38`` (a valid float32 that overflows the scaled computation) is a record error, never a
``null`` forecast in a job that says Completed.

A real local Ray, a tiny trained model, a real 1 MiB tmpfs and ``chattr +i`` (root), as in
tests/faults/test_io_sinks.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from batchcast.cli import main
from batchcast.io.lock import LOCK_NAME
from batchcast.synthetic import synthetic_records, write_jsonl

# Sample paths make each output line ~6 KB: 300 series are ~2 MB, twice the small disk.
_MANY_SAMPLES = '{"num_samples": 100, "output_types": ["samples"]}'


@pytest.fixture
def frozen_folder(tmp_path: Path) -> Iterator[Path]:
    """A folder that refuses new entries, even for root (``chattr +i``; 0o555 otherwise)."""
    folder = tmp_path / "frozen"
    folder.mkdir()
    root = os.geteuid() == 0
    if root and shutil.which("chattr") is None:
        pytest.skip("root ignores permissions and chattr is not installed")
    if root:
        subprocess.run(["chattr", "+i", str(folder)], check=True)
    else:
        folder.chmod(0o555)
    try:
        yield folder
    finally:
        if root:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
        else:
            folder.chmod(0o755)


def _argv(model: str, input: Path, output: Path, *more: str) -> list[str]:
    return ["transform", "--model", model, "--input", str(input), "--output", str(output), *more]


def _one_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err, err
    assert "Traceback" not in err
    return err


@pytest.mark.usefixtures("ray_local")
def test_a_full_disk_is_one_line_and_the_summary_still_says_why(
    tiny_model: str, tiny_disk: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_jsonl(tmp_path / "in" / "a.jsonl", synthetic_records(300, length=(20, 30)))
    output = tiny_disk / "out"
    argv = _argv(tiny_model, data, output, "--inference-config", _MANY_SAMPLES, "--workers", "1")
    assert main(argv) == 1
    err = _one_line(capsys)
    assert err.startswith(f"OutputError: cannot write '{output / 'a.jsonl.out'}': ")
    assert "No space left on device" in err
    # The partial output is gone, which frees the disk for the summary: it tells the cause.
    assert sorted(p.name for p in output.iterdir()) == ["_batchcast_summary.json"]
    summary = orjson.loads((output / "_batchcast_summary.json").read_bytes())
    assert summary["status"] == "Failed"
    assert "No space left on device" in summary["failure_reason"]
    assert summary["files"][0]["status"] == "aborted"


def test_a_read_only_output_fails_before_anything_starts(
    tiny_model: str, frozen_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_jsonl(tmp_path / "in" / "a.jsonl", synthetic_records(3, length=(20, 30)))
    assert main(_argv(tiny_model, data, frozen_folder)) == 1
    err = _one_line(capsys)
    assert err.startswith(f"OutputError: cannot write '{frozen_folder / LOCK_NAME}': ")
    assert "cannot take the output lock" in err
    assert os.listdir(frozen_folder) == []


@pytest.mark.usefixtures("ray_local")
def test_a_read_only_output_subfolder_fails_the_job_in_one_line_with_a_summary(
    tiny_model: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, output = tmp_path / "in", tmp_path / "out"
    write_jsonl(root / "sub" / "a.jsonl", synthetic_records(3, length=(20, 30)))
    (output / "sub").mkdir(parents=True)
    frozen = output / "sub"
    if os.geteuid() == 0:
        subprocess.run(["chattr", "+i", str(frozen)], check=True)
    else:
        frozen.chmod(0o555)
    try:
        assert main(_argv(tiny_model, root, output)) == 1
    finally:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(frozen)], check=True)
        else:
            frozen.chmod(0o755)
    err = _one_line(capsys)
    assert err.startswith(f"OutputError: cannot write '{frozen / 'a.jsonl.out'}': ")
    assert "PermissionError" in err
    assert sorted(p.name for p in output.iterdir()) == ["_batchcast_summary.json", "sub"]
    summary = orjson.loads((output / "_batchcast_summary.json").read_bytes())
    assert summary["failure_reason"] == err
    assert os.listdir(frozen) == []


@pytest.mark.usefixtures("ray_local")
def test_a_target_that_overflows_the_scale_is_a_record_error_not_a_null_forecast(
    tiny_model: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    records = list(synthetic_records(3, length=(20, 30)))
    records[1]["target"][-1] = 1e38
    data = write_jsonl(tmp_path / "in" / "a.jsonl", iter(records))
    output = tmp_path / "out"
    assert main(_argv(tiny_model, data, output, "--on-error", "record")) == 0
    lines = [orjson.loads(line) for line in (output / "a.jsonl.out").read_bytes().splitlines()]
    assert "error" not in lines[0]
    assert "error" not in lines[2]
    assert lines[1]["error"]["field"] == "target"
    assert lines[1]["error"]["line"] == 2
    assert b"null" not in (output / "a.jsonl.out").read_bytes()
    summary = orjson.loads((output / "_batchcast_summary.json").read_bytes())
    assert summary["counts"]["record_errors"] == 1
    capsys.readouterr()


def test_an_unreadable_input_fails_the_job_with_its_line_on_stderr(
    tiny_model: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A truncated .gz input failed the job with the cause only in the summary on stdout:
    stderr, where every failure's one line belongs, was empty."""
    import gzip

    data = write_jsonl(tmp_path / "a.jsonl", synthetic_records(20, length=(20, 30)))
    packed = gzip.compress(data.read_bytes())
    broken = tmp_path / "in" / "a.jsonl.gz"
    broken.parent.mkdir()
    broken.write_bytes(packed[: len(packed) // 2])
    argv = _argv(tiny_model, broken.parent, tmp_path / "out", "--executor", "local")
    assert main(argv) == 1
    err = _one_line(capsys)
    assert err.startswith(f"CorruptInputError: {str(broken)!r} is not a readable gzip stream")
