"""Fan charts of forecasts: history, median, quantile bands and actuals, one panel per series.

Drawn with matplotlib's Agg backend (no display needed), through the object API (no pyplot
global state, so charts can be drawn from any thread). Every symmetric pair of quantile keys
the output holds, ``(q, 1 - q)``, is a band: the ``0.1``/``0.9`` pair is the 80% band, the
``0.25``/``0.75`` pair the 50% band. Bands are opaque, widest and lightest first, so each
band's colour is exactly :func:`band_colors`'s wherever it shows (the tests look for those
pixels). Missing values (NaN) leave gaps; an empty or short history just draws less.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from batchcast.errors import ConfigError
from batchcast.io import write_bytes_atomic
from batchcast.report.reading import (
    ForecastLine,
    SeriesLine,
    count_lines,
    different_items,
    iter_forecasts,
    iter_series,
    pair_files,
    peek_usable,
)

__all__ = [
    "ACTUAL_COLOR",
    "DEFAULT_ITEMS",
    "FORMATS",
    "HISTORY_COLOR",
    "MEDIAN_COLOR",
    "Panel",
    "band_colors",
    "band_pairs",
    "collect_panels",
    "default_positions",
    "fan_chart",
    "parse_items",
    "plot_forecasts",
    "render",
]

FORMATS = ("png", "svg", "pdf")
DEFAULT_ITEMS = 6  # panels when no --items are given, spread evenly over the input
MAX_BANDS = 5
# Blues, light to dark (ColorBrewer): the widest band takes the lightest used shade.
_BLUES = ("#deebf7", "#c6dbef", "#9ecae1", "#6baed6", "#4292c6")
MEDIAN_COLOR = "#08306b"
MEAN_COLOR = "#6a51a3"
HISTORY_COLOR = "#404040"
ACTUAL_COLOR = "#d62728"
_COLUMNS = 3
_PANEL_INCHES = (5.0, 3.0)


@dataclass(frozen=True)
class Panel:
    """One series to draw.

    Attributes:
        title: the panel's title (``item_id``, or the file and line).
        history: (T,) the input's target (NaN: missing); the last points are drawn.
        quantiles: quantile key -> (P,) forecast; None when there is no forecast.
        mean: (P,) forecast mean, or None.
        actual: (P,) the actual values over the horizon (NaN: missing), or None.
        note: shown in the panel instead of a forecast (e.g. the line's record error).
    """

    title: str
    history: np.ndarray
    quantiles: Mapping[str, np.ndarray] | None = None
    mean: np.ndarray | None = None
    actual: np.ndarray | None = None
    note: str | None = None


def band_pairs(keys: Sequence[str]) -> list[tuple[str, str, float]]:
    """The symmetric pairs of quantile keys, widest first: ``(lower, upper, coverage)``.

    At most ``MAX_BANDS`` (the innermost are dropped). ``coverage`` is ``upper - lower``
    (0.8 for ``0.1``/``0.9``).
    """
    levels = {k: float(k) for k in keys}
    pairs = []
    for lo, q in levels.items():
        if q >= 0.5:
            continue
        hi = next((k for k, v in levels.items() if abs(q + v - 1.0) < 1e-9), None)
        if hi is not None:
            pairs.append((lo, hi, levels[hi] - q))
    pairs.sort(key=lambda p: -p[2])
    return pairs[:MAX_BANDS]


def band_colors(n: int) -> list[str]:
    """The fill colours of ``n`` bands, widest (lightest) first."""
    n = min(n, MAX_BANDS)
    return list(_BLUES[len(_BLUES) - n :]) if n else []


def _median_key(keys: Sequence[str]) -> str | None:
    return next((k for k in keys if float(k) == 0.5), None)


def _isolated(values: np.ndarray) -> np.ndarray:
    """(T,) bool: observed points with no observed neighbour (a line through them is
    invisible)."""
    observed = ~np.isnan(values)
    padded = np.concatenate([[False], observed, [False]])
    return observed & ~padded[:-2] & ~padded[2:]


def _draw(ax: Any, panel: Panel, history_points: int | None) -> None:
    horizon = 0
    if panel.quantiles:
        horizon = len(next(iter(panel.quantiles.values())))
    elif panel.mean is not None:
        horizon = panel.mean.size
    keep = history_points if history_points is not None else max(4 * horizon, 48)
    history = np.asarray(panel.history, dtype=np.float64)[-keep:] if keep else np.zeros(0)
    # x = steps relative to the first forecast step: history at -T..-1, forecast at 0..P-1
    if history.size:
        x = np.arange(-history.size, 0)
        ax.plot(x, history, color=HISTORY_COLOR, lw=1.0, label="history")
        alone = _isolated(history)  # a line needs two neighbours: mark lone points
        if alone.any():
            ax.plot(x[alone], history[alone], ls="none", marker=".", ms=4, color=HISTORY_COLOR)
    steps = np.arange(horizon)
    if panel.quantiles:
        pairs = band_pairs(list(panel.quantiles))
        for (lo, hi, coverage), color in zip(pairs, band_colors(len(pairs)), strict=True):
            ax.fill_between(steps, panel.quantiles[lo], panel.quantiles[hi], color=color,
                            lw=0, label=f"{coverage:.0%} band")  # fmt: skip
        median = _median_key(list(panel.quantiles))
        if median is not None:
            ax.plot(steps, panel.quantiles[median], color=MEDIAN_COLOR, lw=1.5, label="median")
    if panel.mean is not None:
        ax.plot(steps, panel.mean, color=MEAN_COLOR, lw=1.0, ls="--", label="mean")
    if panel.actual is not None and horizon:
        ax.plot(steps, panel.actual, color=ACTUAL_COLOR, lw=1.0, marker=".", ms=3,
                label="actual")  # fmt: skip
    if panel.note:
        ax.text(0.5, 0.5, panel.note, transform=ax.transAxes, ha="center", va="center",
                wrap=True, fontsize=8, color="#7f0000")  # fmt: skip
    if horizon:
        ax.axvline(-0.5, color="#999999", lw=0.8, ls=":")
    ax.set_title(panel.title, fontsize=9)
    ax.tick_params(labelsize=7)
    ax.set_xlabel("steps from the forecast start", fontsize=7)


def fan_chart(panels: Sequence[Panel], *, history_points: int | None = None) -> Any:
    """Draw panels on one figure (a grid, three across).

    Args:
        panels: the series to draw, in order.
        history_points: how many history points to show (default 4 x the horizon, >= 48).

    Returns:
        The ``matplotlib.figure.Figure`` (Agg canvas).

    Raises:
        ConfigError: when there is no panel.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not panels:
        raise ConfigError("nothing to plot: no series selected")
    columns = min(_COLUMNS, len(panels))
    rows = math.ceil(len(panels) / columns)
    fig = Figure(figsize=(_PANEL_INCHES[0] * columns, _PANEL_INCHES[1] * rows), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, columns, squeeze=False)
    for ax, panel in zip(axes.flat, panels, strict=False):
        _draw(ax, panel, history_points)
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    handles: dict[str, Any] = {}
    for ax in axes.flat:  # one legend for the figure: the union of what panels show
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    bottom = 0.0
    if handles:
        ncol = min(len(handles), 4 * columns)  # about four entries per panel's width
        legend_rows = math.ceil(len(handles) / ncol)
        bottom = 0.28 * legend_rows / fig.get_figheight()  # ~0.28 inch per legend row
        fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=ncol,
                   fontsize=8, frameon=False)  # fmt: skip
    fig.tight_layout(rect=(0, bottom, 1, 1))
    return fig


