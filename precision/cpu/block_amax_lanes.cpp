// The amaxes and block multiplies of block_amax_lanes.h in Highway, compiled once per target (encode_rne_lanes.cpp says how
// foreach_target.h and the dispatch table work). NaN lanes are zeroed before the max instead of relying on
// an instruction's NaN rule (x86's max returns its second operand, NEON's returns NaN): the same values on
// every target.
// It keeps arrays of vectors, so ARM builds compile it for NEON only:
#include "precision/cpu/hwy_neon_only_on_arm.h"
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "precision/cpu/block_amax_lanes.cpp"
#include <hwy/foreach_target.h>  // must come before highway.h

#include <hwy/highway.h>

#include <algorithm>
#include <cmath>

#include "precision/cpu/block_amax_lanes.h"

HWY_BEFORE_NAMESPACE();
namespace nibble::precision::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// At most 16 floats a vector: a 128-element span is then at least 8 vectors, and SVE's or RVV's longer
// vectors would not help the 16-element blocks.
using DF = hn::CappedTag<float, 16>;
using VF = hn::Vec<DF>;

// |v| with NaN lanes as 0, and the NaN lanes or-ed into *nan_lanes.
HWY_INLINE VF clean_abs(DF df, VF v, VF* nan_lanes) {
  const auto is_nan = hn::IsNaN(v);
  *nan_lanes = hn::Or(*nan_lanes, hn::VecFromMask(df, is_nan));
  return hn::IfThenZeroElse(is_nan, hn::Abs(v));
}

float AbsMax(const float* HWY_RESTRICT x, size_t n, bool* nan) {
  const DF df;
  const size_t N = hn::Lanes(df);
  VF acc = hn::Zero(df), nan_lanes = hn::Zero(df);
  size_t j = 0;
  for (; j + N <= n; j += N) acc = hn::Max(acc, clean_abs(df, hn::LoadU(df, x + j), &nan_lanes));
  float a = hn::GetLane(hn::MaxOfLanes(df, acc));
  bool any_nan = !hn::AllFalse(df, hn::MaskFromVec(nan_lanes));
  for (; j < n; ++j) {
    const float v = std::fabs(x[j]);
    any_nan = any_nan || std::isnan(v);
    a = std::max(a, v);  // NaN never wins
  }
  *nan = *nan || any_nan;
  return a;
}

// out[k] = max over the lanes of m[k], k < kCount: a transpose-and-reduce instead of a horizontal max per
// vector. Each round folds pairs of vectors into one (ConcatEven and ConcatOdd of the pair, then Max): every
// vector's segment of lanes halves and the vectors' order is kept in the lanes; once one vector is left it is
// folded with itself. After log2(N) rounds the lanes of the remaining vectors hold the kCount maxima in order.
template <int kCount>
HWY_INLINE void lane_maxes_store(DF df, VF (&m)[kCount], float* HWY_RESTRICT out) {
  const size_t N = hn::Lanes(df);
  int count = kCount;
#if HWY_TARGET != HWY_SCALAR  // one lane: nothing to fold
  for (size_t seg = N; seg > 1; seg /= 2) {
    if (count == 1) {
      m[0] = hn::Max(hn::ConcatEven(df, m[0], m[0]), hn::ConcatOdd(df, m[0], m[0]));
      continue;
    }
    for (int i = 0; i < count / 2; ++i)
      m[i] = hn::Max(hn::ConcatEven(df, m[2 * i + 1], m[2 * i]), hn::ConcatOdd(df, m[2 * i + 1], m[2 * i]));
    count /= 2;
  }
#endif
  if (count == 1) {  // kCount <= N lanes hold the results
    HWY_ALIGN float lanes[16];
    hn::Store(m[0], df, lanes);
    for (int b = 0; b < kCount; ++b) out[b] = lanes[b];
    return;
  }
  for (int i = 0; i < count; ++i) hn::StoreU(m[i], df, out + i * N);  // count * N == kCount
}

