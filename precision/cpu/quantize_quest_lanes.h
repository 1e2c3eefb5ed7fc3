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

#include "precision/cpu/butterfly_lanes.h"
#include "precision/cpu/quantize_hadamard.h"
#include "precision/scaling.h"

namespace nibble::precision {

// mask[j] = |scaled[j]| <= 6 (QuEST's clip mask: 1 where the value was not clipped), j < n.
inline void quest_clip_mask(const float* __restrict scaled, int64_t n, uint8_t* __restrict mask) {
  for (int64_t j = 0; j < n; ++j) mask[j] = std::fabs(scaled[j]) <= 6.0f ? 1 : 0;
}

// One group of 32 rows of columns [0, cols): scaled[i * lds + c] = h_i(c) * 2^-e(c) (what is rounded),
// codes[c] = e(c) + 127. Returns true if a transformed value is NaN. (The clip mask, |scaled| <= 6, is a
// function of the scaled value: callers take it where the values land, quest_clip_mask.)
// input (optional): max|x| (NaN ignored) and whether x holds NaN are folded into *input on the way, which
// saves the tile pass a read of the tile for the global amax.
struct QuestInputStats {
  float amax = 0.0f;
  bool nan = false;
};

inline bool quest_rows(const float* __restrict x, int64_t ldx, int64_t cols, float* __restrict scaled, int64_t lds,
                       uint8_t* __restrict codes, QuestInputStats* input = nullptr) {
  bool nan = false;
  // Lanes whose butterfly was not provably exact, and scalar tail columns: the reference, column by column.
  auto reference_column = [&](int64_t c) {
    float g[32], h[32];
    for (int i = 0; i < 32; ++i) g[i] = x[i * ldx + c];
    if (input)
      for (int i = 0; i < 32; ++i) {
        const float a = std::fabs(g[i]);
        input->nan = input->nan || std::isnan(a);
        input->amax = std::max(input->amax, a);
      }
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
    for (int i = 0; i < 32; ++i) scaled[i * lds + c] = h[i] * m;
  };
  int64_t c = 0;
#if defined(__AVX512F__)
  // (Masked conversions with all lanes set: GCC 12 reports the undefined vector inside the unmasked
  // intrinsics as uninitialised under -Werror.)
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
  // NaN-ignoring max of the inputs (a NaN lane goes to the reference, which counts it itself).
  __m512 input_max = _mm512_setzero_ps();
  __m256 input_max8 = _mm256_setzero_ps();
  // quantize_hadamard.h's bound per column (bit l: column c + l) over the 32 rows, on 16 columns at once
  // (one vector per row). NaN is ignored by max and min (they return the second operand; the mask
  // excludes it): a NaN input shows up as NaN in the butterfly's first output instead (lanes8).
  auto bounds16 = [&](int64_t c) -> uint32_t {
    const __m512i abs16 = _mm512_set1_epi32(0x7FFFFFFF);
    __m512 max_abs = _mm512_setzero_ps(), min_nonzero = _mm512_set1_ps(INFINITY);
#pragma GCC unroll 32
    for (int i = 0; i < 32; ++i) {
      const __m512 a =
          _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(_mm512_loadu_ps(x + i * ldx + c)), abs16));
      max_abs = _mm512_mask_max_ps(max_abs, 0xFFFF, a, max_abs);
      min_nonzero =
          _mm512_mask_min_ps(min_nonzero, _mm512_cmp_ps_mask(a, _mm512_setzero_ps(), _CMP_NEQ_OQ), a, min_nonzero);
    }
    input_max = _mm512_mask_max_ps(input_max, 0xFFFF, max_abs, input_max);
    return _mm512_cmp_ps_mask(max_abs, _mm512_mul_ps(min_nonzero, _mm512_set1_ps(16777216.0f)), _CMP_LT_OQ);
  };
  auto bounds8 = [&](int64_t c) -> uint32_t {
    __m256 max_abs = _mm256_setzero_ps(), min_nonzero = _mm256_set1_ps(INFINITY);
#pragma GCC unroll 32
    for (int i = 0; i < 32; ++i) {
      const __m256 a = _mm256_and_ps(_mm256_loadu_ps(x + i * ldx + c), abs_mask);
      max_abs = _mm256_max_ps(a, max_abs);
      min_nonzero =
          _mm256_mask_min_ps(min_nonzero, _mm256_cmp_ps_mask(a, _mm256_setzero_ps(), _CMP_NEQ_OQ), a, min_nonzero);
    }
    input_max8 = _mm256_max_ps(max_abs, input_max8);
    return _mm256_cmp_ps_mask(max_abs, _mm256_mul_ps(min_nonzero, _mm256_set1_ps(16777216.0f)), _CMP_LT_OQ);
  };
  // The 8 groups of columns [c, c + 8) given their bounds.
  auto lanes8 = [&](int64_t c, uint32_t bound) {
    __m512d v[32];
#pragma GCC unroll 32
    for (int i = 0; i < 32; ++i)
      v[i] = _mm512_mask_cvtps_pd(_mm512_setzero_pd(), 0xFF, _mm256_loadu_ps(x + i * ldx + c));
    butterfly_lanes(v);
    // Exact lanes: the bound holds and no input is NaN (v[0], the sum of all inputs, is NaN iff an input
    // is NaN or the group holds an Inf, which the bound already rejects).
    const int ok = bound & ~_mm512_cmp_pd_mask(v[0], v[0], _CMP_UNORD_Q) & 0xFF;
    if (ok != 0xFF) {
      for (int l = 0; l < 8; ++l)
        if (!((ok >> l) & 1)) reference_column(c + l);
      if (ok == 0) return;
    }
    const __m512d post = _mm512_set1_pd(0.17677669529663687), zero = _mm512_setzero_pd();
    __m256 hf[32];
    __m512d sum = zero, sum_sq = zero;
#pragma GCC unroll 32
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
    // Lanes the reference filled above are left alone (masked stores).
    const __mmask8 keep = static_cast<__mmask8>(ok);
#pragma GCC unroll 32
    for (int i = 0; i < 32; ++i) _mm256_mask_storeu_ps(scaled + i * lds + c, keep, _mm256_mul_ps(hf[i], m));
    for (int l = 0; l < 8; ++l)
      if ((ok >> l) & 1) codes[c + l] = lane_codes[l];
  };
  for (; c + 16 <= cols; c += 16) {
    const uint32_t bound = bounds16(c);
    lanes8(c, bound & 0xFFu);
    lanes8(c + 8, bound >> 8);
  }
  for (; c + 8 <= cols; c += 8) lanes8(c, bounds8(c));
  if (input) {
    alignas(64) float m[24];
    _mm512_store_ps(m, input_max);
    _mm256_store_ps(m + 16, input_max8);
    for (int l = 0; l < 24; ++l) input->amax = std::max(input->amax, m[l]);
  }
#endif
  for (; c < cols; ++c) reference_column(c);
  return nan;
}

}  // namespace nibble::precision
