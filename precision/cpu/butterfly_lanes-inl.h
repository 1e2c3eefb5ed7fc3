// The Walsh-Hadamard butterfly on N Highway vectors of float64 (each lane an independent group), with every
// stage's trip counts compile-time constants so the loops unroll and the vectors stay in registers. Same
// additions in the same order as quantize_hadamard.h's scalar butterfly. Included by the per-target kernel
// files (rht_lanes.cpp, quest_lanes.cpp) once per target: the guard below follows Highway's per-target
// include convention (HWY_TARGET_TOGGLE flips between the passes of foreach_target.h).
#if defined(NIBBLE_PRECISION_CPU_BUTTERFLY_LANES_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef NIBBLE_PRECISION_CPU_BUTTERFLY_LANES_INL_H_
#undef NIBBLE_PRECISION_CPU_BUTTERFLY_LANES_INL_H_
#else
#define NIBBLE_PRECISION_CPU_BUTTERFLY_LANES_INL_H_
#endif

#include <hwy/highway.h>

HWY_BEFORE_NAMESPACE();
namespace nibble::precision::HWY_NAMESPACE {

template <int H, int N, class V>
HWY_INLINE void butterfly_stage(V (&v)[N]) {
#pragma GCC unroll 32
  for (int i = 0; i < N; i += 2 * H)
#pragma GCC unroll 32
    for (int j = i; j < i + H; ++j) {
      const V a = v[j], b = v[j + H];
      v[j] = hwy::HWY_NAMESPACE::Add(a, b);
      v[j + H] = hwy::HWY_NAMESPACE::Sub(a, b);
    }
}

template <int N, class V>
HWY_INLINE void butterfly_lanes(V (&v)[N]) {
  static_assert(N == 16 || N == 32, "RHT16 and Hadamard-32 only");
  butterfly_stage<1>(v);
  butterfly_stage<2>(v);
  butterfly_stage<4>(v);
  butterfly_stage<8>(v);
  if constexpr (N == 32) butterfly_stage<16>(v);
}

}  // namespace nibble::precision::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // NIBBLE_PRECISION_CPU_BUTTERFLY_LANES_INL_H_
