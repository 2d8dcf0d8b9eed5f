"""The record contract (SPEC.md §1) and the columns of the records that keep it.

:class:`RecordContract` says what a record must hold for a model; :class:`Validator` checks
parsed records against it one by one and builds the good ones' columns (a
:class:`~batchcast.forecast.series.SeriesBatch`). Parsing is :mod:`batchcast.io.records`'s:
this module sees JSON values, never bytes (but for a cheap scan of a line for ``true`` /
``false``).

A record that breaks a rule gets one error, for the first rule it breaks in the order ``$``,
``start``, ``target``, ``cat``, ``dynamic_feat``.

Decisions where SPEC.md is silent:

- A target value must satisfy ``|x| <= 1e30`` (:data:`MAX_ABS_TARGET`). The network computes
  in float32 (largest finite 3.4e38): the scale is the mean of ``|x|`` over the context, and
  the samples are ``scale * (loc + sigma * t)``. A target of 1e38 overflows these sums and
  products to inf and every forecast of the series comes out null (issue 9.6); 1e30 leaves a
  factor of 3.4e8 of headroom for them, while no real quantity in a forecasting job comes
  near 1e30.
- A ``dynamic_feat`` value must fit float32 (``|x| < 3.4e38``); it is not scaled.
- ``cat`` values must be JSON integers: ``1.0`` is rejected like ``true``.
- A string in ``target`` must be exactly ``"NaN"`` or ``"nan"``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from batchcast.errors import ConfigError, RecordError
from batchcast.forecast.classes import Classes, thresholds_row
from batchcast.forecast.config import ModelSpec
from batchcast.forecast.series import SeriesBatch

__all__ = ["MAX_ABS_TARGET", "UNBOUNDED", "FieldError", "RecordContract", "Validator", "describe"]

MAX_ABS_TARGET = 1e30
_MAX_ABS_TARGET_F32 = np.float32(MAX_ABS_TARGET)  # the bound as the float32 the value becomes

# A cardinality not known yet ("auto" during training): any integer >= 0 is in range.
UNBOUNDED = int(np.iinfo(np.int64).max)

_START_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}(?: [0-9]{2}:[0-9]{2}:[0-9]{2})?")
_TZ_RE = re.compile(r"(?:Z|[+-][0-9]{2}(?::?[0-9]{2})?)$")
_START_FORMAT = "a string 'YYYY-MM-DD HH:MM:SS' or 'YYYY-MM-DD' (no time zone)"
_NUMERIC_KINDS = "fiu"


class FieldError(Exception):
    """One broken rule of one record: the field and what was expected (becomes a
    :class:`~batchcast.errors.RecordError` once its line is known; never leaves ``io``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass(frozen=True)
class RecordContract:
    """What a record must hold for a model.

    Attributes:
        prediction_length: the forecast horizon P.
        cardinality: one entry per ``cat`` feature (empty: ``cat`` is not used);
            :data:`UNBOUNDED` for a feature whose bound the data will tell.
        num_dynamic_feat: how many ``dynamic_feat`` arrays (0: not used).
        future_length: how many values past the target each ``dynamic_feat`` array must
            have: P at inference, 0 in training.
        thresholds_field: the field holding each record's own class thresholds
            (``classes.thresholds_field``, SPEC.md §8), required in every record when set.
        num_thresholds: how many thresholds that field holds (k).
    """

    prediction_length: int
    cardinality: tuple[int, ...] = ()
    num_dynamic_feat: int = 0
    future_length: int = 0
    thresholds_field: str | None = None
    num_thresholds: int = 0

    def __post_init__(self) -> None:
        if self.prediction_length < 1:
            raise ConfigError(f"prediction_length must be >= 1, got {self.prediction_length}")
        if any(c < 1 for c in self.cardinality):
            raise ConfigError(f"cardinality entries must be >= 1, got {list(self.cardinality)}")
        if self.num_dynamic_feat < 0:
            raise ConfigError(f"num_dynamic_feat must be >= 0, got {self.num_dynamic_feat}")
        if self.future_length < 0:
            raise ConfigError(f"future_length must be >= 0, got {self.future_length}")

    @classmethod
    def for_inference(cls, spec: ModelSpec, classes: Classes | None = None) -> RecordContract:
        """The contract a trained model (and the job's ``classes``) sets for input records."""
        field = classes.thresholds_field if classes is not None else None
        return cls(
            prediction_length=spec.prediction_length,
            cardinality=tuple(spec.cardinality),
            num_dynamic_feat=spec.num_dynamic_feat,
            future_length=spec.prediction_length,
            thresholds_field=field,
            num_thresholds=classes.num_thresholds if classes is not None and field else 0,
        )


class Validator:
    """Checks records one by one against a contract, collecting the good ones' columns.

    Args:
        uri: the input object, for error messages.
        contract: what each record must hold.
        first_line: the line number of local index 0.
        input_filter: maps a parsed line to the model's input (``Join.model_input``); a
            LookupError from it is a record error.
    """

    def __init__(
        self,
        *,
        uri: str,
        contract: RecordContract,
        first_line: int = 1,
        input_filter: Callable[[Any], Any] | None = None,
    ) -> None:
        self.uri = uri
        self.first_line = first_line
        self.input_filter = input_filter
        self._columns = _Columns(contract)
        self._errors: list[RecordError] = []

    def reject(self, i: int, bad: FieldError) -> None:
        """Record that the line at local index ``i`` broke a rule."""
        self._errors.append(RecordError(self.uri, self.first_line + i, bad.field, bad.message))

    def check(self, i: int, value: Any, line: bytes) -> None:
        """Check the parsed line at local index ``i`` (its raw bytes ``line``); keep its
        columns if it is good, its error otherwise."""
        if self.input_filter is not None:
            try:
                value = self.input_filter(value)
            except LookupError as err:
                self.reject(
                    i, FieldError("$", f"InputFilter selects nothing in this record: {err}")
                )
                return
        try:
            self._columns.add(i, value, line)
        except FieldError as bad:
            self.reject(i, bad)

    def finish(self) -> tuple[SeriesBatch, np.ndarray, list[RecordError]]:
        """The batch of good records, their local line indices ((n_good,) int64) and every
        error, sorted by line."""
        batch, good, bad_starts = self._columns.build()
        for i, message in bad_starts:
            self.reject(i, FieldError("start", message))
        self._errors.sort(key=lambda e: e.line)
        return batch, good, self._errors


class _Columns:
    """Accumulates the good records' fields; :meth:`build` makes the SeriesBatch."""

    def __init__(self, contract: RecordContract) -> None:
        self.contract = contract
        self.n_cat = len(contract.cardinality)
        self.index: list[int] = []
        self.starts: list[str] = []
        self.targets: list[np.ndarray] = []
        self.cats: list[list[int]] = []
        self.dynamic: list[np.ndarray] = []
        self.thresholds: list[list[float]] = []

    def add(self, i: int, record: Any, line: bytes) -> None:
        if type(record) is not dict:
            raise FieldError("$", f"expected a JSON object, found {describe(record)}")
        # Only records with a true/false token anywhere can hide a bool among numbers.
        maybe_bool = b"true" in line or b"false" in line
        start = _start(record)
        target = _target(record, maybe_bool=maybe_bool)
        cat = _cat(record, self.contract.cardinality) if self.n_cat else None
        dyn = (
            _dynamic(record, self.contract, len(target), maybe_bool=maybe_bool)
            if self.contract.num_dynamic_feat
            else None
        )
        thresholds = _thresholds(record, self.contract) if self.contract.thresholds_field else None
        self.index.append(i)
        self.starts.append(start)
        self.targets.append(target)
        if cat is not None:
            self.cats.append(cat)
        if dyn is not None:
            self.dynamic.append(dyn)
        if thresholds is not None:
            self.thresholds.append(thresholds)

    def build(self) -> tuple[SeriesBatch, np.ndarray, list[tuple[int, str]]]:
        """The batch of good records, their line indices, and (line index, message) for
        well-formed ``start`` values that are impossible dates."""
        seconds, bad = _parse_starts(self.starts)
        index, targets, cats, dynamic = self.index, self.targets, self.cats, self.dynamic
        thresholds = self.thresholds
        if bad:  # rare: drop the records whose start numpy rejected
            keep = sorted(set(range(len(index))) - {k for k, _ in bad})
            seconds = seconds[keep]
            index, targets = [index[k] for k in keep], [targets[k] for k in keep]
            cats = [cats[k] for k in keep] if cats else cats
            dynamic = [dynamic[k] for k in keep] if dynamic else dynamic
            thresholds = [thresholds[k] for k in keep] if thresholds else thresholds
        k = self.contract.num_thresholds
        batch = SeriesBatch.from_lists(
            start=seconds,
            targets=targets,
            cat=cats,
            dynamic=dynamic,
            num_dynamic_feat=self.contract.num_dynamic_feat,
            num_cat=self.n_cat,
            thresholds=np.asarray(thresholds, dtype=np.float64).reshape(len(index), k)
            if self.contract.thresholds_field
            else None,
        )
        good = np.asarray(index, dtype=np.int64)
        return batch, good, [(self.index[k], message) for k, message in bad]


def describe(value: Any) -> str:
    """A short description of a found value for an error message (``an integer 5``)."""
    kind = {
        dict: "an object",
        list: "an array",
        str: "a string",
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        type(None): "null",
    }.get(type(value), type(value).__name__)
    if value is None:
        return kind
    text = orjson.dumps(value).decode()
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{kind} {text}"


# --- the record's own class thresholds (SPEC.md §8)


def _thresholds(record: dict[str, Any], contract: RecordContract) -> list[float]:
    field = contract.thresholds_field
    assert field is not None  # only called when the contract has one
    if field not in record:
        raise FieldError(
            field,
            "required field is missing (classes.thresholds_field names it); expected "
            + (
                "a number"
                if contract.num_thresholds == 1
                else f"an ascending array of {contract.num_thresholds} numbers"
            ),
        )
    try:
        return thresholds_row(record[field], contract.num_thresholds)
    except ValueError as err:
        raise FieldError(field, str(err)) from None


# --- start


def _start(record: dict[str, Any]) -> str:
    if "start" not in record:
        raise FieldError("start", f"required field is missing; expected {_START_FORMAT}")
    start = record["start"]
    if type(start) is not str:
        raise FieldError("start", f"expected {_START_FORMAT}, found {describe(start)}")
    if _START_RE.fullmatch(start) is None:
        raise FieldError("start", _start_format_problem(start))
    return start


def _start_format_problem(start: str) -> str:
    # A start is a short string; a bad one may be megabytes, which the error must not echo.
    found = f"found {start!r}" if len(start) <= 40 else f"found {describe(start)}"
    # A zone follows a well-formed date and time ("2020-01-01T00:00:00+02:00"), not a year
    # of five digits ("10000-01-01", whose "-01" would look like one).
    if _TZ_RE.search(start) and _START_RE.match(start[:10]) and len(start) > 10:
        return f"has a time zone; expected a naive time, {_START_FORMAT}, {found}"
    if "T" in start:
        return f"expected a space between date and time, {_START_FORMAT}, {found}"
    return f"expected {_START_FORMAT}, {found}"


def _parse_starts(starts: list[str]) -> tuple[np.ndarray, list[tuple[int, str]]]:
    """(B,) int64 seconds since 1970-01-01, and (position, message) for impossible dates."""
    try:
        return np.array(starts, dtype="datetime64[s]").astype(np.int64), []
    except ValueError:
        pass
    # Rare: some start is well formed but impossible (2020-02-30); find which, one by one.
    seconds = np.zeros(len(starts), dtype=np.int64)
    bad = []
    for k, start in enumerate(starts):
        try:
            seconds[k] = np.datetime64(start, "s").astype(np.int64)
        except ValueError as err:
            bad.append((k, f"expected a valid date and time, found {start!r} ({err})"))
    return seconds, bad


# --- target


def _target(record: dict[str, Any], *, maybe_bool: bool) -> np.ndarray:
    if "target" not in record:
        raise FieldError("target", "required field is missing; expected an array of numbers")
    values = record["target"]
    if type(values) is not list:
        raise FieldError(
            "target",
            f'expected an array of numbers (null or "NaN" if missing), found {describe(values)}',
        )
    try:
        inferred = np.asarray(values)
    except ValueError:  # ragged nested arrays
        inferred = None
    # Fast path: numpy inferred a flat numeric array (None or a string would have made it
    # an object or string array) and the line holds no bool that could pass as 0 or 1.
    if (
        inferred is not None
        and inferred.ndim == 1
        and inferred.dtype.kind in _NUMERIC_KINDS
        and not maybe_bool
    ):
        return _bounded_target(inferred)
    return _target_slow(values)


def _target_slow(values: list[Any]) -> np.ndarray:
    """Targets with missing values (null, "NaN"), or the first wrong entry as an error."""
    for j, v in enumerate(values):
        kind = type(v)
        if kind is float or kind is int or v is None or (kind is str and v in ("NaN", "nan")):
            continue
        raise FieldError(
            "target",
            f'target[{j}]: expected a number, null or "NaN", found {describe(v)}',
        )
    # numpy reads None and "NaN"/"nan" as NaN when converting to a float dtype.
    return _bounded_target(np.array(values, dtype=np.float64))


def _bounded_target(values: np.ndarray) -> np.ndarray:
    """``values`` as float32; a magnitude over :data:`MAX_ABS_TARGET` is an error."""
    with np.errstate(over="ignore"):  # overflow to inf is reported below, not warned about
        out = values.astype(np.float32)
    beyond = np.abs(out) > _MAX_ABS_TARGET_F32  # NaN compares False: missing values pass
    if beyond.any():
        j = int(np.flatnonzero(beyond)[0])
        raise FieldError(
            "target",
            f"target[{j}]: expected |x| <= {MAX_ABS_TARGET:g} (larger values overflow the "
            f"model's scaled float32 arithmetic), found {values[j].item()!r}",
        )
    return out


# --- cat


def _cat(record: dict[str, Any], cardinality: tuple[int, ...]) -> list[int]:
    n = len(cardinality)
    expected = (
        f"an array of {n} integer(s), one per feature of the model's cardinality "
        f"{list(cardinality)}"
    )
    if "cat" not in record:
        raise FieldError(
            "cat", f"required field is missing (the model uses categories); expected {expected}"
        )
    cat = record["cat"]
    if type(cat) is not list:
        raise FieldError("cat", f"expected {expected}, found {describe(cat)}")
    if len(cat) != n:
        raise FieldError("cat", f"expected {expected}, found {len(cat)} value(s)")
    for j, (v, k) in enumerate(zip(cat, cardinality, strict=True)):
        if type(v) is not int:
            raise FieldError("cat", f"cat[{j}]: expected an integer, found {describe(v)}")
        if not 0 <= v < k:
            bound = "an integer >= 0" if k == UNBOUNDED else f"an integer in [0, {k})"
            raise FieldError("cat", f"cat[{j}]: expected {bound} (cardinality {k}), found {v}")
    return cat


# --- dynamic_feat


def _dynamic(
    record: dict[str, Any], contract: RecordContract, target_length: int, *, maybe_bool: bool
) -> np.ndarray:
    """(T + future_length, n_dyn) float32, time-major as SeriesBatch stores it."""
    n = contract.num_dynamic_feat
    length = target_length + contract.future_length
    why = (
        f"len(target) {target_length} + prediction_length {contract.future_length}"
        if contract.future_length
        else "len(target)"
    )
    expected = f"{n} array(s) of {length} numbers ({why})"
    if "dynamic_feat" not in record:
        raise FieldError(
            "dynamic_feat",
            f"required field is missing (the model uses dynamic features); expected {expected}",
        )
    feats = record["dynamic_feat"]
    if type(feats) is not list:
        raise FieldError("dynamic_feat", f"expected {expected}, found {describe(feats)}")
    if len(feats) != n:
        raise FieldError("dynamic_feat", f"expected {expected}, found {len(feats)} array(s)")
    try:
        inferred = np.asarray(feats)
    except ValueError:  # ragged: some array has another length; found below
        inferred = None
    if (
        inferred is not None
        and inferred.shape == (n, length)
        and inferred.dtype.kind in _NUMERIC_KINDS
        and not maybe_bool
    ):
        return _finite_float32(inferred).T
    _dynamic_problem(feats, length=length, why=why)
    # No problem found: every entry is an int or a float and the fast path only missed
    # because the line has a true/false token somewhere else.
    return _finite_float32(np.array(feats, dtype=np.float64)).T


def _finite_float32(values: np.ndarray) -> np.ndarray:
    """(n_dyn, D) ``values`` as float32; a value beyond float32's range is an error."""
    with np.errstate(over="ignore"):  # overflow is reported below, not warned about
        out = values.astype(np.float32)
    overflow = np.isinf(out)
    if overflow.any():
        i, j = np.unravel_index(int(np.flatnonzero(overflow)[0]), out.shape)
        raise FieldError(
            "dynamic_feat",
            f"dynamic_feat[{i}][{j}]: expected a number within float32's range "
            f"(|x| < 3.4e38), found {values[i, j].item()!r}",
        )
    return out


def _dynamic_problem(feats: list[Any], *, length: int, why: str) -> None:
    """Raise the first problem in ``feats``; return when there is none."""
    for i, feat in enumerate(feats):
        field = f"dynamic_feat[{i}]"
        if type(feat) is not list:
            raise FieldError(
                "dynamic_feat",
                f"{field}: expected an array of {length} numbers, found {describe(feat)}",
            )
        if len(feat) != length:
            raise FieldError(
                "dynamic_feat", f"{field}: expected {length} values ({why}), found {len(feat)}"
            )
        for j, v in enumerate(feat):
            kind = type(v)
            if kind is float or kind is int:
                continue
            missing = v is None or (kind is str and v in ("NaN", "nan"))
            found = (
                f"{describe(v)}: dynamic_feat may not have missing values"
                if missing
                else describe(v)
            )
            raise FieldError("dynamic_feat", f"{field}[{j}]: expected a number, found {found}")
