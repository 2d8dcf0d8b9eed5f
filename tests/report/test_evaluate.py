"""report.evaluate: files in, GluonTS's metrics out; alignment, skipping, pairing, streaming."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from report_cases import KEYS, Case, gluonts_metrics, write_case

from batchcast.errors import ConfigError
from batchcast.forecast.metrics import evaluate_arrays
from batchcast.report import scoring as scoring_module
from batchcast.report.evaluate import evaluate, model_frequency, resolve_seasonality


def _assert_metrics_equal(ours: dict[str, float], theirs: dict[str, Any]) -> None:
    for name, value in ours.items():
        if name == "MAE_Coverage":  # GluonTS 0.17's is off (tests/forecast/test_metrics.py)
            continue
        assert value == pytest.approx(float(theirs[name]), rel=1e-6, abs=1e-12, nan_ok=True), name


@pytest.mark.gluonts
@pytest.mark.parametrize("with_input", [True, False])
def test_files_score_as_gluonts_scores_the_same_numbers(case: Case, with_input: bool) -> None:
    evaluation = evaluate(
        str(case.actuals),
        str(case.forecasts),
        input=str(case.input) if with_input else None,
        seasonality=24,
    )
    theirs, _ = gluonts_metrics(case, seasonality=24)
    _assert_metrics_equal(evaluation.metrics, theirs)
    assert evaluation.series == 24
    assert evaluation.skipped == 0
    assert evaluation.quantiles == KEYS
    assert evaluation.msis_interval == ("0.1", "0.9")
    # the input carries item_id (as the actuals do); forecasts alone do not
    assert evaluation.files[0]["alignment"] == ("item_id" if with_input else "order")


def test_by_item_id_matches_whatever_the_order(tmp_path: Path) -> None:
    ordered = write_case(tmp_path / "a", forward_item_id=True)
    shuffled = write_case(tmp_path / "b", forward_item_id=True, shuffle_forecasts=True)
    rows: list[dict[str, Any]] = []
    a = evaluate(str(ordered.actuals), str(ordered.forecasts), seasonality=1)
    b = evaluate(
        str(shuffled.actuals), str(shuffled.forecasts), seasonality=1, on_series=rows.append
    )
    assert b.files[0]["alignment"] == "item_id"
    assert b.series == 24
    for name, value in a.metrics.items():
        assert b.metrics[name] == pytest.approx(value, rel=1e-12, nan_ok=True), name
    # each row names its own series: the forecast line and its item_id
    lines = [orjson.loads(line) for line in shuffled.forecasts.read_bytes().splitlines()]
    for row in rows:
        assert lines[row["line"] - 1]["item_id"] == row["item_id"]


def test_by_order_without_ids_is_wrong_for_shuffled_lines(tmp_path: Path) -> None:
    """The negative of the test above: the same shuffled forecasts without forwarded ids
    are matched by order, which scores them worse (so item_id alignment did the work)."""
    right = write_case(tmp_path / "a", forward_item_id=True, shuffle_forecasts=True)
    wrong = write_case(tmp_path / "b", forward_item_id=False, shuffle_forecasts=True)
    good = evaluate(str(right.actuals), str(right.forecasts), seasonality=1)
    bad = evaluate(str(wrong.actuals), str(wrong.forecasts), seasonality=1)
    assert bad.files[0]["alignment"] == "order"
    assert bad.metrics["mean_wQuantileLoss"] > 2 * good.metrics["mean_wQuantileLoss"]


def test_bad_lines_are_skipped_with_their_line(tmp_path: Path) -> None:
    case = write_case(tmp_path, n=8)
    lines = case.forecasts.read_bytes().splitlines()
    lines[2] = orjson.dumps({"error": {"line": 3, "field": "target", "message": "broken"}})
    lines[4] = b"{not json"
    case.forecasts.write_bytes(b"\n".join(lines) + b"\n")
    actual_lines = case.actuals.read_bytes().splitlines()
    actual_lines[6] = b'{"start": "2021-01-07 00:00:00", "target": "oops", "item_id": "item-6"}'
    case.actuals.write_bytes(b"\n".join(actual_lines) + b"\n")
    evaluation = evaluate(str(case.actuals), str(case.forecasts), input=str(case.input))
    assert evaluation.series == 5
    assert evaluation.skipped == 3
    by_line = {p["line"]: p["reason"] for p in evaluation.problems}
    assert "broken" in by_line[3]
    assert "not JSON" in by_line[5]
    assert "target" in by_line[7]
    # the scored five equal the arrays' metrics over the same five series
    keep = [0, 1, 3, 5, 7]
    expected, _ = evaluate_arrays(
        case.horizon[keep],
        case.quantiles[keep],
        [float(k) for k in KEYS],
        keys=KEYS,
        mean=case.mean[keep],
        past=[case.history[i] for i in keep],
        seasonality=1,
    )
    for name, value in expected.items():
        assert evaluation.metrics[name] == pytest.approx(value, rel=1e-9, nan_ok=True), name


def _rewrite(path: Path, change: Any) -> None:
    lines = path.read_bytes().splitlines()
    change(lines)
    path.write_bytes(b"\n".join(lines) + b"\n")


def test_an_unreadable_first_forecast_line_does_not_switch_to_order(tmp_path: Path) -> None:
    """The rule is decided on each side's first readable record: a bad first line (which a
    transform under --on-error record writes as an error line without an item_id) used to
    switch the file to line order, scoring every forecast against another series."""
    case = write_case(tmp_path, forward_item_id=True, shuffle_forecasts=True)

    def garble(lines: list[bytes]) -> None:
        lines[0] = b"garbage"

    _rewrite(case.forecasts, garble)
    rows: list[dict[str, Any]] = []
    evaluation = evaluate(
        str(case.actuals), str(case.forecasts), seasonality=1, on_series=rows.append
    )
    assert evaluation.files[0]["alignment"] == "item_id"
    assert evaluation.series == 23
    assert evaluation.skipped == 1
    forecast_ids = {
        i + 1: orjson.loads(line).get("item_id")
        for i, line in enumerate(case.forecasts.read_bytes().splitlines()[1:], start=1)
    }
    for row in rows:
        assert forecast_ids[row["line"]] == row["item_id"]


def test_order_pairing_never_scores_two_different_item_ids(tmp_path: Path) -> None:
    """When the rule is line order (the first readable forecast has no item_id) yet both
    records of a pair carry different ids, the pair is refused, not scored."""
    case = write_case(tmp_path, forward_item_id=True, shuffle_forecasts=True)

    def drop_first_id(lines: list[bytes]) -> None:
        record = orjson.loads(lines[0])
        del record["item_id"]
        lines[0] = orjson.dumps(record)

    _rewrite(case.forecasts, drop_first_id)
    evaluation = evaluate(str(case.actuals), str(case.forecasts), seasonality=1)
    assert evaluation.files[0]["alignment"] == "order"
    refused = [p for p in evaluation.problems if "paired by line order" in p["reason"]]
    assert refused
    assert evaluation.series + evaluation.skipped == 24
    assert evaluation.series <= 24 - len(refused)


def test_a_bad_actual_is_reported_at_its_own_file_and_line(tmp_path: Path) -> None:
    case = write_case(tmp_path, n=6, forward_item_id=True)

    def break_actual(lines: list[bytes]) -> None:
        record = orjson.loads(lines[3])
        record["target"] = "oops"
        lines[3] = orjson.dumps(record)

    _rewrite(case.actuals, break_actual)
    evaluation = evaluate(str(case.actuals), str(case.forecasts), seasonality=1)
    [problem] = evaluation.problems
    assert (problem["uri"], problem["line"]) == (str(case.actuals), 4)
    assert "target" in problem["reason"]


def test_a_start_written_without_its_time_is_the_same_start(tmp_path: Path) -> None:
    case = write_case(tmp_path, n=4)
    plain = evaluate(str(case.actuals), str(case.forecasts), input=str(case.input))

    def date_only(lines: list[bytes]) -> None:
        for i, line in enumerate(lines):
            record = orjson.loads(line)
            assert record["start"].endswith(" 00:00:00")
            record["start"] = record["start"].removesuffix(" 00:00:00")
            lines[i] = orjson.dumps(record)

    _rewrite(case.actuals, date_only)
    dated = evaluate(str(case.actuals), str(case.forecasts), input=str(case.input))
    assert dated.skipped == plain.skipped == 0
    assert dated.metrics == plain.metrics


@pytest.mark.parametrize("key", ["1.5", "-0.5", "nan", "inf"])
def test_quantile_keys_outside_0_1_are_a_config_error(tmp_path: Path, key: str) -> None:
    case = write_case(tmp_path, n=3, keys=("0.1", "0.5", "0.9"))

    def rename(lines: list[bytes]) -> None:
        for i, line in enumerate(lines):
            record = orjson.loads(line)
            record["quantiles"][key] = record["quantiles"].pop("0.9")
            lines[i] = orjson.dumps(record)

    _rewrite(case.forecasts, rename)
    with pytest.raises(ConfigError, match=r"quantile keys must be levels in \(0, 1\)"):
        evaluate(str(case.actuals), str(case.forecasts))


def test_without_input_the_horizon_is_the_last_points(tmp_path: Path) -> None:
    case = write_case(tmp_path, n=6)
    # an actual series shorter than the horizon cannot hold it
    lines = case.actuals.read_bytes().splitlines()
    lines[0] = b'{"start": "2021-01-01 00:00:00", "target": [1, 2], "item_id": "item-0"}'
    case.actuals.write_bytes(b"\n".join(lines) + b"\n")
    evaluation = evaluate(str(case.actuals), str(case.forecasts))
    assert evaluation.skipped == 1
    assert "fewer than the forecast's 5" in evaluation.problems[0]["reason"]


def test_start_mismatch_with_input_is_skipped(tmp_path: Path) -> None:
    case = write_case(tmp_path, n=4)
    lines = case.input.read_bytes().splitlines()
    record = orjson.loads(lines[3])
    record["start"] = "1999-01-01 00:00:00"
    lines[3] = orjson.dumps(record)
    case.input.write_bytes(b"\n".join(lines) + b"\n")
    evaluation = evaluate(str(case.actuals), str(case.forecasts), input=str(case.input))
    assert evaluation.series == 3
    assert "starts at" in evaluation.problems[0]["reason"]


def test_output_folder_pairs_by_relative_path(tmp_path: Path) -> None:
    one = write_case(tmp_path, n=10, seed=1, name="a.jsonl")
    two = write_case(tmp_path, n=7, seed=2, name="sub/b.jsonl")
    # a file the transform failed (fail-file) has actuals but no .out
    shutil.copy(one.actuals, tmp_path / "actuals" / "failed.jsonl")
    (tmp_path / "output" / "_batchcast_summary.json").write_bytes(b"{}")
    evaluation = evaluate(
        str(tmp_path / "actuals"),
        str(tmp_path / "output"),
        input=str(tmp_path / "input"),
        seasonality=1,
    )
    assert evaluation.series == 17
    files = {Path(f["actuals"]).name: f for f in evaluation.files}
    assert files["a.jsonl"]["series"] == 10
    assert files["b.jsonl"]["series"] == 7
    assert files["failed.jsonl"]["forecasts"] is None
    both = [one, two]
    expected, _ = evaluate_arrays(
        np.concatenate([c.horizon for c in both]),
        np.concatenate([c.quantiles for c in both]),
        [float(k) for k in KEYS],
        keys=KEYS,
        mean=np.concatenate([c.mean for c in both]),
        past=[h for c in both for h in c.history],
        seasonality=1,
    )
    for name, value in expected.items():
        assert evaluation.metrics[name] == pytest.approx(value, rel=1e-9, nan_ok=True), name


def test_blocks_fold_into_the_same_totals(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Scoring 5 series at a time (many blocks) gives the one-block result, and rows stream."""
    case = write_case(tmp_path, n=23)
    whole = evaluate(str(case.actuals), str(case.forecasts), seasonality=3)
    monkeypatch.setattr(scoring_module, "BLOCK_SERIES", 5)
    rows: list[dict[str, Any]] = []
    blocked = evaluate(str(case.actuals), str(case.forecasts), seasonality=3, on_series=rows.append)
    assert [r["line"] for r in rows] == list(range(1, 24))
    for name, value in whole.metrics.items():
        assert blocked.metrics[name] == pytest.approx(value, rel=1e-12, nan_ok=True), name


