// The lanes of quantize_quest_lanes.h in Highway, compiled once per target (encode_rne_lanes.cpp says how
// foreach_target.h and the dispatch table work): one float64 lane per column, N columns a butterfly (8 on
// AVX-512, 4 on AVX2, 2 on SSE4/NEON), the 32 rows of a group 32 vectors, and 2N columns a pass, whose
// exactness bound (butterfly_lanes-inl.h's column_bound) is taken once at the full float32 width. The
// operations are the reference's, lane for lane (promotion, butterfly adds, x 1/sqrt(32), rounding to
// float32, the float64 sums in row order, the float32 product by the scale's multiplier: all exact or
// correctly rounded IEEE operations), so every target gives the reference's bits where the exactness bound
// holds, and the reference itself where it does not. The reference's "+ 0.0" (a -0 sum becomes +0) moves to
// the last product, h * m + 0 (the same rounding of the same product, -0 turned +0): a -0 h adds and squares
// into the sums as +0 does.
// It keeps arrays of vectors, so ARM builds compile it for NEON only:
#include "precision/cpu/hwy_neon_only_on_arm.h"
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "precision/cpu/quest_lanes.cpp"
#include <hwy/foreach_target.h>  // must come before highway.h

#include <hwy/highway.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "precision/cpu/quantize_quest_lanes.h"
// Per target, after the namespace above is defined (Highway's -inl convention).
#include "precision/cpu/butterfly_lanes-inl.h"

HWY_BEFORE_NAMESPACE();
namespace nibble::precision::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

#if HWY_TARGET == HWY_SCALAR
// One lane: the scalar loop (the same bits).
bool QuestRows(const float* HWY_RESTRICT x, int64_t ldx, int64_t cols, float* HWY_RESTRICT scaled, int64_t lds,
               uint8_t* HWY_RESTRICT codes, QuestInputStats* input) {
  return quest_rows_scalar(x, ldx, 0, cols, scaled, lds, codes, input);
}
#else
// At most 8 columns a butterfly; float32 loads and stores of the same lane count (DF), and of twice it for
// a pass (DW).
using D = hn::CappedTag<double, 8>;
using DF = hn::Rebind<float, D>;
using DW = hn::Twice<DF>;
using V = hn::Vec<D>;

// Columns [c, c + N) of the 32 rows: the transform, rounded to float32 (without the "+ 0"), into
// scaled (where the pass scales it in place).
HWY_INLINE void transform_half(const float* HWY_RESTRICT x, int64_t ldx, int64_t c, float* HWY_RESTRICT scaled,
                               int64_t lds) {
  const D d;
  const DF df;
  const V post = hn::Set(d, kHadamard32Scale);
  V v[32];
  butterfly_lanes_but_last(v, [&](int i) HWY_ATTR { return hn::PromoteTo(d, hn::LoadU(df, x + i * ldx + c)); });
#pragma GCC unroll 16
  for (int j = 0; j < 16; ++j) {
    const V a = v[j], b = v[j + 16];
    hn::StoreU(hn::DemoteTo(df, hn::Mul(hn::Add(a, b), post)), df, scaled + j * lds + c);
    hn::StoreU(hn::DemoteTo(df, hn::Mul(hn::Sub(a, b), post)), df, scaled + (j + 16) * lds + c);
  }
}

