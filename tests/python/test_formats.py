"""Element formats (NUMERICS.md "Element formats", "Stochastic rounding"): nibble.encode / nibble.decode.

Oracles: ml_dtypes (float8_e4m3fn, float8_e5m2, float8_e8m0fnu, float6_e3m2fn, float6_e2m3fn, float4_e2m1fn,
float8_e3m4, float8_e4m3), torch's float8 / bfloat16 / float16 dtypes, and a small numpy reference of the
ExMy grid (`ref_decode`, `ref_encode`) that covers the formats no library has (E8M0 rounding, UE4M3, research
eXmY). Our encode saturates (PTX cvt .satfinite): every |x| beyond max + half an ulp, Inf included, is ±max,
where ml_dtypes gives Inf/NaN; the oracle comparisons are therefore split into in-range and beyond-range.
"""
import math
import re
from dataclasses import dataclass

import ml_dtypes
import numpy as np
import pytest
import torch

import nibble

# ---------------------------------------------------------------------------------------------------------
# Reference model of the formats
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    ebits: int
    mbits: int
    bias: int
    special: str  # "ieee" (top exponent = Inf/NaN), "fn" (all-ones code = NaN), "finite"
    signed: bool = True
    subnormals: bool = True

    @property
    def bits(self):
        return int(self.signed) + self.ebits + self.mbits

    @property
    def sign_bit(self):
        return (1 << (self.ebits + self.mbits)) if self.signed else 0


NAMED = {
    "e4m3": Spec(4, 3, 7, "fn"),
    "e5m2": Spec(5, 2, 15, "ieee"),
    "e2m1": Spec(2, 1, 1, "finite"),
    "e3m2": Spec(3, 2, 3, "finite"),
    "e2m3": Spec(2, 3, 1, "finite"),
    "e8m0": Spec(8, 0, 127, "fn", signed=False, subnormals=False),
    "ue4m3": Spec(4, 3, 7, "fn", signed=False),
    "bf16": Spec(8, 7, 127, "ieee"),
    "fp16": Spec(5, 10, 15, "ieee"),
}


def spec_of(name):
    if name in NAMED:
        return NAMED[name]
    m = re.fullmatch(r"e(\d+)m(\d+)(_ieee|_fn)?", name)
    assert m, name
    e, mb = int(m.group(1)), int(m.group(2))
    special = {None: "finite", "_ieee": "ieee", "_fn": "fn"}[m.group(3)]
    return Spec(e, mb, (1 << (e - 1)) - 1, special)


def ref_decode(spec, codes):
    """Exact float64 value of each code (NaN / ±Inf where the format has them)."""
    codes = np.asarray(codes, dtype=np.int64)
    E, M = spec.ebits, spec.mbits
    mag = codes & ((1 << (E + M)) - 1)
    e = mag >> M
    m = mag & ((1 << M) - 1)
    if spec.subnormals:
        val = np.where(e == 0, np.ldexp(m.astype(np.float64), 1 - spec.bias - M),
                       np.ldexp((m + (1 << M)).astype(np.float64), e - spec.bias - M))
    else:
        val = np.ldexp(np.ones_like(m, dtype=np.float64), e - spec.bias)
    if spec.special == "ieee":
        top = e == (1 << E) - 1
        val = np.where(top & (m == 0), np.inf, val)
        val = np.where(top & (m != 0), np.nan, val)
    elif spec.special == "fn":
        val = np.where(mag == (1 << (E + M)) - 1, np.nan, val)
    if spec.signed:
        val = np.where((codes & spec.sign_bit) != 0, -val, val)
    return val


def all_codes(spec):
    return np.arange(1 << spec.bits, dtype=np.int64)


def pos_grid(spec):
    """(values, codes) of the non-negative finite codes, ascending."""
    codes = np.arange(1 << (spec.ebits + spec.mbits), dtype=np.int64)
    vals = ref_decode(spec, codes)
    keep = np.isfinite(vals)
    vals, codes = vals[keep], codes[keep]
    assert np.all(np.diff(vals) > 0)
    return vals, codes


def max_finite(spec):
    return pos_grid(spec)[0][-1]


def overflow_threshold(spec):
    """max + half an ulp of max: the first magnitude that is out of range (ties included)."""
    vals = pos_grid(spec)[0]
    return vals[-1] + (vals[-1] - vals[-2]) / 2


def _grid_index(spec, x):
    vals, codes = pos_grid(spec)
    a = np.abs(np.asarray(x, dtype=np.float64))
    i = np.searchsorted(vals, a, side="right") - 1  # vals[i] <= a
    below = i < 0
    i = np.clip(i, 0, len(vals) - 1)
    j = np.where(vals[i] == a, i, np.minimum(i + 1, len(vals) - 1))
    return vals, codes, a, i, j, below


def _apply_sign(spec, x, code):
    if not spec.signed:
        return code
    return np.where(np.signbit(np.asarray(x, dtype=np.float64)), code | spec.sign_bit, code)


def ref_encode(spec, x, rounding="rne"):
    """RNE (ties to the even code) or toward-zero onto the grid, then satfinite."""
    vals, codes, a, i, j, below = _grid_index(spec, x)
    if rounding == "rne":
        dlo, dhi = a - vals[i], vals[j] - a
        up = (dhi < dlo) | ((dhi == dlo) & (codes[j] % 2 == 0))
        k = np.where(up, j, i)
    else:
        k = i
    code = codes[k]
    code = np.where(below, codes[0], code)  # E8M0: below 2^-127 -> the smallest code
    return _apply_sign(spec, x, code)


def ref_neighbours(spec, x):
    """Signed values (lo, hi) of the two grid neighbours of x (equal for grid values and beyond max)."""
    vals, codes, a, i, j, below = _grid_index(spec, x)
    lo, hi = vals[i], vals[j]
    neg = np.signbit(np.asarray(x, dtype=np.float64))
    return np.where(neg, -hi, lo), np.where(neg, -lo, hi)


