"""Response keys, content types and output encoders (SPEC.md §8)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from io import StringIO
from typing import Any

import numpy as np
import orjson
import pytest

from batchcast.errors import ConfigError, RecordError
from batchcast.forecast.config import InferenceConfig
from batchcast.io.content import (
    ACCEPT_TYPES,
    OUTPUT_KEYS,
    CsvEncoder,
    JsonEncoder,
    JsonLinesEncoder,
    ResponseKeys,
    check_join,
    encoder_for,
    parse_accept,
    parse_content_type,
    parse_keys,
)
from batchcast.io.jsonl import encode_error, encode_forecasts, forecast_dicts

# --- key lists


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("predicted_label, probability", ("predicted_label", "probability")),
        (
            "  Predicted_Label ,PROBABILITIES,labels ",
            ("predicted_label", "probabilities", "labels"),
        ),
        ("mean", ("mean",)),
        (["Mean", " quantiles"], ("mean", "quantiles")),
        (("samples",), ("samples",)),
        (None, None),
        ("", None),
        ("   ", None),
        ([], None),
    ],
)
def test_parse_keys_tolerates_spaces_and_case(value: Any, expected: Any) -> None:
    assert parse_keys(value, name="SAGEMAKER_INFERENCE_OUTPUT") == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("mean,,quantiles", "SAGEMAKER_INFERENCE_OUTPUT has an empty entry"),
        ("mean,", "has an empty entry"),
        ("mean, MEAN", "repeats the key 'mean'"),
        (["mean", 3], "entries must be strings"),
        (5, "must be a comma-separated string"),
    ],
)
def test_parse_keys_rejects_malformed_lists(value: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_keys(value, name="SAGEMAKER_INFERENCE_OUTPUT")


def test_an_unsupported_key_gets_the_sdks_error_text() -> None:
    with pytest.raises(ConfigError) as err:
        ResponseKeys(
            output="wrong_key, wrong_label,probabilities,probability",
            supported="probability,probabilities,predicted_label,labels",
        )
    # The SageMaker Python SDK's own test expects exactly this text for these inputs.
    assert str(err.value) == (
        "Requested inference output keys [wrong_key, wrong_label] are unsupported. "
        "The supported inference keys are [probability, probabilities, predicted_label, labels]"
    )


def test_without_supported_every_known_key_is_supported() -> None:
    keys = ResponseKeys(output=",".join(OUTPUT_KEYS))
    assert keys.output == OUTPUT_KEYS
    with pytest.raises(ConfigError) as err:
        ResponseKeys(output="mean,median")
    assert str(err.value) == (
        "Requested inference output keys [median] are unsupported. The supported inference "
        "keys are [mean, quantiles, samples, predicted_label, probability, probabilities, labels]"
    )


@pytest.mark.parametrize("variable", ["supported", "input"])
def test_supported_and_input_must_name_known_keys(variable: str) -> None:
    name = f"SAGEMAKER_INFERENCE_{variable.upper()}"
    with pytest.raises(ConfigError, match=rf"{name} names unknown key\(s\) \['score'\]"):
        ResponseKeys(**{variable: "predicted_label, score"})
    assert getattr(ResponseKeys(**{variable: "Labels"}), variable) == ("labels",)


def test_from_environment_reads_the_three_variables_only() -> None:
    env = {
        "SAGEMAKER_INFERENCE_OUTPUT": "predicted_label, probability",
        "SAGEMAKER_INFERENCE_SUPPORTED": "predicted_label,probability,probabilities,mean",
        "SAGEMAKER_INFERENCE_INPUT": "mean",
        "DEEPAR_INFERENCE_CONFIG": "{}",
    }
    keys = ResponseKeys.from_environment(env)
    assert keys == ResponseKeys(
        output=("predicted_label", "probability"),
        supported=("predicted_label", "probability", "probabilities", "mean"),
        input=("mean",),
    )
    assert keys.to_environment() == {
        "SAGEMAKER_INFERENCE_OUTPUT": "predicted_label,probability",
        "SAGEMAKER_INFERENCE_SUPPORTED": "predicted_label,probability,probabilities,mean",
        "SAGEMAKER_INFERENCE_INPUT": "mean",
    }
    assert ResponseKeys.from_environment({}) == ResponseKeys()
    assert ResponseKeys().to_environment() == {}


def test_precedence_flag_over_job_over_environment_is_validated_as_a_whole() -> None:
    env = ResponseKeys(output="mean", supported="mean,predicted_label,probability")
    job = ResponseKeys(output="predicted_label")
    flags = ResponseKeys(output="probability, predicted_label")
    assert env.overridden_by(job).output == ("predicted_label",)
    merged = env.overridden_by(job).overridden_by(flags)
    assert merged.output == ("probability", "predicted_label")
    assert merged.supported == env.supported  # unset layers change nothing
    assert env.overridden_by(ResponseKeys()) == env
    with pytest.raises(ConfigError, match=r"output keys \[samples\] are unsupported"):
        env.overridden_by(ResponseKeys(output="samples"))


def test_resolve_keeps_todays_order_when_output_is_unset() -> None:
    keys = ResponseKeys()
    assert keys.resolve(("mean", "quantiles"), has_classes=False) == ("quantiles", "mean")
    assert keys.resolve(("mean", "samples", "quantiles"), has_classes=False) == (
        "quantiles",
        "samples",
        "mean",
    )
    # Set, the output replaces output_types and its order is the record's.
    chosen = ResponseKeys(output="mean, probability")
    assert chosen.resolve(("quantiles",), has_classes=True) == ("mean", "probability")


def test_resolve_checks_output_types_against_supported() -> None:
    keys = ResponseKeys(supported="mean,quantiles")
    assert keys.resolve(("mean",), has_classes=False) == ("mean",)
    with pytest.raises(ConfigError) as err:
        keys.resolve(("mean", "samples"), has_classes=False)
    assert str(err.value) == (
        "Requested inference output keys [samples] are unsupported. "
        "The supported inference keys are [mean, quantiles]"
    )


def test_a_classification_key_without_classes_names_both() -> None:
    keys = ResponseKeys(output="mean, predicted_label, labels")
    with pytest.raises(ConfigError, match=r"\['predicted_label', 'labels'\] need 'classes'"):
        keys.resolve(("mean",), has_classes=False)
    assert keys.resolve(("mean",), has_classes=True) == ("mean", "predicted_label", "labels")


# --- content types


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, "application/jsonlines"),
        ("", "application/jsonlines"),
        ("application/jsonlines", "application/jsonlines"),
        ("Application/JSON; charset=utf-8", "application/json"),
    ],
)
def test_parse_content_type(value: str | None, expected: str) -> None:
    assert parse_content_type(value) == expected


def test_an_unsupported_content_type_names_the_accepted_ones() -> None:
    with pytest.raises(ConfigError) as err:
        parse_content_type("text/csv", name="TransformInput.ContentType")
    assert str(err.value) == (
        "TransformInput.ContentType 'text/csv' is not supported; accepted: "
        "['application/jsonlines', 'application/json'] (default application/jsonlines)"
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, "application/jsonlines"),
        ("  ", "application/jsonlines"),
        ("*/*", "application/jsonlines"),
        ("text/csv", "text/csv"),
        ("TEXT/CSV; charset=utf-8", "text/csv"),
        ("application/json", "application/json"),
        ("application/*", "application/jsonlines"),
        ("text/*", "text/csv"),
        ("image/png, text/csv", "text/csv"),
        ("text/csv;q=0.5, application/json", "application/json"),
        ("application/json;q=0.2, text/csv;q=0.9, */*;q=0.1", "text/csv"),
        ("text/csv, application/json", "text/csv"),  # equal weights: the first listed
        ("text/csv;q=0, */*", "application/jsonlines"),
        ('application/json; q="0.7", text/html', "application/json"),
    ],
)
def test_parse_accept(value: str | None, expected: str) -> None:
    assert parse_accept(value) == expected


@pytest.mark.parametrize("value", ["text/html", "image/*", "text/csv;q=0", "application/xml"])
def test_an_unsupported_accept_names_the_accepted_ones(value: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_accept(value, name="TransformOutput.Accept")
    assert str(err.value) == (
        f"TransformOutput.Accept {value!r} is not supported; accepted: "
        "['application/jsonlines', 'application/json', 'text/csv'] "
        "(default application/jsonlines)"
    )


def test_an_invalid_q_is_an_error() -> None:
    with pytest.raises(ConfigError, match="invalid q='high'"):
        parse_accept("text/csv;q=high")
    with pytest.raises(ConfigError, match="invalid q='2'"):
        parse_accept("text/csv;q=2")


def test_encoder_for_each_accept() -> None:
    assert [encoder_for(t).content_type for t in ACCEPT_TYPES] == list(ACCEPT_TYPES)
    assert isinstance(encoder_for(None), JsonLinesEncoder)
    assert isinstance(encoder_for("text/csv; header=absent"), CsvEncoder)
    with pytest.raises(ConfigError, match="accepted"):
        encoder_for("text/plain")


def test_csv_refuses_what_it_cannot_join() -> None:
    with pytest.raises(ConfigError, match=r"JoinSource 'Input'.*forward_fields"):
        check_join("text/csv", join_source="Input", output_filter="$")
    with pytest.raises(ConfigError, match=r"OutputFilter \"\$\['mean'\]\""):
        check_join("text/csv", join_source="None", output_filter="$['mean']")
    check_join("text/csv", join_source="None", output_filter=" $ ")
    check_join("application/jsonlines", join_source="Input", output_filter="$['mean']")


# --- encoders


def _forecast(batch: int = 3, horizon: int = 4, paths: int = 5) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    samples = rng.gamma(2.0, 10.0, size=(batch, paths, horizon)).astype(np.float32)
    ordered = np.sort(samples, axis=1)
    return {
        "mean": samples.mean(axis=1),
        "quantiles": ordered[:, [1, 2, 3]],  # (B, 3, P)
        "samples": samples,
    }


def test_json_encoders_give_todays_bytes_for_the_default_keys() -> None:
    arrays = _forecast()
    config = InferenceConfig(
        output_types=("mean", "quantiles", "samples"), quantiles=("0.2", "0.5", "0.8")
    )
    today = encode_forecasts(config, **arrays)
    dicts = forecast_dicts(config, **arrays)
    assert JsonLinesEncoder().encode_all(dicts) == today
    assert [JsonEncoder().encode(d) for d in dicts] == today
    error = RecordError("s3://b/in.jsonl", 7, "target", "expected an array")
    assert JsonLinesEncoder().encode_error(error) == encode_error(error)
    assert JsonEncoder().encode_error(error, forwarded={"item_id": "a"}) == orjson.dumps(
        {"item_id": "a", "error": {"line": 7, "field": "target", "message": "expected an array"}}
    )


def _records() -> list[dict[str, Any]]:
    """Output records with every key, forwarded fields first, strings that need quoting."""
    arrays = _forecast()
    probabilities = np.array([[0.37, 0.63], [1.0, 0.0], [0.5, 0.5]], dtype=np.float32)
    labels = ['short, "really"', "enough"]
    item_ids = ["a,b", 'say "hi"', "two\nlines"]
    stores = [7, None, 2.5]
    out = []
    for b in range(3):
        out.append(
            {
                "item_id": item_ids[b],
                "store": stores[b],
                "quantiles": {
                    q: arrays["quantiles"][b, i] for i, q in enumerate(["0.2", "0.5", "0.8"])
                },
                "samples": arrays["samples"][b],
                "mean": arrays["mean"][b],
                "predicted_label": labels[int(probabilities[b].argmax())],
                "probability": probabilities[b, 1],
                "probabilities": probabilities[b],
                "labels": labels,
            }
        )
    return out


def _csv_rows(body: bytes) -> list[list[str]]:
    return list(csv.reader(StringIO(body.decode(), newline="")))


def test_csv_parses_back_to_the_json_values() -> None:
    records = _records()
    rows = _csv_rows(CsvEncoder().body(CsvEncoder().encode_all(records)))
    assert len(rows) == len(records)  # a quoted newline stays inside its cell
    for record, row in zip(records, rows, strict=True):
        expected = orjson.loads(JsonLinesEncoder().encode(record))
        # Layout: forwarded fields, one column per quantile in order, then one per key.
        assert len(row) == 2 + 3 + 6
        assert row[0] == expected["item_id"]  # a string is a plain cell
        assert row[1] == ("" if expected["store"] is None else json.dumps(expected["store"]))
        assert [json.loads(c) for c in row[2:5]] == list(expected["quantiles"].values())
        assert json.loads(row[5]) == expected["samples"]  # nested array in one cell
        assert json.loads(row[6]) == expected["mean"]
        assert row[7] == expected["predicted_label"]
        assert json.loads(row[8]) == expected["probability"]
        assert json.loads(row[9]) == expected["probabilities"]
        assert json.loads(row[10]) == expected["labels"]
    assert rows[0][8] == "0.63"  # float32 printed shortest, as in JSON


def test_csv_encode_matches_encode_all_and_has_no_line_terminator() -> None:
    records = _records()
    encoder = CsvEncoder()
    assert [encoder.encode(r) for r in records] == encoder.encode_all(records)
    simple = encoder.encode({"predicted_label": "high", "probability": np.float32(0.25)})
    assert simple == b"high,0.25"


def test_csv_error_row_is_the_forwarded_fields_then_the_error_object() -> None:
    error = RecordError("in.jsonl", 12, "stock", 'expected a number, found "12"')
    encoder = CsvEncoder()
    rows = _csv_rows(
        encoder.body(
            [
                encoder.encode_error(error, forwarded={"item_id": "x,1", "store": None}),
                encoder.encode_error(error),
            ]
        )
    )
    expected = {"error": {"line": 12, "field": "stock", "message": 'expected a number, found "12"'}}
    assert rows[0][:2] == ["x,1", ""]
    assert json.loads(rows[0][2]) == expected
    assert json.loads(rows[1][0]) == expected
    assert rows[1][0].startswith('{"error"')


def test_bodies() -> None:
    lines = [b'{"mean":[1.0]}', b'{"mean":[2.0]}']
    assert JsonLinesEncoder().body(lines) == b'{"mean":[1.0]}\n{"mean":[2.0]}\n'
    assert JsonLinesEncoder().body(lines, endpoint=True) == JsonLinesEncoder().body(lines)
    assert JsonEncoder().body(lines) == JsonLinesEncoder().body(lines)
    assert (
        JsonEncoder().body(lines, endpoint=True)
        == b'{"predictions":[{"mean":[1.0]},{"mean":[2.0]}]}'
    )
    assert orjson.loads(JsonEncoder().body([], endpoint=True)) == {"predictions": []}
    assert CsvEncoder().body([b"a,1", b"b,2"], endpoint=True) == b"a,1\nb,2\n"
    assert CsvEncoder().body([]) == b""


def test_the_module_loads_without_torch_or_ray() -> None:
    code = "import sys, batchcast.io.content; print(sorted({'torch', 'ray'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
