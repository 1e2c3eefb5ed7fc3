// The lanes of quantize_rht_lanes.h in Highway, compiled once per target (encode_rne_lanes.cpp says how
// foreach_target.h and the dispatch table work): one float64 lane per column, N columns a butterfly (8 on
// AVX-512, 4 on AVX2, 2 on SSE4/NEON), the 16 rows of a group 16 vectors, and 2N columns a pass, whose
// exactness bound (butterfly_lanes-inl.h's column_bound) is taken once at the full float32 width. Every
// float64 operation is exact or a correctly rounded IEEE operation on the reference's value: promotion, the
// sign flip and the x 0.25 as one multiply-add by +-0.25 (exact, and "+ 0" turns a flipped +0 into +0, so no
// -0 enters the butterfly and none comes out, as the reference's "+ 0.0"), the butterfly's adds (exact under
// the bound, so 0.25 x the exact sum), rounding to float32. So every target gives the reference's bits where
// the bound holds, and the reference itself where it does not.
//
// Why this shape (AVX2 ran at ~0.5x AVX-512 before, Xeon family 6 model 207): the butterfly's adds and the
// float64 -> float32 roundings cost the same per instruction on both targets (2 and 1 a cycle), so AVX2's
// half-width lanes take twice the instructions there; the old per-row bound (abs, NaN compare and zeroing,
// max, a compare and a variable blend for min-nonzero, on each float64 half: ~11 uops a row on AVX2, whose
// masks are vectors and blends 2-3 uops, against ~5 with AVX-512's mask registers) and the 16 ymm registers
// (a third of the butterfly spilled) came on top. Now the bound is 4 integer operations a row at the float32
// width (vpmaxud/vpminud on ymm run 2 a cycle, on zmm 1), promotion reads memory (1 uop on ymm, 2 on zmm),
// the butterfly runs depth first (few spills), and the x 0.25 rides on the input's multiply-add. GCC may
// contract a product into the following add (-ffp-contract=fast): every product here is exact (by +-0.25,
// 0.25), so the fused operation rounds the same.
// It keeps arrays of vectors, so ARM builds compile it for NEON only:
#include "precision/cpu/hwy_neon_only_on_arm.h"
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "precision/cpu/rht_lanes.cpp"
#include <hwy/foreach_target.h>  // must come before highway.h

#include <hwy/highway.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "precision/cpu/quantize_rht_lanes.h"
// Per target, after the namespace above is defined (Highway's -inl convention).
#include "precision/cpu/butterfly_lanes-inl.h"

HWY_BEFORE_NAMESPACE();
namespace nibble::precision::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

#if HWY_TARGET == HWY_SCALAR
// One lane: the scalar loops (the same bits).
void Rht16Rows(const float* HWY_RESTRICT x, int64_t ldx, int64_t cols, uint32_t sign_mask, float* HWY_RESTRICT y,
               int64_t ldy) {
  rht16_rows_scalar(x, ldx, 0, cols, sign_mask, y, ldy);
}

bool Rht16RowsAmax(const float* HWY_RESTRICT x, int64_t ldx, int64_t cols, uint32_t sign_mask, float* in_amax,
                   float* out_amax) {
  return rht16_rows_amax_scalar(x, ldx, 0, cols, sign_mask, in_amax, out_amax);
}
#else
// At most 8 columns a butterfly; float32 loads and stores of the same lane count (DF), and of twice it for
// a pass's bound (DW).
using D = hn::CappedTag<double, 8>;
using DF = hn::Rebind<float, D>;
using DW = hn::Twice<DF>;
using V = hn::Vec<D>;

HWY_INLINE void input_scales(uint32_t sign_mask, V (&scale)[16]) {
  const D d;
  for (int i = 0; i < 16; ++i) scale[i] = hn::Set(d, ((sign_mask >> i) & 1u) ? -0.25 : 0.25);
}

// The sign bit where sign_mask flips row i (max_abs_half's inputs).
HWY_INLINE void sign_flips(uint32_t sign_mask, V (&flip)[16]) {
  const D d;
  for (int i = 0; i < 16; ++i) flip[i] = hn::Set(d, ((sign_mask >> i) & 1u) ? -0.0 : 0.0);
}

// Columns [c, c + N) of the 16 rows: x * (+-0.25) + 0 into v[i], then every butterfly stage but the last.
HWY_INLINE void butterfly_but_last(const float* HWY_RESTRICT x, int64_t ldx, int64_t c, const V (&scale)[16],
                                   V (&v)[16]) {
  const D d;
  const DF df;
  const V zero = hn::Zero(d);
  butterfly_lanes_but_last(v, [&](int i) HWY_ATTR {
    return hn::MulAdd(hn::PromoteTo(d, hn::LoadU(df, x + i * ldx + c)), scale[i], zero);
  });
}

