"""Rows per sampling step (the physical tile) for this CPU's cache: a rule, or a quick calibration.

The sampler's logical unit of work (``max_rows``: which series share one generator pass) is
fixed and part of a forecast's identity; the tile is how many of those rows go through one
GEMM + fused-cell pass at a time, a pure performance knob (the fused cell computes each row
alike whatever the tile, see ``sampling.py``). A tile whose working set (gate buffer and the
tile's slice of the state) fits in half the per-core L2 keeps every elementwise pass in L2;
larger tiles amortise per-call overhead. Neither constant is written for one CPU: the L2 size
is read from the OS, and :func:`calibrate_tile_rows` can time candidates on the real model.

Which wins is the CPU's business, not a rule's: on a Zen 4 core with 1 MiB of L2 the rule's
~500 rows ran 476 series/s on one thread and 850 on two threads of one process, where 1,600
rows ran 506 and 974 (per-call overhead, and the GIL that two threads share between calls,
outweigh the L2 misses). So a worker times the rule's tile and its neighbours once, on the
real network and synthetic inputs, when it loads a model (:func:`tile_rows_for`: ~0.2 s,
once per machine and network: the choice is remembered beside the fused cell's build, under
``$BATCHCAST_CACHE_DIR``, keyed by the network, threads, torch and the cell's build, which
holds the CPU's identity); the tile never changes a byte of output.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from batchcast.errors import ConfigError

if TYPE_CHECKING:
    from batchcast.forecast.model import DeepAR

__all__ = [
    "CALIBRATION_SERIES",
    "TILE_ROWS_ENV",
    "calibrate_tile_rows",
    "candidate_tiles",
    "l2_bytes",
    "rule_tile_rows",
    "tile_rows_for",
]

_FALLBACK_L2 = 1 << 20  # when the OS does not say: a middle-of-the-road 1 MiB
_QUANTUM = 16  # tile rows are a multiple of this (whole cache lines of fp32 state for H % 4 == 0)
_MIN_ROWS, _MAX_ROWS = 64, 8192
# Series of the calibration's probe: 1,600 rows at 100 paths, the size of a real chunk's tiles,
# ~30 ms a run on one core.
CALIBRATION_SERIES = 16
TILE_ROWS_ENV = "BATCHCAST_TILE_ROWS"
_CALIBRATION_PATHS = 100
_calibrated: dict[tuple[object, ...], int] = {}
_calibrating = threading.Lock()


@functools.lru_cache(maxsize=1)
def l2_bytes() -> int:
    """Per-core L2 (or the last private data cache) size in bytes, from sysfs; 1 MiB if unknown."""
    root = Path("/sys/devices/system/cpu/cpu0/cache")
    best = 0
    try:
        for index in sorted(root.glob("index*")):
            level = int((index / "level").read_text())
            kind = (index / "type").read_text().strip()
            if level == 2 and kind in {"Unified", "Data"}:
                best = max(best, _parse_size((index / "size").read_text().strip()))
    except (OSError, ValueError):
        return _FALLBACK_L2
    return best or _FALLBACK_L2


def _parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    if text and text[-1].upper() in units:
        return int(text[:-1]) * units[text[-1].upper()]
    return int(text)


def bytes_per_row(num_cells: int, num_layers: int, precision: str) -> int:
    """Bytes one row of a tile touches per step: gates (4H, fp32 or bf16 + an fp32 addend),
    c and h of every layer (fp32), the bf16 GEMM copy of h, and the head's outputs."""
    h = num_cells
    gates = 4 * h * (4 if precision == "fp32" else 2 + 4)
    state = num_layers * h * (4 + 4 + (2 * 2 if precision == "bf16" else 0))
    return gates + state + 16


