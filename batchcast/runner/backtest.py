"""``batchcast backtest``: withhold each series' last ``prediction_length`` points, forecast
them with a real transform job, and score the forecasts against what was withheld.

One command from a model and a dataset to a metrics table, as SageMaker's test channel
does at training time, but through the same transform (Ray, every job option) that
production runs. The steps:

1. **withhold**: copy each data file to ``<work>/input/<relpath>`` with every record's
   ``target`` cut by ``P`` points (a record shorter than ``P`` keeps an empty target: a
   cold start scored on what it has). Everything else in the record stays, so
   ``dynamic_feat`` (``len(target)`` long in training data) is exactly
   ``len(cut) + P`` long, as inference wants. A line that is not a record with a
   ``target`` array is copied unchanged: the transform reports it at the same line.
2. **transform** ``<work>/input`` -> ``<work>/output`` with the given options (default
   ``on_error="record"``, so one bad line costs one series, not a file).
3. **evaluate** with the data as actuals and ``<work>/input`` as the input: the horizon is
   exactly the withheld points; MASE's seasonality comes from the model's frequency.
"""

from __future__ import annotations

import contextlib
import tempfile
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from batchcast.errors import ConfigError
from batchcast.io import join_uri, list_inputs, open_sink
from batchcast.models import load_spec
from batchcast.report.evaluate import Evaluation, evaluate
from batchcast.report.html import charts_for, write_report
from batchcast.report.plots import collect_panels
from batchcast.report.reading import iter_lines
from batchcast.runner.driver import JobSummary, run_transform
from batchcast.runner.job import TransformJob

__all__ = ["BacktestResult", "backtest", "withhold"]

DEFAULT_ON_ERROR = "record"


@dataclass(frozen=True)
class BacktestResult:
    """A backtest's metrics and the transform job behind them.

    Attributes:
        evaluation: the metrics (aggregate, what was skipped, per file).
        summary: the transform's job summary.
        input: where the withheld inputs were written.
        output: where the transform wrote the forecasts.
        withheld: how many points were withheld from each series (the model's horizon).
    """

    evaluation: Evaluation
    summary: JobSummary
    input: str
    output: str
    withheld: int


def _cut(line: bytes, horizon: int) -> bytes:
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        return line
    if not isinstance(record, dict) or not isinstance(record.get("target"), list):
        return line  # not a record with a target: the transform names what is wrong
    target = record["target"]
    record["target"] = target[: max(len(target) - horizon, 0)]
    return orjson.dumps(record)


def _gzip(chunks: Iterator[bytes]) -> Iterator[bytes]:
    packer = zlib.compressobj(wbits=31)  # 31: the gzip container, as a .gz reader expects
    for chunk in chunks:
        if out := packer.compress(chunk):
            yield out
    yield packer.flush()


def withhold(data: str, input_prefix: str, horizon: int) -> int:
    """Write ``data``'s files under ``input_prefix`` with ``horizon`` points cut from each
    target (module docstring, step 1); gzip files stay gzip.

    Args:
        data: file, folder, glob or ``s3://`` prefix of full series.
        input_prefix: local folder or ``s3://`` prefix for the copies.
        horizon: points to withhold (the model's ``prediction_length``).

    Returns:
        How many files were written.

    Raises:
        ConfigError: when ``data`` names nothing.
        ShardError: when a file cannot be read.
    """
    objects = list_inputs(data)
    for obj in objects:
        lines = (_cut(line, horizon) + b"\n" for line in iter_lines(obj.uri))
        chunks = _gzip(lines) if obj.compressed else lines
        with open_sink(join_uri(input_prefix, obj.relpath)) as sink:
            for chunk in chunks:
                sink.write(chunk)
    return len(objects)


def backtest(
    model: str,
    data: str,
    *,
    work_dir: str | None = None,
    seasonality: int | None = None,
    on_series: Callable[[dict[str, Any]], None] | None = None,
    progress: bool | None = False,
    job: Mapping[str, Any] | None = None,
    report: str | None = None,
    items: Sequence[int | str] | None = None,
    **transform_options: Any,
) -> BacktestResult:
    """Backtest ``model`` on ``data``: withhold, transform, evaluate (see the module docstring).

    Args:
        model: model folder or ``model.tar.gz`` (local or ``s3://``).
        data: file, folder, glob or ``s3://`` prefix of full series.
        work_dir: where the withheld inputs (``input/``) and the forecasts (``output/``)
            go, local or ``s3://`` (a cluster's workers must reach it); default a
            temporary folder, removed afterwards.
        seasonality: MASE's seasonality (default from the model's ``time_freq``).
        on_series: receives each scored series' metrics row (as :func:`evaluate`).
        progress: the transform's progress bar.
        job: an optional CreateTransformJob body for the transform (its input and output
            are replaced).
        report: write the HTML report (job summary, metrics, fan charts with the
            withheld actuals) here, local or ``s3://``.
        items: the series charted in the report (as ``batchcast plot --items``).
        **transform_options: any :class:`TransformJob` field (``workers``, ``seed``,
            ``inference``, ``on_error`` (default ``"record"``), ...).

    Returns:
        The metrics, the job summary and where the files went.

    Raises:
        ConfigError: for invalid options or data, or when no series could be scored.
        ModelError: when the model cannot be loaded.
        ShardError: as the transform.
    """
    spec = load_spec(model)
    transform_options.setdefault("on_error", DEFAULT_ON_ERROR)
    with contextlib.ExitStack() as stack:
        if work_dir is None:
            work_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="batchcast-bt-"))
        input_prefix, output_prefix = join_uri(work_dir, "input"), join_uri(work_dir, "output")
        withhold(data, input_prefix, spec.prediction_length)
        job_spec = TransformJob.create(
            model, input_prefix, output_prefix, body=job, **transform_options
        )
        summary = run_transform(job_spec, progress=progress)
        if summary.counts.get("files_committed", 0) == 0:
            raise ConfigError(
                f"the backtest's transform wrote no output ({summary.failure_reason}); "
                f"first record errors: {summary.errors[:3]}"
            )
        evaluation = evaluate(
            data,
            output_prefix,
            input=input_prefix,
            seasonality=seasonality,
            freq=spec.freq,
            on_series=on_series,
        )
        if report is not None:  # now: a temporary work_dir goes away on return
            panels = collect_panels(input_prefix, output_prefix, actuals=data, items=items)
            write_report(
                report,
                summary=summary.to_dict(),
                metrics=evaluation,
                charts=charts_for(panels),
                title=f"backtest of {model} on {data}",
            )
        return BacktestResult(evaluation, summary, input_prefix, output_prefix,
                              spec.prediction_length)  # fmt: skip
