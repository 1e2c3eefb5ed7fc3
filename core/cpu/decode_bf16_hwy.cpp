// decode_bf16.h's Highway lanes: foreach_target.h re-includes this file once per target
// (precision/cpu/encode_rne_lanes.cpp says how the dispatch works); compiled without -march=native
// (nibble_hwy_objects in core/CMakeLists.txt) so every target is generated.
//
// Without byte permutes across a whole vector (AVX2's vpshufb looks up 16 entries within each 16-byte block;
// Highway 1.0's AVX-512 target has no VBMI), a 256-entry table lookup would be a 32-bit gather per element,
// which costs ~12x the VBMI lanes on Zen 4. So the lanes work in 16-bit lanes, one BF16 each, and look up
// only 16-entry tables (TableLookupBytesOr0 = vpshufb, one per byte plane): 4-bit codes directly, 8-bit codes
// for their subnormal and special magnitudes beside CodeTables' multiply-add rule for the normal ones. A
// 16-bit lane's index n | 0x8000 fetches plane[n] into its low byte and zero into its high byte (an index
// byte with bit 7 set reads 0), (n << 8) | 0x80 the other way round, so one OR joins the two planes.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "core/cpu/decode_bf16_hwy.cpp"
#include <hwy/foreach_target.h>  // must come before highway.h

#include <hwy/highway.h>

#include "core/cpu/decode_bf16.h"

HWY_BEFORE_NAMESPACE();
namespace nibble::core::cpu::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

using DF = hn::ScalableTag<float>;
using DI = hn::RebindToSigned<DF>;
using DU = hn::RebindToUnsigned<DF>;
using D16 = hn::Repartition<uint16_t, DF>;  // a BF16 per lane, two per 32-bit lane
using D8 = hn::Repartition<uint8_t, DF>;

#if HWY_TARGET != HWY_SCALAR  // (the one-lane target has no 16-bit lanes inside a 32-bit one: scalar rule)

// The folds of the elements a 32-bit lane of pairs stands for (lane i: elements first + 2i, first + 2i + 1;
// 16 elements a fold): one broadcast where a vector's pairs lie in one block of 16 (128- and 256-bit
// vectors), two halves where they span two (512-bit), a gather beyond (SVE at 1024 bits and up).
HWY_INLINE hn::Vec<DF> pair_folds(const float* HWY_RESTRICT folds, int64_t first) {
  const DF df;
  const size_t N = hn::Lanes(df);
  if (2 * N <= 16) return hn::Set(df, folds[first / 16]);
  if (2 * N == 32) return hn::ConcatLowerLower(df, hn::Set(df, folds[first / 16 + 1]), hn::Set(df, folds[first / 16]));
  const DI di;
  const auto lane = hn::Iota(di, 0);
  return hn::GatherIndex(df, folds, hn::ShiftRight<4>(hn::Add(hn::Add(lane, lane), hn::Set(di, static_cast<int32_t>(first)))));
}

// BF16 pairs times their folds, truncated back to BF16: the FP32 product value * fold, as the scalar rule (the
// plan made it exact).
HWY_INLINE hn::Vec<DU> fold_pairs(hn::Vec<DU> w, hn::Vec<DF> f) {
  const DF df;
  const DU du;
  const auto high = hn::Set(du, 0xFFFF0000u);
  const auto even = hn::Mul(hn::BitCast(df, hn::ShiftLeft<16>(w)), f);
  const auto odd = hn::Mul(hn::BitCast(df, hn::And(w, high)), f);
  return hn::Or(hn::ShiftRight<16>(hn::BitCast(du, even)), hn::And(hn::BitCast(du, odd), high));
}

// The 16-entry planes' BF16 at index n (< 16) of each 16-bit lane.
HWY_INLINE hn::Vec<D16> lookup16(hn::Vec<D8> lo, hn::Vec<D8> hi, hn::Vec<D16> n) {
  const D16 d16;
  return hn::Or(hn::TableLookupBytesOr0(lo, hn::Or(n, hn::Set(d16, 0x8000))),
                hn::TableLookupBytesOr0(hi, hn::Or(hn::ShiftLeft<8>(n), hn::Set(d16, 0x0080))));
}

