"""One job per output (issue 9.5): two jobs on one output once both exited 0 with each
``.out`` from either job and the summary from one. Now a job holds the output's lock
(``_batchcast_lock.json``) for its lifetime, a second job fails in one line naming the
holder, a dead driver's lock and temporary files are cleared, and ``--resume`` continues
only a job of the same configuration.

Real processes race on a real folder and on a real S3 endpoint (moto's server); the jobs
run on a real local Ray.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson
import pytest

from batchcast.api import transform
from batchcast.cli import main
from batchcast.errors import ConfigError
from batchcast.io.lock import LOCK_NAME, Holder, OutputInUseError, OutputLock
from batchcast.io.sinks import TEMP_SUFFIX
from batchcast.synthetic import synthetic_records, write_jsonl

# A driver that took the output and began writing, then died (SIGKILL: no clean-up at all).
_KILLED_DRIVER = r"""
import os, sys
from batchcast.io import open_sink
from batchcast.io.lock import Holder, OutputLock
from batchcast.models import check_model_digest
from batchcast.runner.job import TransformJob

model, input, output, seed = sys.argv[1:5]
job = TransformJob.create(model, input, output, seed=int(seed)).resolved(name="killed")
_, digest = check_model_digest(job.model)
OutputLock.acquire(job.output, Holder(job.name, configuration=job.configuration(digest)))
open_sink(os.path.join(output, "a.jsonl.out")).write(b"half of it")
os._exit(9)
"""

# A job that holds the output until its stdin closes; or, with "race", waits for a start
# signal, tries, says what it got, holds a moment and lets go.
_HOLDER = r"""
import os, sys, time
from batchcast.io.lock import Holder, OutputInUseError, OutputLock

output, name, mode = sys.argv[1:4]
if mode == "race":
    while not os.path.exists(sys.argv[4]):
        time.sleep(0.001)
try:
    lock = OutputLock.acquire(output, Holder(name))
except OutputInUseError as err:
    print(f"lost {err}", flush=True)
    sys.exit(0)
print("won", flush=True)
if mode == "race":
    time.sleep(2)
else:
    sys.stdin.read()
