#pragma once
// Block amaxes and block scales of a whole tile at once, for the 1-D block schemes of the CPU tile pass
// (internal to precision/cpu). Per block the scalar path paid a horizontal reduction, a switch on the scheme
// and the scale arithmetic (an E4M3 rounding and a division for NVFP4); here the amaxes of a row's blocks
// come out of one transpose-and-reduce of its vectors, and the scales of all the tile's blocks out of one
// loop over block_scale_of<S> (block_scale.h), which vectorises because the scheme is a constant.
#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>

#include "precision/block_scale.h"
#include "precision/cpu/block_amax_lanes.h"
#include "precision/cpu/encode_rne_lanes.h"
#include "precision/e4m3_values.h"

namespace nibble::precision::cpu {

// out[b] = max |x| over block b = [b * width, min(n, (b + 1) * width)) of x[0, n), NaN ignored (as
// std::max(a, |x|) does: a block of NaN only has amax 0); *nan |= x holds NaN. width is 16, 32 or 128,
// n <= 128.
inline void span_block_amaxes(const float* __restrict x, int64_t n, int64_t width, float* __restrict out, bool* nan) {
  for (int64_t b0 = 0; b0 < n; b0 += width) {
    const int64_t end = std::min(n, b0 + width);
    float a = 0.0f;
    for (int64_t j = b0; j < end; ++j) {
      const float v = std::fabs(x[j]);
      *nan = *nan || std::isnan(v);
      a = std::max(a, v);
    }
    out[b0 / width] = a;
  }
}

// span_block_amaxes of `rows` spans x + i * ld, their amaxes at out + i * ceil(n / width). Full 128-element
// spans go to the vector lanes (block_amax_lanes.h: one dispatched call for the rows, the amaxes of a row's
// blocks from one transpose-and-reduce of its vectors); the same values, as a max does not depend on order.
inline void rows_block_amaxes(const float* __restrict x, int64_t ld, int64_t rows, int64_t n, int64_t width,
                              float* __restrict out, bool* nan) {
#if defined(NIBBLE_HAVE_HWY) && NIBBLE_HAVE_HWY
  if (n == 128 && (width == 16 || width == 32 || width == 128))
    return span128_block_amaxes_lanes(x, ld, rows, width, out, nan);
#endif
  const int64_t blocks = (n + width - 1) / width;
  for (int64_t i = 0; i < rows; ++i) span_block_amaxes(x + i * ld, n, width, out + i * blocks, nan);
}

// The scales of n blocks from their amaxes (structure of arrays; what block_scale would give each).
struct BlockScaleArrays {
  float* multiplier;
  uint8_t* code;     // E8M0 / UE4M3 code
  float* scale_inv;  // FP32 decode scale (block FP8)
};

template <Scheme S>
void block_scales_of(const BlockScaleConstants& c, const float* __restrict amax, int64_t n, float* __restrict mult,
                     uint8_t* __restrict code, float* __restrict scale_inv) {
  for (int64_t k = 0; k < n; ++k) {
    const BlockScale b = block_scale_of<S>(c, amax[k]);
    mult[k] = b.multiplier;
    code[k] = static_cast<uint8_t>(b.code);
    scale_inv[k] = b.scale_inv;
  }
}

// NVFP4's block scales (1-D and 2-D), block_scales_of<kNVFP4>'s values without its scalar E4M3 rounding: the
// codes come from the E4M3 encode lanes (encode_rne_lanes.h: encode_scalar of amax * scale, bit for bit, with
// scale the very product nvfp4_block_scale_code multiplies by; Inf lands on the largest code as its FLT_MAX
// clamp does, NaN on the NaN code) and the multipliers from a table of the codes' values.
// The scalar loop was 2% of a 12.9M nvfp4 training step. Without Highway: block_scales_of.
inline void nvfp4_block_scales(const BlockScaleConstants& c, const float* __restrict amax, int64_t n,
                               float* __restrict mult, uint8_t* __restrict code, float* __restrict scale_inv) {
#if NIBBLE_HAVE_RNE_LANES
  const std::array<float, 256>& values = e4m3_values();
  encode_rne_lanes<formats::kE4M3>(amax, static_cast<size_t>(n), c.nvfp4_global_enc * (1.0f / 6.0f), code);
  for (int64_t k = 0; k < n; ++k) {
    const float enc = 1.0f / (values[code[k]] * c.nvfp4_global_dec);  // nvfp4_block_encode_multiplier
    mult[k] = enc > FLT_MAX ? FLT_MAX : enc;
    scale_inv[k] = 0.0f;
  }
#else
  block_scales_of<Scheme::kNVFP4>(c, amax, n, mult, code, scale_inv);
#endif
}

// Dispatch on the scheme (1-D and 2-D block schemes; not kFP8Tensor nor QuEST).
inline void block_scales(Scheme s, const BlockScaleConstants& c, const float* amax, int64_t n,
                         const BlockScaleArrays& out) {
  switch (s) {
    case Scheme::kFP8Block128:
      block_scales_of<Scheme::kFP8Block128>(c, amax, n, out.multiplier, out.code, out.scale_inv);
      break;
    case Scheme::kFP8Block16:
      block_scales_of<Scheme::kFP8Block16>(c, amax, n, out.multiplier, out.code, out.scale_inv);
      break;
    case Scheme::kFP8Block128x128:
      block_scales_of<Scheme::kFP8Block128x128>(c, amax, n, out.multiplier, out.code, out.scale_inv);
      break;
    case Scheme::kMXFP8:
      block_scales_of<Scheme::kMXFP8>(c, amax, n, out.multiplier, out.code, out.scale_inv);
      break;
    case Scheme::kMXFP4:
      block_scales_of<Scheme::kMXFP4>(c, amax, n, out.multiplier, out.code, out.scale_inv);
      break;
    case Scheme::kNVFP4:
    case Scheme::kNVFP4_2D:
      nvfp4_block_scales(c, amax, n, out.multiplier, out.code, out.scale_inv);
      break;
    case Scheme::kFP8Tensor:
    case Scheme::kMXFP4Quest:
      break;  // not block schemes: callers never ask
  }
}

}  // namespace nibble::precision::cpu
