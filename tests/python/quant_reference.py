"""Independent reference quantizers for docs/QUANTIZATION.md, written from the spec with numpy / ml_dtypes only
(nibble is not imported here), for tests/python/test_quantize.py.

Every FP32 step is done in numpy float32 in the order the spec states; the Hadamard sums (RHT, QuEST) are
float64 in index order. Element casts: ml_dtypes' RNE for in-range values after an explicit satfinite clamp
(ml_dtypes overflows to Inf/NaN, nibble saturates), or the stochastic rule of docs/FORMATS.md (r = 8 random bits
from Philox4x32-10 added below the kept mantissa bits, then truncate, then satfinite).

Each scheme returns ``{"rowwise": copy or None, "columnwise": copy or None}`` with
``copy = {"data": uint8 array, "scale": float32 or uint8 array, "global_amax": np.float32, "mask": uint8 array
or None}`` in the storage layout of the spec: the columnwise copy is the (K, M) transpose, FP4 is packed two per
byte along the copy's last dim, low nibble first, ceil(cols / 2) bytes per row (an odd row's last high nibble
is 0).
"""
import math

import ml_dtypes
import numpy as np

F32 = np.float32
FLT_MAX = F32(np.finfo(np.float32).max)
BF16_MAX = F32(3.3895314e38)  # 0x7F7F as bf16: the largest finite bfloat16
FMAX = {"e4m3": F32(448.0), "e5m2": F32(57344.0), "e2m1": F32(6.0)}
EMAX_ELEM = {"e4m3": 8, "e5m2": 15, "e2m1": 2}
ML = {"e4m3": ml_dtypes.float8_e4m3fn, "e5m2": ml_dtypes.float8_e5m2, "e2m1": ml_dtypes.float4_e2m1fn}
GRID = {"e4m3": (4, 3, 7), "e5m2": (5, 2, 15), "e2m1": (2, 1, 1)}  # ebits, mbits, bias
TE_RHT_SIGNS = (1, 1, 1, -1, 1, -1, -1, -1, -1, -1, -1, 1, -1, 1, -1, -1)
COLUMNWISE_OFFSET = 1 << 63


# ---------------------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------------------


def as_2d(x):
    """(float32 (M, K) numpy matrix, is_bfloat16) from a torch tensor or numpy array (float32 / bfloat16)."""
    is_bf16 = False
    if hasattr(x, "detach"):  # torch tensor; imported lazily so this module needs torch only for torch inputs
        import torch

        is_bf16 = x.dtype == torch.bfloat16
        assert x.dtype in (torch.float32, torch.bfloat16), x.dtype
        a = x.detach().to(torch.float32).cpu().numpy()  # bf16 -> fp32 is exact
    else:
        a = np.asarray(x)
        is_bf16 = a.dtype == ml_dtypes.bfloat16
        assert a.dtype in (np.float32, ml_dtypes.bfloat16), a.dtype
        a = a.astype(np.float32)
    if a.ndim == 0:
        a = a.reshape(1, 1)
    a = np.ascontiguousarray(a.reshape(-1, a.shape[-1]), dtype=np.float32)
    if np.isnan(a).any():
        raise ValueError("NaN in the input")
    return a, is_bf16


def f32_bits(v):
    return np.asarray(v, dtype=np.float32).view(np.uint32)


def from_bits(b):
    return np.asarray(b, dtype=np.uint32).view(np.float32)


def pow2_f32(k):
    """2^k as float32 built exactly (k in [-149, 127]; 2^-127 is an FP32 subnormal)."""
    return np.ldexp(np.ones(np.shape(k), np.float32), np.asarray(k, dtype=np.int32)).astype(np.float32)


# ---------------------------------------------------------------------------------------------------------
# Philox4x32-10 and the stochastic bits (docs/FORMATS.md "Stochastic bits")
# ---------------------------------------------------------------------------------------------------------

_M32 = np.uint64(0xFFFFFFFF)


