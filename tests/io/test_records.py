"""Record decoding and every rule of SPEC.md §1."""

from __future__ import annotations

import math
import random
from typing import Any

import numpy as np
import orjson
import pytest

from batchcast.errors import ConfigError, RecordError
from batchcast.forecast.config import ModelSpec
from batchcast.io import RecordContract, compile_path, decode_records, renumber

URI = "s3://bucket/in/data.jsonl"
PLAIN = RecordContract(prediction_length=3, future_length=3)
# Two categorical features (cardinalities 3 and 5) and two dynamic features.
RICH = RecordContract(prediction_length=2, cardinality=(3, 5), num_dynamic_feat=2, future_length=2)


def _line(**record: Any) -> bytes:
    return orjson.dumps(record)


def _rich(**overrides: Any) -> bytes:
    """A record that is good for RICH (target of 3: dynamic_feat arrays of 3 + 2)."""
    record: dict[str, Any] = {
        "start": "2020-01-01 00:00:00",
        "target": [1.0, 2.0, 3.0],
        "cat": [2, 4],
        "dynamic_feat": [[1, 2, 3, 4, 5], [0.5, 0.5, 0.5, 0.5, 0.5]],
    }
    record.update(overrides)
    return orjson.dumps({k: v for k, v in record.items() if v is not _DROP})


_DROP = object()


# --- good records


def test_good_records_decode_to_columns() -> None:
    lines = [
        _line(start="2020-01-01 00:00:00", target=[1, 2.5, None, "NaN", "nan"], item_id="a"),
        _line(start="1970-01-02", target=[]),  # cold start
        _line(start="2021-03-04 05:06:07", target=[7], cat=[9], dynamic_feat="ignored"),
    ]
    out = decode_records(lines, uri=URI, contract=PLAIN)
    assert out.errors == []
    assert out.num_lines == 3
    assert out.records is None
    batch = out.batch
    assert batch.start.dtype == np.int64
    assert batch.start.tolist() == [1577836800, 86400, 1614834367]
    assert batch.target.dtype == np.float32
    np.testing.assert_array_equal(
        batch.series(0), np.array([1, 2.5, np.nan, np.nan, np.nan], np.float32)
    )
    assert batch.lengths.tolist() == [5, 0, 1]
    assert batch.cat.shape == (3, 0)
    assert batch.dynamic_feat.shape == (0, 0)
    assert out.good.dtype == np.int64
    assert out.good.tolist() == [0, 1, 2]


def test_cat_and_dynamic_feat_are_columns() -> None:
    lines = [
        _rich(),
        _rich(target=[5.0], cat=[0, 0], dynamic_feat=[[9, 8, 7], [1, 2, 3]]),
    ]
    out = decode_records(lines, uri=URI, contract=RICH)
    assert out.errors == []
    assert out.batch.cat.tolist() == [[2, 4], [0, 0]]
    # time-major: (sum of len(target) + P, n_dyn)
    assert out.batch.dynamic_feat.shape == (8, 2)
    assert out.batch.dynamic_offsets.tolist() == [0, 5, 8]
    np.testing.assert_array_equal(out.batch.dynamic_feat[5:], [[9, 1], [8, 2], [7, 3]])


def test_fast_path_matches_a_naive_conversion() -> None:
    rng = random.Random(5)
    records = []
    for _ in range(300):
        n = rng.randint(0, 40)
        target = [
            rng.choice([None, "NaN", rng.randint(-5, 5), rng.uniform(-1e6, 1e6)]) for _ in range(n)
        ]
        extra = rng.choice([{}, {"flag": True}, {"name": "falsehood"}])
        records.append({"start": "2020-01-01", "target": target, **extra})
    out = decode_records([orjson.dumps(r) for r in records], uri=URI, contract=PLAIN)
    assert out.errors == []
    for b, record in enumerate(records):
        naive = np.array(
            [math.nan if v is None or v == "NaN" else float(v) for v in record["target"]],
            dtype=np.float32,
        )
        np.testing.assert_array_equal(out.batch.series(b), naive)


