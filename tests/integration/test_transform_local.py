"""``batchcast transform`` end to end on a real local Ray (2 CPUs) with local files.

Every job here runs the real driver, real model-worker actors and a real (tiny) model. The
reference for "the same output" is always a clean run of the same files under the same
names: a shard's randomness derives from (seed, relative path, shard index), so the same
files cut into the same shards must give the same bytes, whatever else differs.
"""

from __future__ import annotations

import concurrent.futures
import gzip
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import ray
from transform_harness import (
    PREDICTION_LENGTH,
    dumps,
    hidden_files,
    inference_records,
    read_outputs,
    write_lines,
)

from batchcast.api import transform
from batchcast.errors import ShardError
from batchcast.io import list_inputs, plan_shards
from batchcast.runner import SUMMARY_NAME, JobSummary
from batchcast.runner.pool import ACTOR_NAMESPACE, worker_actor_names

pytestmark = pytest.mark.usefixtures("ray_local")

SHARD_MB = 0.002  # ~2 KB: hundreds of shards per file, finishing in any order
JOB_FILE = Path(__file__).parents[1] / "data" / "create_transform_job.json"
DEFAULT_KEYS = ["quantiles", "mean"]  # SPEC.md §3's order, for the default output_types


def _lines(data: bytes) -> list[bytes]:
    assert data == b"" or data.endswith(b"\n")
    return data.split(b"\n")[:-1]


def _summary_file(output: Path) -> dict[str, Any]:
    return orjson.loads((output / SUMMARY_NAME).read_bytes())


def _shard_of_each_line(path: Path, shard_mb: float) -> list[int]:
    """The shard each line of ``path`` belongs to (the one in which it starts)."""
    [obj] = list_inputs(str(path))
    shards = plan_shards([obj], target_bytes=int(shard_mb * 1024 * 1024))
    starts = np.cumsum([0] + [len(line) + 1 for line in path.read_bytes().split(b"\n")[:-1]])
    bounds = np.array([s.start for s in shards])
    return [int(np.searchsorted(bounds, start, side="right")) - 1 for start in starts[:-1]]


# ---------------------------------------------------------------------------------------------
# Inputs and the reference run


