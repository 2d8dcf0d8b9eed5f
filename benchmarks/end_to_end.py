"""End to end: how fast is ``batchcast transform``, how does it scale with workers and input
size, and how does it compare with the baselines measured in the same run?

For each input size (``--sizes``, default 10k series of the default work unit) and each
worker count (``--workers``, default 1 .. cores), one ``batchcast.api.transform`` (what
``batchcast transform`` runs) on a generated JSON Lines file, reporting:

* ``series_per_s``, ``mb_in_per_s``, ``mb_out_per_s``: over the job's wall time
  (``summary.timings.total_s``: model check, planning, actor start and model load, all
  shards, commit), with Ray already running; ``first_output_s``: job start to the first
  shard result;
* ``driver_peak_rss_mb``: this process's VmHWM over the job (reset before it through
  ``/proc/self/clear_refs``; exact);
* ``worker_peak_rss_mb`` (max) and ``workers_peak_rss_mb_sum``: the VmHWM of every model
  worker process of the job (found by its actor names, asked for its ``pid()``), read every
  ``--rss-interval`` seconds while the job runs (the actors exit when it ends, so growth in
  the last interval can be missed). Ray's own daemons (raylet, GCS, object-store shared
  memory) are not counted;
* ratios: to the tuned GluonTS baseline and the single-record baseline, each in its best
  configuration over batch size, threads and processes (see ``benchmarks.baselines``; same
  weights, run first, on the first ``--baseline-series`` lines of the smallest input), to
  GluonTS's best as one process (``vs_gluonts_one_process``, the comparison issue 11 first
  stated), and to 1 worker on the same input.

Ray is started once (``ray_init_s`` reported apart, ``address="local"`` unless ``RAY_ADDRESS``
or ``--ray-address`` is set) and warmed up with one small transform; every case then runs on
that cluster. Inputs and the models are cached in ``--workdir``; outputs are deleted after
each case unless ``--keep-outputs``.

    python -m benchmarks.end_to_end                              # 10k series: ~3-4 minutes
    python -m benchmarks.end_to_end --sizes 10k,100k,1M --append-results
"""

from __future__ import annotations

import argparse
import itertools
import logging
import os
import shutil
import statistics
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmarks.baselines import (
    DEFAULT_WORKDIR,
    add_baseline_flags,
    prepare_models,
    run_baselines,
)
from benchmarks.baselines import describe as describe_baseline
from benchmarks.common import (
    HelpFormatter,
    WorkUnit,
    add_results_flag,
    append_results,
    emit,
    int_list,
    length_range,
    peak_rss_mb,
    reset_peak_rss,
)
from benchmarks.data import DataSpec, ensure_jsonl

BENCHMARK = "end_to_end"


class WorkerPeaks:
    """Samples the peak RSS (VmHWM) of one job's model workers while it runs.

    The workers are found by the job's actor names
    (:func:`batchcast.runner.driver.worker_actor_names`) and asked for their ``pid()``; then
    each sample reads their ``/proc/<pid>/status``. A worker that is gone (ended, or restarted
    as a new process) is looked up again.
    """

    def __init__(self, job_name: str, expected: int, interval: float) -> None:
        self.job_name, self.expected, self.interval = job_name, expected, interval
        self.peaks: dict[int, float] = {}
        self._alive: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="worker-rss", daemon=True)

    def __enter__(self) -> WorkerPeaks:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            if len(self._alive) < self.expected:
                self._alive |= _worker_pids(self.job_name)
            self._alive -= _sample_peaks(self.peaks, list(self._alive))


def _sample_peaks(peaks: dict[int, float], pids: Iterable[int]) -> set[int]:
    """Raise each process's entry in ``peaks`` to its VmHWM (MiB) now; returns the pids
    that are gone."""
    gone: set[int] = set()
    for pid in pids:
        peak = peak_rss_mb(pid)
        if peak is None:
            gone.add(pid)
        else:
            peaks[pid] = max(peak, peaks.get(pid, 0.0))
    return gone


