"""Value coercion for configuration that may arrive as text (SageMaker's way).

SageMaker passes every hyperparameter and environment value as a string, and job bodies and
inference configurations are JSON, so the same rules apply everywhere a number, a list or an
``auto``/``ignore`` choice is read: ``forecast.config`` (hyperparameters, the model signature,
the inference configuration), ``runner.job`` (the job body and environment),
``forecast.gluonts`` (a GluonTS predictor's JSON) and ``io.training`` (feature settings).

The rules, one function each:

- :func:`as_int`: an ``int``, an integral ``float`` (``40.0``) or the text of an integer
  (``"40"``); never a ``bool`` (JSON ``true`` is not 1). With ``text=False`` only JSON
  numbers are accepted (artifact metadata, where a string means a corrupt file).
- :func:`as_float`: a finite number or its text (``"1e-3"``); never a bool, NaN or inf.
- :func:`as_list`: a JSON array, as a list or as its text (``"[2, 3]"``).
- :func:`as_choice_or_int` / :func:`as_choice_or_ints`: one of a few words (``auto``,
  ``ignore``) or an integer / a list of integers.

Every failure is a :class:`~batchcast.errors.ConfigError` naming the field, the value as
given and what was expected, e.g. ``context_length must be an integer, got '4.5'`` or
``num_samples must be >= 1, got 0``. No batchcast import but ``errors``, so every room may
use this module.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import orjson

from batchcast.errors import ConfigError

__all__ = ["as_choice_or_int", "as_choice_or_ints", "as_float", "as_int", "as_list"]


def as_int(name: str, value: Any, *, minimum: int | None = 1, text: bool = True) -> int:
    """``value`` as an integer.

    Args:
        name: the field, for the message.
        value: an int, an integral float, or (with ``text``) the text of an integer.
        minimum: the smallest value allowed (None: any).
        text: whether a string may hold the number.

    Returns:
        The integer.

    Raises:
        ConfigError: for a bool, a fractional or non-numeric value, or one below ``minimum``.
    """
    number: int | None = None
    if isinstance(value, str):
        if text:
            try:
                number = int(value)  # "4.5" and "1e3" are not integers in SageMaker's text
            except ValueError:
                number = None
    elif isinstance(value, numbers.Real) and not isinstance(value, bool):
        # int and numpy's integers, or a float that holds an integer (40.0)
        real = float(value)
        if isinstance(value, numbers.Integral):
            number = int(value)
        elif math.isfinite(real) and real.is_integer():
            number = int(real)
    if number is None:
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    if minimum is not None and number < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {number}")
    return number


def as_float(name: str, value: Any) -> float:
    """``value`` as a finite float (a number or its text).

    Raises:
        ConfigError: for a bool, a non-numeric value, NaN or an infinity.
    """
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, str)):
        raise ConfigError(f"{name} must be a number, got {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ConfigError(f"{name} must be finite, got {value!r}")
    return number


def as_list(name: str, value: Any) -> list[Any]:
    """A JSON array, given as a list or tuple or as its text (``"[2, 3]"``).

    Raises:
        ConfigError: for anything else, or text that is not a JSON array.
    """
    if isinstance(value, str):
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
            raise ConfigError(f"{name} must be a JSON array, got {value!r}") from None
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{name} must be a JSON array, got {value!r}")
    return list(value)


def as_choice_or_int(
    name: str, value: Any, *, choices: Sequence[str] = ("auto", "ignore"), minimum: int = 0
) -> str | int:
    """One of ``choices`` as given, or an integer >= ``minimum`` (SageMaker's
    ``num_dynamic_feat``).

    Raises:
        ConfigError: naming the choices and the integer bound.
    """
    if isinstance(value, str) and value in choices:
        return value
    try:
        return as_int(name, value, minimum=minimum)
    except ConfigError:
        raise ConfigError(
            f"{name} must be {_words(choices)} or an integer >= {minimum}, got {value!r}"
        ) from None


def as_choice_or_ints(
    name: str, value: Any, *, choices: Sequence[str] = ("auto", "ignore"), minimum: int = 1
) -> str | tuple[int, ...]:
    """One of ``choices`` as given, or a list of integers >= ``minimum`` (a list, a tuple or
    its JSON text; SageMaker's ``cardinality``).

    Raises:
        ConfigError: naming the choices, or the first bad entry.
    """
    if isinstance(value, str) and value in choices:
        return value
    if isinstance(value, str) and not value.lstrip().startswith("["):
        raise ConfigError(
            f"{name} must be {_words(choices)} or a list of integers >= {minimum}, got {value!r}"
        )
    return tuple(as_int(f"{name} entries", v, minimum=minimum) for v in as_list(name, value))


def _words(choices: Sequence[str]) -> str:
    quoted = [repr(c) for c in choices]
    return " or ".join(quoted)
