"""A corrupt input file fails alone in ``record`` mode (hardening issue, runner item 5): a
truncated ``.gz`` gets no ``.out`` and a file error in the summary, the other files are
committed, and the job ends Failed (exit 1) with their outputs kept.

A real local Ray shared by the module, a tiny trained model, real files.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import orjson
import pytest

from batchcast.api import transform
from batchcast.cli import main
from batchcast.synthetic import synthetic_records, write_jsonl


def _inputs(root: Path) -> Path:
    write_jsonl(root / "a.jsonl", synthetic_records(30, freq="H", length=(20, 40), seed=3))
    write_jsonl(root / "c.jsonl", synthetic_records(10, freq="H", length=(20, 40), seed=5))
    good = (root / "a.jsonl").read_bytes() * 50
    (root / "b.jsonl.gz").write_bytes(gzip.compress(good)[:-200])  # truncated
    return root


@pytest.mark.usefixtures("ray_local")
def test_record_mode_fails_the_truncated_file_alone_and_keeps_the_others(
    tiny_model: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _inputs(tmp_path / "in")
    output = tmp_path / "out"
    argv = ["transform", "--model", tiny_model, "--input", str(root), "--output", str(output)]
    assert main([*argv, "--on-error", "record", "--shard-mb", "0.002", "--json"]) == 1
    brief = orjson.loads(capsys.readouterr().out)
    assert brief["status"] == "Failed"
    summary = orjson.loads((output / "_batchcast_summary.json").read_bytes())
    by_name = {Path(f["input"]).name: f for f in summary["files"]}
    assert by_name["b.jsonl.gz"]["status"] == "failed"
    assert by_name["b.jsonl.gz"]["error"].startswith("CorruptInputError: ")
    assert by_name["a.jsonl"]["status"] == by_name["c.jsonl"]["status"] == "committed"
    assert summary["file_errors"] == [
        {"uri": str(root / "b.jsonl.gz"), "message": by_name["b.jsonl.gz"]["error"]}
    ]
    assert summary["counts"]["files_failed"] == 1
    assert summary["counts"]["record_errors"] == 0  # a file error, not a record error
    assert sorted(p.name for p in output.iterdir()) == [
        "_batchcast_summary.json",
        "a.jsonl.out",
        "c.jsonl.out",
    ]
    clean = transform(tiny_model, str(root / "a.jsonl"), str(tmp_path / "clean"), shard_mb=0.002)
    assert (output / "a.jsonl.out").read_bytes() == (tmp_path / "clean/a.jsonl.out").read_bytes()
    assert clean.ok
