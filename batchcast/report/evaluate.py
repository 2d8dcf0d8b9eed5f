"""``batchcast evaluate``: score a transform's output against the actual series.

The actuals hold each full series (history and the forecast horizon, like SageMaker's test
channel); the forecasts are a transform's output (a ``.out`` file, or an output folder whose
``<relpath>.out`` files answer the input files ``<relpath>``).

Alignment, per pair of files:

- **by ``item_id``** when the first actual record and the first forecast record (or, with
  ``input``, the first input record) both carry an ``item_id`` (forward it with
  ``transform --forward-fields item_id``); two records without one on the same line (bad
  lines, typically) pair with each other;
- **by order** otherwise: forecast line *i* answers actual line *i*.

A forecast line always answers the input line with its number (the transform's contract), so
``input`` is zipped with the forecasts by order.

Where the horizon is: with ``input``, it starts right after the input's target (``n``
points): actual points ``n .. n + P - 1`` (missing ones, past the end of the actual
series, are NaN and skipped as NaN actuals are), and the history for MASE and MSIS's scale
is the actual series' first ``n`` points, whose ``start`` must equal the input's. Without
``input``, the horizon is the actual series' last ``P`` points and the history is what
precedes them.

Memory is bounded: lines are streamed and scored in blocks of ``BLOCK_SERIES`` series,
folding each into running totals (:class:`batchcast.forecast.metrics.MetricTotals`). Matching
by ``item_id`` holds only the records whose partner has not been read yet: none when both
files are in the same order, as a transform's output is.
"""

from __future__ import annotations

import itertools
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import orjson

from batchcast.errors import BatchcastError, ConfigError
from batchcast.forecast.frequency import parse_frequency
from batchcast.forecast.metrics import MetricTotals, msis_pair
from batchcast.forecast.metrics import seasonality as default_seasonality
from batchcast.io import join_uri, open_range
from batchcast.report.reading import (
    ForecastLine,
    SeriesLine,
    different_items,
    iter_forecasts,
    iter_series,
    pair_files,
    peek_usable,
)
from batchcast.report.scoring import BLOCK_SERIES, MAX_PROBLEMS, Problems, RowCallback, Scorer

__all__ = [
    "BLOCK_SERIES",
    "MAX_PROBLEMS",
    "Evaluation",
    "evaluate",
    "model_frequency",
    "resolve_seasonality",
]

# The job summary a transform writes beside its outputs (runner.driver.SUMMARY_NAME; not
# imported: the runner imports Ray) and a model folder's configuration
# (forecast.artifacts.CONFIG_NAME; not imported: artifacts imports torch).
_JOB_SUMMARY = "_batchcast_summary.json"
_MODEL_CONFIG = "config.json"


