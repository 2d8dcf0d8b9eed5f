"""The baselines batchcast is compared with, on the same weights and the same JSON Lines input.

Question: how fast does the default work unit run end to end (read JSON lines, forecast,
write mean + 9 quantiles as JSON) in each baseline's best configuration? Each is swept over
batch size and threads in one process, then run as several one-thread processes released
together (:mod:`benchmarks.parallel`), and the fastest is its best.

* ``gluonts``: GluonTS's own ``PyTorchPredictor.predict`` on a ``ListDataset``, mean and
  quantiles from its ``SampleForecast``, encoded with orjson: the reference implementation,
  tuned. It runs in a subprocess whose environment has ``MALLOC_TOP_PAD_=1073741824`` (glibc
  reads it when the process starts; DEEPAR_REFERENCE.md B.3 measures it as GluonTS's biggest
  lever), sweeps predictor batch size x torch threads on a prefix of the input, then measures
  the best pair on the full baseline input.
* ``single-record``: batchcast's own model, one series per call, JSON decode and encode
  included (``ShardProcessor.predict_lines`` with one line: decode, ``forecast()`` with a
  1-series batch, encode), which is how SageMaker's DeepAR serves SingleRecord requests. It
  sweeps torch threads the same way, in its own subprocess.

Both models are the same weights: a GluonTS DeepAR is trained briefly on synthetic data (or
left at its initial weights with ``--train-batches 0``), serialized, and imported with
:func:`batchcast.models.import_gluonts`; the pair is cached under ``--workdir``.
Timings exclude process start-up and model loading (as batchcast's exclude Ray start-up);
each configuration is warmed up on a few series first. ``end_to_end`` runs both in the same
run as batchcast and prints the ratios; alone:

    python -m benchmarks.baselines --baseline-series 2000
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from benchmarks.common import (
    REPO,
    HelpFormatter,
    WorkUnit,
    add_results_flag,
    append_results,
    count,
    emit,
    int_list,
    length_range,
    peak_rss_mb,
    reset_peak_rss,
)
from benchmarks.data import DataSpec, ensure_jsonl
from benchmarks.parallel import measure_part, process_counts, read_slice, run_parts

__all__ = [
    "DEFAULT_WORKDIR",
    "TOP_PAD",
    "Models",
    "describe",
    "prepare_models",
    "run_gluonts",
    "run_single_record",
]

TOP_PAD = "1073741824"  # 1 GiB: glibc keeps this much heap on top, so per-batch buffers stop
# being mmap'ed and unmapped every step (the page-fault churn of DEEPAR_REFERENCE.md B.3.2)
DEFAULT_WORKDIR = Path(tempfile.gettempdir()) / "batchcast-bench"
BENCHMARK = "baselines"


# ---------------------------------------------------------------------------------------------
# The shared weights


@dataclass(frozen=True)
class Models:
    """A serialized GluonTS predictor and the batchcast model imported from it."""

    predictor_dir: Path
    model_dir: Path
    trained_batches: int

    def describe(self) -> dict[str, Any]:
        return {
            "gluonts_predictor": str(self.predictor_dir),
            "batchcast_model": str(self.model_dir),
            "trained_batches": self.trained_batches,
        }


def gluonts_freq(freq: str) -> str:
    """SageMaker's ``H`` is pandas' ``h`` (``H`` is deprecated there); the rest agree."""
    return freq[:-1] + "h" if freq.endswith("H") else freq


def gluonts_entry(record: dict[str, Any]) -> dict[str, Any]:
    """A SageMaker record as a GluonTS data entry (``cat`` and ``dynamic_feat`` renamed)."""
    entry = {"start": record["start"], "target": record["target"]}
    if "cat" in record:
        entry["feat_static_cat"] = record["cat"]
    if "dynamic_feat" in record:
        entry["feat_dynamic_real"] = record["dynamic_feat"]
    return entry


def _quiet_gluonts() -> None:
    """GluonTS, lightning and torch warn on every batch; the benchmark output is JSON."""
    warnings.filterwarnings("ignore")
    import lightning.pytorch  # noqa: F401  # it sets its loggers' levels when imported

    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "gluonts"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _train_gluonts(
    path: Path,
    unit: WorkUnit,
    *,
    train: DataSpec,
    batches: int,
    seed: int,
) -> None:
    """Train a GluonTS DeepAR of the work unit's shape for ``batches`` mini-batches of 32
    (0: keep the initial weights) and serialize its predictor to ``path``."""
    _quiet_gluonts()
    import numpy as np
    import torch
    from gluonts.dataset.common import ListDataset
    from gluonts.torch.model.deepar import DeepAREstimator

    if unit.likelihood != "student-T":
        raise ValueError(f"the GluonTS baseline uses Student-T, got {unit.likelihood!r}")
    torch.manual_seed(seed)
    np.random.seed(seed)
    freq = gluonts_freq(unit.freq)
    estimator = DeepAREstimator(
        freq=freq,
        prediction_length=unit.prediction_length,
        context_length=unit.context_length,
        num_layers=unit.num_layers,
        hidden_size=unit.num_cells,
        num_feat_static_cat=len(train.cardinality),
        cardinality=list(train.cardinality) or None,
        num_feat_dynamic_real=train.num_dynamic_feat,
        num_parallel_samples=unit.num_samples,
        batch_size=32,
        num_batches_per_epoch=max(1, batches),
        trainer_kwargs={
            "max_epochs": 1,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "logger": False,
            # GluonTS always adds a checkpoint callback; its file goes here.
            "default_root_dir": str(path.parent / f".{path.name}-lightning"),
        },
    )
    if batches > 0:
        data = ListDataset([gluonts_entry(r) for r in train.records()], freq=freq)
        predictor = estimator.train(data)
    else:
        predictor = estimator.create_predictor(
            estimator.create_transformation(), estimator.create_lightning_module()
        )
    path.mkdir(parents=True, exist_ok=True)
    predictor.serialize(path)


def prepare_models(
    workdir: Path,
    unit: WorkUnit,
    *,
    train_series: int = 200,
    train_batches: int = 50,
    cardinality: tuple[int, ...] = (),
    num_dynamic_feat: int = 0,
    seed: int = 0,
) -> Models:
    """Train (or reuse) the GluonTS predictor and import it as a batchcast model.

    Cached under ``workdir/models/<a name fixing every argument>``. The work runs in a
    subprocess, so this process (the benchmark's Ray driver) never holds GluonTS, lightning or
    a training run in its memory, and its peak RSS stays that of a batchcast driver.
    """
    lo, hi = unit.length
    name = (
        f"deepar-{unit.freq}-c{unit.context_length}-p{unit.prediction_length}-"
        f"{unit.num_layers}x{unit.num_cells}-s{unit.num_samples}-"
        f"cat{'x'.join(map(str, cardinality)) or 0}-dyn{num_dynamic_feat}-"
        f"train{train_series}x{train_batches}-len{lo}-{hi}-seed{seed}"
    )
    root = workdir / "models" / name
    models = Models(root / "gluonts-predictor", root / "batchcast-model", train_batches)
    if (models.model_dir / "model.safetensors").exists():
        return models
    arguments = ["--predictor", str(models.predictor_dir), "--model", str(models.model_dir)]
    arguments += ["--train-series", str(train_series), "--train-batches", str(train_batches)]
    arguments += ["--length", f"{lo}-{hi}", "--seed", str(seed)]
    arguments += ["--dynamic-feat", str(num_dynamic_feat)]
    if cardinality:
        arguments += ["--cardinality", ",".join(map(str, cardinality))]
    _child("prepare", arguments, expect_final=False)
    return models


def _prepare_child(args: argparse.Namespace) -> None:
    from batchcast.models import import_gluonts

    unit = WorkUnit(length=args.length)
    train = DataSpec(
        series=args.train_series,
        freq=unit.freq,
        length=unit.length,
        cardinality=tuple(args.cardinality),
        num_dynamic_feat=args.dynamic_feat,
        seed=args.seed + 1,  # not the measured input's seed
    )
    if not (args.predictor / "predictor.json").exists():
        batches, seed = args.train_batches, args.seed
        _train_gluonts(args.predictor, unit, train=train, batches=batches, seed=seed)
    import_gluonts(str(args.predictor), str(args.model))


# ---------------------------------------------------------------------------------------------
# The subprocesses (``--child``): each prints one JSON line per configuration


def _timed(
    run: Callable[[list[bytes], Any], int], lines_path: Path, n: int, out: Path
) -> dict[str, Any]:
    """Time reading ``n`` lines, ``run`` on them (writing to ``out``), and the process's peak
    RSS meanwhile."""
    reset_peak_rss()
    started = time.perf_counter()
    lines = read_slice(lines_path, 0, n)
    with out.open("wb") as f:
        series = run(lines, f)
    seconds = time.perf_counter() - started
    in_bytes = sum(len(line) + 1 for line in lines)
    out_bytes = out.stat().st_size
    out.unlink()
    return {
        "series": series,
        "seconds": seconds,
        "series_per_s": series / seconds,
        "mb_in_per_s": in_bytes / seconds / 1e6,
        "mb_out_per_s": out_bytes / seconds / 1e6,
        "peak_rss_mb": peak_rss_mb(),
    }


def _sweep_and_measure(
    name: str,
    configs: list[dict[str, Any]],
    prepare: Callable[[dict[str, Any]], Callable[[list[bytes], Any], int]],
    args: argparse.Namespace,
) -> None:
    """Warm up and time every config on ``--sweep-series`` lines, then the best one on
    ``--series`` lines; one JSON line each (the last has ``"final": true``). As one part
    of several processes (``--part``): only the one config, on its slice
    (:mod:`benchmarks.parallel`)."""
    if args.part:
        measure_part(BENCHMARK, name, configs[0], prepare(configs[0]), args)
        return
    out = Path(tempfile.gettempdir()) / f"batchcast-bench-{name}-{os.getpid()}.jsonl"
    best: tuple[float, dict[str, Any]] | None = None
    for config in configs:
        run = prepare(config)
        _timed(run, args.input, args.warmup_series, out)
        result = _timed(run, args.input, args.sweep_series, out)
        record = {"baseline": name, **config, "processes": 1, "sweep": True, **result}
        emit(BENCHMARK, f"{name} sweep", record)
        if best is None or result["series_per_s"] > best[0]:
            best = (result["series_per_s"], config)
    assert best is not None  # configs is never empty
    config = best[1]
    run = prepare(config)
    _timed(run, args.input, args.warmup_series, out)
    result = _timed(run, args.input, args.series, out)
    emit(BENCHMARK, name, {"baseline": name, **config, "processes": 1, "final": True, **result})


def _gluonts_child(args: argparse.Namespace) -> None:
    _quiet_gluonts()
    import torch
    from gluonts.dataset.common import ListDataset
    from gluonts.torch.model.predictor import PyTorchPredictor

    predictor = PyTorchPredictor.deserialize(args.predictor, device="cpu")
    freq = gluonts_freq(args.freq)
    keys = WorkUnit().inference().quantiles
    top_pad = os.environ.get("MALLOC_TOP_PAD_")

    def prepare(config: dict[str, Any]) -> Callable[[list[bytes], Any], int]:
        def run(lines: list[bytes], out: Any) -> int:
            dataset = ListDataset([gluonts_entry(orjson.loads(line)) for line in lines], freq)
            n = 0
            for fc in predictor.predict(dataset):
                record = {"quantiles": {k: fc.quantile(k) for k in keys}, "mean": fc.mean}
                out.write(orjson.dumps(record, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n")
                n += 1
            return n

        torch.set_num_threads(config["threads"])
        predictor.batch_size = config["batch_size"]
        return run

    configs = [
        {"batch_size": b, "threads": t, "malloc_top_pad": top_pad}
        for t in args.threads
        for b in args.batch_sizes
    ]
    _sweep_and_measure("gluonts", configs, prepare, args)


def _single_record_child(args: argparse.Namespace) -> None:
    import torch

    from batchcast.io.join import Join
    from batchcast.runner.worker import ShardProcessor, WorkerOptions

    options = WorkerOptions(
        inference=WorkUnit().inference(), join=Join(), max_payload_mb=6.0, seed=0
    )
    processor = ShardProcessor(str(args.model), options)

    def prepare(config: dict[str, Any]) -> Callable[[list[bytes], Any], int]:
        def run(lines: list[bytes], out: Any) -> int:
            for i, line in enumerate(lines):
                encoded, _ = processor.predict_lines([line], uri="request", seed=i)
                out.write(encoded[0] + b"\n")
            return len(lines)

        torch.set_num_threads(config["threads"])
        return run

    configs = [{"batch_size": 1, "threads": t} for t in args.threads]
    _sweep_and_measure("single-record", configs, prepare, args)


# ---------------------------------------------------------------------------------------------
# The parent side


def _child(
    kind: str,
    arguments: list[str],
    *,
    env: dict[str, str] | None = None,
    expect_final: bool = True,
) -> list[dict[str, Any]]:
    """Run ``python -m benchmarks.baselines --child kind ...``; echo and return its JSON lines
    (other output goes to stderr)."""
    command = [sys.executable, "-m", "benchmarks.baselines", "--child", kind, *arguments]
    records = []
    with subprocess.Popen(
        command, cwd=REPO, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE
    ) as proc:
        assert proc.stdout is not None  # stdout=PIPE
        for line in proc.stdout:
            if line.startswith(b"{"):
                sys.stdout.buffer.write(line)
                sys.stdout.flush()
                records.append(orjson.loads(line))
            else:  # a library's chatter: keep stdout JSON only
                sys.stderr.buffer.write(line)
    if proc.returncode != 0:
        raise RuntimeError(f"the {kind} baseline failed (exit {proc.returncode}): {command}")
    if expect_final and not any(r.get("final") for r in records):
        raise RuntimeError(f"the {kind} baseline printed no final result: {command}")
    return records


def _common_child_args(
    input_path: Path, *, series: int, sweep_series: int, warmup_series: int, threads: Sequence[int]
) -> list[str]:
    return [
        "--input",
        str(input_path),
        "--series",
        str(series),
        "--sweep-series",
        str(sweep_series),
        "--warmup-series",
        str(warmup_series),
        "--threads",
        ",".join(map(str, threads)),
    ]


def run_gluonts(
    models: Models,
    input_path: Path,
    *,
    freq: str,
    series: int,
    sweep_series: int,
    batch_sizes: Sequence[int] = (32, 64, 128, 256),
    threads: Sequence[int] = (1, 2),
    warmup_series: int = 32,
    top_pad: bool = True,
) -> list[dict[str, Any]]:
    """The tuned GluonTS baseline in a subprocess; its JSON lines, the final one last."""
    arguments = _common_child_args(
        input_path,
        series=series,
        sweep_series=sweep_series,
        warmup_series=warmup_series,
        threads=threads,
    )
    arguments += ["--predictor", str(models.predictor_dir), "--freq", freq]
    env = {"MALLOC_TOP_PAD_": TOP_PAD} if top_pad else {}
    records = _child(
        "gluonts", [*arguments, "--batch-sizes", ",".join(map(str, batch_sizes))], env=env
    )
    return _with_processes("gluonts", records, arguments, env)


def run_single_record(
    models: Models,
    input_path: Path,
    *,
    series: int,
    sweep_series: int,
    threads: Sequence[int] = (1, 2),
    warmup_series: int = 4,
) -> list[dict[str, Any]]:
    """The single-record baseline in a subprocess; its JSON lines, the final one last."""
    arguments = _common_child_args(
        input_path,
        series=series,
        sweep_series=sweep_series,
        warmup_series=warmup_series,
        threads=threads,
    )
    arguments += ["--model", str(models.model_dir)]
    return _with_processes("single-record", _child("single-record", arguments), arguments, {})


def _with_processes(
    kind: str, records: list[dict[str, Any]], arguments: list[str], env: dict[str, str]
) -> list[dict[str, Any]]:
    """``records`` (a one-process child's sweep and final) plus each multi-process
    configuration that uses every core the sweep did (:func:`benchmarks.parallel.process_counts`),
    each with the batch size that was fastest at its thread count; the fastest final of all
    last, marked ``"best": true`` (what ratios are taken against)."""
    sweep = [r for r in records if r.get("sweep")]
    cores = max(r["threads"] for r in sweep)
    finals = [r for r in records if r.get("final")]
    for processes in process_counts(cores):
        threads = cores // processes
        candidates = [r for r in sweep if r["threads"] == threads]
        if not candidates:
            continue
        batch = max(candidates, key=lambda r: r["series_per_s"])["batch_size"]
        config = {"batch_size": batch, "threads": threads}
        if "malloc_top_pad" in finals[0]:  # GluonTS's children run with it, parts too (env)
            config["malloc_top_pad"] = finals[0]["malloc_top_pad"]
        fixed = _replace_flag(arguments, "--threads", str(threads))
        if kind == "gluonts":
            fixed += ["--batch-sizes", str(batch)]
        finals.append(run_parts(BENCHMARK, kind, fixed, config, processes, env=env))
    fastest = max(finals, key=lambda r: r["series_per_s"])
    fields = {k: v for k, v in fastest.items() if k not in {"benchmark", "case", "date", "machine"}}
    one_process = finals[0]["series_per_s"]  # the child's own final: one process
    best = emit(
        BENCHMARK, f"{kind} best", {**fields, "best": True, "one_process_series_per_s": one_process}
    )
    return [*records, *finals[1:], best]


def _replace_flag(arguments: list[str], flag: str, value: str) -> list[str]:
    out = list(arguments)
    out[out.index(flag) + 1] = value
    return out


def describe(record: Any) -> str:
    """A RESULTS.md cell for a final baseline line."""
    processes = record.get("processes", 1)
    return (
        f"{record['series_per_s']:.1f} series/s ({record['series']} series; batch "
        f"{record['batch_size']}, "
        + (f"{processes} processes x " if processes > 1 else "")
        + f"{record['threads']} thread(s)"
        + (", MALLOC_TOP_PAD_" if record.get("malloc_top_pad") else "")
        + f"), peak RSS {record['peak_rss_mb']:.0f} MB"
    )


def add_baseline_flags(parser: argparse.ArgumentParser) -> None:
    """The flags ``end_to_end`` shares with this script."""
    g = parser.add_argument_group("baselines")
    g.add_argument(
        "--baseline-series", type=count, default=2000, help="lines in the GluonTS measured run"
    )
    g.add_argument("--gluonts-sweep-series", type=count, default=512, help="lines per sweep config")
    g.add_argument("--gluonts-batch-sizes", type=int_list, default=[32, 64, 128, 256], help="swept")
    g.add_argument("--gluonts-threads", type=int_list, default=None, help="None: 1 .. cores")
    g.add_argument(
        "--gluonts-no-top-pad",
        action="store_true",
        help="run GluonTS as shipped (default malloc) instead of tuned",
    )
    g.add_argument(
        "--single-record-series", type=count, default=500, help="lines in its measured run"
    )
    g.add_argument(
        "--single-record-sweep-series", type=count, default=100, help="lines per sweep config"
    )
    g.add_argument("--single-record-threads", type=int_list, default=None, help="None: 1 .. cores")
    g.add_argument("--train-series", type=count, default=200, help="GluonTS training series")
    g.add_argument(
        "--train-batches",
        type=int,
        default=50,
        help="GluonTS training mini-batches of 32 (0: initial weights)",
    )


def run_baselines(
    args: argparse.Namespace, models: Models, input_path: Path, available: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Both baselines on the first lines of ``input_path`` (``available`` lines); their
    final records (gluonts, single-record)."""
    cores = list(range(1, (os.cpu_count() or 1) + 1))
    unit = WorkUnit()
    gluonts = run_gluonts(
        models,
        input_path,
        freq=unit.freq,
        series=min(args.baseline_series, available),
        sweep_series=min(args.gluonts_sweep_series, available),
        batch_sizes=args.gluonts_batch_sizes,
        threads=args.gluonts_threads or cores,
        top_pad=not args.gluonts_no_top_pad,
    )[-1]
    single = run_single_record(
        models,
        input_path,
        series=min(args.single_record_series, available),
        sweep_series=min(args.single_record_sweep_series, available),
        threads=args.single_record_threads or cores,
    )[-1]
    return gluonts, single


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.baselines", description=__doc__, formatter_class=HelpFormatter
    )
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR, help="data and models")
    parser.add_argument(
        "--length", type=length_range, default=WorkUnit().length, metavar="N|LO-HI", help="points"
    )
    parser.add_argument("--seed", type=int, default=0, help="data and model seed")
    add_baseline_flags(parser)
    add_results_flag(parser)
    child = parser.add_argument_group("subprocess mode (internal)")
    child.add_argument(
        "--child", choices=["prepare", "gluonts", "single-record"], help=argparse.SUPPRESS
    )
    child.add_argument("--cardinality", type=int_list, default=[], help=argparse.SUPPRESS)
    child.add_argument("--dynamic-feat", type=int, default=0, help=argparse.SUPPRESS)
    child.add_argument("--input", type=Path, help=argparse.SUPPRESS)
    child.add_argument("--series", type=count, help=argparse.SUPPRESS)
    child.add_argument("--sweep-series", type=count, help=argparse.SUPPRESS)
    child.add_argument("--warmup-series", type=count, help=argparse.SUPPRESS)
    child.add_argument("--threads", type=int_list, help=argparse.SUPPRESS)
    child.add_argument("--part", help=argparse.SUPPRESS)
    child.add_argument("--batch-sizes", type=int_list, help=argparse.SUPPRESS)
    child.add_argument("--predictor", type=Path, help=argparse.SUPPRESS)
    child.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    child.add_argument("--freq", default="H", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child == "prepare":
        _prepare_child(args)
        return 0
    if args.child == "gluonts":
        _gluonts_child(args)
        return 0
    if args.child == "single-record":
        _single_record_child(args)
        return 0

    unit = WorkUnit(length=args.length)
    n = args.baseline_series
    spec = DataSpec(series=n, freq=unit.freq, length=unit.length, seed=args.seed)
    input_path = ensure_jsonl(spec, args.workdir / "data")
    models = prepare_models(
        args.workdir,
        unit,
        train_series=args.train_series,
        train_batches=args.train_batches,
        seed=args.seed,
    )
    gluonts, single = run_baselines(args, models, input_path, n)
    ratio = emit(
        BENCHMARK,
        "ratio",
        {
            "gluonts_series_per_s": gluonts["series_per_s"],
            "single_record_series_per_s": single["series_per_s"],
            "gluonts_over_single_record": gluonts["series_per_s"] / single["series_per_s"],
            "input": str(input_path),
            **models.describe(),
        },
    )
    if args.append_results:

        def cell(r: Any) -> str:
            if r["case"] == "ratio":
                return f"GluonTS tuned / single-record = {r['gluonts_over_single_record']:.2f}x"
            return describe(r)

        append_results(args.append_results, [gluonts, single, ratio], cell)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