def _worker_pids(job_name: str) -> set[int]:
    """The process ids of the job's live model workers (on this machine's Ray)."""
    import ray
    from ray.exceptions import GetTimeoutError, RayError

    from batchcast.runner.pool import ACTOR_NAMESPACE, worker_actor_names

    pids: set[int] = set()
    for name in worker_actor_names(job_name):
        try:
            actor = ray.get_actor(name, namespace=ACTOR_NAMESPACE)
            # Queued behind the shards it holds: at worst a few seconds late, and VmHWM keeps
            # the peak reached meanwhile.
            pid: object = ray.get(actor.pid.remote(), timeout=60)
        except (ValueError, RayError, GetTimeoutError):  # not (or no longer) there
            continue
        if isinstance(pid, int):
            pids.add(pid)
    return pids


def _start_ray(address: str | None) -> float:
    import ray

    started = time.perf_counter()
    # As batchcast's driver starts it (batchcast.runner.driver), but never attaching to a
    # cluster some other process started on this machine (/tmp/ray/ray_current_cluster)
    # unless told to.
    address = address or os.environ.get("RAY_ADDRESS") or "local"
    ray.init(address=address, logging_level=logging.WARNING, log_to_driver=True)
    return time.perf_counter() - started


def _run_case(
    model_dir: Path,
    input_path: Path,
    out: Path,
    *,
    name: str,
    workers: int,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """One transform (job ``name``); its measurements."""
    from batchcast.api import transform

    if out.exists():
        shutil.rmtree(out)
    options: dict[str, Any] = {"workers": workers, "progress": False}
    if args.shard_mb:
        options["shard_mb"] = args.shard_mb
    if args.precision != "fp32":
        options["precision"] = args.precision
    reset_peak_rss()
    with WorkerPeaks(name, workers, args.rss_interval) as peaks:
        summary = transform(str(model_dir), str(input_path), str(out), name=name, **options)
    driver_peak = peak_rss_mb()
    if not summary.ok:
        raise RuntimeError(f"{input_path}: transform {summary.status}: {summary.errors[:3]}")
    worker_peaks = sorted(peaks.peaks.values())
    return _measures(
        summary.counts,
        summary.timings,
        input_path,
        out,
        args,
        driver_peak_rss_mb=driver_peak,
        worker_peak_rss_mb=worker_peaks[-1] if worker_peaks else None,
        workers_peak_rss_mb_sum=sum(worker_peaks) if worker_peaks else None,
        worker_processes_seen=len(worker_peaks),
    )


def _measures(
    counts: Mapping[str, Any],
    timings: Mapping[str, Any],
    input_path: Path,
    out: Path,
    args: argparse.Namespace,
    **extra: Any,
) -> dict[str, Any]:
    """A finished job's rates and times from its summary's counts and timings (its ``.out``
    files are then deleted unless ``--keep-outputs``), with ``extra`` fields after them."""
    out_bytes = sum(p.stat().st_size for p in out.glob("*.out"))
    if not args.keep_outputs:
        shutil.rmtree(out)
    seconds = timings["total_s"]
    assert seconds is not None  # a finished job has a total
    return {
        "series": counts["series"],
        "seconds": seconds,
        "series_per_s": counts["series"] / seconds,
        "mb_in_per_s": input_path.stat().st_size / seconds / 1e6,
        "mb_out_per_s": out_bytes / seconds / 1e6,
        "first_output_s": timings["first_output_s"],
        "precision": args.precision,
        **extra,
        "worker_restarts": counts["worker_restarts"],
        # Summed over shards (all workers): where the workers' time went.
        "decode_s": timings.get("decode_s"),
        "sample_s": timings.get("sample_s"),
        "encode_s": timings.get("encode_s"),
    }


def _run_local_case(
    model_dir: Path, input_path: Path, out: Path, *, workers: int, args: argparse.Namespace
) -> dict[str, Any]:
    """``batchcast transform --executor local`` as a fresh process (the command line's own
    rule forks its workers); the job's clock from its summary, the process's from here."""
    import subprocess

    import orjson

    if out.exists():
        shutil.rmtree(out)
    argv = [sys.executable, "-m", "batchcast", "transform", "--model", str(model_dir)]
    argv += ["--input", str(input_path), "--output", str(out), "--executor", "local"]
    argv += ["--workers", str(workers)]
    if args.shard_mb:
        argv += ["--shard-mb", str(args.shard_mb)]
    argv += ["--precision", args.precision]
    started = time.perf_counter()
    driver = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
    peaks = _process_tree_peaks(driver, args.rss_interval)
    if driver.returncode:
        raise RuntimeError(f"{input_path}: batchcast transform exited {driver.returncode}")
    process_s = time.perf_counter() - started
    summary = orjson.loads((out / "_batchcast_summary.json").read_bytes())
    driver_peak = peaks.pop(driver.pid, None)
    return _measures(
        summary["counts"],
        summary["timings"],
        input_path,
        out,
        args,
        process_s=process_s,
        cluster=summary["cluster"],
        driver_peak_rss_mb=driver_peak,
        worker_peak_rss_mb=max(peaks.values(), default=None),
        worker_processes_seen=len(peaks),
    )


def _process_tree_peaks(process: Any, interval: float) -> dict[int, float]:
    """Waits for ``process``; the VmHWM (MiB) of it and of its children, read every
    ``interval`` seconds (a child's growth in its last interval can be missed)."""
    peaks: dict[int, float] = {}
    while process.poll() is None:
        children = Path(f"/proc/{process.pid}/task/{process.pid}/children")
        try:
            pids = [process.pid, *map(int, children.read_text().split())]
        except OSError:
            pids = [process.pid]
        _sample_peaks(peaks, pids)
        time.sleep(interval)
    return peaks


def describe(record: Mapping[str, Any]) -> str:
    """A RESULTS.md cell."""
    if record["case"] == "ray":
        return f"ray.init {record['ray_init_s']:.1f}s, warm-up transform {record['warmup_s']:.1f}s"
    if record.get("baseline"):
        return describe_baseline(record)
    if record["case"] == "ratios":
        return "; ".join(f"{k} {v:.2f}x" for k, v in record["ratios"].items())
    parts = [
        f"{record['series_per_s']:.0f} series/s",
        f"{record['mb_in_per_s']:.1f} MB/s in",
        f"first output {record['first_output_s']:.1f}s",
    ]
    if record.get("driver_peak_rss_mb"):
        parts.append(f"RSS driver {record['driver_peak_rss_mb']:.0f} MB")
    if record.get("worker_peak_rss_mb"):
        parts.append(f"worker {record['worker_peak_rss_mb']:.0f} MB")
    for key, label in (
        ("vs_gluonts_tuned", "GluonTS tuned"),
        ("vs_gluonts_one_process", "GluonTS as one process"),
        ("vs_single_record", "single-record"),
        ("vs_1_worker", "1 worker"),
    ):
        if record.get(key):
            parts.append(f"{record[key]:.2f}x {label}")
    return ", ".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.end_to_end", description=__doc__, formatter_class=HelpFormatter
    )
    parser.add_argument(
        "--sizes", type=int_list, default=[10_000], help="input sizes in series (10k,100k,1M)"
    )
    parser.add_argument(
        "--workers",
        type=int_list,
        default=list(range(1, (os.cpu_count() or 1) + 1)),
        help="worker counts to sweep (1 .. cores)",
    )
    parser.add_argument("--repeats", type=int, default=1, help="runs per case (median reported)")
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR, help="data, models, out")
    parser.add_argument("--keep-outputs", action="store_true", help="keep the .out files")
    parser.add_argument(
        "--shard-mb", type=float, default=None, help="shard size (None: batchcast's default)"
    )
    parser.add_argument("--rss-interval", type=float, default=0.5, help="worker RSS sampling (s)")
    parser.add_argument(
        "--precision",
        choices=["fp32", "bf16"],
        default="fp32",
        help="batchcast's GEMM precision (bf16: where the CPU has bf16 units; the baselines "
        "stay fp32, so a bf16 ratio compares different arithmetic: say so beside it)",
    )
    parser.add_argument(
        "--ray-address", default=None, help="None: RAY_ADDRESS, else a new local Ray"
    )
    parser.add_argument(
        "--warmup-series", type=int, default=200, help="size of the untimed warm-up transform"
    )
    data = parser.add_argument_group("input data")
    data.add_argument(
        "--length", type=length_range, default=WorkUnit().length, metavar="N|LO-HI", help="points"
    )
    data.add_argument("--nan-fraction", type=float, default=0.0, help='share of "NaN" points')
    data.add_argument(
        "--cardinality", type=int_list, default=[], metavar="C1,C2", help="cat features"
    )
    data.add_argument("--dynamic-feat", type=int, default=0, help="dynamic features")
    data.add_argument("--seed", type=int, default=0, help="data and model seed")
    parser.add_argument("--no-baselines", action="store_true", help="batchcast only")
    parser.add_argument(
        "--local",
        action="store_true",
        help="also run each size with --executor local (its forked worker processes), as a "
        "`batchcast transform` subprocess once Ray is shut down",
    )
    add_baseline_flags(parser)
    add_results_flag(parser)
    args = parser.parse_args(argv)

    unit = WorkUnit(length=args.length)

    def spec(n: int, seed: int) -> DataSpec:
        return DataSpec(
            series=n,
            freq=unit.freq,
            length=unit.length,
            cardinality=tuple(args.cardinality),
            num_dynamic_feat=args.dynamic_feat,
            future_length=unit.prediction_length if args.dynamic_feat else 0,
            nan_fraction=args.nan_fraction,
            seed=seed,
        )

    folder = args.workdir / "data"
    sizes = sorted(set(args.sizes))
    for n in sizes:
        if not (folder / spec(n, args.seed).filename).exists():
            print(f"generating {n:,} series in {folder} ...", file=sys.stderr, flush=True)
    inputs = {n: ensure_jsonl(spec(n, args.seed), folder) for n in sizes}
    warmup = ensure_jsonl(spec(args.warmup_series, args.seed + 7), folder)
    print("preparing the GluonTS and batchcast models ...", file=sys.stderr, flush=True)
    models = prepare_models(
        args.workdir,
        unit,
        train_series=args.train_series,
        train_batches=args.train_batches,
        cardinality=tuple(args.cardinality),
        num_dynamic_feat=args.dynamic_feat,
        seed=args.seed,
    )
    records: list[dict[str, Any]] = []
    gluonts = single = None
    if not args.no_baselines:  # before Ray starts: its daemons do not slow the baselines
        gluonts, single = run_baselines(args, models, inputs[sizes[0]], sizes[0])
        records += [gluonts, single]

    ray_init_s = _start_ray(args.ray_address)
    started = time.perf_counter()
    warm_out, most = args.workdir / "out" / "warmup", max(args.workers)
    _run_case(models.model_dir, warmup, warm_out, name="bench-warmup", workers=most, args=args)
    records.append(
        emit(
            BENCHMARK,
            "ray",
            {
                "ray_init_s": ray_init_s,
                "warmup_s": time.perf_counter() - started,
                **models.describe(),
            },
        )
    )

    by_case: dict[tuple[int, int], dict[str, Any]] = {}
    for n in sizes:
        for workers in sorted(set(args.workers)):
            runs = [
                _run_case(
                    models.model_dir,
                    inputs[n],
                    args.workdir / "out" / f"n{n}-w{workers}",
                    name=f"bench-n{n}-w{workers}-r{repeat}",
                    workers=workers,
                    args=args,
                )
                for repeat in range(args.repeats)
            ]
            result = min(runs, key=lambda r: abs(r["series_per_s"] - _median_rate(runs)))
            fields: dict[str, Any] = {"size": n, "workers": workers, **result}
            if args.repeats > 1:
                fields["series_per_s_runs"] = [r["series_per_s"] for r in runs]
            fields.update(_vs_baselines(result["series_per_s"], gluonts, single))
            if (n, 1) in by_case:
                fields["vs_1_worker"] = result["series_per_s"] / by_case[n, 1]["series_per_s"]
            fields["input"] = str(inputs[n])
            by_case[n, workers] = emit(BENCHMARK, f"size={n} workers={workers}", fields)
            records.append(by_case[n, workers])

    import ray

    stopped = time.perf_counter()
    ray.shutdown()
    fields = _ratios(by_case, gluonts, single, sizes, args)
    fields["ray_shutdown_s"] = time.perf_counter() - stopped
    if args.local:  # after Ray is gone: its daemons would share the cores
        for n in sizes:
            out = args.workdir / "out" / f"n{n}-local"
            result = _run_local_case(models.model_dir, inputs[n], out, workers=most, args=args)
            result.update(_vs_baselines(result["series_per_s"], gluonts, single))
            if gluonts:
                fields["ratios"][f"size={n} local / gluonts tuned"] = result["vs_gluonts_tuned"]
                fields["ratios"][f"size={n} local / gluonts one process"] = result[
                    "vs_gluonts_one_process"
                ]
            records.append(emit(BENCHMARK, f"size={n} workers={most} local", result))
    records.append(emit(BENCHMARK, "ratios", fields))
    if args.append_results:
        append_results(args.append_results, records, describe)
    return 0


