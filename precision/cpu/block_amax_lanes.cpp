// The amaxes of block_amax_lanes.h in Highway, compiled once per target (encode_rne_lanes.cpp says how
// foreach_target.h and the dispatch table work). NaN lanes are zeroed before the max instead of relying on
// an instruction's NaN rule (x86's max returns its second operand, NEON's returns NaN): the same values on
// every target.
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

}  // namespace nibble::precision::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace nibble::precision {

HWY_EXPORT(AbsMax);
HWY_EXPORT(Span128BlockAmaxes);

float abs_max_lanes(const float* __restrict x, size_t n, bool* nan) { return HWY_DYNAMIC_DISPATCH(AbsMax)(x, n, nan); }

void span128_block_amaxes_lanes(const float* __restrict x, int64_t ld, int64_t rows, int64_t width,
                                float* __restrict out, bool* nan) {
  HWY_DYNAMIC_DISPATCH(Span128BlockAmaxes)(x, ld, rows, width, out, nan);
}

}  // namespace nibble::precision
#endif  // HWY_ONCE
