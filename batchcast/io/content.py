"""Selectable response content (SPEC.md §8): response keys, content types, output encoders.

SageMaker's generated inference containers let a deployment choose what each response
holds with ``SAGEMAKER_INFERENCE_OUTPUT`` / ``SUPPORTED`` / ``INPUT``; batchcast honours
them on top of DeepAR's output, and encodes each output record as JSON Lines, JSON or CSV.
``transform``, ``predict`` and the HTTP server share this module.

Decisions where SageMaker leaves things open:

- Key lists are comma-separated; spaces around entries are dropped and case is folded
  (``'Predicted_Label, probability'`` is ``('predicted_label', 'probability')``). An empty or
  blank value is unset. An empty entry (``'a,,b'``) or a repeated key is an error.
- A requested key outside ``SAGEMAKER_INFERENCE_SUPPORTED`` (by default: every key batchcast
  knows) fails with the SageMaker Python SDK's text, exactly:
  ``Requested inference output keys [a, b] are unsupported. The supported inference keys
  are [x, y]``. When ``SAGEMAKER_INFERENCE_OUTPUT`` is unset, the keys of ``output_types``
  are the requested ones and are checked the same way.
- ``application/json`` and ``application/jsonlines`` encode a record to the same bytes; they
  differ in the endpoint form only (``{"instances": ...}`` -> ``{"predictions": [...]}``
  for JSON, one line per instance for JSON Lines). In a transform, records are assembled
  by ``AssembleWith`` whatever the type, as SageMaker does with one JSON document per record.
- CSV (``text/csv``): one row per input record, no header, columns in the record's key order,
  written by the standard library's ``csv`` writer (RFC 4180 quoting, rows separated by
  ``\\n`` like every other output). A string is a plain cell; a number is its JSON text
  (float32 printed shortest, as in the JSON output); null is an empty cell; a list or an
  object is one cell holding its JSON text (``mean``, ``probabilities``, ``labels``;
  ``samples`` as a nested array); ``quantiles`` expands to one cell per configured
  quantile, in order, each a JSON array. Forwarded fields come first, as in JSON.
- A ``record``-mode error row in CSV is the forwarded fields (empty cells when the line did
  not parse) followed by one cell holding the error object
  ``{"error":{"line":N,"field":...,"message":...}}``; a reader tells it from a forecast by
  that cell starting with ``{"error"``.
- CSV with ``DataProcessing`` ``JoinSource: Input`` is refused: SageMaker's CSV join
  appends output columns to a CSV input row, and batchcast's input is JSON. So is an
  ``OutputFilter`` other than ``$`` with CSV: choose the columns with
  ``SAGEMAKER_INFERENCE_OUTPUT`` and ``forward_fields`` instead.
"""

from __future__ import annotations

import csv
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from io import StringIO
from typing import Any

import orjson

from batchcast.errors import ConfigError, RecordError
from batchcast.forecast.classes import CLASS_KEYS
from batchcast.forecast.config import OUTPUT_TYPES, InferenceConfig, check_supported

__all__ = [
    "ACCEPT_TYPES",
    "CONTENT_TYPES",
    "OUTPUT_KEYS",
    "CsvEncoder",
    "Encoder",
    "JsonEncoder",
    "JsonLinesEncoder",
    "ResponseKeys",
    "check_join",
    "encoder_for",
    "parse_accept",
    "parse_content_type",
    "parse_keys",
    "with_response_keys",
]

JSON_LINES = "application/jsonlines"
JSON = "application/json"
CSV = "text/csv"
# Input content types and output Accept types; the first is the default.
CONTENT_TYPES = (JSON_LINES, JSON)
ACCEPT_TYPES = (JSON_LINES, JSON, CSV)
# Every key an output record may hold: DeepAR's, then Autopilot's classification keys.
OUTPUT_KEYS = OUTPUT_TYPES + CLASS_KEYS
# The order of DeepAR's keys when they come from output_types (SPEC.md §3): today's bytes.
_DEFAULT_ORDER = ("quantiles", "samples", "mean")
_NUMPY = orjson.OPT_SERIALIZE_NUMPY


