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

#include "precision/cpu/butterfly_lanes.h"
#include "precision/cpu/quantize_hadamard.h"

namespace nibble::precision {

// One group of 16 rows: y[i * ldy + c] = RHT16 of column c of x[0..16) (rows i, x[i * ldx + c]), c < cols.
inline void rht16_rows(const float* __restrict x, int64_t ldx, int64_t cols, uint32_t sign_mask,
                       float* __restrict y, int64_t ldy) {
  int64_t c = 0;
#if defined(__AVX512F__)
  // The signs as XOR masks (negation is exact; a NaN's sign does not matter, its lane takes the reference).
  __m512d flip[16];
  for (int i = 0; i < 16; ++i)
    flip[i] = _mm512_castsi512_pd(_mm512_set1_epi64(((sign_mask >> i) & 1u) ? INT64_MIN : 0));
  for (; c + 8 <= cols; c += 8) {
    __m256 max_abs = _mm256_setzero_ps(), min_nonzero = _mm256_set1_ps(INFINITY);
    const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
    __m512d v[16];
#pragma GCC unroll 16
    for (int i = 0; i < 16; ++i) {
      const __m256 g = _mm256_loadu_ps(x + i * ldx + c);
      const __m256 a = _mm256_and_ps(g, abs_mask);
      // NaN is ignored by both (max/min return the second operand, the mask excludes it); a NaN input
      // shows up as NaN in the butterfly's first output instead (below).
      max_abs = _mm256_max_ps(a, max_abs);
      min_nonzero =
          _mm256_mask_min_ps(min_nonzero, _mm256_cmp_ps_mask(a, _mm256_setzero_ps(), _CMP_NEQ_OQ), a, min_nonzero);
      const __m512d d = _mm512_mask_cvtps_pd(_mm512_setzero_pd(), 0xFF, g);
      v[i] = _mm512_xor_pd(d, flip[i]);
    }
    butterfly_lanes(v);
    // Exact lanes: the bound holds and no input is NaN (v[0], the signed sum of all inputs, is NaN iff an
    // input is NaN or the group holds an Inf, which the bound already rejects).
    const int ok = _mm256_cmp_ps_mask(max_abs, _mm256_mul_ps(min_nonzero, _mm256_set1_ps(16777216.0f)), _CMP_LT_OQ) &
                   ~_mm512_cmp_pd_mask(v[0], v[0], _CMP_UNORD_Q) & 0xFF;
    const __m512d post = _mm512_set1_pd(0.25), zero = _mm512_setzero_pd();
#pragma GCC unroll 16
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

// max|x| and max|RHT16(column groups of x)| over one group of 16 rows (columns [0, cols)), folded into
// *in_amax / *out_amax, without storing the transform (the columnwise copy's global amax only needs its
// maximum). The outputs are the same values rht16_rows stores. Returns false if a NaN was met (in the input
// or the transform): the caller then takes the storing path, which reports which.
inline bool rht16_rows_amax(const float* __restrict x, int64_t ldx, int64_t cols, uint32_t sign_mask, float* in_amax,
                            float* out_amax) {
  bool clean = true;
  float in_m = *in_amax, out_m = *out_amax;
  int64_t c = 0;
#if defined(__AVX512F__)
  __m512d flip[16];
  for (int i = 0; i < 16; ++i)
    flip[i] = _mm512_castsi512_pd(_mm512_set1_epi64(((sign_mask >> i) & 1u) ? INT64_MIN : 0));
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
  __m256 in_max = _mm256_setzero_ps(), out_max = _mm256_setzero_ps();
  for (; c + 8 <= cols; c += 8) {
    __m256 max_abs = _mm256_setzero_ps(), min_nonzero = _mm256_set1_ps(INFINITY);
    __m512d v[16];
#pragma GCC unroll 16
    for (int i = 0; i < 16; ++i) {
      const __m256 g = _mm256_loadu_ps(x + i * ldx + c);
      const __m256 a = _mm256_and_ps(g, abs_mask);
      max_abs = _mm256_max_ps(a, max_abs);  // NaN ignored, as in rht16_rows
      min_nonzero =
          _mm256_mask_min_ps(min_nonzero, _mm256_cmp_ps_mask(a, _mm256_setzero_ps(), _CMP_NEQ_OQ), a, min_nonzero);
      v[i] = _mm512_xor_pd(_mm512_mask_cvtps_pd(_mm512_setzero_pd(), 0xFF, g), flip[i]);
    }
    in_max = _mm256_max_ps(max_abs, in_max);
    butterfly_lanes(v);
    const int ok = _mm256_cmp_ps_mask(max_abs, _mm256_mul_ps(min_nonzero, _mm256_set1_ps(16777216.0f)), _CMP_LT_OQ) &
                   ~_mm512_cmp_pd_mask(v[0], v[0], _CMP_UNORD_Q) & 0xFF;
    // |y| needs no "+ 0.0" (it only turns -0 into +0).
    const __m512d post = _mm512_set1_pd(0.25);
#pragma GCC unroll 16
    for (int j = 0; j < 16; ++j) {
      const __m256 y =
          _mm256_and_ps(_mm512_mask_cvtpd_ps(_mm256_setzero_ps(), 0xFF, _mm512_mul_pd(v[j], post)), abs_mask);
      out_max = _mm256_mask_max_ps(out_max, static_cast<__mmask8>(ok), y, out_max);
    }
    if (ok == 0xFF) continue;
    for (int l = 0; l < 8; ++l) {
      if ((ok >> l) & 1) continue;
      float g[16], r[16];
      for (int i = 0; i < 16; ++i) g[i] = x[i * ldx + c + l];
      rht16(g, sign_mask, r);
      for (int j = 0; j < 16; ++j) {
        clean = clean && !std::isnan(r[j]);
        out_m = std::max(out_m, std::fabs(r[j]));
      }
    }
  }
  alignas(32) float a[8], b[8];
  _mm256_store_ps(a, in_max);
  _mm256_store_ps(b, out_max);
  for (int l = 0; l < 8; ++l) in_m = std::max(in_m, a[l]), out_m = std::max(out_m, b[l]);
#endif
  for (; c < cols; ++c) {
    float g[16], r[16];
    for (int i = 0; i < 16; ++i) {
      g[i] = x[i * ldx + c];
      clean = clean && !std::isnan(g[i]);
      in_m = std::max(in_m, std::fabs(g[i]));
    }
    rht16_fast(g, sign_mask, r);
    for (int j = 0; j < 16; ++j) {
      clean = clean && !std::isnan(r[j]);
      out_m = std::max(out_m, std::fabs(r[j]));
    }
  }
  *in_amax = in_m;
  *out_amax = out_m;
  return clean;
}

}  // namespace nibble::precision
