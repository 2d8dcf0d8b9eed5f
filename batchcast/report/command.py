"""The ``evaluate``, ``plot`` and ``backtest`` subcommands: argument parsing and printing.

Registering them costs nothing at start-up: everything heavier than argparse and orjson
(``io``'s boto3, matplotlib, Ray) is imported by the command that needs it.

``cli.py`` registers them with :func:`add_parsers`; each parser sets ``func``, which takes
the parsed arguments and returns the exit status (a :class:`BatchcastError` it raises is
turned into ``Type: message`` by ``cli.main``). The work is done by
:func:`batchcast.report.evaluate.evaluate`, :func:`batchcast.report.plots.plot_forecasts`
and :func:`batchcast.runner.backtest.backtest`.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import Any

import orjson

from batchcast.errors import ConfigError

__all__ = ["add_parsers", "format_evaluation"]

_HEADLINE = ("mean_wQuantileLoss", "RMSE", "NRMSE", "ND", "MASE", "sMAPE", "MSIS",
             "MAE_Coverage")  # fmt: skip
_MAX_PROBLEMS_SHOWN = 10


def _items(value: str) -> list[int | str]:
    from batchcast.report.plots import parse_items

    try:
        return parse_items(value)
    except ConfigError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {number}")
    return number


def _value(value: float) -> str:
    return f"{value:.6g}" if value == value else "nan"  # NaN != NaN


def format_evaluation(evaluation: Any) -> str:
    """The metrics as a plain-text table (what ``evaluate`` prints without ``--json``)."""
    metrics = evaluation.metrics
    lines = [
        f"series scored: {evaluation.series:,}   lines skipped: {evaluation.skipped:,}   "
        f"seasonality: {evaluation.seasonality} ({evaluation.seasonality_source})"
    ]
    if evaluation.msis_interval:
        lines.append(f"MSIS interval: {' - '.join(evaluation.msis_interval)}")
    width = max(len(k) for k in _HEADLINE)
    lines.append("")
    lines += [f"{k:<{width}}  {_value(metrics[k])}" for k in _HEADLINE if k in metrics]
    lines.append("")
    lines.append(f"{'quantile':<10}{'wQuantileLoss':>16}{'Coverage':>12}")
    for q in evaluation.quantiles:
        lines.append(
            f"{q:<10}{_value(metrics[f'wQuantileLoss[{q}]']):>16}"
            f"{_value(metrics[f'Coverage[{q}]']):>12}"
        )
    alignments = sorted({f["alignment"] for f in evaluation.files if f["alignment"]})
    lines.append("")
    lines.append(f"alignment: {', '.join(alignments)}")
    return "\n".join(lines)


def _print_problems(problems: list[dict[str, Any]], skipped: int) -> None:
    for p in problems[:_MAX_PROBLEMS_SHOWN]:
        print(f"skipped {p['uri']}:{p['line']}: {p['reason']}", file=sys.stderr)
    if skipped > _MAX_PROBLEMS_SHOWN:
        print(f"... and {skipped - _MAX_PROBLEMS_SHOWN:,} more skipped", file=sys.stderr)


@contextlib.contextmanager
def _per_series(path: str | None) -> Iterator[Callable[[dict[str, Any]], None] | None]:
    """A callback writing each series' metrics as a JSON line to ``path`` (atomically)."""
    if path is None:
        yield None
        return
    from batchcast.io import open_sink

    with open_sink(path) as sink:
        # orjson writes NaN and inf as null: JSON has neither.
        yield lambda row: sink.write(orjson.dumps(row) + b"\n")


def _print_result(evaluation: Any, *, as_json: bool, extra: dict[str, Any] | None = None) -> None:
    if as_json:
        data = {**evaluation.to_dict(), **(extra or {})}
        sys.stdout.buffer.write(orjson.dumps(data, option=orjson.OPT_INDENT_2) + b"\n")
        sys.stdout.flush()
    else:
        print(format_evaluation(evaluation))
    _print_problems(evaluation.problems, evaluation.skipped)


