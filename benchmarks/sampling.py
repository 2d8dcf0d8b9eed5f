"""The model alone: how fast does batchcast forecast, and how close is it to the FLOP floor?

Sweeps the series sampled per step (``forecast()``'s ``max_rows`` = series x num_samples) on
the default work unit, in memory (no JSON, no Ray), and reports per case:

* ``series_per_s`` and ``sample_steps_per_s`` (= series/s x num_samples x horizon) of
  ``forecast()``: windows and features, sampling, mean and quantiles, as a worker runs it;
* ``sampler_series_per_s``: ``sample_paths()`` alone on windows cut beforehand;
* the FLOP floor: the dense LSTM FLOPs per series of GluonTS's network (per path and step
  ``2 * 4H * (D + H)`` for layer 0 and ``2 * 4H * 2H`` per further layer, D = GluonTS's LSTM
  input width, 48 here: 2 * 160 * (88 + 80) = 53,760; x 100 paths x 24 steps = 129 MFLOP),
  divided by the rate of a ``torch.mm`` of the LSTM's own shape (rows x (D + H) x 4H, rows =
  this case's rows per step, on the same threads and device) measured in the same run.
  ``fraction_of_floor`` is the achieved share of that floor. batchcast's sampler skips part of
  those FLOPs (layer 0's path-independent inputs are computed once per series), so a fraction
  above 1 is possible. ``fraction_of_peak_floor`` uses the best matmul rate of all row counts.

Timed runs follow an untimed warm-up per case; the median of ``--repeats`` is reported (CUDA:
``torch.cuda.synchronize()`` around every timing).

    python -m benchmarks.sampling            # about 1-2 minutes on 2 cores
    python -m benchmarks.sampling --device cuda --series-per-step 64,256,1024,4096
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from batchcast.forecast.artifacts import load_model
from batchcast.forecast.config import DeepARConfig, ModelSpec
from batchcast.forecast.features import build_windows
from batchcast.forecast.model import DeepAR
from batchcast.forecast.sampling import forecast, sample_paths
from batchcast.forecast.series import SeriesBatch
from batchcast.forecast.train import make_spec
from batchcast.io import RecordContract, decode_records
from benchmarks.common import (
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
from benchmarks.data import DataSpec

BENCHMARK = "sampling"


def default_model(unit: WorkUnit, *, seed: int) -> DeepAR:
    """The work unit's network at its initial weights (the speed does not depend on them)."""
    config = DeepARConfig(
        time_freq=unit.freq,
        context_length=unit.context_length,
        prediction_length=unit.prediction_length,
        epochs=1,
        num_cells=unit.num_cells,
        num_layers=unit.num_layers,
        likelihood=unit.likelihood,
    )
    torch.manual_seed(seed)
    spec = make_spec(config, cardinality=(), num_dynamic_feat=0, default_scale=None)
    return DeepAR(spec).eval()


def gluonts_input_width(spec: ModelSpec) -> int:
    """GluonTS's LSTM input width for this network: batchcast folds GluonTS's constant inputs
    (the static real 0.0, and the 1-wide embedding of cat 0 when there is no cat feature)
    into the bias, so they are not in ``spec.input_size``."""
    return spec.input_size + (1 if spec.cardinality else 2)