def test_bool_hidden_among_numbers_is_caught_even_when_true_appears_elsewhere() -> None:
    lines = [
        _line(start="2020-01-01", target=[1.0, 0.0], note="true story"),
        _line(start="2020-01-01", target=[1.0, True]),
    ]
    out = decode_records(lines, uri=URI, contract=PLAIN)
    assert out.good.tolist() == [0]
    assert [(e.line, e.field) for e in out.errors] == [(2, "target")]
    assert "target[1]" in out.errors[0].message
    assert "boolean" in out.errors[0].message


def test_model_without_features_ignores_them() -> None:
    line = _line(start="2020-01-01", target=[1], cat="junk", dynamic_feat=[[None]])
    assert decode_records([line], uri=URI, contract=PLAIN).errors == []


# --- record errors: each names uri, line, field and what was expected

_BAD = [
    # (line, contract, field, words the message must contain)
    (b"", PLAIN, "$", ["JSON object", "blank line"]),
    (b"   \t", PLAIN, "$", ["blank line"]),
    (b'{"start": ', PLAIN, "$", ["JSON object", "invalid JSON"]),
    (b"[1, 2]", PLAIN, "$", ["JSON object", "array"]),
    (b"null", PLAIN, "$", ["JSON object", "null"]),
    (b'"text"', PLAIN, "$", ["JSON object", "string"]),
    (_line(target=[1]), PLAIN, "start", ["missing", "YYYY-MM-DD HH:MM:SS"]),
    (_line(start=20200101, target=[1]), PLAIN, "start", ["YYYY-MM-DD", "integer"]),
    (_line(start="2020-01-01 00:00:00+01:00", target=[1]), PLAIN, "start", ["time zone"]),
    (_line(start="2020-01-01 00:00:00Z", target=[1]), PLAIN, "start", ["time zone"]),
    (_line(start="2020-01-01T00:00:00", target=[1]), PLAIN, "start", ["space between", "T00"]),
    (_line(start="01/02/2020", target=[1]), PLAIN, "start", ["YYYY-MM-DD", "01/02/2020"]),
    (_line(start="2020-02-30", target=[1]), PLAIN, "start", ["valid date", "2020-02-30"]),
    (_line(start="2019-02-29 00:00:00", target=[1]), PLAIN, "start", ["valid date"]),
    (_line(start="2020-01-01 24:00:00", target=[1]), PLAIN, "start", ["valid date"]),
    (_line(start="2020-01-01"), PLAIN, "target", ["missing", "array of numbers"]),
    (_line(start="2020-01-01", target=5), PLAIN, "target", ["array of numbers", "integer 5"]),
    (_line(start="2020-01-01", target="1,2"), PLAIN, "target", ["array of numbers"]),
    (_line(start="2020-01-01", target=[1, "abc"]), PLAIN, "target", ["target[1]", '"NaN"', "abc"]),
    (_line(start="2020-01-01", target=[1, "1.5"]), PLAIN, "target", ["target[1]", "1.5"]),
    (_line(start="2020-01-01", target=[False]), PLAIN, "target", ["target[0]", "boolean"]),
    (_line(start="2020-01-01", target=[1, [2]]), PLAIN, "target", ["target[1]", "array"]),
    (_line(start="2020-01-01", target=[{"v": 1}]), PLAIN, "target", ["target[0]", "object"]),
    (_line(start="2020-01-01", target=[1, 1e39]), PLAIN, "target", ["target[1]", "float32"]),
    (_rich(cat=_DROP), RICH, "cat", ["missing", "2 integer(s)", "[3, 5]"]),
    (_rich(cat=2), RICH, "cat", ["array of 2 integer(s)", "integer 2"]),
    (_rich(cat=[1]), RICH, "cat", ["2 integer(s)", "found 1 value"]),
    (_rich(cat=[1, 2, 3]), RICH, "cat", ["found 3 value"]),
    (_rich(cat=[1.0, 2]), RICH, "cat", ["cat[0]", "integer", "1.0"]),
    (_rich(cat=[1, True]), RICH, "cat", ["cat[1]", "integer", "boolean"]),
    (_rich(cat=[3, 0]), RICH, "cat", ["cat[0]", "[0, 3)", "found 3"]),
    (_rich(cat=[0, -1]), RICH, "cat", ["cat[1]", "[0, 5)", "found -1"]),
    (_rich(dynamic_feat=_DROP), RICH, "dynamic_feat", ["missing", "2 array(s) of 5"]),
    (_rich(dynamic_feat=[1, 2]), RICH, "dynamic_feat", ["dynamic_feat[0]", "array of 5"]),
    (_rich(dynamic_feat=[[1, 2, 3, 4, 5]]), RICH, "dynamic_feat", ["2 array(s)", "found 1"]),
    (
        _rich(dynamic_feat=[[1, 2, 3, 4, 5], [1, 2, 3]]),
        RICH,
        "dynamic_feat",
        ["dynamic_feat[1]", "expected 5 values", "len(target) 3 + prediction_length 2", "found 3"],
    ),
    (
        _rich(dynamic_feat=[[1, 2, 3], [1, 2, 3]]),
        RICH,
        "dynamic_feat",
        ["dynamic_feat[0]", "expected 5 values", "found 3"],
    ),
    (
        _rich(dynamic_feat=[[1, 2, None, 4, 5], [1, 2, 3, 4, 5]]),
        RICH,
        "dynamic_feat",
        ["dynamic_feat[0][2]", "missing values"],
    ),
    (
        _rich(dynamic_feat=[[1, 2, 3, 4, 5], [1, "NaN", 3, 4, 5]]),
        RICH,
        "dynamic_feat",
        ["dynamic_feat[1][1]", "missing values"],
    ),
    (
        _rich(dynamic_feat=[[1, 2, 3, 4, True], [1, 2, 3, 4, 5]]),
        RICH,
        "dynamic_feat",
        ["dynamic_feat[0][4]", "boolean"],
    ),
    (
        _rich(dynamic_feat=[[1, 2, 3, 4, 5], [1, 2, 3, 4, "x"]]),
        RICH,
        "dynamic_feat",
        ["dynamic_feat[1][4]", "string"],
    ),
    (
        _rich(dynamic_feat=[[1, 2, 3, 4, 5], [1, 2, 3, 4, 1e300]]),
        RICH,
        "dynamic_feat",
        ["dynamic_feat[1][4]", "float32"],
    ),
]


