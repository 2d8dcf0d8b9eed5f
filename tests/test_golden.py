"""Golden output: fixed jobs whose output bytes are pinned by their sha256.

A refactor of the output path (worker encoding, renumbering, joins, AssembleWith, the sink)
must not change a byte a user gets. Each job here runs the real driver on a real local Ray
with a model built from a fixed seed (no training: the bytes then depend only on the
network's initialisation and the forecast path) over inputs written by the test, with bad
lines spread over several shards so that line numbering crosses shard boundaries.

Each output file is pinned twice: the whole file, and its forecast lines alone (the error
lines left out). A deliberate change to error lines only (issue 8: they keep
``--forward-fields``) then shows up as a change to the first hash and not the second.

When a pin must change on purpose, say why in the commit that changes it.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import torch

from batchcast.api import transform
from batchcast.forecast import DeepAR, ModelSpec, save_model
from batchcast.synthetic import synthetic_records

SHARD_MB = 0.002  # ~2 KB: several shards per file, finishing in any order


@pytest.fixture(scope="module")
def ray_local() -> Iterator[None]:
    """A private 2-CPU local Ray for this module."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    saved = os.environ.pop("RAY_ADDRESS", None)
    try:
        ray.init(
            address="local", num_cpus=2, include_dashboard=False, logging_level=logging.WARNING
        )
        yield
    finally:
        ray.shutdown()
        if saved is not None:
            os.environ["RAY_ADDRESS"] = saved


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


def _digests(folder: Path) -> dict[str, tuple[int, str, str]]:
    """Per output file: (lines, sha256 of the bytes, sha256 of the non-error lines)."""
    out = {}
    for path in sorted(folder.rglob("*.out")):
        data = path.read_bytes()
        lines = data.split(b"\n")
        good = b"\n".join(
            x for x in lines if not x.startswith(b'{"error"') and b'"error":{' not in x
        )
        name = path.relative_to(folder).as_posix()
        out[name] = (data.count(b"\n"), _sha(data), _sha(good))
    return out


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


GOLDEN_RECORD_MODE = {
    "mixed.jsonl.out": (
        71,
        "7b021b844c2ee19f2313c98c1964239b278c829a341d3fb523b2036f5972395a",
        "f8a439baf3318d2ccdc848d42bbcbeeeecfb539748bbb2292b47d834850e874e",
    ),
    "packed.jsonl.gz.out": (
        15,
        "d2f64a23508f6fc58edbf5865122a7973c93b12b607cb5664860e206ba3d6a26",
        "d2f64a23508f6fc58edbf5865122a7973c93b12b607cb5664860e206ba3d6a26",
    ),
    "sub/good.jsonl.out": (
        25,
        "88a71e52b292e347f8002911c16ecd11796c93e9ea90e3143c05c878445e5803",
        "88a71e52b292e347f8002911c16ecd11796c93e9ea90e3143c05c878445e5803",
    ),
}


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
    assert _digests(tmp_path / "out") == GOLDEN_RECORD_MODE


GOLDEN_JOIN = {
    "n.jsonl.out": (
        31,
        "9738883eea70be576b0976c57d87c17df87bf6579f12218ae9803ff2f71fa926",
        "3039d1f7dcb0c4315fe2d652bfaf9dd51247254ec36933a05b2fc621fc84ae94",
    ),
}


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
    assert _digests(tmp_path / "out") == GOLDEN_JOIN


GOLDEN_ASSEMBLE_NONE = {
    "mixed.jsonl.out": (
        0,
        "40dedd9c8e37314566aa18d8ec089de20920c30a45d28f0381832f3e7716e3ba",
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    ),
    "packed.jsonl.gz.out": (
        0,
        "938244be2f2d5370d14a7a059408e09dd2a10bc62fa4f78fc0ea5d79750e0104",
        "938244be2f2d5370d14a7a059408e09dd2a10bc62fa4f78fc0ea5d79750e0104",
    ),
    "sub/good.jsonl.out": (
        0,
        "ce242e73dab7d852548a6b841fa7a6ba878c69524a2ec90a779eb37ccd50352a",
        "ce242e73dab7d852548a6b841fa7a6ba878c69524a2ec90a779eb37ccd50352a",
    ),
}


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
    assert _digests(tmp_path / "out") == GOLDEN_ASSEMBLE_NONE