# ---------------------------------------------------------------------------------------------
# Commands


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from batchcast.report.evaluate import evaluate

    with _per_series(args.per_series) as on_series:
        evaluation = evaluate(
            args.actuals,
            args.forecasts,
            input=args.input,
            seasonality=args.seasonality,
            freq=args.freq,
            model=args.model,
            on_series=on_series,
            workers=args.workers,
        )
    _print_result(evaluation, as_json=args.json)
    if args.report:
        from batchcast.report.html import charts_for, write_report
        from batchcast.report.plots import collect_panels

        charts = []
        if args.input:
            panels = collect_panels(
                args.input, args.forecasts, actuals=args.actuals, items=args.items
            )
            charts = charts_for(panels)
        write_report(
            args.report,
            summary=None,
            metrics=evaluation,
            charts=charts,
            title=f"evaluation of {args.forecasts}",
            notes=[] if args.input else ["No fan charts: they need --input (the history)."],
        )
        print(f"report: {args.report}", file=sys.stderr)
    return 0


def _cmd_plot(args: argparse.Namespace) -> int:
    from batchcast.report.plots import plot_forecasts

    panels = plot_forecasts(
        args.input,
        args.forecasts,
        args.output,
        actuals=args.actuals,
        items=args.items,
        history_points=args.history,
    )
    print(f"{args.output}: {len(panels)} panel(s): {', '.join(p.title for p in panels)}")
    return 0


def _cmd_backtest(args: argparse.Namespace) -> int:
    from batchcast.runner.backtest import backtest

    options = {
        "workers": args.workers,
        "gpus_per_worker": args.gpus_per_worker,
        "on_error": args.on_error,
        "seed": args.seed,
        "shard_mb": args.shard_mb,
        "pipeline": args.pipeline,
        "batch_strategy": args.batch_strategy,
        "max_payload_mb": args.max_payload_mb,
        "name": args.job_name,
        "inference": args.inference_config,
    }
    with _per_series(args.per_series) as on_series:
        result = backtest(
            args.model,
            args.data,
            work_dir=args.work_dir,
            seasonality=args.seasonality,
            on_series=on_series,
            progress=args.progress,
            report=args.report,
            items=args.items,
            **{k: v for k, v in options.items() if v is not None},
        )
    summary = result.summary
    job = {"status": summary.status, "counts": summary.counts, "timings": summary.timings}
    if not args.json:
        print(
            f"transform: {summary.status}, {summary.counts.get('series', 0):,} series, "
            f"{summary.counts.get('record_errors', 0):,} record error(s), "
            f"{summary.timings.get('total_s', 0.0):.1f}s; withheld {result.withheld} points",
            file=sys.stderr,
        )
    _print_result(result.evaluation, as_json=args.json, extra={"transform": job})
    if args.report:
        print(f"report: {args.report}", file=sys.stderr)
    return 0


# ---------------------------------------------------------------------------------------------
# Parsers


def _add_evaluate(sub: Any) -> None:
    e = sub.add_parser(
        "evaluate",
        help="score a transform's output against the actual series (GluonTS metrics)",
        description=(
            "Score forecasts against actuals with GluonTS Evaluator definitions: "
            "mean wQuantileLoss and per quantile, RMSE, MASE, sMAPE, coverage, MSIS. "
            "Lines are aligned by item_id when the actuals and the forecasts (or the input) "
            "carry one, by order otherwise. See docs/evaluate.md."
        ),
    )
    e.add_argument(
        "--actuals", required=True, help="full series (history + horizon): file, folder, s3://"
    )
    e.add_argument(
        "--forecasts", required=True, help="a transform's .out file or its output folder"
    )
    e.add_argument(
        "--input",
        help="the transform's input: each horizon starts right after its target "
        "(default: the horizon is the actual series' last prediction_length points)",
    )
    e.add_argument(
        "--seasonality",
        type=_positive,
        help="MASE's seasonal lag m (default: from --freq, --model or the job's model; else 1)",
    )
    e.add_argument("--freq", help="the data's time_freq (H, D, 5min, ...) for the default m")
    e.add_argument("--model", help="a model whose time_freq gives the default m")
    e.add_argument("--json", action="store_true", help="print the full result as JSON")
    e.add_argument("--per-series", metavar="PATH", help="write per-series metrics as JSON Lines")
    e.add_argument("--report", metavar="PATH", help="also write a self-contained HTML report")
    e.add_argument(
        "--items", type=_items, help="series charted in the report (needs --input), as plot's"
    )
    e.add_argument(
        "--workers",
        type=_positive,
        help="score files in this many Ray tasks at once (default: in this process); the "
        "result is the same",
    )
    e.set_defaults(func=_cmd_evaluate)


