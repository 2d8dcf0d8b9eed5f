"""The coercion rules every room shares (batchcast.coerce): text forms, bools, bounds."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from batchcast.coerce import as_choice_or_int, as_choice_or_ints, as_float, as_int, as_list
from batchcast.errors import ConfigError


@pytest.mark.parametrize(
    ("value", "expected"),
    [(3, 3), ("3", 3), (" 7 ", 7), (3.0, 3), (np.int64(5), 5), (np.float32(2.0), 2)],
)
def test_as_int_accepts_integers_in_any_form(value: Any, expected: int) -> None:
    result = as_int("n", value)
    assert result == expected
    assert type(result) is int


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (True, "True"),
        (2.5, "2.5"),
        ("2.5", "'2.5'"),
        ("1e3", "'1e3'"),
        ("x", "'x'"),
        (None, "None"),
        (float("inf"), "inf"),
        ([1], "[1]"),
    ],
)
def test_as_int_rejects_non_integers_naming_field_and_value(value: Any, shown: str) -> None:
    with pytest.raises(ConfigError, match="n must be an integer") as info:
        as_int("n", value)
    assert shown in str(info.value)


def test_as_int_bounds_and_text_switch() -> None:
    with pytest.raises(ConfigError, match="n must be >= 1, got 0"):
        as_int("n", "0")
    assert as_int("n", -4, minimum=None) == -4
    assert as_int("n", 0, minimum=0) == 0
    with pytest.raises(ConfigError, match="must be an integer, got '3'"):
        as_int("n", "3", text=False)


def test_as_float() -> None:
    assert as_float("x", "1e-3") == 1e-3
    assert as_float("x", 2) == 2.0
    for bad, message in [
        (True, "must be a number"),
        ("fast", "must be a number"),
        (None, "must be a number"),
        ("nan", "must be finite"),
        (float("-inf"), "must be finite"),
    ]:
        with pytest.raises(ConfigError, match=f"x {message}"):
            as_float("x", bad)


def test_as_list() -> None:
    assert as_list("xs", "[2, 3]") == [2, 3]
    assert as_list("xs", (1,)) == [1]
    for bad in ("2, 3", "3", 3, {"a": 1}):
        with pytest.raises(ConfigError, match="xs must be a JSON array"):
            as_list("xs", bad)


def test_choices() -> None:
    assert as_choice_or_int("k", "auto") == "auto"
    assert as_choice_or_int("k", "2") == 2
    assert as_choice_or_ints("c", "ignore") == "ignore"
    assert as_choice_or_ints("c", "[2, 3]") == (2, 3)
    assert as_choice_or_ints("c", [4]) == (4,)
    with pytest.raises(ConfigError, match="k must be 'auto' or 'ignore' or an integer >= 0"):
        as_choice_or_int("k", "many")
    with pytest.raises(ConfigError, match=r"c must be 'auto' or 'ignore' or a list"):
        as_choice_or_ints("c", "some")
    with pytest.raises(ConfigError, match="c entries must be >= 1, got 0"):
        as_choice_or_ints("c", "[0]")
