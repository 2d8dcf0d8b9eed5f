"""``classes`` (SPEC.md §8): the configuration, a record's own thresholds, and the class
probabilities computed from sample paths, checked against a naive numpy recount."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import numpy as np
import pytest
import torch

from batchcast.errors import ConfigError
from batchcast.forecast.classes import (
    AGGREGATES,
    Classes,
    ThresholdsFieldError,
    classify,
    record_thresholds,
    thresholds_row,
)

_NUMPY_AGGREGATE = {
    "sum": lambda w: w.sum(axis=-1),
    "mean": lambda w: w.mean(axis=-1),
    "max": lambda w: w.max(axis=-1),
    "min": lambda w: w.min(axis=-1),
    "last": lambda w: w[..., -1],
}


def _naive(
    samples: np.ndarray, thresholds: np.ndarray, aggregate: str, lo: int, hi: int
) -> tuple[np.ndarray, np.ndarray]:
    """Class frequencies and the predicted class, one path at a time (SPEC.md §8's rule)."""
    b, s, _ = samples.shape
    k = thresholds.shape[1]
    counts = np.zeros((b, k + 1), dtype=np.int64)
    for i in range(b):
        for j in range(s):
            a = _NUMPY_AGGREGATE[aggregate](samples[i, j, lo:hi].astype(np.float64))
            counts[i, sum(1 for t in thresholds[i] if t <= a)] += 1
    predicted = np.array([int(np.flatnonzero(row == row.max())[0]) for row in counts])
    return (counts / s).astype(np.float32), predicted


@pytest.fixture(scope="module")
def paths() -> torch.Tensor:
    """(B=6, S=200, P=8) positive, demand-like float32 paths."""
    rng = np.random.default_rng(7)
    return torch.from_numpy(rng.gamma(2.0, 5.0, size=(6, 200, 8)).astype(np.float32))


@pytest.mark.parametrize("aggregate", AGGREGATES)
def test_probabilities_are_the_class_frequencies_for_every_aggregate(
    paths: torch.Tensor, aggregate: str
) -> None:
    samples = paths.numpy()
    # Thresholds at quantiles of the aggregates themselves, so every class is populated.
    agg = _NUMPY_AGGREGATE[aggregate](samples[:, :, 2:6].astype(np.float64))
    edges = tuple(float(x) for x in np.quantile(agg, [0.3, 0.55, 0.8]))
    classes = Classes(aggregate=aggregate, steps=(3, 6), thresholds=edges)
    result = classify(paths, classes)
    expected, predicted = _naive(samples, np.tile(edges, (6, 1)), aggregate, 2, 6)
    np.testing.assert_array_equal(result.probabilities.numpy(), expected)
    np.testing.assert_array_equal(result.predicted.numpy(), predicted)
    assert result.probabilities.dtype == torch.float32
    assert result.predicted.dtype == torch.int64
    np.testing.assert_allclose(result.probabilities.sum(dim=1).numpy(), 1.0, rtol=1e-6)
    assert len(set(expected.ravel().tolist())) > 2  # the check is not vacuous


def test_default_steps_are_the_whole_horizon(paths: torch.Tensor) -> None:
    whole = classify(paths, Classes(thresholds=(60.0, 80.0)))
    explicit = classify(paths, Classes(thresholds=(60.0, 80.0), steps=(1, 8)))
    partial = classify(paths, Classes(thresholds=(60.0, 80.0), steps=(1, 7)))
    assert torch.equal(whole.probabilities, explicit.probabilities)
    assert not torch.equal(whole.probabilities, partial.probabilities)


def test_a_path_equal_to_a_threshold_is_in_the_upper_class() -> None:
    # Aggregates (sum over 2 steps) 1, 2, 3, 4 against thresholds [2, 4]: classes 0, 1, 1, 2.
    samples = torch.tensor([[[0.5, 0.5], [1.0, 1.0], [1.5, 1.5], [2.0, 2.0]]])
    result = classify(samples, Classes(thresholds=(2.0, 4.0)))
    assert result.probabilities.tolist() == [[0.25, 0.5, 0.25]]


def test_binary_probability_is_the_upper_class_even_when_it_is_not_predicted() -> None:
    # 3 of 10 paths reach the stock of 5: predicted "0" (below), probability 0.3 (reaching).
    samples = torch.tensor([[1.0] * 7 + [6.0] * 3])[:, :, None]  # (1, 10, 1)
    classes = Classes(thresholds=(5.0,), labels=("short", "enough"))
    result = classify(samples, classes)
    assert result.predicted.tolist() == [0]
    assert result.probability.tolist() == pytest.approx([0.3])
    assert classes.label_names(result.predicted.numpy()) == ["short"]


def test_multiclass_probability_is_that_of_the_predicted_label() -> None:
    samples = torch.tensor([[1.0] * 2 + [5.0] * 5 + [9.0] * 3, [1.0] * 6 + [5.0] * 1 + [9.0] * 3])
    result = classify(samples[:, :, None], Classes(thresholds=(3.0, 7.0)))
    assert result.predicted.tolist() == [1, 0]
    assert result.probability.tolist() == pytest.approx([0.5, 0.6])


def test_ties_go_to_the_lower_class() -> None:
    # Against thresholds [3, 7]: 1 is class 0, 5 class 1, 9 class 2.
    three_way = [1.0, 1.0, 5.0, 5.0, 9.0, 9.0]
    zero_and_two = [1.0, 1.0, 1.0, 9.0, 9.0, 9.0]
    one_and_two = [5.0, 5.0, 5.0, 9.0, 9.0, 9.0]
    samples = torch.tensor([three_way, zero_and_two, one_and_two])[:, :, None]  # (3, 6, 1)
    result = classify(samples, Classes(thresholds=(3.0, 7.0)))
    assert result.probabilities[0].tolist() == pytest.approx([1 / 3] * 3)
    assert result.predicted.tolist() == [0, 0, 1]
    assert result.probability.tolist() == pytest.approx([1 / 3, 1 / 2, 1 / 2])


def test_per_record_thresholds(paths: torch.Tensor) -> None:
    samples = paths.numpy()
    stock = np.array([[40.0], [55.0], [60.0], [70.0], [85.0], [1e9]])  # one per series
    classes = Classes(thresholds_field="stock", labels=("short", "enough"))
    result = classify(paths, classes, thresholds=stock)
    expected, predicted = _naive(samples, stock, "sum", 0, 8)
    np.testing.assert_array_equal(result.probabilities.numpy(), expected)
    np.testing.assert_array_equal(result.predicted.numpy(), predicted)
    assert result.probabilities[-1].tolist() == [1.0, 0.0]  # nothing reaches 1e9
    # A tensor does as well as an array; a (k,) row applies to every series.
    same = classify(paths, classes, thresholds=torch.from_numpy(stock))
    assert torch.equal(same.probabilities, result.probabilities)
    shared = classify(paths, classes, thresholds=np.array([60.0]))
    assert torch.equal(shared.probabilities, classify(paths, Classes(thresholds=(60.0,)))[0])


def test_thresholds_are_compared_in_float64() -> None:
    # A threshold just above a float32 value ``a`` rounds down to ``a`` in float32. In float64
    # the path at ``a`` stays below it (class 0), as a host recount from the samples finds.
    a = np.float32(0.1)
    threshold = float(np.float64(a) + 1e-12)
    assert np.float32(threshold) == a  # the case where float32 would say "reached"
    result = classify(torch.tensor([[[float(a)]]]), Classes(thresholds=(threshold,)))
    assert result.predicted.tolist() == [0]


def test_per_record_thresholds_are_required_and_shaped(paths: torch.Tensor) -> None:
    classes = Classes(thresholds_field="stock")
    with pytest.raises(ValueError, match="per-record thresholds must be given"):
        classify(paths, classes)
    with pytest.raises(ValueError, match=r"\(6, 1\)"):
        classify(paths, classes, thresholds=np.zeros((5, 1)))


def test_steps_past_the_horizon_are_a_config_error(paths: torch.Tensor) -> None:
    classes = Classes(thresholds=(1.0,), steps=(5, 9))
    with pytest.raises(ConfigError, match=r"classes.steps \[5, 9\].*\[1, 8\]"):
        classify(paths, classes)
    with pytest.raises(ConfigError, match="prediction_length"):
        classes.step_range(8)
    assert classes.step_range(9) == (4, 9)
    assert Classes(thresholds=(1.0,)).step_range(24) == (0, 24)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_cuda_the_result_stays_on_the_device_and_matches_cpu(paths: torch.Tensor) -> None:
    classes = Classes(aggregate="mean", thresholds=(8.0, 11.0, 14.0))
    cpu = classify(paths, classes)
    gpu = classify(paths.cuda(), classes)
    assert gpu.probabilities.device.type == "cuda"
    assert torch.equal(gpu.probabilities.cpu(), cpu.probabilities)
    assert torch.equal(gpu.predicted.cpu(), cpu.predicted)
    stock = torch.full((6, 3), 1.0).cumsum(dim=1) * 4.0  # on the CPU: moved to the device
    assert torch.equal(
        classify(
            paths.cuda(),
            Classes(thresholds_field="s", labels=("a", "b", "c", "d")),
            thresholds=stock,
        ).probabilities.cpu(),
        classify(paths, Classes(thresholds=(4.0, 8.0, 12.0))).probabilities,
    )


# --- configuration


def test_from_mapping_defaults_and_round_trip() -> None:
    classes = Classes.from_mapping({"thresholds": [100, 250.5]})
    assert classes == Classes(aggregate="sum", steps=None, thresholds=(100.0, 250.5))
    assert classes.labels == ("0", "1", "2")
    assert classes.num_thresholds == 2
    spec = {
        "aggregate": "max",
        "steps": [1, 24],
        "thresholds": [100.0, 250.0],
        "labels": ["low", "medium", "high"],
        "thresholds_field": None,
    }
    parsed = Classes.from_mapping(spec)
    assert parsed.to_dict() == spec
    assert Classes.from_mapping(parsed.to_dict()) == parsed
    assert Classes.from_mapping({"thresholds": [1], "steps": 3}).steps == (3, 3)


def test_thresholds_field_sets_k_through_the_labels() -> None:
    assert Classes(thresholds_field="stock").labels == ("0", "1")
    three = Classes.from_mapping({"thresholds_field": "bands", "labels": ["lo", "mid", "hi"]})
    assert three.num_thresholds == 2


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"thresholds": [3, 2]},
            r"classes.thresholds must be strictly ascending, got \[3.0, 2.0\]",
        ),
        ({"thresholds": [1, 1]}, "strictly ascending"),
        ({"thresholds": [1, 2], "labels": ["a", "b"]}, "classes.labels must have 3 entries"),
        ({"thresholds": [1], "labels": ["a", "b", "c"]}, "classes.labels must have 2 entries"),
        ({"thresholds": [1], "labels": ["a", "a"]}, "must not repeat a label"),
        ({"thresholds": [1], "labels": ["a", 2]}, "classes.labels must be an array of strings"),
        ({"thresholds_field": "s", "labels": ["only"]}, "at least 2 entries"),
        ({"thresholds": [1], "aggregate": "median"}, "classes.aggregate must be one of"),
        ({"thresholds": [1], "steps": [0, 4]}, "1 <= first <= last"),
        ({"thresholds": [1], "steps": [5, 4]}, "1 <= first <= last"),
        ({"thresholds": [1], "steps": [1, 2, 3]}, r"classes.steps must be \[first, last\]"),
        ({"thresholds": [1], "steps": [1.5, 2]}, "classes.steps entries must be an integer"),
        ({"thresholds": [1], "steps": "1-24"}, "classes.steps must be a JSON array"),
        ({"thresholds": "100"}, "classes.thresholds must be a JSON array"),
        ({"thresholds": [1, True]}, "classes.thresholds entries must be a number"),
        ({"thresholds": [1, float("inf")]}, "must be a finite number"),
        ({}, "classes needs thresholds"),
        ({"thresholds": [1], "thresholds_field": "stock"}, "are alternatives"),
        ({"thresholds_field": ""}, "classes.thresholds_field must be a record field name"),
        ({"thresholds": [1], "bins": 3}, r"unknown classes key\(s\) \['bins'\]"),
    ],
)
def test_bad_configurations_name_the_key(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Classes.from_mapping(data)


def test_classes_must_be_an_object() -> None:
    with pytest.raises(ConfigError, match="classes must be a JSON object"):
        Classes.from_mapping([1, 2])


# --- a record's own thresholds


@pytest.mark.parametrize(
    ("value", "k", "expected"),
    [(5, 1, [5.0]), (2.5, 1, [2.5]), ([5], 1, [5.0]), ([1, 2.5, 9], 3, [1.0, 2.5, 9.0])],
)
def test_thresholds_row_accepts_numbers_and_arrays(
    value: Any, k: int, expected: list[float]
) -> None:
    assert thresholds_row(value, k) == expected


@pytest.mark.parametrize(
    ("value", "k", "message"),
    [
        ("12", 1, "expected a number, found '12'"),
        (None, 1, "expected a number, found None"),
        (True, 1, "expected a number"),
        ([1, 2], 1, "expected a number"),
        (5, 2, "expected a strictly ascending array of 2 finite numbers, found 5"),
        ([1, "2"], 2, "found"),
        ([3, 1], 2, r"found \[3.0, 1.0\] \(not ascending\)"),
        ([1, 1], 2, "not ascending"),
        ([1, float("nan")], 2, "finite"),
    ],
)
def test_thresholds_row_rejects_malformed_values(value: Any, k: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        thresholds_row(value, k)


def test_record_thresholds_name_the_field() -> None:
    classes = Classes(thresholds_field="stock", labels=("lo", "mid", "hi"))
    assert record_thresholds({"target": [1], "stock": [10, 20]}, classes) == [10.0, 20.0]
    with pytest.raises(ThresholdsFieldError, match="required field is missing") as missing:
        record_thresholds({"target": [1]}, classes)
    assert missing.value.field == "stock"
    with pytest.raises(ThresholdsFieldError, match="ascending array of 2") as bad:
        record_thresholds({"stock": 12}, classes)
    assert (bad.value.field, str(bad.value)) == ("stock", bad.value.message)


def test_the_module_loads_without_torch() -> None:
    # forecast.config and io import it; neither may pull torch in.
    code = "import sys, batchcast.forecast.classes; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
