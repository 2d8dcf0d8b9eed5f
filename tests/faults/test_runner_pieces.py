"""A shard too big to process at once is processed in pieces (issue 9.2).

A gzip object is one shard whatever it decompresses to, and ``samples`` turns each short line
into ``num_samples x prediction_length`` numbers: before pieces, one such shard was held
whole by its worker (its lines and its encoded output) and again by the driver. Now a worker
that finds a shard over the piece budget (64 MiB of lines or of estimated output) returns its
piece plan, and each piece goes out as a shard of its own with its own seed. The plan is a
pure function of the lines, so the bytes are the same on every run, executor and worker
count; memory is one piece's, whatever the input (a child process measures it).
"""

from __future__ import annotations

import gzip
from pathlib import Path

import orjson
import pytest
import torch
from rss import transform_rss_growth

from batchcast.api import transform
from batchcast.forecast.config import InferenceConfig
from batchcast.io.join import Join
from batchcast.runner.processor import (
    PIECE_OUTPUT_BYTES,
    ShardProcessor,
    WorkerOptions,
    shard_seed,
)
from batchcast.synthetic import synthetic_records

_SAMPLES = {"num_samples": 1000, "output_types": ["samples"]}
_BAD = {5: b"{}", 800: b'{"start": "2020-01-01 00:00:00"}', 1400: b"not json"}  # 0-based


def _gzip_input(path: Path, series: int, bad: dict[int, bytes]) -> Path:
    """``series`` good records as one gzip object, with ``bad`` lines at their indices."""
    records = iter(synthetic_records(series - len(bad), freq="H", length=(20, 40), seed=3))
    lines = [bad[i] if i in bad else orjson.dumps(next(records)) for i in range(series)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(b"\n".join(lines) + b"\n", compresslevel=1))
    return path


@pytest.fixture(scope="module")
def big_gzip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("pieces")
    return _gzip_input(folder / "in" / "a.jsonl.gz", 1500, _BAD)


def test_a_shard_over_the_budget_is_processed_in_pieces(
    tiny_model: str, big_gzip: Path, tmp_path: Path
) -> None:
    summary = transform(
        tiny_model,
        str(big_gzip),
        str(tmp_path / "out"),
        inference=_SAMPLES,
        executor="local",
        on_error="record",
    )
    assert summary.ok, summary.failure_reason
    assert summary.counts["shards"] == 1  # a gzip object: one shard
    # ~96 KB of estimated output a line (6 steps x 1000 samples at 16 bytes): 3 pieces.
    assert summary.counts["shard_pieces"] == 3
    lines = (tmp_path / "out/a.jsonl.gz.out").read_bytes().splitlines()
    assert len(lines) == 1500
    assert summary.counts["series"] == 1500 - len(_BAD)
    # Each error sits in its input line's slot, numbered in the file, whichever piece it is in.
    for i, line in enumerate(lines):
        record = orjson.loads(line)
        if i in _BAD:
            assert record["error"]["line"] == i + 1, record
        else:
            assert len(record["samples"]) == 1000
            assert len(record["samples"][0]) == 6
    assert [e["line"] for e in summary.errors] == [i + 1 for i in sorted(_BAD)]
    # A piece's real output is well inside the budget its estimate keeps.
    assert summary.counts["peak_bytes_held"] < PIECE_OUTPUT_BYTES + 256 * 1024 * 1024


def test_pieces_give_the_same_bytes_whatever_the_workers(
    tiny_model: str, big_gzip: Path, tmp_path: Path
) -> None:
    outputs = []
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        summary = transform(
            tiny_model,
            str(big_gzip),
            str(out),
            inference=_SAMPLES,
            executor="local",
            on_error="record",
            workers=workers,
            max_held_mb=1,  # one piece at a time: the order of arrival changes, not the bytes
        )
        assert summary.ok, summary.failure_reason
        outputs.append((out / "a.jsonl.gz.out").read_bytes())
    assert outputs[0] == outputs[1]


def test_a_shard_within_the_budget_keeps_its_whole_shard_seed(
    tiny_model: str, tmp_path: Path
) -> None:
    """Pieces change nothing for the shards that fit: a small file's bytes are its whole
    records forecast with the shard's seed, as before pieces existed."""
    small = _gzip_input(tmp_path / "in" / "a.jsonl.gz", 200, {})
    summary = transform(
        tiny_model, str(small), str(tmp_path / "out"), inference=_SAMPLES, executor="local"
    )
    assert summary.ok
    assert summary.counts["shard_pieces"] == 0
    options = WorkerOptions(
        inference=InferenceConfig.from_mapping(_SAMPLES), join=Join(), max_payload_mb=6, seed=0
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the job's worker thread: a GEMM's last bits follow it
    try:
        lines, _ = ShardProcessor(tiny_model, options).predict_lines(
            gzip.decompress(small.read_bytes()).splitlines(),
            uri=str(small),
            seed=shard_seed(0, "a.jsonl.gz", 0),
        )
    finally:
        torch.set_num_threads(threads)
    assert (tmp_path / "out/a.jsonl.gz.out").read_bytes() == b"".join(x + b"\n" for x in lines)


def test_peak_rss_of_a_huge_gzip_job_is_one_piece_not_the_output(
    tiny_model: str, tmp_path: Path
) -> None:
    data = _gzip_input(tmp_path / "in" / "a.jsonl.gz", 6000, {})
    warm = _gzip_input(tmp_path / "warm" / "w.jsonl.gz", 40, {})
    result = transform_rss_growth(
        tiny_model,
        warm,
        data,
        tmp_path / "out",
        inference=_SAMPLES,
        workers=1,
        executor="local",
        max_held_mb=16,
    )
    written = (tmp_path / "out/a.jsonl.gz.out").stat().st_size
    assert written > 5 * PIECE_OUTPUT_BYTES
    assert result["counts"]["shard_pieces"] >= 9
    # One shard once meant its whole output held by the worker and again by the driver (the
    # process grew by 1.7 GB for 370 MB written); now by a few pieces' worth at most: the
    # worker's piece in progress (samples, encoded lines) and the driver's piece being written.
    assert result["grew_kb"] * 1024 < 4 * PIECE_OUTPUT_BYTES, result


@pytest.mark.parametrize("pipeline", ["fused", "split"])
def test_pieces_on_ray_give_the_local_bytes(
    tiny_model: str, big_gzip: Path, tmp_path: Path, ray_local: str, pipeline: str
) -> None:
    """The Ray actors, and the split pipeline's decode/encode tasks, hand the piece plan on."""
    common = {"inference": _SAMPLES, "on_error": "record", "workers": 2}
    local = transform(
        tiny_model, str(big_gzip), str(tmp_path / "local"), executor="local", **common
    )
    on_ray = transform(
        tiny_model,
        str(big_gzip),
        str(tmp_path / "ray"),
        executor="ray",
        pipeline=pipeline,
        **common,
    )
    assert on_ray.ok, on_ray.failure_reason
    assert on_ray.counts["shard_pieces"] == local.counts["shard_pieces"] == 3
    out = "a.jsonl.gz.out"
    assert (tmp_path / "ray" / out).read_bytes() == (tmp_path / "local" / out).read_bytes()