@pytest.fixture(scope="module")
def plain_inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of valid records: a big file, a small one, a nested one, an empty one, a
    gzip one, and a hidden file that is not input."""
    root = tmp_path_factory.mktemp("plain") / "in"
    write_lines(root / "a.jsonl", dumps(inference_records(1500, seed=10)))
    write_lines(root / "b.jsonl", dumps(inference_records(60, seed=11)))
    write_lines(root / "sub" / "deeper" / "c.jsonl", dumps(inference_records(40, seed=12)))
    (root / "empty.jsonl").write_bytes(b"")
    gz = b"".join(line + b"\n" for line in dumps(inference_records(80, seed=13)))
    (root / "d.jsonl.gz").write_bytes(gzip.compress(gz))
    write_lines(root / ".hidden.jsonl", [b"not input"])
    return root


PLAIN_OUTPUTS = [
    "a.jsonl.out",
    "b.jsonl.out",
    "d.jsonl.gz.out",
    "empty.jsonl.out",
    "sub/deeper/c.jsonl.out",
]


def _input_lines(root: Path, relpath: str) -> list[bytes]:
    data = (root / relpath).read_bytes()
    return _lines(gzip.decompress(data) if relpath.endswith(".gz") else data)


@pytest.fixture(scope="module")
def clean_run(
    tiny_model: str, plain_inputs: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[JobSummary, dict[str, bytes]]:
    """The reference: the plain inputs, 2 fused workers, tiny shards; summary and outputs."""
    output = tmp_path_factory.mktemp("clean") / "out"
    summary = transform(tiny_model, str(plain_inputs), str(output), workers=2, shard_mb=SHARD_MB)
    assert summary.status == "Completed", summary.failure_reason
    return summary, read_outputs(output)


# ---------------------------------------------------------------------------------------------
# Order, identity, layout


def test_one_line_per_input_line_in_order_across_many_small_shards(
    tiny_model: str,
    plain_inputs: Path,
    clean_run: tuple[JobSummary, dict[str, bytes]],
    tmp_path: Path,
) -> None:
    output = tmp_path / "out"
    summary = transform(
        tiny_model,
        str(plain_inputs),
        str(output),
        workers=2,
        shard_mb=SHARD_MB,
        forward_fields=["item_id"],
    )
    assert summary.ok, summary.failure_reason
    outputs = read_outputs(output)
    # Nested inputs give nested outputs; the hidden file is no input; gzip keeps its name.
    assert sorted(outputs) == PLAIN_OUTPUTS
    assert summary.counts["shards"] > 200  # a.jsonl alone is ~450 KB
    _, clean = clean_run
    for name, data in outputs.items():
        relpath = name.removesuffix(".out")
        inputs = _input_lines(plain_inputs, relpath)
        lines = _lines(data)
        assert len(lines) == len(inputs), name
        for i, (line, source, reference) in enumerate(
            zip(lines, inputs, _lines(clean[name]), strict=True)
        ):
            record = orjson.loads(line)
            assert record["item_id"] == orjson.loads(source)["item_id"], f"{name}:{i + 1}"
            assert list(record) == ["item_id", *DEFAULT_KEYS]
            # forward_fields adds the field and changes nothing else.
            assert {k: v for k, v in record.items() if k != "item_id"} == orjson.loads(reference)
    assert hidden_files(output) == []
    # The reorder buffer and the in-flight shards stayed within the window.
    assert 0 < summary.counts["peak_shards_held"] <= summary.counts["window_shards"] == 16


def test_the_summary_counts_every_file_and_holds_the_configuration(
    plain_inputs: Path, clean_run: tuple[JobSummary, dict[str, bytes]]
) -> None:
    summary, _ = clean_run
    assert summary.summary_uri is not None
    on_disk = _summary_file(Path(summary.summary_uri).parent)
    assert on_disk == orjson.loads(orjson.dumps(summary.to_dict()))
    files = {Path(f["input"]).relative_to(plain_inputs).as_posix(): f for f in on_disk["files"]}
    assert {k: (v["status"], v["lines"], v["series"], v["errors"]) for k, v in files.items()} == {
        "a.jsonl": ("committed", 1500, 1500, 0),
        "b.jsonl": ("committed", 60, 60, 0),
        "d.jsonl.gz": ("committed", 80, 80, 0),
        "empty.jsonl": ("committed", 0, 0, 0),
        "sub/deeper/c.jsonl": ("committed", 40, 40, 0),
    }
    counts = on_disk["counts"]
    assert (counts["files"], counts["files_committed"], counts["lines"], counts["series"]) == (
        5,
        5,
        1680,
        1680,
    )
    assert (counts["record_errors"], counts["workers"], counts["worker_restarts"]) == (0, 2, 0)
    assert on_disk["status"] == "Completed"
    assert on_disk["errors"] == []
    assert on_disk["job"]["inference"]["num_samples"] == 100
    assert on_disk["job"]["shard_mb"] == SHARD_MB
    assert on_disk["timings"]["series_per_s"] > 0
    assert on_disk["timings"]["total_s"] >= on_disk["timings"]["first_output_s"] > 0
    # The gzip file was one shard whatever shard_mb says: a gzip stream cannot be entered
    # in the middle. The others were cut by size.
    assert counts["shards"] == len(
        plan_shards(list_inputs(str(plain_inputs)), target_bytes=int(SHARD_MB * 1024 * 1024))
    )


@pytest.mark.parametrize(
    "options",
    [{"workers": 1, "pipeline": "fused"}, {"workers": 2, "pipeline": "split"}],
    ids=["1-worker-fused", "2-workers-split"],
)
def test_output_is_byte_identical_whatever_the_workers_and_the_pipeline(
    tiny_model: str,
    plain_inputs: Path,
    clean_run: tuple[JobSummary, dict[str, bytes]],
    tmp_path: Path,
    options: dict[str, Any],
) -> None:
    # The split pipeline (decode and encode in CPU tasks, sampling in the actor: the GPU
    # code path) runs here on CPU and must give the bytes of the fused one.
    summary = transform(
        tiny_model, str(plain_inputs), str(tmp_path / "out"), shard_mb=SHARD_MB, **options
    )
    assert summary.ok, summary.failure_reason
    assert summary.counts["workers"] == options["workers"]
    assert read_outputs(tmp_path / "out") == clean_run[1]


def test_assemble_with_none_concatenates_the_records(
    tiny_model: str,
    plain_inputs: Path,
    clean_run: tuple[JobSummary, dict[str, bytes]],
    tmp_path: Path,
) -> None:
    summary = transform(
        tiny_model,
        str(plain_inputs),
        str(tmp_path / "out"),
        shard_mb=SHARD_MB,
        assemble_with="None",
    )
    assert summary.ok
    outputs = read_outputs(tmp_path / "out")
    assert outputs == {name: data.replace(b"\n", b"") for name, data in clean_run[1].items()}
    assert outputs["a.jsonl.out"].count(b"}{") == 1499


def test_resume_skips_existing_outputs_and_regenerates_missing_ones(
    tiny_model: str,
    plain_inputs: Path,
    clean_run: tuple[JobSummary, dict[str, bytes]],
    tmp_path: Path,
) -> None:
    output = tmp_path / "out"
    summary, clean = clean_run
    assert summary.summary_uri is not None
    shutil.copytree(Path(summary.summary_uri).parent, output)
    (output / "a.jsonl.out").unlink()
    marker = b"marker: resume must not touch this file\n"
    (output / "sub" / "deeper" / "c.jsonl.out").write_bytes(marker)
    resumed = transform(
        tiny_model, str(plain_inputs), str(output), workers=2, shard_mb=SHARD_MB, resume=True
    )
    assert resumed.ok
    assert (output / "sub" / "deeper" / "c.jsonl.out").read_bytes() == marker
    assert (output / "a.jsonl.out").read_bytes() == clean["a.jsonl.out"]
    assert resumed.counts["files_skipped"] == 4
    assert resumed.counts["series"] == 1500
    statuses = {Path(f["input"]).name: f["status"] for f in resumed.files}
    assert statuses == {
        "a.jsonl": "committed",
        "b.jsonl": "skipped",
        "c.jsonl": "skipped",
        "d.jsonl.gz": "skipped",
        "empty.jsonl": "skipped",
    }


# ---------------------------------------------------------------------------------------------
# Compression


def test_compression_type_gzip_reads_every_object_as_gzip(tiny_model: str, tmp_path: Path) -> None:
    # CompressionType Gzip: a gzip object whose name does not end in .gz is still read as
    # gzip. One shard either way, so it must equal the plain file read as one shard.
    lines = dumps(inference_records(50, seed=20))
    plain = write_lines(tmp_path / "plain" / "x.jsonl", lines)
    gzipped = tmp_path / "gzipped" / "x.jsonl"
    gzipped.parent.mkdir()
    gzipped.write_bytes(gzip.compress(plain.read_bytes()))
    a = transform(tiny_model, str(gzipped.parent), str(tmp_path / "a"), compression="Gzip")
    b = transform(tiny_model, str(plain.parent), str(tmp_path / "b"), shard_mb=100)
    assert a.ok
    assert b.ok
    assert (a.counts["shards"], b.counts["shards"]) == (1, 1)
    assert read_outputs(tmp_path / "a") == read_outputs(tmp_path / "b")
    assert len(_lines((tmp_path / "a" / "x.jsonl.out").read_bytes())) == 50


# ---------------------------------------------------------------------------------------------
# Record errors and the failure modes


MAX_PAYLOAD_MB = 1


def _bad_lines(good: list[dict[str, Any]]) -> list[tuple[bytes, str, str]]:
    """One line of each record error kind: (line, field, a word its message must hold)."""
    base = good[0]
    n = len(base["target"])

    def variant(**changes: Any) -> bytes:
        record = {**base, **changes}
        return orjson.dumps({k: v for k, v in record.items() if v is not None})

    dyn_nan = [list(base["dynamic_feat"][0]), list(base["dynamic_feat"][1])]
    dyn_nan[1][3] = "NaN"
    dyn_short = [base["dynamic_feat"][0][:-1], base["dynamic_feat"][1]]
    oversize = variant(padding="x" * (MAX_PAYLOAD_MB * 1024 * 1024 + 10))
    return [
        (b'{"start": "2020-01-01 00:00:00", "target": [1, 2', "$", "invalid JSON"),
        (b"[1, 2, 3]", "$", "array"),
        (b"", "$", "blank"),
        (variant(target=None), "target", "missing"),
        (variant(start="2020-01-01 00:00:00+01:00"), "start", "time zone"),
        (variant(target=[1.0, True, *base["target"][2:]]), "target", "boolean"),
        (variant(dynamic_feat=dyn_nan), "dynamic_feat", "missing values"),
        (variant(cat=[3, 0]), "cat", "[0, 3)"),
        (variant(dynamic_feat=dyn_short), "dynamic_feat", f"{n + PREDICTION_LENGTH - 1}"),
        (oversize, "$", "MaxPayloadInMB"),
    ]


@pytest.fixture(scope="module")
def mixed_inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Feature-model inputs: two good files and ``mixed.jsonl``, whose bad lines (every kind)
    sit between good ones, the first on line 1 and the last on the last line."""
    root = tmp_path_factory.mktemp("mixed") / "in"
    write_lines(root / "good-1.jsonl", dumps(inference_records(40, seed=30, features=True)))
    write_lines(
        root / "nested" / "good-2.jsonl", dumps(inference_records(30, seed=31, features=True))
    )
    good = inference_records(200, seed=32, features=True)
    bad = _bad_lines(good)
    lines: list[bytes] = []
    expected: list[tuple[int, str, str]] = []  # (line, field, word)
    good_lines = iter(dumps(good[1:]))
    for k, (line, field, word) in enumerate(bad):
        if k:
            lines.extend(next(good_lines) for _ in range(12))
        lines.append(line)
        expected.append((len(lines), field, word))
    clean = [line for i, line in enumerate(lines, 1) if i not in {e[0] for e in expected}]
    write_lines(root / "mixed.jsonl", lines)
    return {"root": root, "expected": expected, "lines": lines, "clean": clean}


