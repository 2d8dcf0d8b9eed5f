"""The fused cell's builds (forecast/native.py): a tuning choice never changes a bit."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from batchcast.forecast import native

compiler = shutil.which("cc") or shutil.which("gcc")
needs_compiler = pytest.mark.skipif(compiler is None, reason="no C compiler")
needs_avx512 = pytest.mark.skipif(
    "avx512f" not in native._cpu_identity().split(), reason="no AVX-512 on this CPU"
)


def _kernel(extra: tuple[str, ...], variant: str) -> native.LstmKernel:
    import ctypes

    assert compiler is not None
    path = native._build(compiler, extra)
    return native.LstmKernel(ctypes.CDLL(str(path)), path, variant)


@needs_compiler
@needs_avx512
def test_the_512_bit_build_computes_the_same_bits() -> None:
    default, wide = _kernel((), "default"), _kernel(native._WIDE, "wide")
    assert default.path != wide.path  # two builds, cached under their own flags
    probe = native._Probe()
    assert probe.outputs(default) == probe.outputs(wide)
    assert native.fastest([default, wide]).variant in {"default", "wide"}


@needs_compiler
def test_a_build_that_computes_differently_is_never_chosen() -> None:
    default = _kernel((), "default")
    # -ffast-math lets gcc reassociate and use approximate reciprocals: other bits
    fast = _kernel(("-ffast-math", "-mrecip"), "fast-math")
    probe = native._Probe()
    if probe.outputs(default) == probe.outputs(fast):
        pytest.skip("this compiler gave -ffast-math the same bits; nothing to refuse")
    assert native.fastest([default, *fast.groupings()]) is default


@needs_compiler
def test_the_kernel_in_use_is_one_of_the_timed_builds() -> None:
    kernel = native.lstm_kernel()
    assert kernel is not None
    assert kernel.variant in {"default", "wide"}
    assert kernel.group in {1, 2, 4}


def _edge_case(hidden: int, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Gates (rows, 4H) with both clamps of exp, +-inf and NaN among them, and c (rows, H)."""
    rng = np.random.default_rng(hidden * 100 + rows)
    gates = (rng.standard_normal((rows, 4 * hidden)) * 30.0).astype(np.float32)
    special = np.array([np.nan, np.inf, -np.inf, 40.0, -40.0, 40.5, -80.0, 0.0, -0.0, 1e-30])
    gates.flat[rng.choice(gates.size, size=min(gates.size, 12), replace=False)] = rng.choice(
        special, size=min(gates.size, 12)
    )
    c = (rng.standard_normal((rows, hidden)) * 5.0).astype(np.float32)
    return gates, c


def _run(
    kernel: native.LstmKernel, gates: np.ndarray, c: np.ndarray, rows: int, *, bf16: bool = False
) -> bytes:
    """c, h, the bf16 copy of h and a 3-argument head after one call of the fp32 entry, or of
    the bf16 entry (gates truncated to bf16, a per-row fp32 addend), as bytes."""
    import ctypes

    hidden = c.shape[1]
    c = c.copy()
    h = np.full_like(c, np.nan)
    hb = np.zeros(c.shape, dtype=np.uint16)
    head_w = np.linspace(-1.0, 1.0, 3 * hidden, dtype=np.float32)
    head_b = np.array([0.5, -0.25, 1.0], dtype=np.float32)
    out = np.zeros((3, rows), dtype=np.float32)
    extra = native.Extra(
        head_w=head_w.ctypes.data,
        head_b=head_b.ctypes.data,
        nargs=3,
        head_out=out.ctypes.data,
        head_stride=rows,
    )
    state = (c.ctypes.data, hidden, h.ctypes.data, hidden, hb.ctypes.data, hidden)
    if bf16:
        g16 = (gates.view(np.uint32) >> 16).astype(np.uint16)
        add = np.linspace(-2.0, 2.0, gates.size, dtype=np.float32).reshape(gates.shape)
        extra.add, extra.add_stride = add.ctypes.data, 4 * hidden
        scratch = np.zeros((kernel.scratch_rows, 4 * hidden), dtype=np.float32)
        kernel.bf16(
            rows, hidden, g16.ctypes.data, 4 * hidden, ctypes.byref(extra), *state,
            scratch.ctypes.data,
        )  # fmt: skip
    else:
        kernel.f32(rows, hidden, gates.ctypes.data, 4 * hidden, ctypes.byref(extra), *state)
    return c.tobytes() + h.tobytes() + hb.tobytes() + out.tobytes()


@needs_compiler
@needs_avx512
@pytest.mark.parametrize("hidden", [1, 7, 16, 24, 40, 57])
@pytest.mark.parametrize("rows", [1, 15, 16, 50])
def test_both_builds_compute_the_same_bits_at_the_edges(hidden: int, rows: int) -> None:
    """The 512-bit build against the default build, bit for bit, at every width (a row's
    last vector partly filled), row count (blocks of 16 and a tail) and value (both clamps
    of exp, +-inf, NaN): where gcc folded exp of a clamped constant at compile time, the two
    builds were 1 ulp apart at the clamps."""
    default, wide = _kernel((), "default"), _kernel(native._WIDE, "wide")
    gates, c = _edge_case(hidden, rows)
    assert _run(default, gates, c, rows) == _run(wide, gates, c, rows)


@needs_compiler
@pytest.mark.parametrize("hidden", [1, 7, 40, 57])
@pytest.mark.parametrize("rows", [1, 3, 5, 6, 15, 16, 17, 50])
def test_every_row_grouping_computes_the_same_bits(hidden: int, rows: int) -> None:
    """Two or four rows per loop body (a speed choice, timed at first use) against one, in
    both builds, bit for bit, at row counts that leave every kind of remainder within a
    block of 16 and after it: a row is computed in a group of 4, of 2 or alone."""
    gates, c = _edge_case(hidden, rows)
    kernels = _kernel((), "default").groupings()
    assert [k.group for k in kernels] == [1, 2, 4]
    if "avx512f" in native._cpu_identity().split():
        kernels += _kernel(native._WIDE, "wide").groupings()
    expected = _run(kernels[0], gates, c, rows)
    for kernel in kernels[1:]:
        assert _run(kernel, gates, c, rows) == expected, kernel


@needs_compiler
@pytest.mark.parametrize("hidden", [7, 40])
@pytest.mark.parametrize("rows", [1, 5, 16, 17, 50])
def test_every_row_grouping_of_the_bf16_cell_computes_the_same_bits(hidden: int, rows: int) -> None:
    """The bf16 entry widens a block of rows into its scratch and runs the same row loops:
    every grouping gives the bits of one row at a time."""
    gates, c = _edge_case(hidden, rows)
    one, *others = _kernel((), "default").groupings()
    assert one.scratch_rows >= 1
    expected = _run(one, gates, c, rows, bf16=True)
    for kernel in others:
        assert _run(kernel, gates, c, rows, bf16=True) == expected, kernel
