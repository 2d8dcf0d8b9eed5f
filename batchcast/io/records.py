"""Input records: JSON Lines -> validated columnar :class:`SeriesBatch` (SPEC.md §1).

The codec (:func:`parse_line`: one line's bytes -> its JSON value) and the one decode loop
(:func:`decode_records`) that runs it and :class:`~batchcast.io.validation.Validator` line by
line, so a shard's parsed Python objects never pile up (they take ~8x the bytes of the line):
only the good records' numpy arrays outlive the loop. Transform, predict, serving and
training all decode through it.

A record that breaks a rule becomes one :class:`RecordError`, never an exception out of
here. Line numbers are 1-based and relative to ``first_line``: a worker reading a byte range
numbers its shard from 1 and the driver adds the earlier shards' line counts
(:func:`renumber`).

Decisions where SPEC.md is silent:

- Duplicate keys in a record: the last one wins (orjson's behaviour, and that of Python's
  ``json`` and JavaScript's ``JSON.parse``; RFC 8259 leaves it open).
- A number beyond float64 (``1e400``) makes orjson reject the line; the error then names
  where the number is, ``target[i]`` or ``dynamic_feat[i][j]`` (their fields) or a path such
  as ``price.list[1]`` (field ``$``), and quotes it.
- ``MaxPayloadInMB`` is in MiB (2**20 bytes).

A byte order mark at a file's start and a file's empty last line never reach this module
(:mod:`batchcast.io.shards` drops them).
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from batchcast.errors import RecordError
from batchcast.forecast.series import SeriesBatch
from batchcast.io.validation import MAX_ABS_TARGET, FieldError, RecordContract, Validator

__all__ = ["MIB", "DecodedShard", "decode_records", "parse_line", "renumber"]

MIB = 1 << 20

# orjson's message for a number that does not fit a double.
_INFINITE_NUMBER = "number is infinity when parsed as double"


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
    max_payload_mb: float | None = 6,
    input_filter: Callable[[Any], Any] | None = None,
    keep_records: bool = False,
) -> DecodedShard:
    """Decode and validate JSON Lines into a columnar batch and record errors.

    Args:
        lines: the lines, without newlines (as :func:`read_shard_lines` gives them).
        uri: the input object, for error messages.
        contract: what each record must hold.
        first_line: the line number of ``lines[0]``.
        oversize: local index -> byte length of lines too long to have been read.
        max_payload_mb: ``MaxPayloadInMB``: a longer line is a record error (None: no limit,
            as in training).
        input_filter: maps a parsed line to the model's input (``Join.model_input``);
            a LookupError from it is a record error.
        keep_records: also return every parsed line in ``records``.

    Returns:
        The good records as a batch, their line indices, and the errors.
    """
    limit = sys.maxsize if max_payload_mb is None else int(max_payload_mb * MIB)
    validator = Validator(
        uri=uri, contract=contract, first_line=first_line, input_filter=input_filter
    )
    records: list[Any] | None = [] if keep_records else None
    for i, line in enumerate(lines):
        value = None
        try:
            size = oversize.get(i) if oversize else None
            value = parse_line(line, size=size, limit=limit, limit_mb=max_payload_mb)
        except FieldError as bad:
            validator.reject(i, bad)
        else:
            validator.check(i, value, line)
        if records is not None:
            records.append(value)
    batch, good, errors = validator.finish()
    return DecodedShard(batch, good, errors, records, len(lines))


def parse_line(
    line: bytes, *, size: int | None = None, limit: int = sys.maxsize, limit_mb: float | None = None
) -> Any:
    """One line's JSON value (the codec).

    Args:
        line: the line's bytes, without its newline.
        size: the true length of a line too long to have been read (its ``line`` is empty).
        limit: the longest line allowed, in bytes.
        limit_mb: ``limit`` as the user set it, for the message (None: no user limit).

    Returns:
        The parsed value.

    Raises:
        FieldError: for an oversize line, a blank line, invalid JSON, or a number beyond
            float64 (naming where it is).
    """
    if size is not None or len(line) > limit:
        length = len(line) if size is None else size
        limit_text = "the line limit" if limit_mb is None else f"MaxPayloadInMB is {limit_mb:g}"
        raise FieldError("$", f"line is {length} bytes; {limit_text}")
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError as err:
        if not line.strip():
            raise FieldError("$", "expected a JSON object, found a blank line") from None
        if str(err).startswith(_INFINITE_NUMBER):
            raise _infinite_number(line, err) from None
        raise FieldError("$", f"expected a JSON object, found invalid JSON ({err})") from None


def _infinite_number(line: bytes, err: orjson.JSONDecodeError) -> FieldError:
    """The error for a line orjson rejects for a number beyond float64: where the number is.

    Python's ``json`` reads such a number as inf, so it finds the path; its other leniencies
    (``NaN``, ``Infinity``) are refused, and a line it cannot read either stays invalid JSON.
    """
    literals: list[str] = []

    def number(text: str) -> float:
        value = float(text)
        if math.isinf(value):
            literals.append(text)
        return value

    def refuse(constant: str) -> Any:
        raise ValueError(f"{constant} is not JSON")

    try:
        value = json.loads(
            line.decode("utf-8"), parse_float=number, parse_int=number, parse_constant=refuse
        )
    except ValueError:  # includes UnicodeDecodeError and json.JSONDecodeError
        return FieldError("$", f"expected a JSON object, found invalid JSON ({err})")
    path = next(_infinite_paths(value), ())
    found = literals[0] if literals else "inf"
    if len(found) > 40:  # a line may hold megabytes of digits: the error must not echo them
        found = f"{found[:20]}... ({len(found)} characters)"
    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")
    if path[:1] == ("target",) and len(path) == 2:
        return FieldError(
            "target",
            f"{where}: expected |x| <= {MAX_ABS_TARGET:g}, found {found}, beyond float64's range",
        )
    if path[:1] == ("dynamic_feat",) and len(path) == 3:
        return FieldError(
            "dynamic_feat", f"{where}: expected a number within float32's range, found {found}"
        )
    field = "cat" if path[:1] == ("cat",) else "$"  # a field of the record contract, or "$"
    return FieldError(field, f"{where or 'the line'}: the number {found} is beyond float64's range")


def _infinite_paths(
    value: Any, path: tuple[str | int, ...] = ()
) -> Iterator[tuple[str | int, ...]]:
    """The paths of the infinite numbers in a parsed value, in document order."""
    if isinstance(value, float) and math.isinf(value):
        yield path
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _infinite_paths(item, (*path, key))
    elif isinstance(value, list):
        for j, item in enumerate(value):
            yield from _infinite_paths(item, (*path, j))