def _check_errors(errors: list[dict[str, Any]], mixed: dict[str, Any]) -> None:
    uri = str(mixed["root"] / "mixed.jsonl")
    assert [(e["uri"], e["line"], e["field"]) for e in errors] == [
        (uri, line, field) for line, field, _ in mixed["expected"]
    ]
    for error, (line, _, word) in zip(errors, mixed["expected"], strict=True):
        assert word in error["message"], (line, error["message"])


def test_the_bad_lines_sit_in_many_shards(mixed_inputs: dict[str, Any]) -> None:
    shard_of = _shard_of_each_line(mixed_inputs["root"] / "mixed.jsonl", SHARD_MB)
    shards = {shard_of[line - 1] for line, _, _ in mixed_inputs["expected"]}
    assert len(shards) == len(mixed_inputs["expected"])  # so numbering must cross shards


def test_fail_file_skips_the_bad_file_finishes_the_others_and_lists_every_bad_line(
    tiny_feature_model: str, mixed_inputs: dict[str, Any], tmp_path: Path
) -> None:
    output = tmp_path / "out"
    summary = transform(
        tiny_feature_model,
        str(mixed_inputs["root"]),
        str(output),
        shard_mb=SHARD_MB,
        max_payload_mb=MAX_PAYLOAD_MB,
        on_error="fail-file",
    )
    assert summary.status == "Failed"
    assert not summary.ok
    outputs = read_outputs(output)
    assert sorted(outputs) == ["good-1.jsonl.out", "nested/good-2.jsonl.out"]
    assert len(_lines(outputs["good-1.jsonl.out"])) == 40
    assert len(_lines(outputs["nested/good-2.jsonl.out"])) == 30
    _check_errors(summary.errors, mixed_inputs)
    on_disk = _summary_file(output)
    assert on_disk["status"] == "Failed"
    _check_errors(on_disk["errors"], mixed_inputs)
    mixed = next(f for f in on_disk["files"] if f["input"].endswith("mixed.jsonl"))
    n_lines = len(mixed_inputs["lines"])
    assert mixed == {
        "input": str(mixed_inputs["root"] / "mixed.jsonl"),
        "output": None,
        "status": "failed",
        "lines": n_lines,
        "series": n_lines - 10,
        "errors": 10,
    }
    assert on_disk["counts"]["files_failed"] == 1
    assert hidden_files(output) == []