lock.release()
"""


def _inputs(root: Path, files: int = 1) -> Path:
    for i in range(files):
        records = synthetic_records(20, freq="H", length=(20, 40), seed=i)
        write_jsonl(root / f"{chr(ord('a') + i)}.jsonl", records)
    return root


def _hold(output: str, name: str) -> subprocess.Popen[str]:
    child = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, output, name, "hold"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    assert child.stdout.readline() == "won\n"
    return child


def _let_go(child: subprocess.Popen[str]) -> None:
    assert child.stdin is not None
    child.stdin.close()
    assert child.wait(timeout=60) == 0


def _race(output: str, tmp_path: Path, contenders: int = 5) -> list[str]:
    go = tmp_path / "go"
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _HOLDER, output, f"job-{i}", "race", str(go)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(contenders)
    ]
    time.sleep(3)  # let them all start and wait at the line
    go.touch()
    results = [child.communicate(timeout=120)[0].strip() for child in children]
    assert all(child.returncode == 0 for child in children)
    return results


def _assert_one_winner(results: list[str], output: str) -> None:
    assert sorted(r.split()[0] for r in results) == ["lost"] + ["lost"] * (len(results) - 2) + [
        "won"
    ]
    winner = f"job-{[r.split()[0] for r in results].index('won')}"
    for result in results:
        if result != "won":
            # A loser reads the winner's name, or finds the lock created but not yet filled
            # in (the winner is between its exclusive create and its write): refused either way.
            named = f"output {output} is in use by job '{winner}'" in result
            starting = f"output {output} is in use by another job (just starting)" in result
            assert named or starting, result


def test_processes_racing_for_a_local_folder_one_wins(tmp_path: Path) -> None:
    output = str(tmp_path / "out")
    _assert_one_winner(_race(output, tmp_path), output)
    assert not (tmp_path / "out" / LOCK_NAME).exists()  # the winner let go


def test_processes_racing_for_an_s3_prefix_one_wins(s3_bucket: str, tmp_path: Path) -> None:
    output = f"s3://{s3_bucket}/out"
    _assert_one_winner(_race(output, tmp_path), output)


def test_a_second_job_on_a_held_output_fails_in_one_line_and_touches_nothing(
    tiny_model: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, output = _inputs(tmp_path / "in"), tmp_path / "out"
    holder = _hold(str(output), "first")
    try:
        argv = ["transform", "--model", tiny_model, "--input", str(root), "--output", str(output)]
        assert main(argv) == 1
        err = capsys.readouterr().err.strip()
        assert "\n" not in err
        assert err.startswith(f"OutputInUseError: output {output} is in use by job 'first' (")
        assert f"pid {holder.pid} on " in err
        assert "--force" in err
        assert sorted(p.name for p in output.iterdir()) == [LOCK_NAME]  # no .out, no summary
        held = Holder.from_bytes((output / LOCK_NAME).read_bytes())
        assert held is not None
        assert held.job == "first"
    finally:
        _let_go(holder)


def test_a_held_s3_output_is_refused_and_force_takes_it(s3_bucket: str) -> None:
    output = f"s3://{s3_bucket}/out"
    first = OutputLock.acquire(output, Holder("first"))
    with pytest.raises(OutputInUseError, match=f"output {output} is in use by job 'first'"):
        OutputLock.acquire(output, Holder("second"))
    second = OutputLock.acquire(output, Holder("second"), force=True)
    assert second.previous is not None
    assert second.previous.run == first.holder.run
    with pytest.raises(OutputInUseError, match="taken over by job 'second'"):
        first.check()  # the first job stops at its next commit
    first.release()  # not its lock any more: left alone
    second.check()
    second.release()
    OutputLock.acquire(output, Holder("third")).release()  # free again


def _killed_driver(model: str, root: Path, output: Path, seed: int = 0) -> None:
    args = [model, str(root), str(output), str(seed)]
    done = subprocess.run([sys.executable, "-c", _KILLED_DRIVER, *args], check=False)
    assert done.returncode == 9


def test_resume_refuses_another_configuration_than_the_dead_runs(
    tiny_model: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, output = _inputs(tmp_path / "in"), tmp_path / "out"
    _killed_driver(tiny_model, root, output, seed=0)
    argv = ["transform", "--model", tiny_model, "--input", str(root), "--output", str(output)]
    assert main([*argv, "--resume", "--seed", "1"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"ConfigError: --resume: {output} was written by a job with another ")
    assert "(seed differ)" in err
    assert "\n" not in err
    assert not list(output.glob("*.out"))


@pytest.mark.usefixtures("ray_local")
def test_a_dead_drivers_lock_and_temp_file_do_not_survive_resume(
    tiny_model: str, tmp_path: Path
) -> None:
    root, output = _inputs(tmp_path / "in", files=2), tmp_path / "out"
    _killed_driver(tiny_model, root, output)
    assert [p.name.endswith(TEMP_SUFFIX) for p in output.iterdir() if p.name != LOCK_NAME] == [True]
    summary = transform(tiny_model, str(root), str(output), resume=True)
    assert summary.ok, summary.failure_reason
    assert sorted(p.name for p in output.iterdir()) == [
        "_batchcast_summary.json",
        "a.jsonl.out",
        "b.jsonl.out",
    ]  # no temp file, no lock
    clean = transform(tiny_model, str(root), str(tmp_path / "clean"))
    for name in ("a.jsonl.out", "b.jsonl.out"):
        assert (output / name).read_bytes() == (tmp_path / "clean" / name).read_bytes()
    assert orjson.loads((output / "_batchcast_summary.json").read_bytes())["configuration"] == (
        clean.configuration
    )


@pytest.mark.usefixtures("ray_local")
def test_resume_continues_the_same_job_and_refuses_another(tiny_model: str, tmp_path: Path) -> None:
    root, output = _inputs(tmp_path / "in"), tmp_path / "out"
    assert transform(tiny_model, str(root), str(output), shard_mb=0.01).ok
    again = transform(tiny_model, str(root), str(output), shard_mb=0.01, resume=True, workers=1)
    assert again.ok
    assert again.counts["files_skipped"] == 1
    with pytest.raises(ConfigError, match=r"\(shard_mb differ\)"):
        transform(tiny_model, str(root), str(output), resume=True)
    assert not (output / LOCK_NAME).exists()  # a refused job lets go too


def _holder(lock: Path) -> Holder | None:
    """The holder a lock file names, or None (no file yet, or not written yet)."""
    try:
        return Holder.from_bytes(lock.read_bytes())
    except FileNotFoundError:
        return None


@pytest.mark.usefixtures("ray_local")
def test_a_job_whose_output_is_taken_stops_before_mixing_files(
    tiny_model: str, tmp_path: Path
) -> None:
    root, output = _inputs(tmp_path / "in", files=3), tmp_path / "out"
    outcome: dict[str, BaseException] = {}

    def first() -> None:
        try:
            transform(tiny_model, str(root), str(output))
        except BaseException as err:
            outcome["error"] = err

    thread = threading.Thread(target=first)
    thread.start()
    deadline = time.monotonic() + 60
    # Wait until the first job holds the lock, its holder written (after its flock), not only
    # until the file exists: forced in between, the second job would win the flock and the
    # first would stop at its start ("in use"), not at its first commit as tested here.
    # Taken before Ray starts: seconds before a commit.
    while _holder(output / LOCK_NAME) is None:
        assert time.monotonic() < deadline
        time.sleep(0.005)
    second = OutputLock.acquire(str(output), Holder("second"), force=True)
    thread.join(timeout=300)
    assert isinstance(outcome.get("error"), OutputInUseError), outcome
    assert "taken over by job 'second'" in str(outcome["error"])
    assert sorted(p.name for p in output.iterdir()) == [LOCK_NAME]  # no .out, no summary
    second.check()  # the first job left the second's lock alone
    second.release()
    assert os.listdir(output) == []
