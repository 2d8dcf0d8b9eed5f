"""Input records: JSON Lines -> validated columnar :class:`SeriesBatch` (SPEC.md §1).

Two stages, kept apart: the codec (one ``orjson.loads`` per line: :func:`parse_lines`) and
validation (the record contract, building the columns: :func:`validate_records`).
:func:`decode_records` runs both line by line for a shard, so a shard's parsed Python
objects never pile up; :func:`load_training_data` runs them one after the other over a
training channel, with SageMaker's ``auto``/``ignore`` resolution in between.

A record that breaks a rule becomes one :class:`RecordError` (the first rule it breaks, in
the order ``$``, ``start``, ``target``, ``cat``, ``dynamic_feat``), never an exception out
of here. Line numbers are 1-based and relative to ``first_line``: a worker reading a byte
range numbers its shard from 1 and the driver adds the earlier shards' line counts
(:func:`renumber`).

Decisions where SPEC.md is silent:

- A target value beyond float32's range (|x| > 3.4e38) is an error rather than a silent inf.
- ``cat`` values must be JSON integers: ``1.0`` is rejected like ``true``.
- A string in ``target`` must be exactly ``"NaN"`` or ``"nan"``.
- ``MaxPayloadInMB`` is in MiB (2**20 bytes).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from batchcast.errors import ConfigError, RecordError
from batchcast.forecast.config import ModelSpec
from batchcast.forecast.series import SeriesBatch
from batchcast.io.shards import Shard, read_shard_lines
from batchcast.io.sources import list_inputs

__all__ = [
    "DecodedShard",
    "RecordContract",
    "TrainingData",
    "decode_records",
    "load_training_data",
    "parse_lines",
    "renumber",
    "validate_records",
]

MIB = 1 << 20


class _Undecodable:
    def __repr__(self) -> str:
        return "UNDECODABLE"


# A stand-in for "this line did not decode" (JSON null is a valid, if wrong, record).
UNDECODABLE: Any = _Undecodable()

# "auto" cardinality during training: any integer >= 0 until the data fixes the bound.
_UNBOUNDED = np.iinfo(np.int64).max

_START_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}(?: [0-9]{2}:[0-9]{2}:[0-9]{2})?")
_TZ_RE = re.compile(r"(?:Z|[+-][0-9]{2}(?::?[0-9]{2})?)$")
_START_FORMAT = "a string 'YYYY-MM-DD HH:MM:SS' or 'YYYY-MM-DD' (no time zone)"
_NUMERIC_KINDS = "fiu"


@dataclass(frozen=True)
class RecordContract:
    """What a record must hold for a model.

    Attributes:
        prediction_length: the forecast horizon P.
        cardinality: one entry per ``cat`` feature (empty: ``cat`` is not used).
        num_dynamic_feat: how many ``dynamic_feat`` arrays (0: not used).
        future_length: how many values past the target each ``dynamic_feat`` array must
            have: P at inference, 0 in training.
    """

    prediction_length: int
    cardinality: tuple[int, ...] = ()
    num_dynamic_feat: int = 0
    future_length: int = 0

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
    def for_inference(cls, spec: ModelSpec) -> RecordContract:
        """The contract a trained model sets for its input records."""
        return cls(
            prediction_length=spec.prediction_length,
            cardinality=tuple(spec.cardinality),
            num_dynamic_feat=spec.num_dynamic_feat,
            future_length=spec.prediction_length,
        )


@dataclass
class DecodedShard:
    """The decoded records of one shard (or any run of lines).

    Attributes:
        batch: the good records, in line order.
        good: (n_good,) int64 local 0-based line index of each series in ``batch``.
        errors: one per bad line, sorted by line.
        records: the parsed JSON value of every line (None where it did not decode; a
            ``null`` line is None too, and an error either way), only when asked for
            (joins and forwarded fields need them).
        num_lines: how many lines were decoded.
    """

    batch: SeriesBatch
    good: np.ndarray
    errors: list[RecordError]
    records: list[Any] | None
    num_lines: int


def renumber(errors: Sequence[RecordError], offset: int) -> list[RecordError]:
    """The same errors with ``offset`` added to each line number (shard-local -> file)."""
    return [RecordError(e.uri, e.line + offset, e.field, e.message) for e in errors]


def decode_records(
    lines: Sequence[bytes],
    *,
    uri: str,
    contract: RecordContract,
    first_line: int = 1,
    oversize: Mapping[int, int] | None = None,
    max_payload_mb: float = 6,
    input_filter: Callable[[Any], Any] | None = None,
    keep_records: bool = False,
) -> DecodedShard:
    """Decode and validate JSON Lines into a columnar batch and record errors.

    Each line is parsed and validated in one pass, so only the good records' numpy arrays
    outlive the loop (the parsed Python objects take ~8x the bytes of the line).

    Args:
        lines: the lines, without newlines (as :func:`read_shard_lines` gives them).
        uri: the input object, for error messages.
        contract: what each record must hold.
        first_line: the line number of ``lines[0]``.
        oversize: local index -> byte length of lines too long to have been read.
        max_payload_mb: ``MaxPayloadInMB``: a longer line is a record error.
        input_filter: maps a parsed line to the model's input (``Join.model_input``);
            a LookupError from it is a record error.
        keep_records: also return every parsed line in ``records``.

    Returns:
        The good records as a batch, their line indices, and the errors.
    """
    limit = int(max_payload_mb * MIB)
    checker = _Checker(uri=uri, contract=contract, first_line=first_line, input_filter=input_filter)
    records: list[Any] | None = [] if keep_records else None
    for i, line in enumerate(lines):
        try:
            size = oversize.get(i) if oversize else None
            value = _parse_line(line, size, limit=limit, limit_mb=max_payload_mb)
        except _FieldError as bad:
            checker.reject(i, bad)
            if records is not None:
                records.append(None)
            continue
        if records is not None:
            records.append(value)
        checker.check(i, value, line)
    batch, good, errors = checker.finish()
    return DecodedShard(batch, good, errors, records, len(lines))


# ---------------------------------------------------------------------------------------------
# The codec


class _FieldError(Exception):
    """One broken rule: the field and what was expected (internal to this module)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def _parse_line(line: bytes, oversize: int | None, *, limit: int, limit_mb: float | None) -> Any:
    """One line's JSON value.

    Raises:
        _FieldError: for an oversize line (its length given, or over ``limit`` bytes),
            a blank line or invalid JSON.
    """
    if oversize is not None or len(line) > limit:
        size = len(line) if oversize is None else oversize
        limit_text = "the line limit" if limit_mb is None else f"MaxPayloadInMB is {limit_mb:g}"
        raise _FieldError("$", f"line is {size} bytes; {limit_text}")
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError as err:
        if not line.strip():
            raise _FieldError("$", "expected a JSON object, found a blank line") from None
        raise _FieldError("$", f"expected a JSON object, found invalid JSON ({err})") from None