# ---------------------------------------------------------------------------------------------
# Response keys


def parse_keys(value: str | Sequence[str] | None, *, name: str) -> tuple[str, ...] | None:
    """Parse a key list: ``'predicted_label, probability'`` or ``['Mean', 'quantiles']``.

    Args:
        value: a comma-separated string (an environment variable's form) or a list of keys
            (a job file's or an API argument's); None, blank or empty: unset.
        name: the setting, for messages (e.g. ``SAGEMAKER_INFERENCE_OUTPUT``).

    Returns:
        The keys, stripped and lower-cased, in the order given; None when unset. Whether
        each is a known key is checked by :class:`ResponseKeys`.

    Raises:
        ConfigError: for an entry that is not a string, an empty entry, or a repeated key.
    """
    if value is None:
        return None
    if isinstance(value, str):
        if not value.strip():
            return None
        items: list[Any] = value.split(",")
    elif isinstance(value, Sequence):
        items = list(value)
        if not items:
            return None
    else:
        raise ConfigError(f"{name} must be a comma-separated string of keys, got {value!r}")
    keys: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise ConfigError(f"{name} entries must be strings, got {item!r} in {value!r}")
        key = item.strip().lower()
        if not key:
            raise ConfigError(f"{name} has an empty entry: {value!r}")
        if key in keys:
            raise ConfigError(f"{name} repeats the key {key!r}: {value!r}")
        keys.append(key)
    return tuple(keys)


@dataclass(frozen=True)
class ResponseKeys:
    """The three ``SAGEMAKER_INFERENCE_*`` settings (SPEC.md §8); None where unset.

    Attributes:
        output: ``SAGEMAKER_INFERENCE_OUTPUT``: the keys each output record holds, in order.
            Replaces ``output_types`` when set.
        supported: ``SAGEMAKER_INFERENCE_SUPPORTED``: the keys this deployment allows (unset:
            every key in :data:`OUTPUT_KEYS`).
        input: ``SAGEMAKER_INFERENCE_INPUT``: in a pipeline, the keys the previous stage sends;
            validated and reported only (batchcast is a single stage).

    Strings and lists are accepted and normalised as by :func:`parse_keys`.
    """

    output: tuple[str, ...] | None = None
    supported: tuple[str, ...] | None = None
    input: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            name = _ENV[f.name]
            keys = parse_keys(getattr(self, f.name), name=name)
            if f.name != "output":
                unknown = [k for k in keys or () if k not in OUTPUT_KEYS]
                if unknown:
                    raise ConfigError(
                        f"{name} names unknown key(s) {unknown}; known: {list(OUTPUT_KEYS)}"
                    )
            object.__setattr__(self, f.name, keys)
        if self.output is not None:
            self._check_supported(self.output)

    @classmethod
    def from_environment(cls, env: Mapping[str, str]) -> ResponseKeys:
        """From ``SAGEMAKER_INFERENCE_OUTPUT`` / ``SUPPORTED`` / ``INPUT`` in ``env`` (e.g.
        ``os.environ`` or a CreateTransformJob ``Environment``); other entries are ignored.

        Raises:
            ConfigError: as the constructor.
        """
        return cls(**{attr: parse_keys(env.get(var), name=var) for attr, var in _ENV.items()})

    def overridden_by(self, other: ResponseKeys) -> ResponseKeys:
        """These settings with each one that ``other`` sets replacing this one's.

        For the precedence flag > job file > environment: ``env.overridden_by(job)
        .overridden_by(flags)``. The result is validated as a whole (a job's
        ``SAGEMAKER_INFERENCE_OUTPUT`` against the environment's ``SUPPORTED``).

        Raises:
            ConfigError: as the constructor.
        """
        changes = {f.name: getattr(other, f.name) for f in fields(other)}
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def resolve(self, output_types: Sequence[str], *, has_classes: bool) -> tuple[str, ...]:
        """The keys of each output record, in order.

        Args:
            output_types: the inference configuration's ``output_types``, which rule when
                ``output`` is unset (in SPEC.md §3's order: quantiles, samples, mean).
            has_classes: whether the inference configuration has ``classes``.

        Returns:
            The keys: ``output`` when set, else those of ``output_types``.

        Raises:
            ConfigError: the SDK's text for a key outside ``supported``; a classification
                key without ``classes``, naming both.
        """
        if self.output is not None:
            keys = self.output
        else:
            keys = tuple(k for k in _DEFAULT_ORDER if k in output_types)
            keys += tuple(k for k in output_types if k not in _DEFAULT_ORDER)
        self._check_supported(keys)
        asked = [k for k in keys if k in CLASS_KEYS]
        if asked and not has_classes:
            raise ConfigError(
                f"the output key(s) {asked} need 'classes' in the inference configuration "
                "(DEEPAR_INFERENCE_CONFIG or the request's configuration), and it has none"
            )
        return keys

    def _check_supported(self, keys: Sequence[str]) -> None:
        check_supported(keys, self.supported if self.supported is not None else OUTPUT_KEYS)

    def to_environment(self) -> dict[str, str]:
        """The settings that are set, as environment entries (for a job's summary)."""
        return {
            _ENV[f.name]: ",".join(value)
            for f in fields(self)
            if (value := getattr(self, f.name)) is not None
        }