def philox4x32_10(counter, key):
    """Vectorised Philox4x32-10 (Random123): counter = 4 arrays of uint32 values, key = 2 ints -> 4 uint64 arrays
    holding the 32-bit output words."""
    c0, c1, c2, c3 = (np.asarray(c, dtype=np.uint64) & _M32 for c in counter)
    k0, k1 = np.uint64(int(key[0]) & 0xFFFFFFFF), np.uint64(int(key[1]) & 0xFFFFFFFF)
    for _ in range(10):
        p0 = np.uint64(0xD2511F53) * c0
        p1 = np.uint64(0xCD9E8D57) * c2
        c0, c1, c2, c3 = ((p1 >> np.uint64(32)) ^ c1 ^ k0, p1 & _M32, (p0 >> np.uint64(32)) ^ c3 ^ k1, p0 & _M32)
        k0 = (k0 + np.uint64(0x9E3779B9)) & _M32
        k1 = (k1 + np.uint64(0xBB67AE85)) & _M32
    return c0, c1, c2, c3


def philox_block(seed, offset, subsequence):
    """The four words of one Philox call with key = seed (lo, hi) and counter = (offset lo, offset hi,
    subsequence lo, subsequence hi)."""
    sub = np.asarray(subsequence, dtype=np.uint64)
    return philox4x32_10([np.full(sub.shape, offset & 0xFFFFFFFF, np.uint64),
                          np.full(sub.shape, (offset >> 32) & 0xFFFFFFFF, np.uint64),
                          sub & _M32, sub >> np.uint64(32)],
                         [seed & 0xFFFFFFFF, (seed >> 32) & 0xFFFFFFFF])