def test_record_mode_writes_each_error_in_place_with_its_absolute_line(
    tiny_feature_model: str, mixed_inputs: dict[str, Any], tmp_path: Path
) -> None:
    output = tmp_path / "out"
    summary = transform(
        tiny_feature_model,
        str(mixed_inputs["root"]),
        str(output),
        shard_mb=SHARD_MB,
        max_payload_mb=MAX_PAYLOAD_MB,
        on_error="record",
    )
    assert summary.status == "Completed"  # every line has its answer
    _check_errors(summary.errors, mixed_inputs)
    lines = _lines((output / "mixed.jsonl.out").read_bytes())
    assert len(lines) == len(mixed_inputs["lines"])
    bad = {line: (field, word) for line, field, word in mixed_inputs["expected"]}
    for i, line in enumerate(lines, 1):
        record = orjson.loads(line)
        if i in bad:
            assert list(record) == ["error"]
            assert record["error"]["line"] == i
            assert record["error"]["field"] == bad[i][0]
            assert bad[i][1] in record["error"]["message"]
        else:
            assert list(record) == DEFAULT_KEYS
            assert len(record["mean"]) == PREDICTION_LENGTH


def test_record_mode_leaves_every_good_forecast_as_a_clean_run_gives_it(
    tiny_feature_model: str, mixed_inputs: dict[str, Any], tmp_path: Path
) -> None:
    # One shard each: the good records form the same batch with or without the bad lines
    # among them, so their forecasts must be the same bytes.
    mixed = write_lines(tmp_path / "mixed" / "mixed.jsonl", mixed_inputs["lines"])
    clean = write_lines(tmp_path / "clean" / "mixed.jsonl", mixed_inputs["clean"])
    options = {"shard_mb": 100, "max_payload_mb": MAX_PAYLOAD_MB}
    a = transform(tiny_feature_model, str(mixed), str(tmp_path / "a"), on_error="record", **options)
    b = transform(tiny_feature_model, str(clean), str(tmp_path / "b"), **options)
    assert a.ok
    assert b.ok
    with_errors = _lines((tmp_path / "a" / "mixed.jsonl.out").read_bytes())
    bad = {line for line, _, _ in mixed_inputs["expected"]}
    good_lines = [line for i, line in enumerate(with_errors, 1) if i not in bad]
    assert good_lines == _lines((tmp_path / "b" / "mixed.jsonl.out").read_bytes())


