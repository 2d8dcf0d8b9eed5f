"""A model whose configuration contradicts its weights fails the job before Ray starts
(issue 9.7): a corrupt ``num_cells`` of 1e9 once reached every worker, each trying to
allocate hundreds of GB. The job checks the configuration against the weights' tensor
shapes first and fails in one ``ModelError`` line.

No ``ray_local`` here on purpose: the test asserts that no Ray was started.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import orjson
import pytest
import ray

from batchcast.cli import main
from batchcast.forecast.artifacts import CONFIG_NAME
from batchcast.synthetic import synthetic_records, write_jsonl


@pytest.mark.parametrize("change", [{"num_cells": 10**9}, {"num_layers": 7}])
def test_a_config_that_contradicts_the_weights_fails_the_job_before_ray_starts(
    tiny_model: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], change: dict[str, int]
) -> None:
    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    config = orjson.loads((model / CONFIG_NAME).read_bytes())
    config["spec"].update(change)
    (model / CONFIG_NAME).write_bytes(orjson.dumps(config))
    data = write_jsonl(tmp_path / "in" / "a.jsonl", synthetic_records(3, length=(20, 30)))
    output = tmp_path / "out"
    assert not ray.is_initialized()
    argv = ["transform", "--model", str(model), "--input", str(data), "--output", str(output)]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    assert err.startswith("ModelError: ")
    assert str(model) in err
    assert "weights do not match the model spec" in err
    assert not ray.is_initialized()  # failed before Ray and its workers
    assert not output.exists()  # and before the output was taken