def lstm_flops_per_series(spec: ModelSpec, num_samples: int) -> float:
    """Dense LSTM FLOPs of the sampling steps: num_samples paths x horizon steps."""
    h4 = 4 * spec.num_cells
    per_step = 2 * h4 * (gluonts_input_width(spec) + spec.num_cells)
    per_step += (spec.num_layers - 1) * 2 * h4 * (2 * spec.num_cells)
    return float(per_step * num_samples * spec.prediction_length)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_seconds(fn: Callable[[], Any], device: torch.device, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        _sync(device)
        started = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def matmul_flops_per_s(rows: int, k: int, n: int, device: torch.device, seconds: float) -> float:
    """FLOP/s of ``torch.mm`` of (rows, k) @ (k, n) into a preallocated output."""
    a = torch.randn(rows, k, device=device)
    b = torch.randn(k, n, device=device)
    c = torch.empty(rows, n, device=device)
    for _ in range(3):
        torch.mm(a, b, out=c)
    iterations, elapsed, batch = 0, 0.0, 8
    _sync(device)
    started = time.perf_counter()
    while elapsed < seconds:
        for _ in range(batch):
            torch.mm(a, b, out=c)
        _sync(device)
        iterations += batch
        elapsed = time.perf_counter() - started
        batch *= 2
    return 2.0 * rows * k * n * iterations / elapsed


def _window_tensors(
    model: DeepAR, batch: SeriesBatch, per_chunk: int, device: torch.device
) -> list[dict[str, torch.Tensor]]:
    """The sampler's inputs for each chunk of ``per_chunk`` series, on ``device``."""
    chunks = []
    for lo in range(0, batch.num_series, per_chunk):
        w = build_windows(
            batch.slice(lo, min(lo + per_chunk, batch.num_series)),
            model.spec,
            dummy_value=model.likelihood.value_in_support,
        )
        arrays = {
            "past_target": w.past_target,
            "past_observed": w.past_observed,
            "covariates": w.covariates,
            "cat": w.cat,
        }
        chunks.append({k: torch.from_numpy(v).to(device) for k, v in arrays.items()})
    return chunks


def describe(record: Mapping[str, Any]) -> str:
    """A RESULTS.md cell."""
    if record["case"] == "best":
        return (
            f"best {record['series_per_s']:.0f} series/s at {record['series_per_step']} "
            f"series/step; {record['fraction_of_floor']:.2f} of FLOP floor "
            f"({record['floor_series_per_s']:.0f} series/s)"
        )
    return (
        f"{record['series_per_s']:.0f} series/s, {record['sample_steps_per_s'] / 1e6:.2f} M "
        f"sample-steps/s, {record['fraction_of_floor']:.2f} of floor "
        f"(sampler alone {record['sampler_fraction_of_floor']:.2f}), "
        f"{record['threads']} thread(s), {record['device']}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.sampling", description=__doc__, formatter_class=HelpFormatter
    )
    parser.add_argument(
        "--series-per-step",
        type=int_list,
        default=[1, 4, 16, 32, 64, 128, 256],
        help="the sweep: series sampled together per step (max_rows / num_samples)",
    )
    parser.add_argument("--series", type=count, default=1000, help="series per timed run")
    parser.add_argument(
        "--max-chunks",
        type=int,
        default=32,
        help="at most this many steps' worth of series per run (keeps small batches short)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per case (median)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:i]")
    parser.add_argument("--model", type=str, default=None, help="a batchcast model folder")
    parser.add_argument(
        "--num-samples", type=int, default=WorkUnit().num_samples, help="paths per series"
    )
    parser.add_argument(
        "--length", type=length_range, default=WorkUnit().length, metavar="N|LO-HI", help="points"
    )
    parser.add_argument("--mm-seconds", type=float, default=0.3, help="per matmul-rate reading")
    parser.add_argument("--seed", type=int, default=0, help="data, weights and sampling seed")
    add_results_flag(parser)
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device here")
    torch.set_num_threads(args.threads)
    unit = WorkUnit(num_samples=args.num_samples, length=args.length)
    if args.model:
        model = load_model(args.model, device=device).model
    else:
        model = default_model(unit, seed=args.seed).to(device)
    spec = model.spec
    config = unit.inference()
    s = config.num_samples

    def series_for(per_step: int) -> int:
        return max(per_step, min(args.series, per_step * args.max_chunks))

    data = DataSpec(
        series=max(series_for(p) for p in args.series_per_step),
        freq=spec.freq,
        length=args.length,
        cardinality=spec.cardinality,
        num_dynamic_feat=spec.num_dynamic_feat,
        future_length=spec.prediction_length if spec.num_dynamic_feat else 0,
        seed=args.seed,
    )
    decoded = decode_records(
        data.lines(), uri="synthetic", contract=RecordContract.for_inference(spec)
    )
    assert not decoded.errors, decoded.errors[:3]  # our own generator's records
    batch = decoded.batch

    flops = lstm_flops_per_series(spec, s)
    k, n = gluonts_input_width(spec) + spec.num_cells, 4 * spec.num_cells
    rows = {p: min(p, series_for(p)) * s for p in args.series_per_step}
    rates = {r: matmul_flops_per_s(r, k, n, device, args.mm_seconds) for r in set(rows.values())}
    peak_rate = max(rates.values())

    records = []
    for per_step in args.series_per_step:
        sub = batch.slice(0, series_for(per_step))
        max_rows = per_step * s

        def run_forecast(sub: SeriesBatch = sub, max_rows: int = max_rows) -> None:
            generator = torch.Generator(device=device).manual_seed(args.seed)
            forecast(model, sub, config, generator=generator, max_rows=max_rows)

        chunks = _window_tensors(model, sub, per_step, device)

        def run_sampler(chunks: list[dict[str, torch.Tensor]] = chunks) -> None:
            generator = torch.Generator(device=device).manual_seed(args.seed)
            for tensors in chunks:
                sample_paths(model, **tensors, num_samples=s, generator=generator)

        reset_peak_rss()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        forecast(  # warm-up: allocator, kernels, first-call paths
            model,
            sub.slice(0, min(sub.num_series, per_step)),
            config,
            generator=torch.Generator(device=device).manual_seed(args.seed),
            max_rows=max_rows,
        )
        seconds = _median_seconds(run_forecast, device, args.repeats)
        sampler_seconds = _median_seconds(run_sampler, device, args.repeats)
        series_per_s = sub.num_series / seconds
        sampler_per_s = sub.num_series / sampler_seconds
        rate = rates[rows[per_step]]
        floor = rate / flops
        records.append(
            emit(
                BENCHMARK,
                f"series_per_step={per_step}",
                {
                    "series_per_step": per_step,
                    "max_rows": max_rows,
                    "rows_per_step": rows[per_step],
                    "series": sub.num_series,
                    "threads": args.threads,
                    "device": str(device),
                    "seconds": seconds,
                    "series_per_s": series_per_s,
                    "sample_steps_per_s": series_per_s * s * spec.prediction_length,
                    "sampler_series_per_s": sampler_per_s,
                    "flops_per_series": flops,
                    "achieved_gflops": series_per_s * flops / 1e9,
                    "mm_shape": [rows[per_step], k, n],
                    "mm_gflops": rate / 1e9,
                    "floor_series_per_s": floor,
                    "fraction_of_floor": series_per_s / floor,
                    "sampler_fraction_of_floor": sampler_per_s / floor,
                    "fraction_of_peak_floor": series_per_s * flops / peak_rate,
                    "peak_rss_mb": peak_rss_mb(),
                    "peak_gpu_mb": torch.cuda.max_memory_allocated(device) / 2**20
                    if device.type == "cuda"
                    else None,
                    "work_unit": unit.describe(),
                    "model": args.model or "initial weights",
                },
            )
        )
    best = max(records, key=lambda r: r["series_per_s"])
    keys = ("series_per_step", "series_per_s", "floor_series_per_s", "fraction_of_floor")
    records.append(
        emit(
            BENCHMARK,
            "best",
            {
                **{key: best[key] for key in keys},
                "sampler_fraction_of_floor": best["sampler_fraction_of_floor"],
                "peak_mm_gflops": peak_rate / 1e9,
            },
        )
    )
    if args.append_results:
        append_results(Path(args.append_results), records, describe)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
