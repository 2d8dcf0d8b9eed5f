"""A one-line progress display for the terminal: series/s, files done, record errors.

Quiet when stderr is not a terminal (CI, ``ray job submit`` logs, pipes), unless forced on.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["Progress"]


class Progress:
    """Redraws one status line at most every ``interval`` seconds.

    Args:
        total_files: files to transform.
        enabled: force on/off; None = on only when ``stream`` is a terminal.
        stream: where to draw (stderr).
    """

    def __init__(
        self,
        total_files: int,
        *,
        enabled: bool | None = None,
        stream: TextIO | None = None,
        interval: float = 0.25,
    ) -> None:
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.total_files = total_files
        self.interval = interval
        self.started = time.perf_counter()
        self._last = -float("inf")  # the first update draws at once
        self._line = ""

    def render(self, *, series: int, files_done: int, errors: int) -> str:
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        return (
            f"batchcast: {series:,} series  {series / elapsed:,.0f} series/s  "
            f"files {files_done}/{self.total_files}  errors {errors}  {elapsed:,.1f}s"
        )

    def update(self, *, series: int, files_done: int, errors: int) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if now - self._last < self.interval and files_done < self.total_files:
            return
        self._last = now
        self._line = self.render(series=series, files_done=files_done, errors=errors)
        self.stream.write("\r" + self._line)
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self._line:
            self.stream.write("\n")
            self.stream.flush()
