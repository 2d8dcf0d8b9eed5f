"""What the benchmark scripts share: the work unit, flag parsers, machine info, JSON lines,
peak-RSS readings and RESULTS.md rows.

Every case is printed as one JSON object on stdout (:func:`emit`) carrying the machine and the
date; ``--append-results`` adds one table row per case to ``benchmarks/RESULTS.md``
(:func:`append_results`).

Peak RSS is Linux's ``VmHWM`` ("high water mark" of the resident set) from
``/proc/<pid>/status``. A process resets its own with ``/proc/self/clear_refs`` (value 5), so
a per-case peak of the current process is exact.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import os
import platform
import subprocess
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from batchcast.forecast.config import InferenceConfig

__all__ = [
    "REPO",
    "RESULTS_MD",
    "HelpFormatter",
    "WorkUnit",
    "add_results_flag",
    "append_results",
    "count",
    "emit",
    "int_list",
    "length_range",
    "machine_info",
    "peak_rss_mb",
    "reset_peak_rss",
]

REPO = Path(__file__).resolve().parent.parent
RESULTS_MD = REPO / "benchmarks" / "RESULTS.md"


@dataclass(frozen=True)
class WorkUnit:
    """The default work unit of every benchmark: an hourly DeepAR, context 24, prediction 24,
    2 x 40 LSTM cells, Student-T, 100 sample paths, output mean + 9 quantiles, series of
    about 1,000 points (900-1,100)."""

    freq: str = "H"
    context_length: int = 24
    prediction_length: int = 24
    num_cells: int = 40
    num_layers: int = 2
    likelihood: str = "student-T"
    num_samples: int = 100
    length: tuple[int, int] = (900, 1100)

    def inference(self) -> InferenceConfig:
        """Mean and the default quantiles 0.1 .. 0.9 from ``num_samples`` paths."""
        return InferenceConfig(num_samples=self.num_samples, output_types=("mean", "quantiles"))

    def describe(self) -> dict[str, Any]:
        return {
            "freq": self.freq,
            "context_length": self.context_length,
            "prediction_length": self.prediction_length,
            "num_cells": self.num_cells,
            "num_layers": self.num_layers,
            "likelihood": self.likelihood,
            "num_samples": self.num_samples,
            "length": list(self.length),
        }


# ---------------------------------------------------------------------------------------------
# Flag parsers (argparse ``type=``)


def count(text: str) -> int:
    """``"2000"``, ``"10k"``, ``"1M"`` -> an integer >= 1."""
    text = text.strip()
    factor = {"k": 1_000, "K": 1_000, "m": 1_000_000, "M": 1_000_000}.get(text[-1:], 1)
    digits = text[:-1] if factor > 1 else text
    try:
        value = int(float(digits) * factor)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a count like 2000, 10k or 1M, got {text!r}"
        ) from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a count >= 1, got {text!r}")
    return value


def int_list(text: str) -> list[int]:
    """``"1,2,4"`` (counts allowed: ``"10k,100k"``) -> ``[1, 2, 4]``."""
    return [count(part) for part in text.split(",") if part.strip()]


def length_range(text: str) -> tuple[int, int]:
    """``"1000"`` -> (1000, 1000); ``"900-1100"`` -> (900, 1100)."""
    lo, _, hi = text.partition("-")
    try:
        bounds = (int(lo), int(hi or lo))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a length like 1000 or 900-1100, got {text!r}"
        ) from None
    if not 1 <= bounds[0] <= bounds[1]:
        raise argparse.ArgumentTypeError(f"expected 1 <= lo <= hi, got {text!r}")
    return bounds


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the module docstring's layout and shows every flag's default."""


def add_results_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--append-results",
        nargs="?",
        const=RESULTS_MD,
        default=None,
        type=Path,
        metavar="FILE",
        help=f"append one table row per case to FILE ({RESULTS_MD.relative_to(REPO)} if no FILE)",
    )


# ---------------------------------------------------------------------------------------------
# Machine, process memory


def _first_match(path: str, key: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                name, _, value = line.partition(":")
                if name.strip() == key:
                    return value.strip()
    except OSError:
        return None
    return None


def _git(*args: str) -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO), *args], capture_output=True, text=True, check=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip()


@functools.cache
def machine_info() -> dict[str, Any]:
    """Cores, CPU model, memory, GPU, library versions, git commit, and the load when the
    run started (a busy machine shows here)."""
    import torch

    mem_kb = _first_match("/proc/meminfo", "MemTotal")
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    commit = _git("rev-parse", "--short=12", "HEAD") or "unknown"
    if _git("status", "--porcelain", "--untracked-files=no", "--", "batchcast", "benchmarks"):
        commit += "-dirty"
    try:
        load = float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        load = None
    return {
        "cores": os.cpu_count(),
        "cpu_model": _first_match("/proc/cpuinfo", "model name") or platform.processor(),
        "memory_gb": round(int(mem_kb.split()[0]) / 2**20, 1) if mem_kb else None,
        "gpu": gpu,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "commit": commit,
        "loadavg_1m_at_start": load,
        "env": {
            k: os.environ[k]
            for k in ("MALLOC_TOP_PAD_", "OMP_NUM_THREADS", "RAY_ADDRESS")
            if k in os.environ
        },
    }


def _status_kb(pid: int | str, key: str) -> int | None:
    value = _first_match(f"/proc/{pid}/status", key)
    return int(value.split()[0]) if value else None


def reset_peak_rss() -> bool:
    """Reset this process's VmHWM to its current RSS; False where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def peak_rss_mb(pid: int | str = "self") -> float | None:
    """Peak resident set (VmHWM) of ``pid`` in MiB; None if it is gone or not Linux."""
    kb = _status_kb(pid, "VmHWM")
    return None if kb is None else kb / 1024


# ---------------------------------------------------------------------------------------------
# Output


def _rounded(value: Any) -> Any:
    """Floats to 5 significant digits, recursively: readable lines, no false precision."""
    if isinstance(value, float):
        return float(f"{value:.5g}")
    if isinstance(value, Mapping):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_rounded(v) for v in value]
    return value


def emit(benchmark: str, case: str, fields: Mapping[str, Any]) -> dict[str, Any]:
    """Print one case as a JSON line (with the date and the machine) and return it."""
    record = {
        "benchmark": benchmark,
        "case": case,
        **_rounded(dict(fields)),
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": machine_info(),
    }
    print(orjson.dumps(record).decode(), flush=True)
    return record


_HEADER = "| date (UTC) | commit | machine | benchmark | case | result |"


def append_results(
    path: Path, records: Iterable[Mapping[str, Any]], describe: Callable[[Mapping[str, Any]], str]
) -> None:
    """Append one row per record to the markdown table in ``path`` (adds the table header
    if the file does not have it yet)."""
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    rows = []
    for r in records:
        m = r["machine"]
        machine = f"{m['cores']}x {m['cpu_model']}, GPU {m['gpu']}, torch {m['torch']}"
        rows.append(
            f"| {r['date']} | {m['commit']} | {machine} | {r['benchmark']} | {r['case']} "
            f"| {describe(r)} |\n"
        )
    with path.open("a", encoding="utf-8") as f:
        if _HEADER not in text:
            if text and not text.endswith("\n\n"):
                f.write("\n" if text.endswith("\n") else "\n\n")
            f.write(_HEADER + "\n|---|---|---|---|---|---|\n")
        f.writelines(rows)
