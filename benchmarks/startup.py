"""A small job as a user runs it: how long does ``batchcast transform`` take as a whole process?

Question (issue "Speed on any CPU"): a 3,000-series job is mostly start-up. This runs
``python -m batchcast transform`` as a fresh subprocess (imports, Ray start-up, worker start,
the job, teardown: what a user waits for) over 3,000 series of ~700 points with one ``cat``
and one dynamic feature, on the default network (2 x 40, student-T, 100 paths), and reads
the job's own clock from its summary: Ray start-up, workers ready, first output line (from
the job's start), the job's total. ``process_s - total_s`` is what happens outside the job's
clock (interpreter start, imports, shutdown). The median of ``--repeats`` runs is reported,
each beside ``python -c "import batchcast.cli"`` (the cost of starting Python at all).

Three cases, interleaved run by run: ``--executor auto`` (what a user gets: for this job, the
local executor's threads, no Ray), the same with ``BATCHCAST_TILE_ROWS=rule`` (the cache
rule's tile instead of the one the worker times at start: that timing's baseline), and
``--executor ray`` (the same job on a private local Ray: the baseline, what every job paid
before the local executor). Their outputs are compared byte for byte.

    python -m benchmarks.startup            # about 1 minute on 2 cores
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import torch

from batchcast.forecast import DeepAR
from batchcast.forecast.config import DeepARConfig
from batchcast.forecast.train import make_spec
from batchcast.forecast.tuning import TILE_ROWS_ENV
from batchcast.models import save_model
from benchmarks.common import WorkUnit, emit
from benchmarks.data import DataSpec, ensure_jsonl


def _model(folder: Path, unit: WorkUnit) -> str:
    config = DeepARConfig(
        time_freq=unit.freq,
        context_length=unit.context_length,
        prediction_length=unit.prediction_length,
        epochs=1,
        num_cells=unit.num_cells,
        num_layers=unit.num_layers,
        likelihood=unit.likelihood,
    )
    torch.manual_seed(0)
    spec = make_spec(config, cardinality=(5,), num_dynamic_feat=1, default_scale=None)
    return save_model(DeepAR(spec).eval(), str(folder / "model"))


def _timed(
    command: list[str], env: dict[str, str]
) -> tuple[float, subprocess.CompletedProcess[str]]:
    t0 = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    return time.perf_counter() - t0, done


# name -> (--executor, extra environment): the rule's tile is the baseline of the timed one.
CASES: dict[str, tuple[str, dict[str, str]]] = {
    "auto": ("auto", {}),
    "auto, rule tile": ("auto", {TILE_ROWS_ENV: "rule"}),
    "ray": ("ray", {}),
}


def _one_run(
    model: str, source: Path, out: Path, workers: int, executor: str, extra: dict[str, str]
) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")} | extra
    command = [
        sys.executable, "-m", "batchcast", "transform", "--model", model,
        "--input", str(source), "--output", str(out), "--workers", str(workers), "--json",
        "--executor", executor,
    ]  # fmt: skip
    process_s, done = _timed(command, env)
    if done.returncode != 0:
        raise SystemExit(f"transform failed: {done.stderr.strip()[-2000:]}")
    summary = orjson.loads((out / "_batchcast_summary.json").read_bytes())
    t = summary["timings"]
    return {
        "process_s": process_s,
        "total_s": t.get("total_s"),
        "ray_init_s": t.get("ray_init_s"),
        "workers_ready_s": t.get("workers_ready_s"),
        "first_output_s": t.get("first_output_s"),
        "series_per_s": t.get("series_per_s"),
        "outside_job_s": process_s - (t.get("total_s") or 0.0),
        "executor": summary.get("cluster", {}).get("executor", "ray"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=3000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "bc-startup")
    args = parser.parse_args()
    unit = WorkUnit()
    args.workdir.mkdir(parents=True, exist_ok=True)
    spec = DataSpec(
        series=args.series, freq=unit.freq, length=(650, 750), cardinality=(5,),
        num_dynamic_feat=1, future_length=unit.prediction_length, seed=0,
    )  # fmt: skip
    source = ensure_jsonl(spec, args.workdir)
    model = _model(args.workdir, unit)
    import_s = statistics.median(
        _timed([sys.executable, "-c", "import batchcast.cli"], dict(os.environ))[0]
        for _ in range(3)
    )
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in CASES}
    for i in range(args.repeats):
        for name, done in runs.items():  # interleaved: a change in load hits every case
            executor, extra = CASES[name]
            out = args.workdir / f"out-{name.replace(', ', '-').replace(' ', '-')}-{i}"
            shutil.rmtree(out, ignore_errors=True)
            done.append(_one_run(model, source, out, args.workers, executor, extra))
    first = {name: _outputs(args.workdir / f"out-{name}-0") for name in ("auto", "ray")}
    same = first["auto"] == first["ray"]
    same_rule = first["auto"] == _outputs(args.workdir / "out-auto-rule-tile-0")
    medians = {}
    for executor, done in runs.items():
        fields: dict[str, Any] = {
            key: statistics.median(r[key] for r in done if r[key] is not None)
            for key in done[0]
            if key != "executor"
        }
        fields.update(series=args.series, workers=args.workers, repeats=args.repeats)
        fields["executor"] = done[0]["executor"]
        fields["python_and_cli_import_s"] = import_s
        medians[executor] = fields
    medians["auto"]["same_bytes_as_ray"] = same
    medians["auto"]["same_bytes_as_rule_tile"] = same_rule
    medians["auto"]["vs_ray_process"] = medians["ray"]["process_s"] / medians["auto"]["process_s"]
    rule = medians["auto, rule tile"]
    medians["auto"]["vs_rule_tile_process"] = rule["process_s"] / medians["auto"]["process_s"]
    for executor, fields in medians.items():
        emit(
            "startup", f"{args.series} series, {args.workers} workers, executor {executor}", fields
        )
    return 0


def _outputs(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.out"))}


if __name__ == "__main__":
    raise SystemExit(main())
