"""Reading what a transform read and wrote: series lines, forecast lines, and which files pair.

Everything streams: :func:`iter_lines` holds one read chunk and one line at a time, and the
record iterators decode a bounded block of lines at a time, so evaluating or plotting a
file of any size takes memory for a block, not for the file. Objects are read through
``batchcast.io`` (local paths, folders, globs, ``s3://``; ``.gz`` transparently).

Series lines (actuals, transform inputs) are decoded by ``io``'s record decoder, so a
target is read exactly as the transform reads it (``null``/``"NaN"`` missing, float32) and
a bad line has the same message. Forecast lines are the transform's output records:
``{"quantiles": {...}, "mean": [...], ...}``, possibly with forwarded fields
(``item_id``), joined to the input (``SageMakerOutput``), or an in-place error line
(``on_error="record"``: ``{"error": {...}}``).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import orjson

from batchcast.errors import ConfigError, ShardError
from batchcast.io import RecordContract, decode_records, list_inputs, open_range
from batchcast.io.sources import READ_ERRORS, InputObject

__all__ = [
    "OUTPUT_SUFFIX",
    "FilePair",
    "ForecastLine",
    "SeriesLine",
    "count_lines",
    "different_items",
    "item_key",
    "iter_forecasts",
    "iter_lines",
    "iter_series",
    "pair_files",
    "peek_usable",
]

# How far an alignment rule looks past unreadable first lines for a readable record: a bounded
# number, so that a file of bad lines is not held in memory to decide.
_PEEK_LINES = 1000

OUTPUT_SUFFIX = ".out"  # a transform writes <output>/<input relpath>.out (SPEC.md §4)
_CHUNK_BYTES = 1 << 20
_BLOCK_LINES = 1024  # lines decoded together: vectorised decoding, bounded memory
# A series line may be long (years of minutes); the payload limit is the transform's
# business, not evaluation's, so take SageMaker's largest.
_MAX_PAYLOAD_MB = 100.0


@dataclass(frozen=True)
class SeriesLine:
    """One line of a series file (actuals or a transform's input).

    Attributes:
        line: 1-based line number.
        item_id: the record's ``item_id`` as a string (None when it has none).
        start: the record's ``start`` string.
        target: (T,) float32 target, NaN where missing; None for a bad line.
        error: why the line is bad (None for a good one).
    """

    line: int
    item_id: str | None
    start: str | None
    target: np.ndarray | None
    error: str | None = None


@dataclass(frozen=True)
class ForecastLine:
    """One line of a transform's output.

    Attributes:
        line: 1-based line number (the input line it answers).
        item_id: a forwarded or joined ``item_id`` as a string, or None.
        quantiles: quantile key -> (P,) float64, in the line's key order; None for an error
            line or a line without quantiles.
        mean: (P,) float64 or None.
        error: why the line cannot be used (an in-place record error, bad JSON, ...).
    """

    line: int
    item_id: str | None
    quantiles: dict[str, np.ndarray] | None
    mean: np.ndarray | None
    error: str | None = None


@dataclass(frozen=True)
class FilePair:
    """The files that belong together: a transform's output and the series it answers.

    Attributes:
        key: the input's relative path (``<key>.out`` is the output's).
        forecasts: the output object's URI, or None when there is none (a failed file).
        series: the URI of the other side (actuals or input), or None when there is none.
    """

    key: str
    forecasts: str | None
    series: str | None


def iter_lines(uri: str) -> Iterator[bytes]:
    """The lines of an object, without ``\\n`` (and a trailing ``\\r``), streamed.

    Lines are split on ``b"\\n"`` only, as the transform splits them (never
    ``str.splitlines``); a last line without a newline is a line.

    Raises:
        ShardError: when the object cannot be opened or read.
    """
    rest = b""
    try:
        with open_range(uri) as stream:
            while chunk := stream.read(_CHUNK_BYTES):
                parts = (rest + chunk).split(b"\n")
                rest = parts.pop()
                for part in parts:
                    yield part[:-1] if part.endswith(b"\r") else part
    except READ_ERRORS as err:
        raise ShardError(f"cannot read {uri!r}: {err}") from err
    if rest:
        yield rest[:-1] if rest.endswith(b"\r") else rest


def item_key(record: Any) -> str | None:
    """A record's ``item_id`` as a string (JSON scalars only), or None."""
    if not isinstance(record, dict):
        return None
    value = record.get("item_id")
    if value is None or isinstance(value, (dict, list)):
        return None
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def _blocks(uri: str) -> Iterator[list[bytes]]:
    block: list[bytes] = []
    for line in iter_lines(uri):
        block.append(line)
        if len(block) == _BLOCK_LINES:
            yield block
            block = []
    if block:
        yield block


def iter_series(uri: str) -> Iterator[SeriesLine]:
    """The series of a JSON Lines file, one per line, in order, decoded as the transform does.

    Only ``start`` and ``target`` are checked (``cat`` and ``dynamic_feat`` do not matter
    here); a line that breaks those rules comes back with its ``error``.

    Raises:
        ShardError: when the object cannot be read.
    """
    contract = RecordContract(prediction_length=1)  # no cat, no dynamic_feat: not checked
    first = 1
    for block in _blocks(uri):
        decoded = decode_records(
            block,
            uri=uri,
            contract=contract,
            first_line=first,
            max_payload_mb=_MAX_PAYLOAD_MB,
            keep_records=True,
        )
        records = decoded.records or []
        errors = {e.line: e for e in decoded.errors}
        good = {int(i): k for k, i in enumerate(decoded.good)}
        batch = decoded.batch
        for i, record in enumerate(records):
            line = first + i
            if i in good:
                k = good[i]
                start = record.get("start") if isinstance(record, dict) else None
                yield SeriesLine(line, item_key(record), start, batch.series(k))
            else:
                error = errors.get(line)
                message = f"field {error.field!r}: {error.message}" if error else "bad record"
                yield SeriesLine(line, item_key(record), None, None, message)
        first += len(block)


