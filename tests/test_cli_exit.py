"""The command line's exit (cli.run): flushed streams, the right status, no teardown wait."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# A command that fails at once (ModelError, status 1) and a marker that shows whether the
# interpreter's exit hooks ran (they do not when the process leaves with os._exit).
_SCRIPT = """
import atexit, sys
atexit.register(lambda: print("EXIT-HOOKS-RAN", flush=True))
{before}
sys.argv = ["batchcast", "transform", "--model", sys.argv[1], "--input", sys.argv[2],
            "--output", sys.argv[3]]
from batchcast.cli import run
print("OUT-BEFORE-EXIT")  # buffered on a pipe: lost unless run() flushes it
run()
"""


def _run(tmp_path: Path, before: str = "", **env: str) -> subprocess.CompletedProcess[str]:
    source = tmp_path / "in.jsonl"
    source.write_text('{"start": "2020-01-01 00:00:00", "target": [1, 2, 3]}\n')
    argv = [str(tmp_path / "no-such-model"), str(source), str(tmp_path / "out")]
    environment = {k: v for k, v in os.environ.items() if k != "BATCHCAST_FULL_EXIT"} | env
    return subprocess.run(
        [sys.executable, "-c", _SCRIPT.format(before=before), *argv],
        capture_output=True,
        text=True,
        env=environment,
        timeout=120,
        check=False,
    )


def test_a_command_exits_with_its_status_and_flushed_output_without_teardown(
    tmp_path: Path,
) -> None:
    done = _run(tmp_path)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith("ModelError: ")
    assert "OUT-BEFORE-EXIT" in done.stdout
    assert "EXIT-HOOKS-RAN" not in done.stdout  # left with os._exit: no teardown


def test_the_full_exit_runs_when_asked_or_when_ray_was_imported(tmp_path: Path) -> None:
    asked = _run(tmp_path, BATCHCAST_FULL_EXIT="1")
    assert asked.returncode == 1
    assert "EXIT-HOOKS-RAN" in asked.stdout
    with_ray = _run(tmp_path, before="import ray")
    assert with_ray.returncode == 1
    assert "EXIT-HOOKS-RAN" in with_ray.stdout  # ray's own exit hook must get to stop its cluster


def _train(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """``batchcast train`` with a step size so large that torch's Adam itself fails
    (``RuntimeError``: its step overflows float32): a library's error, not batchcast's."""
    data = tmp_path / "train.jsonl"
    data.write_text(
        "".join(
            f'{{"start": "2020-01-01", "target": {list(range(i, i + 20))}}}\n' for i in range(4)
        )
    )
    hp = tmp_path / "hp.json"
    hp.write_text(
        '{"time_freq": "D", "context_length": 3, "prediction_length": 2, "epochs": 1, '
        '"num_cells": 4, "learning_rate": 1e38, "scaling": "mean"}'
    )
    environment = {k: v for k, v in os.environ.items() if k != "BATCHCAST_DEBUG"} | env
    command = [sys.executable, "-m", "batchcast", "train", "--train", str(data)]
    command += ["--hyperparameters", str(hp), "--model-dir", str(tmp_path / "m"), "--quiet"]
    return subprocess.run(
        command, capture_output=True, text=True, env=environment, timeout=300, check=False
    )


def test_an_unexpected_error_is_one_line_and_its_traceback_is_there_on_request(
    tmp_path: Path,
) -> None:
    result = _train(tmp_path)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("RuntimeError: ")
    assert lines[0].endswith("(set BATCHCAST_DEBUG=1 for the traceback)")
    assert not (tmp_path / "m").exists()
    debug = _train(tmp_path, BATCHCAST_DEBUG="1")
    assert debug.returncode == 1
    assert "Traceback (most recent call last)" in debug.stderr