@dataclass(frozen=True)
class Evaluation:
    """What :func:`evaluate` found.

    Attributes:
        metrics: the aggregate metrics, GluonTS's names (``mean_wQuantileLoss``, ``RMSE``,
            ``MASE``, ``sMAPE``, ``MSIS``, ``wQuantileLoss[0.1]``, ``Coverage[0.1]``, ...).
        quantiles: the output's quantile keys, in level order.
        msis_interval: the quantile keys (lower, upper) MSIS used, or None.
        seasonality: the seasonal-naive lag of MASE and MSIS's scale.
        seasonality_source: where it came from (``"given"``, ``"time_freq H"``, ...).
        series: how many series were scored.
        skipped: how many lines could not be scored (each is in ``problems``, up to
            ``MAX_PROBLEMS``).
        problems: ``{"uri", "line", "reason"}`` per skipped line, first ones.
        files: per pair of files: ``{"forecasts", "actuals", "input", "alignment",
            "series", "skipped", "actuals_not_forecast"}`` (``forecasts`` or ``actuals``
            None when that side has no file; ``actuals_not_forecast``: actual series that
            no forecast's ``item_id`` asked for).
    """

    metrics: dict[str, float]
    quantiles: tuple[str, ...]
    msis_interval: tuple[str, str] | None
    seasonality: int
    seasonality_source: str
    series: int
    skipped: int
    problems: list[dict[str, Any]] = field(default_factory=list)
    files: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (NaN and inf become None: JSON has neither)."""
        return {
            "metrics": {k: _json_number(v) for k, v in self.metrics.items()},
            "quantiles": list(self.quantiles),
            "msis_interval": list(self.msis_interval) if self.msis_interval else None,
            "seasonality": self.seasonality,
            "seasonality_source": self.seasonality_source,
            "series": self.series,
            "skipped": self.skipped,
            "problems": self.problems,
            "files": self.files,
        }


def _json_number(value: float) -> float | None:
    return value if np.isfinite(value) else None


# ---------------------------------------------------------------------------------------------
# Seasonality


def model_frequency(model: str) -> str:
    """A batchcast model's ``time_freq``, read from its configuration alone (no torch).

    Args:
        model: a model folder or ``model.tar.gz``, local or ``s3://``.

    Raises:
        ConfigError: when the configuration cannot be read or holds no frequency.
    """
    try:
        if model.endswith((".tar.gz", ".tgz")):
            with (
                open_range(model, compressed=False) as stream,
                tarfile.open(fileobj=stream, mode="r|gz") as tar,
            ):
                raw = next(
                    (
                        tar.extractfile(m).read()  # type: ignore[union-attr]  # a file member
                        for m in tar
                        if m.isfile() and m.name.lstrip("./") == _MODEL_CONFIG
                    ),
                    None,
                )
            if raw is None:
                raise ConfigError(f"{model} holds no {_MODEL_CONFIG}")
        else:
            with open_range(join_uri(model, _MODEL_CONFIG)) as stream:
                raw = stream.read()
        freq = orjson.loads(raw)["spec"]["freq"]
    except (BatchcastError, OSError, tarfile.TarError, orjson.JSONDecodeError) as err:
        raise ConfigError(f"cannot read the frequency of model {model!r}: {err}") from err
    except (KeyError, TypeError) as err:
        raise ConfigError(f"model {model!r}: its {_MODEL_CONFIG} names no spec.freq") from err
    return str(freq)


def _job_model(forecasts: str) -> str | None:
    """The model named by the job summary beside ``forecasts``, if there is one."""
    if forecasts.endswith(".out"):  # one output file: the summary is in its folder
        folder = forecasts.rsplit("/", 1)[0] if "/" in forecasts else "."
    else:
        folder = forecasts
    try:
        with open_range(join_uri(folder, _JOB_SUMMARY)) as stream:
            model = orjson.loads(stream.read())["job"]["model"]
    except (BatchcastError, OSError, orjson.JSONDecodeError, KeyError, TypeError):
        return None  # no summary there: the frequency stays unknown
    return model if isinstance(model, str) else None


def resolve_seasonality(
    *,
    seasonality: int | None = None,
    freq: str | None = None,
    model: str | None = None,
    forecasts: str | None = None,
) -> tuple[int, str]:
    """MASE's seasonality, from the first of: ``seasonality``; ``freq``; ``model``'s
    frequency; the frequency of the model named by the job summary beside ``forecasts``;
    otherwise 1.

    Returns:
        ``(m, source)``, the source in words (for the output).

    Raises:
        ConfigError: for ``seasonality`` < 1, an invalid ``freq``, or a ``model`` whose
            configuration cannot be read.
    """
    if seasonality is not None:
        if seasonality < 1:
            raise ConfigError(f"seasonality must be >= 1, got {seasonality}")
        return seasonality, "given"
    source = "time_freq"
    if freq is None and model is not None:
        freq, source = model_frequency(model), f"model {model}"
    if freq is None and forecasts is not None:
        job_model = _job_model(forecasts)
        if job_model is not None:
            try:
                freq, source = model_frequency(job_model), f"the job's model {job_model}"
            except ConfigError:
                freq = None  # the model moved since the job ran: fall back to the default
    if freq is None:
        return 1, "default (no frequency known: pass --freq or --seasonality)"
    f = parse_frequency(freq)
    label = f"time_freq {f}" if source == "time_freq" else f"{source} (time_freq {f})"
    return default_seasonality(f.unit, f.multiple), label


# ---------------------------------------------------------------------------------------------
# Alignment


@dataclass(frozen=True)
class _Item:
    """One forecast with what evaluation needs from the input side."""

    forecast: ForecastLine
    item_id: str | None
    history: int | None  # the input's target length (None without input)
    start: str | None  # the input's start
    error: str | None


def _with_input(forecasts: Iterator[ForecastLine], inputs: Iterator[SeriesLine] | None,
                uri: str) -> Iterator[_Item]:  # fmt: skip
    if inputs is None:
        for f in forecasts:
            yield _Item(f, f.item_id, None, None, f.error)
        return
    for f, s in itertools.zip_longest(forecasts, inputs):
        if f is None or s is None:
            side = "input" if f is None else "forecasts"
            raise ConfigError(
                f"{uri}: the input and its forecasts have different line counts "
                f"(the {side} file has more lines)"
            )
        error = f.error or (f"input line: {s.error}" if s.error else None)
        history = None if s.target is None else int(s.target.size)
        yield _Item(f, f.item_id or s.item_id, history, s.start, error)


# An actual series no forecast asked for (matching by item_id): counted, not a problem, since
# the actuals may well hold more series than were forecast.
_NOT_FORECAST = "no forecast has this item_id"

_Pair = tuple[SeriesLine | None, _Item | None, str | None]  # (actual, forecast, problem)


def _by_order(actuals: Iterator[SeriesLine], items: Iterator[_Item]) -> Iterator[_Pair]:
    for a, f in itertools.zip_longest(actuals, items):
        if f is None:
            yield a, None, "no forecast line for this actual line (the forecasts are shorter)"
        elif a is None:
            yield None, f, "no actual line for this forecast line (the actuals are shorter)"
        elif different_items(a.item_id, f.item_id):
            # never score a forecast against another series' actuals, whatever the rule
            yield (
                a,
                f,
                (
                    f"paired by line order with the actual of item_id {a.item_id!r}, but the "
                    f"forecast is for item_id {f.item_id!r}"
                ),
            )
        else:
            yield a, f, None


def _by_item_id(actuals: Iterator[SeriesLine], items: Iterator[_Item]) -> Iterator[_Pair]:
    # Only records whose partner has not come yet are held: none when the orders agree.
    waiting_actual: dict[str, SeriesLine] = {}
    waiting_item: dict[str, _Item] = {}
    for a, f in itertools.zip_longest(actuals, items):
        if a is not None and f is not None and a.item_id is None and f.item_id is None:
            yield a, f, None  # neither has an id (bad lines, typically): pair them by line
            continue
        if a is not None:
            if a.item_id is None:
                yield a, None, "actual record has no item_id (alignment is by item_id)"
            elif a.item_id in waiting_item:
                yield a, waiting_item.pop(a.item_id), None
            elif a.item_id in waiting_actual:
                yield a, None, f"item_id {a.item_id!r} repeats in the actuals"
            else:
                waiting_actual[a.item_id] = a
        if f is not None:
            if f.item_id is None:
                yield None, f, "forecast has no item_id (alignment is by item_id)"
            elif f.item_id in waiting_actual:
                yield waiting_actual.pop(f.item_id), f, None
            elif f.item_id in waiting_item:
                yield None, f, f"item_id {f.item_id!r} repeats in the forecasts"
            else:
                waiting_item[f.item_id] = f
    for f in waiting_item.values():
        # Ids already paired are not remembered (memory would grow with the input), so a
        # repeat of one lands here too.
        yield (
            None,
            f,
            (
                f"no actual series with item_id {f.item_id!r} left to pair (none has it, or an "
                "earlier forecast line with this item_id took it)"
            ),
        )
    for a in waiting_actual.values():
        yield a, None, _NOT_FORECAST


# ---------------------------------------------------------------------------------------------
# Scoring (the scorer itself is batchcast.report.scoring)


def _horizon(a: SeriesLine, item: _Item, horizon: int) -> tuple[np.ndarray, np.ndarray] | str:
    """(history, horizon actuals) of one aligned pair, or why it cannot be scored."""
    assert a.target is not None
    target = a.target.astype(np.float64)
    if item.history is None:
        if target.size < horizon:
            return (
                f"the actual series has {target.size} points, fewer than the forecast's "
                f"{horizon} (without an input, the horizon is its last {horizon} points)"
            )
        return target[: target.size - horizon], target[target.size - horizon :]
    n = item.history
    if target.size < n:
        return f"the actual series has {target.size} points, fewer than the input's {n}"
    if item.start is not None and not _same_start(a.start, item.start):
        return f"the actual series starts at {a.start!r}, the input at {item.start!r}"
    future = target[n : n + horizon]
    if future.size < horizon:  # the actuals end inside the horizon: the rest is missing
        future = np.concatenate([future, np.full(horizon - future.size, np.nan)])
    return target[:n], future


def _same_start(a: str | None, b: str) -> bool:
    """Whether two starts are the same instant ("2024-01-01" is "2024-01-01 00:00:00")."""
    if a == b:
        return True
    try:
        return bool(np.datetime64(a, "s") == np.datetime64(b, "s"))
    except (TypeError, ValueError):
        return False


def _score_file(
    forecasts: str, actuals: str, input_uri: str | None, scorer: Scorer, problems: Problems
) -> str:
    """Align one output file with its actuals (and input) and score it; the alignment used."""
    items = _with_input(
        iter_forecasts(forecasts), iter_series(input_uri) if input_uri else None, forecasts
    )
    # Decided on the first readable record of each side: an error line (a bad input line
    # under --on-error record) carries no item_id, and must not switch the file to order.
    first_item, items = peek_usable(items, lambda item: item.error is None)
    first_actual, actual_lines = peek_usable(iter_series(actuals), lambda a: a.error is None)
    by_id = (
        first_item is not None
        and first_actual is not None
        and first_item.item_id is not None
        and first_actual.item_id is not None
    )
    for a, item, problem in (_by_item_id if by_id else _by_order)(actual_lines, items):
        if problem is _NOT_FORECAST:
            scorer.not_forecast += 1
            continue
        if a is not None and a.error and not (item is not None and item.error):
            problems.add(actuals, a.line, a.error)  # a bad actual: its own file and line
            continue
        reason = (item.error if item else None) or problem
        if reason is None and item is not None:
            reason = scorer.check(item.forecast)
        if reason is None and a is not None and item is not None:
            cut = _horizon(a, item, scorer.horizon)
            if not isinstance(cut, str):
                row = {"file": forecasts, "line": item.forecast.line,
                       "item_id": item.item_id or a.item_id}  # fmt: skip
                scorer.add(row, cut[0], cut[1], item.forecast)
                continue
            reason = cut
        if item is not None:
            problems.add(forecasts, item.forecast.line, reason or "unmatched")
        else:
            problems.add(actuals, a.line if a else 0, reason or "unmatched")
    scorer.flush()
    return "item_id" if by_id else "order"


@dataclass(frozen=True)
class _PairJob:
    """One pair of files to score: what a task (or this process) needs, picklable."""

    forecasts: str
    actuals: str
    input: str | None
    seasonality: int
    per_series: bool


@dataclass
class _PairScore:
    """One pair's result: small (totals, counts, the first problems, per-series rows only
    when asked for)."""

    alignment: str
    series: int
    not_forecast: int
    problems: Problems
    totals: MetricTotals | None
    order: list[str]
    levels: tuple[float, ...]
    with_mean: bool
    rows: list[dict[str, Any]]


def _score_pair(job: _PairJob, on_series: RowCallback | None = None) -> _PairScore:
    """Score one pair of files with a scorer of its own (module level: Ray pickles it).

    Per-series rows stream to ``on_series`` when given (in this process); otherwise, with
    ``job.per_series`` (in a task), they come back with the score.
    """
    rows: list[dict[str, Any]] = []
    scorer = Scorer(job.seasonality, on_series or (rows.append if job.per_series else None))
    problems = Problems()
    alignment = _score_file(job.forecasts, job.actuals, job.input, scorer, problems)
    return _PairScore(
        alignment, scorer.series, scorer.not_forecast, problems, scorer.totals,
        scorer.order, scorer.levels, scorer.with_mean, rows,
    )  # fmt: skip


def _fold(scorer: Scorer, problems: Problems, score: _PairScore, uri: str) -> int:
    """Fold one pair's score into the totals; the series it adds (0 when its quantile
    layout differs from the first scored file's: its series are then skipped)."""
    for kept in score.problems.kept:
        problems.add(kept["uri"], kept["line"], kept["reason"])
    problems.count += score.problems.count - len(score.problems.kept)
    scorer.not_forecast += score.not_forecast
    if score.totals is None:
        return 0
    layout = (score.order, score.with_mean)
    if scorer.totals is None:
        scorer.totals, scorer.order, scorer.levels = score.totals, score.order, score.levels
        scorer.keys, scorer.with_mean = tuple(score.order), score.with_mean
    elif layout != (scorer.order, scorer.with_mean):
        reason = (
            f"quantile keys {score.order} (mean: {score.with_mean}) differ from the first "
            f"file's {scorer.order} (mean: {scorer.with_mean})"
        )
        problems.add(uri, 0, reason)
        problems.count += score.series - 1
        return 0
    else:
        scorer.totals.merge(score.totals)
    scorer.series += score.series
    if scorer.on_series is not None:  # rows that came back from a task
        for row in score.rows:
            scorer.on_series(row)
    return score.series