def parse_lines(
    lines: Sequence[bytes],
    *,
    uri: str,
    first_line: int = 1,
    oversize: Mapping[int, int] | None = None,
    max_payload_mb: float | None = 6,
) -> tuple[list[Any], list[RecordError]]:
    """Parse each line as JSON (the codec alone; :func:`decode_records` fuses it with
    validation).

    Args:
        lines: the lines, without newlines.
        uri: the input object, for error messages.
        first_line: the line number of ``lines[0]``.
        oversize: local index -> byte length of lines too long to have been read.
        max_payload_mb: a longer line is an error (None: no limit).

    Returns:
        The parsed values (``UNDECODABLE`` for a line that is oversize, blank or not JSON)
        and one error per such line.
    """
    limit = sys.maxsize if max_payload_mb is None else int(max_payload_mb * MIB)
    values: list[Any] = []
    errors: list[RecordError] = []
    for i, line in enumerate(lines):
        try:
            size = oversize.get(i) if oversize else None
            values.append(_parse_line(line, size, limit=limit, limit_mb=max_payload_mb))
        except _FieldError as bad:
            errors.append(RecordError(uri, first_line + i, bad.field, bad.message))
            values.append(UNDECODABLE)
    return values, errors


# ---------------------------------------------------------------------------------------------
# Validation


def validate_records(
    values: Sequence[Any],
    lines: Sequence[bytes],
    *,
    uri: str,
    contract: RecordContract,
    first_line: int = 1,
    input_filter: Callable[[Any], Any] | None = None,
) -> tuple[SeriesBatch, np.ndarray, list[RecordError]]:
    """Check parsed records against the contract and build the columns of the good ones.

    Args:
        values: parsed lines (``UNDECODABLE`` ones are skipped: they have their error).
        lines: the raw lines, parallel to ``values`` (a cheap byte scan for ``true``/``false``
            lets the common all-numbers record skip a per-element type check).
        uri: the input object, for error messages.
        contract: what each record must hold.
        first_line: the line number of ``values[0]``.
        input_filter: maps a parsed line to the model's input.

    Returns:
        The batch of good records, their local line indices, and one error per bad record
        (sorted by line).
    """
    checker = _Checker(uri=uri, contract=contract, first_line=first_line, input_filter=input_filter)
    for i, value in enumerate(values):
        if value is not UNDECODABLE:
            checker.check(i, value, lines[i])
    return checker.finish()