def with_response_keys(config: InferenceConfig, keys: ResponseKeys) -> InferenceConfig:
    """``config`` with the deployment's response keys applied and checked (SPEC.md §8).

    With ``SAGEMAKER_INFERENCE_OUTPUT`` set, its keys replace ``output_types``; unset, the
    configuration is returned as it is (its output stays today's, byte for byte) once its
    ``output_types`` are checked against ``SAGEMAKER_INFERENCE_SUPPORTED``.

    Raises:
        ConfigError: the SDK's text for an unsupported key; a classification key without
            ``classes``.
    """
    resolved = keys.resolve(config.output_types, has_classes=config.classes is not None)
    if keys.output is None and keys.supported is None:
        return config
    # One replace: the supported keys check the keys the result will hold (``resolved``
    # when ``output`` is set, not ``output_types``); a request's configuration merged later
    # is held to them too.
    return replace(
        config,
        keys=resolved if keys.output is not None else config.keys,
        supported=keys.supported if keys.supported is not None else config.supported,
    )


_ENV = {
    "output": "SAGEMAKER_INFERENCE_OUTPUT",
    "supported": "SAGEMAKER_INFERENCE_SUPPORTED",
    "input": "SAGEMAKER_INFERENCE_INPUT",
}


# ---------------------------------------------------------------------------------------------
# Content types


def _media_range(part: str) -> tuple[str, dict[str, str]]:
    """``'Text/CSV; q=0.5'`` -> ``('text/csv', {'q': '0.5'})``."""
    kind, *params = part.split(";")
    parsed: dict[str, str] = {}
    for param in params:
        key, _, val = param.partition("=")
        parsed[key.strip().lower()] = val.strip().strip('"')
    return kind.strip().lower(), parsed


def parse_content_type(value: str | None, *, name: str = "ContentType") -> str:
    """The input content type: ``application/jsonlines`` (default) or ``application/json``.

    Parameters (``; charset=utf-8``) are ignored; input is always UTF-8 JSON.

    Args:
        value: a ``Content-Type`` header or ``TransformInput.ContentType``; None or blank:
            the default.
        name: the setting, for messages.

    Raises:
        ConfigError: for another type, naming the accepted ones.
    """
    if value is None or not value.strip():
        return CONTENT_TYPES[0]
    kind, _ = _media_range(value)
    if kind not in CONTENT_TYPES:
        raise ConfigError(
            f"{name} {value!r} is not supported; accepted: {list(CONTENT_TYPES)} "
            f"(default {CONTENT_TYPES[0]})"
        )
    return kind


