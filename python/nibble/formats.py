"""Element formats: encode tensors to FP8/FP6/FP4/ExMy codes and decode them back."""
from __future__ import annotations

import torch

from . import _C


def encode(x: torch.Tensor, fmt: str, rounding: str = "rne", seed: int = 0, offset: int = 0,
           random_bits: int = 0, nan: str = "error") -> torch.Tensor:
    """Round ``x`` (float32 or bfloat16, CPU) onto the grid of ``fmt`` and return its codes.

    fmt: "e4m3", "e5m2", "e2m1", "e3m2", "e2m3", "e8m0", "ue4m3", "bf16", "fp16" or a research "eXmY"
    (suffix "_ieee" or "_fn" for Inf/NaN codes). Rounding is "rne" (ties to even), "stochastic" (Philox
    bits keyed by seed, offset and element index; ``random_bits`` per element, 0 = format default) or
    "toward_zero"; every result saturates to the largest finite value. Returns torch.uint8 (4-bit formats
    packed two per byte along the last dim, low nibble first), or torch.int16 for formats wider than 8 bits.
    NaN raises ValueError unless ``nan="propagate"`` and the format has a NaN code.
    """
    return _C.encode(x, fmt, rounding, seed, offset, random_bits, nan)


def decode(codes: torch.Tensor, fmt: str) -> torch.Tensor:
    """Decode codes produced by :func:`encode` to float32 (exact)."""
    return _C.decode(codes, fmt)


def format_info(fmt: str) -> dict:
    """Bits, exponent/mantissa widths, bias, max finite value and Inf/NaN support of ``fmt``."""
    return _C.format_info(fmt)


def set_num_threads(n: int) -> None:
    """Threads nibble's CPU kernels use (0 = all). Results never depend on it."""
    _C.set_num_threads(n)


def get_num_threads() -> int:
    return _C.get_num_threads()