def test_fail_fast_stops_and_leaves_no_partial_output(
    tiny_model: str,
    plain_inputs: Path,
    clean_run: tuple[JobSummary, dict[str, bytes]],
    tmp_path: Path,
) -> None:
    # The plain inputs plus a file sorted first whose 3rd line is bad: the job must stop
    # long before the ~1,700 good series are all forecast.
    root = tmp_path / "in"
    shutil.copytree(plain_inputs, root)
    lines = dumps(inference_records(30, seed=40))
    lines[2] = b'{"start": "2020-01-01 00:00:00", "target": "oops"}'
    write_lines(root / "0-first.jsonl", lines)
    output = tmp_path / "out"
    summary = transform(tiny_model, str(root), str(output), shard_mb=SHARD_MB, on_error="fail-fast")
    assert summary.status == "Failed"
    assert "fail-fast" in str(summary.failure_reason)
    assert [(e["line"], e["field"]) for e in summary.errors] == [(3, "target")]
    assert summary.counts["series"] < 1000
    assert summary.counts["files_aborted"] >= 1
    # No partial output: a file is either complete (and then exactly the clean run's) or absent.
    outputs = read_outputs(output)
    assert "0-first.jsonl.out" not in outputs
    for name, data in outputs.items():
        assert data == clean_run[1][name], name
    assert hidden_files(output) == []
    assert _summary_file(output)["status"] == "Failed"
    # The job's workers are gone (a leaked actor would hold a CPU and starve the next job).
    deadline = time.monotonic() + 10
    while worker_actor_names(summary.name) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert worker_actor_names(summary.name) == []


def test_a_worker_killed_mid_job_changes_nothing_in_the_output(
    tiny_model: str,
    plain_inputs: Path,
    clean_run: tuple[JobSummary, dict[str, bytes]],
    tmp_path: Path,
) -> None:
    output = tmp_path / "out"
    name = "kill-test"
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as executor:
        job = executor.submit(
            transform,
            tiny_model,
            str(plain_inputs),
            str(output),
            workers=2,
            shard_mb=SHARD_MB,
            name=name,
        )
        # Wait until the job is writing (a temporary output file exists), then kill a worker.
        deadline = time.monotonic() + 60
        while not hidden_files(output) and not job.done() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not job.done(), "the job ended before a worker could be killed"
        names = worker_actor_names(name)
        assert len(names) == 2
        victim = ray.get_actor(names[0], namespace=ACTOR_NAMESPACE)
        pid = ray.get(victim.pid.remote())
        os.kill(pid, signal.SIGKILL)
        summary = job.result(timeout=120)
    assert summary.ok, summary.failure_reason
    assert summary.counts["worker_restarts"] >= 1
    assert summary.counts["shards_retried"] >= 1
    assert read_outputs(output) == clean_run[1]
    assert _summary_file(output)["counts"]["worker_restarts"] >= 1


