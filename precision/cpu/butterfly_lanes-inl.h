// The Walsh-Hadamard butterfly on N Highway vectors of float64 (each lane an independent group), with every
// trip count a compile-time constant so the loops unroll and the vectors stay in registers. Same additions
// on the same operands as quantize_hadamard.h's scalar butterfly. Included by the per-target kernel
// files (rht_lanes.cpp, quest_lanes.cpp) once per target: the guard below follows Highway's per-target
// include convention (HWY_TARGET_TOGGLE flips between the passes of foreach_target.h).
#if defined(NIBBLE_PRECISION_CPU_BUTTERFLY_LANES_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef NIBBLE_PRECISION_CPU_BUTTERFLY_LANES_INL_H_
#undef NIBBLE_PRECISION_CPU_BUTTERFLY_LANES_INL_H_
#else
#define NIBBLE_PRECISION_CPU_BUTTERFLY_LANES_INL_H_
#endif

#include <hwy/highway.h>

#include <cmath>
#include <cstdint>

HWY_BEFORE_NAMESPACE();
namespace nibble::precision::HWY_NAMESPACE {

// Stage H of the butterfly on the block v[Off, Off + 2H): (a, b) -> (a + b, a - b) for the pairs (j, j + H).
template <int Off, int H, class V>
HWY_INLINE void butterfly_stage(V* v) {
#pragma GCC unroll 32
  for (int j = Off; j < Off + H; ++j) {
    const V a = v[j], b = v[j + H];
    v[j] = hwy::HWY_NAMESPACE::Add(a, b);
    v[j + H] = hwy::HWY_NAMESPACE::Sub(a, b);
  }
}

// The butterfly of the block v[Off, Off + Len), depth first: each half's whole transform, then the stage
// that joins them, with v[i] = load(i) taken just before its first use. Every output is the same tree of
// the same additions as in the stage-by-stage order (stage H pairs j and j + H inside blocks of 2H, after
// every smaller stage of the block), so the results are bit for bit the same; the order only keeps fewer
// vectors live at once (AVX2 has 16 registers: the stage-by-stage order spilled a third of them).
template <int Off, int Len, class V, class Load>
HWY_INLINE void butterfly_block(V* v, const Load& load) {
  if constexpr (Len == 1) {
    v[Off] = load(Off);
  } else {
    butterfly_block<Off, Len / 2>(v, load);
    butterfly_block<Off + Len / 2, Len / 2>(v, load);
    butterfly_stage<Off, Len / 2>(v);
  }
}

// Every stage but the last (H = N / 2) on v[0, N), v[i] = load(i): the caller joins the halves (storing
// a + b and a - b, or folding them into max(|a| + |b|) where only max|output| is needed).
template <int N, class V, class Load>
HWY_INLINE void butterfly_lanes_but_last(V (&v)[N], const Load& load) {
  static_assert(N == 16 || N == 32, "RHT16 and Hadamard-32 only (quantize_hadamard.h's bound)");
  butterfly_block<0, N / 2>(v, load);
  butterfly_block<N / 2, N / 2>(v, load);
}

#if HWY_TARGET != HWY_SCALAR
// quantize_hadamard.h's exactness bound, max|g| < min|g != 0| * 2^24 (the float32 product, as the scalar
// check computes it), for each column of a pass of R rows, at the full float32 width of dw: the kernels run
// the float64 butterfly on half that many columns at a time, and the bound (and NaN, Inf and amax) costs a
// few integer operations per row at the float32 width instead of a compare and blend chain per float64 half.
// |x| is taken on the bits: as unsigned integers the non-negative floats order as their values, NaN above
// Inf, so max_bits is max|x| with any NaN turning it into a NaN (which fails the bound: the column takes the
// reference), and |x| - 1 wraps a zero to the largest integer, so min(|x| - 1) + 1 is min|x != 0| (none:
// every element zero, +Inf as the scalar check's start value). Returns the columns that satisfy the bound;
// *max_bits gets max|x| per column (bits, NaN possible).
template <int R, class DW>
HWY_INLINE hwy::HWY_NAMESPACE::Mask<DW> column_bound(DW dw, const float* HWY_RESTRICT x, int64_t ldx,
                                                     hwy::HWY_NAMESPACE::Vec<hwy::HWY_NAMESPACE::RebindToUnsigned<DW>>* max_bits) {
  namespace hn = hwy::HWY_NAMESPACE;
  const hn::RebindToUnsigned<DW> du;
  using VU = hn::Vec<decltype(du)>;
  const VU abs_mask = hn::Set(du, 0x7FFFFFFFu), one = hn::Set(du, 1u), none = hn::Set(du, 0xFFFFFFFFu);
  VU max_a = hn::Zero(du), min_m1 = none;
#pragma GCC unroll 32
  for (int i = 0; i < R; ++i) {
    const VU a = hn::And(hn::BitCast(du, hn::LoadU(dw, x + i * ldx)), abs_mask);
    max_a = hn::Max(a, max_a);
    min_m1 = hn::Min(hn::Sub(a, one), min_m1);
  }
  *max_bits = max_a;
  const auto min_nonzero = hn::IfThenElse(hn::RebindMask(dw, hn::Eq(min_m1, none)), hn::Set(dw, HUGE_VALF),
                                          hn::BitCast(dw, hn::Add(min_m1, one)));
  return hn::Lt(hn::BitCast(dw, max_a), hn::Mul(min_nonzero, hn::Set(dw, 16777216.0f)));
}

// Bit l set where lane l of a pass failed the bound (l < Lanes(d) <= 32).
template <class DM>
HWY_INLINE uint32_t failed_lanes(DM dm, hwy::HWY_NAMESPACE::Mask<DM> ok) {
  namespace hn = hwy::HWY_NAMESPACE;
  uint8_t bytes[8] = {};
  hn::StoreMaskBits(dm, hn::Not(ok), bytes);
  const uint32_t bits = uint32_t{bytes[0]} | uint32_t{bytes[1]} << 8 | uint32_t{bytes[2]} << 16 |
                        uint32_t{bytes[3]} << 24;
  const size_t n = hn::Lanes(dm);
  return n >= 32 ? bits : bits & ((1u << n) - 1u);
}
#endif

}  // namespace nibble::precision::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // NIBBLE_PRECISION_CPU_BUTTERFLY_LANES_INL_H_