def stochastic_bits8(seed, offset, n):
    """The 8 random bits of flat element indices 0..n-1 (r = 8, k = 4: one word serves 4 elements,
    subsequence = i / 16, word = (i / 4) mod 4, bits = word >> ((i mod 4) * 8))."""
    nsub = (n + 15) // 16
    words = np.stack(philox_block(seed, offset, np.arange(nsub, dtype=np.uint64)), axis=1)  # (nsub, 4)
    i = np.arange(n, dtype=np.int64)
    w = words[i // 16, (i // 4) % 4]
    return ((w >> ((i % 4) * 8).astype(np.uint64)) & np.uint64(0xFF)).astype(np.int64)


# ---------------------------------------------------------------------------------------------------------
# Element casts (docs/FORMATS.md): RNE or stochastic, then satfinite
# ---------------------------------------------------------------------------------------------------------


def cast_rne(v, fmt):
    """Codes (uint8) of float32 values v: RNE onto the grid (ml_dtypes), satfinite (Inf included) to ±max."""
    v = np.asarray(v, dtype=np.float32)
    c = np.clip(v, -FMAX[fmt], FMAX[fmt])  # keeps -0.0; beyond-max values would round to max anyway
    return c.astype(ML[fmt]).view(np.uint8)


def cast_sr(v, fmt, bits):
    """Stochastic cast: x between grid neighbours lo <= |x| < lo + ulp rounds up iff floor(frac * 256) + bits
    >= 256 (8 random bits added just below the kept mantissa bits, then truncated); then satfinite."""
    v = np.asarray(v, dtype=np.float32)
    ebits, mbits, bias = GRID[fmt]
    a = np.abs(v.astype(np.float64))
    finite = np.isfinite(a)
    a_f = np.where(finite, a, 0.0)
    _, ex = np.frexp(a_f)  # a = m * 2^ex, m in [0.5, 1)
    e = np.maximum(ex - 1, 1 - bias)  # the binade (subnormals share the lowest one)
    ulp = np.ldexp(1.0, e - mbits)
    lo = np.floor(a_f / ulp) * ulp
    frac256 = np.floor((a_f - lo) / ulp * 256.0)
    up = frac256 + bits.reshape(a.shape) >= 256
    mag = np.where(up, lo + ulp, lo)
    mag = np.where(finite, np.minimum(mag, float(FMAX[fmt])), float(FMAX[fmt]))
    out = np.copysign(mag, v.astype(np.float64)).astype(np.float32)  # exact: on the grid
    return out.astype(ML[fmt]).view(np.uint8)


def decode(codes, fmt):
    return np.asarray(codes, dtype=np.uint8).view(ML[fmt]).astype(np.float32)


def pack_fp4(codes):
    """(rows, cols) 4-bit codes -> (rows, ceil(cols / 2)) bytes, element 2j in the low nibble of byte j."""
    codes = np.asarray(codes, dtype=np.uint8)
    rows, cols = codes.shape
    if cols % 2:
        codes = np.concatenate([codes, np.zeros((rows, 1), np.uint8)], axis=1)
    return (codes[:, 0::2] & 0xF) | ((codes[:, 1::2] & 0xF) << 4)


def unpack_fp4(packed, cols):
    packed = np.asarray(packed, dtype=np.uint8)
    out = np.empty((packed.shape[0], packed.shape[1] * 2), np.uint8)
    out[:, 0::2] = packed & 0xF
    out[:, 1::2] = packed >> 4
    return out[:, :cols]


class _Caster:
    """Element cast of one copy: RNE, or stochastic with the bits of (seed, offset) at flat index row*cols+col."""

    def __init__(self, rounding, seed, offset):
        assert rounding in ("rne", "stochastic"), rounding
        self.rounding, self.seed, self.offset = rounding, seed, offset

    def __call__(self, v, fmt):
        if self.rounding == "rne":
            return cast_rne(v, fmt)
        return cast_sr(v, fmt, stochastic_bits8(self.seed, self.offset, v.size))


def _copies(x, rowwise, columnwise, rounding, seed, offset, quantize_copy):
    """Run quantize_copy(matrix, caster) on x (rowwise) and on x^T (columnwise, offset + 2^63)."""
    out = {"rowwise": None, "columnwise": None}
    if rowwise:
        out["rowwise"] = quantize_copy(x, _Caster(rounding, seed, offset))
    if columnwise:
        col_offset = (offset + COLUMNWISE_OFFSET) % (1 << 64)
        out["columnwise"] = quantize_copy(np.ascontiguousarray(x.T), _Caster(rounding, seed, col_offset))
    return out


def _copy(data, scale, global_amax, mask=None):
    return {"data": data, "scale": scale, "global_amax": F32(global_amax), "mask": mask}


def _amax(a):
    return F32(np.max(np.abs(a))) if a.size else F32(0.0)


def _block_amax(a, block):
    """(rows, ceil(cols / block)) maxima of |a| over 1 x block blocks (a partial last block = zero padding)."""
    rows, cols = a.shape
    nb = -(-cols // block)
    pad = np.zeros((rows, nb * block), np.float32)
    pad[:, :cols] = np.abs(a)
    return pad.reshape(rows, nb, block).max(axis=2)


def _tile_amax(a, tile):
    rows, cols = a.shape
    nr, nc = -(-rows // tile), -(-cols // tile)
    pad = np.zeros((nr * tile, nc * tile), np.float32)
    pad[:rows, :cols] = np.abs(a)
    return pad.reshape(nr, tile, nc, tile).max(axis=(1, 3))


def _expand(per_block, block, cols):
    """Repeat each block's value over its columns: (rows, nb) -> (rows, cols)."""
    return np.repeat(per_block, block, axis=1)[:, :cols]


# ---------------------------------------------------------------------------------------------------------
# FP8 per-tensor and block scales
# ---------------------------------------------------------------------------------------------------------


def compute_scale(amax, fmt, eps=0.0, pow2=False, value_for_inf=FLT_MAX):
    """TE compute_scale_from_amax, elementwise over an array of amaxes (float32)."""
    amax = np.asarray(amax, dtype=np.float32)
    a = np.maximum(amax, F32(eps))
    with np.errstate(all="ignore"):
        scale = FMAX[fmt] / a  # FP32 division
    scale = np.where((a == 0) | ~np.isfinite(a), F32(1.0), scale).astype(np.float32)
    scale = np.where(np.isinf(scale), F32(value_for_inf), scale).astype(np.float32)
    if pow2:
        scale = from_bits(f32_bits(scale) & np.uint32(0xFF800000))
    return scale


def fp8_tensor(x, fmt="e4m3", *, eps=0.0, pow2=False, rowwise=True, columnwise=False, rounding="rne", seed=0,
               offset=0, scale=None):
    """Current scaling (or, with ``scale`` given, the DelayedScaling state's scale): one scale for the tensor."""
    x, _ = as_2d(x)
    amax = _amax(x)
    if scale is None:
        scale = compute_scale(amax, fmt, eps, pow2, FLT_MAX)
    scale = F32(scale)
    scale_inv = np.array([F32(1.0) / scale], np.float32)

    def one(a, cast):
        with np.errstate(all="ignore"):
            return _copy(cast(a * scale, fmt), scale_inv.copy(), amax)

    return _copies(x, rowwise, columnwise, rounding, seed, offset, one)


def fp8_block128(x, fmt="e4m3", *, pow2=True, rowwise=True, columnwise=False, rounding="rne", seed=0, offset=0):
    x, is_bf16 = as_2d(x)
    vfi = BF16_MAX if is_bf16 else FLT_MAX

    def one(a, cast):
        scale = compute_scale(_block_amax(a, 128), fmt, 0.0, pow2, vfi)
        with np.errstate(all="ignore"):
            q = cast(a * _expand(scale, 128, a.shape[1]), fmt)
            return _copy(q, (F32(1.0) / scale).astype(np.float32), _amax(a))

    return _copies(x, rowwise, columnwise, rounding, seed, offset, one)


def fp8_block128x128(x, fmt="e4m3", *, pow2=True, rowwise=True, columnwise=False, rounding="rne", seed=0,
                     offset=0):
    """128 x 128 tiles; the columnwise copy is exactly the transpose of the rowwise copy (codes and scales)."""
    x, is_bf16 = as_2d(x)
    vfi = BF16_MAX if is_bf16 else FLT_MAX
    rows, cols = x.shape
    scale = compute_scale(_tile_amax(x, 128), fmt, 0.0, pow2, vfi)
    full = np.repeat(np.repeat(scale, 128, axis=0), 128, axis=1)[:rows, :cols]
    with np.errstate(all="ignore"):
        q = _Caster(rounding, seed, offset)(x * full, fmt)
        scale_inv = (F32(1.0) / scale).astype(np.float32)
    amax = _amax(x)
    return {"rowwise": _copy(q, scale_inv, amax) if rowwise else None,
            "columnwise": _copy(np.ascontiguousarray(q.T), np.ascontiguousarray(scale_inv.T), amax)
            if columnwise else None}


# ---------------------------------------------------------------------------------------------------------
# MX (E8M0 scales)
# ---------------------------------------------------------------------------------------------------------


def float_to_e8m0(v):
    """TE's rounding-up float -> E8M0 exponent (2^ceil(log2 v)), elementwise on float32 values."""
    v = np.asarray(v, dtype=np.float32)
    b = f32_bits(v).astype(np.int64)
    exp = (b >> 23) & 0xFF
    man = b & 0x7FFFFF
    up = (man > 0) & (exp != 0xFE) & ~((exp == 0) & (man <= 0x400000))
    e = exp + up
    e = np.where(np.isinf(v), 0xFE, e)
    e = np.where(np.isnan(v), 0xFF, e)
    return e.astype(np.uint8)


def mx_scale_code(block_amax, fmt, rule="ceil"):
    block_amax = np.asarray(block_amax, dtype=np.float32)
    if rule == "ceil":
        with np.errstate(all="ignore"):
            return float_to_e8m0(block_amax * (F32(1.0) / FMAX[fmt]))
    assert rule == "floor", rule
    exp = (f32_bits(block_amax).astype(np.int64) >> 23) & 0xFF
    return np.clip(exp - EMAX_ELEM[fmt], 0, 254).astype(np.uint8)


def _mx(x, fmt, rule, rowwise, columnwise, rounding, seed, offset):
    x, _ = as_2d(x)

    def one(a, cast):
        e = mx_scale_code(_block_amax(a, 32), fmt, rule)
        mult = pow2_f32(127 - e.astype(np.int32))
        with np.errstate(all="ignore"):
            q = cast(a * _expand(mult, 32, a.shape[1]), fmt)
        if fmt == "e2m1":
            q = pack_fp4(q)
        return _copy(q, e, _amax(a))

    return _copies(x, rowwise, columnwise, rounding, seed, offset, one)


def mxfp8(x, fmt="e4m3", *, rule="ceil", rowwise=True, columnwise=False, rounding="rne", seed=0, offset=0):
    return _mx(x, fmt, rule, rowwise, columnwise, rounding, seed, offset)


def mxfp4(x, *, rule="ceil", rowwise=True, columnwise=False, rounding="rne", seed=0, offset=0):
    return _mx(x, "e2m1", rule, rowwise, columnwise, rounding, seed, offset)


# ---------------------------------------------------------------------------------------------------------
# NVFP4
# ---------------------------------------------------------------------------------------------------------


def nvfp4_global(global_amax):
    """(S_enc, S_dec) from the copy's global amax."""
    g = F32(global_amax)
    with np.errstate(all="ignore"):
        s_enc = np.minimum(F32(2688.0) / g, FLT_MAX).astype(np.float32)
    if g == 0 or s_enc == 0:
        s_enc = F32(1.0)
    s_enc = F32(s_enc)
    return s_enc, F32(F32(1.0) / s_enc)


def nvfp4_block_codes(block_amax, s_enc):
    """UE4M3 block scale codes: e4m3(min(block_amax * (S_enc * (1/6)), FLT_MAX))."""
    mult = F32(s_enc * (F32(1.0) / F32(6.0)))
    with np.errstate(all="ignore"):
        v = np.minimum(np.asarray(block_amax, np.float32) * mult, FLT_MAX).astype(np.float32)
    return cast_rne(v, "e4m3")


def nvfp4_enc(codes, s_dec):
    """enc = min(1 / (float(s) * S_dec), FLT_MAX)."""
    with np.errstate(all="ignore"):
        return np.minimum(F32(1.0) / (decode(codes, "e4m3") * F32(s_dec)), FLT_MAX).astype(np.float32)


def _nvfp4_copy(a, cast):
    g = _amax(a)
    s_enc, s_dec = nvfp4_global(g)
    s = nvfp4_block_codes(_block_amax(a, 16), s_enc)
    with np.errstate(all="ignore"):
        q = cast(a * _expand(nvfp4_enc(s, s_dec), 16, a.shape[1]), "e2m1")
    return _copy(pack_fp4(q), s, g)


def nvfp4(x, *, rowwise=True, columnwise=False, rounding="rne", seed=0, offset=0, rht=False, rht_seed=0):
    """1 x 16 NVFP4; with rht=True the columnwise copy is quantized from RHT(x^T) (rounded to bf16 for bf16
    input), its global amax taken after the transform."""
    x, is_bf16 = as_2d(x)
    out = _copies(x, rowwise, False, rounding, seed, offset, _nvfp4_copy)
    if columnwise:
        src = np.ascontiguousarray(x.T)
        if rht:
            src = rht_apply(src, rht_seed, to_bf16=is_bf16)
        col_offset = (offset + COLUMNWISE_OFFSET) % (1 << 64)
        out["columnwise"] = _nvfp4_copy(src, _Caster(rounding, seed, col_offset))
    return out


def nvfp4_2d(x, *, rowwise=True, columnwise=False, rounding="rne", seed=0, offset=0):
    """16 x 16 tile scales replicated to the tile's rows; the columnwise copy is the exact transpose."""
    x, _ = as_2d(x)
    rows, cols = x.shape
    g = _amax(x)
    s_enc, s_dec = nvfp4_global(g)
    tiles = nvfp4_block_codes(_tile_amax(x, 16), s_enc)  # (ceil(rows/16), ceil(cols/16))
    enc = nvfp4_enc(tiles, s_dec)
    full = np.repeat(np.repeat(enc, 16, axis=0), 16, axis=1)[:rows, :cols]
    with np.errstate(all="ignore"):
        q = _Caster(rounding, seed, offset)(x * full, "e2m1")
    row_scale = np.repeat(tiles, 16, axis=0)[:rows]
    col_scale = np.repeat(tiles.T, 16, axis=0)[:cols]
    return {"rowwise": _copy(pack_fp4(q), row_scale, g) if rowwise else None,
            "columnwise": _copy(pack_fp4(np.ascontiguousarray(q.T)), np.ascontiguousarray(col_scale), g)
            if columnwise else None}


# ---------------------------------------------------------------------------------------------------------
# Hadamard transforms
# ---------------------------------------------------------------------------------------------------------


def _popcount_parity(i, j):
    return bin(i & j).count("1") & 1


def hadamard_signs(n):
    """Sylvester H_n as a list of rows of ±1: H[i][j] = (-1)^popcount(i & j)."""
    return [[-1 if _popcount_parity(i, j) else 1 for j in range(n)] for i in range(n)]


def rht_sign_vector(seed=0):
    if seed == 0:
        return list(TE_RHT_SIGNS)
    w0 = int(philox_block(seed, 0, np.zeros(1, np.uint64))[0][0])
    return [-1 if (w0 >> i) & 1 else 1 for i in range(16)]


def rht_matrix(seed=0):
    """H = diag(sign) · H16 / 4 (float64), so that the transform of a 16-group g is g @ H."""
    h = np.array(hadamard_signs(16), dtype=np.float64)
    return np.diag(np.array(rht_sign_vector(seed), np.float64)) @ h / 4.0


def rht_apply(a, seed=0, to_bf16=False):
    """y_j = 0.25 * sum_i g_i sign_i (-1)^popcount(i & j) on each 16-group of each row; float64 sum in index
    order, times 0.25 in float64, rounded to float32 (then to bf16 when to_bf16)."""
    a = np.asarray(a, dtype=np.float32)
    rows, cols = a.shape
    assert cols % 16 == 0, cols
    g = a.astype(np.float64).reshape(rows, cols // 16, 16)
    sign = rht_sign_vector(seed)
    hs = hadamard_signs(16)
    y = np.empty_like(g)
    with np.errstate(all="ignore"):
        for j in range(16):
            acc = np.zeros(g.shape[:2], np.float64)
            for i in range(16):
                if sign[i] * hs[i][j] > 0:
                    acc = acc + g[:, :, i]
                else:
                    acc = acc - g[:, :, i]
            y[:, :, j] = acc * 0.25
    out = y.reshape(rows, cols).astype(np.float32)
    if to_bf16:
        out = out.astype(ml_dtypes.bfloat16).astype(np.float32)
    return out


QUEST_INV_SQRT32 = 1.0 / math.sqrt(32.0)


def quest_hadamard(a):
    """h_j = (sum_i g_i (-1)^popcount(i & j)) * (1 / sqrt(32)) per 32-group of each row: float64 sum in index
    order, float64 product, rounded to float32."""
    a = np.asarray(a, dtype=np.float32)
    rows, cols = a.shape
    g = a.astype(np.float64).reshape(rows, cols // 32, 32)
    hs = hadamard_signs(32)
    h = np.empty_like(g)
    with np.errstate(all="ignore"):
        for j in range(32):
            acc = np.zeros(g.shape[:2], np.float64)
            for i in range(32):
                acc = acc + g[:, :, i] if hs[i][j] > 0 else acc - g[:, :, i]
            h[:, :, j] = acc * QUEST_INV_SQRT32
    return h.astype(np.float32)  # (rows, groups, 32)


def quest_exponent(h):
    """e = floor(log2(0.48708 * sigma + 1e-8)) clamped to [-127, 127]; sigma = population std of the group's
    32 float32 values, computed in float64 (sums in index order)."""
    h64 = h.astype(np.float64)
    s = np.zeros(h.shape[:-1], np.float64)
    s2 = np.zeros(h.shape[:-1], np.float64)
    with np.errstate(all="ignore"):
        for i in range(h.shape[-1]):
            s = s + h64[..., i]
            s2 = s2 + h64[..., i] * h64[..., i]
        mean = s / 32.0
        var = np.maximum(s2 / 32.0 - mean * mean, 0.0)
    sigma = np.sqrt(var)
    _, ex = np.frexp(np.where(np.isfinite(sigma), 0.48708 * sigma + 1e-8, 1.0))
    e = np.clip(ex - 1, -127, 127)
    # Not in the spec: a group holding an Inf has a NaN/Inf sigma (its h are all ±Inf); such a group gets the
    # largest exponent, 127 (code 254), as the E8M0 rules map Inf to 0xFE. This is nibble's choice.
    return np.where(np.isfinite(sigma), e, 127).astype(np.int32)


def mxfp4_quest(x, *, rowwise=True, columnwise=False, rounding="rne", seed=0, offset=0):
    x, _ = as_2d(x)

    def one(a, cast):
        rows, cols = a.shape
        if cols % 32:
            raise ValueError(f"mxfp4_quest needs the blocked dim to be a multiple of 32, got {cols}")
        h = quest_hadamard(a)
        e = quest_exponent(h)
        with np.errstate(all="ignore"):
            scaled = (h * pow2_f32(-e)[..., None]).astype(np.float32).reshape(rows, cols)
        q = cast(scaled, "e2m1")
        mask = (np.abs(scaled) <= F32(6.0)).astype(np.uint8)
        return _copy(pack_fp4(q), (e + 127).astype(np.uint8), _amax(a), mask)

    return _copies(x, rowwise, columnwise, rounding, seed, offset, one)


# ---------------------------------------------------------------------------------------------------------
# Dequantization (float32, the copy's own 2-D shape)
# ---------------------------------------------------------------------------------------------------------


def dequantize(copy, scheme, shape, fmt="e4m3"):
    rows, cols = shape
    data, scale = copy["data"], copy["scale"]
    if scheme in ("fp8_tensor", "fp8_tensor_e5m2"):
        return (decode(data, fmt) * F32(scale[0])).astype(np.float32)
    if scheme == "fp8_block128":
        return (decode(data, fmt) * _expand(scale, 128, cols)).astype(np.float32)
    if scheme == "fp8_block128x128":
        full = np.repeat(np.repeat(scale, 128, axis=0), 128, axis=1)[:rows, :cols]
        return (decode(data, fmt) * full).astype(np.float32)
    if scheme == "mxfp8":
        with np.errstate(all="ignore"):
            return (decode(data, fmt) * _expand(pow2_f32(scale.astype(np.int32) - 127), 32, cols)).astype(np.float32)
    q = decode(unpack_fp4(data, cols), "e2m1")
    if scheme in ("mxfp4", "mxfp4_quest"):
        with np.errstate(all="ignore"):
            return (q * _expand(pow2_f32(scale.astype(np.int32) - 127), 32, cols)).astype(np.float32)
    assert scheme in ("nvfp4", "nvfp4_2d"), scheme
    _, s_dec = nvfp4_global(copy["global_amax"])
    with np.errstate(all="ignore"):
        return ((q * _expand(decode(scale, "e4m3"), 16, cols)).astype(np.float32) * s_dec).astype(np.float32)


# ---------------------------------------------------------------------------------------------------------
# Delayed scaling state
# ---------------------------------------------------------------------------------------------------------


class DelayedScalingRef:
    """TE DelayedScaling: history (zeros), scale 1; record: history[0] = max(history[0], amax); update: a = max
    (or history[0]) before rolling; scale = (fmax * 2^-margin) / a if a finite and > 0 (Inf -> FLT_MAX); roll
    by -1 and zero history[0]."""

    def __init__(self, history_len=1024, algo="max", margin=0, fmt="e4m3"):
        self.history = np.zeros(history_len, np.float32)
        self.scale = F32(1.0)
        self.algo, self.margin, self.fmt = algo, margin, fmt

    def record(self, amax):
        self.history[0] = max(self.history[0], F32(amax))

    def update(self):
        a = F32(self.history.max() if self.algo == "max" else self.history[0])
        if np.isfinite(a) and a > 0:
            with np.errstate(all="ignore"):
                s = F32(FMAX[self.fmt] * F32(2.0 ** -self.margin)) / a
            self.scale = FLT_MAX if np.isinf(s) else F32(s)
        self.history = np.roll(self.history, -1)
        self.history[0] = 0
        return self.scale