class _Checker:
    """Validates records one by one into :class:`_Columns`, collecting the errors."""

    def __init__(
        self,
        *,
        uri: str,
        contract: RecordContract,
        first_line: int,
        input_filter: Callable[[Any], Any] | None,
    ) -> None:
        self.uri = uri
        self.first_line = first_line
        self.input_filter = input_filter
        self.columns = _Columns(contract)
        self.errors: list[RecordError] = []

    def reject(self, i: int, bad: _FieldError) -> None:
        self.errors.append(RecordError(self.uri, self.first_line + i, bad.field, bad.message))

    def check(self, i: int, value: Any, line: bytes) -> None:
        if self.input_filter is not None:
            try:
                value = self.input_filter(value)
            except LookupError as err:
                self.reject(
                    i, _FieldError("$", f"InputFilter selects nothing in this record: {err}")
                )
                return
        try:
            self.columns.add(i, value, line)
        except _FieldError as bad:
            self.reject(i, bad)

    def finish(self) -> tuple[SeriesBatch, np.ndarray, list[RecordError]]:
        batch, good, bad_starts = self.columns.build()
        for i, message in bad_starts:
            self.reject(i, _FieldError("start", message))
        self.errors.sort(key=lambda e: e.line)
        return batch, good, self.errors


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

    def add(self, i: int, record: Any, line: bytes) -> None:
        if type(record) is not dict:
            raise _FieldError("$", f"expected a JSON object, found {_describe(record)}")
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
        self.index.append(i)
        self.starts.append(start)
        self.targets.append(target)
        if cat is not None:
            self.cats.append(cat)
        if dyn is not None:
            self.dynamic.append(dyn)

    def build(self) -> tuple[SeriesBatch, np.ndarray, list[tuple[int, str]]]:
        """The batch of good records, their line indices, and (line index, message) for
        well-formed ``start`` values that are impossible dates."""
        seconds, bad = _parse_starts(self.starts)
        index, targets, cats, dynamic = self.index, self.targets, self.cats, self.dynamic
        if bad:  # rare: drop the records whose start numpy rejected
            keep = sorted(set(range(len(index))) - {k for k, _ in bad})
            seconds = seconds[keep]
            index, targets = [index[k] for k in keep], [targets[k] for k in keep]
            cats = [cats[k] for k in keep] if cats else cats
            dynamic = [dynamic[k] for k in keep] if dynamic else dynamic
        batch = SeriesBatch.from_lists(
            start=seconds,
            targets=targets,
            cat=cats,
            dynamic=dynamic,
            num_dynamic_feat=self.contract.num_dynamic_feat,
            num_cat=self.n_cat,
        )
        good = np.asarray(index, dtype=np.int64)
        return batch, good, [(self.index[k], message) for k, message in bad]


def _describe(value: Any) -> str:
    """A short description of a found value for an error message."""
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


# --- start


def _start(record: dict[str, Any]) -> str:
    if "start" not in record:
        raise _FieldError("start", f"required field is missing; expected {_START_FORMAT}")
    start = record["start"]
    if type(start) is not str:
        raise _FieldError("start", f"expected {_START_FORMAT}, found {_describe(start)}")
    if _START_RE.fullmatch(start) is None:
        raise _FieldError("start", _start_format_problem(start))
    return start


