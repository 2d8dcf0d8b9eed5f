"""The evaluate and plot subcommands, through a real argparse parser built by add_parsers."""

from __future__ import annotations

import argparse
from pathlib import Path

import orjson
import pytest
from report_cases import Case

from batchcast.errors import ConfigError
from batchcast.report.command import add_parsers
from batchcast.report.evaluate import evaluate


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="batchcast")
    add_parsers(parser.add_subparsers(dest="command", required=True))
    return parser


def _run(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    status: int = args.func(args)
    return status


def test_registers_three_commands_with_help_on_every_option() -> None:
    parser = _parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(sub.choices) == {"evaluate", "plot", "backtest"}
    for name, command in sub.choices.items():
        silent = [a.dest for a in command._actions if not a.help]
        assert silent == [], name


def test_evaluate_json_per_series_and_report(
    case: Case, tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    per_series = tmp_path / "series.jsonl"
    report = tmp_path / "eval.html"
    status = _run(["evaluate", "--actuals", str(case.actuals), "--forecasts",
                   str(case.forecasts), "--input", str(case.input), "--freq", "H", "--json",
                   "--per-series", str(per_series), "--report", str(report),
                   "--items", "1,item-4"])  # fmt: skip
    assert status == 0
    printed = orjson.loads(capsysbinary.readouterr().out)
    expected = evaluate(str(case.actuals), str(case.forecasts), input=str(case.input), freq="H")
    assert printed["metrics"]["mean_wQuantileLoss"] == pytest.approx(
        expected.metrics["mean_wQuantileLoss"]
    )
    assert printed["seasonality"] == 24
    rows = [orjson.loads(line) for line in per_series.read_bytes().splitlines()]
    assert [r["item_id"] for r in rows] == case.item_ids
    assert rows[5]["MSE"] is None  # the all-NaN horizon: NaN written as null
    page = report.read_text()
    assert page.count("data:image/png;base64,") == 2


def test_evaluate_prints_a_table(case: Case, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["evaluate", "--actuals", str(case.actuals), "--forecasts",
                 str(case.forecasts), "--seasonality", "2"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "mean_wQuantileLoss" in out
    assert "seasonality: 2 (given)" in out
    assert "alignment: order" in out
    assert out.count("\n0.") == 9  # one row per quantile


def test_evaluate_failure_leaves_no_per_series_file(case: Case, tmp_path: Path) -> None:
    per_series = tmp_path / "series.jsonl"
    with pytest.raises(ConfigError):
        _run(["evaluate", "--actuals", str(tmp_path / "missing"), "--forecasts",
              str(case.forecasts), "--per-series", str(per_series)])  # fmt: skip
    assert not per_series.exists()
    assert list(tmp_path.glob(".*")) == []  # no temporary file left either


def test_plot_writes_the_chart(
    case: Case, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "fan.svg"
    argv = ["plot", "--input", str(case.input), "--forecasts", str(case.forecasts),
            "--actuals", str(case.actuals), "--items", "0,item-3", "-o", str(out)]  # fmt: skip
    assert _run(argv) == 0
    assert out.read_bytes().startswith(b"<?xml")
    assert "2 panel(s): item-0 (line 1), item-3 (line 4)" in capsys.readouterr().out


def test_bad_items_are_an_argument_error(case: Case) -> None:
    with pytest.raises(SystemExit):
        _parser().parse_args(["plot", "--input", "x", "--forecasts", "y", "--items", ","])