def parse_accept(value: str | None, *, name: str = "Accept") -> str:
    """The output encoding an ``Accept`` value asks for.

    A header may list several media ranges with ``q`` weights
    (``'text/csv;q=0.5, application/json'``): the highest weight that batchcast can serve
    wins, the earlier range on equal weights; ``type/*`` takes the first of
    :data:`ACCEPT_TYPES` of that type, ``*/*`` the default; ``q=0`` excludes a range.

    Args:
        value: an ``Accept`` header, ``TransformOutput.Accept`` or a ``--accept`` flag; None or
            blank: ``application/jsonlines``.
        name: the setting, for messages.

    Returns:
        One of :data:`ACCEPT_TYPES`.

    Raises:
        ConfigError: when no listed range can be served, or a ``q`` is not a number in
            [0, 1]; naming the accepted types.
    """
    if value is None or not value.strip():
        return ACCEPT_TYPES[0]
    ranges: list[tuple[float, int, str]] = []
    for position, part in enumerate(p for p in value.split(",") if p.strip()):
        kind, params = _media_range(part)
        try:
            weight = float(params.get("q", "1"))
        except ValueError:
            weight = -1.0
        if not 0.0 <= weight <= 1.0:
            raise ConfigError(f"{name} {value!r} has an invalid q={params.get('q')!r}")
        if weight > 0.0:
            ranges.append((-weight, position, kind))
    for _, _, kind in sorted(ranges):
        chosen = _match(kind)
        if chosen is not None:
            return chosen
    raise ConfigError(
        f"{name} {value!r} is not supported; accepted: {list(ACCEPT_TYPES)} "
        f"(default {ACCEPT_TYPES[0]})"
    )


def _match(kind: str) -> str | None:
    if kind in ACCEPT_TYPES:
        return kind
    if kind == "*/*":
        return ACCEPT_TYPES[0]
    if kind.endswith("/*"):
        main = kind[: -len("/*")]
        return next((t for t in ACCEPT_TYPES if t.split("/")[0] == main), None)
    return None


def check_join(accept: str, *, join_source: str, output_filter: str) -> None:
    """Refuse what a CSV output cannot do with a DataProcessing join (module docstring).

    Args:
        accept: the resolved output type (:func:`parse_accept`).
        join_source: ``DataProcessing.JoinSource``.
        output_filter: ``DataProcessing.OutputFilter``.

    Raises:
        ConfigError: for ``text/csv`` with ``JoinSource: Input`` or an OutputFilter.
    """
    if accept != CSV:
        return
    if join_source == "Input":
        raise ConfigError(
            "TransformOutput.Accept 'text/csv' cannot be used with DataProcessing "
            "JoinSource 'Input': SageMaker's CSV join appends the output columns to a CSV input "
            "row, and batchcast's input is JSON. Use Accept 'application/jsonlines' for a join, "
            "or forward_fields to put input fields (e.g. item_id) in front of each CSV row"
        )
    if output_filter.strip() != "$":
        raise ConfigError(
            f"TransformOutput.Accept 'text/csv' cannot be used with DataProcessing OutputFilter "
            f"{output_filter!r}: CSV columns are the output keys in order; choose them with "
            "SAGEMAKER_INFERENCE_OUTPUT and forward_fields instead"
        )


# ---------------------------------------------------------------------------------------------
# Encoders


def _error_object(error: RecordError) -> dict[str, Any]:
    return {"line": error.line, "field": error.field, "message": error.message}


