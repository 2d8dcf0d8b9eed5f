"""Golden output: fixed jobs whose output is pinned by committed files (tests/data/golden).

A refactor of the output path (worker encoding, renumbering, joins, AssembleWith, the sink)
must not change a byte a user gets. Each job here runs the real driver on a real local Ray
with a model built from a fixed seed (no training: the bytes then depend only on the
network's initialisation and the forecast path) over inputs written by the test, with bad
lines spread over several shards so that line numbering crosses shard boundaries.

Every record of every output file is compared with the golden file: keys and their order,
strings, nulls, line numbers and separators exactly, floats to ``REL_TOL`` (see there why
not bytes). When a golden file must change on purpose, rewrite it with
``BATCHCAST_UPDATE_GOLDEN=1 pytest tests/test_golden.py`` and say why in the commit.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import shutil
from pathlib import Path
from typing import Any

import orjson
import pytest
import torch

from batchcast.api import transform
from batchcast.forecast import DeepAR, ModelSpec
from batchcast.models import save_model
from batchcast.synthetic import synthetic_records

SHARD_MB = 0.002  # ~2 KB: several shards per file, finishing in any order


@pytest.fixture(scope="module")
def golden_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny hourly student-T network with one ``cat`` feature, initialised from seed 0."""
    spec = ModelSpec(
        freq="H",
        context_length=8,
        prediction_length=4,
        lags=(1, 2, 3, 24),
        num_time_features=4,
        cardinality=(3,),
        embedding_dims=(2,),
        num_cells=8,
        num_layers=1,
        default_scale=10.0,
    )
    torch.manual_seed(0)
    model = DeepAR(spec).eval()
    path = tmp_path_factory.mktemp("golden-model") / "model"
    return save_model(model, str(path), hyperparameters={"time_freq": "H"}, metadata={"seed": 0})


def _records(n: int, *, seed: int) -> list[dict[str, Any]]:
    return list(synthetic_records(n, freq="H", length=(10, 40), cardinality=(3,), seed=seed))


def _lines(records: list[dict[str, Any]]) -> list[bytes]:
    return [orjson.dumps(r) for r in records]