// One pass over the columns [c, c + Lanes(dm)) (dm: DW for two butterflies, DF for one). Returns true if a
// column's reference met a NaN.
template <class DM>
HWY_INLINE bool quest_pass(DM dm, const float* HWY_RESTRICT x, int64_t ldx, int64_t c, float* HWY_RESTRICT scaled,
                           int64_t lds, uint8_t* HWY_RESTRICT codes, QuestInputStats* input,
                           hn::Vec<hn::RebindToUnsigned<DM>>* input_max) {
  const D d;
  const DF df;
  constexpr size_t kHalves = std::is_same_v<DM, DF> ? 1 : 2;
  const int64_t n = static_cast<int64_t>(hn::Lanes(d));
  hn::Vec<hn::RebindToUnsigned<DM>> max_bits;
  const hn::Mask<DM> ok = column_bound<32>(dm, x + c, ldx, &max_bits);
  // max|x| of the exact columns (no NaN there); a failed column's reference counts its own.
  *input_max = hn::Max(hn::IfThenElseZero(hn::RebindMask(hn::RebindToUnsigned<DM>(), ok), max_bits), *input_max);
  for (size_t h = 0; h < kHalves; ++h) transform_half(x, ldx, c + static_cast<int64_t>(h) * n, scaled, lds);
  // sigma's float64 sums in row order, one chain per half (the halves' chains interleave).
  V sum[kHalves], sum_sq[kHalves];
  for (size_t h = 0; h < kHalves; ++h) sum[h] = sum_sq[h] = hn::Zero(d);
#pragma GCC unroll 32
  for (int i = 0; i < 32; ++i)
    for (size_t h = 0; h < kHalves; ++h) {
      const V hd = hn::PromoteTo(d, hn::LoadU(df, scaled + i * lds + c + static_cast<int64_t>(h) * n));
      sum[h] = hn::Add(sum[h], hd);
      // The product is exact (two floats fit 53 bits), so a contraction into an FMA rounds the same.
      sum_sq[h] = hn::Add(sum_sq[h], hn::Mul(hd, hd));
    }
  HWY_ALIGN double sums[16], sums_sq[16];
  HWY_ALIGN float mult[16];
  for (size_t h = 0; h < kHalves; ++h) {
    hn::Store(sum[h], d, sums + h * n);
    hn::Store(sum_sq[h], d, sums_sq + h * n);
  }
  const uint32_t failed = hn::AllTrue(dm, ok) ? 0u : failed_lanes(dm, ok);
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(dm));
  for (int64_t l = 0; l < lanes; ++l) {
    if (failed & (1u << l)) {
      mult[l] = 1.0f;  // overwritten by the reference below
      continue;
    }
    const uint32_t e = quest_code_from_sums(sums[l], sums_sq[l]);
    codes[c + l] = static_cast<uint8_t>(e);
    mult[l] = e8m0_encode_multiplier(e);
  }
  const hn::Vec<DM> m = hn::Load(dm, mult), zero = hn::Zero(dm);
#pragma GCC unroll 32
  for (int i = 0; i < 32; ++i) {
    float* row = scaled + i * lds + c;
    hn::StoreU(hn::MulAdd(hn::LoadU(dm, row), m, zero), dm, row);
  }
  // Columns whose butterfly was not provably exact: the reference, column by column, over the stores above.
  bool nan = false;
  for (uint32_t f = failed; f != 0; f &= f - 1) nan = quest_column(x, ldx, c + __builtin_ctz(f), scaled, lds, codes, input) || nan;
  return nan;
}

bool QuestRows(const float* HWY_RESTRICT x, int64_t ldx, int64_t cols, float* HWY_RESTRICT scaled, int64_t lds,
               uint8_t* HWY_RESTRICT codes, QuestInputStats* input) {
  const DF df;
  const DW dw;
  const hn::RebindToUnsigned<DF> dfu;
  const hn::RebindToUnsigned<DW> dwu;
  const int64_t N = static_cast<int64_t>(hn::Lanes(df)), W = 2 * N;
  hn::Vec<decltype(dwu)> input_max = hn::Zero(dwu);
  bool nan = false;
  int64_t c = 0;
  for (; c + W <= cols; c += W) nan = quest_pass(dw, x, ldx, c, scaled, lds, codes, input, &input_max) || nan;
  uint32_t in_bits = hn::GetLane(hn::MaxOfLanes(dwu, input_max));
  if (c + N <= cols) {
    hn::Vec<decltype(dfu)> input_half = hn::Zero(dfu);
    nan = quest_pass(df, x, ldx, c, scaled, lds, codes, input, &input_half) || nan;
    in_bits = std::max(in_bits, static_cast<uint32_t>(hn::GetLane(hn::MaxOfLanes(dfu, input_half))));
    c += N;
  }
  if (input) {
    float in_v;
    std::memcpy(&in_v, &in_bits, sizeof in_v);
    input->amax = std::max(input->amax, in_v);
  }
  return quest_rows_scalar(x, ldx, c, cols, scaled, lds, codes, input) || nan;
}
#endif  // HWY_TARGET == HWY_SCALAR

}  // namespace nibble::precision::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace nibble::precision {

HWY_EXPORT(QuestRows);

bool quest_rows(const float* __restrict x, int64_t ldx, int64_t cols, float* __restrict scaled, int64_t lds,
                uint8_t* __restrict codes, QuestInputStats* input) {
  return HWY_DYNAMIC_DISPATCH(QuestRows)(x, ldx, cols, scaled, lds, codes, input);
}

}  // namespace nibble::precision
#endif  // HWY_ONCE
