"""Synthetic inputs for the benchmarks: N series in SageMaker's JSON Lines, fixed seed.

A command-line wrapper around :func:`batchcast.synthetic.synthetic_records` (the generator
the demo and the tests use): frequency, target lengths, optional ``cat`` and
``dynamic_feat``, a fraction of ``"NaN"`` points. The same seed gives the same file, and the
first k lines of a larger file equal the k-line file (the generator is a sequential stream),
so baselines can run on a prefix of the measured input.

    python -m benchmarks.data --series 10k --freq H --length 900-1100 --out /tmp/hourly.jsonl

(about 9,000 series/s, 7 kB per 1,000-point series: 1M series is ~7 GB in ~2 minutes)
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from batchcast.synthetic import synthetic_records, write_jsonl
from benchmarks.common import HelpFormatter, count, int_list, length_range

__all__ = ["DataSpec", "ensure_jsonl", "write"]


@dataclass(frozen=True)
class DataSpec:
    """One synthetic input: everything :func:`synthetic_records` takes.

    ``future_length`` is the number of ``dynamic_feat`` points past the target:
    ``prediction_length`` for inference input that has dynamic features, 0 for training data.
    """

    series: int
    freq: str = "H"
    length: tuple[int, int] = (900, 1100)
    cardinality: tuple[int, ...] = ()
    num_dynamic_feat: int = 0
    future_length: int = 0
    nan_fraction: float = 0.0
    seed: int = 0

    def records(self) -> Iterator[dict[str, Any]]:
        return synthetic_records(
            self.series,
            freq=self.freq,
            length=self.length,
            cardinality=self.cardinality,
            num_dynamic_feat=self.num_dynamic_feat,
            future_length=self.future_length,
            nan_fraction=self.nan_fraction,
            seed=self.seed,
        )

    def lines(self) -> list[bytes]:
        """The records as JSON lines (no newline), in memory."""
        return [orjson.dumps(r) for r in self.records()]

    @property
    def filename(self) -> str:
        """A name that fixes the content: two specs with the same name write the same bytes."""
        lo, hi = self.length
        parts = [f"{self.freq}-n{self.series}-len{lo}-{hi}-seed{self.seed}"]
        if self.cardinality:
            parts.append("cat" + "x".join(map(str, self.cardinality)))
        if self.num_dynamic_feat:
            parts.append(f"dyn{self.num_dynamic_feat}f{self.future_length}")
        if self.nan_fraction:
            parts.append(f"nan{self.nan_fraction:g}")
        return "-".join(parts) + ".jsonl"


def write(spec: DataSpec, path: Path) -> Path:
    """Write ``spec``'s records to ``path`` (via a temporary name: a killed run leaves no
    partial file that :func:`ensure_jsonl` would reuse)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write_jsonl(tmp, spec.records())
    os.replace(tmp, path)
    return path


def ensure_jsonl(spec: DataSpec, folder: Path) -> Path:
    """``folder / spec.filename``, generated unless it is already there."""
    path = folder / spec.filename
    return path if path.exists() else write(spec, path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.data", description=__doc__, formatter_class=HelpFormatter
    )
    parser.add_argument("--series", type=count, required=True, help="number of series (10k, 1M)")
    parser.add_argument("--freq", default="H", help="SageMaker time_freq")
    parser.add_argument(
        "--length", type=length_range, default=(900, 1100), metavar="N|LO-HI", help="points"
    )
    parser.add_argument(
        "--cardinality",
        type=int_list,
        default=[],
        metavar="C1,C2",
        help="one cat feature per entry",
    )
    parser.add_argument("--dynamic-feat", type=int, default=0, help="dynamic features per record")
    parser.add_argument(
        "--future-length",
        type=int,
        default=None,
        help="dynamic-feature points past the target (None: 24 with --dynamic-feat, else 0)",
    )
    parser.add_argument("--nan-fraction", type=float, default=0.0, help='share of "NaN" points')
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--out", type=Path, required=True, help="the .jsonl file to write")
    args = parser.parse_args(argv)
    future = args.future_length
    if future is None:
        future = 24 if args.dynamic_feat else 0
    spec = DataSpec(
        series=args.series,
        freq=args.freq,
        length=args.length,
        cardinality=tuple(args.cardinality),
        num_dynamic_feat=args.dynamic_feat,
        future_length=future,
        nan_fraction=args.nan_fraction,
        seed=args.seed,
    )
    started = time.perf_counter()
    write(spec, args.out)
    seconds = time.perf_counter() - started
    size = args.out.stat().st_size
    print(
        orjson.dumps(
            {"out": str(args.out), "series": spec.series, "bytes": size, "seconds": seconds}
        ).decode()
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
