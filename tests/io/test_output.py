"""The one output path (io/output.py): JSON Lines and CSV lines, error lines numbered late."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import pytest

from batchcast.errors import ConfigError, RecordError
from batchcast.forecast.classes import Classes
from batchcast.forecast.config import InferenceConfig
from batchcast.io.content import CSV, JSON_LINES
from batchcast.io.join import Join
from batchcast.io.output import encode_output, write_lines

P = 3
URI = "s3://bucket/in.jsonl"


@dataclass(frozen=True)
class _Result:  # the fields of forecast.sampling.Forecast, without importing torch here
    mean: np.ndarray | None
    quantiles: np.ndarray | None
    samples: np.ndarray | None
    probabilities: np.ndarray | None = None
    predicted: np.ndarray | None = None


def _result(n: int, *, q: int = 2, inf_row: int | None = None) -> _Result:
    rng = np.random.default_rng(0)
    mean = rng.normal(size=(n, P)).astype(np.float32)
    if inf_row is not None:
        mean[inf_row, 1] = np.inf
    quantiles = np.sort(rng.normal(size=(n, q, P)), axis=1).astype(np.float32)
    probabilities = np.array([[0.25, 0.75]] * n, dtype=np.float32)
    return _Result(mean, quantiles, None, probabilities, np.ones(n, dtype=np.int64))


def _encode(
    accept: str,
    *,
    inference: InferenceConfig,
    join: Join | None = None,
    inf_row: int | None = None,
) -> tuple[bytes, list[RecordError]]:
    # 5 input lines; line 2 (index 1) was a bad record; the other 4 were forecast.
    records: list[Any] = [{"item_id": f"i{i}", "x": i} for i in range(5)]
    records[1] = None
    good = np.array([0, 2, 3, 4], dtype=np.int64)
    bad = [RecordError(URI, 2, "target", "expected an array, found a string")]
    lines, errors = encode_output(
        num_lines=5,
        good=good,
        result=_result(4, inf_row=inf_row),
        errors=bad,
        inference=inference,
        join=join or Join(forward_fields=("item_id",)),
        records=records,
        uri=URI,
        accept=accept,
    )
    out: list[bytes] = []
    write_lines(out.append, lines, first_line=101, assemble_with="Line")
    return b"".join(out), errors


CONFIG = InferenceConfig(output_types=("mean", "quantiles"), quantiles=("0.1", "0.9"))


def test_csv_rows_parse_back_to_the_json_lines_values() -> None:
    json_out, _ = _encode(JSON_LINES, inference=CONFIG)
    csv_out, _ = _encode(CSV, inference=CONFIG)
    json_lines = [orjson.loads(x) for x in json_out.splitlines()]
    rows = list(csv.reader(io.StringIO(csv_out.decode())))
    assert len(rows) == len(json_lines) == 5
    for row, record in zip(rows, json_lines, strict=True):
        if "error" in record:
            continue
        # forwarded fields first, then one column per quantile in order, then the mean
        assert row[0] == record["item_id"]
        assert [orjson.loads(c) for c in row[1:3]] == [
            record["quantiles"]["0.1"],
            record["quantiles"]["0.9"],
        ]
        assert orjson.loads(row[3]) == record["mean"]
        assert len(row) == 4


def test_csv_error_rows_carry_the_file_line_and_the_forwarded_fields() -> None:
    csv_out, errors = _encode(CSV, inference=CONFIG)
    rows = list(csv.reader(io.StringIO(csv_out.decode())))
    # The line did not decode (records[1] is None): its forwarded field is empty.
    assert rows[1][0] == ""
    error = orjson.loads(rows[1][1])["error"]
    assert error == {
        "line": 102,  # the shard starts at line 101 of the file
        "field": "target",
        "message": "expected an array, found a string",
    }
    assert [e.line for e in errors] == [2]


def test_a_non_finite_forecast_is_an_error_row_in_csv_too() -> None:
    csv_out, errors = _encode(CSV, inference=CONFIG, inf_row=2)  # good row 2 = line 4
    rows = list(csv.reader(io.StringIO(csv_out.decode())))
    assert [e.line for e in errors] == [2, 4]
    assert rows[3][0] == "i3"
    assert orjson.loads(rows[3][1])["error"]["line"] == 104
    assert orjson.loads(rows[3][1])["error"]["field"] == "target"


def test_classification_keys_in_csv_are_cells_in_key_order() -> None:
    config = InferenceConfig(
        classes=Classes.from_mapping({"thresholds": [1.0], "labels": ["below", "reached"]}),
        keys=("predicted_label", "probability", "probabilities", "labels"),
    )
    csv_out, _ = _encode(CSV, inference=config)
    row = next(csv.reader(io.StringIO(csv_out.decode())))
    assert row[0] == "i0"
    assert row[1] == "reached"
    assert float(row[2]) == pytest.approx(0.75)
    assert orjson.loads(row[3]) == [0.25, 0.75]
    assert orjson.loads(row[4]) == ["below", "reached"]


def test_json_lines_output_is_unchanged_by_the_accept_path() -> None:
    # Without a join and without forwarded fields the bare forecast path runs; the same
    # lines come out of the generic join path when a join is present but changes nothing.
    plain, _ = _encode(JSON_LINES, inference=CONFIG, join=Join())
    lines = [orjson.loads(x) for x in plain.splitlines()]
    assert list(lines[0]) == ["quantiles", "mean"]
    assert list(lines[1]) == ["error"]
    assert lines[1]["error"]["line"] == 102


def test_an_unknown_accept_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="text/csv"):
        _encode("application/xml", inference=CONFIG)