def _write(path: Path, lines: list[bytes], *, gz: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = b"".join(line + b"\n" for line in lines)
    path.write_bytes(gzip.compress(data, mtime=0) if gz else data)


# Bad lines of several kinds, each placed among good ones (line numbers 1-based).
_BAD = {
    1: b'{"start": "2020-01-01 00:00:00", "target": [1, 2',  # invalid JSON, on line 1
    9: b'{"item_id": "no-target", "start": "2020-01-01 00:00:00", "cat": [0]}',
    23: b'{"item_id": "bad-cat", "start": "2020-01-01 00:00:00", "target": [1, 2], "cat": [7]}',
    40: b"",  # a blank line
    61: b"[1, 2, 3]",
}


@pytest.fixture(scope="module")
def golden_inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``in/mixed.jsonl`` (bad lines in several shards), ``in/sub/good.jsonl``,
    ``in/packed.jsonl.gz`` (one shard) and ``nested/n.jsonl`` (records for the join)."""
    root = tmp_path_factory.mktemp("golden")
    good = iter(_lines(_records(80, seed=3)))
    mixed = [_BAD[i] if i in _BAD else next(good) for i in range(1, 71)]
    mixed.append(b'{"start": "2020-01-01 00:00:00", "target": [3, 4, 5], "cat": [1]}')  # no item_id
    _write(root / "in" / "mixed.jsonl", mixed)
    _write(root / "in" / "sub" / "good.jsonl", _lines(_records(25, seed=4)))
    _write(root / "in" / "packed.jsonl.gz", _lines(_records(15, seed=5)), gz=True)
    nested: list[Any] = [
        {"item_id": r["item_id"], "series": {k: r[k] for k in ("start", "target", "cat")}, "n": i}
        for i, r in enumerate(_records(30, seed=6))
    ]
    nested.insert(4, {"item_id": "no-series", "n": -1})  # the InputFilter selects nothing
    _write(root / "nested" / "n.jsonl", [orjson.dumps(r) for r in nested])
    return root


GOLDEN = Path(__file__).parent / "data" / "golden"
# Floats are compared to this relative tolerance, everything else exactly. The bytes of a
# forecast are pinned per machine, not across machines: MKL's GEMM kernels for AVX2 and for
# AVX-512 round differently in the last bits (measured: this job's outputs differ between an
# AMD EPYC and an Intel Xeon), and so do the fused cell and the torch-op cell (native.py).
# Within one machine, byte identity is what tests/forecast/test_sampling.py checks (any
# tile size, any number of workers); here the refactor-proofing is the structure: line
# order, line numbers, keys and their order, forwarded fields, error objects, separators.
REL_TOL = 1e-4
ABS_TOL = 1e-5  # for values near 0 (the outputs' scale is ~1 to 100)


def _values(data: bytes) -> list[Any]:
    """The JSON values of an output file, newline-separated or concatenated (AssembleWith None)."""
    text, decoder, out, i = data.decode(), json.JSONDecoder(), [], 0
    while i < len(text):
        if text[i] == "\n":
            i += 1
            continue
        value, i = decoder.raw_decode(text, i)
        out.append(value)
    return out


def _same(got: Any, want: Any, where: str) -> str | None:
    """Where ``got`` differs from ``want`` (None when they match), keys in order."""
    if isinstance(want, dict):
        if not isinstance(got, dict) or list(got) != list(want):
            return f"{where}: keys {list(got) if isinstance(got, dict) else got!r} != {list(want)}"
        return next((d for k in want if (d := _same(got[k], want[k], f"{where}.{k}"))), None)
    if isinstance(want, list):
        if not isinstance(got, list) or len(got) != len(want):
            return f"{where}: {got!r} != {want!r}"
        return next(
            (d for i, w in enumerate(want) if (d := _same(got[i], w, f"{where}[{i}]"))), None
        )
    if isinstance(want, float) and isinstance(got, (int, float)) and not isinstance(got, bool):
        ok = math.isclose(got, want, rel_tol=REL_TOL, abs_tol=ABS_TOL)
        return None if ok else f"{where}: {got!r} != {want!r} (rel_tol {REL_TOL})"
    return None if type(got) is type(want) and got == want else f"{where}: {got!r} != {want!r}"


def _check_against_golden(folder: Path, case: str) -> None:
    """Compare every ``.out`` under ``folder`` with ``tests/data/golden/<case>``.

    ``BATCHCAST_UPDATE_GOLDEN=1`` rewrites the golden files from this run instead (say why in
    the commit that changes them).
    """
    golden = GOLDEN / case
    got_files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.out"))
    if os.environ.get("BATCHCAST_UPDATE_GOLDEN") == "1":
        shutil.rmtree(golden, ignore_errors=True)
        for name in got_files:
            (golden / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(folder / name, golden / name)
    want_files = sorted(p.relative_to(golden).as_posix() for p in golden.rglob("*.out"))
    assert got_files == want_files
    for name in want_files:
        got, want = (folder / name).read_bytes(), (golden / name).read_bytes()
        assert got.count(b"\n") == want.count(b"\n"), f"{name}: line separators differ"
        got_values, want_values = _values(got), _values(want)
        assert len(got_values) == len(want_values), f"{name}: record count differs"
        for n, (g, w) in enumerate(zip(got_values, want_values, strict=True), start=1):
            diff = _same(g, w, f"record {n}")
            assert diff is None, f"{name}: {diff}"


@pytest.mark.usefixtures("ray_local")
def test_record_mode_with_forwarded_fields(
    golden_model: str, golden_inputs: Path, tmp_path: Path
) -> None:
    summary = transform(
        golden_model,
        str(golden_inputs / "in"),
        str(tmp_path / "out"),
        on_error="record",
        forward_fields=["item_id"],
        shard_mb=SHARD_MB,
        workers=2,
        seed=7,
    )
    assert summary.ok, summary.failure_reason
    assert summary.counts["shards"] > 5
    assert [e["line"] for e in summary.errors] == sorted(_BAD)
    _check_against_golden(tmp_path / "out", "record_mode")


@pytest.mark.usefixtures("ray_local")
def test_join_with_filters_on_the_split_pipeline(
    golden_model: str, golden_inputs: Path, tmp_path: Path
) -> None:
    body = {
        "TransformInput": {
            "DataSource": {"S3DataSource": {"S3Uri": str(golden_inputs / "nested")}}
        },
        "TransformOutput": {"S3OutputPath": str(tmp_path / "out")},
        "DataProcessing": {
            "InputFilter": "$.series",
            "JoinSource": "Input",
            "OutputFilter": "$['item_id','n','SageMakerOutput']",
        },
        "Environment": {
            "DEEPAR_INFERENCE_CONFIG": orjson.dumps(
                {"num_samples": 5, "output_types": ["samples", "mean"]}
            ).decode()
        },
    }
    summary = transform(
        golden_model, job=body, on_error="record", shard_mb=SHARD_MB, workers=2, pipeline="split"
    )
    assert summary.ok, summary.failure_reason
    assert [e["line"] for e in summary.errors] == [5]
    _check_against_golden(tmp_path / "out", "join_split")


@pytest.mark.usefixtures("ray_local")
def test_assemble_with_none_in_record_mode(
    golden_model: str, golden_inputs: Path, tmp_path: Path
) -> None:
    summary = transform(
        golden_model,
        str(golden_inputs / "in"),
        str(tmp_path / "out"),
        on_error="record",
        assemble_with="None",
        shard_mb=SHARD_MB,
        workers=1,
    )
    assert summary.ok, summary.failure_reason
    _check_against_golden(tmp_path / "out", "assemble_none")
