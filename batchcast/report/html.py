"""The job report: one self-contained HTML page (``transform --report``, ``evaluate --report``).

The page holds the job summary (status, counts, timings, series/s, files, record errors with
their lines), the metrics when there are actuals, and a grid of fan charts embedded as
``data:image/png;base64`` images. It loads nothing: no script, no stylesheet, no font, no
URL, so it opens the same in a browser with no network, in a mail attachment or on S3.
Every piece of text from the job (file names, messages) is HTML-escaped.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from batchcast.errors import ConfigError
from batchcast.io import write_bytes_atomic
from batchcast.report.evaluate import Evaluation, evaluate
from batchcast.report.plots import Panel, collect_panels, parse_items, render

__all__ = [
    "MAX_ERROR_ROWS",
    "Chart",
    "charts_for",
    "render_report",
    "report_for_job",
    "write_report",
]

# Record errors listed on the page; the job summary JSON beside the outputs has them all.
# (A job can have millions; the page must still open.)
MAX_ERROR_ROWS = 10_000
MAX_PROBLEM_ROWS = 200
_HEADLINE = ("mean_wQuantileLoss", "RMSE", "NRMSE", "ND", "MASE", "sMAPE", "MAPE", "MSIS",
             "MAE_Coverage", "abs_target_sum")  # fmt: skip

_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px;color:#222}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd}
.meta{color:#666;font-size:13px}
table{border-collapse:collapse;font-size:13px;margin:4px 0 12px}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f3f5f8}td.n{text-align:right;font-variant-numeric:tabular-nums}
.ok{color:#1a7f37;font-weight:600}.failed{color:#b42318;font-weight:600}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(420px,1fr));gap:12px}
figure{margin:0;border:1px solid #e3e3e3;padding:6px}figure img{width:100%;height:auto}
.note{color:#666;font-size:13px}
"""


@dataclass(frozen=True)
class Chart:
    """One embedded image.

    Attributes:
        title: the caption.
        png: the PNG bytes.
    """

    title: str
    png: bytes

    def __post_init__(self) -> None:
        if not self.png.startswith(b"\x89PNG\r\n\x1a\n"):
            raise ConfigError(f"chart {self.title!r}: png must hold PNG bytes")


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _number(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return _e(value)
    if isinstance(value, int):
        return f"{value:,}"
    if math.isnan(value):
        return "–"
    if math.isinf(value):
        return "∞" if value > 0 else "-∞"
    return f"{value:,.4g}" if abs(value) < 1e4 else f"{value:,.0f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], *, numeric: bool = True) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = []
        for value in row:
            if numeric and isinstance(value, (int, float)) and not isinstance(value, bool):
                cells.append(f'<td class="n">{_number(value)}</td>')
            else:
                cells.append(f"<td>{_e('' if value is None else value)}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _pairs_table(values: Mapping[str, Any]) -> str:
    return _table(["", "value"], [[k, v] for k, v in values.items()])


def _summary_section(summary: Mapping[str, Any]) -> str:
    status = str(summary.get("status", "unknown"))
    css = "ok" if status == "Completed" else "failed"
    parts = [f'<p>Status: <span class="{css}">{_e(status)}</span>']
    if summary.get("failure_reason"):
        parts.append(f" — {_e(summary['failure_reason'])}")
    parts.append("</p>")
    counts = summary.get("counts") or {}
    timings = summary.get("timings") or {}
    if counts:
        parts.append("<h2>Counts</h2>" + _pairs_table(counts))
    if timings:
        parts.append("<h2>Timings</h2>" + _pairs_table(timings))
    files = summary.get("files") or []
    if files:
        keys = ["input", "output", "status", "lines", "series", "record_errors"]
        shown = [k for k in keys if any(k in f for f in files)]
        parts.append(
            f"<h2>Files ({len(files):,})</h2>"
            + _table(shown, [[f.get(k) for k in shown] for f in files])
        )
    errors = summary.get("errors") or []
    parts.append(f"<h2>Record errors ({len(errors):,})</h2>")
    if errors:
        rows = [
            [e.get("uri"), e.get("line"), e.get("field"), e.get("message")]
            for e in errors[:MAX_ERROR_ROWS]
        ]
        parts.append(_table(["file", "line", "field", "message"], rows))
        if len(errors) > MAX_ERROR_ROWS:
            more = len(errors) - MAX_ERROR_ROWS
            parts.append(f'<p class="note">… and {more:,} more: all are in the job summary.</p>')
    else:
        parts.append('<p class="note">None.</p>')
    return "".join(parts)


def _metrics_section(evaluation: Evaluation | Mapping[str, Any]) -> str:
    data = evaluation.to_dict() if isinstance(evaluation, Evaluation) else dict(evaluation)
    metrics: Mapping[str, Any] = data.get("metrics", {})
    nan = float("nan")
    headline = [[k, nan if metrics[k] is None else metrics[k]] for k in _HEADLINE if k in metrics]
    parts = ["<h2>Metrics</h2>"]
    season = f"{data.get('seasonality')} — {data.get('seasonality_source')}"
    interval = " – ".join(data.get("msis_interval") or []) or "none (no symmetric pair)"
    facts = [
        ("series scored", data.get("series")),
        ("lines skipped", data.get("skipped")),
        ("seasonality (MASE, MSIS)", season),
        ("MSIS interval", interval),
    ]
    parts.append(_table(["", "value"], [[k, v] for k, v in facts if v is not None]))
    parts.append(_table(["metric", "value"], headline))

    def get(name: str) -> float:
        value = metrics.get(name)
        return nan if value is None else float(value)

    rows = [
        [q, get(f"wQuantileLoss[{q}]"), get(f"QuantileLoss[{q}]"), get(f"Coverage[{q}]")]
        for q in data.get("quantiles", [])
    ]
    parts.append(_table(["quantile", "wQuantileLoss", "QuantileLoss", "Coverage"], rows))
    problems = data.get("problems") or []
    if problems:
        parts.append(f"<h2>Lines not scored ({data.get('skipped', len(problems)):,})</h2>")
        rows = [[p["uri"], p["line"], p["reason"]] for p in problems[:MAX_PROBLEM_ROWS]]
        parts.append(_table(["file", "line", "why"], rows))
    return "".join(parts)


def _charts_section(charts: Sequence[Chart]) -> str:
    figures = []
    for chart in charts:
        data = base64.b64encode(chart.png).decode("ascii")
        figures.append(
            # the chart draws its own title; alt text says it for a screen reader
            f'<figure><img alt="{_e(chart.title)}" src="data:image/png;base64,{data}"></figure>'
        )
    return f'<h2>Fan charts</h2><div class="grid">{"".join(figures)}</div>'


def render_report(
    *,
    summary: Mapping[str, Any] | None,
    metrics: Evaluation | Mapping[str, Any] | None = None,
    charts: Sequence[Chart] = (),
    title: str | None = None,
    notes: Sequence[str] = (),
) -> str:
    """The report page as HTML text (see :func:`write_report`)."""
    name = title or (summary or {}).get("name") or "batchcast report"
    made = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    body = [f"<h1>{_e(name)}</h1>", f'<p class="meta">batchcast report, {made}</p>']
    body.extend(f'<p class="note">{_e(n)}</p>' for n in notes)
    if summary is not None:
        body.append(_summary_section(summary))
    if metrics is not None:
        body.append(_metrics_section(metrics))
    if charts:
        body.append(_charts_section(charts))
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_e(name)}</title><style>{_STYLE}</style></head>"
        f"<body>{''.join(body)}</body></html>\n"
    )


