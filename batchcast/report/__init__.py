"""Judging forecasts: ``evaluate`` (metrics against actuals), fan charts, the HTML report.

Imports ``io``, ``forecast.metrics`` and ``forecast.config``; never torch or Ray. Names are
imported lazily: matplotlib is only loaded when a chart is drawn.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from batchcast.report.evaluate import Evaluation, evaluate, resolve_seasonality
    from batchcast.report.html import report_for_job, write_report
    from batchcast.report.plots import Panel, fan_chart, plot_forecasts

_LAZY = {
    "Evaluation": "evaluate",
    "evaluate": "evaluate",
    "resolve_seasonality": "evaluate",
    "report_for_job": "html",
    "write_report": "html",
    "Panel": "plots",
    "fan_chart": "plots",
    "plot_forecasts": "plots",
}

__all__ = [
    "Evaluation",
    "Panel",
    "evaluate",
    "fan_chart",
    "plot_forecasts",
    "report_for_job",
    "resolve_seasonality",
    "write_report",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"batchcast.report.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'batchcast.report' has no attribute {name!r}")
