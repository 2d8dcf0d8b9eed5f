"""The job summary: what a transform did, written as ``_batchcast_summary.json`` beside the
outputs, and its short human form for the terminal.

Schema (keys of ``_batchcast_summary.json``):

- ``name``: the job's name (generated when none was given; the same as ``job.name``).
- ``status``: ``Completed`` or ``Failed``; ``failure_reason``: null, or one line.
- ``counts``: ``files``, ``files_committed``, ``files_failed``, ``files_aborted``,
  ``files_skipped`` (left alone by ``--resume``), ``shards``, ``lines``, ``series``
  (forecasts written), ``record_errors``, ``workers`` (started; 0 when no shard needed one),
  ``worker_restarts`` (worker deaths), ``shards_retried`` (resubmissions after a death),
  ``shards_checked_only`` (shards or pieces validated, not forecast: their file had already
  failed),
  ``shard_pieces`` (pieces sent out for shards too big to process at once; 0 when none was),
  ``window_shards`` (the most shards held at once, in flight or waiting in the reorder
  buffer) and ``peak_shards_held`` (the most it held); ``window_bytes`` (``max_held_mb``
  in bytes: output in flight, estimated, plus output waiting in the reorder buffer) and
  ``peak_bytes_held`` (the most output bytes the reorder buffer held, the arriving shard's
  included): the driver's memory bounds (runner/window.py).
- ``timings``: ``total_s``, ``ray_init_s``, ``workers_ready_s``, ``first_output_s`` (null
  when no shard finished), the workers' summed ``decode_s``/``sample_s``/``encode_s``, and
  ``series_per_s`` (``series / total_s``).
- ``files``: per input: ``input``, ``output`` (null unless committed or skipped),
  ``status`` (``committed``, ``failed``, ``aborted``, ``skipped``), ``lines``, ``series``,
  ``errors``.
- ``errors``: the first ``max_errors_listed`` record errors (default 1000),
  ``{"uri", "line", "field", "message"}``, in the order they were written; ``counts
  ["record_errors"]`` counts all of them.
- ``error_counts``: exact counts of every record error, ``by_field`` (field -> count) and
  ``by_file`` (input URI -> count).
- ``file_errors``: ``{"uri", "message"}`` for each input that could not be read at all (a
  corrupt or truncated gzip stream): under ``record`` and ``fail-file`` that file alone
  fails (no ``.out``, its ``files`` entry has ``error``), the others finish, the job fails.
- ``errors_file``: with ``--errors-file``, the URI of ``_batchcast_errors.jsonl``, which holds
  every record error (one ``errors`` entry a line); else null.
- ``job``: the job's settings (:meth:`TransformJob.describe`); ``cluster``: the Ray
  cluster (empty when Ray was not started).
- ``configuration``: what the outputs' bytes depend on (:meth:`TransformJob.configuration`:
  the model files' sha256 under ``model``, the input, the settings that change a ``.out``);
  ``--resume`` refuses to continue a job whose configuration differs.

Local paths are absolute throughout (the job makes them so).
"""

from __future__ import annotations

import heapq
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from batchcast.errors import RecordError
from batchcast.io.sinks import Sink, write_bytes_atomic

__all__ = ["ERRORS_NAME", "SUMMARY_NAME", "ErrorLog", "JobSummary", "write_summary"]

SUMMARY_NAME = "_batchcast_summary.json"
ERRORS_NAME = "_batchcast_errors.jsonl"

_log = logging.getLogger(__name__)


@dataclass
class JobSummary:
    """What a transform did. ``ok`` is False when any file failed or the job stopped early."""

    status: str
    files: list[dict[str, Any]]
    errors: list[dict[str, Any]]
    counts: dict[str, int]
    timings: dict[str, float | None]
    job: dict[str, Any]
    name: str = ""
    failure_reason: str | None = None
    cluster: dict[str, Any] = field(default_factory=dict)
    summary_uri: str | None = None
    error_counts: dict[str, dict[str, int]] = field(default_factory=dict)
    file_errors: list[dict[str, Any]] = field(default_factory=list)
    errors_uri: str | None = None
    configuration: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "Completed"

    def to_dict(self) -> dict[str, Any]:
        """The summary as written to ``_batchcast_summary.json``."""
        return {
            "name": self.name,
            "status": self.status,
            "failure_reason": self.failure_reason,
            "counts": self.counts,
            "timings": self.timings,
            "files": self.files,
            "errors": self.errors,
            "error_counts": self.error_counts,
            "file_errors": self.file_errors,
            "errors_file": self.errors_uri,
            "job": self.job,
            "configuration": self.configuration,
            "cluster": self.cluster,
        }

    def brief(self) -> dict[str, Any]:
        """The machine-readable result the CLI prints with ``--json``."""
        return {
            "name": self.name,
            "status": self.status,
            "failure_reason": self.failure_reason,
            "counts": self.counts,
            "timings": self.timings,
            "ignored": self.job.get("ignored", []),
            "summary": self.summary_uri,
        }

    def record_errors(self) -> list[RecordError]:
        """The listed record errors as :class:`RecordError` (their ``str`` is the one-line
        ``uri:line: field 'f': message``)."""
        return [RecordError.from_dict(e) for e in self.errors]

    def render(self) -> str:
        """A short human summary (a few lines, no trailing newline)."""
        c, t = self.counts, self.timings
        files = f"{c['files']} file(s): {c['files_committed']} committed"
        for key in ("failed", "aborted", "skipped"):
            if c[f"files_{key}"]:
                files += f", {c[f'files_{key}']} {key}"
        total = t.get("total_s") or 0.0
        lines = [
            f"{self.status}: {self.name}",
            f"  {files}",
            f"  {c['lines']:,} lines, {c['series']:,} series forecast, "
            f"{c['record_errors']:,} record error(s)",
            f"  {total:.1f}s in all (Ray start-up {t.get('ray_init_s') or 0.0:.1f}s), "
            f"{_rate(t.get('series_per_s'))} series/s, {c['workers']} worker(s)",
        ]
        if self.failure_reason:
            lines.append(f"  reason: {self.failure_reason}")
        if self.summary_uri:
            lines.append(f"  summary: {self.summary_uri}")
        return "\n".join(lines)