def _vs_baselines(
    rate: float, gluonts: Mapping[str, Any] | None, single: Mapping[str, Any] | None
) -> dict[str, float]:
    """``rate`` over each baseline's best configuration (``vs_gluonts_tuned``,
    ``vs_single_record``), and over GluonTS's best as one process (the comparison issue 11
    first stated; the best may be several processes, see ``benchmarks.parallel``)."""
    out = {}
    if gluonts:
        out["vs_gluonts_tuned"] = rate / gluonts["series_per_s"]
        one = gluonts.get("one_process_series_per_s") or gluonts["series_per_s"]
        out["vs_gluonts_one_process"] = rate / one
    if single:
        out["vs_single_record"] = rate / single["series_per_s"]
    return out


def _median_rate(runs: list[dict[str, Any]]) -> float:
    return statistics.median(r["series_per_s"] for r in runs)


def _ratios(
    by_case: dict[tuple[int, int], dict[str, Any]],
    gluonts: Mapping[str, Any] | None,
    single: Mapping[str, Any] | None,
    sizes: list[int],
    args: argparse.Namespace,
) -> dict[str, Any]:
    """The run's headline ratios: most workers vs the baselines and vs 1 worker, and how the
    peak RSS grows from each input size to the next."""
    most = max(args.workers)
    ratios: dict[str, float] = {}
    for n in sizes:
        top = by_case[n, most]
        if gluonts:
            ratios[f"size={n} workers={most} / gluonts tuned"] = (
                top["series_per_s"] / gluonts["series_per_s"]
            )
        if single:
            ratios[f"size={n} workers={most} / single-record"] = (
                top["series_per_s"] / single["series_per_s"]
            )
        if (n, 1) in by_case and most != 1:
            ratios[f"size={n} workers={most} / workers=1"] = (
                top["series_per_s"] / by_case[n, 1]["series_per_s"]
            )
    for smaller, larger in itertools.pairwise(sizes):  # flat memory: each ratio near 1
        before, after = by_case[smaller, most], by_case[larger, most]
        for key in ("driver_peak_rss_mb", "worker_peak_rss_mb"):
            if before.get(key) and after.get(key):
                ratios[f"{key} size={larger} / size={smaller}"] = after[key] / before[key]
    return {
        "ratios": ratios,
        "gluonts_tuned_series_per_s": gluonts["series_per_s"] if gluonts else None,
        "single_record_series_per_s": single["series_per_s"] if single else None,
    }


if __name__ == "__main__":
    raise SystemExit(main())