def _start_format_problem(start: str) -> str:
    found = f"found {start!r}"
    if _TZ_RE.search(start) and len(start) > 10:
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
        raise _FieldError("target", "required field is missing; expected an array of numbers")
    values = record["target"]
    if type(values) is not list:
        raise _FieldError(
            "target",
            f'expected an array of numbers (null or "NaN" if missing), found {_describe(values)}',
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
        return _finite_float32(inferred, "target")
    return _target_slow(values)


def _target_slow(values: list[Any]) -> np.ndarray:
    """Targets with missing values (null, "NaN"), or the first wrong entry as an error."""
    for j, v in enumerate(values):
        kind = type(v)
        if kind is float or kind is int or v is None or (kind is str and v in ("NaN", "nan")):
            continue
        raise _FieldError(
            "target",
            f'target[{j}]: expected a number, null or "NaN", found {_describe(v)}',
        )
    # numpy reads None and "NaN"/"nan" as NaN when converting to a float dtype.
    return _finite_float32(np.array(values, dtype=np.float64), "target")


def _finite_float32(values: np.ndarray, field: str) -> np.ndarray:
    """``values`` as float32; a value beyond float32's range is an error, not an inf."""
    with np.errstate(over="ignore"):  # overflow is reported below, not warned about
        out = values.astype(np.float32)
    overflow = np.isinf(out)
    if overflow.any():
        where = np.unravel_index(int(np.flatnonzero(overflow)[0]), out.shape)
        at = "".join(f"[{k}]" for k in where)
        raise _FieldError(
            field,
            f"{field}{at}: expected a number within float32's range (|x| < 3.4e38), "
            f"found {values[where].item()!r}",
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
        raise _FieldError(
            "cat", f"required field is missing (the model uses categories); expected {expected}"
        )
    cat = record["cat"]
    if type(cat) is not list:
        raise _FieldError("cat", f"expected {expected}, found {_describe(cat)}")
    if len(cat) != n:
        raise _FieldError("cat", f"expected {expected}, found {len(cat)} value(s)")
    for j, (v, k) in enumerate(zip(cat, cardinality, strict=True)):
        if type(v) is not int:
            raise _FieldError("cat", f"cat[{j}]: expected an integer, found {_describe(v)}")
        if not 0 <= v < k:
            bound = "an integer >= 0" if k == _UNBOUNDED else f"an integer in [0, {k})"
            raise _FieldError("cat", f"cat[{j}]: expected {bound} (cardinality {k}), found {v}")
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
        raise _FieldError(
            "dynamic_feat",
            f"required field is missing (the model uses dynamic features); expected {expected}",
        )
    feats = record["dynamic_feat"]
    if type(feats) is not list:
        raise _FieldError("dynamic_feat", f"expected {expected}, found {_describe(feats)}")
    if len(feats) != n:
        raise _FieldError("dynamic_feat", f"expected {expected}, found {len(feats)} array(s)")
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
        return _finite_float32(inferred, "dynamic_feat").T
    _dynamic_problem(feats, length=length, why=why)
    # No problem found: every entry is an int or a float and the fast path only missed
    # because the line has a true/false token somewhere else.
    return _finite_float32(np.array(feats, dtype=np.float64), "dynamic_feat").T


def _dynamic_problem(feats: list[Any], *, length: int, why: str) -> None:
    """Raise the first problem in ``feats``; return when there is none."""
    for i, feat in enumerate(feats):
        field = f"dynamic_feat[{i}]"
        if type(feat) is not list:
            raise _FieldError(
                "dynamic_feat",
                f"{field}: expected an array of {length} numbers, found {_describe(feat)}",
            )
        if len(feat) != length:
            raise _FieldError(
                "dynamic_feat", f"{field}: expected {length} values ({why}), found {len(feat)}"
            )
        for j, v in enumerate(feat):
            kind = type(v)
            if kind is float or kind is int:
                continue
            missing = v is None or (kind is str and v in ("NaN", "nan"))
            found = (
                f"{_describe(v)}: dynamic_feat may not have missing values"
                if missing
                else _describe(v)
            )
            raise _FieldError("dynamic_feat", f"{field}[{j}]: expected a number, found {found}")


# ---------------------------------------------------------------------------------------------
# Training data


@dataclass
class TrainingData:
    """A training channel, decoded.

    Attributes:
        batch: every series, in file then line order.
        cardinality: the resolved cardinality (empty: no categorical features).
        num_dynamic_feat: the resolved number of dynamic features.
    """

    batch: SeriesBatch
    cardinality: tuple[int, ...]
    num_dynamic_feat: int


def load_training_data(
    uris: Sequence[str],
    *,
    prediction_length: int,
    cardinality: str | tuple[int, ...],
    num_dynamic_feat: str | int,
) -> TrainingData:
    """Read SageMaker's training channel (the same JSON Lines; ``dynamic_feat`` as long as
    ``target``).

    Args:
        uris: inputs as :func:`list_inputs` takes them (files, folders, globs, S3 prefixes).
        prediction_length: the model's horizon.
        cardinality: ``"auto"`` (use ``cat`` if every record has it; each feature's
            cardinality is its largest value + 1), ``"ignore"`` (drop it), or explicit.
        num_dynamic_feat: ``"auto"`` (use ``dynamic_feat`` if every record has it),
            ``"ignore"``, or explicit.

    Returns:
        The series and the resolved cardinality and dynamic-feature count.

    Raises:
        ConfigError: for bad records (listing up to 20), a field that ``auto`` finds in some
            records but not others, no records at all, or an invalid setting.
        ShardError: when an input cannot be read.
    """
    if isinstance(uris, str) or not uris:
        raise ConfigError(f"the training channel must be a non-empty list of inputs, got {uris!r}")
    files = _read_training_lines(uris)
    parsed = [
        (uri, lines, *parse_lines(lines, uri=uri, max_payload_mb=None)) for uri, lines in files
    ]
    contract = RecordContract(
        prediction_length=prediction_length,
        cardinality=_resolve_cardinality(cardinality, parsed),
        num_dynamic_feat=_resolve_num_dynamic_feat(num_dynamic_feat, parsed),
    )
    batches, errors = [], []
    for uri, lines, values, parse_errors in parsed:
        batch, _, bad = validate_records(values, lines, uri=uri, contract=contract)
        batches.append(batch)
        errors.extend(sorted([*parse_errors, *bad], key=lambda e: e.line))
    if errors:
        shown = "\n".join(f"  {e}" for e in errors[:20])
        more = f"\n  ... and {len(errors) - 20} more" if len(errors) > 20 else ""
        raise ConfigError(f"the training data has {len(errors)} bad record(s):\n{shown}{more}")
    batch = _concat(batches, contract)
    if batch.num_series == 0:
        raise ConfigError(f"the training data {list(uris)} holds no records")
    resolved = contract.cardinality
    if cardinality == "auto" and resolved:
        resolved = tuple(int(c) for c in batch.cat.max(axis=0) + 1)
    return TrainingData(batch, resolved, contract.num_dynamic_feat)


_Parsed = tuple[str, list[bytes], list[Any], list[RecordError]]


def _read_training_lines(uris: Sequence[str]) -> list[tuple[str, list[bytes]]]:
    files = []
    for spec in uris:
        for obj in list_inputs(spec):
            # The whole object as one shard; no line is too long to train on.
            shard = Shard(
                file_index=0,
                uri=obj.uri,
                start=0,
                end=obj.size,
                index=0,
                count=1,
                compressed=obj.compressed,
            )
            files.append((obj.uri, read_shard_lines(shard, max_line_bytes=1 << 62).lines))
    return files


def _presence(field: str, parsed: Sequence[_Parsed]) -> tuple[bool, Any]:
    """Whether every object record has ``field``; the first value found (for its length).

    Raises:
        ConfigError: when some records have it and others do not.
    """
    have: tuple[str, int] | None = None
    lack: tuple[str, int] | None = None
    first: Any = None
    for uri, _, values, _ in parsed:
        for i, value in enumerate(values):
            if type(value) is not dict:
                continue  # reported as a record error by validation
            if field in value:
                if have is None:
                    have, first = (uri, i + 1), value[field]
            elif lack is None:
                lack = (uri, i + 1)
    if have and lack:
        raise ConfigError(
            f"{field!r} must be in every record or in none ('auto' uses it only then): "
            f"{have[0]}:{have[1]} has it, {lack[0]}:{lack[1]} does not"
        )
    return have is not None, first


def _resolve_cardinality(
    setting: str | Sequence[int], parsed: Sequence[_Parsed]
) -> tuple[int, ...]:
    if setting == "ignore":
        return ()
    if setting != "auto":
        if isinstance(setting, str):
            raise ConfigError(
                f"cardinality must be 'auto', 'ignore' or a list of integers, got {setting!r}"
            )
        return tuple(int(c) for c in setting)
    present, first = _presence("cat", parsed)
    if not present:
        return ()
    n = len(first) if isinstance(first, list) else 0
    if n == 0:
        raise ConfigError(f"cardinality 'auto': 'cat' must be a non-empty array, found {first!r}")
    # Only the bound is unknown until the data is read; validation still checks the count.
    return (_UNBOUNDED,) * n


def _resolve_num_dynamic_feat(setting: str | int, parsed: Sequence[_Parsed]) -> int:
    if setting == "ignore":
        return 0
    if setting != "auto":
        try:
            return int(setting)
        except (TypeError, ValueError):
            raise ConfigError(
                f"num_dynamic_feat must be 'auto', 'ignore' or an integer, got {setting!r}"
            ) from None
    present, first = _presence("dynamic_feat", parsed)
    return len(first) if present and isinstance(first, list) else 0


def _concat(batches: Sequence[SeriesBatch], contract: RecordContract) -> SeriesBatch:
    if len(batches) == 1:
        return batches[0]
    return SeriesBatch.from_lists(
        start=np.concatenate([b.start for b in batches]),
        targets=[b.series(k) for b in batches for k in range(b.num_series)],
        cat=np.concatenate([b.cat for b in batches]),
        dynamic=[b.dynamic(k) for b in batches for k in range(b.num_series)],
        num_dynamic_feat=contract.num_dynamic_feat,
        num_cat=len(contract.cardinality),
    )
