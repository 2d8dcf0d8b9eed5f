"""The sampler's arithmetic precision: ``fp32`` (default) or ``bf16`` where the CPU has bf16 units.

``bf16`` keeps weights and GEMM operands in bfloat16 (accumulated in fp32 by oneDNN/MKL and
rounded to bf16 on output) while the LSTM state, the likelihood head and all sampling stay
fp32. It pays only on CPUs with bf16 matrix units (AMX, AVX512-BF16); elsewhere torch
emulates bf16 GEMMs several times slower than fp32, so a bf16 request there logs one line
and runs fp32. ``BATCHCAST_BF16=force`` runs bf16 anyway (to measure its error on any CPU).
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path
from typing import Literal

import torch

from batchcast.errors import ConfigError

__all__ = ["PRECISIONS", "Precision", "bf16_hardware", "resolve_precision"]

Precision = Literal["fp32", "bf16"]
PRECISIONS: tuple[Precision, ...] = ("fp32", "bf16")

_LOG = logging.getLogger(__name__)


@functools.lru_cache(maxsize=1)
def bf16_hardware() -> bool:
    """Whether this CPU multiplies bf16 matrices natively (AMX tiles or AVX512-BF16)."""
    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    for name in probes:
        probe = getattr(torch.cpu, name, None)
        if probe is not None:
            try:
                if probe():
                    return True
            except RuntimeError:
                pass
    try:
        flags = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return False
    return " amx_bf16" in flags or " avx512_bf16" in flags


def resolve_precision(precision: str, device: torch.device) -> Precision:
    """The precision the sampler will actually run for a requested one.

    Args:
        precision: ``"fp32"`` or ``"bf16"``.
        device: the model's device.

    Returns:
        ``"bf16"`` only on a CPU with bf16 units (or when forced); otherwise ``"fp32"``, after
        one logged line when bf16 was asked for.

    Raises:
        ConfigError: for another value.
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
    if precision == "fp32":
        return "fp32"
    if os.environ.get("BATCHCAST_BF16", "").strip().lower() == "force":
        return "bf16"
    if device.type != "cpu":
        _warn_once(f"precision 'bf16' is implemented for CPU only; running fp32 on {device}")
        return "fp32"
    if not bf16_hardware():
        _warn_once(
            "precision 'bf16' asked for, but this CPU has no bf16 matrix units "
            "(AMX or AVX512-BF16): running fp32"
        )
        return "fp32"
    return "bf16"


@functools.lru_cache(maxsize=8)
def _warn_once(message: str) -> None:
    _LOG.warning(message)
