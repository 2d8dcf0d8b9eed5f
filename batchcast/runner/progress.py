"""One-line progress displays for the terminal: a transform's lines, series/s and ETA; a
training run's epochs.

Quiet when stderr is not a terminal (CI, ``ray job submit`` logs, pipes), unless forced on.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

__all__ = ["EpochBar", "Progress"]


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


class Progress:
    """Redraws one status line at most every ``interval`` seconds.

    Counts move as shards finish (not as files are committed), so a job of a few big files
    still moves; the ETA extrapolates the input bytes done since the workers were ready.
    series/s is measured from ``started``, the job's start, as the summary's ``series_per_s``
    is, so the two agree at the end.

    Args:
        total_files: files to transform.
        total_bytes: input bytes to read (the planned shards'); 0 = unknown, no ETA.
        total_shards: shards planned.
        enabled: force on/off; None = on only when ``stream`` is a terminal.
        stream: where to draw (stderr).
        interval: seconds between redraws.
        started: ``time.perf_counter()`` at the job's start (default: now).
    """

    def __init__(
        self,
        total_files: int,
        *,
        total_bytes: int = 0,
        total_shards: int = 0,
        enabled: bool | None = None,
        stream: TextIO | None = None,
        interval: float = 0.25,
        started: float | None = None,
    ) -> None:
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.total_files = total_files
        self.total_bytes = total_bytes
        self.total_shards = total_shards
        self.interval = interval
        self.started = time.perf_counter() if started is None else started
        self._working_since: float | None = None
        self._last = -float("inf")  # the first update draws at once
        self._line = ""

    def phase(self, text: str) -> None:
        """Show what the job is doing before any shard is done (``starting 2 workers``)."""
        self._draw(f"batchcast: {text} ...")

    def working(self) -> None:
        """Mark the moment the workers are ready: the ETA counts from here."""
        self._working_since = time.perf_counter()

    def render(
        self,
        *,
        series: int,
        files_done: int,
        errors: int,
        lines: int = 0,
        shards_done: int = 0,
        bytes_done: int = 0,
    ) -> str:
        """The status line for these counts."""
        now = time.perf_counter()
        elapsed = max(now - self.started, 1e-9)
        parts = [
            f"batchcast: {lines:,} lines",
            f"{series:,} series",
            f"{series / elapsed:,.0f} series/s",
            f"files {files_done}/{self.total_files}",
        ]
        if self.total_shards:
            parts.append(f"shards {shards_done}/{self.total_shards}")
        parts.append(f"errors {errors}")
        if self.total_bytes and 0 < bytes_done < self.total_bytes and self._working_since:
            spent = now - self._working_since
            parts.append(f"ETA {_duration(spent * (self.total_bytes - bytes_done) / bytes_done)}")
        parts.append(f"{elapsed:,.1f}s")
        return "  ".join(parts)

    def update(self, **counts: Any) -> None:
        """Redraw with ``counts`` (the arguments of :meth:`render`), at most once per
        ``interval`` but always once every file is done."""
        if not self.enabled:
            return
        now = time.perf_counter()
        if now - self._last < self.interval and counts.get("files_done", 0) < self.total_files:
            return
        self._last = now
        self._draw(self.render(**counts))

    def _draw(self, line: str) -> None:
        if not self.enabled:
            return
        pad = " " * max(0, len(self._line) - len(line))  # erase a longer previous line
        self._line = line
        self.stream.write("\r" + line + pad)
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self._line:
            self.stream.write("\n")
            self.stream.flush()


class EpochBar:
    """Training progress: a bar redrawn per epoch on a terminal, one line per epoch in a log.

    Args:
        quiet: draw nothing.
        stream: where to draw (stderr).
    """

    def __init__(self, *, quiet: bool = False, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.bar = self.stream.isatty()
        self._open = False

    def __call__(self, report: Any) -> None:
        """Show one :class:`~batchcast.forecast.train.EpochReport`."""
        if self.quiet:
            return
        mark = " *" if report.best else ""  # * = best epoch so far (kept with early stopping)
        line = (
            f"{report.label}epoch {report.epoch}/{report.epochs}  loss {report.loss:.4f}  "
            f"{report.seconds:.1f}s{mark}"
        )
        if report.epoch == 1:
            self.close()  # a second network's bar starts on its own line
        if not self.bar:  # a log: one line per epoch
            print(line, file=self.stream)
            return
        done = int(30 * report.epoch / report.epochs)
        end = "\n" if report.epoch == report.epochs else ""
        self._open = not end
        bar = f"\r[{'#' * done}{'.' * (30 - done)}] {line}   "
        print(bar, end=end, file=self.stream, flush=True)

    def close(self) -> None:
        """End the bar's line if training stopped before its last epoch (early stopping)."""
        if self._open:
            print(file=self.stream)
            self._open = False
