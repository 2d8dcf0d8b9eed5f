"""SageMaker's DataProcessing: InputFilter, JoinSource, OutputFilter (SPEC.md §5), and
batchcast's simpler ``forward_fields``.

The JSONPath subset SageMaker documents: ``$``, ``.name``, ``['a','b']``, ``[n]``, ``[n,m]``,
``[a:b]`` and ``*``. Semantics, where SageMaker leaves them open:

- Slices are END-INCLUSIVE, as SageMaker documents: ``$[1:3]`` is elements 1, 2 and 3;
  ``[a:]`` runs to the end, ``[:b]`` starts at 0; negative indices count from the end.
- ``['a','b']`` (several keys) gives an object of those keys, in the order written; keys the
  record lacks are left out. ``[n,m]``, slices and ``*`` give an array.
- A selector after one that gives an array applies to each element: ``$[*].id``.
- A path that selects nothing (a missing key, an index out of range, a key on an array, or
  several keys none of which is present) raises :class:`LookupError`; ``decode_records``
  turns that into a record error for the InputFilter.
- numpy arrays (the forecast rows an OutputFilter sees) are arrays like JSON ones.
- Unlike SageMaker, names with underscores (and digits, hyphens) work in dot notation.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from batchcast.errors import ConfigError

__all__ = ["JOIN_SOURCES", "Join", "JsonPath", "compile_path"]

JOIN_SOURCES = ("None", "Input")

_NAME = re.compile(r"[A-Za-z0-9_$-]+")
# Arrays: JSON arrays, and the numpy rows of a forecast (jsonl.forecast_dicts) that an
# OutputFilter may index before orjson serialises them.
_ARRAYS = (list, np.ndarray)
_QUOTED = re.compile(r"\s*(?:'([^']*)'|\"([^\"]*)\")\s*")
_ITEM = re.compile(r"\s*(-?[0-9]+)?\s*(?:(:)\s*(-?[0-9]+)?)?\s*")


# ---------------------------------------------------------------------------------------------
# Selectors: each maps a value to (selected, many): ``many`` says the result is a list or
# dict of several selections, to each of which the rest of the path applies.


@dataclass(frozen=True)
class _Key:
    name: str

    def select(self, value: Any) -> Any:
        if not isinstance(value, dict) or self.name not in value:
            raise LookupError(f"no key {self.name!r} in {_kind(value)}")
        return value[self.name]


@dataclass(frozen=True)
class _Keys:
    names: tuple[str, ...]

    def select(self, value: Any) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise LookupError(f"keys {list(self.names)} selected from {_kind(value)}")
        picked = {name: value[name] for name in self.names if name in value}
        if not picked:
            raise LookupError(f"none of the keys {list(self.names)} is present")
        return picked


@dataclass(frozen=True)
class _Index:
    index: int

    def select(self, value: Any) -> Any:
        if not isinstance(value, _ARRAYS) or not -len(value) <= self.index < len(value):
            raise LookupError(f"no element [{self.index}] in {_kind(value)}")
        return value[self.index]


@dataclass(frozen=True)
class _Items:
    """Indices and end-inclusive slices: ``[0,2]``, ``[1:3]``, ``[0,5:]``."""

    items: tuple[int | tuple[int | None, int | None], ...]

    def select(self, value: Any) -> list[Any]:
        if not isinstance(value, _ARRAYS):
            raise LookupError(f"elements selected from {_kind(value)}")
        n = len(value)
        out: list[Any] = []
        for item in self.items:
            if isinstance(item, int):
                if -n <= item < n:
                    out.append(value[item])
                continue
            lo, hi = item
            # End-inclusive: [a:b] is Python's [a:b+1]; [a:-1] runs to the last element.
            stop = None if hi is None or hi == -1 else hi + 1
            out.extend(value[lo:stop])
        return out


@dataclass(frozen=True)
class _Wildcard:
    def select(self, value: Any) -> list[Any]:
        if isinstance(value, dict):
            return list(value.values())
        if isinstance(value, _ARRAYS):
            return list(value)
        raise LookupError(f"'*' selected from {_kind(value)}")


_Selector = _Key | _Keys | _Index | _Items | _Wildcard


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, _ARRAYS):
        return "an array"
    return "null" if value is None else f"a {type(value).__name__}"


@dataclass(frozen=True)
class JsonPath:
    """A compiled path of the supported JSONPath subset; build with :func:`compile_path`."""

    expr: str
    selectors: tuple[_Selector, ...]

    @property
    def is_root(self) -> bool:
        """True for ``$``: the value itself."""
        return not self.selectors

    def apply(self, value: Any) -> Any:
        """The part of ``value`` the path selects.

        Raises:
            LookupError: when the path selects nothing in ``value`` (the message names the
                expression and what was missing).
        """
        try:
            return _apply(self.selectors, value)
        except LookupError as err:
            raise LookupError(f"JSONPath {self.expr!r}: {err.args[0]}") from None


def _apply(selectors: Sequence[_Selector], value: Any) -> Any:
    if not selectors:
        return value
    head, rest = selectors[0], selectors[1:]
    if not rest:
        return head.select(value)
    if isinstance(head, _Keys):
        return {name: _apply(rest, v) for name, v in head.select(value).items()}
    if isinstance(head, (_Items, _Wildcard)):
        return [_apply(rest, v) for v in head.select(value)]
    return _apply(rest, head.select(value))


def compile_path(expr: str) -> JsonPath:
    """Compile a JSONPath expression of the supported subset (see the module docstring).

    Raises:
        ConfigError: for an expression outside the subset, naming it and the position.
    """
    text = expr.strip() if isinstance(expr, str) else ""
    if not text.startswith("$"):
        raise ConfigError(f"JSONPath {expr!r} must start with '$'")
    selectors: list[_Selector] = []
    pos = 1
    while pos < len(text):
        if text.startswith(".*", pos):
            selectors.append(_Wildcard())
            pos += 2
        elif text[pos] == "." and (match := _NAME.match(text, pos + 1)):
            selectors.append(_Key(match.group()))
            pos = match.end()
        elif text[pos] == "[":
            close = text.find("]", pos)
            if close < 0:
                raise ConfigError(f"JSONPath {expr!r}: '[' at position {pos} is never closed")
            selectors.append(_bracket(text[pos + 1 : close], expr))
            pos = close + 1
        else:
            raise ConfigError(
                f"JSONPath {expr!r}: unexpected {text[pos:]!r} at position {pos}; supported: "
                "$, .name, ['a','b'], [n], [n,m], [a:b], *"
            )
    return JsonPath(expr, tuple(selectors))


def _bracket(inner: str, expr: str) -> _Selector:
    parts = inner.split(",")
    if inner.strip() == "*":
        return _Wildcard()
    quoted = [_QUOTED.fullmatch(p) for p in parts]
    if all(quoted):
        names = tuple(m.group(1) if m.group(1) is not None else m.group(2) for m in quoted if m)
        return _Key(names[0]) if len(names) == 1 else _Keys(names)
    items: list[int | tuple[int | None, int | None]] = []
    for part in parts:
        match = _ITEM.fullmatch(part)
        if match is None or (match.group(1) is None and not match.group(2)):
            raise ConfigError(
                f"JSONPath {expr!r}: cannot read [{inner}]; expected quoted names, "
                "integers, slices a:b or *"
            )
        lo, colon, hi = match.groups()
        if colon:
            items.append((int(lo) if lo else None, int(hi) if hi else None))
        else:
            items.append(int(lo))
    if len(items) == 1 and isinstance(items[0], int):
        return _Index(items[0])
    return _Items(tuple(items))


# ---------------------------------------------------------------------------------------------
# The join


@dataclass(frozen=True)
class Join:
    """How an output record is made from a forecast and its input record (SPEC.md §5).

    Attributes:
        input_filter: JSONPath of the model's input in each input record.
        join_source: ``"None"`` (the output is the forecast) or ``"Input"`` (the forecast
            is added to the input record under ``SageMakerOutput``; a non-object input
            becomes ``{"SageMakerInput": ..., "SageMakerOutput": ...}``).
        output_filter: JSONPath of what to keep of the (joined) output.
        forward_fields: input fields copied into the forecast object, ahead of its keys;
            a field the record lacks is written as ``null`` so every output line has the
            same keys.
    """

    input_filter: str = "$"
    join_source: str = "None"
    output_filter: str = "$"
    forward_fields: tuple[str, ...] = ()
    _input: JsonPath = field(init=False, repr=False, compare=False)
    _output: JsonPath = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.join_source not in JOIN_SOURCES:
            raise ConfigError(
                f"JoinSource must be one of {list(JOIN_SOURCES)}, got {self.join_source!r}"
            )
        fields = self.forward_fields
        if isinstance(fields, str) or not all(isinstance(f, str) and f for f in fields):
            raise ConfigError(f"forward_fields must be a list of field names, got {fields!r}")
        # Frozen: set the normalised and compiled forms once, here.
        object.__setattr__(self, "forward_fields", tuple(fields))
        object.__setattr__(self, "_input", compile_path(self.input_filter))
        object.__setattr__(self, "_output", compile_path(self.output_filter))

    @classmethod
    def from_data_processing(
        cls, data: Mapping[str, Any] | None, *, forward_fields: Sequence[str] = ()
    ) -> Join:
        """From a CreateTransformJob ``DataProcessing`` object (absent keys: defaults).

        Raises:
            ConfigError: for an unknown key or an invalid value.
        """
        data = data or {}
        known = {
            "InputFilter": "input_filter",
            "JoinSource": "join_source",
            "OutputFilter": "output_filter",
        }
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ConfigError(f"unknown DataProcessing key(s) {unknown}; known: {sorted(known)}")
        kwargs = {known[k]: v for k, v in data.items()}
        return cls(**kwargs, forward_fields=tuple(forward_fields))

    @property
    def needs_records(self) -> bool:
        """True when anything differs from the default (``$``, ``None``, ``$``, no forwarded
        fields): decode with ``input_filter=self.model_input, keep_records=True`` and make
        each output line with :meth:`output`. False: the bare forecast lines are the output
        and the parsed records need not be kept."""
        return (
            self.join_source != "None"
            or bool(self.forward_fields)
            or not self._input.is_root
            or not self._output.is_root
        )

    def model_input(self, record: Any) -> Any:
        """The model's input in an input record (the InputFilter).

        Raises:
            LookupError: when the filter selects nothing in ``record``.
        """
        return record if self._input.is_root else self._input.apply(record)

    def output(self, record: Any, output: dict[str, Any]) -> Any:
        """The output record for one forecast.

        Args:
            record: the parsed input line, before the InputFilter.
            output: the forecast object (``quantiles``/``samples``/``mean``).

        Returns:
            The value to encode as the output line.

        Raises:
            LookupError: when the OutputFilter selects nothing.
        """
        if self.forward_fields:
            source = record if isinstance(record, dict) else {}
            output = {**{name: source.get(name) for name in self.forward_fields}, **output}
        joined: Any = output
        if self.join_source == "Input":
            if isinstance(record, dict):
                joined = {**record, "SageMakerOutput": output}
            else:
                joined = {"SageMakerInput": record, "SageMakerOutput": output}
        return joined if self._output.is_root else self._output.apply(joined)