def _add_plot(sub: Any) -> None:
    p = sub.add_parser(
        "plot",
        help="draw fan charts: history, median, quantile bands, actuals",
        description=(
            "Fan charts, one panel per series: the history, the median, a band per "
            "symmetric pair of quantiles (0.1/0.9: 80%), the mean, and the actuals when "
            "given. The format follows the output's extension."
        ),
    )
    p.add_argument("--input", required=True, help="the transform's input (the history)")
    p.add_argument("--forecasts", required=True, help="its .out file or output folder")
    p.add_argument("--actuals", help="full series, drawn over the horizon")
    p.add_argument(
        "--items",
        type=_items,
        help="comma-separated: integers are 0-based record positions (line - 1), anything "
        "else an item_id; default 6 spread over the input",
    )
    p.add_argument(
        "-o", "--output", default="fan.png", help="chart file: .png, .svg or .pdf (default fan.png)"
    )
    p.add_argument(
        "--history",
        type=_positive,
        help="history points per panel (default 4 x the horizon, at least 48)",
    )
    p.set_defaults(func=_cmd_plot)


def _add_backtest(sub: Any) -> None:
    b = sub.add_parser(
        "backtest",
        help="withhold the last prediction_length points, transform, evaluate",
        description=(
            "Withhold each series' last prediction_length points, forecast them with a "
            "transform job (Ray, the transform's options), and score them like evaluate."
        ),
    )
    b.add_argument("--model", required=True, help="model folder or model.tar.gz (local or s3://)")
    b.add_argument("--data", required=True, help="full series: file, folder, glob or s3://")
    b.add_argument(
        "--work-dir",
        help="where input/ and output/ go (local or s3://; default a temporary folder)",
    )
    b.add_argument("--seasonality", type=_positive, help="MASE's m (default: the model's freq)")
    b.add_argument("--json", action="store_true", help="print the full result as JSON")
    b.add_argument("--per-series", metavar="PATH", help="write per-series metrics as JSON Lines")
    b.add_argument("--report", metavar="PATH", help="also write a self-contained HTML report")
    b.add_argument("--items", type=_items, help="series charted in the report, as plot's")
    t = b.add_argument_group("transform options")
    t.add_argument(
        "--workers", type=int, help="model workers (default MODEL_SERVER_WORKERS or one per CPU)"
    )
    t.add_argument("--gpus-per-worker", type=float, help="GPUs per worker (default 0: CPU)")
    t.add_argument(
        "--on-error",
        choices=["fail-file", "record", "fail-fast"],
        help="default record here: a bad line costs one series, not its file",
    )
    t.add_argument("--seed", type=int, help="job seed (default 0)")
    t.add_argument(
        "--inference-config",
        help="DEEPAR_INFERENCE_CONFIG as JSON (its quantiles must include 0.5)",
    )
    t.add_argument(
        "--batch-strategy",
        choices=["SingleRecord", "MultiRecord"],
        help="BatchStrategy (records are vectorised either way)",
    )
    t.add_argument("--max-payload-mb", type=float, help="largest record in MB (1-100, default 6)")
    t.add_argument("--shard-mb", type=float, help="target shard size in MB (default 4)")
    t.add_argument("--pipeline", choices=["auto", "fused", "split"], help="default auto")
    t.add_argument("--job-name", help="the transform job's name; default generated")
    t.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="the transform's progress bar (default off)",
    )
    b.set_defaults(func=_cmd_backtest)


def add_parsers(subparsers: Any) -> None:
    """Register ``evaluate``, ``plot`` and ``backtest`` on ``subparsers`` (the object
    ``ArgumentParser.add_subparsers()`` returns); each sets ``func(args) -> int``."""
    _add_evaluate(subparsers)
    _add_plot(subparsers)
    _add_backtest(subparsers)
