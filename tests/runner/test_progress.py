"""The progress line: quiet unless stderr is a terminal (or it is forced on)."""

from __future__ import annotations

import io

from batchcast.runner.progress import Progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_quiet_when_the_stream_is_not_a_terminal() -> None:
    stream = io.StringIO()  # a pipe, a CI log, `ray job submit`'s log
    progress = Progress(3, stream=stream, interval=0)
    progress.update(series=10, files_done=1, errors=0)
    progress.update(series=20, files_done=3, errors=1)
    progress.close()
    assert stream.getvalue() == ""


def test_draws_one_line_on_a_terminal_and_ends_it_on_close() -> None:
    stream = _Terminal()
    progress = Progress(2, stream=stream, interval=0)
    progress.update(series=1500, files_done=1, errors=0)
    progress.update(series=3000, files_done=2, errors=4)
    progress.close()
    text = stream.getvalue()
    assert text.count("\r") == 2
    assert text.endswith("\n")
    assert "3,000 series" in text.splitlines()[-1].split("\r")[-1]
    assert "files 2/2" in text
    assert "errors 4" in text


def test_forced_on_or_off_overrides_the_terminal_check() -> None:
    piped, terminal = io.StringIO(), _Terminal()
    Progress(1, enabled=True, stream=piped, interval=0).update(series=1, files_done=1, errors=0)
    Progress(1, enabled=False, stream=terminal, interval=0).update(series=1, files_done=1, errors=0)
    assert "files 1/1" in piped.getvalue()
    assert terminal.getvalue() == ""


def test_redraws_at_most_once_per_interval_but_always_at_the_end() -> None:
    stream = _Terminal()
    progress = Progress(2, stream=stream, interval=3600)
    for series in range(1, 50):
        progress.update(series=series, files_done=0, errors=0)
    progress.update(series=50, files_done=2, errors=0)  # the last file: drawn regardless
    assert stream.getvalue().count("\r") == 2