def test_forecasts_without_a_median_are_refused(tmp_path: Path) -> None:
    case = write_case(tmp_path, n=3, keys=("0.1", "0.9"))
    with pytest.raises(ConfigError, match=r"lack 0\.5"):
        evaluate(str(case.actuals), str(case.forecasts))


def test_nothing_pairs_is_an_error(tmp_path: Path) -> None:
    case = write_case(tmp_path, n=3, name="x.jsonl")
    write_case(tmp_path / "other", n=3, name="y.jsonl")
    two = tmp_path / "two"
    two.mkdir()
    shutil.copy(case.forecasts, two / "x.jsonl.out")
    shutil.copy(case.forecasts, two / "z.jsonl.out")
    with pytest.raises(ConfigError, match="no forecast file pairs"):
        evaluate(str(tmp_path / "other" / "actuals"), str(two))


def test_gzip_actuals_read_transparently(tmp_path: Path) -> None:
    import gzip

    case = write_case(tmp_path, n=5)
    packed = tmp_path / "actuals.jsonl.gz"
    packed.write_bytes(gzip.compress(case.actuals.read_bytes()))
    plain = evaluate(str(case.actuals), str(case.forecasts), seasonality=1)
    zipped = evaluate(str(packed), str(case.forecasts), seasonality=1)
    assert zipped.metrics["mean_wQuantileLoss"] == plain.metrics["mean_wQuantileLoss"]


