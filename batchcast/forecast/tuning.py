"""Rows per sampling step (the physical tile) for this CPU's cache: a rule, or a quick calibration.

The sampler's logical unit of work (``max_rows``: which series share one generator pass) is
fixed and part of a forecast's identity; the tile is how many of those rows go through one
GEMM + fused-cell pass at a time, a pure performance knob (the fused cell computes each row
alike whatever the tile, see ``sampling.py``). A tile whose working set (gate buffer and the
tile's slice of the state) fits in half the per-core L2 keeps every elementwise pass in L2;
larger tiles amortise per-call overhead. Neither constant is written for one CPU: the L2 size
is read from the OS, and :func:`calibrate_tile_rows` can time candidates on the real model.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path

import torch

__all__ = ["calibrate_tile_rows", "l2_bytes", "rule_tile_rows"]

_FALLBACK_L2 = 1 << 20  # when the OS does not say: a middle-of-the-road 1 MiB
_QUANTUM = 16  # tile rows are a multiple of this (whole cache lines of fp32 state for H % 4 == 0)
_MIN_ROWS, _MAX_ROWS = 64, 8192


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
