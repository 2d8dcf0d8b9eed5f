"""A shard's output lines, encoded once; error lines numbered as they are written.

This is the one output path of a transform (SPEC.md §3, §4). A worker encodes every output
line of its shard exactly once (:func:`encode_output`): a forecast object per good record
(bare, or built by the job's :class:`~batchcast.io.join.Join`), an error object per bad
line. The file-level number of a bad line is not known there (the line counts of the
earlier shards are not known until they are read), so an error line is encoded without its
number and :meth:`EncodedLines.render` splices the number in when the ordered writer knows
the shard's first line: renumbering without re-encoding. ``AssembleWith`` is applied once,
by :func:`write_lines`, at the sink.

The lines of a shard travel as one buffer and an offset array (:class:`EncodedLines`), not as
a list of many small ``bytes``: compact in Ray's object store and in the driver's reorder
buffer whatever the number of lines.

An error line is ``{<forwarded fields>, "error": {"line": N, "field": ..., "message": ...}}``:
the ``forward_fields`` of the job come first, as in a forecast line, taken from the record
(``null`` where the line did not decode or lacks the field), so that every output line can be
matched to its input by them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import orjson

from batchcast.errors import ConfigError, RecordError
from batchcast.forecast.config import InferenceConfig
from batchcast.io.content import CSV, JSON_LINES, CsvEncoder, parse_accept
from batchcast.io.join import Join
from batchcast.io.jsonl import ASSEMBLE_WITH, encode_forecasts, forecast_dicts

__all__ = [
    "EncodedLines",
    "LineBuilder",
    "csv_error_parts",
    "encode_output",
    "error_line_parts",
    "error_record_parts",
    "non_finite_errors",
    "write_lines",
]

_NUMPY = orjson.OPT_SERIALIZE_NUMPY
_INT64 = np.int64
# Lines rendered and written per sink write: bounds the writer's transient memory for a
# shard of millions of short lines, and keeps the number of sink writes low.
WRITE_CHUNK_LINES = 65_536


@dataclass(frozen=True)
class EncodedLines:
    """The encoded lines of one shard, without separators.

    Attributes:
        data: every line's bytes, concatenated; a numbered line lacks its number.
        ends: (num_lines,) int64, the end offset of each line in ``data``.
        numbered: (k,) int64 ascending, the 0-based local index of each line that takes a
            number (an error line).
        number_at: (k,) int64, the offset in ``data`` where that number goes.
    """

    data: bytes
    ends: np.ndarray
    numbered: np.ndarray
    number_at: np.ndarray

    @staticmethod
    def empty() -> EncodedLines:
        """No lines."""
        none = np.zeros(0, dtype=_INT64)
        return EncodedLines(b"", none, none, none)

    @property
    def num_lines(self) -> int:
        return int(self.ends.shape[0])

    @property
    def nbytes(self) -> int:
        """Bytes held (the buffer and the offsets): what this costs in memory."""
        return len(self.data) + 8 * (self.ends.size + self.numbered.size + self.number_at.size)

    def render(self, first_line: int, start: int = 0, stop: int | None = None) -> list[bytes]:
        """Lines ``start..stop`` (local, 0-based), numbered lines completed.

        Args:
            first_line: the file-level 1-based number of local line 0.
            start, stop: the slice of lines to render (default all).

        Returns:
            One ``bytes`` per line, without a separator.
        """
        stop = self.num_lines if stop is None else stop
        ends = self.ends
        data = self.data
        begin = int(ends[start - 1]) if start > 0 else 0
        starts = np.empty(stop - start, dtype=_INT64)
        if stop > start:
            starts[0] = begin
            starts[1:] = ends[start : stop - 1]
        out = [data[a:b] for a, b in zip(starts.tolist(), ends[start:stop].tolist(), strict=True)]
        lo, hi = np.searchsorted(self.numbered, [start, stop])
        for i, at in zip(
            self.numbered[lo:hi].tolist(), self.number_at[lo:hi].tolist(), strict=True
        ):
            j = i - start
            out[j] = b"%b%d%b" % (data[int(starts[j]) : at], first_line + i, data[at : ends[i]])
        return out


class LineBuilder:
    """Builds :class:`EncodedLines` line by line (or from a whole list at once)."""

    def __init__(self) -> None:
        self._pieces: list[bytes] = []
        self._ends: list[int] = []
        self._numbered: list[int] = []
        self._number_at: list[int] = []
        self._size = 0

    def add(self, line: bytes) -> None:
        """Append a complete line."""
        self._pieces.append(line)
        self._size += len(line)
        self._ends.append(self._size)

    def add_numbered(self, head: bytes, tail: bytes) -> None:
        """Append a line whose number goes between ``head`` and ``tail``."""
        self._numbered.append(len(self._ends))
        self._number_at.append(self._size + len(head))
        self._pieces.append(head)
        self._pieces.append(tail)
        self._size += len(head) + len(tail)
        self._ends.append(self._size)

    def build(self) -> EncodedLines:
        return EncodedLines(
            data=b"".join(self._pieces),
            ends=np.array(self._ends, dtype=_INT64),
            numbered=np.array(self._numbered, dtype=_INT64),
            number_at=np.array(self._number_at, dtype=_INT64),
        )


def write_lines(
    write: Callable[[bytes], object],
    lines: EncodedLines,
    *,
    first_line: int,
    assemble_with: str,
) -> None:
    """Write ``lines`` to a sink, numbered from ``first_line``, assembled as asked.

    Args:
        write: the sink's ``write``.
        lines: one shard's lines.
        first_line: the file-level number of the shard's first line.
        assemble_with: ``"Line"`` (each line ends with a newline) or ``"None"`` (records
            concatenated, SageMaker's AssembleWith=None).

    Raises:
        ConfigError: for another ``assemble_with``.
    """
    if assemble_with not in ASSEMBLE_WITH:
        raise ConfigError(
            f"AssembleWith must be one of {list(ASSEMBLE_WITH)}, got {assemble_with!r}"
        )
    for chunk in _chunks(lines, first_line):
        if assemble_with == "Line":
            write(b"\n".join(chunk) + b"\n")
        else:
            write(b"".join(chunk))


def _chunks(lines: EncodedLines, first_line: int) -> Iterator[list[bytes]]:
    for start in range(0, lines.num_lines, WRITE_CHUNK_LINES):
        stop = min(start + WRITE_CHUNK_LINES, lines.num_lines)
        yield lines.render(first_line, start, stop)


# ---------------------------------------------------------------------------------------------
# Error lines


def _forwarded(record: Any, names: Sequence[str]) -> bytes:
    """The forwarded fields as the start of a JSON object's members (``"a":1,``)."""
    if not names:
        return b""
    source = record if isinstance(record, dict) else {}
    members = orjson.dumps({name: source.get(name) for name in names}, option=_NUMPY)
    return members[1:-1] + b","


def error_line_parts(
    error: RecordError, *, record: Any = None, forward_fields: Sequence[str] = ()
) -> tuple[bytes, bytes]:
    """An error output line, split where its line number goes.

    ``head + b"%d" % line + tail`` is the line
    ``{<forwarded>, "error": {"line": N, "field": ..., "message": ...}}``.

    Args:
        error: the record error (its own line number is not used).
        record: the parsed input line (None where it did not decode).
        forward_fields: the job's forwarded fields.
    """
    head = b"{" + _forwarded(record, forward_fields) + b'"error":{"line":'
    tail = (
        b',"field":'
        + orjson.dumps(error.field)
        + b',"message":'
        + orjson.dumps(error.message)
        + b"}}"
    )
    return head, tail


# A line number no input reaches, spliced out of an encoded error row: CSV quotes the cell
# the number sits in, so the row is split where the encoder put this sentinel.
_SENTINEL_LINE = 987_654_321_987_654_321


def csv_error_parts(
    error: RecordError, *, record: Any = None, forward_fields: Sequence[str] = ()
) -> tuple[bytes, bytes]:
    """A ``text/csv`` error row, split where its line number goes (as :func:`error_line_parts`):
    the forwarded fields' cells, then ``{"error": {"line": N, "field", "message"}}`` as one
    quoted cell."""
    source = record if isinstance(record, dict) else {}
    forwarded = {name: source.get(name) for name in forward_fields}
    marked = RecordError(error.uri, _SENTINEL_LINE, error.field, error.message)
    row = _CSV.encode_error(marked, forwarded=forwarded)
    head, sentinel, tail = row.partition(b"%d" % _SENTINEL_LINE)
    assert sentinel, "the sentinel line number must appear in the encoded row"
    return head, tail


def error_record_parts(error: RecordError) -> tuple[bytes, bytes]:
    """A line of the errors file, ``{"uri", "line", "field", "message"}``, split at the number."""
    head = b'{"uri":' + orjson.dumps(error.uri) + b',"line":'
    tail = (
        b',"field":'
        + orjson.dumps(error.field)
        + b',"message":'
        + orjson.dumps(error.message)
        + b"}"
    )
    return head, tail


# ---------------------------------------------------------------------------------------------
# A shard's output


_OUTPUT_ARRAYS = ("mean", "quantiles", "samples")


def _arrays(result: Any) -> dict[str, np.ndarray | None]:
    """The arrays of a :class:`~batchcast.forecast.sampling.Forecast`, as keyword arguments."""
    return {f.name: getattr(result, f.name) for f in fields(result)}


def non_finite_errors(
    result: Any, good: np.ndarray, *, uri: str
) -> tuple[np.ndarray, list[RecordError]]:
    """Forecasts holding a non-finite value (inf or NaN): never written as a success.

    A float32 overflow in the scaled computation (a target of 1e38, say) gives inf or NaN;
    JSON has neither and orjson would write ``null``. Each such series becomes a record
    error on the ``target`` field (what the user can change), naming the output array.

    Args:
        result: the shard's forecast, rows in the order of ``good``.
        good: (n,) local 0-based line index of each forecast row.
        uri: the input object.

    Returns:
        (n,) bool, True for a finite row, and one error per other row (local numbers).
    """
    finite = np.ones(good.shape[0], dtype=bool)
    bad_array: dict[int, str] = {}
    for name in _OUTPUT_ARRAYS:
        array = getattr(result, name, None)
        if array is None or array.size == 0:
            continue
        row_ok = np.isfinite(array.reshape(array.shape[0], -1)).all(axis=1)
        for row in np.flatnonzero(finite & ~row_ok).tolist():
            bad_array[row] = name
        finite &= row_ok
    errors = [
        RecordError(
            uri,
            int(good[row]) + 1,
            "target",
            f"the forecast's {name} is not finite (inf or NaN): the target's values overflow "
            "float32 arithmetic; rescale the series",
        )
        for row, name in sorted(bad_array.items())
    ]
    return finite, errors


def encode_output(
    *,
    num_lines: int,
    good: np.ndarray,
    result: Any,
    errors: Sequence[RecordError],
    inference: InferenceConfig,
    join: Join,
    records: Sequence[Any] | None,
    uri: str,
    accept: str = JSON_LINES,
) -> tuple[EncodedLines, list[RecordError]]:
    """Encode a shard's output: one line per input line, error lines in place.

    Args:
        num_lines: input lines in the shard.
        good: (n,) int64 local 0-based line index of each forecast row.
        result: the forecast (a :class:`~batchcast.forecast.sampling.Forecast`) of the good
            records, rows in ``good``'s order.
        errors: the decoder's record errors (local line numbers).
        inference: which outputs and keys.
        join: the job's join; when it ``needs_records``, ``records`` must hold every parsed
            line (None where it did not decode).
        records: the parsed lines, for joins and forwarded fields.
        uri: the input object, for the errors found here.
        accept: the output's content type (``TransformOutput.Accept``): JSON Lines and JSON
            write the same lines; ``text/csv`` one CSV row per record (SPEC.md §8), error rows
            being the forwarded fields then the error object as one cell.

    Returns:
        The lines, and every record error of the shard sorted by line (local numbers): the
        decoder's, one per forecast that is not finite, one per record whose OutputFilter
        selects nothing.
    """
    csv = parse_accept(accept) == CSV
    finite, all_errors = non_finite_errors(result, good, uri=uri)
    all_errors.extend(errors)
    slots: list[bytes | None] = [None] * num_lines
    if join.needs_records or csv:
        rows, values = _joined(good, finite, result, inference, join, records, uri, all_errors)
        encoded = (
            _CSV.encode_all(values) if csv else [orjson.dumps(v, option=_NUMPY) for v in values]
        )
    else:  # the bare forecast lines: the fast path, and today's bytes
        rows = [i for row, i in enumerate(good.tolist()) if finite[row]]
        encoded = [
            x for row, x in enumerate(encode_forecasts(inference, **_arrays(result))) if finite[row]
        ]
    for i, line in zip(rows, encoded, strict=True):
        slots[i] = line
    all_errors.sort(key=lambda e: e.line)
    errors_at = {e.line - 1: e for e in all_errors}
    builder = LineBuilder()
    names = join.forward_fields
    parts = csv_error_parts if csv else error_line_parts
    for i, slot in enumerate(slots):
        if slot is not None:
            builder.add(slot)
            continue
        record = records[i] if records is not None and names else None
        builder.add_numbered(*parts(errors_at[i], record=record, forward_fields=names))
    return builder.build(), all_errors


_CSV = CsvEncoder()


def _joined(
    good: np.ndarray,
    finite: np.ndarray,
    result: Any,
    inference: InferenceConfig,
    join: Join,
    records: Sequence[Any] | None,
    uri: str,
    errors: list[RecordError],
) -> tuple[list[int], list[Any]]:
    """The output value of each finite forecast through the job's join (forwarded fields,
    JoinSource, OutputFilter): the local line index and value of each, in order. A record
    whose OutputFilter selects nothing is appended to ``errors`` instead."""
    dicts = forecast_dicts(inference, **_arrays(result))
    rows: list[int] = []
    values: list[Any] = []
    for row, (i, out) in enumerate(zip(good.tolist(), dicts, strict=True)):
        if not finite[row]:
            continue
        if not join.needs_records:
            rows.append(i)
            values.append(out)
            continue
        assert records is not None  # the caller decoded with keep_records for this join
        try:
            values.append(join.output(records[i], out))
        except LookupError as err:  # the OutputFilter: a record error, not a crash
            errors.append(RecordError(uri, i + 1, "$", f"OutputFilter: {err}"))
            continue
        rows.append(i)
    return rows, values
