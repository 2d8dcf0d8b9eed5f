"""A baseline as several processes at once: its best configuration may be more than one.

A library that runs one series batch at a time on one process can still use every core the way
a deployment does (SageMaker's container runs ``MODEL_SERVER_WORKERS`` processes; a batch job
splits its input): ``P`` processes of ``cores // P`` threads each, every one on its own
``1/P`` of the input. On 2 cores GluonTS ran 1.7x faster as two one-thread processes than as
one two-thread process (measured 2026-12-07, benchmarks/RESULTS.md): small GEMMs do not scale
over threads, processes do. So a baseline's best configuration is searched over processes as
well as batch size and threads, and batchcast's ratios are taken against the best.

Protocol. The parent starts ``P`` children of ``benchmarks.baselines --child KIND --part i/P``.
Each loads its model, warms up, prints ``{"ready": true}``, and waits for a line on its stdin;
the parent sends ``go`` to all at once. Each then times reading its slice of the first
``--series`` lines, forecasting and writing them, and prints its record with wall-clock
``started_ns``/``finished_ns`` stamps. The aggregate rate is all series over the span from the first
start to the last finish; memory is the children's peak RSS summed.
"""

from __future__ import annotations

import argparse
import itertools
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

import orjson

from benchmarks.common import REPO, emit, peak_rss_mb, reset_peak_rss

__all__ = ["measure_part", "part_slice", "process_counts", "read_slice", "run_parts"]

_READY = b'{"ready": true}\n'


def process_counts(cores: int) -> list[int]:
    """The process counts worth trying beside one process: each ``P > 1`` that divides
    ``cores`` (threads ``cores // P`` each, so every configuration uses every core)."""
    return [p for p in range(2, cores + 1) if cores % p == 0]


def part_slice(part: str, series: int) -> tuple[int, int]:
    """Lines ``[lo, hi)`` of the first ``series`` that part ``"i/P"`` forecasts (contiguous,
    sizes differing by at most one).

    Raises:
        ValueError: for a malformed part or ``i`` outside ``0 .. P-1``.
    """
    index, _, total = part.partition("/")
    i, p = int(index), int(total)
    if not 0 <= i < p:
        raise ValueError(f"part must be i/P with 0 <= i < P, got {part!r}")
    return i * series // p, (i + 1) * series // p


def read_slice(path: Path, lo: int, hi: int) -> list[bytes]:
    """Lines ``[lo, hi)`` of ``path``, without newlines."""
    with path.open("rb") as f:
        return [line.rstrip(b"\n") for line in itertools.islice(f, lo, hi)]


def measure_part(
    benchmark: str,
    name: str,
    config: dict[str, Any],
    run: Callable[[list[bytes], Any], int],
    args: argparse.Namespace,
) -> None:
    """The child's side: warm up ``run``, say ready, wait for ``go`` on stdin, then time this
    part's slice (read, forecast, write) and print one record with its wall-clock stamps."""
    out = Path(tempfile.gettempdir()) / f"batchcast-bench-{name}-part-{os.getpid()}.jsonl"
    with out.open("wb") as f:
        run(read_slice(args.input, 0, args.warmup_series), f)
    sys.stdout.buffer.write(_READY)
    sys.stdout.flush()
    if not sys.stdin.readline():  # the parent closed stdin without releasing us: aborted
        return
    reset_peak_rss()
    lo, hi = part_slice(args.part, args.series)
    started_ns, t0 = time.time_ns(), time.perf_counter()
    lines = read_slice(args.input, lo, hi)
    with out.open("wb") as f:
        series = run(lines, f)
    seconds = time.perf_counter() - t0
    out_bytes = out.stat().st_size
    out.unlink()
    emit(
        benchmark,
        f"{name} part",
        {
            "baseline": name,
            **config,
            "part": args.part,
            "series": series,
            "seconds": seconds,
            # integers: emit rounds floats to 5 digits, which would erase a span
            "started_ns": started_ns,
            "finished_ns": started_ns + round(seconds * 1e9),
            "in_bytes": sum(len(line) + 1 for line in lines),
            "out_bytes": out_bytes,
            "peak_rss_mb": peak_rss_mb(),
        },
    )


def _start(command: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        command,
        cwd=REPO,
        env={**os.environ, **env},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )


def _read_record(stdout: IO[bytes], *, ready: bool) -> dict[str, Any]:
    """The child's next JSON line (the ready line, or its record); other output to stderr."""
    for line in stdout:
        if ready and line == _READY:
            return {"ready": True}
        if line.startswith(b"{") and not ready:
            return dict(orjson.loads(line))
        sys.stderr.buffer.write(line)
    raise RuntimeError("a baseline part exited before it reported")


def run_parts(
    benchmark: str,
    kind: str,
    arguments: Sequence[str],
    config: dict[str, Any],
    processes: int,
    *,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Run ``processes`` children of ``--child kind`` (``arguments`` fix the configuration:
    one batch size and thread count), released together; print and return the aggregate.

    Raises:
        RuntimeError: when a child fails or reports nothing.
    """
    base = [sys.executable, "-m", "benchmarks.baselines", "--child", kind, *arguments]
    children = [_start([*base, "--part", f"{i}/{processes}"], env or {}) for i in range(processes)]
    try:
        parts = _release(children)
    except BaseException:
        for child in children:  # one failed: the others must not wait for a release
            child.kill()
            child.wait()
        raise
    for child in children:
        if child.wait(timeout=600) != 0:
            raise RuntimeError(f"a {kind} part failed (exit {child.returncode}): {base}")
    return _aggregate(benchmark, kind, config, processes, parts)


def _release(children: list[subprocess.Popen[bytes]]) -> list[dict[str, Any]]:
    """Wait until every child is ready, send ``go`` to all, and return their records."""
    for child in children:
        assert child.stdout is not None  # stdout=PIPE
        _read_record(child.stdout, ready=True)
    for child in children:  # released back to back: microseconds apart
        assert child.stdin is not None  # stdin=PIPE
        child.stdin.write(b"go\n")
        child.stdin.flush()
    parts = []
    for child in children:
        assert child.stdout is not None
        assert child.stdin is not None
        parts.append(_read_record(child.stdout, ready=False))
        child.stdin.close()
    return parts


def _aggregate(
    benchmark: str, kind: str, config: dict[str, Any], processes: int, parts: list[dict[str, Any]]
) -> dict[str, Any]:
    span = (max(p["finished_ns"] for p in parts) - min(p["started_ns"] for p in parts)) / 1e9
    series = sum(p["series"] for p in parts)
    rss = [p["peak_rss_mb"] for p in parts]
    return emit(
        benchmark,
        kind,
        {
            "baseline": kind,
            **config,
            "processes": processes,
            "final": True,
            "series": series,
            "seconds": span,
            "series_per_s": series / span,
            "mb_in_per_s": sum(p["in_bytes"] for p in parts) / span / 1e6,
            "mb_out_per_s": sum(p["out_bytes"] for p in parts) / span / 1e6,
            "peak_rss_mb": None if None in rss else sum(rss),
            "part_seconds": [p["seconds"] for p in parts],
        },
    )
