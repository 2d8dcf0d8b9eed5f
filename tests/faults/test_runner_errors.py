"""Record errors in bounded memory (hardening issue, runner item 1): a job of millions of bad
lines lists only the first ``max_errors_listed`` in its summary, counts all of them exactly
(by field, by file), streams every one to ``_batchcast_errors.jsonl`` when asked, and the
driver's memory does not grow with the number of errors.

Real parts throughout: a real local Ray shared by the module, a tiny trained model, real
files; the memory test runs the driver in a subprocess that joins this module's Ray, so its
peak RSS is the driver's own.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from batchcast.api import transform
from batchcast.cli import main
from batchcast.errors import ConfigError
from batchcast.runner.summary import ERRORS_NAME, SUMMARY_NAME

BAD_LINES = 200_000
# The driver's peak RSS growth over the job. Measured on 2 cores with 200k lines of "{}",
# workers=1, shard_mb=0.05: every error held (before the fix) +343 MB (summary 42 MB);
# the first 1000 held +155 MB (what Ray's client and the window of held shards cost; the
# same at 600k lines). 250 MB sits between the two.
MAX_GROWTH_MB = 250


def _summary(output: Path) -> dict[str, Any]:
    return orjson.loads((output / SUMMARY_NAME).read_bytes())


def _bad_inputs(root: Path) -> Path:
    """Two files: 30 lines with no ``start``, and 20 lines with a bad ``target``."""
    root.mkdir()
    (root / "a.jsonl").write_bytes(b"{}\n" * 30)
    (root / "b.jsonl").write_bytes(b'{"start": "2020-01-01 00:00:00", "target": "x"}\n' * 20)
    return root


_DRIVER = """
import json, resource, sys
from batchcast.api import transform

model, root, output = sys.argv[1:4]
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
summary = transform(
    model, root, output, on_error="record", workers=1, shard_mb=0.05, errors_file=True
)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"growth_mb": (peak - before) / 1024, "status": summary.status}))
"""


@pytest.mark.slow
def test_many_record_errors_are_counted_streamed_and_not_held_by_the_driver(
    ray_local: str, tiny_model: str, tmp_path: Path
) -> None:
    root = tmp_path / "in"
    root.mkdir()
    (root / "a.jsonl").write_bytes(b"{}\n" * BAD_LINES)
    output = tmp_path / "out"
    env = {**os.environ, "RAY_ADDRESS": ray_local}  # join this module's Ray: no second one
    done = subprocess.run(
        [sys.executable, "-c", _DRIVER, tiny_model, str(root), str(output)],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = orjson.loads(done.stdout.strip().splitlines()[-1])
    assert result["status"] == "Completed"  # record mode: errors are output lines
    summary = _summary(output)
    uri = str(root / "a.jsonl")
    assert summary["counts"]["record_errors"] == BAD_LINES
    assert len(summary["errors"]) == 1000
    assert [e["line"] for e in summary["errors"]] == list(range(1, 1001))
    assert summary["error_counts"] == {
        "by_field": {"start": BAD_LINES},
        "by_file": {uri: BAD_LINES},
    }
    assert summary["errors_file"] == str(output / ERRORS_NAME)
    streamed = (output / ERRORS_NAME).read_bytes().splitlines()
    assert len(streamed) == BAD_LINES
    assert [orjson.loads(line)["line"] for line in streamed] == list(range(1, BAD_LINES + 1))
    assert orjson.loads(streamed[0]) == summary["errors"][0]
    assert (output / SUMMARY_NAME).stat().st_size < 2 << 20  # was 42 MB
    assert result["growth_mb"] < MAX_GROWTH_MB, result


def test_the_limit_lists_the_first_errors_and_counts_every_one_by_field_and_file(
    ray_local: str, tiny_model: str, tmp_path: Path
) -> None:
    root = _bad_inputs(tmp_path / "in")
    output = tmp_path / "out"
    summary = transform(tiny_model, str(root), str(output), max_errors_listed=5)
    assert summary.status == "Failed"  # fail-file: both files have bad lines
    assert summary.counts["record_errors"] == 50
    assert [(e["uri"], e["line"]) for e in summary.errors] == [
        (str(root / "a.jsonl"), line) for line in range(1, 6)
    ]
    assert summary.error_counts["by_file"] == {str(root / "a.jsonl"): 30, str(root / "b.jsonl"): 20}
    assert summary.error_counts["by_field"] == {"start": 30, "target": 20}
    assert _summary(output)["error_counts"] == summary.error_counts
    assert summary.errors_uri is None
    assert not (output / ERRORS_NAME).exists()  # only when asked for


def test_cli_flags_set_the_limit_and_the_errors_file(
    ray_local: str, tiny_model: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _bad_inputs(tmp_path / "in")
    output = tmp_path / "out"
    argv = ["transform", "--model", tiny_model, "--input", str(root), "--output", str(output)]
    status = main([*argv, "--max-errors-listed", "0", "--errors-file", "--json"])
    assert status == 1
    summary = _summary(output)
    assert summary["errors"] == []
    assert summary["counts"]["record_errors"] == 50
    assert len((output / ERRORS_NAME).read_bytes().splitlines()) == 50
    assert f"see {output / ERRORS_NAME}" in capsys.readouterr().err


def test_a_negative_limit_is_a_config_error_naming_the_flag(
    tiny_model: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ConfigError, match="max_errors_listed must be >= 0"):
        transform(tiny_model, str(tmp_path), str(tmp_path / "out"), max_errors_listed=-1)
    argv = ["transform", "--model", tiny_model, "--input", str(tmp_path), "--output", "o"]
    assert main([*argv, "--max-errors-listed", "-1"]) == 1
    assert "ConfigError: --max-errors-listed must be >= 0, got -1" in capsys.readouterr().err
