// The lanes of quantize_quest_lanes.h in Highway, compiled once per target (encode_rne_lanes.cpp says how
// foreach_target.h and the dispatch table work): one float64 lane per column, N columns a pass (8 on AVX-512,
// 4 on AVX2, 2 on SSE4/NEON), the 32 rows of a group 32 vectors. The operations are the AVX-512 kernel's,
// lane for lane (promotion, butterfly adds, + 0.0, x 1/sqrt(32), rounding to float32, the float64 sums in
// row order, the float32 product by the scale's multiplier: all exact or correctly rounded IEEE operations),
// so every target gives the reference's bits where the exactness bound holds, and the reference itself where
// it does not.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "precision/cpu/quest_lanes.cpp"
#include <hwy/foreach_target.h>  // must come before highway.h

#include <hwy/highway.h>

#include <cstdint>

#include "precision/cpu/quantize_quest_lanes.h"
// Per target, after the namespace above is defined (Highway's -inl convention).
#include "precision/cpu/butterfly_lanes-inl.h"

HWY_BEFORE_NAMESPACE();
namespace nibble::precision::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// At most 8 columns a pass (the stack buffers below); float32 loads and stores of the same lane count.
using D = hn::CappedTag<double, 8>;
using DU = hn::RebindToUnsigned<D>;
using DF = hn::Rebind<float, D>;
using V = hn::Vec<D>;

bool QuestRows(const float* HWY_RESTRICT x, int64_t ldx, int64_t cols, float* HWY_RESTRICT scaled, int64_t lds,
               uint8_t* HWY_RESTRICT codes, QuestInputStats* input) {
  const D d;
  const DU du;
  const DF df;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  const V zero = hn::Zero(d), post = hn::Set(d, 0.17677669529663687);
  V input_max = zero;  // max |x| per lane over the exact groups (the others' reference counts their own)
  bool nan = false;
  int64_t c = 0;
  for (; c + N <= cols; c += N) {
    V v[32];
    V max_abs = zero, min_nonzero = hn::Set(d, HUGE_VAL);
#pragma GCC unroll 32
    for (int i = 0; i < 32; ++i) {
      v[i] = hn::PromoteTo(d, hn::LoadU(df, x + i * ldx + c));
      // A NaN input either passes through Max/Min (x86 returns the second operand, NEON the NaN: both are
      // fine) and then fails the bound, or is ignored by them and shows up as NaN in the butterfly's first
      // output (below); either way its column takes the reference. Exact on values that are float32.
      const V a = hn::Abs(v[i]);
      max_abs = hn::Max(a, max_abs);
      min_nonzero = hn::IfThenElse(hn::Ne(a, zero), hn::Min(a, min_nonzero), min_nonzero);
    }
    butterfly_lanes(v);
    // Exact lanes: the bound holds (min_nonzero * 2^24 in float64 orders as the float32 product: both are
    // exact or both beyond every finite float) and no input is NaN (v[0], the sum of all inputs, is NaN iff
    // an input is NaN or the group holds an Inf, which the bound already rejects).
    const hn::Mask<D> ok = hn::AndNot(hn::IsNaN(v[0]), hn::Lt(max_abs, hn::Mul(min_nonzero, hn::Set(d, 16777216.0))));
    input_max = hn::Max(hn::IfThenElseZero(ok, max_abs), input_max);  // no NaN in an ok lane
    hn::Vec<DF> hf[32];
    V sum = zero, sum_sq = zero;
#pragma GCC unroll 32
    for (int i = 0; i < 32; ++i) {
      hf[i] = hn::DemoteTo(df, hn::Mul(hn::Add(v[i], zero), post));
      const V hd = hn::PromoteTo(d, hf[i]);
      sum = hn::Add(sum, hd);
      sum_sq = hn::Add(sum_sq, hn::Mul(hd, hd));  // exact: a product of two floats fits 53 bits
    }
    HWY_ALIGN double sums[8], sums_sq[8];
    HWY_ALIGN uint64_t ok_lanes[8];
    HWY_ALIGN float mult[8];
    hn::Store(sum, d, sums);
    hn::Store(sum_sq, d, sums_sq);
    hn::Store(hn::BitCast(du, hn::VecFromMask(d, ok)), du, ok_lanes);
    uint32_t failed = 0;
    for (int64_t l = 0; l < N; ++l) {
      if (ok_lanes[l]) {
        const uint32_t e = quest_code_from_sums(sums[l], sums_sq[l]);
        codes[c + l] = static_cast<uint8_t>(e);
        mult[l] = e8m0_encode_multiplier(e);
      } else {
        failed |= 1u << l;
        mult[l] = 1.0f;  // overwritten by the reference below
      }
    }
    const hn::Vec<DF> m = hn::Load(df, mult);
#pragma GCC unroll 32
    for (int i = 0; i < 32; ++i) hn::StoreU(hn::Mul(hf[i], m), df, scaled + i * lds + c);
    // Lanes whose butterfly was not provably exact: the reference, column by column, over the stores above.
    for (; failed != 0; failed &= failed - 1)
      nan = quest_column(x, ldx, c + __builtin_ctz(failed), scaled, lds, codes, input) || nan;
  }
  if (input) input->amax = std::max(input->amax, static_cast<float>(hn::GetLane(hn::MaxOfLanes(d, input_max))));
  return quest_rows_scalar(x, ldx, c, cols, scaled, lds, codes, input) || nan;
}

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