# ---------------------------------------------------------------------------------------------------------
# Code storage helpers (numpy int64 codes, one per element <-> nibble's torch tensors)
# ---------------------------------------------------------------------------------------------------------


def unpack(codes_t, bits):
    arr = codes_t.numpy()
    if bits <= 4:
        b = arr.astype(np.int64)
        return np.stack([b & 0xF, b >> 4], axis=-1).reshape(*b.shape[:-1], -1)
    if bits <= 8:
        return arr.astype(np.int64)
    return arr.view(np.uint16).astype(np.int64)


def pack(codes, bits):
    codes = np.asarray(codes, dtype=np.int64)
    if bits <= 4:
        return torch.from_numpy((codes[..., 0::2] | (codes[..., 1::2] << 4)).astype(np.uint8))
    if bits <= 8:
        return torch.from_numpy(codes.astype(np.uint8))
    return torch.from_numpy(codes.astype(np.uint16).view(np.int16))


def enc(x, fmt, **kw):
    """nibble.encode of a 1-D numpy float32 array (or torch tensor) -> one int64 code per element."""
    t = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    t = t.reshape(-1)
    n = t.numel()
    bits = spec_of(fmt).bits
    if bits <= 4 and n % 2:
        t = torch.cat([t, t.new_zeros(1)])  # the pad is the last element: earlier indices are unchanged
    return unpack(nibble.encode(t, fmt, **kw), bits)[:n]


def dec(codes, fmt):
    """nibble.decode of one int64 code per element -> float32 numpy array."""
    codes = np.asarray(codes, dtype=np.int64).reshape(-1)
    n = codes.size
    bits = spec_of(fmt).bits
    if bits <= 4 and n % 2:
        codes = np.concatenate([codes, [0]])
    out = nibble.decode(pack(codes, bits), fmt)
    assert out.dtype == torch.float32
    return out.numpy().reshape(-1)[:n]


def ml_codes(x32, dtype):
    return np.asarray(x32, dtype=np.float32).astype(dtype).view(np.uint8).astype(np.int64)


def f32_bits(v):
    return np.asarray(v, dtype=np.float32).view(np.uint32)


def assert_same_values(got, want, what):
    """Bit-exact float32 equality (so -0.0 != +0.0), NaN matching NaN."""
    got = np.asarray(got, dtype=np.float32)
    want = np.asarray(want, dtype=np.float32)
    nan_g, nan_w = np.isnan(got), np.isnan(want)
    bad = (nan_g != nan_w) | (~nan_w & (f32_bits(got) != f32_bits(want)))
    if bad.any():
        idx = np.flatnonzero(bad)[:8]
        pytest.fail(f"{what}: {bad.sum()} mismatches, first at {idx.tolist()}: "
                    f"got {got[idx].tolist()} want {want[idx].tolist()}")


def assert_same_codes(x, got, want, what):
    got, want = np.asarray(got), np.asarray(want)
    bad = got != want
    if bad.any():
        idx = np.flatnonzero(bad)[:8]
        xs = np.asarray(x, dtype=np.float32).reshape(-1)[idx]
        pytest.fail(f"{what}: {bad.sum()} of {bad.size} codes differ; x={[float(v).hex() for v in xs]} "
                    f"({xs.tolist()}) got {[hex(int(c)) for c in got[idx]]} want {[hex(int(c)) for c in want[idx]]}")


ML = {
    "e4m3": ml_dtypes.float8_e4m3fn,
    "e5m2": ml_dtypes.float8_e5m2,
    "e2m1": ml_dtypes.float4_e2m1fn,
    "e3m2": ml_dtypes.float6_e3m2fn,
    "e2m3": ml_dtypes.float6_e2m3fn,
    "e3m4_ieee": ml_dtypes.float8_e3m4,
    "e4m3_ieee": ml_dtypes.float8_e4m3,
}
ML_DECODE = dict(ML, e8m0=ml_dtypes.float8_e8m0fnu)

# Formats checked against the numpy reference: every named one plus research formats of every storage width.
REFERENCE_FORMATS = ["e4m3", "e5m2", "e2m1", "e3m2", "e2m3", "e8m0", "ue4m3", "bf16", "fp16", "e3m4_ieee",
                     "e4m3_ieee", "e3m4", "e2m5_fn", "e1m2", "e3m0", "e5m6", "e6m9_ieee", "e4m3_fn"]


def usable_codes(fmt):
    """All codes that are valid for the format (UE4M3 uses 7 bits of its byte)."""
    return all_codes(spec_of(fmt))


# ---------------------------------------------------------------------------------------------------------
# 1. Decode
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", sorted(ML_DECODE))
def test_decode_every_code_matches_ml_dtypes(fmt):
    codes = usable_codes(fmt)
    want = codes.astype(np.uint8).view(ML_DECODE[fmt]).astype(np.float32)
    assert_same_values(dec(codes, fmt), want, f"decode {fmt}")


def test_decode_ue4m3_is_e4m3fn_read_unsigned():
    codes = np.arange(128, dtype=np.int64)
    want = codes.astype(np.uint8).view(ml_dtypes.float8_e4m3fn).astype(np.float32)
    got = dec(codes, "ue4m3")
    assert_same_values(got, want, "decode ue4m3")
    assert np.isnan(got[0x7F]) and np.all(np.isfinite(got[:0x7F])) and np.all(got[:0x7F] >= 0)
    assert got[0x7E] == 448.0


@pytest.mark.parametrize("fmt,tdtype", [("e4m3", torch.float8_e4m3fn), ("e5m2", torch.float8_e5m2)])
def test_decode_matches_torch_float8(fmt, tdtype):
    codes = torch.arange(256, dtype=torch.int32).to(torch.uint8)
    want = codes.view(tdtype).float().numpy()
    got = nibble.decode(codes, fmt)
    assert got.dtype == torch.float32 and got.shape == (256,)
    assert_same_values(got.numpy(), want, f"decode {fmt} vs torch")


