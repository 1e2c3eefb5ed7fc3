// The lanes of quantize_rht_lanes.h in Highway, compiled once per target (encode_rne_lanes.cpp says how
// foreach_target.h and the dispatch table work): one float64 lane per column, N columns a pass (8 on AVX-512,
// 4 on AVX2, 2 on SSE4/NEON), the 16 rows of a group 16 vectors. The float64 operations are the AVX-512
// kernel's, lane for lane (promotion, sign flips, butterfly adds, + 0.0, x 0.25, rounding to float32 are all
// exact or correctly rounded IEEE operations), so every target gives the reference's bits where the
// exactness bound holds, and the reference itself where it does not.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "precision/cpu/rht_lanes.cpp"
#include <hwy/foreach_target.h>  // must come before highway.h

#include <hwy/highway.h>

#include <cstdint>

#include "precision/cpu/quantize_rht_lanes.h"
// Per target, after the namespace above is defined (Highway's -inl convention).
#include "precision/cpu/butterfly_lanes-inl.h"

HWY_BEFORE_NAMESPACE();
namespace nibble::precision::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// At most 8 columns a pass (the stack buffers below); float32 loads of the same lane count.
using D = hn::CappedTag<double, 8>;
using DU = hn::RebindToUnsigned<D>;
using DF = hn::Rebind<float, D>;
using V = hn::Vec<D>;

struct Group16 {
  V v[16];        // the signed inputs, then the butterfly's outputs
  V max_abs;      // max |x| per column, NaN ignored
  hn::Mask<D> ok;  // columns whose butterfly is provably the reference's sum (quantize_hadamard.h's bound)
};

// Loads columns [c, c + N) of 16 rows, flips the signs (negation is exact; a NaN's sign does not matter, its
// column takes the reference) and runs the butterfly.
HWY_INLINE void group16(const float* HWY_RESTRICT x, int64_t ldx, int64_t c, const V (&flip)[16], Group16* g) {
  const D d;
  const DF df;
  V max_abs = hn::Zero(d), min_nonzero = hn::Set(d, HUGE_VAL);
#pragma GCC unroll 16
  for (int i = 0; i < 16; ++i) {
    const V w = hn::PromoteTo(d, hn::LoadU(df, x + i * ldx + c));
    // NaN zeroed (so max and min ignore it on every target); a NaN input shows up as NaN in the butterfly's
    // first output instead (below). Both are exact on values that are float32, as the float32 originals.
    const V a = hn::IfThenZeroElse(hn::IsNaN(w), hn::Abs(w));
    max_abs = hn::Max(a, max_abs);
    min_nonzero = hn::IfThenElse(hn::Ne(a, hn::Zero(d)), hn::Min(a, min_nonzero), min_nonzero);
    g->v[i] = hn::Xor(w, flip[i]);
  }
  butterfly_lanes(g->v);
  g->max_abs = max_abs;
  // Exact columns: the bound holds (min_nonzero * 2^24 in float64 orders as the float32 product: both are
  // exact or both beyond every finite float) and no input is NaN (v[0], the signed sum of all inputs, is NaN
  // iff an input is NaN or the group holds an Inf, which the bound already rejects).
  g->ok = hn::AndNot(hn::IsNaN(g->v[0]), hn::Lt(max_abs, hn::Mul(min_nonzero, hn::Set(d, 16777216.0))));
}

HWY_INLINE void sign_flips(uint32_t sign_mask, V (&flip)[16]) {
  const D d;
  const DU du;
  for (int i = 0; i < 16; ++i)
    flip[i] = hn::BitCast(d, hn::Set(du, ((sign_mask >> i) & 1u) ? uint64_t{1} << 63 : uint64_t{0}));
}

// Bit l set where column c + l is not ok (l < N).
HWY_INLINE uint32_t failed_lanes(const hn::Mask<D> ok) {
  const D d;
  const DU du;
  HWY_ALIGN uint64_t lanes[8];
  hn::Store(hn::BitCast(du, hn::VecFromMask(d, ok)), du, lanes);
  uint32_t failed = 0;
  for (size_t l = 0; l < hn::Lanes(d); ++l) failed |= lanes[l] ? 0u : 1u << l;
  return failed;
}

void Rht16Rows(const float* HWY_RESTRICT x, int64_t ldx, int64_t cols, uint32_t sign_mask, float* HWY_RESTRICT y,
               int64_t ldy) {
  const D d;
  const DF df;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  V flip[16];
  sign_flips(sign_mask, flip);
  const V post = hn::Set(d, 0.25), zero = hn::Zero(d);
  int64_t c = 0;
  for (; c + N <= cols; c += N) {
    Group16 g;
    group16(x, ldx, c, flip, &g);
#pragma GCC unroll 16
    for (int j = 0; j < 16; ++j) hn::StoreU(hn::DemoteTo(df, hn::Mul(hn::Add(g.v[j], zero), post)), df, y + j * ldy + c);
    if (hn::AllTrue(d, g.ok)) continue;
    for (uint32_t failed = failed_lanes(g.ok); failed != 0; failed &= failed - 1)
      rht16_column(x, ldx, c + __builtin_ctz(failed), sign_mask, y, ldy);
  }
  rht16_rows_scalar(x, ldx, c, cols, sign_mask, y, ldy);
}

bool Rht16RowsAmax(const float* HWY_RESTRICT x, int64_t ldx, int64_t cols, uint32_t sign_mask, float* in_amax,
                   float* out_amax) {
  const D d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  V flip[16];
  sign_flips(sign_mask, flip);
  const V post = hn::Set(d, 0.25);
  V in_max = hn::Zero(d), out_max = hn::Zero(d);
  bool clean = true;
  float in_m = *in_amax, out_m = *out_amax;
  int64_t c = 0;
  for (; c + N <= cols; c += N) {
    Group16 g;
    group16(x, ldx, c, flip, &g);
    in_max = hn::Max(g.max_abs, in_max);
    // The max of the float64 values rounds to the max of their float32 roundings (rounding is monotonic),
    // so the rounding is taken once, at the end; |y| needs no "+ 0.0" (it only turns -0 into +0).
#pragma GCC unroll 16
    for (int j = 0; j < 16; ++j) out_max = hn::Max(hn::IfThenElseZero(g.ok, hn::Abs(hn::Mul(g.v[j], post))), out_max);
    if (hn::AllTrue(d, g.ok)) continue;
    for (uint32_t failed = failed_lanes(g.ok); failed != 0; failed &= failed - 1)
      clean = rht16_column_amax(x, ldx, c + __builtin_ctz(failed), sign_mask, &out_m) && clean;
  }
  in_m = std::max(in_m, static_cast<float>(hn::GetLane(hn::MaxOfLanes(d, in_max))));
  out_m = std::max(out_m, static_cast<float>(hn::GetLane(hn::MaxOfLanes(d, out_max))));
  *in_amax = in_m;
  *out_amax = out_m;
  return rht16_rows_amax_scalar(x, ldx, c, cols, sign_mask, in_amax, out_amax) && clean;
}

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