def _scores(
    jobs: list[_PairJob], workers: int | None, on_series: RowCallback | None
) -> Iterator[_PairScore]:
    """Each job's score, in order: in this process, or in Ray tasks with ``workers``."""
    if workers is None or workers <= 1 or len(jobs) <= 1:
        return (_score_pair(job, on_series) for job in jobs)
    from batchcast.runner.tasks import map_ordered  # Ray only when asked for

    return map_ordered(_score_pair, [replace(j, per_series=on_series is not None) for j in jobs],
                       workers=workers)  # fmt: skip


def evaluate(
    actuals: str,
    forecasts: str,
    *,
    input: str | None = None,
    seasonality: int | None = None,
    freq: str | None = None,
    model: str | None = None,
    on_series: RowCallback | None = None,
    workers: int | None = None,
) -> Evaluation:
    """Score a transform's forecasts against the actual series (the module docstring has the
    alignment rules; ``batchcast.forecast.metrics`` the definitions).

    Args:
        actuals: file, folder, glob or ``s3://`` prefix of full series (history + horizon).
        forecasts: a ``.out`` file or a transform's output folder.
        input: the transform's input (file or folder); fixes where each horizon starts.
        seasonality: MASE's seasonal lag; see :func:`resolve_seasonality` for the default.
        freq: the data's ``time_freq``, for the default seasonality.
        model: a model whose frequency gives the default seasonality.
        on_series: called with each scored series' row (``file``, ``line``, ``item_id`` and
            every per-series metric), as soon as its file is scored.
        workers: score the pairs of files in this many Ray tasks at once (one CPU each; a
            private local Ray unless ``RAY_ADDRESS`` names a cluster). None or 1: in this
            process. The result is the same either way: each file is scored on its own and
            the totals are merged in file order.

    Returns:
        The aggregate metrics and what was skipped.

    Raises:
        ConfigError: when an input names nothing, no output file pairs with an actuals
            file, the forecasts lack the 0.5 quantile, or no series could be scored.
        ShardError: when a file cannot be read.
    """
    m, source = resolve_seasonality(
        seasonality=seasonality, freq=freq, model=model, forecasts=forecasts
    )
    pairs = pair_files(forecasts, actuals, what="actuals")
    if not any(p.forecasts and p.series for p in pairs):
        raise ConfigError(
            f"no forecast file pairs with an actuals file: forecasts {forecasts!r} "
            f"(<relpath>.out) vs actuals {actuals!r} (<relpath>)"
        )
    inputs: dict[str, str] = {}
    if input is not None:
        by_input = [p for p in pair_files(forecasts, input, what="input") if p.series]
        inputs = {p.key: p.series for p in by_input if p.series}
        if len(pairs) == 1 and len(by_input) == 1 and by_input[0].series:
            inputs = {pairs[0].key: by_input[0].series}  # single files pair whatever their names
    scorer = Scorer(m, on_series)
    problems = Problems()
    files = []
    jobs: list[_PairJob] = []
    for pair in pairs:
        entry: dict[str, Any] = {
            "forecasts": pair.forecasts,
            "actuals": pair.series,
            "input": inputs.get(pair.key),
            "alignment": None,
            "series": 0,
            "skipped": 0,
            "actuals_not_forecast": 0,
        }
        files.append(entry)
        if pair.forecasts is None or pair.series is None:
            continue  # listed with the missing side as None
        if input is not None and pair.key not in inputs:
            raise ConfigError(f"no input file pairs with the forecasts {pair.forecasts!r}")
        jobs.append(
            _PairJob(pair.forecasts, pair.series, inputs.get(pair.key), m, per_series=False)
        )
    entries = [e for e in files if e["forecasts"] is not None and e["actuals"] is not None]
    for entry, score in zip(entries, _scores(jobs, workers, on_series), strict=True):
        skipped = problems.count
        entry["alignment"] = score.alignment
        entry["series"] = _fold(scorer, problems, score, entry["forecasts"])
        entry["skipped"] = problems.count - skipped
        entry["actuals_not_forecast"] = score.not_forecast
    if scorer.totals is None or scorer.series == 0:
        first = problems.kept[0] if problems.kept else None
        detail = f"; first: {first['uri']}:{first['line']}: {first['reason']}" if first else ""
        raise ConfigError(f"no series could be scored ({problems.count} skipped){detail}")
    pair_at = msis_pair(scorer.levels)
    return Evaluation(
        metrics=scorer.totals.result(),
        quantiles=tuple(scorer.order),
        msis_interval=(scorer.order[pair_at[0]], scorer.order[pair_at[1]]) if pair_at else None,
        seasonality=m,
        seasonality_source=source,
        series=scorer.series,
        skipped=problems.count,
        problems=problems.kept,
        files=files,
    )
