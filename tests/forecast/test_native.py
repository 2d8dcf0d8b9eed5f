"""The fused cell's builds (forecast/native.py): a tuning choice never changes a bit."""

from __future__ import annotations

import shutil

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
    assert native.faster(default, wide).variant in {"default", "wide"}


@needs_compiler
def test_a_build_that_computes_differently_is_never_chosen() -> None:
    default = _kernel((), "default")
    # -ffast-math lets gcc reassociate and use approximate reciprocals: other bits
    fast = _kernel(("-ffast-math", "-mrecip"), "fast-math")
    probe = native._Probe()
    if probe.outputs(default) == probe.outputs(fast):
        pytest.skip("this compiler gave -ffast-math the same bits; nothing to refuse")
    assert native.faster(default, fast) is default


@needs_compiler
def test_the_kernel_in_use_is_one_of_the_timed_builds() -> None:
    kernel = native.lstm_kernel()
    assert kernel is not None
    assert kernel.variant in {"default", "wide"}