def render(
    panels: Sequence[Panel], *, fmt: str = "png", history_points: int | None = None
) -> bytes:
    """The fan chart of ``panels`` as PNG, SVG or PDF bytes.

    Raises:
        ConfigError: for an unknown format or no panel.
    """
    if fmt not in FORMATS:
        raise ConfigError(f"chart format must be one of {list(FORMATS)}, got {fmt!r}")
    fig = fan_chart(panels, history_points=history_points)
    buffer = io.BytesIO()
    # A fixed creation date and no software stamp: the same chart gives the same bytes.
    metadata = {"png": {"Software": None}, "svg": {"Date": None}, "pdf": {"CreationDate": None}}
    fig.savefig(buffer, format=fmt, metadata=metadata[fmt])
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------
# Choosing and reading the series to plot


def parse_items(text: str) -> list[int | str]:
    """``--items 0,5,item-42``: an integer is a 0-based record position (over the input's
    files in order: line number - 1 in a single file); anything else is an ``item_id``."""
    items: list[int | str] = []
    for token in (t.strip() for t in text.split(",")):
        if not token:
            continue
        items.append(int(token) if token.lstrip("-").isdigit() else token)
    if not items:
        raise ConfigError(f"--items names no item: {text!r}")
    return items


def default_positions(total: int, count: int = DEFAULT_ITEMS) -> list[int]:
    """``count`` record positions spread evenly over ``total`` records (first and last
    included)."""
    if total <= 0:
        return []
    return sorted({round(float(x)) for x in np.linspace(0, total - 1, min(count, total))})


@dataclass
class _Chosen:
    key: str
    position: int
    forecast: ForecastLine
    input: SeriesLine
    actual: np.ndarray | None = None


def _records(pairs: Sequence[tuple[str, str, str]]) -> Iterator[tuple[int, str, ForecastLine,
                                                                     SeriesLine]]:  # fmt: skip
    position = 0
    for key, forecasts, series in pairs:
        for f, s in zip(iter_forecasts(forecasts), iter_series(series), strict=False):
            yield position, key, f, s
            position += 1