// Columns [c, c + N): the transform, rounded to float32, into y.
HWY_INLINE void store_half(const float* HWY_RESTRICT x, int64_t ldx, int64_t c, const V (&scale)[16],
                           float* HWY_RESTRICT y, int64_t ldy) {
  const DF df;
  V v[16];
  butterfly_but_last(x, ldx, c, scale, v);
#pragma GCC unroll 8
  for (int j = 0; j < 8; ++j) {
    const V a = v[j], b = v[j + 8];
    hn::StoreU(hn::DemoteTo(df, hn::Add(a, b)), df, y + j * ldy + c);
    hn::StoreU(hn::DemoteTo(df, hn::Sub(a, b)), df, y + (j + 8) * ldy + c);
  }
}

// Columns [c, c + N): max |transform| per column, rounded to float32 (rounding is monotonic, so this is the
// max of the float32 values). Magnitudes only, so the inputs take their sign flips as a flip of the sign
// bit (no "+ 0": a -0 changes no magnitude) and the x 0.25 comes once, on the maximum (exact either way).
// The last stage's pair (a + b, a - b) enters as |a| + |b|, the larger of |a + b| and |a - b|: exact where
// the bound holds (it equals one of the two exact sums), and the other columns are masked out by the caller.
HWY_INLINE hn::Vec<DF> max_abs_half(const float* HWY_RESTRICT x, int64_t ldx, int64_t c, const V (&flip)[16]) {
  const D d;
  const DF df;
  V v[16];
  butterfly_lanes_but_last(v, [&](int i) HWY_ATTR {
    return hn::Xor(hn::PromoteTo(d, hn::LoadU(df, x + i * ldx + c)), flip[i]);
  });
  V m[8];
#pragma GCC unroll 8
  for (int j = 0; j < 8; ++j) m[j] = hn::Add(hn::Abs(v[j]), hn::Abs(v[j + 8]));
  const V m01 = hn::Max(m[0], m[1]), m23 = hn::Max(m[2], m[3]), m45 = hn::Max(m[4], m[5]), m67 = hn::Max(m[6], m[7]);
  return hn::DemoteTo(df, hn::Mul(hn::Max(hn::Max(m01, m23), hn::Max(m45, m67)), hn::Set(d, 0.25)));
}

// One pass over the columns [c, c + Lanes(dm)) (dm: DW for two butterflies, DF for one).
template <class DM>
HWY_INLINE void rht16_pass(DM dm, const float* HWY_RESTRICT x, int64_t ldx, int64_t c, uint32_t sign_mask,
                           const V (&scale)[16], float* HWY_RESTRICT y, int64_t ldy) {
  const int64_t n = static_cast<int64_t>(hn::Lanes(D()));
  hn::Vec<hn::RebindToUnsigned<DM>> max_bits;
  const hn::Mask<DM> ok = column_bound<16>(dm, x + c, ldx, &max_bits);
  for (int64_t h = 0; h < static_cast<int64_t>(hn::Lanes(dm)); h += n) store_half(x, ldx, c + h, scale, y, ldy);
  if (hn::AllTrue(dm, ok)) return;
  for (uint32_t failed = failed_lanes(dm, ok); failed != 0; failed &= failed - 1)
    rht16_column(x, ldx, c + __builtin_ctz(failed), sign_mask, y, ldy);
}

void Rht16Rows(const float* HWY_RESTRICT x, int64_t ldx, int64_t cols, uint32_t sign_mask, float* HWY_RESTRICT y,
               int64_t ldy) {
  const DF df;
  const DW dw;
  V scale[16];
  input_scales(sign_mask, scale);
  const int64_t N = static_cast<int64_t>(hn::Lanes(df)), W = 2 * N;
  int64_t c = 0;
  for (; c + W <= cols; c += W) rht16_pass(dw, x, ldx, c, sign_mask, scale, y, ldy);
  if (c + N <= cols) {
    rht16_pass(df, x, ldx, c, sign_mask, scale, y, ldy);
    c += N;
  }
  rht16_rows_scalar(x, ldx, c, cols, sign_mask, y, ldy);
}

