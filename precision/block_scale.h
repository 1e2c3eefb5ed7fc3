#pragma once
// The scale of one block (or tile, or whole tensor) from its amax, for every scheme but QuEST: the element
// multiplier the quantizer applies and what it stores. One definition for the CPU and CUDA quantizers.
#include <cfloat>
#include <cstdint>

#include "precision/quantize.h"
#include "precision/scaling.h"

namespace nibble::precision {

struct BlockScale {
  float multiplier;  // x * multiplier is rounded to the element format
  uint32_t code;     // E8M0 / UE4M3 code (schemes that store codes)
  float scale_inv;   // FP32 decode scale (FP8 schemes)
};

// value_for_inf: block FP8's fallback scale when fmax / amax overflows (the input dtype's max);
// nvfp4_global_enc: NVFP4's S_enc from the copy's global amax. QuEST (sigma-based) is not handled here.
NIBBLE_HOST_DEVICE BlockScale block_scale(const QuantizeOptions& o, float block_amax, float value_for_inf,
                                          float nvfp4_global_enc) {
  const float fmax = max_finite(o.element);
  switch (o.scheme) {
    case Scheme::kFP8Tensor:
    case Scheme::kFP8Block128:
    case Scheme::kFP8Block16:
    case Scheme::kFP8Block128x128: {
      const float vfi = o.scheme == Scheme::kFP8Tensor ? FLT_MAX : value_for_inf;
      const float s = (o.scheme == Scheme::kFP8Tensor && o.use_fixed_scale)
                          ? o.fixed_scale
                          : compute_scale(block_amax, fmax, o.amax_epsilon, o.pow2_scale, vfi);
      return {s, 0u, 1.0f / s};
    }
    case Scheme::kMXFP8:
    case Scheme::kMXFP4: {
      const int emax_elem = static_cast<int>((float_bits(fmax) >> 23) & 0xFFu) - 127;
      const uint32_t e = o.mx_rule == MxScaleRule::kCeil ? float_to_e8m0_ceil(block_amax * (1.0f / fmax))
                                                         : e8m0_floor_scale(block_amax, emax_elem);
      return {e8m0_encode_multiplier(e), e, 0.0f};
    }
    case Scheme::kNVFP4:
    case Scheme::kNVFP4_2D: {
      const uint32_t code = nvfp4_block_scale_code(block_amax, nvfp4_global_enc);
      return {nvfp4_block_encode_multiplier(code, 1.0f / nvfp4_global_enc), code, 0.0f};
    }
    case Scheme::kMXFP4Quest: break;
  }
  return {1.0f, 0u, 1.0f};  // QuEST: callers use quest_scale_code instead
}

// block_scale with the scheme a compile-time constant and the per-copy constants hoisted: a loop over many
// blocks then has no switch and vectorises (the CPU tile pass computes a tile's scales in one loop). Equal
// to block_scale bit for bit: the same scaling.h calls on the same values.
struct BlockScaleConstants {
  float fmax;              // max_finite(o.element)
  int emax_elem;           // its unbiased exponent (MX floor rule)
  float epsilon;           // o.amax_epsilon
  bool pow2;               // o.pow2_scale
  float value_for_inf;     // as for block_scale
  MxScaleRule mx_rule;     // o.mx_rule
  float nvfp4_global_enc;  // NVFP4's S_enc
  float nvfp4_global_dec;  // 1 / S_enc, as block_scale computes it
};

NIBBLE_HOST_DEVICE BlockScaleConstants block_scale_constants(const QuantizeOptions& o, float value_for_inf,
                                                             float nvfp4_global_enc) {
  const float fmax = max_finite(o.element);
  return {fmax,          static_cast<int>((float_bits(fmax) >> 23) & 0xFFu) - 127,
          o.amax_epsilon, o.pow2_scale,
          value_for_inf, o.mx_rule,
          nvfp4_global_enc, 1.0f / nvfp4_global_enc};
}

// Block schemes only (not kFP8Tensor, whose scale is per tensor, nor QuEST).
template <Scheme S>
NIBBLE_HOST_DEVICE BlockScale block_scale_of(const BlockScaleConstants& c, float block_amax) {
  static_assert(S != Scheme::kFP8Tensor && S != Scheme::kMXFP4Quest, "block schemes only");
  if constexpr (S == Scheme::kMXFP8 || S == Scheme::kMXFP4) {
    const uint32_t e = c.mx_rule == MxScaleRule::kCeil ? float_to_e8m0_ceil(block_amax * (1.0f / c.fmax))
                                                       : e8m0_floor_scale(block_amax, c.emax_elem);
    return {e8m0_encode_multiplier(e), e, 0.0f};
  } else if constexpr (S == Scheme::kNVFP4 || S == Scheme::kNVFP4_2D) {
    const uint32_t code = nvfp4_block_scale_code(block_amax, c.nvfp4_global_enc);
    return {nvfp4_block_encode_multiplier(code, c.nvfp4_global_dec), code, 0.0f};
  } else {  // block FP8
    const float s = compute_scale(block_amax, c.fmax, c.epsilon, c.pow2, c.value_for_inf);
    return {s, 0u, 1.0f / s};
  }
}

}  // namespace nibble::precision
