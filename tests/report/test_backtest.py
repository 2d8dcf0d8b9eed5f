"""``backtest`` end to end: a real tiny model, a real local Ray (2 CPUs), real files.

The metrics are checked against an independent reading of the same files: the transform's
``.out`` lines parsed here, the withheld points cut from the data here, scored with
``forecast.metrics`` on arrays.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import orjson
import pytest

from batchcast.forecast.metrics import evaluate_arrays
from batchcast.report.command import add_parsers
from batchcast.synthetic import synthetic_records, write_jsonl

HORIZON = 6
TINY = {
    "time_freq": "H",
    "context_length": "12",
    "prediction_length": str(HORIZON),
    "epochs": "1",
    "num_cells": "8",
    "num_layers": "1",
    "mini_batch_size": "16",
}


@pytest.fixture(scope="module")
def model_and_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    from batchcast.api import train

    root = tmp_path_factory.mktemp("backtest")
    train_file = write_jsonl(root / "train.jsonl", synthetic_records(32, length=(30, 60), seed=1))
    model = str(root / "model")
    train(str(train_file), hyperparameters=TINY, model_dir=model, seed=0)
    data = root / "data" / "series.jsonl"
    records = list(synthetic_records(30, length=(3, 60), nan_fraction=0.05, seed=2))
    records[4]["target"] = records[4]["target"][:4]  # shorter than the horizon
    write_jsonl(data, iter(records))
    with data.open("ab") as f:
        f.write(b'{"start": "2020-01-01 00:00:00", "target": "not an array"}\n')  # line 31
    return model, data


def _independent_metrics(data: Path, output: Path) -> dict[str, float]:
    actual_records = [orjson.loads(line) for line in data.read_bytes().splitlines()][:30]
    forecasts = [orjson.loads(line) for line in output.read_bytes().splitlines()][:30]
    keys = list(forecasts[0]["quantiles"])
    horizons, histories = [], []
    for record in actual_records:
        target = np.array(
            [np.nan if v in (None, "NaN") else v for v in record["target"]], dtype=np.float32
        ).astype(np.float64)
        cut = max(target.size - HORIZON, 0)
        future = target[cut:]
        horizons.append(np.concatenate([future, np.full(HORIZON - future.size, np.nan)]))
        histories.append(target[:cut])
    quantiles = np.array([[f["quantiles"][k] for k in keys] for f in forecasts])
    mean = np.array([f["mean"] for f in forecasts])
    metrics, _ = evaluate_arrays(
        np.stack(horizons), quantiles, [float(k) for k in keys], keys=keys, mean=mean,
        past=histories, seasonality=24,
    )  # fmt: skip
    return metrics


@pytest.mark.usefixtures("ray_local")
def test_backtest_scores_the_withheld_points(
    model_and_data: tuple[str, Path], tmp_path: Path
) -> None:
    from batchcast.runner.backtest import backtest

    model, data = model_and_data
    rows: list[dict[str, object]] = []
    report = tmp_path / "backtest.html"
    result = backtest(model, str(data), work_dir=str(tmp_path / "work"), workers=2, seed=3,
                      on_series=rows.append, report=str(report), items=[0, 1])  # fmt: skip
    evaluation = result.evaluation
    assert result.withheld == HORIZON
    assert result.summary.status == "Completed"  # on_error=record: the bad line is in place
    assert evaluation.series == 30
    assert evaluation.skipped == 1
    assert evaluation.problems[0]["line"] == 31
    assert "target" in evaluation.problems[0]["reason"]
    assert evaluation.seasonality == 24
    assert "time_freq H" in evaluation.seasonality_source
    assert len(rows) == 30
    # the transform saw the targets cut by the horizon, line for line
    cut = [orjson.loads(line) for line in (tmp_path / "work/input/series.jsonl").read_bytes()
           .splitlines()]  # fmt: skip
    full = [orjson.loads(line) for line in data.read_bytes().splitlines()]
    for a, b in zip(cut[:30], full[:30], strict=True):
        assert a["target"] == b["target"][: max(len(b["target"]) - HORIZON, 0)]
        assert a["item_id"] == b["item_id"]
    assert cut[30] == full[30]  # the bad line, unchanged
    expected = _independent_metrics(data, tmp_path / "work/output/series.jsonl.out")
    for name, value in expected.items():
        assert evaluation.metrics[name] == pytest.approx(value, rel=1e-9, nan_ok=True), name
    page = report.read_text()
    assert page.count("data:image/png;base64,") == 2
    assert "Record errors (1)" in page


@pytest.mark.usefixtures("ray_local")
def test_backtest_command_prints_json(
    model_and_data: tuple[str, Path], capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    """The CLI path, on a temporary work folder: same seed, same metrics as above's run."""
    model, data = model_and_data
    parser = argparse.ArgumentParser(prog="batchcast")
    add_parsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["backtest", "--model", model, "--data", str(data), "--workers",
                              "1", "--seed", "3", "--json"])  # fmt: skip
    assert args.func(args) == 0
    printed = orjson.loads(capsysbinary.readouterr().out)
    assert printed["series"] == 30
    assert printed["transform"]["status"] == "Completed"
    assert printed["metrics"]["mean_wQuantileLoss"] > 0


@pytest.mark.usefixtures("ray_local")
def test_transform_report_flag_writes_the_page(
    model_and_data: tuple[str, Path], tmp_path: Path
) -> None:
    """``batchcast transform --report`` through the real CLI: a page with the job's record
    error, its counts and embedded fan charts, and no network reference."""
    from batchcast.cli import main

    model, data = model_and_data
    bad = tmp_path / "in" / "series.jsonl"
    bad.parent.mkdir()
    bad.write_bytes(data.read_bytes() + b'{"start": "2020-01-01 00:00:00"}\n')
    page = tmp_path / "report.html"
    status = main(
        ["transform", "--model", model, "--input", str(bad.parent), "--output",
         str(tmp_path / "out"), "--workers", "1", "--on-error", "record", "--report", str(page)]
    )  # fmt: skip
    assert status == 0
    html = page.read_text()
    assert "data:image/png;base64," in html
    assert "target" in html
    assert ">31<" in html
    assert "http://" not in html
    assert "https://" not in html