def test_reads_s3(s3_bucket: str, case: Case) -> None:
    import boto3

    client = boto3.session.Session().client("s3")
    client.upload_file(str(case.actuals), s3_bucket, "actuals/data.jsonl")
    client.upload_file(str(case.forecasts), s3_bucket, "out/data.jsonl.out")
    remote = evaluate(f"s3://{s3_bucket}/actuals/", f"s3://{s3_bucket}/out/", seasonality=2)
    local = evaluate(str(case.actuals), str(case.forecasts), seasonality=2)
    assert remote.series == local.series == 24
    assert remote.metrics["MASE"] == local.metrics["MASE"]


# ---------------------------------------------------------------------------------------------
# Seasonality


def test_seasonality_sources(tmp_path: Path) -> None:
    assert resolve_seasonality(seasonality=7) == (7, "given")
    assert resolve_seasonality(freq="2H") == (12, "time_freq 2H")
    assert resolve_seasonality(freq="D")[0] == 1
    m, source = resolve_seasonality()
    assert m == 1
    assert "no frequency known" in source
    with pytest.raises(ConfigError, match="seasonality must be >= 1"):
        resolve_seasonality(seasonality=0)
    with pytest.raises(ConfigError, match="time_freq"):
        resolve_seasonality(freq="fortnightly")


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real (untrained, tiny) 15-minute model folder and its model.tar.gz."""
    import torch

    from batchcast.forecast import DeepAR, ModelSpec
    from batchcast.models import save_model

    torch.manual_seed(0)
    spec = ModelSpec(freq="15min", context_length=4, prediction_length=3, lags=(1, 2),
                     num_time_features=2, num_cells=4, num_layers=1)  # fmt: skip
    folder = tmp_path_factory.mktemp("model")
    save_model(DeepAR(spec), str(folder / "model"))
    save_model(DeepAR(spec), str(folder / "model.tar.gz"))
    return folder


def test_seasonality_from_a_model_and_from_the_job_summary(
    saved_model: Path, tmp_path: Path
) -> None:
    for artifact in ("model", "model.tar.gz"):
        uri = str(saved_model / artifact)
        assert model_frequency(uri) == "15min"
        assert resolve_seasonality(model=uri)[0] == 96  # a day of quarter hours
    summary = {"job": {"model": str(saved_model / "model")}}
    (tmp_path / "_batchcast_summary.json").write_bytes(orjson.dumps(summary))
    m, source = resolve_seasonality(forecasts=str(tmp_path / "x.jsonl.out"))
    assert m == 96
    assert "the job's model" in source
    with pytest.raises(ConfigError, match="cannot read the frequency"):
        model_frequency(str(tmp_path / "missing-model"))
