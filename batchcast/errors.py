"""The error tree of batchcast.

::

    BatchcastError                 anything batchcast raises on purpose
    ├── ConfigError                a bad hyperparameter, inference configuration or job description
    ├── RecordError                one input record breaks SPEC.md §1 (uri, 1-based line, field)
    ├── ShardError                 a shard could not be processed (I/O, a worker lost for good)
    ├── ModelError                 a model artifact is missing, malformed or incompatible
    └── TrainingError              training produced no usable network (a non-finite loss)

User errors (bad data, bad configuration) are these; an internal bug is anything else.
:func:`one_line` is how any error's message reaches a user: on one line.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "BatchcastError",
    "ConfigError",
    "ModelError",
    "RecordError",
    "ShardError",
    "TrainingError",
]


def one_line(message: object) -> str:
    """``message`` with every run of whitespace (newlines included) made one space: what a
    ``Type: message`` line, a summary's reason or a log line carries."""
    return " ".join(str(message).split())


class BatchcastError(Exception):
    """Base class of every error batchcast raises on purpose."""


class ConfigError(BatchcastError, ValueError):
    """A configuration value is invalid; it names the key, the value and the expectation.

    Args:
        message: the whole one-line message.
        key: the field the value is for (e.g. ``max_payload_mb``), when one is.
        expectation: the message after the field's name (``must be in [1, 100], got 200``),
            so that a front end can name the value as its user typed it (``--max-payload-mb``).
    """

    def __init__(
        self, message: str, *, key: str | None = None, expectation: str | None = None
    ) -> None:
        super().__init__(message)
        self.key = key
        self.expectation = expectation

    @classmethod
    def for_key(cls, key: str, name: str, expectation: str) -> ConfigError:
        """``ConfigError(f"{name} {expectation}")`` that remembers ``key`` and ``expectation``."""
        return cls(f"{name} {expectation}", key=key, expectation=expectation)


class ModelError(BatchcastError):
    """A model artifact cannot be loaded or does not match what is asked of it."""


class ShardError(BatchcastError):
    """A shard could not be read or processed."""


class TrainingError(BatchcastError):
    """Training produced no usable network (its loss became NaN or infinite before any
    epoch finished well); the message says when and what to change."""


class RecordError(BatchcastError):
    """One input record breaks the record contract (SPEC.md §1).

    Args:
        uri: the input object the record came from.
        line: the 1-based line number in that object.
        field: the offending field (``"$"`` for the line as a whole).
        message: what was expected and what was found.
    """

    def __init__(self, uri: str, line: int, field: str, message: str) -> None:
        self.uri = uri
        self.line = line
        self.field = field
        self.message = message
        super().__init__(f"{uri}:{line}: field {field!r}: {message}")

    def __reduce__(self) -> tuple[Any, ...]:
        # Keep the structured fields when the error crosses a process boundary (Ray pickles it).
        return (RecordError, (self.uri, self.line, self.field, self.message))

    def to_dict(self) -> dict[str, Any]:
        """The error as a JSON-ready dict: ``{"uri", "line", "field", "message"}``."""
        return {"uri": self.uri, "line": self.line, "field": self.field, "message": self.message}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RecordError:
        """The inverse of :meth:`to_dict` (a summary's ``errors`` entry).

        Raises:
            KeyError: when a key is missing.
        """
        return cls(str(data["uri"]), int(data["line"]), str(data["field"]), str(data["message"]))
