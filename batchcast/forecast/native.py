"""The fused LSTM cell (``_lstm_cell.c``), compiled for this CPU on first use and called by ctypes.

Why a C kernel and not torch ops: the elementwise half of a sampling step (four gate
activations, the state update, ``tanh`` of the state) is ~10 separate torch kernels, each a
full pass over the gate buffer, and torch's vectorised ``sigmoid``/``tanh`` cost 1-4 ns per
element on some CPUs (measured: 1.0 and 3.6 ns on an AVX2 EPYC, 0.38 and 0.25 on an AMX Xeon,
so neither formulation is right everywhere). One pass with its own ``exp`` does the whole
cell at ~0.2 ns per element, on any x86 or ARM CPU gcc targets with ``-march=native``.

Why ctypes and a plain C file rather than a torch extension or ``torch.compile``: it needs
only a C compiler (no torch headers, no ninja), builds in ~0.3 s, and the build is cached, so
a cold worker start barely pays; ``torch.compile`` costs seconds of compilation plus its
imports in every fresh process (see benchmarks/RESULTS.md).

The shared object is cached under ``$BATCHCAST_CACHE_DIR`` (default
``$XDG_CACHE_HOME/batchcast`` or ``~/.cache/batchcast``), keyed by the source, the compiler's
version and flags and this CPU's model and feature flags: ``-march=native`` code must never
run on another CPU sharing the cache (a cluster's NFS home). Without a compiler, or with
``BATCHCAST_NATIVE=0``, :func:`lstm_kernel` returns None and the sampler uses torch ops
(slower, and different in the last bits of its output: see ``sampling.py``).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

__all__ = ["Extra", "LstmKernel", "cache_dir", "lstm_kernel", "write_beside"]

_LOG = logging.getLogger(__name__)
_SOURCE = Path(__file__).with_name("_lstm_cell.c")
_FLAGS = ("-O3", "-march=native", "-fno-math-errno", "-fno-trapping-math", "-fPIC", "-shared")
# gcc prefers 256-bit vectors even where AVX-512 exists (to avoid down-clocking on some
# Xeons). Whether 512-bit is faster depends on the CPU (measured: 18% faster on a Xeon @
# 2.6 GHz for 40 cells), so where the CPU has avx512f both builds are timed at first use, each
# with 1, 2 and 4 rows per loop body (how much independent work the core overlaps depends on
# its registers and latencies: 4 rows were 20% faster than 1 on Zen 4), and the fastest is
# kept. Neither choice changes a result: the cell is elementwise, every element computed by
# the same operations (checked bit for bit at first use, and by tests).
_WIDE = ("-mprefer-vector-width=512",)
_I64 = ctypes.c_int64
_PTR = ctypes.c_void_p


class Extra(ctypes.Structure):
    """``bc_extra`` of the C source: the fp32 addend of bf16 gates, and the head.

    Row ``r`` of a bf16 call adds ``add + r * add_stride`` (``add_stride`` 0 broadcasts a
    bias). With ``head_w`` set, each row's distribution arguments are written argument-major
    to ``head_out``. Pointers are ``data_ptr()`` integers (0 for none); strides in elements.
    """

    _fields_ = [
        ("add", _PTR),
        ("add_stride", _I64),
        ("head_w", _PTR),
        ("head_b", _PTR),
        ("nargs", _I64),
        ("head_out", _PTR),
        ("head_stride", _I64),
    ]


# The entry points by rows per loop body (see bc_rows4 in the C source): a speed choice only,
# every one computes the same bits.
_ENTRIES = {
    1: ("bc_lstm_cell_f32", "bc_lstm_cell_bf16"),
    2: ("bc_lstm_cell_f32_x2", "bc_lstm_cell_bf16_x2"),
    4: ("bc_lstm_cell_f32_x4", "bc_lstm_cell_bf16_x4"),
}


class LstmKernel:
    """The two entry points of the compiled cell, with their ctypes signatures set.

    ``f32(rows, hidden, gates, gs, extra, c, cs, h, hs, hb, hbs)`` and
    ``bf16(rows, hidden, gates, gs, extra, c, cs, h, hs, hb, hbs, scratch)``: ``extra`` is a
    ``ctypes.byref(Extra)`` or None; other pointers are ``data_ptr()`` integers (0 for NULL),
    strides are in elements (see the C source); ``scratch`` holds ``scratch_rows`` x 4H
    floats. ``variant`` names the build ("default", or "wide": 512-bit vectors preferred),
    ``group`` the rows both entries run per loop body.
    """

    def __init__(
        self, library: ctypes.CDLL, path: Path, variant: str = "default", group: int = 1
    ) -> None:
        self.library, self.path, self.variant, self.group = library, path, variant, group
        extra = ctypes.POINTER(Extra)
        f32_name, bf16_name = _ENTRIES[group]
        self.f32 = getattr(library, f32_name)
        self.f32.restype = None
        self.f32.argtypes = [_I64, _I64, _PTR, _I64, extra, _PTR, _I64, _PTR, _I64, _PTR, _I64]
        self.bf16 = getattr(library, bf16_name)
        self.bf16.restype = None
        self.bf16.argtypes = [
            *(_I64, _I64, _PTR, _I64, extra, _PTR, _I64, _PTR, _I64, _PTR, _I64, _PTR)
        ]
        library.bc_block_rows.restype = _I64
        self.scratch_rows = int(library.bc_block_rows())

    def groupings(self) -> list[LstmKernel]:
        """This build with each row grouping of its entries."""
        return [LstmKernel(self.library, self.path, self.variant, g) for g in _ENTRIES]

    def __repr__(self) -> str:
        return f"LstmKernel({self.variant}, {self.group} rows per pass)"


def cache_dir() -> Path:
    """Where batchcast keeps what it builds or measures for this machine."""
    explicit = os.environ.get("BATCHCAST_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "batchcast"


def write_beside(target: Path, write: Callable[[str], object]) -> None:
    """Make ``target`` by ``write(tmp)`` on a temporary name beside it, then rename it into
    place: a concurrent process (another worker sharing the cache) never reads a half-written
    file, and the temporary never stays behind, whatever ``write`` raises.

    Raises:
        OSError: or whatever ``write`` raises.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=target.name, suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _cpu_identity() -> str:
    """The CPU's model name and feature flags (what ``-march=native`` compiles for)."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return platform.processor() + platform.machine()
    keep = []
    for line in text.splitlines():
        key = line.split(":", 1)[0].strip()
        if key in {"model name", "flags", "Features", "CPU part", "vendor_id"}:
            keep.append(line.strip())
            if len(keep) >= 5:
                break
    return "\n".join(sorted(set(keep)))


def _compiler_version(compiler: str) -> str:
    out = subprocess.run(
        [compiler, "--version"], capture_output=True, text=True, timeout=30, check=False
    )
    return out.stdout.splitlines()[0] if out.stdout else compiler


def _build(compiler: str, extra: tuple[str, ...] = ()) -> Path:
    """Compile (or find in the cache) the shared object; returns its path.

    Raises:
        OSError: or subprocess errors, when the compiler fails.
    """
    source = _SOURCE.read_bytes()
    flags = (*_FLAGS, *extra)
    key = hashlib.sha256(
        b"\0".join(
            [
                source,
                " ".join(flags).encode(),
                _compiler_version(compiler).encode(),
                _cpu_identity().encode(),
            ]
        )
    ).hexdigest()[:20]
    target = cache_dir() / f"lstm_cell-{key}.so"
    if target.exists():
        return target

    def compile_to(tmp: str) -> None:
        result = subprocess.run(
            [compiler, *flags, "-o", tmp, str(_SOURCE)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if result.returncode != 0:
            raise OSError(f"{compiler} failed: {result.stderr.strip()[:500]}")

    write_beside(target, compile_to)
    return target


@functools.lru_cache(maxsize=1)
def lstm_kernel() -> LstmKernel | None:
    """The compiled cell, or None (logged once) where it cannot be built or is switched off.

    ``BATCHCAST_NATIVE=0`` switches it off; ``CC`` names the compiler (default ``cc``, then
    ``gcc``).
    """
    if os.environ.get("BATCHCAST_NATIVE", "1").strip().lower() in {"0", "false", "no", "off"}:
        return None
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not compiler:
        _LOG.warning("no C compiler found: the sampler runs its LSTM cell with torch ops (slower)")
        return None
    try:
        path = _build(compiler)
        kernel = LstmKernel(ctypes.CDLL(str(path)), path)
    except (OSError, subprocess.SubprocessError) as exc:
        _LOG.warning("could not build the fused LSTM cell (%s): using torch ops (slower)", exc)
        return None
    builds = [kernel]
    if "avx512f" in _cpu_identity().split():
        try:
            wide_path = _build(compiler, _WIDE)
            builds.append(LstmKernel(ctypes.CDLL(str(wide_path)), wide_path, "wide"))
        except (OSError, subprocess.SubprocessError) as exc:
            _LOG.info("no 512-bit build of the LSTM cell (%s)", exc)
    return fastest([k for build in builds for k in build.groupings()])


class _Probe:
    """Deterministic inputs for timing and comparing variants of the cell: 512 rows of 40
    cells (the default work unit's), gates spread over [-50, 50] so the clamps of exp at +-40
    are exercised as well as its range, and a 3-argument head (the fp32 code paths of a step)."""

    rows, hidden, nargs = 512, 40, 3

    def __init__(self) -> None:
        n, m = self.rows * 4 * self.hidden, self.rows * self.hidden
        self.gates = ((np.arange(n) * 7919 % 1601 - 800) / 16.0).astype(np.float32)
        self.c0 = ((np.arange(m) * 104729 % 401 - 200) / 100.0).astype(np.float32)
        self.head_w = ((np.arange(self.nargs * self.hidden) * 13 % 29 - 14) / 20.0).astype(
            np.float32
        )
        self.head_b = np.array([0.5, -0.25, 1.0], dtype=np.float32)
        self.out = np.empty((self.nargs, self.rows), dtype=np.float32)
        self.extra = Extra(
            head_w=self.head_w.ctypes.data,
            head_b=self.head_b.ctypes.data,
            nargs=self.nargs,
            head_out=self.out.ctypes.data,
            head_stride=self.rows,
        )

    def _run(self, kernel: LstmKernel, c: np.ndarray, h: np.ndarray, calls: int) -> None:
        hd, g, extra = self.hidden, self.gates.ctypes.data, ctypes.byref(self.extra)
        for _ in range(calls):
            kernel.f32(
                self.rows, hd, g, 4 * hd, extra, c.ctypes.data, hd, h.ctypes.data, hd, None, 0
            )

    def outputs(self, kernel: LstmKernel) -> bytes:
        """c, h and the head's output after three steps from the same state, as bytes
        (compared bit for bit)."""
        c, h = self.c0.copy(), np.empty_like(self.c0)
        self._run(kernel, c, h, 3)
        return c.tobytes() + h.tobytes() + self.out.tobytes()

    def seconds(self, kernel: LstmKernel, calls: int = 8) -> float:
        """The best of five timings of ``calls`` calls (the kernel alone)."""
        c, h = self.c0.copy(), np.empty_like(self.c0)
        best = float("inf")
        for _ in range(5):
            t0 = time.perf_counter()
            self._run(kernel, c, h, calls)
            best = min(best, time.perf_counter() - t0)
        return best


def fastest(kernels: Sequence[LstmKernel]) -> LstmKernel:
    """Whichever of ``kernels`` (builds and row groupings of the cell) runs the probe fastest
    (~2 ms each); one whose outputs differ from the first's in any bit (which no flag or
    grouping may cause: logged) is never chosen."""
    probe = _Probe()
    reference = probe.outputs(kernels[0])
    same = [kernels[0]]
    for kernel in kernels[1:]:
        if probe.outputs(kernel) == reference:
            same.append(kernel)
        else:
            _LOG.warning("%r of the LSTM cell computes differently: not used", kernel)
    times = {kernel: probe.seconds(kernel) for kernel in same}
    chosen = min(same, key=times.__getitem__)
    _LOG.debug("LSTM cell variants timed %s: using %r", times, chosen)
    return chosen