def _truncated_inputs(root: Path, plain_inputs: Path) -> Path:
    # A truncated gzip file sorted first: its one shard decompresses a few MB, then fails
    # inside a worker, by which time a.jsonl's output is open and being written.
    root.mkdir()
    data = b"".join(line + b"\n" for line in dumps(inference_records(1000, seed=45)) * 10)
    (root / "0-truncated.jsonl.gz").write_bytes(gzip.compress(data)[:-100])
    shutil.copy(plain_inputs / "a.jsonl", root / "a.jsonl")
    return root


def test_a_truncated_gzip_file_fails_alone_under_fail_file(
    tiny_model: str,
    plain_inputs: Path,
    clean_run: tuple[JobSummary, dict[str, bytes]],
    tmp_path: Path,
) -> None:
    # SPEC §4's fail-file: a bad file gets no .out, the other files finish, the job fails.
    # Damaged bytes are the file's fault like a bad record, so the default follows that rule
    # (it used to abort the whole job and drop a.jsonl's finished output).
    root = _truncated_inputs(tmp_path / "in", plain_inputs)
    output = tmp_path / "out"
    summary = transform(tiny_model, str(root), str(output), shard_mb=SHARD_MB, name="unreadable")
    assert summary.status == "Failed"
    on_disk = _summary_file(output)
    truncated = str(root / "0-truncated.jsonl.gz")
    [file_error] = on_disk["file_errors"]
    assert file_error["uri"] == truncated
    assert file_error["message"].startswith("CorruptInputError: ")
    assert on_disk["failure_reason"].startswith("1 unreadable file(s), first ")
    statuses = {Path(f["input"]).name: f["status"] for f in on_disk["files"]}
    assert statuses == {"0-truncated.jsonl.gz": "failed", "a.jsonl": "committed"}
    assert read_outputs(output) == {"a.jsonl.out": clean_run[1]["a.jsonl.out"]}
    assert hidden_files(output) == []


def test_a_truncated_gzip_file_stops_a_fail_fast_job_cleanly(
    tiny_model: str, plain_inputs: Path, tmp_path: Path
) -> None:
    # fail-fast: the job raises, aborts a.jsonl's open output, writes a Failed summary and
    # kills its workers.
    root = _truncated_inputs(tmp_path / "in", plain_inputs)
    output = tmp_path / "out"
    with pytest.raises(ShardError, match=r"0-truncated\.jsonl\.gz"):
        transform(
            tiny_model,
            str(root),
            str(output),
            shard_mb=SHARD_MB,
            name="unreadable-fast",
            on_error="fail-fast",
        )
    on_disk = _summary_file(output)
    assert on_disk["status"] == "Failed"
    # The reason is the cause's own type and text (which file, why), not the wrapper's.
    assert on_disk["failure_reason"].startswith("CorruptInputError: ")
    assert "0-truncated.jsonl.gz" in on_disk["failure_reason"]
    statuses = {Path(f["input"]).name: f["status"] for f in on_disk["files"]}
    # Pending when the job failed (whether or not its first shards were written yet: that is
    # the workers' timing), so aborted: no .out and no temporary file.
    assert statuses["a.jsonl"] == "aborted"
    assert read_outputs(output) == {}
    assert hidden_files(output) == []
    deadline = time.monotonic() + 10
    while worker_actor_names("unreadable-fast") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert worker_actor_names("unreadable-fast") == []


def test_more_workers_than_cpus_are_capped_instead_of_waiting_forever(
    tiny_model: str,
    plain_inputs: Path,
    clean_run: tuple[JobSummary, dict[str, bytes]],
    tmp_path: Path,
) -> None:
    # MaxConcurrentTransforms may exceed the CPUs; a worker that can never be placed would
    # make the job wait for it forever on this 2-CPU Ray.
    summary = transform(
        tiny_model, str(plain_inputs), str(tmp_path / "out"), shard_mb=SHARD_MB, workers=5
    )
    assert summary.ok
    assert summary.counts["workers"] == 2
    assert read_outputs(tmp_path / "out") == clean_run[1]


# ---------------------------------------------------------------------------------------------
# Joins and the inference configuration


