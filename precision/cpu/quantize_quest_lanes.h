#pragma once
// MXFP4 QuEST groups (normalised Hadamard-32, sigma scale, clip mask) on a row-major block, several columns
// at a time: a group is 32 consecutive rows of one column, lane c of a vector holds column c.
// The butterfly is exact under quantize_hadamard.h's bound (a failing lane is recomputed by the reference
// hadamard32_normalised); sigma's float64 sums run over i in index order per lane, as the reference does.
//
// The vector kernel (quest_lanes.cpp) is written once in Highway and dispatched at run time to the best
// target the CPU has (AVX-512, AVX2, SSE4, NEON, ...), as quantize_rht_lanes.h; a build without Highway
// (NIBBLE_HAVE_HWY unset) takes the scalar loop below, which gives the same bits.
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "precision/cpu/quantize_hadamard.h"
#include "precision/scaling.h"

namespace nibble::precision {

// mask[j] = |scaled[j]| <= 6 (QuEST's clip mask: 1 where the value was not clipped), j < n.
inline void quest_clip_mask(const float* __restrict scaled, int64_t n, uint8_t* __restrict mask) {
  for (int64_t j = 0; j < n; ++j) mask[j] = std::fabs(scaled[j]) <= 6.0f ? 1 : 0;
}

// input (optional) of quest_rows: max|x| (NaN ignored) and whether x holds NaN are folded into *input on
// the way, which saves the tile pass a read of the tile for the global amax.
struct QuestInputStats {
  float amax = 0.0f;
  bool nan = false;
};

// Column c of the group by the reference (hadamard32_fast, index-order float64 sums): scaled and codes[c]
// as quest_rows (below) defines them. Returns true if a transformed value is NaN.
inline bool quest_column(const float* __restrict x, int64_t ldx, int64_t c, float* __restrict scaled, int64_t lds,
                         uint8_t* __restrict codes, QuestInputStats* input) {
  float g[32], h[32];
  for (int i = 0; i < 32; ++i) g[i] = x[i * ldx + c];
  if (input)
    for (int i = 0; i < 32; ++i) {
      const float a = std::fabs(g[i]);
      input->nan = input->nan || std::isnan(a);
      input->amax = std::max(input->amax, a);
    }
  hadamard32_fast(g, h);
  bool nan = false;
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
  return nan;
}

// quest_rows (below) on columns [c0, cols), a column at a time.
inline bool quest_rows_scalar(const float* __restrict x, int64_t ldx, int64_t c0, int64_t cols,
                              float* __restrict scaled, int64_t lds, uint8_t* __restrict codes,
                              QuestInputStats* input) {
  bool nan = false;
  for (int64_t c = c0; c < cols; ++c) nan = quest_column(x, ldx, c, scaled, lds, codes, input) || nan;
  return nan;
}

#if defined(NIBBLE_HAVE_HWY) && NIBBLE_HAVE_HWY
// One group of 32 rows of columns [0, cols): scaled[i * lds + c] = h_i(c) * 2^-e(c) (what is rounded),
// codes[c] = e(c) + 127. Returns true if a transformed value is NaN. (The clip mask, |scaled| <= 6, is a
// function of the scaled value: callers take it where the values land, quest_clip_mask.)
bool quest_rows(const float* __restrict x, int64_t ldx, int64_t cols, float* __restrict scaled, int64_t lds,
                uint8_t* __restrict codes, QuestInputStats* input = nullptr);
#else
inline bool quest_rows(const float* __restrict x, int64_t ldx, int64_t cols, float* __restrict scaled, int64_t lds,
                       uint8_t* __restrict codes, QuestInputStats* input = nullptr) {
  return quest_rows_scalar(x, ldx, 0, cols, scaled, lds, codes, input);
}
#endif

}  // namespace nibble::precision
