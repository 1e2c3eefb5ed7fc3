#pragma once
// bfloat16 encoding of the fused CPU step (bf16 moments, master-less bf16 parameters with stochastic rounding, the
// RNE model copy of a master): encode_scalar(x, kBF16, rounding) for whole arrays. GCC does not vectorise the
// general encode_scalar well (~40 instructions per vector of codes), so the rule is integer arithmetic
// (precision/bf16_bits.h): a plain loop of it (bf16_code) that GCC vectorises at -O3 for any vector unit (AVX2, NEON: what
// builds without AVX-512 run), and 16 AVX-512 lanes of the same arithmetic, which measured 25-45% faster on Zen 4
// than GCC's vectorisation of the loop on 256-element arrays (the lanes' tails run the loop).
//
// Why the rule equals encode_scalar: precision/bf16_bits.h. The lanes below are the same arithmetic.
#include <bit>
#include <cstdint>

#include "precision/bf16_bits.h"

#if defined(__AVX512F__)
#include <immintrin.h>
#endif


namespace nibble::optim {

using precision::bf16_code;

// The portable loops: encode_bf16_stochastic / encode_bf16_nearest on any target.
inline void encode_bf16_stochastic_loop(const float* __restrict x, int n, const uint16_t* __restrict random,
                                        uint16_t* __restrict out) {
  for (int j = 0; j < n; ++j) out[j] = bf16_code(std::bit_cast<uint32_t>(x[j]), random[j]);
}
inline void encode_bf16_nearest_loop(const float* __restrict x, int n, uint16_t* __restrict out) {
  for (int j = 0; j < n; ++j) out[j] = precision::bf16_code_nearest(std::bit_cast<uint32_t>(x[j]));
}

#if defined(__AVX512F__)
// The codes of 16 floats given what each lane adds before the 16-bit shift.
inline __m256i bf16_lanes(__m512i u, __m512i add) {
  constexpr __mmask16 kAll = 0xFFFF;  // masked forms: GCC 12's unmasked shifts trip -Wmaybe-uninitialized
  const __m512i a = _mm512_and_si512(u, _mm512_set1_epi32(0x7FFFFFFF));
  __m512i code = _mm512_maskz_min_epu32(kAll, _mm512_maskz_srli_epi32(kAll, _mm512_add_epi32(a, add), 16),
                                        _mm512_set1_epi32(0x7F7F));
  code = _mm512_or_si512(
      code, _mm512_maskz_srli_epi32(kAll, _mm512_and_si512(u, _mm512_set1_epi32(static_cast<int>(0x80000000u))),
                                    16));  // the sign
  code =
      _mm512_mask_mov_epi32(code, _mm512_cmpgt_epu32_mask(a, _mm512_set1_epi32(0x7F800000)), _mm512_set1_epi32(0x7FC0));
  return _mm512_maskz_cvtepi32_epi16(kAll, code);
}
#endif

// out[j] = encode_scalar(x[j], kBF16, kStochastic, {random[j], 16}).
inline void encode_bf16_stochastic(const float* __restrict x, int n, const uint16_t* __restrict random,
                                   uint16_t* __restrict out) {
  int j = 0;
#if defined(__AVX512F__)
  for (; j + 16 <= n; j += 16) {
    const __m512i r =
        _mm512_maskz_cvtepu16_epi32(0xFFFF, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(random + j)));
    const __m512i u = _mm512_castps_si512(_mm512_loadu_ps(x + j));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + j), bf16_lanes(u, r));
  }
#endif
  encode_bf16_stochastic_loop(x + j, n - j, random + j, out + j);
}

// out[j] = encode_scalar(x[j], kBF16, kNearestEven).
inline void encode_bf16_nearest(const float* __restrict x, int n, uint16_t* __restrict out) {
  int j = 0;
#if defined(__AVX512F__)
  for (; j + 16 <= n; j += 16) {
    const __m512i u = _mm512_castps_si512(_mm512_loadu_ps(x + j));
    const __m512i odd = _mm512_and_si512(_mm512_maskz_srli_epi32(0xFFFF, u, 16), _mm512_set1_epi32(1));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + j),
                        bf16_lanes(u, _mm512_add_epi32(odd, _mm512_set1_epi32(0x7FFF))));
  }
#endif
  encode_bf16_nearest_loop(x + j, n - j, out + j);
}

}  // namespace nibble::optim
