"""DataProcessing (SPEC.md §5): the JSONPath subset, JoinSource, OutputFilter, forward_fields."""

from __future__ import annotations

import pickle
from typing import Any

import numpy as np
import orjson
import pytest

from batchcast.errors import ConfigError
from batchcast.forecast.config import InferenceConfig
from batchcast.io import Join, RecordContract, compile_path, decode_records, forecast_dicts

DOC = {
    "id": "a-1",
    "item_id": 7,
    "features": {"start": "2020-01-01", "target": [1, 2]},
    "xs": [0, 10, 20, 30, 40, 50, 60],
    "rows": [{"id": 1, "v": "p"}, {"id": 2, "v": "q"}],
}


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("$", DOC),
        ("$.id", "a-1"),
        ("$.item_id", 7),  # underscores work (SageMaker's own parser rejects them)
        ("$.features.target", [1, 2]),
        ("$['id']", "a-1"),
        ('$["item_id"]', 7),
        ("$['id','item_id']", {"id": "a-1", "item_id": 7}),
        ("$['item_id', 'id']", {"item_id": 7, "id": "a-1"}),  # the order written
        ("$['id','absent']", {"id": "a-1"}),
        ("$.xs[2]", 20),
        ("$.xs[-1]", 60),
        ("$.xs[1,3]", [10, 30]),
        ("$.xs[1:3]", [10, 20, 30]),  # end-inclusive, as SageMaker documents
        ("$.xs[5:]", [50, 60]),
        ("$.xs[:1]", [0, 10]),
        ("$.xs[0,5:]", [0, 50, 60]),
        ("$.xs[-2:-1]", [50, 60]),
        ("$.xs[*]", DOC["xs"]),
        ("$.features.*", ["2020-01-01", [1, 2]]),
        ("$.rows[*].id", [1, 2]),
        ("$.rows[0].v", "p"),
        ("$.rows[0:1]['v']", ["p", "q"]),
    ],
)
def test_paths(expr: str, expected: Any) -> None:
    assert compile_path(expr).apply(DOC) == expected


@pytest.mark.parametrize(
    "expr", ["$.absent", "$.xs[7]", "$.id[0]", "$.xs.name", "$['a','b']", "$.id.*"]
)
def test_path_selecting_nothing_raises_lookup_error(expr: str) -> None:
    with pytest.raises(LookupError, match="JSONPath"):
        compile_path(expr).apply(DOC)


@pytest.mark.parametrize(
    "expr", ["", "id", "$.", "$..id", "$[", "$[1:2:3]", "$[a]", "$.x y", "$[1,'a']"]
)
def test_bad_expressions_are_config_errors(expr: str) -> None:
    with pytest.raises(ConfigError, match="JSONPath") as info:
        compile_path(expr)
    assert repr(expr) in str(info.value)


OUTPUT = {"quantiles": {"0.5": [1.0]}, "mean": [1.0]}


def test_default_join_is_the_forecast() -> None:
    join = Join()
    assert not join.needs_records
    assert join.model_input(DOC) is DOC
    assert join.output(DOC, OUTPUT) == OUTPUT


def test_join_source_input_with_output_filter() -> None:
    join = Join(join_source="Input", output_filter="$['item_id','SageMakerOutput']")
    assert join.needs_records
    assert join.output(DOC, OUTPUT) == {"item_id": 7, "SageMakerOutput": OUTPUT}
    whole = Join(join_source="Input").output({"a": 1}, OUTPUT)
    assert list(whole) == ["a", "SageMakerOutput"]


def test_join_source_input_with_non_object_input() -> None:
    join = Join(join_source="Input", input_filter="$[1]")
    record = ["id-1", {"start": "2020-01-01", "target": [1]}]
    assert join.model_input(record) == record[1]
    assert join.output(record, OUTPUT) == {"SageMakerInput": record, "SageMakerOutput": OUTPUT}


def test_forward_fields() -> None:
    join = Join(forward_fields=("item_id", "missing"))
    assert join.needs_records
    out = join.output(DOC, OUTPUT)
    assert out == {"item_id": 7, "missing": None, **OUTPUT}
    assert list(out) == ["item_id", "missing", "quantiles", "mean"]
    assert join.output([1, 2], OUTPUT) == {"item_id": None, "missing": None, **OUTPUT}


def test_output_filter_alone() -> None:
    join = Join(output_filter="$.mean")
    assert join.needs_records
    assert join.output(DOC, OUTPUT) == [1.0]
    # An InputFilter alone also needs the per-record path: the runner passes it to
    # decode_records only when needs_records is set.
    assert Join(input_filter="$.features").needs_records


def test_validation_and_from_data_processing() -> None:
    with pytest.raises(ConfigError, match="JoinSource"):
        Join(join_source="Output")
    with pytest.raises(ConfigError, match="forward_fields"):
        Join(forward_fields="item_id")  # type: ignore[arg-type]  # the mistake under test
    with pytest.raises(ConfigError, match="JSONPath"):
        Join(output_filter="$..x")
    join = Join.from_data_processing(
        {
            "InputFilter": "$.features",
            "JoinSource": "Input",
            "OutputFilter": "$['id','SageMakerOutput']",
        },
        forward_fields=["item_id"],
    )
    assert join == Join("$.features", "Input", "$['id','SageMakerOutput']", ("item_id",))
    assert Join.from_data_processing(None) == Join()
    with pytest.raises(ConfigError, match="unknown DataProcessing"):
        Join.from_data_processing({"Inputfilter": "$"})


def test_join_pickles_for_ray() -> None:
    join = Join(input_filter="$.features", join_source="Input", forward_fields=("id",))
    clone = pickle.loads(pickle.dumps(join))
    assert clone == join
    assert clone.model_input(DOC) == DOC["features"]


def test_input_filter_in_decode_and_join_in_output() -> None:
    join = Join(
        input_filter="$.features", join_source="Input", output_filter="$['id','SageMakerOutput']"
    )
    lines = [orjson.dumps(DOC), orjson.dumps({"id": "no-features"})]
    decoded = decode_records(
        lines,
        uri="in.jsonl",
        contract=RecordContract(prediction_length=1),
        input_filter=join.model_input,
        keep_records=join.needs_records,
    )
    assert decoded.good.tolist() == [0]
    assert decoded.errors[0].line == 2
    assert "InputFilter" in decoded.errors[0].message
    assert decoded.records is not None
    assert join.output(decoded.records[0], OUTPUT) == {"id": "a-1", "SageMakerOutput": OUTPUT}


def test_output_filter_on_numpy_forecast_rows() -> None:
    config = InferenceConfig(num_samples=2, output_types=("samples", "mean"))
    mean = np.arange(6, dtype=np.float32).reshape(2, 3)
    samples = np.arange(12, dtype=np.float32).reshape(2, 2, 3)
    [first, _] = forecast_dicts(config, mean=mean, quantiles=None, samples=samples)
    cases = {
        "$.mean[1:2]": [1.0, 2.0],
        "$.samples[1]": [3.0, 4.0, 5.0],
        "$.samples[*][0]": [0.0, 3.0],
    }
    for expr, expected in cases.items():
        value = Join(output_filter=expr).output({}, first)
        assert orjson.loads(orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY)) == expected