@pytest.mark.parametrize("fmt,tdtype", [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_decode_16bit_matches_torch(fmt, tdtype):
    codes = torch.from_numpy(np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.int16))
    want = codes.view(tdtype).float().numpy()
    got = nibble.decode(codes, fmt)
    assert got.dtype == torch.float32
    assert_same_values(got.numpy(), want, f"decode {fmt} vs torch")


@pytest.mark.parametrize("fmt", REFERENCE_FORMATS)
def test_decode_every_code_matches_reference(fmt):
    spec = spec_of(fmt)
    codes = all_codes(spec)
    assert_same_values(dec(codes, fmt), ref_decode(spec, codes), f"decode {fmt}")


def test_e8m0_decode_is_power_of_two():
    codes = np.arange(255)
    got = dec(codes, "e8m0").astype(np.float64)
    assert np.array_equal(got, np.ldexp(1.0, codes - 127))
    assert np.isnan(dec([0xFF], "e8m0")[0])


# ---------------------------------------------------------------------------------------------------------
# 2. Round trip and ties
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", REFERENCE_FORMATS)
def test_encode_of_every_code_value_returns_the_code(fmt):
    spec = spec_of(fmt)
    codes = all_codes(spec)
    vals = dec(codes, fmt)
    finite = np.isfinite(vals)  # NaN and Inf codes are checked in the special-value tests
    assert_same_codes(vals[finite], enc(vals[finite], fmt), codes[finite], f"round trip {fmt}")
    # bf16 input: the codes whose value is a bf16 number.
    bf = torch.from_numpy(vals[finite]).to(torch.bfloat16)
    exact = bf.float().numpy() == vals[finite]
    assert exact.sum() >= min(64, finite.sum())
    assert_same_codes(vals[finite][exact], enc(bf, fmt)[exact], codes[finite][exact], f"bf16 round trip {fmt}")


def _midpoints(spec):
    vals, codes = pos_grid(spec)
    mids64 = (vals[:-1] + vals[1:]) / 2
    mids = mids64.astype(np.float32)
    assert np.array_equal(mids.astype(np.float64), mids64)  # every midpoint is an FP32 number
    even = np.where(codes[:-1] % 2 == 0, codes[:-1], codes[1:])
    return mids, even


@pytest.mark.parametrize("fmt", REFERENCE_FORMATS)
def test_midpoints_round_to_the_even_code(fmt):
    spec = spec_of(fmt)
    mids, even = _midpoints(spec)
    assert_same_codes(mids, enc(mids, fmt), even, f"{fmt} midpoints")
    if spec.signed:
        assert_same_codes(-mids, enc(-mids, fmt), even | spec.sign_bit, f"{fmt} negative midpoints")
    # One float32 ulp either side of a midpoint goes to the nearer neighbour.
    vals, codes = pos_grid(spec)
    below = np.nextafter(mids, np.float32(0))
    above = np.nextafter(mids, np.float32(np.inf))
    assert_same_codes(below, enc(below, fmt), codes[:-1], f"{fmt} just below midpoints")
    assert_same_codes(above, enc(above, fmt), codes[1:], f"{fmt} just above midpoints")


@pytest.mark.parametrize("fmt", sorted(ML))
def test_midpoints_agree_with_ml_dtypes(fmt):
    spec = spec_of(fmt)
    mids, even = _midpoints(spec)
    x = np.concatenate([mids, -mids])
    ml = ml_codes(x, ML[fmt])
    assert_same_codes(x, ml, np.concatenate([even, even | spec.sign_bit]), f"ml_dtypes {fmt} midpoints (oracle)")
    assert_same_codes(x, enc(x, fmt), ml, f"{fmt} midpoints vs ml_dtypes")


def test_e8m0_rounds_to_nearest_power_of_two_with_ties_to_even():
    # Linear distance decides: 1.25 * 2^k -> 2^k, 1.75 * 2^k -> 2^(k+1), 1.5 * 2^k -> the even code.
    k = np.arange(-127, 127)
    for frac, up in [(1.25, np.zeros_like(k, bool)), (1.75, np.ones_like(k, bool)), (1.5, (k + 127) % 2 == 1)]:
        x = np.ldexp(frac, k).astype(np.float32)
        assert np.array_equal(x.astype(np.float64), np.ldexp(frac, k))
        assert_same_codes(x, enc(x, "e8m0"), k + 127 + up, f"e8m0 {frac}*2^k")
    # Below 2^-127 (0 included) is code 0; above 2^127 saturates to 0xFE.
    tiny = np.array([0.0, 1e-45, 2.0**-140, 2.0**-128, np.nextafter(np.float32(2.0**-127), np.float32(0))],
                    np.float32)
    assert_same_codes(tiny, enc(tiny, "e8m0"), np.zeros(5, np.int64), "e8m0 below 2^-127")
    big = np.array([2.0**127 * 1.4, 2.0**127 * 1.6, np.finfo(np.float32).max, np.inf], np.float32)
    assert_same_codes(big, enc(big, "e8m0"), np.full(4, 0xFE), "e8m0 saturation")


def test_e8m0_powers_of_two_match_ml_dtypes():
    k = np.arange(-127, 128)
    x = np.ldexp(1.0, k).astype(np.float32)
    got = enc(x, "e8m0")
    assert np.array_equal(got, k + 127)
    assert_same_codes(x, got, ml_codes(x, ml_dtypes.float8_e8m0fnu), "e8m0 powers of two vs ml_dtypes")


def test_e8m0_midpoint_rounding_differs_from_ml_dtypes():
    """Documents the one known disagreement: ml_dtypes rounds 3.0 up to 4.0 (and 0 to NaN); nibble's E8M0
    encode is RNE on the code, so the tie 3.0 = (2 + 4) / 2 goes to the even code 0x80 = 2.0, and 0 -> 2^-127."""
    x = np.array([3.0, 0.0], np.float32)
    ours = enc(x, "e8m0")
    assert ours.tolist() == [0x80, 0x00]
    assert dec(ours, "e8m0").tolist() == [2.0, 2.0**-127]
    theirs = x.astype(ml_dtypes.float8_e8m0fnu)
    assert float(theirs[0]) == 4.0 and np.isnan(float(theirs[1]))


def test_signed_zero_keeps_its_sign():
    for fmt, neg_zero in [("e4m3", 0x80), ("e5m2", 0x80), ("e2m1", 0x8), ("e3m2", 0x20), ("e2m3", 0x20),
                          ("bf16", 0x8000), ("fp16", 0x8000), ("e5m6", 0x800)]:
        x = np.array([0.0, -0.0], np.float32)
        codes = enc(x, fmt)
        assert codes.tolist() == [0, neg_zero], fmt
        back = dec(codes, fmt)
        assert back.tolist() == [0.0, 0.0] and not np.signbit(back[0]) and np.signbit(back[1]), fmt


# ---------------------------------------------------------------------------------------------------------
# 3. Random values against the oracles
# ---------------------------------------------------------------------------------------------------------


def oracle_inputs(spec, n, seed):
    """n float32 values over the whole range: log-uniform magnitudes from below the smallest subnormal to
    above max with random signs, plus every grid value, midpoints and their neighbours, max, just above max,
    the overflow threshold, FP32 subnormals, FLT_MAX and Inf."""
    rng = np.random.default_rng(seed)
    vals = pos_grid(spec)[0]
    tiny, top = vals[1] if vals[0] == 0 else vals[0], vals[-1]
    thr = np.float32(overflow_threshold(spec))
    mids = ((vals[:-1] + vals[1:]) / 2).astype(np.float32)
    f32 = np.float32
    extra = np.concatenate([
        vals.astype(np.float32), mids, np.nextafter(mids, f32(0)), np.nextafter(mids, f32(np.inf)),
        [top, np.nextafter(f32(top), f32(np.inf)), thr, np.nextafter(thr, f32(0)), np.nextafter(thr, f32(np.inf)),
         tiny / 2, np.nextafter(f32(tiny / 2), f32(0)), np.nextafter(f32(tiny / 2), f32(1)),
         1e-45, 1e-40, 1.1754942e-38, np.finfo(np.float32).max, np.inf, 0.0],
    ]).astype(np.float32)
    extra = np.concatenate([extra, -extra])
    k = max(n - extra.size, 0)
    lo, hi = math.log2(tiny) - 4, math.log2(top) + 3
    mags = np.minimum(np.exp2(rng.uniform(lo, hi, k)), np.finfo(np.float32).max)
    signs = np.where(rng.random(k) < 0.5, -1.0, 1.0)
    x = np.concatenate([(signs * mags).astype(np.float32), extra])
    if not spec.signed:
        x = np.abs(x)
    return x


def check_against_oracle(fmt, x_in, x_val, got, oracle_codes, what):
    """x_val: the float32 value that was encoded; in range: codes equal the oracle's; beyond: ±max."""
    spec = spec_of(fmt)
    thr = overflow_threshold(spec)
    a = np.abs(x_val.astype(np.float64))
    inr = a < thr
    assert inr.sum() > 0.5 * x_val.size and (~inr).sum() > 10
    assert_same_codes(x_val[inr], got[inr], oracle_codes[inr], f"{what}: in range")
    max_code = pos_grid(spec)[1][-1]
    want = _apply_sign(spec, x_val[~inr], np.full((~inr).sum(), max_code))
    assert_same_codes(x_val[~inr], got[~inr], want, f"{what}: beyond max saturates")


@pytest.mark.parametrize("fmt", sorted(ML))
def test_random_values_match_ml_dtypes(fmt):
    spec = spec_of(fmt)
    x = oracle_inputs(spec, 1_000_000, seed=1)
    check_against_oracle(fmt, x, x, enc(x, fmt), ml_codes(x, ML[fmt]), f"{fmt} vs ml_dtypes")


@pytest.mark.parametrize("fmt", sorted(ML))
def test_bfloat16_input_matches_ml_dtypes_of_its_float32_value(fmt):
    spec = spec_of(fmt)
    x = oracle_inputs(spec, 300_000, seed=2)
    xb = torch.from_numpy(x).to(torch.bfloat16)
    xv = xb.float().numpy()
    got = enc(xb, fmt)
    check_against_oracle(fmt, x, xv, got, ml_codes(xv, ML[fmt]), f"{fmt} bf16 input vs ml_dtypes")
    assert np.array_equal(got, enc(xv, fmt))


@pytest.mark.parametrize("fmt,tdtype", [("e4m3", torch.float8_e4m3fn), ("e5m2", torch.float8_e5m2)])
def test_random_values_match_torch_float8(fmt, tdtype):
    spec = spec_of(fmt)
    x = oracle_inputs(spec, 300_000, seed=3)
    x = x[np.isfinite(x)]
    inr = np.abs(x.astype(np.float64)) < overflow_threshold(spec)
    xi = x[inr]
    want = torch.from_numpy(xi).to(tdtype).view(torch.uint8).numpy().astype(np.int64)
    assert_same_codes(xi, enc(xi, fmt), want, f"{fmt} vs torch .to({tdtype})")


@pytest.mark.parametrize("fmt", REFERENCE_FORMATS)
@pytest.mark.parametrize("rounding", ["rne", "toward_zero"])
def test_random_values_match_reference(fmt, rounding):
    spec = spec_of(fmt)
    x = oracle_inputs(spec, 200_000, seed=4)
    assert_same_codes(x, enc(x, fmt, rounding=rounding), ref_encode(spec, x, rounding), f"{fmt} {rounding}")


@pytest.mark.parametrize("fmt", ["e4m3", "e5m2", "e2m1", "e3m2", "e2m3", "bf16", "e5m6", "e8m0"])
def test_toward_zero_never_increases_magnitude(fmt):
    spec = spec_of(fmt)
    x = oracle_inputs(spec, 100_000, seed=5)
    if fmt == "e8m0":
        x = x[x >= 2.0**-127]  # below the smallest code there is nothing toward zero
    back = dec(enc(x, fmt, rounding="toward_zero"), fmt).astype(np.float64)
    xa = np.abs(x.astype(np.float64))
    assert np.all(np.abs(back) <= xa)
    assert np.all((back == 0) | (np.signbit(back) == np.signbit(x)))


@pytest.mark.parametrize("fmt", ["e4m3", "e5m2", "e2m1", "e3m2", "e2m3", "bf16", "fp16", "e3m4_ieee", "e5m6"])
@pytest.mark.parametrize("rounding", ["rne", "stochastic", "toward_zero"])
def test_infinity_saturates_to_max_finite(fmt, rounding):
    spec = spec_of(fmt)
    big = np.finfo(np.float32).max  # beyond every format's max + half ulp (bf16's too)
    x = np.array([np.inf, -np.inf, big, -big], np.float32)
    codes = enc(x, fmt, rounding=rounding)
    m = pos_grid(spec)[1][-1]
    assert codes.tolist() == [m, m | spec.sign_bit] * 2
    top = max_finite(spec)
    assert dec(codes, fmt).tolist() == [top, -top] * 2


# ---------------------------------------------------------------------------------------------------------
# 4. Stochastic rounding
# ---------------------------------------------------------------------------------------------------------

SR_FORMATS = ["e4m3", "e5m2", "e2m1", "e3m2", "e2m3", "e8m0", "ue4m3", "bf16", "fp16", "e3m4_ieee", "e5m6"]


def default_random_bits(spec):
    return 8 if spec.bits <= 8 else 16


@pytest.mark.parametrize("fmt", SR_FORMATS)
def test_stochastic_gives_one_of_the_two_neighbours(fmt):
    spec = spec_of(fmt)
    x = oracle_inputs(spec, 200_000, seed=6)
    if fmt == "e8m0":
        x = x[x >= 2.0**-127]
    codes = enc(x, fmt, rounding="stochastic", seed=11, offset=3)
    back = dec(codes, fmt).astype(np.float64)
    lo, hi = ref_neighbours(spec, x)
    ok = (back == lo) | (back == hi)
    if not ok.all():
        i = np.flatnonzero(~ok)[:8]
        pytest.fail(f"{fmt}: {(~ok).sum()} stochastic results are not a neighbour: x={x[i].tolist()} "
                    f"got {back[i].tolist()} lo={lo[i].tolist()} hi={hi[i].tolist()}")
    # Grid values map to themselves, beyond max to ±max, and both neighbours occur.
    vals = pos_grid(spec)[0]
    on_grid = np.isin(np.abs(x.astype(np.float64)), vals)
    assert np.array_equal(back[on_grid], x[on_grid].astype(np.float64))
    inside = lo != hi
    assert (back[inside] == lo[inside]).mean() > 0.2 and (back[inside] == hi[inside]).mean() > 0.2


def _sr_cases(spec):
    """(x, lo, hi) for several interior points of a few intervals: [0, min subnormal], a subnormal
    interval, the interval holding 1 (or the middle of the grid), the top interval; both signs."""
    vals = pos_grid(spec)[0]
    ks = {0, 1, min(int(np.searchsorted(vals, 1.0, side="right")) - 1, len(vals) - 2), len(vals) - 2,
          len(vals) // 3}
    cases = []
    for k in sorted(ks):
        lo, hi = vals[k], vals[k + 1]
        for p in [0.1, 0.3, 0.5, 0.77, 0.95]:
            x = np.float32(lo + p * (hi - lo))
            assert lo < x < hi
            cases.append((x, lo, hi))
            if spec.signed:
                cases.append((-x, -hi, -lo))
    return cases


@pytest.mark.parametrize("fmt", SR_FORMATS)
def test_stochastic_is_unbiased(fmt):
    spec = spec_of(fmt)
    n = 10_000
    cases = _sr_cases(spec)
    xs = np.array([c[0] for c in cases], np.float32)
    lo = np.array([c[1] for c in cases])
    hi = np.array([c[2] for c in cases])
    # One tensor holding n copies of each x: the element index makes the draws independent.
    x = np.repeat(xs[:, None], n, axis=1)
    back = dec(enc(x.reshape(-1), fmt, rounding="stochastic", seed=20240601, offset=0), fmt)
    back = back.astype(np.float64).reshape(len(cases), n)
    assert np.all((back == lo[:, None]) | (back == hi[:, None]))
    p = (xs.astype(np.float64) - lo) / (hi - lo)
    sigma = (hi - lo) * np.sqrt(p * (1 - p))
    r = default_random_bits(spec)
    tol = 4 * sigma / math.sqrt(n) + (hi - lo) / 2**r  # the r-bit quantisation of p
    err = np.abs(back.mean(axis=1) - xs.astype(np.float64))
    bad = err > tol
    if bad.any():
        i = np.flatnonzero(bad)
        pytest.fail(f"{fmt}: biased SR for x={xs[i].tolist()} (lo={lo[i].tolist()}, hi={hi[i].tolist()}): "
                    f"mean={back.mean(axis=1)[i].tolist()} |err|={err[i].tolist()} > tol={tol[i].tolist()}")


@pytest.mark.parametrize("fmt", ["e2m1", "e4m3"])
def test_stochastic_uses_8_random_bits_by_default(fmt):
    # p = 1/512 is below the resolution of 8 random bits: never rounds up; p = 1/256 rounds up 1 time in 256.
    spec = spec_of(fmt)
    vals = pos_grid(spec)[0]
    k = int(np.searchsorted(vals, 1.0))
    ulp = vals[k + 1] - vals[k]
    n = 65_536
    x = np.full(n, 1.0 + ulp / 512, np.float32)
    back = dec(enc(x, fmt, rounding="stochastic", seed=5), fmt)
    assert np.all(back == 1.0)
    x = np.full(n, 1.0 + ulp / 256, np.float32)
    ups = (dec(enc(x, fmt, rounding="stochastic", seed=5), fmt) != 1.0).sum()
    assert abs(ups - n / 256) < 5 * math.sqrt(n / 256)
    # With random_bits=16 the p = 1/512 draws do round up now and then.
    x = np.full(n, 1.0 + ulp / 512, np.float32)
    ups = (dec(enc(x, fmt, rounding="stochastic", seed=5, random_bits=16), fmt) != 1.0).sum()
    assert abs(ups - n / 512) < 5 * math.sqrt(n / 512)


def test_stochastic_probability_is_quantised_to_random_bits():
    # e4m3 between 1 and 1.125: with r random bits P(up) = floor(p * 2^r) / 2^r.
    n = 20_000
    for r, p, want in [(1, 0.25, 0.0), (1, 0.75, 0.5), (2, 0.6, 0.5), (3, 0.99, 0.875)]:
        x = np.full(n, 1.0 + p * 0.125, np.float32)
        up = (dec(enc(x, "e4m3", rounding="stochastic", seed=9, random_bits=r), "e4m3") > 1.0).mean()
        assert abs(up - want) < 4 * math.sqrt(max(want * (1 - want), 1e-9) / n) + 1e-12, (r, p, up)


@pytest.mark.parametrize("r", [-1, 17, 32])
def test_stochastic_rejects_bad_random_bit_count(r):
    with pytest.raises(ValueError):
        nibble.encode(torch.ones(4), "e4m3", rounding="stochastic", random_bits=r)


def _random_tensor(n, seed):
    rng = np.random.default_rng(seed)
    return torch.from_numpy((rng.standard_normal(n) * np.exp2(rng.uniform(-8, 8, n))).astype(np.float32))


@pytest.mark.parametrize("fmt", ["e4m3", "e2m1", "bf16"])
def test_stochastic_is_deterministic_for_any_thread_count(fmt, restore_nibble_threads):
    x = _random_tensor(200_002, seed=7)  # ~25 chunks of work
    a = nibble.encode(x, fmt, rounding="stochastic", seed=42, offset=9)
    b = nibble.encode(x, fmt, rounding="stochastic", seed=42, offset=9)
    assert torch.equal(a, b)
    nibble.set_num_threads(1)
    assert nibble.get_num_threads() == 1
    one = nibble.encode(x, fmt, rounding="stochastic", seed=42, offset=9)
    nibble.set_num_threads(2)
    assert nibble.get_num_threads() == 2
    two = nibble.encode(x, fmt, rounding="stochastic", seed=42, offset=9)
    assert torch.equal(one, a) and torch.equal(two, a)


@pytest.mark.parametrize("fmt", ["e4m3", "e2m1", "bf16"])
def test_stochastic_seed_and_offset_change_the_draws(fmt):
    x = _random_tensor(100_000, seed=8)
    base = enc(x, fmt, rounding="stochastic", seed=42, offset=9)
    xn = x.numpy().astype(np.float64)
    # Elements strictly between two grid values: there stochastic rounding has a choice to make.
    inexact = (dec(enc(x, fmt, rounding="toward_zero"), fmt) != xn) & (np.abs(xn) < max_finite(spec_of(fmt)))
    assert inexact.sum() > 10_000
    for kw in [dict(seed=43, offset=9), dict(seed=42, offset=10), dict(seed=42 + (1 << 40), offset=9),
               dict(seed=42, offset=9 + (1 << 40))]:
        other = enc(x, fmt, rounding="stochastic", **kw)
        frac = (other != base)[inexact].mean()
        assert frac > 0.1, (kw, frac)


def test_stochastic_depends_only_on_the_flat_index():
    # A prefix of a tensor gets the same codes as the same elements inside the whole tensor, and an N-D or
    # non-contiguous tensor the same codes as its contiguous flat copy.
    x = _random_tensor(50_000, seed=9)
    whole = nibble.encode(x, "e4m3", rounding="stochastic", seed=3, offset=1)
    for cut in [1, 17, 8192, 8193, 30_000]:
        part = nibble.encode(x[:cut], "e4m3", rounding="stochastic", seed=3, offset=1)
        assert torch.equal(part, whole[:cut]), cut
    m = x[:50_000].reshape(250, 200)
    t = m.t()
    assert torch.equal(nibble.encode(t, "e4m3", rounding="stochastic", seed=3),
                       nibble.encode(t.contiguous(), "e4m3", rounding="stochastic", seed=3))
    assert torch.equal(nibble.encode(m, "e2m1", rounding="stochastic", seed=3).reshape(-1),
                       nibble.encode(m.reshape(-1), "e2m1", rounding="stochastic", seed=3))


# Philox4x32-10 in numpy, to pin the random stream (CPU and GPU must draw the same bits).
_MASK32 = np.uint64(0xFFFFFFFF)


def philox4x32_10(counter, key):
    c0, c1, c2, c3 = (np.asarray(c, dtype=np.uint64) for c in counter)
    k0, k1 = np.uint64(key[0]), np.uint64(key[1])
    for _ in range(10):
        p0 = np.uint64(0xD2511F53) * c0
        p1 = np.uint64(0xCD9E8D57) * c2
        c0, c1, c2, c3 = (p1 >> np.uint64(32)) ^ c1 ^ k0, p1 & _MASK32, (p0 >> np.uint64(32)) ^ c3 ^ k1, p0 & _MASK32
        k0 = (k0 + np.uint64(0x9E3779B9)) & _MASK32
        k1 = (k1 + np.uint64(0xBB67AE85)) & _MASK32
    return c0, c1, c2, c3


def stochastic_bits(seed, offset, index, r):
    """The r random bits of each element index (precision/stochastic.h): Philox keyed by seed, counter
    (offset lo, offset hi, subsequence lo, subsequence hi); a 32-bit word serves k = 32 / r elements."""
    index = np.asarray(index, dtype=np.uint64)
    k = np.uint64(32 // r)
    sub = index // (np.uint64(4) * k)
    words = philox4x32_10([np.full(index.shape, offset & 0xFFFFFFFF, np.uint64),
                           np.full(index.shape, offset >> 32, np.uint64), sub & _MASK32, sub >> np.uint64(32)],
                          [seed & 0xFFFFFFFF, seed >> 32])
    w = np.select([(index // k) % np.uint64(4) == np.uint64(i) for i in range(4)], words)
    return ((w >> ((index % k) * np.uint64(r))) & np.uint64((1 << r) - 1)).astype(np.int64)


def test_numpy_philox_matches_random123_known_answers():
    cases = [([0, 0, 0, 0], [0, 0], [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]),
             ([0xFFFFFFFF] * 4, [0xFFFFFFFF] * 2, [0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD]),
             ([0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344], [0xA4093822, 0x299F31D0],
              [0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1])]
    for ctr, key, want in cases:
        assert [int(v) for v in philox4x32_10(ctr, key)] == want


@pytest.mark.parametrize("fmt,r,ulp", [("e2m1", 8, 0.5), ("e4m3", 8, 0.125), ("bf16", 16, 2.0**-7)])
def test_stochastic_adds_philox_bits_below_the_kept_mantissa(fmt, r, ulp):
    """x = 1 + (j / 2^r) ulp rounds up exactly when its r random bits b satisfy b + j >= 2^r
    (NUMERICS.md: add r random bits below the kept mantissa bits, then truncate)."""
    seed, offset, n = 0x0123456789ABCDEF, (5 << 32) | 7, 4096
    rng = np.random.default_rng(10)
    j = rng.integers(0, 1 << r, n)
    x = (1.0 + j * (ulp / 2**r)).astype(np.float32)
    assert np.array_equal(x.astype(np.float64), 1.0 + j * (ulp / 2**r))
    bits = stochastic_bits(seed, offset, np.arange(n), r)
    up = dec(enc(x, fmt, rounding="stochastic", seed=seed, offset=offset), fmt) > 1.0
    want = bits + j >= (1 << r)
    bad = up != want
    assert not bad.any(), f"first differing elements {np.flatnonzero(bad)[:8].tolist()}"


# ---------------------------------------------------------------------------------------------------------
# 5. Errors and special values
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["e9m9", "fp7", "", "e4m3x", "e0m3", "e4m11", "e8m8", "fp8", "E4M3 "])
def test_unknown_format_is_a_value_error_listing_valid_names(name):
    for call in [lambda: nibble.encode(torch.ones(4), name), lambda: nibble.decode(torch.zeros(4, dtype=torch.uint8), name)]:
        with pytest.raises(ValueError) as info:
            call()
        msg = str(info.value)
        for valid in ["e4m3", "e5m2", "e2m1", "e8m0"]:
            assert valid in msg, msg


@pytest.mark.parametrize("shape", [(3,), (2, 5), (1,), ()])
def test_e2m1_odd_last_dim_is_a_value_error(shape):
    with pytest.raises(ValueError):
        nibble.encode(torch.ones(shape), "e2m1")


@pytest.mark.parametrize("fmt", ["e4m3", "e5m2", "e2m1", "e3m2", "e2m3", "e8m0", "ue4m3", "bf16", "e5m6"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("rounding", ["rne", "stochastic"])
def test_nan_is_a_value_error_naming_the_index(fmt, dtype, rounding):
    x = torch.arange(1, 101, dtype=torch.float32).to(dtype)
    x[37] = float("nan")
    with pytest.raises(ValueError, match=r"\b37\b"):
        nibble.encode(x, fmt, rounding=rounding)
    # A NaN far into the tensor (a later thread's chunk) is found too.
    y = torch.ones(100_000, dtype=dtype)
    y[91_234] = float("nan")
    with pytest.raises(ValueError, match=r"\b91234\b"):
        nibble.encode(y, fmt)


@pytest.mark.parametrize("fmt", ["e2m1", "e3m2", "e2m3", "e3m4"])
def test_nan_into_a_format_without_nan_raises_even_when_propagating(fmt):
    x = torch.tensor([1.0, float("nan")])
    with pytest.raises(ValueError):
        nibble.encode(x, fmt, nan="propagate")


def test_nan_propagate():
    nan = float("nan")
    x = torch.tensor([1.0, nan, -2.0, -nan])
    e4 = enc(x, "e4m3", nan="propagate")
    assert e4[0] == 0x38 and e4[2] == 0xC0
    assert e4[1] in (0x7F, 0xFF) and e4[3] in (0x7F, 0xFF)
    e5 = enc(x, "e5m2", nan="propagate")
    assert e5[0] == 0x3C and e5[2] == 0xC0
    assert e5[1] == 0x7E and e5[3] in (0x7E, 0xFE)
    assert enc(torch.tensor([nan, 1.0]), "e8m0", nan="propagate").tolist() == [0xFF, 0x7F]
    assert enc(torch.tensor([nan, 1.0]), "ue4m3", nan="propagate").tolist() == [0x7F, 0x38]
    for fmt in ["e4m3", "e5m2", "e8m0", "ue4m3", "bf16", "fp16", "e3m4_ieee", "e5m6_fn"]:
        for rounding in ["rne", "stochastic", "toward_zero"]:
            codes = enc(torch.tensor([nan, 1.0]), fmt, nan="propagate", rounding=rounding)
            back = dec(codes, fmt)
            assert np.isnan(back[0]) and back[1] == 1.0, (fmt, rounding)
    xb = torch.tensor([nan, 1.5], dtype=torch.bfloat16)
    assert np.isnan(dec(enc(xb, "e4m3", nan="propagate"), "e4m3")[0])


@pytest.mark.parametrize("fmt", ["e8m0", "ue4m3"])
@pytest.mark.parametrize("bad", [-2.0, -1e-30, -float("inf")])
def test_negative_into_unsigned_format_is_a_value_error(fmt, bad):
    x = torch.tensor([1.0, 2.0, bad, 4.0])
    with pytest.raises(ValueError, match=r"\b2\b"):
        nibble.encode(x, fmt)
    with pytest.raises(ValueError):
        nibble.encode(x.to(torch.bfloat16), fmt, rounding="stochastic")


@pytest.mark.parametrize("dtype,words", [(torch.float64, ("float64", "double")), (torch.int32, ("int32", "int")),
                                         (torch.float16, ("float16", "half")), (torch.uint8, ("uint8", "byte"))])
def test_wrong_input_dtype_is_rejected_naming_it(dtype, words):
    with pytest.raises((TypeError, ValueError)) as info:
        nibble.encode(torch.ones(8, dtype=dtype), "e4m3")
    msg = str(info.value).lower()
    assert any(w in msg for w in words), msg


def test_wrong_code_dtype_for_decode_is_rejected():
    with pytest.raises((TypeError, ValueError)):
        nibble.decode(torch.zeros(4, dtype=torch.int16), "e4m3")
    with pytest.raises((TypeError, ValueError)):
        nibble.decode(torch.zeros(4, dtype=torch.uint8), "bf16")


@pytest.mark.parametrize("kw", [dict(rounding="nearest_away"), dict(rounding=""), dict(nan="ignore")])
def test_unknown_rounding_or_nan_policy_is_a_value_error(kw):
    with pytest.raises(ValueError):
        nibble.encode(torch.ones(4), "e4m3", **kw)


# ---------------------------------------------------------------------------------------------------------
# 6. Shapes, dtypes of the codes, packing
# ---------------------------------------------------------------------------------------------------------


def test_e2m1_packs_low_nibble_first():
    codes = nibble.encode(torch.tensor([0.5, -6.0]), "e2m1")
    assert codes.dtype == torch.uint8 and codes.tolist() == [0xF1]
    codes = nibble.encode(torch.tensor([[-0.0, 0.0, 1.0, 3.0], [6.0, -0.5, 2.0, -1.5]]), "e2m1")
    assert codes.shape == (2, 2) and codes.tolist() == [[0x08, 0x52], [0x97, 0xB4]]
    back = nibble.decode(torch.tensor([0xF1], dtype=torch.uint8), "e2m1")
    assert back.dtype == torch.float32 and back.tolist() == [0.5, -6.0]


@pytest.mark.parametrize("fmt,dtype", [("e4m3", torch.uint8), ("e5m2", torch.uint8), ("e3m2", torch.uint8),
                                       ("e8m0", torch.uint8), ("e2m1", torch.uint8), ("e5m6", torch.int16),
                                       ("bf16", torch.int16), ("fp16", torch.int16)])
def test_nd_shapes_and_code_dtypes(fmt, dtype):
    spec = spec_of(fmt)
    x = _random_tensor(2 * 3 * 4 * 6, seed=11).reshape(2, 3, 4, 6)
    if not spec.signed:
        x = x.abs()
    codes = nibble.encode(x, fmt)
    want_shape = (2, 3, 4, 3) if spec.bits <= 4 else (2, 3, 4, 6)
    assert codes.dtype == dtype and tuple(codes.shape) == want_shape
    assert np.array_equal(unpack(codes, spec.bits).reshape(-1), enc(x.reshape(-1), fmt))
    back = nibble.decode(codes, fmt)
    assert back.dtype == torch.float32 and tuple(back.shape) == (2, 3, 4, 6)
    assert np.array_equal(back.reshape(-1).numpy(), dec(enc(x.reshape(-1), fmt), fmt))


def _views(base):
    return {
        "transpose": base.t(),
        "column_step": base[:, ::2],
        "row_step_and_slice": base[::3, 2:42],
        "permute_3d": base.reshape(8, 8, 48).permute(2, 0, 1),
        "expand": base[:1].expand(5, 48),
        "flip_like": base.t()[10:20],
    }


@pytest.mark.parametrize("fmt", ["e4m3", "e2m1", "e5m6"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("rounding", ["rne", "stochastic"])
def test_non_contiguous_input_equals_its_contiguous_copy(fmt, dtype, rounding):
    base = _random_tensor(64 * 48, seed=12).reshape(64, 48).to(dtype)
    for name, v in _views(base).items():
        assert not v.is_contiguous() or name == "expand"
        if v.shape[-1] % 2 and spec_of(fmt).bits <= 4:
            continue
        a = nibble.encode(v, fmt, rounding=rounding, seed=1)
        b = nibble.encode(v.contiguous(), fmt, rounding=rounding, seed=1)
        assert a.shape == b.shape and torch.equal(a, b), name
        # Decoding a non-contiguous view of codes works too.
        if spec_of(fmt).bits > 4:
            assert torch.equal(nibble.decode(a.t() if a.dim() == 2 else a, fmt),
                               nibble.decode((a.t() if a.dim() == 2 else a).contiguous(), fmt)), name


@pytest.mark.parametrize("fmt", ["e4m3", "e2m1", "bf16"])
def test_empty_and_scalar_tensors(fmt):
    bits = spec_of(fmt).bits
    for shape in [(0,), (3, 0), (0, 4)]:
        codes = nibble.encode(torch.empty(shape), fmt)
        want = shape[:-1] + (shape[-1] // 2,) if bits <= 4 else shape
        assert tuple(codes.shape) == want
        assert tuple(nibble.decode(codes, fmt).shape) == shape
    if bits > 4:
        codes = nibble.encode(torch.tensor(1.5), fmt)
        assert codes.shape == () and float(nibble.decode(codes, fmt)) == 1.5
