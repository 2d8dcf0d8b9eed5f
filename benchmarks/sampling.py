"""The model alone: how fast does batchcast sample, and how close is it to the FLOP floor?

On the default work unit, in memory (no JSON, no Ray), one thread by default. Cases:

* ``before``: the all-torch sampler as it was before issue 11 (untiled, torch elementwise ops;
  what runs today without a C compiler), at the default chunk of 6,400 rows;
* ``fp32 tile=N``: the fused sampler with N rows per physical step, for the rule's tile
  (:func:`batchcast.forecast.tuning.rule_tile_rows`, from this CPU's L2: the chosen
  rows-per-step) and its neighbours; ``calibrated`` reports what a quick timing would pick;
* ``bf16``: bf16 GEMMs (forced on, so measured on any CPU; on a CPU without bf16 units torch
  emulates them and the figure says so via ``bf16_hardware``).

Per case: ``series_per_s`` of ``forecast()`` (windows, sampling, mean and quantiles, as a
worker runs it) and ``sampler_series_per_s`` of ``sample_paths()`` alone, each divided by the
FLOP floor: GluonTS's dense LSTM FLOPs per series (per path and step ``2 * 4H * (D + H)`` for
layer 0 and ``2 * 4H * 2H`` per further layer, D = 48 here: 53,760; x 100 paths x 24 steps =
129 MFLOP) over the best rate of a ``torch.mm`` of the LSTM's shape (rows x (D + H) x 4H, in
the case's dtype, over the row counts used). Because the box may be shared, the matmul rate is
re-measured before every timed repeat and each fraction is the median over repeats of
(achieved / floor measured just before). batchcast skips part of the dense FLOPs, so a
fraction above 1 is possible.

    python -m benchmarks.sampling --quick    # < 2 minutes on 2 cores
    python -m benchmarks.sampling            # more tiles and series, ~4 minutes
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from batchcast.forecast import sampling as sampling_module
from batchcast.forecast.config import DeepARConfig, ModelSpec
from batchcast.forecast.features import build_windows
from batchcast.forecast.model import DeepAR
from batchcast.forecast.native import lstm_kernel
from batchcast.forecast.precision import bf16_hardware
from batchcast.forecast.sampling import DEFAULT_MAX_ROWS, forecast, sample_paths
from batchcast.forecast.series import SeriesBatch
from batchcast.forecast.train import make_spec
from batchcast.forecast.tuning import (
    calibrate_tile_rows,
    candidate_tiles,
    l2_bytes,
    rule_tile_rows,
)
from batchcast.io import RecordContract, decode_records
from batchcast.models import load_model
from benchmarks.common import (
    HelpFormatter,
    WorkUnit,
    add_results_flag,
    append_results,
    count,
    emit,
    int_list,
    length_range,
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


def matmul_flops_per_s(
    rows: int,
    k: int,
    n: int,
    device: torch.device,
    seconds: float,
    dtype: torch.dtype = torch.float32,
) -> float:
    """FLOP/s of ``torch.mm`` of (rows, k) @ (k, n) into a preallocated output."""
    a = torch.randn(rows, k, device=device).to(dtype)
    b = torch.randn(k, n, device=device).to(dtype)
    c = torch.empty(rows, n, device=device, dtype=dtype)
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
    return (
        f"{record['case']}: {record['series_per_s']:.0f} series/s = "
        f"{record['fraction_of_floor']:.2f} of floor (sampler alone "
        f"{record['sampler_fraction_of_floor']:.2f}), floor {record['floor_series_per_s']:.0f} "
        f"series/s, {record['threads']} thread(s), flags {record['cpu_flags']}"
    )


def _cpu_flags() -> str:
    """The instruction-set flags that matter here, from /proc/cpuinfo."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return "unknown"
    flags = next(
        (line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")),
        [],
    )
    keep = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
    return ",".join(f for f in keep if f in flags) or "none of avx2/avx512/amx"


class _TorchPath:
    """Run the sampler with the fused kernel switched off (the pre-issue-11 path)."""

    def __enter__(self) -> None:
        self.saved = sampling_module.lstm_kernel
        sampling_module.lstm_kernel = lambda: None  # type: ignore[assignment]

    def __exit__(self, *exc: object) -> None:
        sampling_module.lstm_kernel = self.saved


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.sampling", description=__doc__, formatter_class=HelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer series and tiles (< 2 min)")
    parser.add_argument("--tiles", type=int_list, default=None, help="tile rows to sweep")
    parser.add_argument("--series", type=count, default=None, help="series per timed run")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per case (median)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--model", type=str, default=None, help="a batchcast model folder")
    parser.add_argument("--no-bf16", action="store_true", help="skip the bf16 case")
    parser.add_argument(
        "--length", type=length_range, default=WorkUnit().length, metavar="N|LO-HI", help="points"
    )
    parser.add_argument("--mm-seconds", type=float, default=0.15, help="per matmul-rate reading")
    parser.add_argument("--seed", type=int, default=0, help="data, weights and sampling seed")
    add_results_flag(parser)
    args = parser.parse_args(argv)
    repeats = args.repeats or (2 if args.quick else 3)

    device = torch.device("cpu")
    torch.set_num_threads(args.threads)
    unit = WorkUnit(length=args.length)
    model = load_model(args.model).model if args.model else default_model(unit, seed=args.seed)
    spec = model.spec
    config = unit.inference()
    s = config.num_samples
    num_series = args.series or (64 if args.quick else 256)
    rule = rule_tile_rows(spec.num_cells, spec.num_layers, "fp32")
    tiles = args.tiles or sorted(
        {rule, max(48, rule // 2), 2 * rule} if args.quick else set(candidate_tiles(rule)) | {6400}
    )

    data = DataSpec(
        series=num_series,
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
    chunks = _window_tensors(model, batch, DEFAULT_MAX_ROWS // s, device)
    flops = lstm_flops_per_series(spec, s)
    k, n = gluonts_input_width(spec) + spec.num_cells, 4 * spec.num_cells

    def floor_rate(dtype: torch.dtype) -> float:
        rows = sorted({min(t, DEFAULT_MAX_ROWS) for t in tiles} | {DEFAULT_MAX_ROWS})
        return max(matmul_flops_per_s(r, k, n, device, args.mm_seconds, dtype) for r in rows)

    cases: list[tuple[str, int | None, str]] = [("before", None, "fp32")]
    cases += [(f"fp32 tile={t}", t, "fp32") for t in tiles]
    if not args.no_bf16:
        cases.append((f"bf16 tile={rule}", rule, "bf16"))

    # What a worker-start calibration would pick: 16 series (1,600 rows), each candidate once.
    probe: dict[str, Any] = {key: value[:16] for key, value in chunks[0].items()}
    started = time.perf_counter()
    calibrated, calib_seconds = calibrate_tile_rows(
        lambda t: sample_paths(
            model, **probe, num_samples=s, generator=torch.Generator().manual_seed(0), tile_rows=t
        ),
        candidate_tiles(rule),
        repeats=1,
    )
    calibration_s = time.perf_counter() - started

    records = []
    for name, tile, precision in cases:
        dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        saved_env = os.environ.get("BATCHCAST_BF16")
        os.environ["BATCHCAST_BF16"] = "force"
        path = _TorchPath() if name == "before" else contextlib.nullcontext()
        try:
            with path:

                def run_forecast(tile: int | None = tile, precision: str = precision) -> None:
                    gen = torch.Generator().manual_seed(args.seed)
                    forecast(
                        model, batch, config, generator=gen, tile_rows=tile, precision=precision
                    )

                def run_sampler(tile: int | None = tile, precision: str = precision) -> None:
                    gen = torch.Generator().manual_seed(args.seed)
                    for tensors in chunks:
                        sample_paths(
                            model,
                            **tensors,
                            num_samples=s,
                            generator=gen,
                            tile_rows=tile,
                            precision=precision,
                        )

                run_sampler()  # warm-up
                fractions, sampler_fractions, speeds, sampler_speeds, floors = [], [], [], [], []
                for _ in range(repeats if precision == "fp32" or bf16_hardware() else 1):
                    floor = floor_rate(dtype) / flops
                    seconds = _median_seconds(run_forecast, device, 1)
                    sampler_seconds = _median_seconds(run_sampler, device, 1)
                    speeds.append(batch.num_series / seconds)
                    sampler_speeds.append(batch.num_series / sampler_seconds)
                    floors.append(floor)
                    fractions.append(speeds[-1] / floor)
                    sampler_fractions.append(sampler_speeds[-1] / floor)
        finally:
            if saved_env is None:
                os.environ.pop("BATCHCAST_BF16", None)
            else:
                os.environ["BATCHCAST_BF16"] = saved_env
        records.append(
            emit(
                BENCHMARK,
                name,
                {
                    "tile_rows": tile,
                    "rule_tile_rows": rule,
                    "calibrated_tile_rows": calibrated,
                    "calibration_s": calibration_s,
                    "calibration_seconds": {str(t): v for t, v in calib_seconds.items()},
                    "precision": precision,
                    "bf16_hardware": bf16_hardware(),
                    "series": batch.num_series,
                    "threads": args.threads,
                    "series_per_s": statistics.median(speeds),
                    "sampler_series_per_s": statistics.median(sampler_speeds),
                    "floor_series_per_s": statistics.median(floors),
                    "mm_gflops": statistics.median(floors) * flops / 1e9,
                    "fraction_of_floor": statistics.median(fractions),
                    "sampler_fraction_of_floor": statistics.median(sampler_fractions),
                    "l2_bytes": l2_bytes(),
                    "cpu_flags": _cpu_flags(),
                    "fused_kernel": lstm_kernel() is not None and name != "before",
                    "work_unit": unit.describe(),
                    "model": args.model or "initial weights",
                },
            )
        )
    if args.append_results:
        append_results(Path(args.append_results), records, describe)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
