"""A job never reads its own output back as input (hardening issue, runner item 4): an output
folder inside the input folder is left out of the listing, so a rerun sees the same inputs
as the first run, not the first run's ``.out`` files and summary.

A real local Ray shared by the module, a tiny trained model, real files.
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from batchcast.api import transform
from batchcast.synthetic import synthetic_records, write_jsonl


def _inputs(root: Path) -> Path:
    write_jsonl(root / "a.jsonl", synthetic_records(20, freq="H", length=(20, 40), seed=3))
    write_jsonl(root / "sub" / "b.jsonl", synthetic_records(5, freq="H", length=(20, 40), seed=4))
    return root


def _outputs(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


@pytest.mark.usefixtures("ray_local")
def test_an_output_inside_the_input_is_not_read_back_on_a_rerun(
    tiny_model: str, tmp_path: Path
) -> None:
    root = _inputs(tmp_path / "data")
    output = root / "out"
    first = transform(tiny_model, str(root), str(output), errors_file=True)
    assert first.ok, first.failure_reason
    before = {p: (output / p).read_bytes() for p in ("a.jsonl.out", "sub/b.jsonl.out")}
    again = transform(tiny_model, str(root), str(output), errors_file=True)
    assert again.ok, again.failure_reason
    assert [f["input"] for f in again.files] == [str(root / "a.jsonl"), str(root / "sub/b.jsonl")]
    assert again.counts["files"] == 2
    assert _outputs(output) == [
        "_batchcast_errors.jsonl",
        "_batchcast_summary.json",
        "a.jsonl.out",
        "sub/b.jsonl.out",
    ]
    assert {p: (output / p).read_bytes() for p in before} == before  # the same job, same bytes


@pytest.mark.usefixtures("ray_local")
def test_an_output_that_is_the_input_folder_excludes_nothing(
    tiny_model: str, tmp_path: Path
) -> None:
    # Writing beside the inputs is allowed; leaving the output out would leave out everything.
    root = _inputs(tmp_path / "data")
    summary = transform(tiny_model, str(root / "a.jsonl"), str(root))
    assert summary.ok, summary.failure_reason
    assert orjson.loads((root / "_batchcast_summary.json").read_bytes())["counts"]["files"] == 1
    assert (root / "a.jsonl.out").exists()
