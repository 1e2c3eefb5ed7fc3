#pragma once
// The 16-point RHT of NVFP4's columnwise copy on a row-major tile, several columns at a time: the columnwise
// copy's groups run down the columns, so lane c of a vector holds column c and the butterfly's 16 inputs
// are 16 whole row vectors (adds between registers, no shuffles). Same exactness argument and fallback as
// quantize_hadamard.h: a lane whose group fails the bound is recomputed by the reference rht16.
//
// The vector kernels (rht_lanes.cpp) are written once in Highway and dispatched at run time to the best
// target the CPU has (AVX-512, AVX2, SSE4, NEON, ...), as encode_rne_lanes.h; a build without Highway
// (NIBBLE_HAVE_HWY unset) takes the scalar loops below, which give the same bits.
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "precision/cpu/quantize_hadamard.h"

namespace nibble::precision {

// Column c of the group by the reference rht16's sums (a column the vector bound rejected).
inline void rht16_column(const float* __restrict x, int64_t ldx, int64_t c, uint32_t sign_mask, float* __restrict y,
                         int64_t ldy) {
  float g[16], r[16];
  for (int i = 0; i < 16; ++i) g[i] = x[i * ldx + c];
  hadamard_index_order<16>(g, sign_mask, kRht16Scale, r);  // rht16's bits
  for (int j = 0; j < 16; ++j) y[j * ldy + c] = r[j];
}

// max |rht16(column c)| folded into *out_amax by the reference; false if a transformed value is NaN.
inline bool rht16_column_amax(const float* __restrict x, int64_t ldx, int64_t c, uint32_t sign_mask,
                              float* out_amax) {
  float g[16], r[16];
  bool clean = true;
  for (int i = 0; i < 16; ++i) g[i] = x[i * ldx + c];
  hadamard_index_order<16>(g, sign_mask, kRht16Scale, r);  // rht16's bits
  for (int j = 0; j < 16; ++j) {
    clean = clean && !std::isnan(r[j]);
    *out_amax = std::max(*out_amax, std::fabs(r[j]));
  }
  return clean;
}

// rht16_rows (below) on columns [c0, cols), a column at a time (rht16_fast).
inline void rht16_rows_scalar(const float* __restrict x, int64_t ldx, int64_t c0, int64_t cols, uint32_t sign_mask,
                              float* __restrict y, int64_t ldy) {
  for (int64_t c = c0; c < cols; ++c) {
    float g[16], r[16];
    for (int i = 0; i < 16; ++i) g[i] = x[i * ldx + c];
    rht16_fast(g, sign_mask, r);
    for (int j = 0; j < 16; ++j) y[j * ldy + c] = r[j];
  }
}

// rht16_rows_amax (below) on columns [c0, cols), a column at a time.
inline bool rht16_rows_amax_scalar(const float* __restrict x, int64_t ldx, int64_t c0, int64_t cols,
                                   uint32_t sign_mask, float* in_amax, float* out_amax) {
  bool clean = true;
  float in_m = *in_amax, out_m = *out_amax;
  for (int64_t c = c0; c < cols; ++c) {
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

#if defined(NIBBLE_HAVE_HWY) && NIBBLE_HAVE_HWY
// One group of 16 rows: y[i * ldy + c] = RHT16 of column c of x[0..16) (rows i, x[i * ldx + c]), c < cols.
void rht16_rows(const float* __restrict x, int64_t ldx, int64_t cols, uint32_t sign_mask, float* __restrict y,
                int64_t ldy);

// max|x| and max|RHT16(column groups of x)| over one group of 16 rows (columns [0, cols)), folded into
// *in_amax / *out_amax, without storing the transform (the columnwise copy's global amax only needs its
// maximum). The outputs are the same values rht16_rows stores. Returns false if a NaN was met (in the input
// or the transform): the caller then takes the storing path, which reports which.
bool rht16_rows_amax(const float* __restrict x, int64_t ldx, int64_t cols, uint32_t sign_mask, float* in_amax,
                     float* out_amax);
#else
inline void rht16_rows(const float* __restrict x, int64_t ldx, int64_t cols, uint32_t sign_mask, float* __restrict y,
                       int64_t ldy) {
  rht16_rows_scalar(x, ldx, 0, cols, sign_mask, y, ldy);
}

inline bool rht16_rows_amax(const float* __restrict x, int64_t ldx, int64_t cols, uint32_t sign_mask, float* in_amax,
                            float* out_amax) {
  return rht16_rows_amax_scalar(x, ldx, 0, cols, sign_mask, in_amax, out_amax);
}
#endif

}  // namespace nibble::precision