def test_data_processing_join_with_input_filter_and_output_filter(
    tiny_model: str, tmp_path: Path
) -> None:
    records = inference_records(40, seed=50)
    flat = write_lines(tmp_path / "flat" / "j.jsonl", dumps(records))
    nested_records: list[Any] = [
        {"item_id": r["item_id"], "series": {"start": r["start"], "target": r["target"]}, "note": 1}
        for r in records
    ]
    nested_records.insert(7, {"item_id": "no-series", "note": 2})  # the InputFilter finds nothing
    nested = write_lines(tmp_path / "nested" / "j.jsonl", dumps(nested_records))
    body = {
        "TransformInput": {"DataSource": {"S3DataSource": {"S3Uri": str(nested)}}},
        "TransformOutput": {"S3OutputPath": str(tmp_path / "joined")},
        "DataProcessing": {
            "InputFilter": "$.series",
            "JoinSource": "Input",
            "OutputFilter": "$['item_id','SageMakerOutput']",
        },
    }
    joined = transform(tiny_model, job=body, shard_mb=100, on_error="record")
    plain = transform(tiny_model, str(flat), str(tmp_path / "plain"), shard_mb=100)
    assert joined.ok
    assert plain.ok
    out = [orjson.loads(x) for x in _lines((tmp_path / "joined" / "j.jsonl.out").read_bytes())]
    reference = [orjson.loads(x) for x in _lines((tmp_path / "plain" / "j.jsonl.out").read_bytes())]
    assert out[7]["error"]["line"] == 8
    assert "InputFilter" in out[7]["error"]["message"]
    del out[7]
    assert out == [
        {"item_id": r["item_id"], "SageMakerOutput": ref}
        for r, ref in zip(records, reference, strict=True)
    ]


