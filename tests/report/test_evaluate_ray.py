"""``evaluate(workers=N)``: the pairs of files scored in Ray tasks (a real local Ray), merged
in file order: the same result as in process, per-series rows included."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from report_cases import write_case

from batchcast.errors import ConfigError
from batchcast.report.evaluate import evaluate


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("evaluate-ray")
    for i, n in enumerate([12, 5, 9, 1, 7]):
        write_case(root, n=n, seed=10 + i, name=f"part-{i}.jsonl")
    # a bad line in one file: skipped with its line, counted the same way on both paths
    out = root / "output" / "part-2.jsonl.out"
    lines = out.read_bytes().split(b"\n")
    lines[2] = b'{"error": {"line": 3, "field": "target", "message": "bad"}}'
    out.write_bytes(b"\n".join(lines))
    return root


def _run(root: Path, workers: int | None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    rows: list[dict[str, Any]] = []
    evaluation = evaluate(
        str(root / "actuals"),
        str(root / "output"),
        input=str(root / "input"),
        seasonality=2,
        on_series=rows.append,
        workers=workers,
    )
    return evaluation.to_dict(), rows


@pytest.mark.usefixtures("ray_local")
def test_tasks_give_the_in_process_result(folders: Path) -> None:
    local, local_rows = _run(folders, None)
    on_ray, ray_rows = _run(folders, 2)
    assert on_ray["series"] == local["series"] == 33
    assert on_ray["skipped"] == local["skipped"]
    assert on_ray["problems"] == local["problems"]
    assert on_ray["files"] == local["files"]
    for name, value in local["metrics"].items():
        assert on_ray["metrics"][name] == pytest.approx(value, rel=1e-12, nan_ok=True), name
    # in file order, every metric of every series (NaN as null, NaN != NaN)
    assert orjson.dumps(ray_rows) == orjson.dumps(local_rows)


@pytest.mark.usefixtures("ray_local")
def test_a_task_error_reaches_the_caller_as_itself(folders: Path, tmp_path: Path) -> None:
    # forecasts without the median: a ConfigError raised inside a task, not a RayTaskError
    for i in range(2):
        case = write_case(tmp_path, n=3, seed=i, name=f"f{i}.jsonl")
        text = case.forecasts.read_bytes().replace(b'"0.5"', b'"0.55"')
        case.forecasts.write_bytes(text)
    with pytest.raises(ConfigError, match=r"lack 0\.5"):
        evaluate(str(tmp_path / "actuals"), str(tmp_path / "output"), seasonality=1, workers=2)


def test_cli_workers_flag(folders: Path) -> None:
    env = {**os.environ, "RAY_ADDRESS": "local"}
    done = subprocess.run(
        [sys.executable, "-m", "batchcast", "evaluate", "--actuals", str(folders / "actuals"),
         "--forecasts", str(folders / "output"), "--input", str(folders / "input"),
         "--seasonality", "2", "--workers", "2", "--json"],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    local, _ = _run(folders, None)
    printed = orjson.loads(done.stdout)
    assert printed["series"] == local["series"]
    assert printed["metrics"]["mean_wQuantileLoss"] == pytest.approx(
        local["metrics"]["mean_wQuantileLoss"], rel=1e-12
    )
