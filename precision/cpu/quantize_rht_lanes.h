#pragma once
// The 16-point RHT of NVFP4's columnwise copy on a row-major tile, eight columns at a time: the columnwise
// copy's groups run down the columns, so lane c of a vector holds column c and the butterfly's 16 inputs
// are 16 whole row vectors (adds between registers, no shuffles). Same exactness argument and fallback as
// quantize_hadamard.h: a lane whose group fails the bound is recomputed by the reference rht16.
// (Masked conversions with all lanes set: GCC 12 reports the undefined vector inside the unmasked
// intrinsics as uninitialised under -Werror.)
#include <algorithm>
#include <cmath>
#include <cstdint>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "precision/cpu/quantize_hadamard.h"

namespace nibble::precision {

// One group of 16 rows: y[i * ldy + c] = RHT16 of column c of x[0..16) (rows i, x[i * ldx + c]), c < cols.
inline void rht16_rows(const float* __restrict x, int64_t ldx, int64_t cols, uint32_t sign_mask,
                       float* __restrict y, int64_t ldy) {
  int64_t c = 0;
#if defined(__AVX512F__)
  for (; c + 8 <= cols; c += 8) {
    __m256 max_abs = _mm256_setzero_ps(), min_nonzero = _mm256_set1_ps(INFINITY), unordered = _mm256_setzero_ps();
    const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
    __m512d v[16];
    for (int i = 0; i < 16; ++i) {
      const __m256 g = _mm256_loadu_ps(x + i * ldx + c);
      const __m256 a = _mm256_and_ps(g, abs_mask);
      unordered = _mm256_or_ps(unordered, _mm256_cmp_ps(g, g, _CMP_UNORD_Q));
      max_abs = _mm256_max_ps(a, max_abs);
      const __m256 nz = _mm256_blendv_ps(a, _mm256_set1_ps(INFINITY), _mm256_cmp_ps(a, _mm256_setzero_ps(), _CMP_EQ_OQ));
      min_nonzero = _mm256_min_ps(nz, min_nonzero);
      const __m512d d = _mm512_mask_cvtps_pd(_mm512_setzero_pd(), 0xFF, g);
      v[i] = ((sign_mask >> i) & 1u) ? _mm512_mul_pd(d, _mm512_set1_pd(-1.0)) : d;
    }
    const __m256 exact = _mm256_andnot_ps(
        unordered, _mm256_cmp_ps(max_abs, _mm256_mul_ps(min_nonzero, _mm256_set1_ps(16777216.0f)), _CMP_LT_OQ));
    const int ok = _mm256_movemask_ps(exact);
    for (int h = 1; h < 16; h *= 2)
      for (int i = 0; i < 16; i += 2 * h)
        for (int j = i; j < i + h; ++j) {
          const __m512d a = v[j], b = v[j + h];
          v[j] = _mm512_add_pd(a, b);
          v[j + h] = _mm512_sub_pd(a, b);
        }
    const __m512d post = _mm512_set1_pd(0.25), zero = _mm512_setzero_pd();
    for (int j = 0; j < 16; ++j)
      _mm256_storeu_ps(y + j * ldy + c,
                       _mm512_mask_cvtpd_ps(_mm256_setzero_ps(), 0xFF, _mm512_mul_pd(_mm512_add_pd(v[j], zero), post)));
    if (ok == 0xFF) continue;
    for (int l = 0; l < 8; ++l) {
      if ((ok >> l) & 1) continue;
      float g[16], r[16];
      for (int i = 0; i < 16; ++i) g[i] = x[i * ldx + c + l];
      rht16(g, sign_mask, r);
      for (int j = 0; j < 16; ++j) y[j * ldy + c + l] = r[j];
    }
  }
#endif
  for (; c < cols; ++c) {
    float g[16], r[16];
    for (int i = 0; i < 16; ++i) g[i] = x[i * ldx + c];
    rht16_fast(g, sign_mask, r);
    for (int j = 0; j < 16; ++j) y[j * ldy + c] = r[j];
  }
}

}  // namespace nibble::precision