class Encoder(ABC):
    """Encodes output records of one content type.

    A record's values come in key order, forwarded fields first: ``mean`` (P,) array;
    ``quantiles`` a mapping of quantile key -> (P,) array, in the configured order;
    ``samples`` (S, P) array; ``predicted_label`` str; ``probability`` number;
    ``probabilities`` (K + 1,) array; ``labels`` list of str (the dicts of
    :func:`batchcast.io.jsonl.forecast_dicts`). numpy arrays and scalars are written directly.
    """

    content_type: str

    @abstractmethod
    def encode(self, values: Mapping[str, Any]) -> bytes:
        """One output record, without a line terminator."""

    @abstractmethod
    def encode_error(
        self, error: RecordError, *, forwarded: Mapping[str, Any] | None = None
    ) -> bytes:
        """A ``record``-mode error in place of a record, without a line terminator.

        Args:
            error: the record error (its line already the file's).
            forwarded: the record's forwarded fields (None: none, or the line did not parse).
        """

    def encode_all(self, records: Iterable[Mapping[str, Any]]) -> list[bytes]:
        """:meth:`encode` of each record."""
        return [self.encode(values) for values in records]

    def body(self, encoded: Sequence[bytes], *, endpoint: bool = False) -> bytes:
        """A response body from encoded records: each followed by ``\\n``.

        Args:
            encoded: records from :meth:`encode` / :meth:`encode_error`.
            endpoint: the endpoint form (``{"instances": ...}`` requests); JSON wraps it as
                ``{"predictions": [...]}``.
        """
        return b"".join(line + b"\n" for line in encoded)


class JsonLinesEncoder(Encoder):
    """``application/jsonlines``: each record a JSON object (orjson, float32 shortest)."""

    content_type = JSON_LINES

    def encode(self, values: Mapping[str, Any]) -> bytes:
        return orjson.dumps(values, option=_NUMPY)

    def encode_error(
        self, error: RecordError, *, forwarded: Mapping[str, Any] | None = None
    ) -> bytes:
        # Without forwarded fields: byte for byte batchcast.io.jsonl.encode_error.
        return orjson.dumps({**(forwarded or {}), "error": _error_object(error)})


class JsonEncoder(JsonLinesEncoder):
    """``application/json``: records as JSON Lines; the endpoint form as ``{"predictions"}``."""

    content_type = JSON

    def body(self, encoded: Sequence[bytes], *, endpoint: bool = False) -> bytes:
        if endpoint:
            return b'{"predictions":[' + b",".join(encoded) + b"]}"
        return super().body(encoded)


class CsvEncoder(Encoder):
    """``text/csv``: one row per record, no header (module docstring for the layout)."""

    content_type = CSV

    def encode(self, values: Mapping[str, Any]) -> bytes:
        return self.encode_all([values])[0]

    def encode_all(self, records: Iterable[Mapping[str, Any]]) -> list[bytes]:
        return _csv_rows(_cells(values) for values in records)

    def encode_error(
        self, error: RecordError, *, forwarded: Mapping[str, Any] | None = None
    ) -> bytes:
        cells = [_cell(v) for v in (forwarded or {}).values()]
        cells.append(orjson.dumps({"error": _error_object(error)}).decode())
        return _csv_rows([cells])[0]


def _cells(values: Mapping[str, Any]) -> list[str]:
    cells: list[str] = []
    for key, value in values.items():
        if key == "quantiles" and isinstance(value, Mapping):
            cells.extend(_cell(row) for row in value.values())
        else:
            cells.append(_cell(value))
    return cells


def _cell(value: Any) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    return orjson.dumps(value, option=_NUMPY).decode()


def _csv_rows(rows: Iterable[list[str]]) -> list[bytes]:
    """Each row through one csv writer. Its line terminator is CRLF so that QUOTE_MINIMAL
    quotes a cell holding either CR or LF; it is cut off, rows being assembled by ``\\n``."""
    buffer = StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    out: list[bytes] = []
    for row in rows:
        writer.writerow(row)
        out.append(buffer.getvalue()[:-2].encode())
        buffer.seek(0)
        buffer.truncate()
    return out


_ENCODERS: dict[str, Encoder] = {
    JSON_LINES: JsonLinesEncoder(),
    JSON: JsonEncoder(),
    CSV: CsvEncoder(),
}


def encoder_for(accept: str | None) -> Encoder:
    """The encoder for an ``Accept`` value (parsed by :func:`parse_accept`).

    Raises:
        ConfigError: as :func:`parse_accept`.
    """
    return _ENCODERS[parse_accept(accept)]