def _attach_actuals(chosen: list[_Chosen], actuals: str, forecasts: str) -> None:
    """Fill each chosen item's actual horizon (aligned as ``evaluate`` aligns)."""
    by_key: dict[str, list[_Chosen]] = {}
    for c in chosen:
        by_key.setdefault(c.key, []).append(c)
    pairs = {p.key: p.series for p in pair_files(forecasts, actuals, what="actuals")}
    if len(pairs) == 1 and len(by_key) == 1:  # single files pair whatever their names
        pairs = {next(iter(by_key)): next(iter(pairs.values()))}
    for key, items in by_key.items():
        uri = pairs.get(key)
        if uri is None:
            continue
        want_line = {c.input.line: c for c in items}
        want_id = {c.input.item_id or c.forecast.item_id: c for c in items}
        first, lines = peek_usable(iter_series(uri), lambda a: a.error is None)
        by_id = first is not None and first.item_id is not None and None not in want_id
        for a in lines:
            match = want_id.get(a.item_id) if by_id else want_line.get(a.line)
            if match is None or a.target is None or match.forecast.quantiles is None:
                continue
            wanted = match.input.item_id or match.forecast.item_id
            if not by_id and different_items(a.item_id, wanted):
                continue  # paired by line with another series' actuals: draw none
            n = 0 if match.input.target is None else match.input.target.size
            horizon = len(next(iter(match.forecast.quantiles.values())))
            future = a.target[n : n + horizon].astype(np.float64)
            match.actual = np.concatenate([future, np.full(horizon - future.size, np.nan)])


def collect_panels(
    input: str,
    forecasts: str,
    *,
    actuals: str | None = None,
    items: Sequence[int | str] | None = None,
) -> list[Panel]:
    """Read the panels of the chosen series from a transform's input, output and actuals.

    Args:
        input: the transform's input (file, folder, glob, prefix).
        forecasts: its output (a ``.out`` file or the output folder).
        actuals: optional full series to draw over the horizon (aligned by ``item_id``
            when both carry one, by line otherwise).
        items: 0-based positions and/or ``item_id`` values; default ``DEFAULT_ITEMS``
            positions spread over the input.

    Returns:
        One panel per chosen series, in input order.

    Raises:
        ConfigError: when nothing pairs, or a requested item does not exist.
    """
    pairs = [
        (p.key, p.forecasts, p.series)
        for p in pair_files(forecasts, input, what="input")
        if p.forecasts and p.series
    ]
    if not pairs:
        raise ConfigError(f"no output file of {forecasts!r} pairs with an input of {input!r}")
    if items is None:
        items = default_positions(sum(count_lines(s) for _, _, s in pairs))
    positions = {i for i in items if isinstance(i, int)}
    ids = {i for i in items if isinstance(i, str)}
    chosen: list[_Chosen] = []
    found_ids: set[str] = set()
    last = max(positions, default=-1)
    for position, key, f, s in _records(pairs):
        item_id = s.item_id or f.item_id
        if position in positions or (item_id is not None and item_id in ids):
            chosen.append(_Chosen(key, position, f, s))
            if item_id in ids:
                found_ids.add(item_id)
        if position >= last and found_ids == ids:
            break  # everything asked for is in hand
    missing = [str(p) for p in sorted(positions - {c.position for c in chosen})]
    missing += sorted(ids - found_ids)
    if missing:
        raise ConfigError(f"--items: no such record in {input!r}: {', '.join(missing)}")
    if actuals is not None:
        _attach_actuals(chosen, actuals, forecasts)
    several = len(pairs) > 1
    return [_panel(c, several) for c in chosen]


def _panel(c: _Chosen, several_files: bool) -> Panel:
    item_id = c.input.item_id or c.forecast.item_id
    where = f"{c.key}:{c.input.line}" if several_files else f"line {c.input.line}"
    title = f"{item_id} ({where})" if item_id else where
    history = c.input.target if c.input.target is not None else np.zeros(0)
    note = None
    if c.input.error:
        note = f"bad input line: {c.input.error}"
    elif c.forecast.error:
        note = c.forecast.error
    if note and len(note) > 160:
        note = note[:157] + "..."
    return Panel(
        title=title,
        history=history,
        quantiles=c.forecast.quantiles,
        mean=c.forecast.mean,
        actual=c.actual,
        note=note,
    )


def plot_forecasts(
    input: str,
    forecasts: str,
    path: str,
    *,
    actuals: str | None = None,
    items: Sequence[int | str] | None = None,
    history_points: int | None = None,
) -> list[Panel]:
    """Draw the chosen series' fan charts to ``path`` (local or ``s3://``; PNG, SVG or PDF
    by its extension).

    Args:
        input, forecasts, actuals, items: as for :func:`collect_panels`.
        path: where the chart goes.
        history_points: history points per panel (default 4 x the horizon, >= 48).

    Returns:
        The panels drawn.

    Raises:
        ConfigError: for an unknown extension, or as :func:`collect_panels`.
    """
    fmt = path.rsplit(".", 1)[-1].lower() if "." in path else ""
    if fmt not in FORMATS:
        raise ConfigError(f"chart path must end in .png, .svg or .pdf, got {path!r}")
    panels = collect_panels(input, forecasts, actuals=actuals, items=items)
    write_bytes_atomic(path, render(panels, fmt=fmt, history_points=history_points))
    return panels
