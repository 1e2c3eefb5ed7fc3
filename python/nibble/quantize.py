"""Block-scaled quantization: per-tensor FP8 (current and delayed), FP8 1x128 / 128x128, MXFP8, NVFP4 (1-D,
2-D, RHT, stochastic rounding), MXFP4 and MXFP4 QuEST. The exact rules are in docs/QUANTIZATION.md."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from . import _C

DelayedScaling = _C.DelayedScaling

SCHEMES = ("fp8_tensor", "fp8_tensor_e5m2", "fp8_block128", "fp8_block128x128", "mxfp8", "nvfp4", "nvfp4_2d",
           "mxfp4", "mxfp4_quest")
# Internal schemes: fp8_block16 (1x16 groups, FP32 scales) compresses saved activations (COAT).
ALL_SCHEMES = SCHEMES + ("fp8_block16",)


@dataclass
class QuantizedCopy:
    """One stored copy: ``data`` (uint8; FP4 packed two per byte), ``scale`` (float32 decode scales, or
    uint8 E8M0/UE4M3 codes), ``global_amax`` (0-d float32), ``mask`` (QuEST clip mask or None)."""

    data: torch.Tensor
    scale: torch.Tensor
    global_amax: torch.Tensor
    mask: Optional[torch.Tensor]
    shape: tuple
    scheme: str
    fmt: Optional[str]

    def dequantize(self) -> torch.Tensor:
        """Decode to float32 of this copy's 2-D shape (RHT / QuEST copies decode to the transformed domain)."""
        rows, cols = self.shape
        return _C.dequantize(self.data, self.scale, self.global_amax, rows, cols, self.scheme, self.fmt)


class QuantizedTensor(QuantizedCopy):
    """The rowwise copy (blocks along the last dim of the (M, K) flattened input) plus, when asked, the
    columnwise copy ``.columnwise`` (the (K, M) transpose, blocks along M)."""

    def __init__(self, rowwise: Optional[QuantizedCopy], columnwise: Optional[QuantizedCopy], amax: float):
        self.rowwise_present = rowwise is not None
        self.columnwise = columnwise
        self.input_amax = amax
        base = rowwise if rowwise is not None else None
        for field in ("data", "scale", "global_amax", "mask", "shape", "scheme", "fmt"):
            setattr(self, field, getattr(base, field) if base is not None else None)

    def dequantize(self) -> torch.Tensor:
        if not self.rowwise_present:
            raise ValueError("this QuantizedTensor holds only the columnwise copy: use q.columnwise.dequantize()")
        return QuantizedCopy.dequantize(self)

    def __repr__(self) -> str:
        copies = [c for c, present in (("rowwise", self.rowwise_present), ("columnwise", self.columnwise is not None))
                  if present]
        scheme = self.scheme or (self.columnwise.scheme if self.columnwise else "?")
        return f"QuantizedTensor({scheme}, copies={copies}, amax={self.input_amax:g})"


def quantize(x: torch.Tensor, scheme: str, *, rowwise: bool = True, columnwise: bool = False,
             rounding: str = "rne", seed: int = 0, offset: int = 0, rht: bool = False, rht_seed: int = 0,
             fmt: Optional[str] = None, pow2_scale: Optional[bool] = None, amax_epsilon: float = 0.0,
             mx_scale_rule: str = "ceil", delayed: Optional[DelayedScaling] = None,
             name: str = "tensor", sr_index: Optional[tuple] = None, group_amax: Optional[float] = None,
             group_rht_amax: Optional[float] = None) -> QuantizedTensor:
    """Quantize ``x`` (float32 or bfloat16, on the CPU or a CUDA device, which gives the same bits; leading dims
    flatten into M) with ``scheme``.

    ``fmt`` overrides the FP8 element format ("e4m3"/"e5m2"); ``pow2_scale`` None keeps the scheme default
    (on for block FP8); ``delayed`` (fp8_tensor only) uses the state's scale and records this amax into it;
    ``rht`` (nvfp4) transforms the columnwise copy; ``name`` appears in error messages.
    ``sr_index`` = (full_rows, full_cols, row_offset, col_offset): ``x`` is the slice at (row_offset, col_offset)
    of a (full_rows, full_cols) tensor, and stochastic rounding draws the bits that tensor's elements would
    (precision::SrIndexMap), so slices quantized apart round exactly as the whole tensor does.
    ``group_amax`` (fp8_tensor, nvfp4, nvfp4_2d): the amax of the whole tensor ``x`` is a slice of -- e.g. the
    max over a tensor-parallel group -- from which the per-tensor factor is taken, so the slice gets the whole
    tensor's scale; ``group_rht_amax`` likewise for an RHT'd columnwise copy (the amax after the transform).
    """
    if scheme not in ALL_SCHEMES:
        raise ValueError(f"unknown quantization scheme {scheme!r}; valid: {', '.join(ALL_SCHEMES)}")
    element = fmt
    if scheme == "fp8_tensor_e5m2" and fmt is None:
        element = "e5m2"
    row, col, amax = _C.quantize(x, scheme, rowwise, columnwise, rounding, seed, offset, rht, rht_seed, fmt,
                                 pow2_scale, amax_epsilon, mx_scale_rule, delayed, name,
                                 None if sr_index is None else tuple(int(v) for v in sr_index),
                                 -1.0 if group_amax is None else float(group_amax),
                                 -1.0 if group_rht_amax is None else float(group_rht_amax))
    m = 1
    for d in x.shape[:-1]:
        m *= d
    k = x.shape[-1] if x.dim() else 1
    make = lambda d, shape: None if d is None else QuantizedCopy(d["data"], d["scale"], d["global_amax"], d["mask"],
                                                                shape, scheme, element)
    return QuantizedTensor(make(row, (m, k)), make(col, (k, m)), amax)


