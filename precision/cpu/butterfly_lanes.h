#pragma once
// The Walsh-Hadamard butterfly on N vectors of 8 float64 lanes (each lane an independent group), with
// every stage's trip counts compile-time constants so the loops unroll and the vectors stay in registers.
// Same additions in the same order as quantize_hadamard.h's scalar butterfly.
#if defined(__AVX512F__)
#include <immintrin.h>

namespace nibble::precision {

template <int H, int N>
inline void butterfly_stage(__m512d (&v)[N]) {
#pragma GCC unroll 32
  for (int i = 0; i < N; i += 2 * H)
#pragma GCC unroll 32
    for (int j = i; j < i + H; ++j) {
      const __m512d a = v[j], b = v[j + H];
      v[j] = _mm512_add_pd(a, b);
      v[j + H] = _mm512_sub_pd(a, b);
    }
}

template <int N>
inline void butterfly_lanes(__m512d (&v)[N]) {
  static_assert(N == 16 || N == 32, "RHT16 and Hadamard-32 only");
  butterfly_stage<1>(v);
  butterfly_stage<2>(v);
  butterfly_stage<4>(v);
  butterfly_stage<8>(v);
  if constexpr (N == 32) butterfly_stage<16>(v);
}

}  // namespace nibble::precision
#endif