def test_deepar_inference_config_with_samples(
    tiny_model: str, plain_inputs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = {
        "num_samples": 9,
        "output_types": ["mean", "samples", "quantiles"],
        "quantiles": ["0.05", "0.5", "0.95"],
    }
    monkeypatch.setenv("DEEPAR_INFERENCE_CONFIG", orjson.dumps(config).decode())
    summary = transform(tiny_model, str(plain_inputs / "b.jsonl"), str(tmp_path / "out"))
    assert summary.ok
    assert summary.job["inference"] == config
    lines = _lines((tmp_path / "out" / "b.jsonl.out").read_bytes())
    assert len(lines) == 60
    for line in lines:
        record = orjson.loads(line)
        assert list(record) == ["quantiles", "samples", "mean"]  # SPEC.md §3's order
        samples = np.array(record["samples"], dtype=np.float32)
        assert samples.shape == (9, PREDICTION_LENGTH)
        np.testing.assert_allclose(record["mean"], samples.mean(axis=0), rtol=1e-5, atol=1e-5)
        ordered = np.sort(samples, axis=0)
        assert list(record["quantiles"]) == ["0.05", "0.5", "0.95"]
        for key, index in (("0.05", 0), ("0.5", 4), ("0.95", 8)):  # round((S - 1) * q)
            np.testing.assert_array_equal(np.float32(record["quantiles"][key]), ordered[index])


# ---------------------------------------------------------------------------------------------
# The command line, as a user runs it


def _cli(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DEEPAR_INFERENCE_CONFIG",)}
    env["RAY_ADDRESS"] = "local"  # its own Ray, not this module's nor any other on the machine
    return subprocess.run(
        [sys.executable, "-m", "batchcast", "transform", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )


def test_cli_runs_a_create_transform_job_body_and_exits_0(
    tiny_model: str, plain_inputs: Path, tmp_path: Path
) -> None:
    output = tmp_path / "out"
    done = _cli(
        "--model", tiny_model,
        "--job", str(JOB_FILE),
        "--input", str(plain_inputs / "b.jsonl"),
        "--output", str(output),
        "--shard-mb", str(SHARD_MB),  # several shards, so both workers have work
        "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    printed = orjson.loads(done.stdout)
    assert printed["status"] == "Completed"
    assert printed["name"] == "deepar-electricity-batch-2026-11-21"
    assert {i["key"] for i in printed["ignored"]} == {
        "ModelName",
        "ModelClientConfig",
        "TransformResources",
        "Tags",
    }
    assert printed["counts"]["workers"] == 2  # MODEL_SERVER_WORKERS
    inputs = _input_lines(plain_inputs, "b.jsonl")
    lines = _lines((output / "b.jsonl.out").read_bytes())
    assert len(lines) == len(inputs) == 60
    for line, source in zip(lines, inputs, strict=True):
        record = orjson.loads(line)  # JoinSource Input, OutputFilter $['item_id','SageMakerOutput']
        assert list(record) == ["item_id", "SageMakerOutput"]
        assert record["item_id"] == orjson.loads(source)["item_id"]
        forecast = record["SageMakerOutput"]
        assert list(forecast) == ["quantiles", "mean"]
        assert list(forecast["quantiles"]) == ["0.1", "0.5", "0.9"]
        assert len(forecast["mean"]) == PREDICTION_LENGTH
    assert _summary_file(output)["job"]["inference"]["num_samples"] == 20


def test_cli_prints_a_human_summary_without_json(
    tiny_model: str, plain_inputs: Path, tmp_path: Path
) -> None:
    output = tmp_path / "out"
    done = _cli(
        "--model", tiny_model,
        "--input", str(plain_inputs / "b.jsonl"),
        "--output", str(output),
        "--job-name", "human",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "Completed: human"
    assert "1 file(s): 1 committed" in lines[1]
    assert lines[2].strip().startswith("60 lines, 60 series forecast, 0 record error(s)")
    assert lines[-1].strip() == f"summary: {output / SUMMARY_NAME}"
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(done.stdout)


def test_cli_fail_file_exits_1_with_one_record_error_line_per_bad_line(
    tiny_feature_model: str, mixed_inputs: dict[str, Any], tmp_path: Path
) -> None:
    done = _cli(
        "--model", tiny_feature_model,
        "--input", str(mixed_inputs["root"]),
        "--output", str(tmp_path / "out"),
        "--max-payload-mb", str(MAX_PAYLOAD_MB),
        "--shard-mb", str(SHARD_MB),
        "--json",
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert orjson.loads(done.stdout)["status"] == "Failed"
    uri = mixed_inputs["root"] / "mixed.jsonl"
    reported = [line for line in done.stderr.splitlines() if line.startswith("RecordError: ")]
    assert [r.split(": ", 3)[1:3] for r in reported] == [
        [f"{uri}:{line}", f"field {field!r}"] for line, field, _ in mixed_inputs["expected"]
    ]
    assert sorted(read_outputs(tmp_path / "out")) == ["good-1.jsonl.out", "nested/good-2.jsonl.out"]


def test_cli_rejects_a_bad_job_file_before_reading_any_record(
    tiny_model: str, plain_inputs: Path, tmp_path: Path
) -> None:
    body = orjson.loads(JOB_FILE.read_bytes())
    body["BatchStrategy"] = "Everything"
    job_file = tmp_path / "job.json"
    job_file.write_bytes(orjson.dumps(body))
    output = tmp_path / "out"
    done = _cli(
        "--model",
        tiny_model,
        "--job",
        str(job_file),
        "--input",
        str(plain_inputs),
        "--output",
        str(output),
    )
    assert done.returncode == 1
    assert done.stderr.startswith("ConfigError: BatchStrategy must be one of")
    assert done.stdout == ""
    assert not output.exists()  # nothing was read, started or written


def test_fail_file_stops_forecasting_a_file_once_it_has_failed(
    tiny_model: str, tmp_path: Path
) -> None:
    records = inference_records(150, seed=21)
    lines = dumps(records)
    lines[0] = b'{"start": "2020-01-01", "target": "oops"}'  # the file fails at its first shard
    write_lines(tmp_path / "in" / "bad.jsonl", lines)
    summary = transform(
        tiny_model, str(tmp_path / "in"), str(tmp_path / "out"), shard_mb=SHARD_MB, workers=1
    )
    assert summary.status == "Failed"
    [errors] = [e["line"] for e in summary.errors]
    assert errors == 1
    [described] = summary.files
    assert described["series"] == 149  # every valid record is still counted...
    assert summary.counts["series"] == 0  # ...but no forecast is reported as written
    shards = len(plan_shards(list_inputs(str(tmp_path / "in")), target_bytes=int(SHARD_MB * 2**20)))
    # Only the shards already in flight when the first one failed (at most two per worker)
    # were forecast; every later shard was validated only.
    assert shards > 20
    assert summary.counts["shards_checked_only"] >= shards - 3