def _array(value: Any, name: str) -> np.ndarray:
    if not isinstance(value, list):
        raise ValueError(f"{name} is not an array")
    try:
        # numpy reads null (a NaN the encoder wrote as JSON null) as NaN in a float array
        out = np.array(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} is not an array of numbers") from None
    if out.ndim != 1:
        raise ValueError(f"{name} is not a flat array of numbers")
    return out


def _forecast(line: int, raw: bytes) -> ForecastLine:
    try:
        record = orjson.loads(raw)
    except orjson.JSONDecodeError as err:
        return ForecastLine(line, None, None, None, f"not JSON ({err})")
    if not isinstance(record, dict):
        return ForecastLine(line, None, None, None, "not a JSON object")
    item = item_key(record)
    if "error" in record:  # on_error="record": the input line's error, in its place
        error = record["error"]
        if isinstance(error, dict):
            message = f"field {error.get('field')!r}: {error.get('message')}"
        else:
            message = str(error)
        return ForecastLine(line, item, None, None, f"the transform reported: {message}")
    body = record.get("SageMakerOutput", record)  # JoinSource=Input nests the forecast
    if not isinstance(body, dict):
        return ForecastLine(line, item, None, None, "SageMakerOutput is not an object")
    try:
        quantiles = body.get("quantiles")
        if quantiles is not None and not isinstance(quantiles, dict):
            raise ValueError("quantiles is not an object")
        arrays = (
            {str(k): _array(v, f"quantiles[{k!r}]") for k, v in quantiles.items()}
            if quantiles is not None
            else None
        )
        mean = _array(body["mean"], "mean") if "mean" in body else None
    except ValueError as err:
        return ForecastLine(line, item, None, None, str(err))
    if not arrays:
        return ForecastLine(
            line, item, None, mean, "no quantiles (the job's output_types must include them)"
        )
    return ForecastLine(line, item, arrays, mean)


def iter_forecasts(uri: str) -> Iterator[ForecastLine]:
    """The forecast records of a transform's output file, one per line, in order.

    Raises:
        ShardError: when the object cannot be read.
    """
    for i, raw in enumerate(iter_lines(uri)):
        yield _forecast(i + 1, raw)


def _list(uri: str, what: str) -> list[InputObject]:
    try:
        return list_inputs(uri)
    except ConfigError as err:
        raise ConfigError(f"{what}: {err}") from err


def pair_files(forecasts: str, series: str, *, what: str = "actuals") -> list[FilePair]:
    """Match a transform's output files with the series files they answer.

    A single output file and a single series file pair whatever their names. Otherwise an
    output ``<key>.out`` pairs with the series file whose relative path is ``<key>``, as a
    transform names its outputs after its inputs; either side may lack a partner (a file
    that failed gets no ``.out``).

    Args:
        forecasts: an output file, folder, glob or ``s3://`` prefix.
        series: the actuals (or input) file, folder, glob or prefix.
        what: the series side's name, for messages.

    Returns:
        The pairs, sorted by key.

    Raises:
        ConfigError: when either side names no object, or the forecasts hold no ``.out``
            object where several objects are listed.
    """
    outputs = _list(forecasts, "forecasts")
    others = _list(series, what)
    if len(outputs) > 1:
        outputs = [o for o in outputs if o.relpath.endswith(OUTPUT_SUFFIX)]
        if not outputs:
            raise ConfigError(f"forecasts {forecasts!r} holds no {OUTPUT_SUFFIX} file")
    if len(outputs) == 1 and len(others) == 1:
        return [FilePair(others[0].relpath, outputs[0].uri, others[0].uri)]
    by_key = {_key(o.relpath): o.uri for o in outputs}
    by_series = {o.relpath: o.uri for o in others}
    keys = sorted(set(by_key) | set(by_series))
    return [FilePair(k, by_key.get(k), by_series.get(k)) for k in keys]


def _key(relpath: str) -> str:
    return relpath[: -len(OUTPUT_SUFFIX)] if relpath.endswith(OUTPUT_SUFFIX) else relpath


def count_lines(uri: str) -> int:
    """How many lines an object holds (streamed; for spreading plotted items over a file)."""
    return sum(1 for _ in iter_lines(uri))


_T = TypeVar("_T")


def peek_usable(
    records: Iterator[_T], usable: Callable[[_T], bool]
) -> tuple[_T | None, Iterator[_T]]:
    """The first ``usable`` record among the first :data:`_PEEK_LINES` (else the very first;
    None when there is none), and an iterator over every record from the start.

    Why: whether two files pair by ``item_id`` is decided on their first records, and an
    error line (a bad input line under ``--on-error record``) carries no ``item_id``; it must
    not switch a whole file to pairing by line order.
    """
    seen = list(itertools.islice(records, _PEEK_LINES))
    first = next((x for x in seen if usable(x)), seen[0] if seen else None)
    return first, itertools.chain(seen, records)


def different_items(a: str | None, b: str | None) -> bool:
    """Whether two records paired by line order are for different series: both carry an
    ``item_id`` and they differ. Such a pair is never scored or drawn together."""
    return a is not None and b is not None and a != b
