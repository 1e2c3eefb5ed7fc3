#pragma once
// MXFP4 QuEST groups (normalised Hadamard-32, sigma scale, clip mask) on a row-major block, eight
// columns at a time: a group is 32 consecutive rows of one column, lane c of a vector holds column c.
// The butterfly is exact under quantize_hadamard.h's bound (a failing lane is recomputed by the reference
// hadamard32_normalised); sigma's float64 sums run over i in index order per lane, as the reference does.
#include <algorithm>
#include <cmath>
#include <cstdint>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "precision/cpu/quantize_hadamard.h"
#include "precision/scaling.h"

namespace nibble::precision {

// The E8M0 scale code and element multiplier of a group from its transformed values' float64 sums.
inline uint32_t quest_code_from_sums(double sum, double sum_sq) {
  const double mean = sum / 32.0;
  const double var = std::max(sum_sq / 32.0 - mean * mean, 0.0);
  return quest_scale_code(std::sqrt(var));
}

// One group of 32 rows of columns [0, cols): scaled[i * lds + c] = h_i(c) * 2^-e(c) (what is rounded),
// mask[i * ldm + c] = |scaled| <= 6, codes[c] = e(c) + 127. Returns true if a transformed value is NaN.
inline bool quest_rows(const float* __restrict x, int64_t ldx, int64_t cols, float* __restrict scaled, int64_t lds,
                       uint8_t* __restrict mask, int64_t ldm, uint8_t* __restrict codes) {
  bool nan = false;
  // Lanes whose butterfly was not provably exact, and scalar tail columns: the reference, column by column.
  auto reference_column = [&](int64_t c) {
    float g[32], h[32];
    for (int i = 0; i < 32; ++i) g[i] = x[i * ldx + c];
    hadamard32_fast(g, h);
    double sum = 0.0, sum_sq = 0.0;
    for (int i = 0; i < 32; ++i) {
      nan = nan || std::isnan(h[i]);
      sum += h[i];
      sum_sq += static_cast<double>(h[i]) * h[i];
    }
    const uint32_t e = quest_code_from_sums(sum, sum_sq);
    codes[c] = static_cast<uint8_t>(e);
    const float m = e8m0_encode_multiplier(e);
    for (int i = 0; i < 32; ++i) {
      const float v = h[i] * m;
      scaled[i * lds + c] = v;
      mask[i * ldm + c] = std::fabs(v) <= 6.0f ? 1 : 0;
    }
  };
  int64_t c = 0;
#if defined(__AVX512F__)
  // (Masked conversions with all lanes set: GCC 12 reports the undefined vector inside the unmasked
  // intrinsics as uninitialised under -Werror.)
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
  for (; c + 8 <= cols; c += 8) {
    __m256 max_abs = _mm256_setzero_ps(), min_nonzero = _mm256_set1_ps(INFINITY), unordered = _mm256_setzero_ps();
    __m512d v[32];
    for (int i = 0; i < 32; ++i) {
      const __m256 g = _mm256_loadu_ps(x + i * ldx + c);
      const __m256 a = _mm256_and_ps(g, abs_mask);
      unordered = _mm256_or_ps(unordered, _mm256_cmp_ps(g, g, _CMP_UNORD_Q));
      max_abs = _mm256_max_ps(a, max_abs);
      const __m256 nz = _mm256_blendv_ps(a, _mm256_set1_ps(INFINITY), _mm256_cmp_ps(a, _mm256_setzero_ps(), _CMP_EQ_OQ));
      min_nonzero = _mm256_min_ps(nz, min_nonzero);
      v[i] = _mm512_mask_cvtps_pd(_mm512_setzero_pd(), 0xFF, g);
    }
    const __m256 exact = _mm256_andnot_ps(
        unordered, _mm256_cmp_ps(max_abs, _mm256_mul_ps(min_nonzero, _mm256_set1_ps(16777216.0f)), _CMP_LT_OQ));
    const int ok = _mm256_movemask_ps(exact);
    if (ok != 0xFF) {
      for (int l = 0; l < 8; ++l)
        if (!((ok >> l) & 1)) reference_column(c + l);
      if (ok == 0) continue;
    }
    for (int h = 1; h < 32; h *= 2)
      for (int i = 0; i < 32; i += 2 * h)
        for (int j = i; j < i + h; ++j) {
          const __m512d a = v[j], b = v[j + h];
          v[j] = _mm512_add_pd(a, b);
          v[j + h] = _mm512_sub_pd(a, b);
        }
    const __m512d post = _mm512_set1_pd(0.17677669529663687), zero = _mm512_setzero_pd();
    __m256 hf[32];
    __m512d sum = zero, sum_sq = zero;
    for (int i = 0; i < 32; ++i) {
      hf[i] = _mm512_mask_cvtpd_ps(_mm256_setzero_ps(), 0xFF, _mm512_mul_pd(_mm512_add_pd(v[i], zero), post));
      const __m512d hd = _mm512_mask_cvtps_pd(zero, 0xFF, hf[i]);
      sum = _mm512_add_pd(sum, hd);
      sum_sq = _mm512_add_pd(sum_sq, _mm512_mul_pd(hd, hd));  // exact: a product of two floats fits 53 bits
    }
    alignas(64) double sums[8], sums_sq[8];
    alignas(32) float mult[8];
    _mm512_store_pd(sums, sum);
    _mm512_store_pd(sums_sq, sum_sq);
    uint8_t lane_codes[8];
    for (int l = 0; l < 8; ++l) {
      lane_codes[l] = static_cast<uint8_t>(quest_code_from_sums(sums[l], sums_sq[l]));
      mult[l] = e8m0_encode_multiplier(lane_codes[l]);
    }
    const __m256 m = _mm256_load_ps(mult);
    for (int i = 0; i < 32; ++i) {
      const __m256 s = _mm256_mul_ps(hf[i], m);
      const int in_range = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_and_ps(s, abs_mask), _mm256_set1_ps(6.0f), _CMP_LE_OQ));
      if (ok == 0xFF) {
        _mm256_storeu_ps(scaled + i * lds + c, s);
        for (int l = 0; l < 8; ++l) mask[i * ldm + c + l] = static_cast<uint8_t>((in_range >> l) & 1);
        continue;
      }
      alignas(32) float out[8];
      _mm256_store_ps(out, s);
      for (int l = 0; l < 8; ++l) {
        if (!((ok >> l) & 1)) continue;  // filled by the reference above
        scaled[i * lds + c + l] = out[l];
        mask[i * ldm + c + l] = static_cast<uint8_t>((in_range >> l) & 1);
      }
    }
    for (int l = 0; l < 8; ++l)
      if ((ok >> l) & 1) codes[c + l] = lane_codes[l];
  }
#endif
  for (; c < cols; ++c) reference_column(c);
  return nan;
}

}  // namespace nibble::precision