def rht(x: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """The 16-point random Hadamard transform applied to each row of a 2-D float32 tensor in groups of 16
    (seed 0 = Transformer Engine's fixed sign vector)."""
    return _C.rht(x, seed)


def rht_matrix(seed: int = 0) -> torch.Tensor:
    """The 16x16 RHT matrix H = diag(sign) H16 / 4, so that rht(x) == x @ H for each 16-group."""
    return _C.rht(torch.eye(16, dtype=torch.float32), seed)


def _operand(x):
    if isinstance(x, QuantizedCopy):
        rows, cols = x.shape
        return (x.data, x.scale, x.global_amax, rows, cols, x.scheme, x.fmt)
    if isinstance(x, torch.Tensor):
        return x
    raise TypeError(f"nibble.gemm operands are QuantizedCopy/QuantizedTensor or torch.Tensor, got {type(x).__name__}")


def _compute_capability(device, capability) -> int:
    """0 for the CPU, major * 10 + minor for a CUDA device (``capability=(major, minor)`` plans for a GPU this
    machine does not have)."""
    dev = torch.device(device)
    if dev.type == "cpu":
        if capability is not None:
            raise ValueError("nibble.gemm_path: capability= is for a CUDA device, got device 'cpu'")
        return 0
    if dev.type != "cuda":
        raise ValueError(f"nibble.gemm_path: device must be 'cpu' or 'cuda[:N]', got {device!r}")
    if capability is None:
        if not torch.cuda.is_available():
            raise ValueError(f"nibble.gemm_path: no CUDA device is visible for {device!r}; pass capability=(9, 0) "
                             "(Hopper), (10, 0) (Blackwell), ... to plan for one")
        capability = torch.cuda.get_device_capability(dev)
    major, minor = capability
    return int(major) * 10 + int(minor)


def gemm_path(a: str, device="cpu", *, b: Optional[str] = None, capability=None) -> str:
    """Which kernel multiplies an ``a`` operand by a ``b`` operand (default: ``a`` again) on ``device``: the CPU
    emulation, a cuBLASLt tensor-core path (FP8 per-tensor from sm_89, FP8 1x128/128x128 on sm_90, MXFP8 and
    NVFP4 on sm_100) or the device dequantize-to-BF16 fallback. Decided once per (schemes, device) by
    core/gemm_path.h, the rule nibble-train prints at start-up. E.g. ``nibble.gemm_path("nvfp4", "cuda",
    capability=(10, 0))``."""
    return _C.gemm_path(a, b or a, _compute_capability(device, capability))


def gemm_paths(recipe, device="cpu", *, capability=None) -> dict:
    """The kernels of a Linear's three GEMMs (fprop, dgrad, wgrad) under ``recipe`` (a nibble.Recipe or preset
    name) on ``device``."""
    r = _C.Recipe(recipe) if isinstance(recipe, str) else recipe
    return dict(_C.recipe_gemm_paths(r, _compute_capability(device, capability)))


def gemm(a, b, *, bias: Optional[torch.Tensor] = None, accumulate: Optional[torch.Tensor] = None,
         out_dtype: Optional[torch.dtype] = None, fp64_accumulation: bool = False) -> torch.Tensor:
    """C = A · Bᵀ with FP32 accumulation. A (M, K) and B (N, K) are quantized copies (any scheme, mixed
    formats allowed; pass ``q`` for the rowwise copy or ``q.columnwise``) or float32/bfloat16 tensors (rounded
    to BF16). ``bias`` (N,) is added; ``accumulate`` (M, N) float32 receives the result in place.

    ``fp64_accumulation=True`` sums the products in FP64 and rounds once (core/gemm.h), so a sum split across
    tensor-parallel ranks rounds to the unsplit result bit for bit; ``out_dtype=torch.float64`` then returns the
    unrounded sums. Layers get it from their recipe (``nibble.Recipe(name, reproducible_sums=True)``,
    nibble-train's ``parallel.reproducible_sums``). Slower than the FP32/BF16 kernels."""
    return _C.gemm(_operand(a), _operand(b), bias, accumulate, out_dtype, bool(fp64_accumulation))
