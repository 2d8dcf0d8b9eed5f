"""report.html: one well-formed, self-contained page; it renders in headless Chromium."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from report_cases import Case

from batchcast.errors import ConfigError
from batchcast.report.evaluate import evaluate
from batchcast.report.html import MAX_ERROR_ROWS, Chart, render_report, report_for_job, write_report
from batchcast.report.plots import Panel, render

CHROMIUM = shutil.which("chromium") or (
    "/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None
)
# Elements HTML allows without a closing tag.
_VOID = {"meta", "img", "br", "hr", "link", "input"}


class _Page(HTMLParser):
    """Collects the tags, checks nesting, and keeps what the tests look at."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.problems: list[str] = []
        self.tables: list[list[list[str]]] = []
        self.images: list[str] = []
        self.attributes: list[str] = []
        self.text: list[str] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.attributes.extend(v or "" for _, v in attrs)
        if tag == "img":
            self.images.append(dict(attrs).get("src") or "")
        if tag == "table":
            self.tables.append([])
        if tag == "tr":
            self.tables[-1].append([])
        if tag in ("td", "th"):
            self._cell = []
        if tag not in _VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.problems.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
            return
        self.stack.pop()
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell))
            self._cell = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)


def _parse(page: str) -> _Page:
    parser = _Page()
    parser.feed(page)
    parser.close()
    assert parser.problems == []
    assert parser.stack == []  # every element closed
    return parser


def _summary(errors: int = 2) -> dict[str, Any]:
    return {
        "name": "job <&> 1",
        "status": "Failed",
        "failure_reason": "1 file(s) with record errors (fail-file)",
        "counts": {"files": 2, "files_committed": 1, "series": 24, "record_errors": errors},
        "timings": {"total_s": 4.5, "series_per_s": 5.33},
        "files": [{"input": "in/a.jsonl", "output": "out/a.jsonl.out", "status": "committed"}],
        "errors": [
            {
                "uri": "in/b.jsonl",
                "line": i + 1,
                "field": "target",
                "message": 'expected a number, found "<script>alert(1)</script>"',
            }
            for i in range(errors)
        ],
    }


def test_page_is_well_formed_self_contained_and_escaped(case: Case, tmp_path: Path) -> None:
    evaluation = evaluate(str(case.actuals), str(case.forecasts), input=str(case.input))
    png = render([Panel("one", case.history[9], mean=case.mean[9])])
    path = tmp_path / "report.html"
    write_report(str(path), summary=_summary(), metrics=evaluation,
                 charts=[Chart("chart <1>", png), Chart("chart 2", png)])  # fmt: skip
    page = path.read_text(encoding="utf-8")
    parsed = _parse(page)
    assert "http://" not in page
    assert "https://" not in page
    assert "<script" not in page  # the error message's markup is text, not a tag
    assert any("<script>alert(1)</script>" in t for t in parsed.text)
    assert len(parsed.images) == 2
    for src in parsed.images:
        prefix = "data:image/png;base64,"
        assert src.startswith(prefix)
        assert base64.b64decode(src[len(prefix) :]) == png
    # counts, timings, files, record errors, the metrics' facts, headline and per quantile
    errors = next(t for t in parsed.tables if t[0] == ["file", "line", "field", "message"])
    assert [row[1] for row in errors[1:]] == ["1", "2"]
    quantiles = next(t for t in parsed.tables if t[0][0] == "quantile")
    assert [row[0] for row in quantiles[1:]] == list(evaluation.quantiles)
    headline = next(t for t in parsed.tables if t[0] == ["metric", "value"])
    value = dict((row[0], row[1]) for row in headline[1:])["mean_wQuantileLoss"]
    assert float(value) == pytest.approx(evaluation.metrics["mean_wQuantileLoss"], rel=1e-3)
    first_cells = {row[0] for table in parsed.tables for row in table}
    assert {"files_committed", "record_errors", "total_s", "series_per_s"} <= first_cells


def test_record_errors_are_capped_with_a_note() -> None:
    page = render_report(summary=_summary(errors=MAX_ERROR_ROWS + 3))
    parsed = _parse(page)
    errors = next(t for t in parsed.tables if t[0] == ["file", "line", "field", "message"])
    assert len(errors) == MAX_ERROR_ROWS + 1
    assert "3 more" in page


def test_chart_must_be_png() -> None:
    with pytest.raises(ConfigError, match="PNG"):
        Chart("x", b"GIF89a")


def test_report_for_job_charts_metrics_and_notes(case: Case, tmp_path: Path) -> None:
    path = tmp_path / "job.html"
    output = case.forecasts.parent
    report_for_job(_summary(), str(case.input.parent), str(output), str(path),
                   actuals=str(case.actuals.parent), items="0,item-5")  # fmt: skip
    parsed = _parse(path.read_text())
    assert len(parsed.images) == 2
    assert any(t[0][0] == "quantile" for t in parsed.tables)
    # a job that wrote no output still gets its page, with a note why there is no chart
    empty = tmp_path / "empty-output"
    empty.mkdir()
    (empty / "_batchcast_summary.json").write_bytes(orjson.dumps(_summary()))
    report_for_job(_summary(), str(case.input.parent), str(empty), str(tmp_path / "none.html"))
    parsed = _parse((tmp_path / "none.html").read_text())
    assert parsed.images == []
    assert any("No fan charts" in t for t in parsed.text)


def _ink(png: Path) -> tuple[float, int]:
    """(share of non-white pixels, distinct colours) of a screenshot."""
    from matplotlib import image

    pixels = np.round(image.imread(str(png))[..., :3] * 255).astype(np.uint8)
    flat = pixels.reshape(-1, 3)
    return float((flat < 245).any(axis=1).mean()), len(np.unique(flat, axis=0))


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)")
def test_headless_chromium_renders_the_page(case: Case, tmp_path: Path) -> None:
    """The page opens with no network (Chromium's networking is off here) and shows ink: the
    tables' text and the embedded charts' bands."""
    path = tmp_path / "report.html"
    report_for_job(_summary(), str(case.input), str(case.forecasts), str(path),
                   actuals=str(case.actuals))  # fmt: skip
    shot = tmp_path / "shot.png"
    assert CHROMIUM is not None
    subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--no-proxy-server", "--proxy-server=127.0.0.1:9",  # any fetch would fail
         "--window-size=1280,2400", f"--screenshot={shot}", path.as_uri()],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    ink, colours = _ink(shot)
    assert ink > 0.05  # not a blank page
    assert colours > 50  # text and charts, not a flat fill
    from matplotlib import image

    from batchcast.report.plots import band_colors

    pixels = np.round(image.imread(str(shot))[..., :3] * 255).astype(np.int16)
    band = np.array([int(band_colors(4)[1][i : i + 2], 16) for i in (1, 3, 5)])
    assert (np.abs(pixels - band).max(axis=-1) <= 3).sum() > 500  # the charts' bands show