@pytest.mark.parametrize(("line", "contract", "field", "words"), _BAD)
def test_record_error(line: bytes, contract: RecordContract, field: str, words: list[str]) -> None:
    good = _rich() if contract is RICH else _line(start="2020-01-01", target=[1])
    # The bad line sits between good ones, at file line 41 (shard-local 2, first_line 40).
    out = decode_records([good, line, good], uri=URI, contract=contract, first_line=40)
    assert len(out.errors) == 1, out.errors
    [error] = out.errors
    assert (error.uri, error.line, error.field) == (URI, 41, field)
    for word in words:
        assert word in error.message, (word, error.message)
    assert out.good.tolist() == [0, 2]
    assert out.batch.num_series == 2


def test_a_huge_bad_start_is_not_echoed_whole() -> None:
    """A record error names what was found, but a megabyte of it would make the error (and a
    server's 400 body) as large as the record."""
    huge = "2020-01-01 " + "x" * 1_000_000
    out = decode_records([_line(start=huge, target=[1.0])], uri=URI, contract=PLAIN)
    [error] = out.errors
    assert error.field == "start"
    assert len(error.message) < 200, len(error.message)
    assert 'found a string "2020-01-01 xxx' in error.message
    short = decode_records([_line(start="2020/01/01", target=[1.0])], uri=URI, contract=PLAIN)
    assert "found '2020/01/01'" in short.errors[0].message  # a short one is quoted whole