def rule_tile_rows(
    num_cells: int, num_layers: int, precision: str = "fp32", *, cache: int | None = None
) -> int:
    """Rows whose working set fills half of L2 (the other half for weights and the stream of
    state rows), rounded down to a multiple of 16 and kept in [64, 8192]."""
    budget = (cache if cache is not None else l2_bytes()) // 2
    rows = budget // bytes_per_row(num_cells, num_layers, precision)
    rows = (rows // _QUANTUM) * _QUANTUM
    return max(_MIN_ROWS, min(_MAX_ROWS, rows))


def calibrate_tile_rows(
    run: object,
    candidates: list[int],
    *,
    repeats: int = 2,
) -> tuple[int, dict[int, float]]:
    """Time ``run(tile_rows)`` for each candidate; the fastest wins.

    Args:
        run: a callable taking ``tile_rows`` and doing one representative unit of work.
        candidates: tile sizes to try (each run ``repeats`` times; the best time counts).
        repeats: timed runs per candidate, after one untimed warm-up of the first.

    Returns:
        (the chosen tile rows, seconds per candidate).
    """
    assert callable(run)
    run(candidates[0])
    seconds: dict[int, float] = {}
    for rows in candidates:
        best = float("inf")
        for _ in range(repeats):
            started = time.perf_counter()
            run(rows)
            best = min(best, time.perf_counter() - started)
        seconds[rows] = best
    return min(seconds, key=seconds.__getitem__), seconds


def candidate_tiles(rule: int) -> list[int]:
    """The rule's tile and its neighbours by factors of two, within the allowed range."""
    out = {rule}
    for factor in (0.5, 2.0, 4.0):
        rows = int(rule * factor) // _QUANTUM * _QUANTUM
        out.add(max(_MIN_ROWS, min(_MAX_ROWS, rows)))
    return sorted(out)


def synthetic_inputs(
    spec: object, num_series: int, device: torch.device
) -> dict[str, torch.Tensor]:
    """Sampler inputs of the right shapes (ones and zeros) for timing a network."""
    from batchcast.forecast.config import ModelSpec

    assert isinstance(spec, ModelSpec)
    length = spec.past_length
    cov = spec.context_length + spec.prediction_length - 1
    width = spec.num_feature_columns
    return {
        "past_target": torch.ones(num_series, length, device=device),
        "past_observed": torch.ones(num_series, length, device=device),
        "covariates": torch.zeros(num_series, cov, width, device=device),
        "cat": torch.zeros(num_series, len(spec.cardinality), dtype=torch.long, device=device),
    }


def tile_rows_for(model: DeepAR, precision: str, device: torch.device) -> int | None:
    """The tile for ``model`` on this CPU, timed once per machine and network (remembered on
    disk, then looked up once per process: :func:`_remembered_or_timed`); None
    where tiles do not apply or are not timed (the sampler then uses the rule): not a CPU, no
    fused kernel, or bf16 (its tiles are left to the rule). ``BATCHCAST_TILE_ROWS`` set to
    ``rule`` skips the timing, set to a number forces that many rows: for measuring, as
    every choice gives the same bytes.

    Args:
        model: a :class:`~batchcast.forecast.model.DeepAR` in eval mode, on ``device``.
        precision: the sampler's precision as asked (``"fp32"`` or ``"bf16"``).
        device: the model's device.
    """
    # Imported here: the sampler imports this module for its rule.
    from batchcast.forecast.native import lstm_kernel

    kernel = lstm_kernel() if device.type == "cpu" else None
    if kernel is None or precision != "fp32":
        return None
    forced = os.environ.get(TILE_ROWS_ENV, "").strip().lower()
    if forced == "rule":
        return None
    if forced:
        try:
            return max(_MIN_ROWS, min(_MAX_ROWS, int(forced)))
        except ValueError:
            raise ConfigError(
                f"{TILE_ROWS_ENV} must be 'rule' or a number of rows, got {forced!r}"
            ) from None
    spec = model.spec
    key = (spec, precision, torch.get_num_threads())
    with _calibrating:  # threads of one process share one timing, taken without contention
        if key not in _calibrated:
            _calibrated[key] = _remembered_or_timed(model, precision, device, kernel.path.name)
        return _calibrated[key]


def _remembered_or_timed(model: DeepAR, precision: str, device: torch.device, build: str) -> int:
    """The tile this machine measured for this network before (from the disk cache), or a
    fresh timing, then remembered. The cache key holds everything the timing depends on: the
    network, the thread count, torch's version and the fused cell's ``build`` (its file name,
    which holds the CPU's model, flags and compiler); a change in any of them times again."""
    from batchcast.forecast.native import cache_dir
    from batchcast.forecast.sampling import sample_paths

    spec = model.spec
    identity = repr((spec, precision, torch.get_num_threads(), torch.__version__, build))
    entry = hashlib.sha256(identity.encode()).hexdigest()[:24]
    path = cache_dir() / "tiles" / f"{entry}.json"
    remembered = _read_tile(path)
    if remembered is not None:
        return remembered
    probe: dict[str, Any] = synthetic_inputs(spec, CALIBRATION_SERIES, device)
    rule = rule_tile_rows(spec.num_cells, spec.num_layers, precision)
    rows, seconds = calibrate_tile_rows(
        lambda rows: sample_paths(
            model,
            **probe,
            num_samples=_CALIBRATION_PATHS,
            generator=torch.Generator(device=device).manual_seed(0),
            tile_rows=rows,
        ),
        candidate_tiles(rule),
        repeats=1,
    )
    _write_tile(path, rows, seconds)
    return rows


def _read_tile(path: Path) -> int | None:
    """A remembered tile, or None when there is none (or it cannot be read: then re-time)."""
    try:
        rows = json.loads(path.read_text())["tile_rows"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if isinstance(rows, int) and _MIN_ROWS <= rows <= _MAX_ROWS and rows % _QUANTUM == 0:
        return rows
    return None


def _write_tile(path: Path, rows: int, seconds: dict[int, float]) -> None:
    """Remember a timing (best effort: a read-only cache only costs the next process 0.2 s)."""
    from batchcast.forecast.native import write_beside

    record = json.dumps({"tile_rows": rows, "seconds": {str(k): v for k, v in seconds.items()}})
    try:
        write_beside(path, lambda tmp: Path(tmp).write_text(record))
    except OSError:
        return