// One pass of Rht16RowsAmax over the columns [c, c + Lanes(dm)): max|x| per column (bits, NaN possible:
// then a failed column's reference reports it) into *in_max, the exact columns' max|y| into *out_max, the
// others' by the reference into *out_m. Returns false if the reference met a NaN.
template <class DM>
HWY_INLINE bool rht16_amax_pass(DM dm, const float* HWY_RESTRICT x, int64_t ldx, int64_t c, uint32_t sign_mask,
                                const V (&flip)[16], hn::Vec<hn::RebindToUnsigned<DM>>* in_max,
                                hn::Vec<DM>* out_max, float* out_m) {
  const DF df;
  hn::Vec<hn::RebindToUnsigned<DM>> max_bits;
  const hn::Mask<DM> ok = column_bound<16>(dm, x + c, ldx, &max_bits);
  *in_max = hn::Max(max_bits, *in_max);
  hn::Vec<DM> y_max;
  if constexpr (std::is_same_v<DM, DF>) {
    y_max = max_abs_half(x, ldx, c, flip);
  } else {
    const hn::Vec<DF> lo = max_abs_half(x, ldx, c, flip);
    y_max = hn::Combine(dm, max_abs_half(x, ldx, c + static_cast<int64_t>(hn::Lanes(df)), flip), lo);
  }
  *out_max = hn::Max(hn::IfThenElseZero(ok, y_max), *out_max);
  if (hn::AllTrue(dm, ok)) return true;
  bool clean = true;
  for (uint32_t failed = failed_lanes(dm, ok); failed != 0; failed &= failed - 1)
    clean = rht16_column_amax(x, ldx, c + __builtin_ctz(failed), sign_mask, out_m) && clean;
  return clean;
}

bool Rht16RowsAmax(const float* HWY_RESTRICT x, int64_t ldx, int64_t cols, uint32_t sign_mask, float* in_amax,
                   float* out_amax) {
  const DF df;
  const DW dw;
  const hn::RebindToUnsigned<DF> dfu;
  const hn::RebindToUnsigned<DW> dwu;
  V flip[16];
  sign_flips(sign_mask, flip);
  const int64_t N = static_cast<int64_t>(hn::Lanes(df)), W = 2 * N;
  hn::Vec<decltype(dwu)> in_max = hn::Zero(dwu);
  hn::Vec<DW> out_max = hn::Zero(dw);
  bool clean = true;
  float out_m = *out_amax;
  int64_t c = 0;
  for (; c + W <= cols; c += W) clean = rht16_amax_pass(dw, x, ldx, c, sign_mask, flip, &in_max, &out_max, &out_m) && clean;
  // Both maxima as floats (max|x| from its bits; a NaN there means a NaN input, which made clean false).
  uint32_t in_bits = hn::GetLane(hn::MaxOfLanes(dwu, in_max));
  float out_v = hn::GetLane(hn::MaxOfLanes(dw, out_max));
  if (c + N <= cols) {
    hn::Vec<decltype(dfu)> in_half = hn::Zero(dfu);
    hn::Vec<DF> out_half = hn::Zero(df);
    clean = rht16_amax_pass(df, x, ldx, c, sign_mask, flip, &in_half, &out_half, &out_m) && clean;
    in_bits = std::max(in_bits, static_cast<uint32_t>(hn::GetLane(hn::MaxOfLanes(dfu, in_half))));
    out_v = std::max(out_v, static_cast<float>(hn::GetLane(hn::MaxOfLanes(df, out_half))));
    c += N;
  }
  float in_v;
  std::memcpy(&in_v, &in_bits, sizeof in_v);
  *in_amax = std::max(*in_amax, in_v);
  *out_amax = std::max(out_m, out_v);
  return rht16_rows_amax_scalar(x, ldx, c, cols, sign_mask, in_amax, out_amax) && clean;
}
#endif  // HWY_TARGET == HWY_SCALAR

}  // namespace nibble::precision::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace nibble::precision {

HWY_EXPORT(Rht16Rows);
HWY_EXPORT(Rht16RowsAmax);

void rht16_rows(const float* __restrict x, int64_t ldx, int64_t cols, uint32_t sign_mask, float* __restrict y,
                int64_t ldy) {
  HWY_DYNAMIC_DISPATCH(Rht16Rows)(x, ldx, cols, sign_mask, y, ldy);
}

bool rht16_rows_amax(const float* __restrict x, int64_t ldx, int64_t cols, uint32_t sign_mask, float* in_amax,
                     float* out_amax) {
  return HWY_DYNAMIC_DISPATCH(Rht16RowsAmax)(x, ldx, cols, sign_mask, in_amax, out_amax);
}

}  // namespace nibble::precision
#endif  // HWY_ONCE
