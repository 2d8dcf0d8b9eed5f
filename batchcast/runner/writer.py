"""The ordered writer of one input file's ``.out``: line numbers, failure modes, commit.

Shards arrive here in order (the driver's reorder buffer sees to it), so the writer knows
each shard's first line and hands it to :func:`batchcast.io.output.write_lines`, which
numbers the error lines as it writes them. Under ``fail-file`` and ``fail-fast`` a file with
a record error gets no ``.out``: its sink is aborted and no object appears.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from batchcast.errors import RecordError
from batchcast.io.output import write_lines
from batchcast.io.records import renumber
from batchcast.io.sinks import Sink, open_sink
from batchcast.io.sources import InputObject
from batchcast.runner.processor import ShardResult

__all__ = ["FILE_STATUSES", "FileWriter"]

# pending: being written; committed: the .out is in place; failed: it has record errors (no
# .out under fail-file/fail-fast); aborted: the job stopped before it was done; skipped:
# its .out was already there and --resume left it alone.
FILE_STATUSES = ("pending", "committed", "failed", "aborted", "skipped")


@dataclass
class FileWriter:
    """Writes one file's shards in order; counts its lines, series and errors.

    Attributes:
        obj: the input object.
        uri: where its output goes.
        on_error: the job's failure mode.
        assemble_with: ``Line`` or ``None``.
        lines: input lines seen so far (the next shard starts at ``lines + 1``).
        series: valid records so far, whether or not they get written.
        errors: record errors so far.
        status: see ``FILE_STATUSES``.
        error: why the input itself could not be read (a corrupt gzip stream), or None.
    """

    obj: InputObject
    uri: str
    on_error: str
    assemble_with: str
    lines: int = 0
    series: int = 0
    errors: int = 0
    status: str = "pending"
    error: str | None = None
    _sink: Sink | None = None

    def append(self, result: ShardResult) -> list[RecordError]:
        """Write the next shard's lines; return its errors, numbered in the file.

        Raises:
            OSError, ValueError: when the output cannot be opened or written (the sink's).
        """
        errors = renumber(result.errors, self.lines)
        first_line = self.lines + 1
        self.lines += result.num_lines
        self.series += result.num_series
        self.errors += len(errors)
        if errors and self.on_error != "record":
            self.abort()  # fail-file and fail-fast: this file gets no .out
        if self.status != "pending":
            return errors  # a failed file: keep counting its lines and errors
        if self._sink is None:
            self._sink = open_sink(self.uri)
        write_lines(
            self._sink.write, result.lines, first_line=first_line, assemble_with=self.assemble_with
        )
        return errors

    def commit(self) -> None:
        """Make the ``.out`` appear (an empty input gets an empty ``.out``); a no-op unless
        pending."""
        if self.status != "pending":
            return
        sink = self._sink or open_sink(self.uri)
        self._sink = None
        sink.commit()
        self.status = "committed"

    def abort(self) -> None:
        """Drop what was written (no object appears); a no-op once committed.

        The file's status becomes ``failed`` if it has record errors, else ``aborted``.

        Raises:
            OSError, botocore errors: when the partial output cannot be removed; the status
                has changed all the same.
        """
        if self.status != "pending":
            return
        self.status = "failed" if self.errors or self.error else "aborted"
        if self._sink is not None:
            sink, self._sink = self._sink, None
            sink.abort()

    def fail(self, reason: str) -> None:
        """The input cannot be read (its bytes are damaged): no ``.out``, status ``failed``,
        ``reason`` kept for the summary. Later shards of the file are only counted."""
        self.error = reason
        self.abort()

    def describe(self) -> dict[str, Any]:
        """The file's entry in the job summary (``error`` only for an unreadable input)."""
        entry = {
            "input": self.obj.uri,
            "output": self.uri if self.status == "committed" else None,
            "status": self.status,
            "lines": self.lines,
            "series": self.series,
            "errors": self.errors,
        }
        if self.error is not None:
            entry["error"] = self.error
        return entry