def test_a_five_digit_year_is_not_called_a_time_zone() -> None:
    out = decode_records([_line(start="10000-01-01", target=[1.0])], uri=URI, contract=PLAIN)
    [error] = out.errors
    assert "time zone;" not in error.message
    assert "found '10000-01-01'" in error.message
    zoned = decode_records(
        [_line(start="2020-01-01 00:00:00+02:00", target=[1.0])], uri=URI, contract=PLAIN
    )
    assert zoned.errors[0].message.startswith("has a time zone")


def test_oversize_lines() -> None:
    big = _line(start="2020-01-01", target=[1.0] * 400)  # ~2 kB
    out = decode_records(
        [big, b"", b'{"start": "2020-01-01", "target": []}'],
        uri=URI,
        contract=PLAIN,
        max_payload_mb=0.001,  # 1048 bytes
        oversize={1: 7_000_000},  # as read_shard_lines reports a line it streamed past
    )
    assert [(e.line, e.field) for e in out.errors] == [(1, "$"), (2, "$")]
    assert out.errors[0].message == f"line is {len(big)} bytes; MaxPayloadInMB is 0.001"
    assert out.errors[1].message == "line is 7000000 bytes; MaxPayloadInMB is 0.001"
    assert out.good.tolist() == [2]


def test_every_bad_line_is_reported_in_order_and_one_error_per_line() -> None:
    lines = [
        b"{",
        _line(start="2020-02-30", target=[1]),  # found after the loop, still in order
        _line(start="bad", target="bad"),  # two problems: the first rule reported
        _line(start="2020-01-01", target=[1]),
        b"",
    ]
    out = decode_records(lines, uri=URI, contract=PLAIN)
    assert [(e.line, e.field) for e in out.errors] == [
        (1, "$"),
        (2, "start"),
        (3, "start"),
        (5, "$"),
    ]
    assert out.good.tolist() == [3]
    assert out.batch.start.tolist() == [1577836800]


def test_keep_records_and_input_filter() -> None:
    lines = [
        _line(id="a", features={"start": "2020-01-01", "target": [1, 2]}),
        b"oops",
        _line(id="c"),
    ]
    path = compile_path("$.features")
    out = decode_records(lines, uri=URI, contract=PLAIN, input_filter=path.apply, keep_records=True)
    assert out.records == [orjson.loads(lines[0]), None, {"id": "c"}]
    assert out.good.tolist() == [0]
    np.testing.assert_array_equal(out.batch.series(0), [1, 2])
    [bad_json, no_features] = out.errors
    assert bad_json.line == 2
    assert (no_features.line, no_features.field) == (3, "$")
    assert "InputFilter" in no_features.message
    assert "features" in no_features.message


def test_renumber_shard_local_errors() -> None:
    errors = [RecordError(URI, 1, "$", "m"), RecordError(URI, 3, "target", "n")]
    moved = renumber(errors, 100)
    assert [(e.uri, e.line, e.field, e.message) for e in moved] == [
        (URI, 101, "$", "m"),
        (URI, 103, "target", "n"),
    ]
    assert errors[0].line == 1  # the originals are untouched


def test_no_lines() -> None:
    out = decode_records([], uri=URI, contract=RICH)
    assert out.batch.num_series == 0
    assert out.batch.cat.shape == (0, 2)
    assert out.batch.dynamic_feat.shape == (0, 2)
    assert out.good.shape == (0,)


def test_contract_for_inference_and_validation() -> None:
    spec = ModelSpec(
        freq="H",
        context_length=24,
        prediction_length=12,
        lags=(1, 24),
        num_time_features=4,
        cardinality=(3, 7),
        embedding_dims=(2, 2),
        num_dynamic_feat=1,
    )
    assert RecordContract.for_inference(spec) == RecordContract(
        prediction_length=12, cardinality=(3, 7), num_dynamic_feat=1, future_length=12
    )
    with pytest.raises(ConfigError, match="cardinality"):
        RecordContract(prediction_length=1, cardinality=(0,))
    with pytest.raises(ConfigError, match="prediction_length"):
        RecordContract(prediction_length=0)