class ErrorLog:
    """A job's record errors in bounded memory: the first ``limit`` kept for the summary,
    every one counted by field and by file, and, with a sink, every one streamed to it.

    "First" is in input order (file, then line), not in the order shards happen to finish,
    so the same job lists the same errors whatever its workers' timing: a heap keeps the
    ``limit`` smallest (file index, line) seen so far.

    Millions of bad lines must not become millions of objects on the driver (2M lines of
    ``{}`` once took it to 7.4 GB): past the limit an error costs two counter increments and
    one encoded line written to the sink.
    """

    def __init__(self, limit: int, sink: Sink | None = None) -> None:
        self.limit = limit
        self.sink = sink
        self._kept: list[tuple[int, int, int, dict[str, Any]]] = []  # max-heap: negated keys
        self._seen = 0  # tie-breaker, so that dicts are never compared
        self.total = 0
        self.by_field: Counter[str] = Counter()
        self.by_file: Counter[str] = Counter()

    def add(self, errors: Sequence[RecordError], *, file_index: int) -> None:
        """Count, keep (the first ``limit`` in input order) and stream ``errors``.

        Args:
            errors: one file's errors, numbered in their file.
            file_index: that file's place in the job's input order.

        Raises:
            OutputError: when the errors file cannot be written.
        """
        for error in errors:
            self.total += 1
            self.by_field[error.field] += 1
            self.by_file[error.uri] += 1
            entry = error.to_dict()
            self._keep(-file_index, -error.line, entry)
            if self.sink is not None:
                self.sink.write(orjson.dumps(entry) + b"\n")

    def _keep(self, neg_file: int, neg_line: int, entry: dict[str, Any]) -> None:
        if self.limit == 0:
            return
        self._seen += 1
        item = (neg_file, neg_line, -self._seen, entry)
        if len(self._kept) < self.limit:
            heapq.heappush(self._kept, item)
        elif item[:3] > self._kept[0][:3]:  # earlier in input order than the latest kept
            heapq.heapreplace(self._kept, item)

    @property
    def listed(self) -> list[dict[str, Any]]:
        """The kept errors, in input order (file, then line)."""
        return [entry for *_, entry in sorted(self._kept, reverse=True)]

    def counts(self) -> dict[str, dict[str, int]]:
        """``{"by_field": ..., "by_file": ...}``, exact, for the summary."""
        return {"by_field": dict(self.by_field), "by_file": dict(self.by_file)}

    def close(self, *, commit: bool) -> None:
        """Commit the errors file (it appears, complete) or abort it; a no-op without one.

        Raises:
            OutputError: when the commit fails.
        """
        sink, self.sink = self.sink, None
        if sink is None:
            return
        if commit:
            sink.commit()
        else:
            sink.abort()


def _rate(value: float | None) -> str:
    """A rate for people: whole numbers, but 0.3 (not 0) for a job of a handful of series."""
    value = value or 0.0
    return f"{value:,.0f}" if value >= 10 else f"{value:.2g}"


def write_summary(summary: JobSummary, *, quiet: bool) -> None:
    """Write ``summary`` to its ``summary_uri``.

    Args:
        summary: the summary (``summary_uri`` set).
        quiet: log a failure to write instead of raising it (on the way out of a failed
            job, the job's own error matters more than this one).
    """
    assert summary.summary_uri is not None  # the driver sets it
    data = orjson.dumps(summary.to_dict(), option=orjson.OPT_INDENT_2)
    if not quiet:
        write_bytes_atomic(summary.summary_uri, data)
        return
    try:
        write_bytes_atomic(summary.summary_uri, data)
    except Exception as err:
        _log.warning("cannot write %s: %s", summary.summary_uri, err)