def write_report(
    path: str,
    *,
    summary: Mapping[str, Any] | None,
    metrics: Evaluation | Mapping[str, Any] | None = None,
    charts: Sequence[Chart] = (),
    title: str | None = None,
    notes: Sequence[str] = (),
) -> None:
    """Write the self-contained HTML report to ``path`` (local or ``s3://``, atomically).

    Args:
        path: where the page goes.
        summary: a job summary (``JobSummary.to_dict()``): status, counts, timings,
            files, errors; None for an evaluation on its own.
        metrics: an :class:`Evaluation` (or its ``to_dict()``), or None.
        charts: the images to embed, in order.
        title: the page title (default the job's name).
        notes: sentences shown under the title (e.g. why there are no charts).
    """
    page = render_report(summary=summary, metrics=metrics, charts=charts, title=title,
                         notes=notes)  # fmt: skip
    write_bytes_atomic(path, page.encode("utf-8"))


def charts_for(panels: Sequence[Panel], *, history_points: int | None = None) -> list[Chart]:
    """One small PNG per panel (the page lays them out in a grid)."""
    return [Chart(p.title, render([p], history_points=history_points)) for p in panels]


def report_for_job(
    summary: Mapping[str, Any],
    input_uri: str,
    output_uri: str,
    path: str,
    *,
    actuals: str | None = None,
    items: str | Sequence[int | str] | None = None,
    seasonality: int | None = None,
) -> None:
    """Write the report of a finished transform job (what ``transform --report`` calls).

    Charts come from the job's input and output (``items``, or a few series spread over
    the input); metrics only when ``actuals`` are given. A job that wrote no output still
    gets its page: the summary and a note saying why there is no chart.

    Args:
        summary: ``JobSummary.to_dict()`` of the job.
        input_uri: the job's input (file, folder, glob or prefix).
        output_uri: the job's output folder.
        path: where the page goes (local or ``s3://``).
        actuals: optional full series to score the forecasts against.
        items: ``"0,5,item-42"`` or a list, as ``batchcast plot --items``.
        seasonality: MASE's seasonality (default: from the job's model).

    Raises:
        ConfigError: for bad ``items``; a failed evaluation becomes a note on the page.
    """
    chosen = parse_items(items) if isinstance(items, str) else items
    notes: list[str] = []
    charts: list[Chart] = []
    try:
        charts = charts_for(collect_panels(input_uri, output_uri, actuals=actuals, items=chosen))
    except ConfigError as err:
        if items is not None:
            raise
        notes.append(f"No fan charts: {err}")
    evaluation = None
    if actuals is not None:
        try:
            evaluation = evaluate(actuals, output_uri, input=input_uri, seasonality=seasonality)
        except ConfigError as err:
            notes.append(f"No metrics: {err}")
    write_report(path, summary=summary, metrics=evaluation, charts=charts, notes=notes)