void decode_fp4(const DecodeRun& run, uint16_t* HWY_RESTRICT out, int64_t& j) {
  const DU du;
  const D16 d16;
  const D8 d8;
  const hn::Rebind<uint8_t, DU> dbytes;  // a byte (two codes) per 32-bit lane
  const int64_t N = static_cast<int64_t>(hn::Lanes(du));
  const auto lo = hn::LoadDup128(d8, run.tables->planes16_lo), hi = hn::LoadDup128(d8, run.tables->planes16_hi);
  for (; j + 2 * N <= run.n; j += 2 * N) {
    // Byte b -> 32-bit lane (b & 15) | (b >> 4) << 16: the 16-bit lanes hold the codes in element order.
    const auto b = hn::PromoteTo(du, hn::LoadU(dbytes, run.data + j / 2));
    const auto codes = hn::Or(hn::And(b, hn::Set(du, 0xFu)), hn::ShiftLeft<16>(hn::ShiftRight<4>(b)));
    auto w = hn::BitCast(du, lookup16(lo, hi, hn::BitCast(d16, codes)));
    if (run.folds) w = fold_pairs(w, pair_folds(run.folds, j));
    hn::StoreU(hn::BitCast(d16, w), d16, out + j);
  }
}

void decode_8bit_rule(const DecodeRun& run, uint16_t* HWY_RESTRICT out, int64_t& j) {
  const DU du;
  const D16 d16;
  const D8 d8;
  const hn::Rebind<uint8_t, D16> dbytes;  // a code per 16-bit lane
  const hn::RebindToSigned<D16> di16;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d16));
  const CodeTables& t = *run.tables;
  const auto lo = hn::LoadDup128(d8, t.planes16_lo), hi = hn::LoadDup128(d8, t.planes16_hi);
  const auto mul = hn::Set(d16, t.rule_mul), add = hn::Set(d16, t.rule_add);
  for (; j + N <= run.n; j += N) {
    const auto c = hn::PromoteTo(d16, hn::LoadU(dbytes, run.data + j));
    const auto m = hn::And(c, hn::Set(d16, 0x7F));
    const auto normal = hn::Add(hn::Mul(m, mul), add);
    const auto s = hn::And(hn::Add(m, hn::Set(d16, 8)), hn::Set(d16, 0x7F));  // < 16: a table magnitude
    const auto special = hn::RebindMask(d16, hn::Lt(hn::BitCast(di16, s), hn::Set(di16, 16)));
    auto w = hn::Or(hn::IfThenElse(special, lookup16(lo, hi, s), normal), hn::ShiftLeft<8>(hn::And(c, hn::Set(d16, 0x80))));
    if (run.folds) w = hn::BitCast(d16, fold_pairs(hn::BitCast(du, w), pair_folds(run.folds, j)));
    hn::StoreU(w, d16, out + j);
  }
}

#endif  // HWY_TARGET != HWY_SCALAR

// 8-bit codes of a table without the rule: a 32-bit gather of the value per element.
void decode_8bit_gather(const DecodeRun& run, uint16_t* HWY_RESTRICT out, int64_t& j) {
  const DF df;
  const DI di;
  const DU du;
  const hn::Rebind<uint8_t, DI> dbytes;   // a code per 32-bit lane
  const hn::Rebind<uint16_t, DI> dhalf;   // a BF16 per 32-bit lane
  const int64_t N = static_cast<int64_t>(hn::Lanes(df));
  for (; j + N <= run.n; j += N) {
    auto v = hn::GatherIndex(df, run.tables->value, hn::PromoteTo(di, hn::LoadU(dbytes, run.data + j)));
    if (run.folds) {
      const int64_t first = j;
      v = hn::Mul(v, N <= 16 ? hn::Set(df, run.folds[first / 16])
                             : hn::GatherIndex(df, run.folds, hn::ShiftRight<4>(hn::Iota(di, static_cast<int32_t>(first)))));
    }
    // The BF16 bits (<= 0xFFFF, so the saturating demotion is a truncation).
    hn::StoreU(hn::DemoteTo(dhalf, hn::BitCast(di, hn::ShiftRight<16>(hn::BitCast(du, v)))), dhalf, out + j);
  }
}

void DecodeBf16(const DecodeRun& run, uint16_t* HWY_RESTRICT out) {
  int64_t j = 0;
#if HWY_TARGET != HWY_SCALAR
  if (run.fp4)
    decode_fp4(run, out, j);
  else if (run.tables->rule8)
    decode_8bit_rule(run, out, j);
  else
    decode_8bit_gather(run, out, j);
#else
  if (!run.fp4) decode_8bit_gather(run, out, j);
#endif
  DecodeRun rest = run;  // what the vectors leave: a wide vector's remainder, the scalar target's 4-bit codes
  rest.data = run.fp4 ? run.data + j / 2 : run.data + j;
  rest.n = run.n - j;
  rest.folds = run.folds ? run.folds + j / 16 : nullptr;
  decode_bf16_scalar(rest, out + j);
}

}  // namespace nibble::core::cpu::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace nibble::core::cpu {

HWY_EXPORT(DecodeBf16);

void decode_bf16_hwy(const DecodeRun& run, uint16_t* out) { HWY_DYNAMIC_DISPATCH(DecodeBf16)(run, out); }

}  // namespace nibble::core::cpu
#endif  // HWY_ONCE