template <int kWidth>
HWY_INLINE void span128_rows(const float* HWY_RESTRICT x, int64_t ld, int64_t rows, float* HWY_RESTRICT out,
                             bool* nan) {
  constexpr int kBlocks = 128 / kWidth;
  const DF df;
  const size_t N = hn::Lanes(df);
  VF nan_lanes = hn::Zero(df);
  for (int64_t i = 0; i < rows; ++i) {
    const float* row = x + i * ld;
    VF m[kBlocks];
    for (int b = 0; b < kBlocks; ++b) {
      VF acc = clean_abs(df, hn::LoadU(df, row + b * kWidth), &nan_lanes);
      for (size_t j = N; j < static_cast<size_t>(kWidth); j += N)
        acc = hn::Max(acc, clean_abs(df, hn::LoadU(df, row + b * kWidth + j), &nan_lanes));
      m[b] = acc;
    }
    lane_maxes_store(df, m, out + i * kBlocks);
  }
  *nan = *nan || !hn::AllFalse(df, hn::MaskFromVec(nan_lanes));
}

void Span128BlockAmaxes(const float* HWY_RESTRICT x, int64_t ld, int64_t rows, int64_t width,
                        float* HWY_RESTRICT out, bool* nan) {
  if (width == 16) return span128_rows<16>(x, ld, rows, out, nan);
  if (width == 32) return span128_rows<32>(x, ld, rows, out, nan);
  return span128_rows<128>(x, ld, rows, out, nan);
}

// One float32 product per element, as the scalar loop: the same bits on every target. The usual widths
// (16, 32) with whole blocks of whole vectors get compile-time trip counts (the loops unroll).
template <int64_t kWidth>
HWY_INLINE void multiply_blocks_rows(const float* HWY_RESTRICT x, int64_t ldx, int64_t rows, int64_t n, int64_t width,
                                     const float* HWY_RESTRICT mult, float* HWY_RESTRICT y, int64_t ldy) {
  const DF df;
  const int64_t N = static_cast<int64_t>(hn::Lanes(df)), w = kWidth ? kWidth : width, blocks = (n + w - 1) / w;
  for (int64_t i = 0; i < rows; ++i) {
    const float* HWY_RESTRICT xr = x + i * ldx;
    const float* HWY_RESTRICT mr = mult + i * blocks;
    float* HWY_RESTRICT yr = y + i * ldy;
    for (int64_t b = 0; b < blocks; ++b) {
      const int64_t end = std::min(n, (b + 1) * w);
      int64_t j = b * w;
      const VF m = hn::Set(df, mr[b]);
      if (kWidth && end == j + kWidth && kWidth % N == 0) {
#pragma GCC unroll 8
        for (int64_t k = 0; k < kWidth; k += N) hn::StoreU(hn::Mul(hn::LoadU(df, xr + j + k), m), df, yr + j + k);
        continue;
      }
      for (; j + N <= end; j += N) hn::StoreU(hn::Mul(hn::LoadU(df, xr + j), m), df, yr + j);
      for (; j < end; ++j) yr[j] = xr[j] * mr[b];
    }
  }
}

void MultiplyBlocksRows(const float* HWY_RESTRICT x, int64_t ldx, int64_t rows, int64_t n, int64_t width,
                        const float* HWY_RESTRICT mult, float* HWY_RESTRICT y, int64_t ldy) {
  if (width == 16) return multiply_blocks_rows<16>(x, ldx, rows, n, width, mult, y, ldy);
  if (width == 32) return multiply_blocks_rows<32>(x, ldx, rows, n, width, mult, y, ldy);
  multiply_blocks_rows<0>(x, ldx, rows, n, width, mult, y, ldy);
}

}  // namespace nibble::precision::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace nibble::precision {

HWY_EXPORT(AbsMax);
HWY_EXPORT(Span128BlockAmaxes);
HWY_EXPORT(MultiplyBlocksRows);

float abs_max_lanes(const float* __restrict x, size_t n, bool* nan) { return HWY_DYNAMIC_DISPATCH(AbsMax)(x, n, nan); }

void span128_block_amaxes_lanes(const float* __restrict x, int64_t ld, int64_t rows, int64_t width,
                                float* __restrict out, bool* nan) {
  HWY_DYNAMIC_DISPATCH(Span128BlockAmaxes)(x, ld, rows, width, out, nan);
}

void multiply_blocks_rows_lanes(const float* __restrict x, int64_t ldx, int64_t rows, int64_t n, int64_t width,
                                const float* __restrict mult, float* __restrict y, int64_t ldy) {
  HWY_DYNAMIC_DISPATCH(MultiplyBlocksRows)(x, ldx, rows, n, width, mult, y, ldy);
}

}  // namespace nibble::precision
#endif  // HWY_ONCE
